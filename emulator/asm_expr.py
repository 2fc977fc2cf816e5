"""Constant expressions in assembly source, read by a parser of our own.

The assembler needs the value of `PAGES = 4 * STACK + 1`, of the size in
`.zero SIZE` and of every other constant before keystone sees the program:
to fold them into instructions (keystone gets arithmetic on symbols wrong),
and to refuse a size that would make keystone allocate without end. A
student's typo must not hang or crash the host, so the expressions are
read here, never given to Python's eval, and every step is bounded:

  * a value is a 64-bit integer (from -2**63 to 2**64 - 1); an operation
    whose result leaves that range is an error, so no number ever grows;
  * a shift count is 0 to 63; dividing by zero is an error;
  * nesting (parentheses and unary operators) is at most MAX_DEPTH deep,
    and a number at most MAX_NUMBER characters long.

Use:

    tree = parse("4 * STACK + 1")           # ExpressionError if malformed
    names(tree)                             # -> {"STACK"}
    evaluate(tree, {"STACK": 2}.get)        # -> 9; None if a name is unknown

The language is the one keystone reads in Intel syntax: numbers (`42`,
`0x2a`, `2ah`, `0b101010`, `052` octal), character literals (`'*'`),
names (`[A-Za-z_.$][A-Za-z0-9_.$]*`), unary `- ~ +`, and the binary
operators with C's precedence, loosest first: `|`, `^`, `&`, `<< >>`,
`+ -`, `* / %`. Division truncates toward zero, as in C and keystone.
"""

from __future__ import annotations

import re
from typing import Callable

__all__ = ["ExpressionError", "parse", "names", "evaluate", "MIN_VALUE", "MAX_VALUE"]

MIN_VALUE = -(1 << 63)
MAX_VALUE = (1 << 64) - 1
MAX_DEPTH = 64              # parentheses and unary operators, nested
MAX_NUMBER = 80             # characters in one number (0b and 64 binary digits fit)


class ExpressionError(ValueError):
    """A malformed or out-of-range expression; str() says what is wrong."""


# A tree is a number (int), a name (str), or a tuple: (op, operand) for a
# unary operator and (op, left, right) for a binary one.
Tree = "int | str | tuple"

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<number>[0-9][0-9A-Za-z_]*)
    | (?P<char>'(?:\\.|[^'\\])')
    | (?P<name>[A-Za-z_.$][\w.$]*)
    | (?P<op><<|>>|\*\*|&&|\|\||==|!=|<>|<=|>=|[-+~*/%&|^()<>!])
    | (?P<bad>\S)
    )""", re.VERBOSE)

# Binary operators from the loosest to the tightest binding.
_LEVELS = (("|",), ("^",), ("&",), ("<<", ">>"), ("+", "-"), ("*", "/", "%"))
# In a condition (.if), comparisons and logic come first, loosest first. They
# are only checked for shape: keystone decides the condition.
_CONDITION_LEVELS = (("||",), ("&&",)) + _LEVELS[:3] + (("==", "!=", "<>"),
                                                         ("<", "<=", ">", ">=")) + _LEVELS[3:]
_VALUED = {"-", "~", "+", "*", "/", "%", "<<", ">>", "&", "|", "^"}
_ESCAPES = {"n": 10, "t": 9, "r": 13, "0": 0, "\\": 92, "'": 39, '"': 34}


def parse(text: str, condition: bool = False) -> Tree:
    """The tree of one expression; ExpressionError if it is not one.

    A `condition` (of .if) may also compare (`== != < <= > >=`) and combine
    (`&& || !`); such a tree is for checking only, evaluate() refuses it.
    """
    tokens = _tokens(text)
    if not tokens:
        raise ExpressionError("an expression is missing")
    parser = _Parser(tokens, _CONDITION_LEVELS if condition else _LEVELS, condition)
    tree = parser.binary(0, 0)
    if parser.position < len(tokens):
        raise ExpressionError(f"unexpected '{tokens[parser.position][1]}'")
    return tree


def names(tree: Tree) -> set[str]:
    """The names an expression uses."""
    found, todo = set(), [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, str):
            found.add(node)
        elif isinstance(node, tuple):
            todo.extend(node[1:])
    return found


def evaluate(tree: Tree, lookup: Callable[[str], int | None]) -> int | None:
    """The value of a parsed expression, or None if `lookup` knows not a name.

    Raises ExpressionError when a step leaves 64 bits, shifts too far or
    divides by zero. The recursion is as deep as the tree, which parse()
    bounds by MAX_DEPTH (binary operators chain without nesting)."""
    if isinstance(tree, int):
        return tree
    if isinstance(tree, str):
        value = lookup(tree)
        return None if value is None else _checked(value, tree)
    if tree[0] not in _VALUED:
        raise ExpressionError(f"'{tree[0]}' belongs in an .if condition, not in a value")
    if len(tree) == 2:
        value = evaluate(tree[1], lookup)
        if value is None:
            return None
        return _checked({"-": -value, "~": ~value, "+": value}[tree[0]], tree[0])
    operator, left, right = tree
    # A long chain `a + b + ... + z` is a left-leaning tree: walk its left
    # spine in a loop, so the depth of the recursion stays that of nesting.
    spine = []
    while isinstance(left, tuple) and len(left) == 3:
        spine.append((operator, right))
        operator, left, right = left
    value = evaluate(left, lookup)
    for operator, right in [(operator, right)] + spine[::-1]:
        other = evaluate(right, lookup)
        if value is None or other is None:
            value = None
            continue
        value = _apply(operator, value, other)
    return value


def _apply(operator: str, a: int, b: int) -> int:
    if operator in ("<<", ">>"):
        if not 0 <= b <= 63:
            raise ExpressionError(f"shift count {b} is not between 0 and 63")
        return _checked(a << b if operator == "<<" else a >> b, operator)
    if operator in ("/", "%"):
        if b == 0:
            raise ExpressionError("division by zero")
        quotient = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
        return _checked(quotient if operator == "/" else a - b * quotient, operator)
    result = {"+": a + b, "-": a - b, "*": a * b, "&": a & b, "|": a | b, "^": a ^ b}[operator]
    return _checked(result, operator)


def _checked(value: int, where: str) -> int:
    if not MIN_VALUE <= value <= MAX_VALUE:
        raise ExpressionError(f"the value of '{where}' does not fit in 64 bits")
    return value


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind is None:                      # only trailing space was left
            break
        value = match.group(kind)
        if kind == "bad":
            raise ExpressionError(f"unexpected '{value}'")
        if value == "**":
            raise ExpressionError("there is no power operator '**' in assembly")
        tokens.append((kind, value))
    return tokens


class _Parser:
    """Precedence climbing over the token list; depth counts nesting."""

    def __init__(self, tokens: list[tuple[str, str]], levels: tuple, condition: bool):
        self.tokens = tokens
        self.levels = levels
        self.unary_operators = "-~+!" if condition else "-~+"
        self.position = 0

    def peek(self) -> str | None:
        if self.position < len(self.tokens):
            kind, value = self.tokens[self.position]
            return value if kind == "op" else None
        return None

    def binary(self, level: int, depth: int) -> Tree:
        if level == len(self.levels):
            return self.unary(depth)
        tree = self.binary(level + 1, depth)
        while self.peek() in self.levels[level]:
            operator = self.tokens[self.position][1]
            self.position += 1
            tree = (operator, tree, self.binary(level + 1, depth))
        return tree

    def unary(self, depth: int) -> Tree:
        if depth >= MAX_DEPTH:
            raise ExpressionError(f"expression nested more than {MAX_DEPTH} deep")
        if self.position >= len(self.tokens):
            raise ExpressionError("an operand is missing at the end")
        kind, value = self.tokens[self.position]
        self.position += 1
        if kind == "op" and value in self.unary_operators:
            return (value, self.unary(depth + 1))
        if kind == "op" and value == "(":
            tree = self.binary(0, depth + 1)
            if self.peek() != ")":
                raise ExpressionError("'(' without its ')'")
            self.position += 1
            return tree
        if kind == "number":
            return _number(value)
        if kind == "char":
            return _character(value)
        if kind == "name":
            return value
        raise ExpressionError(f"an operand is missing before '{value}'")


def _number(text: str) -> int:
    if len(text) > MAX_NUMBER:
        raise ExpressionError(f"number {text[:20]}... is too long")
    lowered = text.lower()
    if "_" in lowered:                        # int() would take 1_000; keystone does not
        raise ExpressionError(f"'{text}' is not a number")
    try:
        if lowered.startswith("0x"):
            value = int(lowered[2:], 16)
        elif lowered.startswith("0b") and not lowered.endswith("h"):
            value = int(lowered[2:], 2)
        elif lowered.endswith("h"):
            value = int(lowered[:-1], 16)
        elif len(lowered) > 1 and lowered[0] == "0":
            value = int(lowered, 8)           # keystone reads 010 as octal
        else:
            value = int(lowered, 10)
    except ValueError:
        raise ExpressionError(f"'{text}' is not a number") from None
    return _checked(value, text)


def _character(text: str) -> int:
    inner = text[1:-1]
    if inner.startswith("\\"):
        if inner[1] not in _ESCAPES:
            raise ExpressionError(f"unknown escape in {text}")
        return _ESCAPES[inner[1]]
    if not inner.isascii():
        raise ExpressionError(f"{text} is not an ASCII character")
    return ord(inner)
