"""The debugger's expression language: what `print`, `set`, `display`, `x`
and breakpoint conditions read.

    expression = parse("u32[$rsp + 8] & 0xff")
    expression.evaluate(context)        # -> an int

One small, C-like language, so that a person types what they would in gdb:

    numbers     42  0x2a  0b101010  1_000
    registers   $rax  $rip  $eflags ...           (the selected core's)
    labels      urpc_send  syscall_entry          (their address)
    memory      [ADDR]  or  *ADDR                 8 bytes at a virtual address
                u8[ADDR]  u16[ADDR]  u32[ADDR]  u64[ADDR]   1, 2, 4, 8 bytes
    arrays      word[N]                           the context's own (a message's
                                                  payload word N, in `break send`)
    operators   + - * / %  << >>  & | ^ ~  == != < <= > >=  && || !  ( )

Spaces are allowed anywhere between terms. Values are unsigned 64-bit, as
the registers are: arithmetic wraps, and `-1` is 0xffff_ffff_ffff_ffff.
What a register, a label, a memory word or an array element is, is the
context's business (any object with `register(name)`, `symbol(name)`,
`memory(address, size)` and `array(name, index)`); this module only
parses and computes. `set` parses its two sides apart: a register or a
memory node on the left (`is_lvalue`) is where the value goes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MASK = 2**64 - 1
WIDTHS = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}
ARRAYS = ("word",)

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<number>0[xX][0-9a-fA-F_]+|0[bB][01_]+|\d[\d_]*)
    | (?P<register>\$[A-Za-z_]\w*)
    | (?P<name>[A-Za-z_.][\w.]*)
    | (?P<operator><<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^~!<>()\[\]])
    )""", re.VERBOSE)

# Binary operators, loosest first; each level binds tighter than the one before.
_LEVELS = (("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", "<=", ">", ">="),
           ("<<", ">>"), ("+", "-"), ("*", "/", "%"))


class ExpressionError(ValueError):
    """An expression that does not parse or cannot be computed."""


# --- The tree --------------------------------------------------------------------
@dataclass(frozen=True)
class Number:
    value: int

    def evaluate(self, context) -> int:
        return self.value & MASK


@dataclass(frozen=True)
class Register:
    name: str

    def evaluate(self, context) -> int:
        return context.register(self.name) & MASK


@dataclass(frozen=True)
class Symbol:
    name: str

    def evaluate(self, context) -> int:
        return context.symbol(self.name) & MASK


@dataclass(frozen=True)
class Memory:
    address: object
    size: int

    def evaluate(self, context) -> int:
        return context.memory(self.address.evaluate(context), self.size)


@dataclass(frozen=True)
class Element:
    array: str
    index: object

    def evaluate(self, context) -> int:
        return context.array(self.array, self.index.evaluate(context)) & MASK


@dataclass(frozen=True)
class Unary:
    operator: str
    operand: object

    def evaluate(self, context) -> int:
        value = self.operand.evaluate(context)
        if self.operator == "-":
            return -value & MASK
        if self.operator == "~":
            return ~value & MASK
        return int(not value)       # "!"


@dataclass(frozen=True)
class Binary:
    operator: str
    left: object
    right: object

    def evaluate(self, context) -> int:
        a = self.left.evaluate(context)
        if self.operator == "&&":
            return int(bool(a) and bool(self.right.evaluate(context)))
        if self.operator == "||":
            return int(bool(a) or bool(self.right.evaluate(context)))
        b = self.right.evaluate(context)
        if self.operator in ("/", "%") and b == 0:
            raise ExpressionError("division by zero")
        return _BINARY[self.operator](a, b) & MASK


_BINARY = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a // b, "%": lambda a, b: a % b,
    "<<": lambda a, b: a << min(b, 64), ">>": lambda a, b: a >> min(b, 64),
    "&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b,
    "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b),
    "<": lambda a, b: int(a < b), "<=": lambda a, b: int(a <= b),
    ">": lambda a, b: int(a > b), ">=": lambda a, b: int(a >= b),
}


def is_lvalue(node) -> bool:
    """Can `set` store into it? (a register or memory)"""
    return isinstance(node, (Register, Memory))


# --- Parsing ---------------------------------------------------------------------
def parse(text: str):
    """The tree of an expression (ExpressionError, saying where, if it is not one)."""
    tokens = _tokens(text)
    parser = _Parser(tokens, text)
    node = parser.expression(0)
    if parser.position < len(tokens):
        raise ExpressionError(f"unexpected {tokens[parser.position]!r} in {text.strip()!r}")
    return node


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ExpressionError(f"cannot read {text[position:].strip()!r} "
                                  f"in {text.strip()!r}")
        tokens.append(match.group(match.lastgroup))
        position = match.end()
    if not tokens:
        raise ExpressionError("an expression is missing")
    return tokens


class _Parser:
    def __init__(self, tokens: list[str], text: str):
        self.tokens, self.text, self.position = tokens, text, 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None:
            raise ExpressionError(f"{self.text.strip()!r} ends too soon"
                                  + (f": {expected!r} expected" if expected else ""))
        if expected is not None and token != expected:
            raise ExpressionError(f"{expected!r} expected, not {token!r}, in {self.text.strip()!r}")
        self.position += 1
        return token

    def expression(self, level: int):
        if level == len(_LEVELS):
            return self.unary()
        node = self.expression(level + 1)
        while self.peek() in _LEVELS[level]:
            operator = self.take()
            node = Binary(operator, node, self.expression(level + 1))
        return node

    def unary(self):
        if self.peek() in ("-", "~", "!"):
            operator = self.take()
            return Unary(operator, self.unary())
        if self.peek() == "*":
            self.take()
            return Memory(self.unary(), 8)
        return self.primary()

    def primary(self):
        token = self.take()
        if token == "(":
            node = self.expression(0)
            self.take(")")
            return node
        if token == "[":
            node = self.expression(0)
            self.take("]")
            return Memory(node, 8)
        if token.startswith("$"):
            return Register(token[1:].lower())
        if token[0].isdigit():
            return Number(int(token.replace("_", ""), 0))
        if token[0].isalpha() or token[0] in "_.":
            if self.peek() == "[" and (token in WIDTHS or token in ARRAYS):
                self.take("[")
                index = self.expression(0)
                self.take("]")
                return Memory(index, WIDTHS[token]) if token in WIDTHS else Element(token, index)
            return Symbol(token)
        raise ExpressionError(f"unexpected {token!r} in {self.text.strip()!r}")
