"""`sprat bench explore`: how fast `sprat explore` runs seeds, on one worker and on two.

The image is four cores speaking URPC: two streams of messages (core 0 to
core 1 and core 2 to core 3), every run judged as `sprat explore` judges
it (the channel observer on). Each row runs the same seeds with `--jobs`
1 or 2 worker processes and gives runs per host second; the ratio of the
two is the parallel speed-up (at most 2, on a host with two free cores;
less when other work shares them).
"""

import tempfile
import time
from pathlib import Path

from sprat.bench import add_output_options, emit, progress

SEEDS = 8
MESSAGES = 500
JOBS = (1, 2)
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
    emit(args, f"sprat explore: a 4-core URPC image ({args.messages} messages per stream), "
               f"{args.seeds} seeds", headers, [[row[h] for h in headers] for row in rows],
         notes=["speedup: runs per second against the first row's"])
    return 0


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
