"""Assembly that cannot hurt the host: typos, huge sizes and hostile files end in one line.

Graders assemble students' programs, so no source may hang or crash the
assembling process: each defect a fuzzer found is a test here, and a
sample of single-character edits of the shipped programs is run in a
subprocess with a deadline (so this file itself cannot hang).
"""

import json
import os
import random
import select
import string
import subprocess
import sys
import time

import pytest

from emulator import asm_expr, asm_screen, asm_worker, assembler
from emulator.asm_expr import ExpressionError
from emulator.assembler import AssemblyError, assemble_file, assemble_text
from sprat.cli import main
from tests.conftest import ROOT

BASE = 0x200000


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPRAT_CACHE_DIR", str(tmp_path / "cache"))
    assembler.clear_memo()
    yield
    assembler.clear_memo()


def error_of(source: str, **kwargs) -> str:
    with pytest.raises(AssemblyError) as caught:
        assemble_text(source, BASE, filename="p.S", **kwargs)
    message = str(caught.value)
    assert "\n" not in message, f"the error must be one line: {message!r}"
    return message


# --------------------------------------------------------------------------
# Lines keystone 0.9.2 loops on are refused before it sees them
# --------------------------------------------------------------------------

@pytest.mark.parametrize("line", ["%", "=", ")", ":", "$ %", "[op r12", ",mov rbx, 1",
                                  "\\ xor edi, edi",
                                  "`dec r12", "lea rdi, [rip + text;]"])
def test_a_statement_starting_with_punctuation_is_refused_at_its_line(line):
    assert error_of(f"nop\n{line}\nnop\n").startswith("p.S:2:")


@pytest.mark.parametrize("source, message", [
    (".byte ,", "p.S:1: .byte: operand 1 is missing"),
    (".byte 1,,2", "p.S:1: .byte: operand 2 is missing"),
    (".align 4]", "p.S:1: .align 4]: unexpected ']'"),
    (".fill 1, 1, 1]", "p.S:1: .fill 1]: unexpected ']'"),
    ('.ascii "a"]', 'p.S:1: .ascii takes quoted strings, not "a"]'),
    ('.ascii ,"a"', "p.S:1: .ascii: operand 1 is missing"),
    ("KIND = 0]", "p.S:1: KIND = 0]: unexpected ']'"),
    ("X = 0)", "p.S:1: X = 0): unexpected ')'"),
    (".equ X, 1]", "p.S:1: X = 1]: unexpected ']'"),
    (".set X", "p.S:1: .set needs a name and a value"),
    (".rept 2\n    .byte ,1\n.endr", "p.S:2: .byte: operand 1 is missing"),
    (".rept 2\n    %\n.endr", "p.S:2: '%' cannot start a statement"),
    (".rept 2]\nnop\n.endr", "p.S:1: .rept 2]: unexpected ']'"),
    (".rept 2\nnop\n.endr ]", "p.S:3: .endr takes no operands: .endr ]"),
    (".if 1]\nnop\n.endif", "p.S:1: .if 1]: unexpected ']'"),
    (".if 1\nnop\n.else ]\nnop\n.endif", "p.S:3: .else takes no operands"),
    (".macro M a]\nnop\n.endm", "p.S:1: .macro takes a name and parameter names: .macro M a]"),
    (".macro M\nnop\n.endm ]", "p.S:3: .endm takes no operands"),
    ("nop\n.if :\nnop", "p.S:2: '.if' cannot be a label: names starting with '.' are directives"),
    ("nop\n$ :\nnop", "p.S:2: '$' cannot be a label: '$' is the current address"),
    ("offset .macro ,", "p.S:1: keystone produced no code for this instruction"),
])
def test_malformed_operands_keystone_would_loop_on_are_refused(source, message):
    assert error_of(source).startswith(message)


# --------------------------------------------------------------------------
# Sizes, counts and alignments are bounded before keystone allocates them
# --------------------------------------------------------------------------

@pytest.mark.parametrize("source, message", [
    (".zero -1", "p.S:1: .zero: size -1 is not between 0 and 16777216"),
    (".space 1<<40", "p.S:1: .space: size 1099511627776 is not between"),
    (".skip 1<<25, 0", "p.S:1: .skip: size 33554432 is not between"),
    (".fill 1<<30, 8, 0", "p.S:1: .fill: count 1073741824 is not between"),
    (".fill 2, 9, 0", "p.S:1: .fill: size 9 is not between 0 and 8"),
    (".rept 0x7fffffff\nnop\n.endr", "p.S:1: .rept: count 2147483647 is not between 0 and 16384"),
    (".p2align 64", "p.S:1: .p2align: power 64 is not between 0 and 16"),
    (".balign 1<<20", "p.S:1: .balign: boundary 1048576 is not between"),
    (".align 3", "p.S:1: .align 3: the boundary must be a power of two"),
    (".space 4, 0x1234", "p.S:1: .space: fill 4660 is not between -128 and 255"),
    ("nop\n.rept 128\n.rept 129\nnop\n.endr\n.endr", "p.S:3: .rept: count 129 is not between "
     "0 and 128 (inside .rept blocks that repeat it 128 times)"),
    (".rept 2\n.zero 1<<24\n.endr", "p.S:2: .zero: size 16777216 is not between 0 and 8388608"),
    (".macro BIG\n.zero 1<<40\n.endm", "p.S:2: .zero: size 1099511627776"),
    ("HUGE = 1 << 40\n.zero HUGE", "p.S:2: .zero: size 1099511627776"),
    ("start: nop\n.zero start", "p.S:2: the size of .zero must be a constant"),
    ("A = 1 << 23\n.zero A\n.space A\n.skip 1", "p.S:4: with this .skip, the program's data "
     "and padding blocks add up to more than 16 MiB"),
])
def test_sizes_counts_and_alignments_are_bounded(source, message):
    assert error_of(source).startswith(message)


def test_sizes_within_bounds_assemble_as_written():
    program = assemble_text("SIZE = 4\n.zero SIZE * 2\n.rept 3\n.byte 7\n.endr\n"
                            ".balign 16, 0xcc\n.fill 2, 2, 0x4142\n", BASE)
    assert program.code == b"\0" * 8 + b"\7" * 3 + b"\xcc" * 5 + b"BABA"


# --------------------------------------------------------------------------
# Constant expressions: our parser, bounded, no eval
# --------------------------------------------------------------------------

@pytest.mark.parametrize("expression, message", [
    ("9**9**9**9", "there is no power operator '**'"),
    ("1<<10**12", "there is no power operator '**'"),
    ("1 << 64", "shift count 64 is not between 0 and 63"),
    ("1 >> -1", "shift count -1 is not between 0 and 63"),
    ("0xffffffffffffffff + 1", "does not fit in 64 bits"),
    ("0x10000000000000000", "does not fit in 64 bits"),
    ("-" * 10000 + "1", "nested more than 64 deep"),
    ("(" * 10000 + "1" + ")" * 10000, "nested more than 64 deep"),
    ("1 / 0", "division by zero"),
    ("__import__(1)", "unexpected '('"),
    ("1 +", "an operand is missing at the end"),
])
def test_constant_expressions_are_bounded(expression, message):
    assert message in error_of(f"X = {expression}\nmov rax, X\n")


def test_a_long_chain_of_additions_is_not_a_deep_recursion():
    program = assemble_text("X = " + " + ".join(["1"] * 20000) + "\nmov rax, X\n", BASE)
    assert program.code == bytes.fromhex("48c7c0204e0000")         # mov rax, 20000


def test_a_forward_reference_spelt_in_hex_letters_is_resolved():
    program = assemble_text("FACE = DEAD + CAFE\nDEAD = 0x10\nmov rax, FACE\nCAFE = 2\n", BASE)
    assert program.code == bytes.fromhex("48c7c012000000")         # mov rax, 0x12


def test_a_long_chain_of_forward_references_is_resolved():
    chain = "\n".join(f"C{i} = C{i + 1} + 1" for i in range(3000)) + "\nC3000 = 0\n"
    program = assemble_text("mov rax, C0\n" + chain, BASE)
    assert program.code == bytes.fromhex("48c7c0b80b0000")         # mov rax, 3000


def test_a_constant_defined_in_terms_of_itself_is_named():
    assert error_of("A = B + 1\nB = A\nmov rax, A\n").startswith(
        "p.S:2: constant B is defined in terms of itself")


@pytest.mark.parametrize("expression, value", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("1 << 4 + 1", 32), ("6 & 3 | 8", 10),
    ("1 | 6 ^ 3", 5), ("-7 / 2", -3), ("-7 % 2", -1), ("~0", -1), ("0ffh", 255),
    ("010", 8), ("0b101", 5), ("'A'", 65), ("'\\n'", 10), ("1 << 63", 1 << 63),
])
def test_expressions_follow_c_precedence_and_keystone_numbers(expression, value):
    assert asm_expr.evaluate(asm_expr.parse(expression), {}.get) == value


def test_an_expression_with_an_unknown_name_has_no_value_yet():
    assert asm_expr.evaluate(asm_expr.parse("start + 4 * 8"), {}.get) is None
    with pytest.raises(ExpressionError):
        asm_expr.parse("1_000")


def test_a_constant_that_uses_a_label_is_left_to_keystone():
    program = assemble_text("LENGTH = end - start\nstart: nop\nnop\nend: mov eax, LENGTH\n", BASE)
    assert program.code[-5:] == bytes.fromhex("b802000000")       # mov eax, 2


# --------------------------------------------------------------------------
# Files: regular, bounded, text
# --------------------------------------------------------------------------

def test_including_dev_zero_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zero.S").symlink_to("/dev/zero")
    (tmp_path / "main.S").write_text('nop\n.include "zero.S"\n')
    with pytest.raises(AssemblyError) as caught:
        assemble_file(tmp_path / "main.S", BASE)
    assert str(caught.value) == 'main.S:2: cannot include "zero.S": is not a regular file'


@pytest.mark.parametrize("name", ["/etc/passwd", "/etc/hostname", "../secret.txt", "notes"])
def test_only_assembly_sources_may_be_included_so_a_program_cannot_read_the_host(
        tmp_path, monkeypatch, name):
    # Lab graders assemble students' programs: an include of any file would
    # read it, and an error would quote its first line.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "main.S").write_text(f'nop\n.include "{name}"\n')
    with pytest.raises(AssemblyError) as caught:
        assemble_file(tmp_path / "main.S", BASE)
    assert str(caught.value).startswith(f'main.S:2: cannot include "{name}": only assembly '
                                        f'sources'), caught.value
    assert "root" not in str(caught.value)


def test_assembling_dev_zero_is_refused():
    with pytest.raises(AssemblyError, match="^/dev/zero: is not a regular file$"):
        assemble_file("/dev/zero", BASE)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "pipe.S")
    (tmp_path / "main.S").write_text('.include "pipe.S"\n')
    with pytest.raises(AssemblyError, match='cannot include "pipe.S": is not a regular file'):
        assemble_file(tmp_path / "main.S", BASE)


def test_a_source_larger_than_the_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.S").write_text("nop\n" * (assembler.MAX_SOURCE_BYTES // 4 + 1))
    (tmp_path / "main.S").write_text('.include "big.S"\n')
    with pytest.raises(AssemblyError,
                       match='^main.S:1: cannot include "big.S": larger than 1 MiB'):
        assemble_file(tmp_path / "main.S", BASE)


@pytest.mark.parametrize("content, why", [
    ("nop\n".encode("utf-16"), "it contains NUL bytes"),
    (b"\x7fELF\x02\x01\xff\xfe", "invalid UTF-8 at byte 6"),
])
def test_a_binary_or_utf16_include_is_one_line_naming_it(tmp_path, monkeypatch, content, why):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd.S").write_bytes(content)
    (tmp_path / "main.S").write_text('.include "odd.S"\n')
    with pytest.raises(AssemblyError) as caught:
        assemble_file(tmp_path / "main.S", BASE)
    assert str(caught.value) == f"odd.S: not a text file ({why})"


def test_sprat_boot_with_a_module_including_dev_zero_exits_2_with_one_line(capsys, tmp_path):
    (tmp_path / "dev_zero.S").symlink_to("/dev/zero")
    (tmp_path / "zero.S").write_text('start: nop\n.include "dev_zero.S"\n')
    image = tmp_path / "zero.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule zero.S\n")
    assert main(["boot", str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith('zero.S:2: cannot include "dev_zero.S": is not a regular file'), err


def test_sprat_boot_with_a_typo_that_hung_keystone_exits_2_with_one_line(capsys, tmp_path):
    (tmp_path / "typo.S").write_text("start:\n    nop\n    %\n    jmp start\n")
    image = tmp_path / "typo.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule typo.S\n")
    assert main(["boot", str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "typo.S:3: '%' cannot start a statement" in err, err


# --------------------------------------------------------------------------
# The backstop: keystone's hangs and crashes found by time and memory limits
# --------------------------------------------------------------------------

def test_a_hang_the_screen_misses_is_found_by_the_deadline_and_named(monkeypatch):
    monkeypatch.setattr(asm_screen, "check_start", lambda text: None)   # let `%` through
    monkeypatch.setattr(assembler, "KEYSTONE_SECONDS", 1.0)
    monkeypatch.setattr(assembler, "STATEMENT_SECONDS", 1.0)
    message = error_of("start: nop\nmov rax, 1\n%\nnop\n")
    assert message == "p.S:3: keystone did not finish in 1 s on this statement: %"
    # and the next program is assembled by a fresh worker
    assert assemble_text("nop\n", BASE).code == b"\x90"


def test_a_crash_the_screen_misses_is_found_and_named(monkeypatch):
    monkeypatch.setattr(asm_screen, "check_bounds", lambda *args: 0)  # let .zero -1 through
    monkeypatch.setattr(assembler, "STATEMENT_SECONDS", 5.0)
    message = error_of("nop\n.byte 1\n.zero -1\n")
    assert message.startswith("p.S:3: keystone "), message
    assert message.endswith("on this statement: .zero -1"), message
    assert assemble_text("nop\n", BASE).code == b"\x90"


def test_keystone_never_runs_in_the_assembling_process():
    check = ("from emulator.assembler import assemble_text; import sys; "
             "assemble_text('mov rax, 1', 0x200000); print('keystone' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "False", "keystone must assemble in the worker process"


# --------------------------------------------------------------------------
# Every single-character edit of the shipped programs ends, in one line
# --------------------------------------------------------------------------

EDITS = 150                 # ~0.1 s each when nothing hangs; a hang costs ~6 s
EDIT_SECONDS = 10
_CHARACTERS = string.ascii_letters + string.digits + string.punctuation + " \t"

_ASSEMBLE_EACH = r"""
import json, sys
from emulator.assembler import AssemblyError, assemble_text
from emulator.errors import SpratError
from kernel.boot import user_defines
from cpudriver import layout
defines = user_defines()
for line in open(sys.argv[1]):
    path, text = json.loads(line)
    try:
        assemble_text(text, layout.USER_BASE, filename=path, defines=defines)
        outcome = "program"
    except SpratError as error:
        outcome = "error:" + str(error)
    except BaseException as error:
        outcome = f"traceback:{type(error).__name__}: {error}"
    print(json.dumps(outcome), flush=True)
"""


def single_character_edits(count: int, seed: int = 14) -> list[tuple[str, int, str, str]]:
    """(file, line, edited line, edited text): a character replaced, deleted or inserted
    in the code (not the comments) of a shipped userland program."""
    rng = random.Random(seed)
    files = sorted((ROOT / "userland").glob("*.S"))
    edits = []
    while len(edits) < count:
        path = rng.choice(files)
        lines = path.read_text().split("\n")
        index = rng.choice([i for i, line in enumerate(lines) if line.split("#")[0].strip()])
        line = lines[index]
        position = rng.randrange(len(line.split("#")[0].rstrip()) + 1)
        character, how = rng.choice(_CHARACTERS), rng.choice(("replace", "delete", "insert"))
        if how == "insert" or position == len(line):
            edited = line[:position] + character + line[position:]
        elif how == "replace":
            edited = line[:position] + character + line[position + 1:]
        else:
            edited = line[:position] + line[position + 1:]
        edits.append((str(path), index + 1, edited,
                      "\n".join(lines[:index] + [edited] + lines[index + 1:])))
    return edits


def test_every_single_character_edit_of_the_shipped_programs_ends_in_one_line(tmp_path):
    edits = single_character_edits(EDITS)
    work = tmp_path / "edits.jsonl"
    work.write_text("".join(json.dumps([path, text]) + "\n" for path, _, _, text in edits))
    environment = dict(os.environ, SPRAT_CACHE_DIR=str(tmp_path / "cache"))
    child = subprocess.Popen([sys.executable, "-c", _ASSEMBLE_EACH, str(work)], cwd=ROOT,
                             env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outcomes = []
    try:
        for path, number, edited, _ in edits:
            ready, _, _ = select.select([child.stdout], [], [], EDIT_SECONDS)
            assert ready, (f"assembling {os.path.basename(path)} with line {number} edited to "
                           f"{edited.strip()!r} did not end within {EDIT_SECONDS} s")
            line = child.stdout.readline()
            assert line, f"the assembling process died: {child.stderr.read().decode()[-500:]}"
            outcomes.append(json.loads(line))
            outcome = outcomes[-1]
            where = f"{os.path.basename(path)}:{number} edited to {edited.strip()!r}"
            assert not outcome.startswith("traceback:"), f"{where}: {outcome}"
            assert "\n" not in outcome, f"{where}: the error is not one line: {outcome!r}"
    finally:
        child.kill()
        child.wait()
    assert len(outcomes) == EDITS
    # The sample means something only if it holds both kinds of outcome.
    assert any(o == "program" for o in outcomes) and any(o.startswith("error:") for o in outcomes)


def test_an_instruction_keystone_makes_nothing_of_is_refused():
    # A typo that joins mnemonic and operand: keystone emitted no bytes, silently.
    assert error_of("nop\ncmprbx, 5\n") == ("p.S:2: keystone produced no code for this "
                                            "instruction: cmprbx, 5")


def test_conditions_and_macro_headers_in_their_usual_shapes_still_assemble():
    program = assemble_text("X = 1\n.if X == 1 && !0\nnop\n.else\nhlt\n.endif\n"
                            ".macro SAVE reg, count=1\npush \\reg\n.endm\nSAVE rax\n", BASE)
    assert program.code == b"\x90\x50"                           # nop; push rax


def test_a_label_keystone_hangs_on_is_found_with_its_statement(monkeypatch):
    monkeypatch.setattr(assembler._Reader, "check_label", lambda *args: None)  # let .if: through
    monkeypatch.setattr(assembler, "KEYSTONE_SECONDS", 1.0)
    monkeypatch.setattr(assembler, "STATEMENT_SECONDS", 1.0)
    message = error_of("nop\n.if: mov eax, 1\nnop\n")
    assert message == "p.S:2: keystone did not finish in 1 s on this statement: .if: mov eax, 1"
