"""What keystone is never shown: lines that hang it, sizes that exhaust memory.

keystone 0.9.2 loops forever on a statement that starts with punctuation
(`%`, `)`, `:`, `[`, `$`, a stray `,` ...: a one-character typo), on a directive
or constant whose expression has a stray token (`.align 4]`, `X = 0)`,
`.byte ,1`, `.if 1]`, `.macro M a]`), on a block end with anything after
it (`.endr ]`), and allocates without end for `.zero -1`, `.space 1<<40`
or `.rept 0x7fffffff`. The assembler runs each statement past these checks
before keystone sees it, so the common typo gets a precise error at once;
the time and memory limits of emulator/asm_worker.py stay the backstop for
shapes nobody has found yet.

Use:

    check_start(text)                           # ScreenError if it cannot start a statement
    check_block(".if", "X == 1")                # ScreenError if malformed
    trees = operands(".zero", "4 * PAGE, 0")    # parsed; ScreenError if malformed
    check_bounds(".zero", [16384, 0])           # ScreenError if too big

Sizes, counts and alignments must be constants (numbers, defines and
constants, not labels): their values are checked before layout.
"""

from __future__ import annotations

import re

from emulator import asm_expr
from emulator.asm_expr import ExpressionError

__all__ = ["ScreenError", "check_start", "check_block", "operands", "check_bounds", "SIZED",
           "MAX_BYTES", "MAX_REPEAT", "MAX_ALIGN"]

MAX_BYTES = 1 << 24         # all .zero/.space/.skip/.fill and padding: 16 MiB (a program
                            # may be 2); keystone needs ~4 bytes of memory for each
MAX_REPEAT = 1 << 14        # .rept, nested ones multiplied: keystone assembles each
                            # repeat anew, ~0.1 ms an instruction
MAX_ALIGN = 1 << 16         # .align/.balign boundary (.p2align 16)

_STRING_DIRECTIVES = {".ascii", ".asciz", ".string"}
_VALUE_DIRECTIVES = {".byte", ".word", ".short", ".value", ".long", ".int", ".quad", ".octa"}
# Directive -> (fewest, most) operands, for those whose values are bounded.
SIZED = {".zero": (1, 2), ".space": (1, 2), ".skip": (1, 2), ".fill": (1, 3),
         ".align": (1, 3), ".balign": (1, 3), ".p2align": (1, 3), ".rept": (1, 1)}

_START = re.compile(r"[A-Za-z_.]")         # not `$`: keystone loops on `$ %`
_NAME = r"[A-Za-z_.$][\w.$]*"
# .macro NAME [param[:req|:vararg][=default]] ..., parameters apart by commas or spaces
_MACRO = re.compile(rf"\s*{_NAME}(?:(?:\s*,\s*|\s+)\w+(?:\s*:\s*(?:req|vararg))?"
                    rf"(?:\s*=\s*[^\s,]+)?)*\s*,?\s*")
_ALONE = {".endm", ".endr", ".endif", ".else", ".exitm"}
_STRING = re.compile(r'\s*"(?:\\.|[^"\\])*"\s*')


class ScreenError(ValueError):
    """A statement keystone must not see; str() says why."""


def check_start(text: str) -> None:
    """Refuse a statement that does not start like one (keystone loops on those)."""
    if not _START.match(text):
        raise ScreenError(f"'{text[0]}' cannot start a statement (an instruction, a "
                          f"directive, a label or a constant): {_shown(text)}")


def check_block(directive: str, text: str) -> None:
    """Refuse a block directive with operands keystone would loop on.

    `text` is what follows the directive: nothing for the ends, a condition
    for .if/.elseif, a name for .ifdef/.ifndef, a name and parameters for
    .macro, a name then values for .irp/.irpc.
    """
    text = text.strip()
    if directive in _ALONE:
        if text:
            raise ScreenError(f"{directive} takes no operands: {directive} {_shown(text)}")
    elif directive in (".if", ".elseif"):
        try:
            asm_expr.parse(text, condition=True)
        except ExpressionError as error:
            raise ScreenError(f"{directive} {_shown(text)}: {error}") from None
    elif directive in (".ifdef", ".ifndef"):
        if not re.fullmatch(_NAME, text):
            raise ScreenError(f"{directive} takes one name: {directive} {_shown(text)}")
    elif directive == ".macro":
        if not _MACRO.fullmatch(text):
            raise ScreenError(f".macro takes a name and parameter names: "
                              f".macro {_shown(text)}")
    elif directive in (".irp", ".irpc"):
        if not re.match(r"\w+\s*(,|$)", text):
            raise ScreenError(f"{directive} takes a parameter name, then values: "
                              f"{directive} {_shown(text)}")


def operands(directive: str, text: str) -> list:
    """The operands of a data or sized directive, parsed (strings kept as text).

    Every operand must be there (`.byte 1,,2` and `.byte ,1` are refused) and
    be one well-formed expression, or a string for .ascii and its kind.
    """
    items = _split(text)
    if items == [""]:
        items = []
    if directive in SIZED:
        fewest, most = SIZED[directive]
        if not fewest <= len(items) <= most:
            wanted = f"{fewest}" if fewest == most else f"{fewest} to {most}"
            raise ScreenError(f"{directive} takes {wanted} operand{'s' * (most > 1)}, "
                              f"not {len(items)}")
    trees = []
    for position, item in enumerate(items, 1):
        if not item.strip():
            raise ScreenError(f"{directive}: operand {position} is missing")
        if directive in _STRING_DIRECTIVES:
            if not _STRING.fullmatch(item):
                raise ScreenError(f"{directive} takes quoted strings, not {_shown(item)}")
            trees.append(item.strip())
            continue
        try:
            trees.append(asm_expr.parse(item))
        except ExpressionError as error:
            raise ScreenError(f"{directive} {_shown(item)}: {error}") from None
    return trees


def check_bounds(directive: str, values: list[int | None], repeated: int = 1) -> int:
    """Refuse sizes, counts and alignments that are not constants or are too big.

    `values` are the operands' values (None: uses a label or is unknown);
    `repeated` is how often the .rept blocks around the directive repeat it.
    Returns the most bytes the directive makes, repeats included.
    """
    names = {".zero": ("size", "fill"), ".space": ("size", "fill"), ".skip": ("size", "fill"),
             ".fill": ("count", "size", "value"), ".rept": ("count",),
             ".align": ("boundary", "fill", "limit"), ".balign": ("boundary", "fill", "limit"),
             ".p2align": ("power", "fill", "limit")}[directive]
    for name, value in zip(names, values):
        if value is None and name != "value":
            raise ScreenError(f"the {name} of {directive} must be a constant "
                              "(numbers, defines and constants; labels are not known yet)")
    first = values[0]
    if len(values) > 1 and directive not in (".fill", ".rept") and values[1] is not None:
        _within(directive, "fill", values[1], -128, 255)
    if directive in (".zero", ".space", ".skip"):
        _within(directive, "size", first, 0, MAX_BYTES // repeated, repeated)
        return first * repeated
    if directive == ".fill":
        size = values[1] if len(values) > 1 else 1
        _within(directive, "size", size, 0, 8)
        _within(directive, "count", first, 0, MAX_BYTES // max(size, 1) // repeated, repeated)
        return first * size * repeated
    if directive == ".rept":
        _within(directive, "count", first, 0, MAX_REPEAT // repeated, repeated)
        return 0
    if directive == ".p2align":
        _within(directive, "power", first, 0, MAX_ALIGN.bit_length() - 1)
        boundary = 1 << first
    else:
        _within(directive, "boundary", first, 0, MAX_ALIGN)
        if first & (first - 1):
            raise ScreenError(f"{directive} {first}: the boundary must be a power of two")
        boundary = first
    return max(boundary - 1, 0) * repeated             # the most padding it can add


def _shown(text: str, most: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= most else text[:most - 3] + "..."


def _within(directive: str, name: str, value: int, low: int, high: int,
            repeated: int = 1) -> None:
    if not low <= value <= high:
        inside = f" (inside .rept blocks that repeat it {repeated} times)" * (repeated > 1)
        raise ScreenError(f"{directive}: {name} {value} is not between {low} and {high}{inside}")


def _split(text: str) -> list[str]:
    """Comma-separated items, empty ones kept (strings and parentheses whole)."""
    items, depth, start, i = [], 0, 0, 0
    while i < len(text):
        char = text[i]
        if char in "\"'":
            i = _quoted_end(text, i)
            continue
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
        i += 1
    items.append(text[start:])
    return items


def _quoted_end(text: str, start: int) -> int:
    quote, i = text[start], start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == quote:
            return i + 1
        else:
            i += 1
    return len(text)
