"""Plain-text tables for the terminal, and the same rows as JSON.

    print(format_table(["cores", "boot_s"], [[1, 0.02], [4, 0.05]]))

Numbers are right-aligned with thousands separators; floats get three
significant decimals. Every bench prints its rows through here, so `--json`
and the table always show the same data.
"""

import json


def format_cell(value) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def format_table(headers, rows) -> str:
    cells = [[format_cell(value) for value in row] for row in rows]
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
