"""`sprat bench shm-vs-msg`: update shared data in place, or send the update.

The Barrelfish paper's motivating experiment (Baumann et al., SOSP 2009,
section 2, Figure 3). N client cores each update an array of L cache lines
(add one to a word of every line), again and again:

  shm     directly, in shared memory (userland/shm_update.S): every update
          pulls the L lines into the updating core's cache, so the lines
          travel from core to core and each client waits its turn;
  msg     by sending "update" as a URPC message to one server core that
          owns the array (userland/msg_client.S -> userland/msg_server.S,
          one channel per client); the array's lines never leave the
          server's cache.

Each client measures its own updates with rdtsc (the core's modeled
clock) after a warm-up; the table is the clients' average, in cycles per
update. In msg mode a client pays for sending, and for waiting whenever
its ring is full because the server is busy with the other clients' work:
as in the paper, that grows with the number of clients (queueing), but not
with the number of lines. The server measures its own rate too (`server`:
cycles per update as the server sees them, the paper's "Server" curve),
which stays flat: the message costs the same however many clients there
are.

Where sprat differs from the paper: there, shared-memory updates also
grew with the number of lines. Here, once there are at least as many
cores as lines, they do not: the lines' trips overlap (each core is busy
with a different line of the array) because the model has no limit on how
many transfers the interconnect carries at once.

Interleaving. How much waiting contention causes depends on how finely
the cores interleave, and the machine's default quantum lets one core run
thousands of instructions (with its lines in cache) before another gets a
turn. So each run boots at the default quantum and switches to a quantum
of one instruction when the first core leaves the start barrier that all
cores meet at: from then on the cores take turns in modeled-time order,
access by access, and the result does not depend on the quantum.
"""

import argparse
import json
import tempfile
from pathlib import Path

from emulator.errors import MachineFailure
from sprat.bench import add_output_options, emit, number_list, progress
from sprat.boot import add_timing_option
from sprat.boot import whole_number
from sprat.output import png_name, save_png

DEFAULT_TOPOLOGY = "amd-4x4"
CORE_STEPS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
LINE_COUNTS = (1, 2, 4, 8)
UPDATES = 100             # measured updates per client
WARMUP = 20               # updates before the clock starts
MAX_UPDATES = 1_000_000   # hours on the host at 64 cores
FINE_QUANTUM = 1          # instructions per turn once the measured phase begins
MAX_CYCLES = 10**10       # a run that takes longer than this is stuck
HEADERS = ["mode", "cores", "lines", "cycles_per_update", "server_cycles_per_update"]


def add_parser(benches) -> None:
    parser = benches.add_parser(
        "shm-vs-msg", help="shared-memory updates against messages to a server (paper Fig. 3)",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_options(parser)
    add_timing_option(parser, "detailed")
    parser.add_argument("--topology", metavar="T", default=DEFAULT_TOPOLOGY,
                        help=f"a preset or TOML file (default {DEFAULT_TOPOLOGY})")
    parser.add_argument("--cores", metavar="LIST", type=number_list, default=None,
                        help="client counts, e.g. 1,4,8 (default: 1, 2, 4, 8, ... up to the "
                             "machine; msg mode stops one short, for the server)")
    parser.add_argument("--lines", metavar="LIST", type=number_list, default=LINE_COUNTS,
                        help="cache lines per update (default 1,2,4,8)")
    parser.add_argument("--updates", type=whole_number(1, MAX_UPDATES), default=UPDATES,
                        help=f"measured updates per client, 1 to {MAX_UPDATES:,} "
                             f"(default {UPDATES})")
    parser.add_argument("--warmup", type=whole_number(1, MAX_UPDATES), default=WARMUP,
                        help=f"updates per client before measuring, 1 to {MAX_UPDATES:,} "
                             f"(default {WARMUP})")
    parser.add_argument("--plot", metavar="FILE.png", type=png_name, default=None,
                        help="also draw the curves into this PNG (matplotlib)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from emulator.errors import SpratError
    from emulator.interconnect import load_topology
    topology = load_topology(args.topology)
    shm_cores, msg_cores = client_counts(topology.n_cores(), args.cores)
    if max(args.lines) > 64:
        raise SpratError(f"--lines {max(args.lines)}: the array is one 4 KiB frame, 64 lines")
    rows = []
    for lines in args.lines:
        for cores in shm_cores:
            progress(f"shm: {cores} cores update {lines} shared lines")
            rows.append(measure_shm(topology, cores, lines, args.updates, args.warmup,
                                    args.timing))
        for cores in msg_cores:
            progress(f"msg: {cores} clients send {lines}-line updates to the server")
            rows.append(measure_msg(topology, cores, lines, args.updates, args.warmup,
                                    args.timing))
    rows.sort(key=lambda row: (row["mode"] != "shm", row["lines"], row["cores"]))
    if args.plot:
        plot(rows, f"{topology.name}, {args.timing} timing", args.plot)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    headers, table = pivot(rows, args.lines)
    emit(args, f"shm vs msg on {topology.name}: cycles per update, by clients (rows) and "
               f"lines per update (columns) ({args.timing} timing)", headers, table,
         [f"shmL: N cores update L shared lines in place; msgL: N clients send each update "
          f"to a server core (core 0) that owns the L lines; serverL: the server's cycles "
          f"per update",
          f"msg runs up to {max(msg_cores)} clients: the server is one more core of the "
          f"{topology.n_cores()}",
          f"{args.updates} measured updates per client after {args.warmup} warm-up updates; "
          f"paper: Baumann et al., SOSP 2009, Figure 3"])
    return 0


def client_counts(n_cores: int, chosen=None) -> tuple[list[int], list[int]]:
    """Client counts for shm (up to every core) and msg (one core is the server)."""
    from emulator.errors import SpratError
    if chosen is not None:
        if max(chosen) > n_cores:
            raise SpratError(f"--cores {max(chosen)}: the machine has {n_cores} cores")
        return sorted(set(chosen)), sorted({min(c, n_cores - 1) for c in chosen} - {0})
    steps = [c for c in CORE_STEPS if c < n_cores]
    return steps + [n_cores], [c for c in steps if c < n_cores - 1] + [n_cores - 1]


# --- one run --------------------------------------------------------------------------
def measure_shm(topology, cores, lines, updates, warmup, timing="detailed") -> dict:
    args = f"clients={cores} lines={lines} updates={updates} warmup={warmup}"
    # channels: the sync page and the shared array (userland/shm_update.S)
    output = run_image(topology, [f"/userland/shm_update.S channels=0-1 {args}"], timing)
    return row("shm", cores, lines, client_average(output, "shm", cores), None)


def measure_msg(topology, clients, lines, updates, warmup, timing="detailed") -> dict:
    # channels: the sync page, then the array and a channel per client core
    # (userland/msg_server.S)
    args = f"clients={clients} updates={updates} warmup={warmup} " \
           f"channels=0-{topology.n_cores()}"
    output = run_image(topology, [f"/userland/msg_server.S core=0 lines={lines} {args}",
                                  f"/userland/msg_client.S {args}"], timing)
    server_updates, server_cycles = reports(output, "server")[0]
    return row("msg", clients, lines, client_average(output, "msg", clients),
               server_cycles / server_updates)


def row(mode, cores, lines, cycles, server_cycles) -> dict:
    rounded = None if server_cycles is None else round(server_cycles, 1)
    return dict(zip(HEADERS, [mode, cores, lines, round(cycles, 1), rounded]))


def run_image(topology, modules, timing="detailed") -> list[tuple[int, str]]:
    """Boot the modules on `topology`, run them to the end; the console lines."""
    from kernel.boot import boot_image
    output = []
    with tempfile.TemporaryDirectory() as directory:
        image = Path(directory) / "shm_vs_msg.lst"
        image.write_text("kernel /cpudriver/cpudriver.S\n"
                         + "".join(f"module {module}\n" for module in modules))
        system = boot_image(image, cores=topology.n_cores(), topology=topology,
                            output=lambda core, line: output.append((core, line)), timing=timing)
    interleave_finely_after_barrier(system)
    result = system.machine.run(max_cycles=MAX_CYCLES)
    if not result.clean:
        raise MachineFailure(f"shm-vs-msg: {modules[0]} failed: {result.reason}")
    return output


def interleave_finely_after_barrier(system) -> None:
    """Switch the scheduler to FINE_QUANTUM when a core leaves the start barrier.

    A code hook on each core's `barrier_done` (userland/lib/measure.S). It
    ends the core's quantum there; the instruction runs again when the core
    resumes, and the hook, finding the switch made, lets it pass.
    """
    from unicorn import UC_HOOK_CODE
    scheduler = system.machine.scheduler

    def switch(core):
        def on_barrier_done(uc, address, size, _):
            if scheduler.quantum != FINE_QUANTUM:
                scheduler.quantum = FINE_QUANTUM
                core.request_stop()
        return on_barrier_done

    for core in system.machine.cores:
        module = system.module_for_core(core.id)
        if module is None or "barrier_done" not in module.program.symbols:
            continue
        address = module.program.symbols["barrier_done"]
        core.uc.hook_add(UC_HOOK_CODE, switch(core), begin=address, end=address)
        core.uc.ctl_remove_cache(address, address + 1)


def reports(output, label) -> list[tuple[int, int]]:
    """(updates, cycles) from every line 'LABEL updates N cycles C'."""
    found = []
    for _core, line in output:
        words = line.split()
        if len(words) == 5 and words[0] == label and words[1] == "updates":
            found.append((int(words[2]), int(words[4])))
    return found


def client_average(output, label, clients) -> float:
    measured = reports(output, label)
    if len(measured) != clients:
        raise SystemExit(f"shm-vs-msg: expected {clients} '{label}' reports, got "
                         f"{len(measured)}: {[line for _, line in output][-3:]}")
    return sum(cycles / updates for updates, cycles in measured) / clients


# --- presenting ---------------------------------------------------------------------------
def pivot(rows, line_counts):
    """One table row per client count; a column per mode and line count."""
    columns = ([("shm", l, "cycles_per_update") for l in line_counts]
               + [("msg", l, "cycles_per_update") for l in line_counts]
               + [("msg", l, "server_cycles_per_update") for l in line_counts])
    cells = {(r["mode"], r["lines"], r["cores"]): r for r in rows}
    table = []
    for cores in sorted({r["cores"] for r in rows}):
        values = [cells.get((mode, lines, cores), {}).get(field) for mode, lines, field in columns]
        table.append([cores] + values)
    names = [("server" if field.startswith("server") else mode) + str(lines)
             for mode, lines, field in columns]
    return ["cores"] + names, table


def plot(rows, topology_name, path: str) -> None:
    """Draw shm, msg and server cycles per update against clients, as in Figure 3."""
    import matplotlib
    matplotlib.use("Agg")               # files only, no display needed
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(8, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, lines in enumerate(sorted({r["lines"] for r in rows})):
        colour = colours[index % len(colours)]
        for mode, field, style, name in (("shm", "cycles_per_update", "-o", "SHM"),
                                         ("msg", "cycles_per_update", "--s", "MSG"),
                                         ("msg", "server_cycles_per_update", ":^", "Server")):
            points = sorted((r["cores"], r[field]) for r in rows
                            if r["mode"] == mode and r["lines"] == lines)
            if points:
                axes.plot(*zip(*points), style, color=colour, label=f"{name}{lines}",
                          markersize=4)
    axes.set_xlabel("cores (clients)")
    axes.set_ylabel("cycles per update")
    # cycles as the tables print them (12,000), never as an offset or 1e4;
    # cores are whole (no tick at 2.25 cores)
    axes.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_title(f"shared memory vs messages on {topology_name} (cf. Baumann et al. 2009, "
                   f"Fig. 3)")
    axes.grid(True, alpha=0.3)
    axes.legend(ncol=3, fontsize="small")
    figure.tight_layout()
    save_png(figure, path, dpi=100)
    plt.close(figure)
