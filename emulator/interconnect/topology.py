"""The shape of a machine: packages, cores, shared caches, links, latencies.

A `Topology` is a frozen description of one machine, the input of the
coherence cost model (coherence.py) and of `sprat topology show`:

    topo = load_topology("amd-4x4")        # a preset, or a path to a .toml file
    topo.relation(0, 5)                    # -> "1-hop"
    topo.transfer_cycles(0, 5)             # cycles to move a line from core 5 to core 0
    topo.ns(topo.transfer_cycles(0, 5))    # the same in nanoseconds

Distances between two cores, nearest first (`relation`):

    same-core     the line is in the core's own cache          l1_hit
    shared-cache  the cores share an L2 or L3                  shared_cache_transfer
    same-package  same package, no shared cache (Intel: the    same_package_transfer
                  other die of a Clovertown, across the FSB)
    N-hop         other package, N interconnect hops away      hop_transfer[N - 1]

Presets live in presets/*.toml (their numbers and sources are comments
there); the file format and its checks are in topofile.py. `generic(n)` is
the machine `sprat boot --cores N` runs on.

What does not live here: cache-line states and charging (coherence.py),
the text of `sprat topology show` (render.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from emulator.errors import SpratError
from emulator.interconnect.topofile import package_hops, read_topology_fields

PRESET_DIR = Path(__file__).parent / "presets"

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
    shared_cache_transfer: int | None
    same_package_transfer: int | None
    hop_transfer: tuple[int, ...]                      # [k]: cycles for a line k+1 hops away
    memory: int
    # [instructions]: (name, cycles) of privileged work (emulator/instcost.py)
    instruction_costs: tuple[tuple[str, int], ...] = ()

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

    def transfer_cycles(self, a: int, b: int) -> int:
        """Cycles for core a to get a line that core b holds (a == b: an L1 hit)."""
        return self._transfer_table[a][b]

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
    def _transfer_table(self) -> list[list[int]]:
        n = self.n_cores()
        return [[self._transfer_by_relation(a, b) for b in range(n)] for a in range(n)]

    def _transfer_by_relation(self, a: int, b: int) -> int:
        relation = self.relation(a, b)
        if relation == "same-core":
            return self.l1_hit
        if relation == "shared-cache":
            return self.shared_cache_transfer
        if relation == "same-package":
            return self.same_package_transfer
        return self.hop_transfer[self.hops(a, b) - 1]


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
    board. Latencies and instruction costs are those of the amd-4x4 preset
    (measured Opteron numbers); beyond its 2 hops each further hop adds what
    the second added.
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
        shared_cache_transfer=base.shared_cache_transfer,
        same_package_transfer=None,
        hop_transfer=_extend_hops(base.hop_transfer, count // 2),
        memory=base.memory,
        instruction_costs=base.instruction_costs,
    )


def _extend_hops(measured: tuple[int, ...], wanted: int) -> tuple[int, ...]:
    """Extend a per-hop cost list to `wanted` hops by repeating its last step."""
    costs = list(measured)
    step = costs[-1] - costs[-2] if len(costs) > 1 else costs[-1]
    while len(costs) < wanted:
        costs.append(costs[-1] + step)
    return tuple(costs)
