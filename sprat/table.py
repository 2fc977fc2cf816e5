"""Plain-text tables for the terminal, and the same rows as JSON.

    print(format_table(["cores", "boot_s"], [[1, 0.0213], [4, 0.05]], decimals={"boot_s": 3}))

A number prints as a whole number with thousands separators (cycles,
instructions, counts: 1,944), unless its column is given a number of
decimals (ratios, rates, seconds: 0.98), which every value in the column
then has: a column never mixes "86.10" with "106", and no number prints
in scientific notation. Every bench prints its rows through here, so
`--json` and the table always show the same data; the JSON keeps the
numbers as they are.
"""

import json
import math


def format_cell(value, decimals: int = 0) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float)):
        text = f"{value:,.{decimals}f}"
        # -0.4 rounds to "-0": a sign on nothing is not a measurement
        return text[1:] if text.startswith("-") and not text.strip("-0.,") else text
    return str(value)


def format_table(headers, rows, decimals=None) -> str:
    """`rows` under `headers`; `decimals` maps a header to its decimal places
    (a column not in it prints whole numbers)."""
    places = [(decimals or {}).get(header, 0) for header in headers]
    cells = [[format_cell(value, digits) for value, digits in zip(row, places)] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
               for i in range(len(headers))]

    def line(values):
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def format_json(headers, rows) -> str:
    """One JSON object per row, as a JSON list."""
    return json.dumps([dict(zip(headers, row)) for row in rows], indent=1)
