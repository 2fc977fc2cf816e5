"""The shape of a machine: packages, cores, shared caches, links, latencies.

A `Topology` is a frozen description of one machine, the input of the
coherence cost model (coherence.py) and of `sprat topology show`:

    topo = load_topology("amd-4x4")        # a preset, or a path to a .toml file
    topo.relation(0, 5)                    # -> "1-hop"
    topo.pair_label(0, 5)                  # -> "one-hop", as the paper's Table 2 says it
    topo.transfer_cycles(0, 5)             # cycles to move a line from core 5 to core 0
    topo.ns(topo.transfer_cycles(0, 5))    # the same in nanoseconds

Distances between two cores, nearest first (`relation`), the model's
own names (tests and lab 6's answers use them):

    same-core     the line is in the core's own cache
    shared-cache  the cores share an L2 or L3
    same-package  same package, no shared cache (Intel: the other die
                  of a Clovertown, across the FSB)
    N-hop         other package, N interconnect hops away

Tables name a pair in the words of the paper's Table 2 instead
(`pair_label`), which differ by family: a front-side bus has no hops.

    label          amd-probe-broadcast          intel-fsb
    -------------  ---------------------------  ---------------------------
    shared         a shared L2 or L3            a shared L2 (one die)
    same die       one die, no shared cache     one die, no shared cache
    other die      (no AMD preset has one)      the package's other die
    one-hop, ...   other package, N links away  -
    other socket   -                            other package, across the
                                                chipset

What a transfer costs is not a number per relation: it is the path the
machine's protocol family takes (`family`: amd-probe-broadcast or
intel-fsb, protocol.py), from the legs in the file's [protocol] table,
evaluated once for every (home, requester, source) into `costs`.

Presets live in presets/*.toml (their numbers and sources are comments
there); the file format and its checks are in topofile.py. `generic(n)` is
the machine `sprat boot --cores N` runs on.

What does not live here: cache-line states and charging (coherence.py),
the text of `sprat topology show` (render.py).
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from emulator.errors import SpratError
from emulator.interconnect.topofile import package_hops, read_topology_fields

PRESET_DIR = Path(__file__).parent / "presets"

# pair_label: hops spelled as the paper's Table 2 does ("two-hop").
HOP_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven",
             8: "eight", 9: "nine"}

# generic(n): cores per package. Four, like the quad-core Opterons of the
# paper's AMD machines, so a small run already has cores on other packages.
GENERIC_CORES_PER_PACKAGE = 4
GENERIC_MAX_CORES = 64
# generic(n) borrows the measured latencies of this preset (see its file).
GENERIC_LATENCY_PRESET = "amd-4x4"


@dataclass(frozen=True)
class Topology:
    """One machine. Build it with load_topology() or generic()."""

    name: str
    description: str
    freq_ghz: float
    packages: tuple[tuple[int, ...], ...]             # core ids, per package
    shared_caches: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]  # (level, groups)
    links: tuple[tuple[int, int], ...]                 # package pairs one hop apart
    l1_hit: int
    l2_hit: int
    l3_hit: int | None
    family: str                                        # the protocol path (protocol.py)
    protocol: tuple[tuple[str, float], ...]            # its legs and clock, as in the file
    # [instructions]: (name, cycles) of privileged work (emulator/instcost.py)
    instruction_costs: tuple[tuple[str, int], ...] = ()
    # [protocol] merge_reads: a read that finds a read of its line in flight
    # rides along with it (coherence.py, "Ordering")
    merge_reads: bool = False

    # -- cores and packages --

    def n_cores(self) -> int:
        return sum(len(cores) for cores in self.packages)

    def package_of(self, core: int) -> int:
        return self._package_of[core]

    def cache_groups(self, level: str) -> tuple[tuple[int, ...], ...]:
        """The groups of cores sharing a cache at `level` ("L2", "L3"); () if none."""
        return dict(self.shared_caches).get(level, ())

    def shared_level(self, a: int, b: int) -> str | None:
        """The innermost cache level cores a and b share, or None."""
        for level, groups in self.shared_caches:       # sorted: L2 before L3
            for group in groups:
                if a in group and b in group:
                    return level
        return None

    # -- distances --

    def hops(self, a: int, b: int) -> int:
        """Interconnect hops between the packages of cores a and b (0: same package)."""
        return self._package_hops[self.package_of(a)][self.package_of(b)]

    def package_hops(self, p: int, q: int) -> int:
        """Interconnect hops between packages p and q."""
        return self._package_hops[p][q]

    def die_of(self, core: int) -> int:
        """The die a core is on: its L2 group where cores share an L2 (a
        Clovertown package holds two dies), else its package (one die)."""
        return self._die_of[core]

    def same_die(self, a: int, b: int) -> bool:
        return self._die_of[a] == self._die_of[b]

    def max_hops(self) -> int:
        return max(max(row) for row in self._package_hops)

    def relation(self, a: int, b: int) -> str:
        """How far core b is from core a: same-core, shared-cache, same-package, N-hop."""
        if a == b:
            return "same-core"
        if self.shared_level(a, b) is not None:
            return "shared-cache"
        hops = self.hops(a, b)
        return "same-package" if hops == 0 else f"{hops}-hop"

    def pair_label(self, a: int, b: int) -> str:
        """What cores a and b are to each other, as the paper's Table 2 says
        it on this machine's family: shared, same die, other die, then
        one-hop, two-hop, ... over a link graph, other socket on a bus."""
        if a == b:
            return "same core"
        if self.shared_level(a, b) is not None:
            return "shared"
        if self.same_die(a, b):
            return "same die"
        if self.hops(a, b) == 0:
            return "other die"
        if self.family == "intel-fsb":
            return "other socket"      # every socket is one chipset away: no hops to count
        return f"{HOP_WORDS.get(self.hops(a, b), self.hops(a, b))}-hop"

    def transfer_cycles(self, a: int, b: int) -> int:
        """Cycles for core a to get a line that core b holds, the line's home
        being b's package (a == b: an L1 hit). The directory charges by the
        line's real home (coherence.py); this is the figure for tables."""
        return self.costs.fetch[self.package_of(b)][a][b]

    @property
    def memory(self) -> int:
        """Cycles for core 0 to fill a line homed at its own package from memory."""
        return self.costs.fetch[0][0][self.n_cores()]

    def legs_in_cycles(self) -> dict[str, float]:
        """The protocol's legs in core cycles: a leg named *_nb is in
        northbridge clocks, *_bus in bus clocks, *_ns in nanoseconds,
        *_cycles in core clocks (the suffix goes)."""
        return self._legs_in_cycles

    @cached_property
    def costs(self):
        """The family's path evaluated for every case (protocol.CostTables)."""
        from emulator.interconnect.protocol import CostTables
        try:
            tables = CostTables(self)
        except SpratError:
            raise
        except Exception as error:       # protocol.py is lab 6's to write
            raise SpratError(f"the {self.family} path (emulator/interconnect/protocol.py) "
                             f"raised {type(error).__name__}: {error} "
                             f"(at {_innermost(error)})") from None
        return _whole_cycles(tables, self.family)

    def ns(self, cycles: float) -> float:
        return cycles / self.freq_ghz

    # -- tables computed once (the dataclass is frozen, so they never go stale) --

    @cached_property
    def _package_of(self) -> dict[int, int]:
        return {core: index for index, cores in enumerate(self.packages) for core in cores}

    @cached_property
    def _package_hops(self) -> list[list[int]]:
        return package_hops(len(self.packages), self.links)

    @cached_property
    def _die_of(self) -> list[int]:
        die = {}
        for group in self.cache_groups("L2"):
            for core in group:
                die[core] = min(group)
        n = self.n_cores()
        return [die.get(core, n + self.package_of(core)) for core in range(n)]

    @cached_property
    def _legs_in_cycles(self) -> dict[str, float]:
        values = dict(self.protocol)
        clocks = {"nb": values.get("northbridge_ghz"), "bus": values.get("bus_ghz")}
        legs = {}
        for key, value in self.protocol:
            name, _, unit = key.rpartition("_")
            if unit in clocks and clocks[unit]:
                legs[name] = value * self.freq_ghz / clocks[unit]
            elif unit == "ns":
                legs[name] = value * self.freq_ghz
            elif unit == "cycles":
                legs[name] = float(value)
        return legs


# -- where machines come from --

def list_presets() -> list[str]:
    """Names of the preset machines (presets/*.toml)."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.toml"))


def load_topology(name_or_path: str | Path) -> Topology:
    """A preset by name (e.g. "amd-4x4"), or a user topology from a TOML file."""
    if str(name_or_path) in list_presets():
        return Topology(**read_topology_fields(PRESET_DIR / f"{name_or_path}.toml"))
    # Anything on disk by that name goes to the reader, which says what is
    # wrong with it (a directory, a device, a binary file).
    if os.path.lexists(name_or_path):
        return Topology(**read_topology_fields(Path(name_or_path)))
    raise SpratError(
        f"unknown topology '{name_or_path}': not a preset ({', '.join(list_presets())}) "
        f"and no such file")


def generic(n_cores: int) -> Topology:
    """The machine for `sprat boot --cores N` (1 <= N <= 64).

    Packages of 4 cores (the last one may be smaller) sharing an L3, the
    packages joined in a ring (each linked to the next, the last to the
    first), so hop counts grow with distance as on a real multi-socket
    board. Its cache latencies, protocol legs and instruction costs are
    those of the amd-4x4 preset (a probe broadcast over the ring: the
    farther the farthest package, the longer every transfer).
    """
    if not 1 <= n_cores <= GENERIC_MAX_CORES:
        raise SpratError(f"--cores {n_cores}: must be between 1 and {GENERIC_MAX_CORES}")
    per = GENERIC_CORES_PER_PACKAGE
    packages = tuple(tuple(range(first, min(first + per, n_cores)))
                     for first in range(0, n_cores, per))
    count = len(packages)
    links = tuple(sorted({(min(p, (p + 1) % count), max(p, (p + 1) % count))
                          for p in range(count) if count > 1}))
    base = load_topology(GENERIC_LATENCY_PRESET)
    sharing = any(len(cores) > 1 for cores in packages)
    return Topology(
        name=f"generic-{n_cores}",
        description=(f"{n_cores} core(s) in packages of {per} sharing an L3, packages in a ring; "
                     f"latencies of {GENERIC_LATENCY_PRESET}"),
        freq_ghz=base.freq_ghz,
        packages=packages,
        shared_caches=(("L3", packages),) if sharing else (),
        links=links,
        l1_hit=base.l1_hit,
        l2_hit=base.l2_hit,
        l3_hit=base.l3_hit,
        family=base.family,
        protocol=base.protocol,
        instruction_costs=base.instruction_costs,
        merge_reads=base.merge_reads,
    )


def _innermost(error: BaseException) -> str:
    """FILE:LINE of the deepest frame of protocol.py that `error` passed
    through (the student's line in lab 6), else of the deepest frame."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if f.filename.endswith("protocol.py")] or frames
    frame = ours[-1]
    return f"{frame.filename}:{frame.lineno}"


def _whole_cycles(costs, family: str):
    """`costs` if every figure in it is a plain int, 0 or more. protocol.py
    is a lab's to write (lab 6): a cost the clocks cannot add (a float, an
    int subclass whose sums are itself) would stop modeled time, and a run
    charged with it would never reach its cycle budget."""
    figures = [costs.bus_occupancy] + [cycles for table in (costs.fetch, costs.invalidate)
                                       for rows in table for row in rows for cycles in row]
    wrong = next((c for c in figures if type(c) is not int or c < 0), None)
    if wrong is not None:
        shown = repr(wrong) if type(wrong) in (float, int, str) else f"a {type(wrong).__name__}"
        raise SpratError(f"the {family} path (emulator/interconnect/protocol.py) priced a "
                         f"transaction at {shown}: not a whole number of cycles, 0 or more")
    return costs
