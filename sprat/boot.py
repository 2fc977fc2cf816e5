"""`sprat boot`: boot an image and stream the machine's console.

    $ sprat boot --cores 4
    [core 0] hello from core 0 of 4
    ...
    core  state    instructions  cycles  syscalls  interrupts  ipis_in  ipis_out
    ...
    sprat: every core halted cleanly after 27,554 cycles

The run is deterministic: the same image and options print the same bytes.
"""

import contextlib
import sys
from pathlib import Path

from emulator.machine import MAX_CORES
from emulator.scheduler import DEFAULT_QUANTUM
from sprat.lab.watchdog import on_stop
from sprat.table import format_table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT / "images" / "default.lst"
DEFAULT_CORES = 4
DEFAULT_MAX_CYCLES = 100_000_000

TABLE_HEADERS = ["core", "state", "instructions", "cycles", "syscalls", "interrupts",
                 "ipis_in", "ipis_out", "dispatchers", "failed", "exit"]


def cores_argument(text: str) -> int:
    import argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of cores") from None
    if not 1 <= value <= MAX_CORES:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_CORES}, got {value}")
    return value


# No count on the command line may reach the 64-bit wrap of a cycle counter:
# 2^48 cycles is a day of modeled time at 3 GHz, and hours of host time.
LARGEST_COUNT = 1 << 48


def whole_number(low: int, high: int = LARGEST_COUNT):
    """An argparse type: a whole number from `low` to `high` ('_' allowed: 1_000)."""
    import argparse

    def check(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:,} and {high:,}, got {value:,}")
        return value
    check.__name__ = "whole number"
    return check


positive_argument = whole_number(1)


def add_machine_options(parser) -> None:
    """The options every command that builds a machine shares."""
    parser.add_argument("image", nargs="?", default=str(DEFAULT_IMAGE),
                        help="boot image in menu.lst style (default: images/default.lst)")
    parser.add_argument("--cores", type=cores_argument, default=None, metavar="N",
                        help=f"number of cores, 1 to {MAX_CORES} (default {DEFAULT_CORES}, "
                             "or the topology's)")
    parser.add_argument("--quantum", type=positive_argument, default=DEFAULT_QUANTUM, metavar="Q",
                        help="instructions a core runs before the scheduler picks again "
                             f"(default {DEFAULT_QUANTUM:,}); larger is faster; message latencies "
                             "do not depend on it, contended shared-memory costs do (use 1, or "
                             "--timing detailed, where nothing does)")
    parser.add_argument("--seed", type=seed_argument, default=None, metavar="S",
                        help="another schedule: which core runs next among those close in "
                             "modeled time, and for how long, drawn from seed S (0 to 2**64-1); "
                             "the same seed gives the same run (default: no seed, the "
                             "furthest-behind core for a whole quantum)")
    add_lab_option(parser)
    parser.add_argument("--topology", metavar="T", default=None,
                        help="the machine's interconnect: a preset (see `sprat topology list`) "
                             "or a TOML file; the core count follows it")
    add_timing_option(parser)


def add_timing_option(parser, default: str = "fast") -> None:
    """--timing fast|detailed: the cost model's two modes (emulator/cost.py)."""
    parser.add_argument("--timing", choices=("fast", "detailed"), default=default,
                        help="the cost model's timing: 'fast' serves each core's accesses to "
                             "channels as the core runs, and a store waits for its line; "
                             "'detailed' serves them in the order of the cores' clocks, with "
                             "store buffers (x86-TSO), several times slower on the host "
                             f"(default {default})")


def seed_argument(text: str) -> int:
    import argparse
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**64-1, got {value}")
    return value


def add_lab_option(parser) -> None:
    """--lab DIR: read sprat/cli.py before the parser runs; here for --help.
    --python-limit S: the watchdog's limit (sprat/lab/watchdog.py)."""
    from sprat.lab.watchdog import DEFAULT_LIMIT, limit_argument
    parser.add_argument("--lab", metavar="DIR", default=None,
                        help="a lab workspace (`sprat lab start`): its files instead of the "
                             "tree's (the default inside one)")
    parser.add_argument("--python-limit", metavar="S", type=limit_argument,
                        default=DEFAULT_LIMIT,
                        help="in a lab workspace, seconds of host time one call into its "
                             "Python files may take before sprat stops, naming the line "
                             f"(exit 1; default {DEFAULT_LIMIT:g})")


def machine_shape(args):
    """(cores, topology) from --cores and --topology; they must agree."""
    from emulator.errors import SpratError
    from emulator.interconnect import load_topology
    if args.topology is None:
        return args.cores or DEFAULT_CORES, None
    topology = load_topology(args.topology)
    if args.cores is not None and args.cores != topology.n_cores():
        raise SpratError(f"--cores {args.cores} disagrees with topology {topology.name}, "
                         f"which has {topology.n_cores()} cores (leave --cores out)")
    return topology.n_cores(), topology


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "boot", help="boot an image and run it to the end",
        description="Boot a menu.lst-style image on an emulated multicore machine, stream "
                    "each core's console output, and print a table of what every core did.")
    add_machine_options(parser)
    parser.add_argument("--max-cycles", type=positive_argument, default=DEFAULT_MAX_CYCLES,
                        metavar="C", help="stop (exit 1) when every core's modeled clock passes "
                                          f"C cycles (default {DEFAULT_MAX_CYCLES:,})")
    parser.add_argument("--expect-failures", action="store_true",
                        help="programs that exit with a non-zero status or are killed for a "
                             "fault do not fail the run (images/faults.lst is about that)")
    from sprat.debug import add_gdb_option, add_trace_option    # --gdb PORT, --trace FILE
    add_gdb_option(parser)
    add_trace_option(parser)
    parser.add_argument("--inject", action="append", default=[], metavar="RULE",
                        help="a fault, on purpose (emulator/faults.py; again for more): "
                             "stop:C@T stops core C at cycle T, slow:C*R makes core C's "
                             "clock R times slower, link:A-B*F makes transfers between "
                             "cores A and B F times slower")
    parser.set_defaults(run=run)


def print_line(core: int, line: str) -> None:
    print(f"[core {core}] {line}", flush=True)


def run(args) -> int:
    from kernel.boot import boot_image
    from sprat.cli import EXIT_MACHINE_FAILURE, EXIT_OK

    cores, topology = machine_shape(args)
    from emulator import faults
    rules = [faults.parse(rule) for rule in args.inject]
    system = boot_image(args.image, cores=cores, quantum=args.quantum, output=print_line,
                        topology=topology, seed=args.seed, timing=args.timing)
    faults.apply(system.machine, rules)
    with recording(system, args.trace) as observer, on_stop(lambda: end_early(system)):
        if args.gdb is not None and serve_gdb_first(system, args, observer) == "kill":
            print("sprat: gdb killed the run", file=sys.stderr)
            return EXIT_MACHINE_FAILURE
        try:
            result = system.machine.run(max_cycles=args.max_cycles)
        except KeyboardInterrupt:
            end_early(system)
            raise
    print(core_table(system))
    violations = observer.violations if observer is not None else []
    if violations:
        report_violations(violations)
        if result.clean:
            print(f"sprat: every core halted after {result.cycles:,} cycles, but the channel "
                  "protocol was broken", file=sys.stderr)
            return EXIT_MACHINE_FAILURE
    failures = system.failures()
    if result.clean and failures and not args.expect_failures:
        print(f"sprat: every core halted after {result.cycles:,} cycles, but {failures} "
              "(--expect-failures if that is the point)", file=sys.stderr)
        from kernel.diagnosis import user_faults
        for line in user_faults(system):
            print(f"sprat:   {line}", file=sys.stderr)
        return EXIT_MACHINE_FAILURE
    if result.clean:
        print(f"sprat: {result.reason} after {result.cycles:,} cycles")
        return EXIT_OK
    from kernel.diagnosis import explain_end
    first, *lines = explain_end(system, result.reason)
    print(f"sprat: {first}", file=sys.stderr)
    for line in lines:
        print(f"sprat:   {line}", file=sys.stderr)
    return EXIT_MACHINE_FAILURE


def end_early(system) -> None:
    """A run cut short (Ctrl-C, or the lab watchdog: sprat/lab/watchdog.py)
    still says where every core was."""
    system.machine.console.flush()
    print(core_table(system))


VIOLATIONS_SHOWN = 5


def report_violations(violations, out=None) -> None:
    """The channel protocol violations a run made, the first few in full."""
    out = out or sys.stderr
    count = len(violations)
    print(f"sprat: {count} channel protocol violation{'s' if count > 1 else ''}:", file=out)
    for violation in violations[:VIOLATIONS_SHOWN]:
        print(f"sprat:   {violation['text']}", file=out)
    if count > VIOLATIONS_SHOWN:
        print(f"sprat:   ... and {count - VIOLATIONS_SHOWN} more (all of them in the trace)",
              file=out)


@contextlib.contextmanager
def recording(system, path):
    """--trace FILE: record the machine's messages, IPIs, protocol violations and
    what each core runs while the block runs; yields the channel observer (None
    without --trace)."""
    from kernel.tracepoints import install_message_tracepoints, install_run_tracepoints
    from sprat.debug import open_trace
    if not path:
        yield None
        return
    recorder = open_trace(system.machine, path)
    observer = install_message_tracepoints(system)
    install_run_tracepoints(system)
    # A run the lab watchdog stops leaves a whole trace too.
    with on_stop(recorder.close):
        try:
            yield observer
        finally:
            recorder.close()


def serve_gdb_first(system, args, observer=None) -> str:
    """--gdb PORT: gdb drives the machine from its first instruction, with the
    symbol files and the script of `sprat debug --gdb` (sprat/gdb.py); once
    gdb detaches, the run goes on as if it had never been stopped."""
    from sprat import gdb
    from sprat.debug import attach
    # --trace installed the message tracepoints already (`recording`).
    debuggee = attach(system, max_cycles=args.max_cycles, tracepoints=args.trace is None,
                      observer=observer, expect_failures=args.expect_failures)
    try:
        return gdb.serve(debuggee, args.gdb, sys.stdout, args.gdb_files)
    finally:
        debuggee.engine.travel.close()      # no history kept for the rest of the run
        debuggee.engine.close()


def core_table(system) -> str:
    """What each core did; `dispatchers` counts the programs its CPU driver ran."""
    rows = []
    for core in system.machine.cores:
        s = core.stats
        rows.append([core.id, core.state.value, s.instructions, core.cycles, s.syscalls,
                     s.interrupts, s.ipis_received, s.ipis_sent, system.dispatchers(core.id),
                     system.failed_programs(core.id), core.exit_code])
    return format_table(TABLE_HEADERS, rows)
