"""The interconnect: the shape of the machine and what moving a cache line costs.

    topology.py    Topology: packages, cores, shared caches, links, latencies;
                   load_topology(), list_presets(), generic()
    topofile.py    reading a topology from TOML, with path:line errors
    presets/       the four machines of the Barrelfish paper, as TOML data
    coherence.py   CoherenceDirectory: MOESI per 64-byte line, the ordering points
    protocol.py    the protocol path of each machine family: what a transaction costs
    render.py      render_topology(): the text of `sprat topology show`
    paper.py       the paper's URPC numbers, to print next to sprat's (PAPER.md)

Pure Python: nothing here knows about unicorn or about the OS.
"""

from emulator.interconnect.coherence import CoherenceDirectory
from emulator.interconnect.render import render_topology
from emulator.interconnect.topology import Topology, generic, list_presets, load_topology

__all__ = ["CoherenceDirectory", "Topology", "generic", "list_presets", "load_topology",
           "render_topology"]
