"""The Barrelfish paper's measured URPC numbers, for benches to print next to sprat's.

    from emulator.interconnect.paper import URPC
    row = URPC["amd-8x4"]["two-hop"]
    row.cycles, row.msgs_per_kcycle        # 618, 2.75

Only cells read from the paper (through the notes described in PAPER.md)
are filled in; every other cell is None, never a guess. The case names
follow the paper's Table 2; `same die` of the 2x2 AMD is filled from
Table 3, which measured that configuration.

What does not live here: the model (topology.py, coherence.py). None of
these numbers is used to set a latency: they are what the model is checked
against.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    cycles: int | None = None          # one-way latency
    ns: float | None = None
    msgs_per_kcycle: float | None = None
    icache_lines: int | None = None
    dcache_lines: int | None = None


UNKNOWN = PaperRow()

# Table 2, "URPC performance" (see PAPER.md for what is verified).
URPC: dict[str, dict[str, PaperRow]] = {
    "intel-2x4": {
        "shared": PaperRow(cycles=180, msgs_per_kcycle=11.97),
        "non-shared": UNKNOWN,
    },
    "amd-2x2": {
        "same die": PaperRow(cycles=450, msgs_per_kcycle=3.42, icache_lines=9, dcache_lines=8),
        "one-hop": UNKNOWN,
    },
    "amd-4x4": {
        "shared": UNKNOWN,
        "one-hop": UNKNOWN,
        "two-hop": UNKNOWN,
    },
    "amd-8x4": {
        "shared": UNKNOWN,
        "one-hop": UNKNOWN,
        "two-hop": PaperRow(cycles=618, msgs_per_kcycle=2.75),
    },
}

# Table 1, LRPC latency on one core (cycles, ns).
LRPC: dict[str, tuple[int, int]] = {
    "intel-2x4": (845, 318),
    "amd-2x2": (757, 270),
    "amd-4x4": (1463, 585),
    "amd-8x4": (1549, 774),
}


def paper_case(machine: str, label: str) -> str | None:
    """The Table 2 case for two cores at `label` (Topology.pair_label), or None.

    The labels are Table 2's own words but for Intel's two far pairs: the
    paper has only "shared" and "non-shared" there (read here as any two
    cores without a common L2, on the other die or the other socket).
    """
    if machine == "intel-2x4" and label in ("other die", "other socket"):
        return "non-shared"
    return label if label in URPC.get(machine, {}) else None
