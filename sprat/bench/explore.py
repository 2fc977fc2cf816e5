"""`sprat bench explore`: how fast `sprat explore` runs seeds, on one worker and on two.

The image is four cores speaking URPC: two streams of messages (core 0 to
core 1 and core 2 to core 3), every run judged as `sprat explore` judges
it (the channel observer on). Each row runs the same seeds with `--jobs`
1 or 2 worker processes and gives runs per host second; the ratio of the
two is the parallel speed-up (at most 2, on a host with two free cores;
less when other work shares them).

A second table gives what reverse execution costs (emulator/debug/
timetravel.py): the same image run to its end under the debugger
(`sprat debug`'s engine, seed 1, the fastest of 3 runs each), once
keeping no history and once keeping it (the journal and a checkpoint every 200 quanta), and the
ratio of their host times (the goal: under 1.5).
"""

import json
import tempfile
import time
from pathlib import Path

from sprat.bench import add_output_options, emit, progress

SEEDS = 8
MESSAGES = 500
JOBS = (1, 2)
CHECKPOINT_REPEATS = 3         # runs of each kind; the fastest counts
# Decimal places of the columns that are not counts (sprat/table.py).
DECIMALS = {"host_s": 3, "runs_per_s": 2, "speedup": 2, "cost": 2}
IMAGE = """title four cores, two URPC streams
kernel /cpudriver/cpudriver.S
module /userland/urpc_stream.S core=0 role=0 channel=3 count={count}
module /userland/urpc_stream.S core=1 role=1 channel=3 count={count}
module /userland/urpc_stream.S core=2 role=0 channel=4 count={count}
module /userland/urpc_stream.S core=3 role=1 channel=4 count={count}
"""


def add_parser(benches) -> None:
    import argparse
    from sprat.bench import number_list
    parser = benches.add_parser(
        "explore", help="seeds run per host second, with 1 and 2 worker processes",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_options(parser)
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds per row ({SEEDS})")
    parser.add_argument("--messages", type=int, default=MESSAGES,
                        help=f"messages in each stream ({MESSAGES})")
    parser.add_argument("--jobs", type=number_list, default=JOBS, metavar="J,J",
                        help="worker processes, one row each (default 1,2)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from emulator.errors import SpratError
    if args.seeds < 1 or args.messages < 1:
        raise SpratError("--seeds and --messages must be at least 1")
    rows = measure(args.seeds, args.messages, args.jobs)
    headers = ["jobs", "seeds", "failed", "host_s", "runs_per_s", "speedup"]
    progress("one run under the debugger without history, and one keeping it")
    costs = measure_checkpoints(args.messages)
    cost_headers = ["reverse", "host_s", "quanta", "checkpoints", "cost"]
    if args.json:
        print(json.dumps({"explore": [dict(zip(headers, [r[h] for h in headers])) for r in rows],
                          "checkpoints": costs}, indent=1))
        return 0
    emit(args, f"sprat explore: a 4-core URPC image ({args.messages} messages per stream), "
               f"{args.seeds} seeds", headers, [[row[h] for h in headers] for row in rows],
         notes=["speedup: runs per second against the first row's"], decimals=DECIMALS)
    emit(args, "reverse execution: the same image to its end under the debugger, seed 1",
         cost_headers, [[row[h] for h in cost_headers] for row in costs],
         notes=["cost: host time against the run without history (goal: under 1.5)"],
         decimals=DECIMALS)
    return 0


def measure_checkpoints(messages: int) -> list[dict]:
    """Host seconds to run the image to its end under the debug engine,
    without history and with it (emulator/debug/timetravel.py)."""
    from emulator.debug.engine import DebugEngine
    from emulator.errors import MachineFailure
    from emulator.debug.timetravel import TimeTravel
    from kernel.boot import boot_image
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        image = Path(directory) / "streams.lst"
        image.write_text(IMAGE.format(count=messages))
        boot_image(image, cores=4, seed=1)          # assembled once, before the clock starts
        for reverse in ("off", "on"):
            times = []
            for _ in range(CHECKPOINT_REPEATS):
                system = boot_image(image, cores=4, seed=1)
                engine = DebugEngine(system.machine, max_cycles=10**8)
                start = time.perf_counter()
                travel = TimeTravel(engine) if reverse == "on" else None
                event = engine.resume()
                times.append(time.perf_counter() - start)
                if event.reason != "exited" or event.exit_code:
                    raise MachineFailure(f"the bench image did not run to a clean end: "
                                         f"{engine.end_reason or event.reason}")
            elapsed = min(times)       # the run least disturbed by other work on the host
            rows.append({"reverse": reverse, "host_s": round(elapsed, 3),
                         "quanta": system.machine.scheduler.quanta_run,
                         "checkpoints": 0 if travel is None else len(travel.checkpoints)})
    for row in rows:
        row["cost"] = round(row["host_s"] / rows[0]["host_s"], 2)
    return rows


def measure(seeds: int, messages: int, jobs_list) -> list[dict]:
    from sprat.explore import Options, check_image, explore
    with tempfile.TemporaryDirectory() as directory:
        image = Path(directory) / "streams.lst"
        image.write_text(IMAGE.format(count=messages))
        options = Options(str(image), cores=4, topology=None, quantum=10_000,
                          max_cycles=10**8, expect_lines=(f"stream messages {messages}",))
        check_image(options)            # assembled once, before the clock starts
        rows = []
        for jobs in jobs_list:
            progress(f"{seeds} seeds on {jobs} worker process{'es' if jobs > 1 else ''}")
            start = time.perf_counter()
            outcomes = explore(options, range(1, seeds + 1), jobs)
            elapsed = time.perf_counter() - start
            rows.append({"jobs": jobs, "seeds": seeds,
                         "failed": sum(outcome.failed for outcome in outcomes),
                         "host_s": round(elapsed, 2), "runs_per_s": round(seeds / elapsed, 2)})
    for row in rows:
        row["speedup"] = round(row["runs_per_s"] / rows[0]["runs_per_s"], 2)
    return rows
