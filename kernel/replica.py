"""The monitors' replicas, as the host reads them (tests, tools).

Each monitor (userland/monitor.S) keeps its replica of the shared regions'
records and of the domain table in the top page of its own stack, a page
no other core can see. The monitors agree on every change (two-phase
commit for retypes, one phase for the domain table); this module reads
each replica out of guest memory so that a test can check they did:

    replicas = read_replicas(system)          # {core: Replica}
    assert len({r.regions for r in replicas.values()}) == 1

The layout is the monitor's (REPLICA_* and REGION_* in userland/monitor_agree.S,
REPLICA_DOMAINS in userland/monitor_domains.S).
"""

import struct
from dataclasses import dataclass

from cpudriver import layout
from kernel.capservice import N_SHARED_REGIONS

MAGIC = int.from_bytes(b"MONITOR1", "little")
HEADER = struct.Struct("<QQQQ")          # magic, core, commits, aborts
REGIONS_OFFSET = 64
REGION = struct.Struct("<QqQQ")          # state, owner, version, pending
DOMAINS_OFFSET = 256                     # monitor_domains.S: REPLICA_DOMAINS
MAX_DOMAINS = 8
STATES = {0: "free", 1: "retyped"}
# The replica is the top page of the dispatcher's user stack (D_USTACK).
REPLICA_IN_SLOT = layout.D_USTACK + (layout.USER_STACK_PAGES - 1) * 4096


@dataclass(frozen=True)
class Region:
    state: str             # "free" or "retyped"
    owner: int             # the core that retyped it, or -1
    version: int           # commits applied to it
    pending: int           # the transaction this replica voted yes to, or 0


@dataclass(frozen=True)
class Replica:
    core: int
    commits: int
    aborts: int
    regions: tuple[Region, ...]
    domains: tuple[int, ...]     # per domain, the mask of cores it has a dispatcher on


def read_replicas(system, regions: int | None = None) -> dict[int, Replica]:
    """Every core's monitor replica, found by its magic word; cores without one are left out."""
    count = N_SHARED_REGIONS if regions is None else regions
    memory = system.machine.memory
    found = {}
    for core in range(system.machine.n_cores):
        for index in range(min(system.dispatchers(core), layout.MAX_DISPATCHERS)):
            page = (layout.PERCORE_BASE + core * layout.PERCORE_SIZE + layout.PC_DISPATCHERS
                    + index * layout.DISPATCHER_SIZE + REPLICA_IN_SLOT)
            magic, owner_core, commits, aborts = HEADER.unpack(memory.read(page, HEADER.size))
            if magic != MAGIC:
                continue
            records = tuple(_region(memory.read(page + REGIONS_OFFSET + r * REGION.size,
                                                REGION.size)) for r in range(count))
            masks = struct.unpack(f"<{MAX_DOMAINS}Q",
                                  memory.read(page + DOMAINS_OFFSET, 8 * MAX_DOMAINS))
            found[core] = Replica(owner_core, commits, aborts, records, masks)
    return found


def _region(raw: bytes) -> Region:
    state, owner, version, pending = REGION.unpack(raw)
    return Region(STATES.get(state, f"corrupt({state})"), owner, version, pending)
