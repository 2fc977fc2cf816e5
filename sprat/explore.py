"""`sprat explore`: run an image under many seeds and report the ones that fail.

    $ sprat explore images/stream.lst --cores 2 --seeds 50 --expect-line 'stream messages'
    seed 7: core 1 stopped with exit code 1; 1 program failed (core 1: 1) ...
    sprat: 1 of 50 seeds failed (7); replay the first: sprat debug images/stream.lst --cores 2 --seed 7

A multikernel's bugs are interleavings, and a seed is one interleaving
(emulator/scheduler.py): the same seed gives the same run, so a seed that
fails here fails again, instruction for instruction, in `sprat boot` or
`sprat debug` with `--seed`. Seeds 1 to N run in parallel host processes
(`--jobs`, 2 by default), each a whole machine of its own; the report is
in seed order whatever order they finish in.

A run fails when it does not end cleanly (a kernel panic, a core that
waits for a write no core will make, the cycle budget spent), when a
program exits with a non-zero status or is killed (unless
--expect-failures), when it breaks the channel protocol
(kernel/channel_observer.py; --no-protocol-check leaves that out), or when
a check given here does not hold: --expect-line TEXT wants a console line
containing TEXT.

A progress line on stderr says how far it got; the report goes to stdout.
Exit status: 0 when no seed failed, 1 when some did, 2 for bad input.
"""

from __future__ import annotations

import multiprocessing
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from emulator.errors import MachineFailure
from sprat.boot import (DEFAULT_MAX_CYCLES, add_lab_option, add_timing_option, cores_argument,
                        machine_shape, positive_argument, whole_number)

DEFAULT_JOBS = 2             # this machine's cores; --jobs for more
MAX_JOBS = 64
MAX_SEEDS = 100_000


@dataclass(frozen=True)
class Options:
    """What every seed's run shares (sent to the worker processes)."""
    image: str
    cores: int
    topology: str | None
    quantum: int
    max_cycles: int
    timing: str = "fast"
    expect_lines: tuple = ()
    expect_failures: bool = False
    protocol_check: bool = True


@dataclass
class Outcome:
    """One seed's verdict: why it failed (empty: it did not)."""
    seed: int
    reasons: list = field(default_factory=list)
    cycles: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.reasons)


def add_parser(subparsers) -> None:
    from emulator.scheduler import DEFAULT_QUANTUM
    parser = subparsers.add_parser(
        "explore", help="run an image under many seeds; report the seeds that fail",
        description="Run a boot image under seeds 1 to N (each another interleaving of the "
                    "cores) in parallel host processes, and report every seed whose run fails, "
                    "with the command that replays the first in `sprat debug`.")
    parser.add_argument("image", help="boot image in menu.lst style")
    parser.add_argument("--seeds", type=whole_number(1, MAX_SEEDS), required=True, metavar="N",
                        help=f"how many seeds to run: 1 to N (at most {MAX_SEEDS:,})")
    parser.add_argument("--jobs", type=whole_number(1, MAX_JOBS), default=DEFAULT_JOBS, metavar="J",
                        help=f"host processes running seeds at once (default {DEFAULT_JOBS})")
    parser.add_argument("--expect-line", action="append", default=[], metavar="TEXT",
                        help="a run fails unless a console line contains TEXT (repeatable)")
    parser.add_argument("--expect-failures", action="store_true",
                        help="programs that exit with a non-zero status or are killed do not "
                             "fail a run")
    parser.add_argument("--no-protocol-check", action="store_true",
                        help="do not watch the channels for protocol violations (faster; the "
                             "run's end and the --expect-line checks still judge)")
    parser.add_argument("--cores", type=cores_argument, default=None, metavar="N",
                        help="number of cores (default 4, or the topology's)")
    parser.add_argument("--topology", metavar="T", default=None,
                        help="a preset (see `sprat topology list`) or a TOML file")
    parser.add_argument("--quantum", type=positive_argument, default=DEFAULT_QUANTUM, metavar="Q",
                        help=f"the longest turn a seed may give a core (default {DEFAULT_QUANTUM:,})")
    add_timing_option(parser)
    parser.add_argument("--max-cycles", type=positive_argument, default=DEFAULT_MAX_CYCLES,
                        metavar="C", help=f"a run that passes C cycles fails (default "
                                          f"{DEFAULT_MAX_CYCLES:,})")
    add_lab_option(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from sprat.cli import EXIT_MACHINE_FAILURE, EXIT_OK
    cores, _ = machine_shape(args)
    options = Options(args.image, cores, args.topology, args.quantum, args.max_cycles,
                      args.timing, tuple(args.expect_line), args.expect_failures,
                      not args.no_protocol_check)
    check_image(options)
    outcomes = explore(options, range(1, args.seeds + 1), args.jobs, progress=show_progress)
    failed = [outcome for outcome in outcomes if outcome.failed]
    for outcome in failed:
        print(f"seed {outcome.seed}: {'; '.join(outcome.reasons)}")
    if not failed:
        print(f"sprat: all {len(outcomes)} seeds ran cleanly")
        return EXIT_OK
    seeds = ", ".join(str(outcome.seed) for outcome in failed[:20])
    more = ", ..." if len(failed) > 20 else ""
    print(f"sprat: {len(failed)} of {len(outcomes)} seeds failed ({seeds}{more}); replay the "
          f"first: {replay_command(args, failed[0].seed)}")
    return EXIT_MACHINE_FAILURE


def check_image(options: Options) -> None:
    """Boot the image once here, so that a bad image or option is one error, not N."""
    boot(options, seed=None, output=None)


def explore(options: Options, seeds, jobs: int, progress=None) -> list[Outcome]:
    """Run every seed, `jobs` at a time in worker processes; the outcomes in seed order."""
    seeds = list(seeds)
    if jobs == 1:
        outcomes = []
        for seed in seeds:
            outcomes.append(run_seed(options, seed))
            if progress:
                progress(outcomes, len(seeds))
        return outcomes
    # Forked workers inherit what this process has set up: a lab workspace,
    # the assembler's cache of the image it just built.
    context = multiprocessing.get_context("fork")
    done = []
    with ProcessPoolExecutor(max_workers=min(jobs, len(seeds)), mp_context=context) as pool:
        futures = [pool.submit(run_seed, options, seed) for seed in seeds]
        try:
            for future in as_completed(futures):
                done.append(future.result())
                if progress:
                    progress(done, len(seeds))
        except BrokenProcessPool:
            # A worker ended without an outcome: stopped by the lab watchdog,
            # which said why on its own line, or killed from outside. The
            # pool has ended its workers; wait for its manager thread too,
            # else it may close its wake-up pipe while the interpreter's exit
            # writes to it, and Python prints a traceback (EBADF) at exit.
            pool.shutdown(wait=True, cancel_futures=True)
            raise MachineFailure("a worker process ended before its seed's outcome "
                                 f"({len(done)} of {len(seeds)} seeds done)") from None
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return sorted(done, key=lambda outcome: outcome.seed)


def run_seed(options: Options, seed: int) -> Outcome:
    """One run under `seed`, and why it failed (in a worker process)."""
    from emulator.errors import SpratError
    console = []
    try:
        system, observer = boot(options, seed, lambda core, line: console.append(line))
        result = system.machine.run(max_cycles=options.max_cycles)
    except SpratError as error:
        return Outcome(seed, [str(error)])
    reasons = []
    if not result.clean:
        reasons.append(result.reason)
    failures = system.failures()
    if failures and not options.expect_failures:
        reasons.append(failures)
    if observer is not None and observer.violations:
        count = len(observer.violations)
        reasons.append(f"{count} channel protocol violation{'s' if count > 1 else ''}, the "
                       f"first: {observer.violations[0]['text']}")
    for text in options.expect_lines:
        if not any(text in line for line in console):
            reasons.append(f"no console line contains {text!r}")
    return Outcome(seed, reasons, result.cycles)


def boot(options: Options, seed, output):
    """A machine built from the options, the channel observer on it unless turned off."""
    from emulator.interconnect import load_topology
    from kernel.boot import boot_image
    from kernel.tracepoints import install_message_tracepoints
    topology = load_topology(options.topology) if options.topology else None
    system = boot_image(options.image, cores=options.cores, quantum=options.quantum,
                        output=output, topology=topology, seed=seed, timing=options.timing)
    observer = install_message_tracepoints(system) if options.protocol_check else None
    return system, observer


def replay_command(args, seed: int) -> str:
    """The `sprat debug` command that runs `seed` again, stopped at its start."""
    words = ["sprat", "debug", args.image]
    if args.lab:
        words += ["--lab", args.lab]
    if args.topology:
        words += ["--topology", args.topology]
    elif args.cores:
        words += ["--cores", str(args.cores)]
    from emulator.scheduler import DEFAULT_QUANTUM
    if args.quantum != DEFAULT_QUANTUM:
        words += ["--quantum", str(args.quantum)]
    if args.max_cycles != DEFAULT_MAX_CYCLES:
        words += ["--max-cycles", str(args.max_cycles)]
    if args.timing != "fast":
        words += ["--timing", args.timing]
    words += ["--seed", str(seed)]
    return " ".join(shlex.quote(word) for word in words)


def show_progress(done: list, total: int) -> None:
    """One line on stderr, rewritten as seeds finish."""
    failed = sum(outcome.failed for outcome in done)
    end = "\n" if len(done) == total else ""
    print(f"\rsprat explore: {len(done)}/{total} seeds run, {failed} failed", end=end,
          file=sys.stderr, flush=True)
