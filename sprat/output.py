"""Files named on the command line: their names, and charts.

    parser.add_argument("--plot", type=png_name)      # '' or 'x.txt': one-line usage error
    save_png(figure, args.plot)                       # OutputError (exit 1) if it cannot

A chart is written to exactly the name given: matplotlib would add `.png`
to a name without a suffix, so such a name is refused up front instead.
The writing itself goes through emulator/files.py, where a full disk or an
I/O error becomes one line.
"""

import argparse
import io

from emulator.files import check_output_name, write_bytes


def output_name(what: str, suffix: str = ""):
    """An argparse type: a non-empty file name (ending in `suffix`, if given)."""
    def check(text: str) -> str:
        try:
            return check_output_name(text, what, suffix)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    check.__name__ = what
    return check


png_name = output_name("chart", ".png")


def input_name(what: str):
    """An argparse type: a non-empty name of a file to read (emulator/files.py reads it)."""
    def check(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"an empty name is not {what}")
        return text
    check.__name__ = what
    return check


def save_png(figure, path, dpi: int = 100) -> None:
    """Render a matplotlib figure as PNG and write it to `path`, exactly."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    write_bytes(path, buffer.getvalue(), "chart")
