"""`sprat bench ...`: measurements, printed as tables (or JSON rows).

Each bench is a module here with `add_parser(subparsers)` and `run(args)`.
A bench measures against a baseline taken in the same run and prints
ratios, so that numbers from different hosts can be compared. Progress
goes to stderr, results to stdout.
"""

import sys

from sprat.table import format_json, format_table


def add_parser(subparsers) -> None:
    from sprat.bench import boot, explore, shm_vs_msg, syscall, tlb, urpc
    parser = subparsers.add_parser(
        "bench", help="measure the machine and the OS",
        description="Run a benchmark and print its table (--json for rows as JSON).")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH", required=True,
                                    parser_class=type(parser))
    for module in (boot, urpc, shm_vs_msg, syscall, tlb, explore):
        module.add_parser(benches)


def add_output_options(parser) -> None:
    from sprat.boot import add_lab_option
    parser.add_argument("--json", action="store_true", help="print the rows as JSON objects")
    add_lab_option(parser)


def emit(args, title: str, headers, rows, notes=(), decimals=None) -> None:
    """Print one table of rows (or JSON), with a title and notes. Numbers print
    whole, with thousands separators, but in the columns `decimals` gives
    places to (ratios, rates, seconds: sprat/table.py)."""
    if args.json:
        print(format_json(headers, rows))
        return
    print(title)
    print(format_table(headers, rows, decimals))
    for note in notes:
        print(note)
    print()


def number_list(text: str) -> tuple[int, ...]:
    """An argparse type: '1,2,4' -> (1, 2, 4), every number at least 1."""
    import argparse
    try:
        numbers = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers")
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"'{text}': every number must be at least 1")
    return numbers


def progress(message: str) -> None:
    print(f"  ... {message}", file=sys.stderr, flush=True)
