"""The text of `sprat topology show NAME`: one machine, readable in a terminal.

    print(render_topology(load_topology("amd-8x4")))

Prints the name and description, the clock, the packages and their cores,
which cores share which cache, the package links, the latency table (cycles
and ns), what privileged instructions cost (the [instructions] table) and a
core-to-core distance matrix. The matrix uses one character per core pair
so that 32 or 64 cores still fit in a terminal, with a space between
packages. A cell says what the two cores are to each other in the words of
the machine's family (Topology.pair_label), and the legend above it lists
the marks the matrix uses:

    .  same core     s  shared cache     p  same package, one die, no shared cache
    d  the package's other die (a Clovertown holds two)
    x  other socket, across the chipset (intel-fsb: a bus has no hops)
    1-9  hops to another package over the links (+ for 10 or more)

What does not live here: the topology itself (topology.py).
"""

from __future__ import annotations

from emulator.interconnect.topology import Topology

# The matrix's mark for each pair_label that is not a hop count, and the
# legend's words for it, in the order the legend lists them.
PAIR_MARKS = {
    "same core": (".", "same core"),
    "shared": ("s", "shared cache"),
    "same die": ("p", "same package"),
    "other die": ("d", "the package's other die"),
    "other socket": ("x", "other socket, across the chipset"),
}


def render_topology(topo: Topology) -> str:
    sections = [
        _header(topo),
        _packages(topo),
        _caches(topo),
        _links(topo),
        _latencies(topo),
        _instructions(topo),
        _matrix(topo),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _header(topo: Topology) -> str:
    return (f"{topo.name}\n{topo.description}\n"
            f"clock: {topo.freq_ghz:g} GHz ({topo.ns(1):.3f} ns per cycle), "
            f"{_plural(topo.n_cores(), 'core')} in {_plural(len(topo.packages), 'package')}")


def _core_list(cores) -> str:
    """0,1,2,3 -> "0-3"; 0,2 -> "0,2"."""
    cores = sorted(cores)
    if cores == list(range(cores[0], cores[-1] + 1)) and len(cores) > 2:
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(str(core) for core in cores)


def _packages(topo: Topology) -> str:
    lines = ["packages:"]
    for index, cores in enumerate(topo.packages):
        lines.append(f"  package {index}: cores {_core_list(cores)}")
    return "\n".join(lines)


def _caches(topo: Topology) -> str:
    lines = ["shared caches:"]
    for level, groups in topo.shared_caches:
        shared = [group for group in groups if len(group) > 1]
        if shared:
            lines.append(f"  {level}: " + "  ".join(f"[{_core_list(g)}]" for g in shared))
    if len(lines) == 1:
        lines.append("  none (every core has private caches)")
    return "\n".join(lines)


def _links(topo: Topology) -> str:
    if not topo.links:
        return ""
    if topo.family == "intel-fsb":
        # The bus path never counts hops (protocol.py): [links] only joins the packages.
        sockets = ", ".join(str(index) for index in range(len(topo.packages)))
        return f"front-side bus: packages {sockets}, through the chipset (no hops)"
    pairs = ", ".join(f"{a}-{b}" for a, b in topo.links)
    return (f"package links (1 hop each): {pairs}\n"
            f"farthest packages: {_plural(topo.max_hops(), 'hop')} apart")


def _latencies(topo: Topology) -> str:
    rows = [("L1 hit", topo.l1_hit), ("L2 hit", topo.l2_hit), ("L3 hit", topo.l3_hit)]
    # A transfer is a path, not a number per relation: show it from core 0
    # to the first core at each distance, the line homed at that core's package,
    # each named as the benches name the pair (other socket on a bus, one-hop
    # over a link).
    first = {}
    for core in range(1, topo.n_cores()):
        first.setdefault(topo.pair_label(0, core), core)
    for label, core in first.items():
        rows.append((f"{label} transfer", topo.transfer_cycles(0, core)))
    rows.append(("memory", topo.memory))
    lines = ["latencies:                  cycles        ns"]
    for label, cycles in rows:
        if cycles is not None:
            lines.append(f"  {label:<24}{cycles:>6}  {topo.ns(cycles):>8.1f}")
    lines.append(f"protocol: {topo.family} (emulator/interconnect/protocol.py); legs in cycles:")
    lines.append("  " + ", ".join(f"{name} {cycles:.0f}"
                                  for name, cycles in topo.legs_in_cycles().items()))
    return "\n".join(lines)


def _instructions(topo: Topology) -> str:
    """The [instructions] table: what privileged work costs in all."""
    lines = ["privileged instructions:    cycles        ns  (the rest: 1 cycle)"]
    for name, cycles in topo.instruction_costs:
        label = "delivery (interrupt)" if name == "interrupt" else name.replace("_", " ")
        lines.append(f"  {label:<24}{cycles:>6}  {topo.ns(cycles):>8.1f}")
    if not topo.instruction_costs:
        lines.append("  none listed: every instruction costs 1 cycle")
    return "\n".join(lines)


def _mark(topo: Topology, a: int, b: int) -> str:
    label = topo.pair_label(a, b)
    if label in PAIR_MARKS:
        return PAIR_MARKS[label][0]
    hops = topo.hops(a, b)
    return str(hops) if hops < 10 else "+"


def _legend(marks: set[str]) -> str:
    """What the marks the matrix uses mean, nearest first."""
    words = [f"{mark} {meaning}" for mark, meaning in PAIR_MARKS.values() if mark in marks]
    hops = sorted(int(mark) for mark in marks if mark.isdigit())
    if hops:
        span = str(hops[0]) if hops[0] == hops[-1] else f"{hops[0]}-{hops[-1]}"
        words.append(f"{span} {'hop' if span == '1' else 'hops'} to another package")
    if "+" in marks:
        words.append("+ 10 hops or more")
    return ", ".join(words)


def _matrix(topo: Topology) -> str:
    """Rows: from core; columns: to core; packages separated by a space."""
    n = topo.n_cores()
    order = [core for cores in topo.packages for core in cores]
    width = len(str(n - 1))
    marks = {a: [_mark(topo, a, b) for b in order] for a in order}

    def row_of(cells):
        groups, at = [], 0
        for cores in topo.packages:
            groups.append("".join(cells[at:at + len(cores)]))
            at += len(cores)
        return " ".join(groups)

    used = {mark for row in marks.values() for mark in row}
    lines = [f"core-to-core distance ({_legend(used)}):"]
    for digit in range(width):                      # column numbers, written downwards
        cells = [str(core).rjust(width)[digit] for core in order]
        lines.append(" " * (width + 3) + row_of(cells))
    for a in order:
        lines.append(f"  {str(a).rjust(width)} " + row_of(marks[a]))
    return "\n".join(lines)
