"""The assembler: x86-64 source text to bytes, labels and line numbers.

Every guest program in sprat (the CPU driver, the user programs) is x86-64
assembly in Intel syntax, assembled here by keystone. Use:

    program = assemble_file("cpudriver/cpudriver.S", base=0x200000,
                            defines={"KERNEL_CS": 0x08})
    memory.write(program.base, program.code)
    program.symbols["trap_common"]        # -> absolute address of the label
    program.line_at(rip)                  # -> ("cpudriver/trap.S", 42)
    program.symbol_at(rip)                # -> ("trap_common", 0x13)

The source language is keystone's (the GNU assembler's directives, Intel
operands) with these additions and guards:

  * comments start with `#` or `//` and run to the end of the line; `;`
    separates statements (it is NOT a comment);
  * `.include "file.S"` is resolved relative to the including file, and
    names an assembly source (.S, .s, .asm, .inc), never any other file;
  * `defines` become constants; a define overrides a definition of the same
    name in the source, so `ITERATIONS = 1000` is a default an image can
    override;
  * constants (`NAME = expr`, `.equ`, `.set`) are computed here, by the
    bounded parser in emulator/asm_expr.py (64-bit values, C's precedence),
    wherever in the program they are defined; keystone gets their numbers;
  * numeric local labels (`1:` ... `jmp 1b` / `jmp 1f`);
  * `sysretq` means `sysret` (48 0f 07), `offset label` means `label`, and
    `"\\x41"` escapes work in strings;
  * what keystone gets silently wrong is refused with a clear error (see
    "Keystone's sharp edges" below).

Assembling a student's program must never hang or crash the host: every
file is read with a size limit (MAX_SOURCE_BYTES, regular files only), the
shapes that hang keystone and sizes that exhaust memory are refused before
it sees them (emulator/asm_screen.py), and keystone runs in a worker
process with a deadline and a memory limit (emulator/asm_worker.py): a
hang or a crash there is an error naming the statement.

Why a wrapper: keystone returns bytes only, no symbol table, and it reports
errors without a line number. Here every statement gets an invisible marker
label, and a table of `.quad marker` words is appended after the program:
keystone lays the program out (relaxing jumps) exactly as it would without
the markers, then writes the address of every statement and every label
into that table, which we cut off again. One keystone call, exact addresses.

Results are cached in memory and on disk ($SPRAT_CACHE_DIR, else
~/.cache/sprat/asm), keyed by the text of every file involved, the base,
the defines and the keystone build, so a warm boot costs milliseconds.

Keystone's sharp edges (keystone-engine 0.9.2, all verified; tests in
tests/test_assembler.py):
  * `mov rbx, [0x5000]` becomes `[rip + 0x5000]` (a wrong address), while
    `mov rax, [0x5000]` is a correct movabs and `lea rax, [0x5000]` a correct
    but position-dependent rip-relative form. We refuse every RIP-relative
    operand the author did not write as `[rip + ...]`: use a register base.
  * Installing a symbol resolver makes it read every decimal number as hex
    (`.zero 300` is 768 bytes) and puts pc-relative fixups to resolved
    symbols 4 bytes off: the instance that assembles code never has one.
  * Immediates are silently changed: `push 0xffff` is push -1, `push
    0x80000000` a 16-bit push of 0, `mov al, 0x1234` is mov al, 0x34, and a
    constant used before its definition gets a sign-extended 32-bit field.
    A literal (or simple constant) last operand is checked against the
    disassembled result.
  * It loops forever on a line that starts with punctuation (`%`, `)`, `:`)
    and on stray tokens after a directive's operands (`.align 4]`, `X =
    0)`, `.byte ,1`), and allocates without end for `.zero -1`: see
    emulator/asm_screen.py.
  * `.text` crashes it, an unterminated string hangs it, unknown directives
    and `.word 0x12345` are dropped without an error, `.code32` and
    `.att_syntax` switch modes, labels named like registers (`rax:`) or
    size keywords (`byte:`) change meaning, and `iret` is the 16-bit form
    (66 cf). Each of these is caught before keystone sees it.
  * `mov rax, label` is the label's address (as `offset label`), and
    `[label]` an absolute 32-bit address: above 2 GiB write [rip + label].

Limits: statements inside .macro/.rept/.if blocks are attributed to the
block's first line, and labels inside blocks are not in `symbols`.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import importlib.util
import json
import os
import re
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from emulator import asm_expr, asm_screen, asm_worker
from emulator import sources as search_path
from emulator.asm_expr import ExpressionError
from emulator.asm_screen import ScreenError
from emulator.errors import SpratError

__all__ = ["AssemblyError", "Program", "assemble_file", "assemble_text", "clear_memo"]


# --------------------------------------------------------------------------
# What the assembler gives back
# --------------------------------------------------------------------------

class AssemblyError(SpratError):
    """An error in a guest source file; str() is `file:line: message`."""

    def __init__(self, file: str, line: int | None, message: str):
        self.file, self.line, self.message = file, line, message
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Program:
    """Assembled code and what a debugger needs to talk about it."""
    code: bytes
    base: int                                   # address of code[0]
    symbols: dict[str, int]                     # label -> absolute address
    # (address, file, line) of every statement that produced bytes, by address
    source_lines: tuple[tuple[int, str, int], ...] = ()

    @property
    def end(self) -> int:
        """The first address after the code."""
        return self.base + len(self.code)

    def symbol_at(self, addr: int) -> tuple[str, int] | None:
        """The nearest label at or below addr, and addr's offset from it."""
        if not self.base <= addr <= self.end:
            return None
        addresses, names = self._labels_by_address
        i = bisect.bisect_right(addresses, addr) - 1
        return (names[i], addr - addresses[i]) if i >= 0 else None

    def line_at(self, addr: int) -> tuple[str, int] | None:
        """The source file and line of the statement whose bytes hold addr."""
        if not self.base <= addr < self.end:
            return None
        i = bisect.bisect_right(self._line_addresses, addr) - 1
        if i < 0:
            return None
        _, file, line = self.source_lines[i]
        return file, line

    @cached_property
    def _labels_by_address(self) -> tuple[list[int], list[str]]:
        # Where several labels share an address, the first one defined names it
        # (dicts keep definition order, and the sort is stable).
        ordered = sorted(self.symbols.items(), key=lambda item: item[1])
        addresses, names = [], []
        for name, addr in ordered:
            if not addresses or addresses[-1] != addr:
                addresses.append(addr)
                names.append(name)
        return addresses, names

    @cached_property
    def _line_addresses(self) -> list[int]:
        return [addr for addr, _, _ in self.source_lines]

    def statements(self) -> list[tuple[int, bytes]]:
        """(address, bytes) of every statement that produced bytes, by
        address: where the hooks that look for one instruction search
        (programs mix code and data, so nothing is disassembled blindly)."""
        starts = sorted({addr for addr, _, _ in self.source_lines}) + [self.end]
        return [(addr, self.code[addr - self.base:end - self.base])
                for addr, end in zip(starts, starts[1:])]


def is_one_instruction(statement: bytes, address: int) -> bool:
    """Are a statement's bytes exactly one x86-64 instruction (not data that
    happens to decode, not two instructions)?"""
    decoded = next(_capstone().disasm(statement, address, count=1), None)
    return decoded is not None and decoded.size == len(statement)


def assemble_file(path, base: int, defines: dict[str, int] | None = None) -> Program:
    """Assemble a source file (and what it includes) to run at `base`."""
    path = Path(path).absolute()
    try:
        data = _read_source(path)
    except _Unreadable as error:
        raise AssemblyError(_display(path), None, str(error)) from None
    return _assemble(("file", str(path)), path, data, base, defines)


def assemble_text(text: str, base: int, filename: str = "<string>",
                  defines: dict[str, int] | None = None) -> Program:
    """Assemble source text; `filename` names it in errors and anchors includes."""
    if filename.startswith("<"):
        origin = Path.cwd() / filename            # includes resolve from the cwd
    else:
        origin = Path(filename).absolute()
    if len(text) > MAX_SOURCE_BYTES:
        raise AssemblyError(filename, None, f"larger than {MAX_SOURCE_BYTES >> 20} MiB: "
                            "not a source file")
    return _assemble(("text", filename, text), origin, text.encode(), base, defines)


def clear_memo() -> None:
    """Forget the in-process results (the disk cache stays)."""
    _memo.clear()


# --------------------------------------------------------------------------
# The pipeline: look in the caches, else read, assemble and check
# --------------------------------------------------------------------------

def _assemble(identity: tuple, origin: Path, data: bytes, base: int,
              defines: dict[str, int] | None) -> Program:
    defines = _checked_defines(defines)
    if not 0 <= base < 1 << 64:
        raise SpratError(f"assembler: base {base:#x} is not a 64-bit address")
    # Includes resolve through the workspace too: it is part of what a file means.
    memo_key = (identity, base, tuple(sorted(defines.items())), os.getcwd(),
                search_path.workspace())
    program = _memo_lookup(memo_key)
    if program is not None:
        return program
    sources = _gather_sources(origin, data)
    key = _cache_key(sources, origin, base, defines)
    program = _disk_load(key)
    if program is None:
        program = _build(origin, sources, base, defines)
        _disk_store(key, program)
    # Text given to assemble_text is in the memo key; only files need stamps.
    watched = [path for path in sources if identity[0] == "file" or path != origin]
    _memo_store(memo_key, watched, program)
    return program


def _build(origin: Path, sources: dict[Path, bytes | None], base: int,
           defines: dict[str, int]) -> Program:
    """The cold path: read the sources, run keystone, check what it made."""
    asm_worker.start()              # it boots (~50 ms) while we read
    unit = _Reader(sources, defines).read(origin)
    unit.values = _constant_values(unit)
    _check_sizes(unit)
    code, addresses = _layout(unit, base)
    statement_addresses = addresses[:len(unit.statements)] + [base + len(code)]
    _check_output(unit, code, base, statement_addresses)
    label_addresses = addresses[len(unit.statements):]
    symbols = dict(zip(unit.label_names(), label_addresses))
    lines = tuple((start, st.file, st.line)
                  for st, start, stop in zip(unit.statements, statement_addresses,
                                             statement_addresses[1:])
                  if stop > start)
    return Program(code, base, symbols, lines)


def _checked_defines(defines: dict[str, int] | None) -> dict[str, int]:
    defines = dict(defines or {})
    for name, value in defines.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            raise SpratError(f"assembler: define {name!r} is not a valid symbol name")
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpratError(f"assembler: define {name}={value!r} is not an integer")
        if not -(1 << 63) <= value < 1 << 64:
            raise SpratError(f"assembler: define {name}={value:#x} does not fit in 64 bits")
    return defines


class _Unreadable(Exception):
    """A source file that cannot be read; str() says why, without naming it."""


MAX_SOURCE_BYTES = 1 << 20      # one source file (the largest shipped one is ~25 KB)


def _read_source(path: Path) -> bytes:
    """The bytes of a source file: a regular file of at most MAX_SOURCE_BYTES.

    Opened without blocking and checked once open, so a FIFO, /dev/zero or a
    file that grows while we read cannot make us wait or read without end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise _Unreadable("no such file") from None
    except IsADirectoryError:
        raise _Unreadable("is a directory, not a source file") from None
    except OSError as error:
        raise _Unreadable(f"cannot be read ({error.strerror or error})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _Unreadable("is a directory, not a source file")
        if not stat.S_ISREG(mode):
            raise _Unreadable("is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_SOURCE_BYTES + 1)
    except OSError as error:
        raise _Unreadable(f"cannot be read ({error.strerror or error})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SOURCE_BYTES:
        raise _Unreadable(f"larger than {MAX_SOURCE_BYTES >> 20} MiB: not a source file")
    return data


def _display(path: Path) -> str:
    """How a file is named in messages: relative to the cwd when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------
# 1. Reading source: comments, statements, labels, includes
# --------------------------------------------------------------------------

@dataclass
class _Statement:
    """One statement as keystone will see it, and where it came from."""
    file: str
    line: int
    text: str                                   # rewritten; several lines for a block
    labels: list[str] = field(default_factory=list)     # named labels defined here
    numbered: list[str] = field(default_factory=list)   # numeric labels ("1") here
    kind: str = "empty"     # empty, instruction, data, constant, block, macro
    data_size: int | None = None                # expected bytes of .byte/.word/...
    symbol: str | None = None                   # the constant a definition sets
    expression: object = None                   # its value's tree (emulator/asm_expr.py)
    macro: str | None = None                    # the macro this statement invokes
    # Sizes, counts and alignments to bound once constants are known, for this
    # statement and its block's lines: (directive, operand trees, line, the
    # counts of the .rept blocks around it).
    sized: list[tuple[str, list, int, tuple]] = field(default_factory=list)


@dataclass
class _Unit:
    """A whole program after includes: statements in order, plus bookkeeping."""
    statements: list[_Statement]
    macros: dict[str, str]                      # macro name -> body text
    defines: dict[str, int]
    values: dict[str, int] = field(default_factory=dict)    # defines and known constants

    def label_names(self) -> list[str]:
        return [name for st in self.statements for name in st.labels]


# A label at the start of a statement: a name or a number, then a colon.
_LABEL = re.compile(r"\s*([A-Za-z_.$][\w.$]*|\d+)\s*:(?![:\[])")
_CONSTANT = re.compile(r"\s*([A-Za-z_.$][\w.$]*)\s*=(?!=)")
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_INCLUDE_SCAN = re.compile(rb'\.include\s*"([^"\n]*)"', re.IGNORECASE)

_DATA_WIDTHS = {".byte": 1, ".word": 2, ".short": 2, ".value": 2, ".long": 4,
                ".int": 4, ".quad": 8, ".octa": 16}
_OTHER_DATA = {".ascii", ".asciz", ".string", ".fill", ".zero", ".space", ".skip",
               ".align", ".balign", ".p2align"}
_CONSTANT_DIRECTIVES = {".equ", ".set"}
# Accepted and dropped: they mean nothing in a flat image (and `.text`
# crashes keystone).
_IGNORED = {".text", ".code64", ".intel_syntax", ".globl", ".global", ".type", ".size"}
_REFUSED = {
    ".section": "sections are not supported: a sprat program is one flat image; "
                "put data after the code",
    ".data": "sections are not supported: put data after the code",
    ".bss": "sections are not supported: reserve space with .zero",
    ".rodata": "sections are not supported: put data after the code",
    ".org": ".org is not supported: use .balign or .fill",
    ".att_syntax": "sprat sources are Intel syntax",
    ".code16": "sprat sources are 64-bit code",
    ".code32": "sprat sources are 64-bit code",
}
_BLOCK_ENDS = {".macro": ".endm", ".rept": ".endr", ".irp": ".endr", ".irpc": ".endr",
               ".if": ".endif", ".ifdef": ".endif", ".ifndef": ".endif"}
_INSIDE_BLOCKS = {".endm", ".endr", ".endif", ".else", ".elseif", ".exitm"}

_REGISTERS = set(
    "rax rbx rcx rdx rsi rdi rbp rsp eax ebx ecx edx esi edi ebp esp ax bx cx dx si di "
    "bp sp al bl cl dl ah bh ch dh sil dil bpl spl rip eip ip riz eiz cs ds es fs gs ss "
    "byte word dword qword tbyte xmmword ymmword ptr offset short near far".split())
_REGISTERS |= {f"r{i}{s}" for i in range(8, 16) for s in ("", "d", "w", "b")}
_REGISTERS |= {f"{p}{i}" for p in ("cr", "dr", "xmm", "ymm", "zmm", "mm", "st", "k")
               for i in range(32)}


class _Reader:
    """Turns source files into a list of _Statements (one per `;` or line)."""

    def __init__(self, sources: dict[Path, bytes | None], defines: dict[str, int]):
        self.sources = sources
        self.defines = defines
        self.statements: list[_Statement] = []
        self.macros: dict[str, str] = {}
        self.label_sites: dict[str, tuple[str, int]] = {}
        self.pending_labels: list[tuple[str, int, str]] = []   # labels awaiting a statement
        # In a block: [statement, text lines, stack of ends, stack of .rept counts]
        self.block: list | None = None

    def read(self, origin: Path) -> _Unit:
        self.read_file(origin, self.sources[origin], ())
        _resolve_numeric_labels(self.statements)
        return _Unit(self.statements, self.macros, self.defines)

    def read_file(self, path: Path, data: bytes, including: tuple[Path, ...]) -> None:
        name = _display(path)
        text = _decode(name, data)
        for number, line in enumerate(text.splitlines(), start=1):
            for piece in _split_statements(line, name, number):
                self.statement(piece, path, name, number, including)
        if self.block is not None:
            opener, ends = self.block[0], self.block[2]
            raise AssemblyError(opener.file, opener.line,
                                f"{opener.text.split()[0]} without {ends[0]}")
        self.flush_labels()         # a label at the end of a file stays in it

    def statement(self, text: str, path: Path, name: str, number: int,
                  including: tuple[Path, ...]) -> None:
        if self.block is not None:
            self.block_line(text, name, number)
            return
        text = self.take_labels(text, name, number)
        if not text:
            return
        _screen(asm_screen.check_start, name, number, text)
        directive = text.split(None, 1)[0].lower() if text.startswith(".") else None
        if directive == ".include":
            self.flush_labels()
            self.include(text, path, name, number, including)
        elif directive in _BLOCK_ENDS:
            _check_block_shape(directive, text, name, number)
            opener = self.new_statement(name, number, text, "block")
            if directive == ".macro":
                opener.kind = "macro"
            count = _note_sizes(opener, directive, text, name, number, [])
            self.block = [opener, [text], [_BLOCK_ENDS[directive]], [count]]
        else:
            self.plain(text, directive, name, number)

    def take_labels(self, text: str, name: str, number: int) -> str:
        """Peel `label:` prefixes off a statement; return what is left."""
        while (match := _LABEL.match(text)):
            label = match.group(1)
            self.check_label(label, name, number)
            self.pending_labels.append((name, number, label))
            text = text[match.end():]
        return text.strip()

    def check_label(self, label: str, name: str, number: int) -> None:
        if label.isdigit():
            return
        if label.lower() in _REGISTERS:
            raise AssemblyError(name, number, f"'{label}' cannot be a label: "
                                "keystone would read it as a register or keyword")
        if label.startswith(".") and not label.startswith(".L"):
            # keystone takes `.if:` for a directive, and loops
            raise AssemblyError(name, number, f"'{label}' cannot be a label: names starting "
                                "with '.' are directives (a local label is .L...)")
        if label.startswith("$"):                   # keystone loops on `$:`
            raise AssemblyError(name, number, f"'{label}' cannot be a label: '$' is the "
                                "current address")
        if label.startswith("__sprat"):
            raise AssemblyError(name, number, f"'{label}': names starting with "
                                "__sprat are reserved for the assembler")
        if label in self.label_sites:
            where = "%s:%d" % self.label_sites[label]
            raise AssemblyError(name, number, f"label '{label}' already defined at {where}")
        if label in self.defines:
            raise AssemblyError(name, number, f"label '{label}' has the name of a define")
        self.label_sites[label] = (name, number)

    def flush_labels(self) -> None:
        """Labels at the end of a file, or before an include, get an empty statement."""
        if self.pending_labels:
            file, line, _ = self.pending_labels[0]
            self.new_statement(file, line, "", "empty")

    def new_statement(self, name: str, number: int, text: str, kind: str) -> _Statement:
        st = _Statement(name, number, text, kind=kind)
        for _, _, label in self.pending_labels:
            (st.numbered if label.isdigit() else st.labels).append(label)
        self.pending_labels = []
        self.statements.append(st)
        return st

    def include(self, text: str, path: Path, name: str, number: int,
                including: tuple[Path, ...]) -> None:
        match = re.fullmatch(r'\.include\s*"([^"]*)"', text, re.IGNORECASE)
        if not match:
            raise AssemblyError(name, number, '.include needs a quoted file name: .include "file.S"')
        if Path(match.group(1)).suffix not in INCLUDABLE:
            # A student's program is assembled on a grading machine too: an
            # include of any file would let it read (and quote, in an error)
            # whatever the host holds, /etc/passwd or another student's work.
            raise AssemblyError(name, number, f'cannot include "{match.group(1)}": only '
                                f'assembly sources ({", ".join(sorted(INCLUDABLE))}) may be '
                                f'included')
        target = _include_target(path, match.group(1))
        if target in including or target == path:
            chain = " -> ".join(_display(p) for p in (*including, path, target))
            raise AssemblyError(name, number, f'"{match.group(1)}" includes itself ({chain})')
        data = self.sources.get(target)
        if data is None:            # unreadable, or not seen by the dependency scan
            try:
                data = _read_source(target)
            except _Unreadable as error:
                raise AssemblyError(name, number,
                                    f'cannot include "{match.group(1)}": {error}') from None
        self.read_file(target, data, (*including, path))

    def plain(self, text: str, directive: str | None, name: str, number: int) -> None:
        """An instruction, a data directive or a constant definition."""
        if directive is not None:
            self.directive(text, directive, name, number)
            return
        if _CONSTANT.match(text):
            self.constant(*_constant_parts(text, name, number), text, name, number)
            return
        text = _rewrite_instruction(text, name, number)
        st = self.new_statement(name, number, text, "instruction")
        mnemonic = text.split(None, 1)[0]
        if mnemonic in self.macros:
            st.macro = mnemonic

    def directive(self, text: str, directive: str, name: str, number: int) -> None:
        if directive in _REFUSED:
            raise AssemblyError(name, number, f"{directive}: {_REFUSED[directive]}")
        if directive in _INSIDE_BLOCKS:
            raise AssemblyError(name, number, f"{directive} without the directive that opens it")
        if directive in _IGNORED:
            return
        if directive in _CONSTANT_DIRECTIVES:
            self.constant(*_constant_parts(text, name, number), text, name, number)
            return
        if directive not in _DATA_WIDTHS and directive not in _OTHER_DATA:
            raise AssemblyError(name, number, f"unknown directive {directive}")
        st = self.new_statement(name, number, _rewrite_strings(text), "data")
        items = _screen(asm_screen.operands, name, number, directive, text[len(directive):])
        if directive in _DATA_WIDTHS:
            st.data_size = _DATA_WIDTHS[directive] * len(items)
        elif directive in asm_screen.SIZED:
            st.sized.append((directive, items, number, ()))

    def constant(self, symbol: str, expression: str, text: str, name: str,
                 number: int) -> None:
        tree = _screen(_parse_constant, name, number, symbol, expression)
        # A define wins over the source's own definition: the source's value
        # is a default (ITERATIONS = 1000) that an image may override.
        if symbol in self.defines:
            self.new_statement(name, number, "", "empty")
        else:
            st = self.new_statement(name, number, text, "constant")
            st.symbol, st.expression = symbol, tree

    def block_line(self, text: str, name: str, number: int) -> None:
        """A line inside .macro/.rept/.if: checked and kept, but not marked."""
        opener, lines, ends, counts = self.block
        prefix = ""
        while (match := _LABEL.match(text)):          # labels stay in the block
            prefix, text = prefix + text[:match.end()] + " ", text[match.end():]
        text = text.strip()
        if text:
            _screen(asm_screen.check_start, name, number, text)
        word = text.split(None, 1)[0].lower() if text else ""
        if word.startswith("."):
            _check_block_shape(word, text, name, number)
        if word in _BLOCK_ENDS:
            counts.insert(0, _note_sizes(opener, word, text, name, number, counts))
            ends.insert(0, _BLOCK_ENDS[word])
        elif word == ends[0]:
            ends.pop(0)
            counts.pop(0)
        elif word.startswith("."):
            _check_block_directive(word, name, number)
            _note_sizes(opener, word, text, name, number, counts)
        elif text and _CONSTANT.match(text):
            if "\\" not in text:           # a macro's \argument is not an expression yet
                _screen(_parse_constant, name, number, *_constant_parts(text, name, number))
        elif text:
            text = _rewrite_instruction(text, name, number)
        lines.append(prefix + _rewrite_strings(text))
        if not ends:
            self.end_block(opener, lines)

    def end_block(self, opener: _Statement, lines: list[str]) -> None:
        opener.text = "\n".join(lines)
        if opener.kind == "macro":
            parts = lines[0].split(None, 2)
            if len(parts) > 1:
                self.macros[parts[1].rstrip(",")] = "\n".join(lines[1:])
        self.block = None


def _screen(check, name: str, number: int, *args):
    """check(*args), with its ScreenError or ExpressionError as an AssemblyError here."""
    try:
        return check(*args)
    except (ScreenError, ExpressionError) as error:
        raise AssemblyError(name, number, str(error)) from None


def _constant_parts(text: str, name: str, number: int) -> tuple[str, str]:
    """(name, expression) of `NAME = expr`, `.equ NAME, expr` or `.set NAME, expr`."""
    if text.startswith("."):
        directive, _, rest = text.partition(" ")
        symbol, comma, expression = rest.partition(",")
        if not comma or not re.fullmatch(r"\s*[A-Za-z_.$][\w.$]*\s*", symbol):
            raise AssemblyError(name, number, f"{directive.lower()} needs a name and a "
                                f"value: {directive.lower()} NAME, value")
        return symbol.strip(), expression
    symbol, _, expression = text.partition("=")
    return symbol.strip(), expression


def _parse_constant(symbol: str, expression: str):
    try:
        return asm_expr.parse(expression)
    except ExpressionError as error:
        raise ExpressionError(f"{symbol} = {_shown(expression, 60)}: {error}") from None


def _note_sizes(st: _Statement, directive: str, text: str, name: str, number: int,
                enclosing: list) -> object:
    """Parse a sized directive's operands (inside blocks too) to bound them later.

    `enclosing` are the counts of the .rept blocks around it (None for other
    blocks), which multiply what it makes. A data directive inside a block
    is checked for shape; one that uses a macro's `\\argument` is left to
    keystone (and the worker's limits). Returns the count of a .rept.
    """
    if "\\" in text or (directive not in asm_screen.SIZED and directive not in _DATA_WIDTHS
                         and directive not in _OTHER_DATA):
        return None
    items = _screen(asm_screen.operands, name, number, directive,
                    text.strip()[len(directive):])
    if directive in asm_screen.SIZED:
        repeats = tuple(count for count in enclosing if count is not None)
        st.sized.append((directive, items, number, repeats))
    return items[0] if directive == ".rept" else None


def _check_block_shape(directive: str, text: str, name: str, number: int) -> None:
    """A block directive's operands, checked unless a macro's \\argument is in them."""
    if (directive in _BLOCK_ENDS or directive in _INSIDE_BLOCKS) and "\\" not in text:
        _screen(asm_screen.check_block, name, number, directive, text.strip()[len(directive):])


def _check_block_directive(word: str, name: str, number: int) -> None:
    if word == ".include":
        raise AssemblyError(name, number, ".include inside a block is not supported")
    if word in _REFUSED:
        raise AssemblyError(name, number, f"{word}: {_REFUSED[word]}")
    known = _INSIDE_BLOCKS | _DATA_WIDTHS.keys() | _OTHER_DATA | _CONSTANT_DIRECTIVES
    if word not in known and word not in _IGNORED:
        raise AssemblyError(name, number, f"unknown directive {word}")


INCLUDABLE = frozenset({".S", ".s", ".asm", ".inc"})     # what `.include` may name


def _include_target(including: Path, name: str) -> Path:
    """Where `.include "name"` in file `including` points (also used by the cache).

    Relative to the including file's place in the tree, and a lab workspace's
    copy first (emulator/sources.py), so a student's file is included wherever
    the tree's would be."""
    return search_path.locate(Path(os.path.normpath(including.parent / name)))


def _decode(name: str, data: bytes) -> str:
    if b"\0" in data:
        raise AssemblyError(name, None, "not a text file (it contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise AssemblyError(name, None, f"not a text file (invalid UTF-8 at byte {error.start})") from None


def _split_statements(line: str, name: str, number: int) -> list[str]:
    """Strip a `#` or `//` comment and split at `;`, minding string literals."""
    if '"' not in line and "'" not in line:                 # the common, fast case
        for marker in ("#", "//"):
            cut = line.find(marker)
            if cut >= 0:
                line = line[:cut]
        return [piece for piece in line.split(";") if piece.strip()]
    pieces, current, i = [], [], 0
    while i < len(line):
        char = line[i]
        if char in "\"'":
            end = _string_end(line, i, name, number)
            current.append(line[i:end])
            i = end
            continue
        if char == "#" or line.startswith("//", i):
            break
        if char == ";":
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    pieces.append("".join(current))
    return [piece for piece in pieces if piece.strip()]


def _string_end(line: str, start: int, name: str, number: int) -> int:
    """Index just past the string or character literal opening at `start`."""
    quote, i = line[start], start + 1
    while i < len(line):
        if line[i] == "\\":
            i += 2
        elif line[i] == quote:
            return i + 1
        else:
            i += 1
    # keystone would loop forever on this one
    raise AssemblyError(name, number, f"unterminated string: {line[start:].strip()}")


def _outside_strings(text: str, rewrite) -> str:
    """Apply `rewrite` to the parts of text that are not string literals."""
    parts, last = [], 0
    for match in _STRINGS.finditer(text):
        parts.append(rewrite(text[last:match.start()]))
        parts.append(match.group(0))
        last = match.end()
    parts.append(rewrite(text[last:]))
    return "".join(parts)


def _rewrite_strings(text: str) -> str:
    """keystone knows octal escapes but not \\xNN: rewrite those to octal."""
    if "\\x" not in text:
        return text

    def octal(match):
        return "\\%03o" % (int(match.group(1), 16) & 0xFF)

    return _STRINGS.sub(lambda m: re.sub(r"\\x([0-9A-Fa-f]+)", octal, m.group(0))
                        if m.group(0).startswith('"') else m.group(0), text)


def _rewrite_instruction(text: str, name: str, number: int) -> str:
    """Small spelling fixes keystone needs, and one refusal."""
    words = text.split(None, 1)
    mnemonic = words[0].lower()
    if mnemonic == "sysretq":               # keystone knows only `sysret` (= sysretq)
        text = "sysret" + text[len(words[0]):]
    elif mnemonic == "iret":
        raise AssemblyError(name, number, "iret assembles to the 16-bit form (66 cf): "
                            "write iretq to return to 64-bit code")
    if "offset" in text.lower():           # keystone: `mov rax, label` is already the address
        mnemonic, space, operands = text.partition(" ")     # (never the mnemonic itself)
        text = mnemonic + space + _outside_strings(operands, lambda part: re.sub(
            r"\boffset\s+(?=[A-Za-z_.$])", "", part, flags=re.IGNORECASE))
    return _rewrite_strings(text)


def _split_operands(text: str) -> list[str]:
    """Comma-separated operands (strings, parentheses and brackets kept whole)."""
    masked = _STRINGS.sub(lambda m: "x" * len(m.group(0)), text)   # commas in strings
    items, depth, start = [], 0, 0
    for i, char in enumerate(masked):
        depth += char in "(["
        depth -= char in ")]"
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item.strip()]


def _resolve_numeric_labels(statements: list[_Statement]) -> None:
    """Give `1:` labels unique names and point `1b` / `1f` at the right one."""
    definitions: dict[str, list[int]] = {}
    for index, st in enumerate(statements):
        for number in st.numbered:
            definitions.setdefault(number, []).append(index)
    if not definitions:
        return
    reference = re.compile(r"(?<![\w.$])(\d+)([bf])(?![\w.$])")
    for index, st in enumerate(statements):
        st.numbered = [f"__sprat_{n}_{definitions[n].index(index)}" for n in st.numbered]
        if st.kind in ("instruction", "data", "constant"):
            st.text = _outside_strings(st.text, lambda part: reference.sub(
                lambda m: _numeric_target(m, index, definitions, st), part))


def _numeric_target(match, index: int, definitions: dict[str, list[int]],
                    st: _Statement) -> str:
    number, direction = match.groups()
    if number not in definitions:
        return match.group(0)               # not a local label: leave it to keystone
    sites = definitions[number]
    if direction == "b":
        earlier = [k for k, site in enumerate(sites) if site <= index]
        if not earlier:
            raise AssemblyError(st.file, st.line, f"{number}b: no label {number}: before this line")
        return f"__sprat_{number}_{earlier[-1]}"
    later = [k for k, site in enumerate(sites) if site > index]
    if not later:
        raise AssemblyError(st.file, st.line, f"{number}f: no label {number}: after this line")
    return f"__sprat_{number}_{later[0]}"


# --------------------------------------------------------------------------
# 2. Laying out with keystone
# --------------------------------------------------------------------------

_engines: dict = {}     # the capstone instance, made on first use

# keystone runs in a worker process (emulator/asm_worker.py): a statement it
# loops on, or an allocation without end, becomes an error here. A program
# takes keystone ~40 ms; on a busy machine, give it a hundred times that.
KEYSTONE_SECONDS = 4.0          # one program
STATEMENT_SECONDS = 2.0         # one statement by itself, to find the one that hangs
PATIENT_SECONDS = 20.0          # the program again, when no one statement hangs


def _symbols_asked(text: str) -> list[str]:
    """The symbols keystone cannot find in `text` (to name them in an error).

    Asked of a second keystone whose resolver records names and resolves
    nothing; its output is never used, so its number bug does not matter.
    """
    try:
        return asm_worker.symbols_asked(text.encode("utf-8"), STATEMENT_SECONDS)
    except (asm_worker.KeystoneError, asm_worker.Stuck):
        return []


def _keystone_source(unit: _Unit, statements: list[_Statement],
                     stand_ins: list[str]) -> tuple[str, int]:
    """The text keystone assembles: markers, statements, then the address table."""
    out = [f".equ {name}, {value}" for name, value in unit.defines.items()]
    labels = []
    for i, (st, text) in enumerate(zip(statements, _statement_texts(unit, statements))):
        out.append(f"__sprat_s{i}:")
        for label in st.labels + st.numbered:
            out.append(f"{label}:")
        labels += st.labels
        if text:
            out.append(text)
    out.append("__sprat_end:")
    entries = [f"__sprat_s{i}" for i in range(len(statements))] + labels + ["__sprat_end"]
    for chunk in range(0, len(entries), 32):
        out.append(".quad " + ", ".join(entries[chunk:chunk + 32]))
    out += stand_ins
    return "\n".join(out) + "\n", len(entries)


def _statement_texts(unit: _Unit, statements: list[_Statement]) -> list[str]:
    """What keystone sees of each statement: known constants as numbers.

    A constant whose value we know is given to keystone as that number, so
    keystone never reads our expressions (it hangs on some typos in them,
    and its precedence is not the instructions'); one that uses a label
    stays an expression for keystone to finish.
    """
    known = dict(unit.values)
    texts = []
    for st in statements:
        text = st.text
        if st.kind == "constant":
            value = _value_of(st, known)
            if value is not None:
                known[st.symbol] = value        # redefinitions (.set) count in order
                text = f"{st.symbol} = {_number_text(value)}"
        elif st.kind == "instruction":
            text = _fold_constants(text, known)
        texts.append(text)
    return texts


# Keystone evaluates `A + B * 8` wrongly when A and B are symbols (it gave
# [rdi + 0x1f7] for [rdi + 0x5000 + 503 * 8] spelled with constants), while
# the same expression in plain numbers is right. So every constant whose
# value is known is replaced by its number before keystone sees an
# instruction: keystone then only ever does arithmetic on literals.
_NAME = re.compile(r"(?<![\w.$])([A-Za-z_][\w$]*)(?![\w$])")


def _constant_values(unit: _Unit) -> dict[str, int]:
    """The defines, and every constant whose value is known before layout.

    Keystone takes a symbol it has not met yet for an address: `mov rdi,
    BASE + LATER`, with LATER defined further down (say in a file included
    at the end), silently became a load from memory. So a constant defined
    once is resolved wherever it is defined, following the constants it
    uses (of any spelling: `FACE = DEAD + CAFE`) to their definitions. One
    defined twice (.set) has a value only in order; one that uses a label
    has none here (keystone finishes it).
    """
    definitions: dict[str, list[_Statement]] = {}
    for st in unit.statements:
        if st.kind == "constant":
            definitions.setdefault(st.symbol, []).append(st)
    once = {name: sts[0] for name, sts in definitions.items() if len(sts) == 1}
    values = dict(unit.defines)
    opened, done = set(), set()
    for first in once:
        stack = [first]                         # a loop, not recursion: chains may be long
        while stack:
            name = stack[-1]
            if name in done:
                stack.pop()
                continue
            st = once[name]
            if name not in opened:
                opened.add(name)
                needed = [other for other in asm_expr.names(st.expression)
                          if other in once and other not in done]
                for other in needed:
                    if other in opened:         # on the stack: a cycle
                        raise AssemblyError(st.file, st.line, f"constant {name} is "
                                            f"defined in terms of itself (through {other})")
                if needed:
                    stack.extend(needed)
                    continue
            stack.pop()
            done.add(name)
            value = _value_of(st, values)
            if value is not None:
                values[name] = value
    return values


def _value_of(st: _Statement, known: dict[str, int]) -> int | None:
    try:
        return asm_expr.evaluate(st.expression, known.get)
    except ExpressionError as error:
        raise AssemblyError(st.file, st.line, f"{st.symbol}: {error}") from None


def _check_sizes(unit: _Unit) -> None:
    """Bound every size, count and alignment, and their sum, before keystone allocates them."""
    total = 0
    for st in unit.statements:
        for directive, trees, line, repeats in st.sized:
            values = [_screen(asm_expr.evaluate, st.file, line, tree, unit.values.get)
                      for tree in trees]
            repeated = 1
            for count in repeats:               # checked (and bounded) before, outer first
                repeated *= max(asm_expr.evaluate(count, unit.values.get), 1)
            total += _screen(asm_screen.check_bounds, st.file, line, directive, values,
                             repeated)
            if total > asm_screen.MAX_BYTES:
                raise AssemblyError(st.file, line, f"with this {directive}, the program's "
                                    "data and padding blocks add up to more than "
                                    f"{asm_screen.MAX_BYTES >> 20} MiB")


def _number_text(value: int) -> str:
    return hex(value) if value >= 0 else str(value)


def _fold_constants(text: str, known: dict[str, int]) -> str:
    def replace(part: str) -> str:
        return _NAME.sub(lambda m: _number_text(known[m.group(1)]) if m.group(1) in known
                         else m.group(1), part)
    mnemonic, _, operands = text.strip().partition(" ")
    return f"{mnemonic} {_outside_strings(operands, replace)}" if operands else text


def _run_keystone(unit: _Unit, statements: list[_Statement], base: int,
                  stand_ins: list[str] = (), seconds: float | None = None
                  ) -> tuple[bytes, list[int]]:
    """Assemble; return (code, table addresses).

    Raises asm_worker.KeystoneError or ValueError when keystone refuses or
    drops something, asm_worker.Stuck when it hangs or crashes.
    """
    source, entries = _keystone_source(unit, statements, list(stand_ins))
    blob = asm_worker.assemble(source.encode("utf-8"), base, seconds or KEYSTONE_SECONDS)
    return _split_table(blob, base, entries)


def _split_table(blob: bytes, base: int, entries: int) -> tuple[bytes, list[int]]:
    """Cut the address table off the end; check it is what we appended."""
    size = 8 * entries
    if len(blob) < size:
        raise ValueError("keystone stopped early")
    code = blob[:len(blob) - size]
    addresses = list(struct.unpack(f"<{entries}Q", blob[len(code):]))
    if addresses[-1] != base + len(code):
        raise ValueError("keystone's layout does not match the marker table")
    return code, addresses[:-1]


def _layout(unit: _Unit, base: int) -> tuple[bytes, list[int]]:
    """Assemble the whole unit; on failure, find the statement to blame."""
    try:
        try:
            return _run_keystone(unit, unit.statements, base)
        except asm_worker.Stuck:
            _blame_stuck(unit, base)
            # No statement hangs by itself: a slow machine, or a hang that
            # takes several statements. Once more, with patience.
            return _run_keystone(unit, unit.statements, base, seconds=PATIENT_SECONDS)
    except (asm_worker.KeystoneError, ValueError) as failure:
        raise _blame(unit, base, failure) from None
    except asm_worker.Stuck as stuck:
        file = unit.statements[0].file if unit.statements else "<input>"
        raise AssemblyError(file, None, f"keystone {stuck} on this program") from None


def _blame_stuck(unit: _Unit, base: int) -> None:
    """Raise an AssemblyError at the first statement keystone hangs or dies on by itself.

    Each statement is assembled alone (with its labels, and the macros for
    one that invokes a macro), as keystone saw it in the program; most fail for want of
    their labels, and that is fine: only time and survival count here.
    """
    texts = _statement_texts(unit, unit.statements)
    macros = "\n".join(st.text for st in unit.statements if st.kind == "macro")
    alone = ["".join(f"{label}:\n" for label in st.labels + st.numbered)
             + (macros + "\n" if st.macro else "") + text
             for st, text in zip(unit.statements, texts)]
    alone = [text.encode("utf-8") for text in alone]
    found = asm_worker.first_stuck(alone, base, STATEMENT_SECONDS)
    if found is not None:
        index, stuck = found
        st = unit.statements[index]
        shown = " ".join(f"{label}:" for label in st.labels) + " " + st.text
        raise AssemblyError(st.file, st.line, f"keystone {stuck} on this statement: "
                            f"{_one_line(shown)}")


def _blame(unit: _Unit, base: int, failure: Exception) -> AssemblyError:
    """Bisect on prefixes of the program to find the first statement keystone rejects.

    A prefix may use labels and constants defined after it: stand-in
    definitions (labels = base, constants = 1) keep those from failing it.
    """
    from keystone import KS_ERR_ASM_SYMBOL_MISSING
    statements = unit.statements

    def error_of(count: int) -> Exception | None:
        try:
            _run_keystone(unit, statements[:count], base, _stand_ins(statements[count:], base))
        except (asm_worker.KeystoneError, asm_worker.Stuck, ValueError) as error:
            return error
        return None

    good, bad = 0, len(statements)
    if not statements or error_of(bad) is None:
        file = statements[0].file if statements else "<input>"
        return AssemblyError(file, None, f"keystone: {_ks_message(failure)}")
    while bad - good > 1:
        middle = (good + bad) // 2
        if error_of(middle):
            bad = middle
        else:
            good = middle
    st, error = statements[bad - 1], error_of(bad)
    if getattr(error, "errno", None) == KS_ERR_ASM_SYMBOL_MISSING:
        found = _undefined_symbol(unit, st)
        if found:
            symbol, where = found
            return AssemblyError(where.file, where.line, f"undefined symbol '{symbol}'")
    return AssemblyError(st.file, st.line, f"{_ks_message(error, st)}: {_one_line(st.text)}")


def _stand_ins(statements: list[_Statement], base: int) -> list[str]:
    out = []
    for st in statements:
        out += [f"{label} = {base}" for label in st.labels + st.numbered]
        if st.symbol:
            out.append(f"{st.symbol} = 1")
    return out


def _undefined_symbol(unit: _Unit, st: _Statement) -> tuple[str, _Statement] | None:
    """The name nothing defines that statement `st` uses, and where it is written.

    Read from the text first, following constants to their definitions
    (X = nowhere + 1 is where the author has to look); keystone is asked
    only when the text does not tell (a macro's body, say).
    """
    known = set(unit.defines) | set(_REGISTERS) | {".", "$"}
    constants = {}
    for other in unit.statements:
        known.update(other.labels, other.numbered)
        if other.symbol:
            constants[other.symbol] = other
    known.update(constants)
    todo, seen = [st], set()
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        names = _operand_names(current)
        unknown = [name for name in names if name.lower() not in known and name not in known]
        if unknown:
            return unknown[0], current
        todo += [constants[name] for name in names if name in constants]
    macros = [other.text for other in unit.statements if other.kind == "macro"]
    visible = _STRINGS.sub('""', st.text)
    for name in _symbols_asked("\n".join(macros + [st.text])):
        if name not in known and (st.macro or _mentions(visible, name)):
            return name, st
    return None


def _operand_names(st: _Statement) -> list[str]:
    """The names in a statement's operands (not its mnemonic, not in strings)."""
    if st.kind not in ("instruction", "data", "constant") or st.macro:
        return []
    text = _STRINGS.sub('""', st.text)
    if st.kind == "constant":
        text = re.split(r"[=,]", text, maxsplit=1)[-1]
    else:
        words = text.split(None, 1)
        while len(words) > 1 and words[0].lower() in ("lock", "rep", "repe", "repne",
                                                      "repz", "repnz"):
            words = words[1].split(None, 1)
        text = words[1] if len(words) > 1 else ""
    return re.findall(r"(?<![\w.$\\])[A-Za-z_.$][\w.$]*", text)


def _mentions(text: str, name: str) -> bool:
    return re.search(r"(?<![\w.$])" + re.escape(name) + r"(?![\w.$])", text) is not None


def _ks_message(error: Exception, st: _Statement | None = None) -> str:
    """keystone's "Invalid operand (KS_ERR_ASM_INVALIDOPERAND)" -> "invalid operand"."""
    from keystone import KS_ERR_ASM_FIXUP_INVALID, KS_ERR_ASM_MNEMONICFAIL
    code = getattr(error, "errno", None)
    if isinstance(error, asm_worker.Stuck):
        return f"keystone {error}"
    if code is None:                                # our table check, not keystone
        return "keystone produced no code for this statement"
    if code < 0:                                    # the binding failed, not the assembler
        return f"keystone failed: {error}"
    if code == KS_ERR_ASM_MNEMONICFAIL and st is not None and st.text:
        return f"unknown instruction '{st.text.split()[0]}'"
    message = re.sub(r"\s*\(KS_ERR_\w+\)", "", str(error))
    message = message[:1].lower() + message[1:]
    if code == KS_ERR_ASM_FIXUP_INVALID:
        message += (" (a value does not fit its field: an address above 2 GiB "
                    "needs movabs or [rip + label])")
    return message


def _one_line(text: str) -> str:
    return _shown(" / ".join(line.strip() for line in text.splitlines()))


def _shown(text: str, most: int = 100) -> str:
    """Source text for a message: one line, cut short if long."""
    text = text.strip()
    return text if len(text) <= most else text[:most - 3] + "..."


# --------------------------------------------------------------------------
# 3. Checking what keystone made
# --------------------------------------------------------------------------

def _check_output(unit: _Unit, code: bytes, base: int, addresses: list[int]) -> None:
    """Refuse output that differs from what the source says (see the module doc)."""
    constants = _simple_constants(unit)
    for index, (st, start, stop) in enumerate(zip(unit.statements, addresses, addresses[1:])):
        if st.data_size is not None and stop - start != st.data_size:
            raise AssemblyError(st.file, st.line, "value out of range for "
                                f"{st.text.split()[0]} (keystone dropped it): {st.text}")
        if stop == start:
            if st.kind == "instruction" and not st.macro:   # `cmprbx, 5`: keystone shrugs
                raise AssemblyError(st.file, st.line, "keystone produced no code for this "
                                    f"instruction: {_one_line(st.text)}")
            continue
        memory_text = _memory_operand_text(unit, st)
        literal = _last_literal(st, constants)
        if memory_text is None and literal is None:
            continue
        instructions = list(_capstone().disasm(code[start - base:stop - base], start))
        if memory_text is not None:
            _check_rip_relative(st, instructions)
        if literal is not None:
            _check_immediate(st, index, instructions, *literal)


def _memory_operand_text(unit: _Unit, st: _Statement) -> str | None:
    """The source that could hide an implicit RIP-relative operand, or None."""
    if st.kind not in ("instruction", "block"):
        return None
    text = st.text + ("\n" + unit.macros[st.macro] if st.macro else "")
    lowered = text.lower()
    if "rip" in lowered or ("[" not in lowered and "ptr" not in lowered):
        return None
    return text


def _check_rip_relative(st: _Statement, instructions: list) -> None:
    """Refuse `[rip + ...]` operands the author did not write (keystone's sharp edge)."""
    for insn in instructions:
        if "rip" in insn.op_str:
            # x86-64's absolute-address form (moffs) exists for rax alone.
            segment = ("; for gs:[X] or fs:[X], go through rax: mov rax, qword ptr gs:[X]"
                       " (or mov qword ptr gs:[X], rax)"
                       if re.search(r"\b[fg]s:\[rip", insn.op_str) else "")
            raise AssemblyError(
                st.file, st.line,
                f"keystone made this memory operand RIP-relative ({insn.mnemonic} "
                f"{insn.op_str}) and gets some of those wrong: put the address in a "
                f"register and use [reg], or write [rip + label]{segment}: "
                f"{_one_line(st.text)}")


_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|0[bB][01]+|[0-9][0-9a-fA-F]*[hH]|0[0-7]*|[1-9][0-9]*")


def _literal_value(text: str, constants: dict[str, tuple[int, int]]) -> int | None:
    """The value of a number, 'c', a simple constant, or -/~ of one; else None.

    Deliberately small: anything with a binary operator is left unchecked,
    since keystone's operator precedence is not Python's.
    """
    text = text.strip()
    if text[:1] in ("-", "~", "+"):
        signs = len(text) - len(text.lstrip("-~+ "))
        if signs > asm_expr.MAX_DEPTH:
            return None
        value = _literal_value(text[signs:], constants)
        for sign in reversed(text[:signs].replace(" ", "")):
            if value is not None:
                value = {"-": -value, "~": ~value, "+": value}[sign]
        return value
    if _NUMBER.fullmatch(text):
        if text[-1] in "hH":
            return int(text[:-1], 16)
        if len(text) > 1 and text[0] == "0" and text[1].isdigit():
            return int(text, 8)                 # keystone reads 010 as octal
        return int(text, 0)
    if len(text) == 3 and text[0] == text[2] == "'":
        return ord(text[1])
    if text in constants:
        return constants[text][0]
    return None


def _simple_constants(unit: _Unit) -> dict[str, tuple[int, int]]:
    """Constants whose value is one literal: name -> (value, defining statement)."""
    known = {name: (value, -1) for name, value in unit.defines.items()}
    defined_twice = set()
    for index, st in enumerate(unit.statements):
        if not st.symbol:
            continue
        if st.symbol in known:
            defined_twice.add(st.symbol)
        match = re.fullmatch(r"\s*(?:\.\w+\s+)?[\w.$]+\s*[=,](.*)", st.text, re.DOTALL)
        value = _literal_value(match.group(1), known) if match else None
        if value is not None:
            known[st.symbol] = (value, index)
    for name in defined_twice:
        known.pop(name, None)
    return known


def _last_literal(st: _Statement, constants) -> tuple[str, int, int] | None:
    """(text, value, defining statement) of an instruction's literal last operand."""
    if st.kind != "instruction" or st.macro:
        return None
    words = st.text.split(None, 1)
    operands = _split_operands(words[1]) if len(words) > 1 else []
    if not operands or "[" in operands[-1]:
        return None
    text = operands[-1].strip()
    value = _literal_value(text, constants)
    if value is None:
        return None
    name = text.lstrip("-~+")
    return text, value, constants[name][1] if name in constants else -1


def _check_immediate(st: _Statement, index: int, instructions: list,
                     text: str, value: int, defined_at: int) -> None:
    """Refuse an immediate keystone encoded as some other value.

    Keystone truncates (`mov al, 0x1234`), sign-extends (`push 0xffff` is
    push -1), shrinks (`push 0x80000000` is a 16-bit push of 0) and guesses
    32 bits for a constant defined after its use, all without a word.
    """
    from capstone.x86 import X86_OP_IMM
    if len(instructions) != 1 or not instructions[0].operands:
        return
    insn = instructions[0]
    operand = insn.operands[-1]
    if operand.type != X86_OP_IMM:
        return
    bits = 8 * operand.size
    mask = (1 << bits) - 1
    if -(1 << (bits - 1)) <= value <= mask and (value - operand.imm) & mask == 0:
        return
    if defined_at > index:
        hint = f"define {text.lstrip('-~+')} before this line"
    elif -(1 << (bits - 1)) <= value <= mask:
        hint = (f"the CPU would use {operand.imm & mask:#x}; put {value:#x} in a "
                "register first")
    else:
        hint = f"{value:#x} does not fit this instruction's {bits}-bit immediate"
    raise AssemblyError(st.file, st.line, f"keystone encoded {_one_line(st.text)} as "
                        f"{insn.mnemonic} {insn.op_str}: {hint}")


def _capstone():
    """A capstone disassembler with operand details (imported late: ~25 ms)."""
    if "capstone" not in _engines:
        from capstone import CS_ARCH_X86, CS_MODE_64, Cs
        _engines["capstone"] = Cs(CS_ARCH_X86, CS_MODE_64)
        _engines["capstone"].detail = True
    return _engines["capstone"]


# --------------------------------------------------------------------------
# 4. Caches: in memory (checked by file stat) and on disk (by content hash)
# --------------------------------------------------------------------------

_CACHE_FORMAT = 1
_memo: dict[tuple, tuple[tuple, Program]] = {}
_fingerprints: dict[str, str] = {}


def _gather_sources(origin: Path, data: bytes) -> dict[Path, bytes | None]:
    """The main text and every file it may include (None: missing), in order.

    A quick textual scan: any `.include "x"` anywhere (even in a comment)
    counts, so the set is never smaller than what the reader follows.
    """
    sources: dict[Path, bytes | None] = {origin: data}
    todo = [(origin, data)]
    while todo:
        path, text = todo.pop()
        for match in _INCLUDE_SCAN.finditer(text or b""):
            name = match.group(1).decode("utf-8", errors="replace")
            target = _include_target(path, name)
            if target in sources:
                continue
            try:
                sources[target] = _read_source(target)
            except _Unreadable:
                sources[target] = None      # the reader says why, at the .include
            todo.append((target, sources[target]))
    return sources


def _cache_key(sources: dict[Path, bytes | None], origin: Path, base: int,
               defines: dict[str, int]) -> str:
    digest = hashlib.sha256()
    parts = [str(_CACHE_FORMAT), _fingerprint("assembler"), _fingerprint("keystone"),
             str(base), repr(sorted(defines.items())), os.getcwd(), str(origin)]
    for part in parts:
        digest.update(part.encode() + b"\0")
    for path, data in sources.items():
        digest.update(str(path).encode() + b"\0")
        digest.update(b"-" if data is None else b"%d:" % len(data) + data)
    return digest.hexdigest()


def _fingerprint(what: str) -> str:
    """A string that changes when the assembler's modules or the keystone library change."""
    if what not in _fingerprints:
        if what == "assembler":
            digest = hashlib.sha256()
            for module in (__file__, asm_expr.__file__, asm_screen.__file__, asm_worker.__file__):
                digest.update(Path(module).read_bytes())
            _fingerprints[what] = digest.hexdigest()
        else:
            _fingerprints[what] = _keystone_fingerprint()
    return _fingerprints[what]


def _keystone_fingerprint() -> str:
    # Importing keystone to ask its version costs ~10 ms, too much for a warm
    # boot; the installed library's name, size and date identify the build.
    spec = importlib.util.find_spec("keystone")
    if spec and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0])
        for library in sorted(folder.glob("*keystone*.*")):
            if library.suffix in (".so", ".dylib", ".dll"):
                stat = library.stat()
                return f"{library}:{stat.st_size}:{stat.st_mtime_ns}"
    import keystone
    return f"keystone {keystone.__version__}"


def _memo_lookup(key: tuple) -> Program | None:
    entry = _memo.get(key)
    if entry is None:
        return None
    stamps, program = entry
    return program if stamps == _stamps(path for path, _ in stamps) else None


def _memo_store(key: tuple, paths: list[Path], program: Program) -> None:
    if len(_memo) > 256:
        _memo.clear()
    _memo[key] = (_stamps(paths), program)


def _stamps(paths) -> tuple:
    stamps = []
    for path in paths:
        try:
            stat = path.stat()
            stamps.append((path, (stat.st_mtime_ns, stat.st_size, stat.st_ino)))
        except OSError:
            stamps.append((path, None))
    return tuple(stamps)


def _cache_dir() -> Path:
    configured = os.environ.get("SPRAT_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "sprat" / "asm"


def _disk_load(key: str) -> Program | None:
    """The cached Program for key, or None if absent or unreadable (then we rebuild)."""
    try:
        entry = json.loads((_cache_dir() / f"{key}.json").read_text())
        if entry["format"] != _CACHE_FORMAT or entry["key"] != key:
            return None
        files = entry["files"]
        lines = tuple((int(a), str(files[f]), int(n)) for a, f, n in entry["lines"])
        symbols = {str(name): int(addr) for name, addr in entry["symbols"].items()}
        return Program(base64.b64decode(entry["code"], validate=True), int(entry["base"]),
                       symbols, lines)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _disk_store(key: str, program: Program) -> None:
    """Write the cache entry atomically (a reader sees all of it or nothing)."""
    files = sorted({file for _, file, _ in program.source_lines})
    index = {file: i for i, file in enumerate(files)}
    entry = {"format": _CACHE_FORMAT, "key": key, "base": program.base,
             "code": base64.b64encode(program.code).decode(), "symbols": program.symbols,
             "files": files, "lines": [[a, index[f], n] for a, f, n in program.source_lines]}
    directory = _cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(entry, handle, separators=(",", ":"))
        os.replace(temporary, directory / f"{key}.json")
    except OSError:
        pass                        # a cache we cannot write is only slower
