"""Tests for emulator/assembler.py: symbols checked by running the code in unicorn."""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn.x86_const import (UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX,
                               UC_X86_REG_RDI, UC_X86_REG_RDX, UC_X86_REG_RSP)

from emulator import assembler
from emulator.assembler import AssemblyError, Program, assemble_file, assemble_text
from emulator.errors import SpratError

BASE = 0x200000
DATA = 0x5000               # a page the tests map for absolute-address loads
STACK_TOP = 0x7000_0000
SCRATCH = 0x6000_0000       # where programs under test write what they saw


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own disk cache and an empty in-process memo."""
    monkeypatch.setenv("SPRAT_CACHE_DIR", str(tmp_path / "cache"))
    assembler.clear_memo()
    yield tmp_path / "cache"
    assembler.clear_memo()


def run(program: Program, stop: str = "done") -> Uc:
    """Run program from its base until the label `stop`; return the engine."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    start = program.base & ~0xFFF
    size = (program.end - start + 0xFFF) & ~0xFFF
    uc.mem_map(start, size)
    uc.mem_write(program.base, program.code)
    uc.mem_map(STACK_TOP - 0x10000, 0x10000)
    uc.mem_map(SCRATCH, 0x10000)
    uc.mem_map(DATA, 0x1000)
    uc.reg_write(UC_X86_REG_RSP, STACK_TOP - 0x100)
    uc.reg_write(UC_X86_REG_RDI, SCRATCH)
    uc.emu_start(program.base, program.symbols[stop], count=100_000)
    return uc


# --------------------------------------------------------------------------
# Symbols are where the code lands
# --------------------------------------------------------------------------

LAYOUT_PROGRAM = """
start:
    jmp forward_near                # near: 300 bytes of data in the way
    .zero 300
forward_near:
    jmp forward_short               # short
    nop
forward_short:
    lea rax, [rip + message]        # a label after data, forward
    call subroutine
after_call:
    lea rcx, [rip + start]          # backward
    jmp backward_target
return_here:
    mov rdx, qword ptr [rip + table]
    jmp done
message: .asciz "hi"
    .align 8
table: .quad message, done
subroutine:
    mov rbx, [rsp]                  # the return address the CPU pushed
    ret
backward_target:
    jmp return_here
done:
    hlt
"""


@pytest.mark.parametrize("base", [0x1000, BASE, 0x80_0000_0000])
def test_symbols_match_where_the_code_lands(base):
    program = assemble_text(LAYOUT_PROGRAM, base)
    uc = run(program)
    symbols = program.symbols
    assert symbols["start"] == base
    assert uc.reg_read(UC_X86_REG_RAX) == symbols["message"]
    assert uc.reg_read(UC_X86_REG_RBX) == symbols["after_call"]
    assert uc.reg_read(UC_X86_REG_RCX) == symbols["start"]
    assert uc.reg_read(UC_X86_REG_RDX) == symbols["message"]      # .quad label
    assert symbols["table"] % 8 == 0
    offset = symbols["message"] - base
    assert program.code[offset:offset + 3] == b"hi\0"


def test_short_and_near_jumps_have_their_natural_sizes():
    program = assemble_text(LAYOUT_PROGRAM, BASE)
    start = program.symbols["start"] - BASE
    assert program.code[start] == 0xE9                  # near jmp: 5 bytes
    assert program.symbols["forward_near"] == BASE + 5 + 300
    near = program.symbols["forward_near"] - BASE
    assert program.code[near] == 0xEB                   # short jmp: 2 bytes


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.permutations(range(8)), st.lists(st.integers(0, 400), min_size=8, max_size=8))
def test_jump_chains_visit_every_block_at_its_symbol(order, padding):
    """Blocks visited in a random order across random gaps: each records itself."""
    lines = ["start:", f"    jmp block{order[0]}"]
    for k in range(8):
        position = order.index(k)
        target = f"block{order[position + 1]}" if position + 1 < 8 else "done"
        lines += [f"block{k}:",
                  f"    lea rax, [rip + block{k}]",
                  f"    mov qword ptr [rdi + {8 * position}], rax",
                  f"    jmp {target}",
                  f"    .zero {padding[k]}"]
    lines += ["done:", "    hlt"]
    program = assemble_text("\n".join(lines), BASE)
    uc = run(program)
    seen = struct.unpack("<8Q", uc.mem_read(SCRATCH, 64))
    assert list(seen) == [program.symbols[f"block{k}"] for k in order]


def test_symbol_at_and_line_at():
    program = assemble_text("one:\n    nop\n    nop\ntwo: ret\n", BASE, filename="t.S")
    assert program.symbol_at(BASE + 1) == ("one", 1)
    assert program.symbol_at(BASE + 2) == ("two", 0)
    assert program.line_at(BASE) == ("t.S", 2)
    assert program.line_at(BASE + 1) == ("t.S", 3)
    assert program.line_at(BASE + 2) == ("t.S", 4)
    assert program.line_at(BASE + 3) is None            # past the end
    assert program.symbol_at(BASE - 1) is None
    assert [addr for addr, _, _ in program.source_lines] == [BASE, BASE + 1, BASE + 2]


def test_source_lines_cover_statements_split_by_semicolons():
    program = assemble_text("cli; sti\n.byte 1, 2; .word 3\n", BASE)
    assert program.source_lines == ((BASE, "<string>", 1), (BASE + 1, "<string>", 1),
                                    (BASE + 2, "<string>", 2), (BASE + 4, "<string>", 2))


# --------------------------------------------------------------------------
# Source text: comments, includes, constants, data, small fixes
# --------------------------------------------------------------------------

def test_comments_are_stripped_but_not_inside_strings():
    program = assemble_text(
        'nop # a comment; with a semicolon\n'
        'nop // another\n'
        's: .ascii "a#b//c;d"   # the string keeps its # and ;\n'
        "c: .byte '#', ';'\n", BASE)
    assert program.code == b"\x90\x90a#b//c;d#;"


def test_semicolon_separates_statements():
    assert assemble_text("cli; sti;nop", BASE).code == bytes.fromhex("fafb90")


def test_include_is_relative_to_the_including_file(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "main.S").write_text('start: call helper\n    hlt\n.include "lib/helper.S"\n')
    (tmp_path / "lib" / "helper.S").write_text('helper:\n    .include "../common.S"\n    ret\n')
    (tmp_path / "common.S").write_text("common: mov eax, 7\n")
    program = assemble_file(tmp_path / "main.S", BASE)
    assert set(program.symbols) == {"start", "helper", "common"}
    assert program.symbols["helper"] == program.symbols["common"] == BASE + 6
    files = {file.replace("\\", "/") for _, file, _ in program.source_lines}
    assert {f.rsplit("/", 2)[-1] for f in files} == {"main.S", "helper.S", "common.S"}
    assert program.line_at(program.symbols["common"])[1] == 1
    assert program.line_at(program.symbols["common"] + 5)[0].endswith("helper.S")


def test_include_with_an_absolute_path(tmp_path):
    (tmp_path / "lib.S").write_text("lib: ret\n")
    program = assemble_text(f'call lib\n.include "{tmp_path / "lib.S"}"\n', BASE)
    assert program.symbols["lib"] == BASE + 5


def test_constants_and_defines():
    program = assemble_text(
        ".equ A, 3\n"
        "B = A * 4 + 1\n"
        ".set C, 0x10\n"
        "mov eax, A\nmov ebx, B\nmov ecx, C\nmov edx, D\n", BASE, defines={"D": 0x1234})
    assert program.code == bytes.fromhex("b803000000 bb0d000000 b910000000 ba34120000")
    assert program.symbols == {}                        # constants are not labels


def test_a_define_overrides_the_sources_default():
    source = "ITERATIONS = 1000\nmov ecx, ITERATIONS\n"
    assert assemble_text(source, BASE).code == bytes.fromhex("b9e8030000")
    assert assemble_text(source, BASE, defines={"ITERATIONS": 5}).code == bytes.fromhex("b905000000")


def test_defines_can_be_large_or_negative():
    program = assemble_text("movabs rax, BIG\nmov rbx, NEG\n", BASE,
                            defines={"BIG": 0xFFFF_8000_0000_0000, "NEG": -2})
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(BASE, 0x1000)
    uc.mem_write(BASE, program.code)
    uc.emu_start(BASE, BASE + len(program.code))
    assert uc.reg_read(UC_X86_REG_RAX) == 0xFFFF_8000_0000_0000
    assert uc.reg_read(UC_X86_REG_RBX) == (1 << 64) - 2


def test_bad_defines_are_refused():
    with pytest.raises(SpratError, match="not a valid symbol name"):
        assemble_text("nop", BASE, defines={"1x": 1})
    with pytest.raises(SpratError, match="not an integer"):
        assemble_text("nop", BASE, defines={"X": "1"})


@pytest.mark.parametrize("source, expected", [
    ('.ascii "ab"', b"ab"),
    ('.asciz "ab"', b"ab\0"),
    ('.string "a\\n"', b"a\n\0"),
    ('.ascii "\\x41\\101\\t\\"\\\\"', b'AA\t"\\'),
    (".byte 1, 0xff, -1, 'a'", b"\x01\xff\xff\x61"),
    (".word 0x1234, 1", b"\x34\x12\x01\x00"),
    (".short 2", b"\x02\x00"),
    (".long 0x12345678", b"\x78\x56\x34\x12"),
    (".int 7", b"\x07\0\0\0"),
    (".quad 0x1122334455667788", bytes.fromhex("8877665544332211")),
    (".fill 3, 2, 0x4142", b"BABABA"),
    (".zero 4", b"\0" * 4),
    (".space 3, 0x90", b"\x90" * 3),
    (".skip 2", b"\0\0"),
    ("nop\n.align 8, 0\n.byte 1", b"\x90" + b"\0" * 7 + b"\x01"),
    ("nop\n.balign 4, 0xcc\n.byte 1", b"\x90\xcc\xcc\xcc\x01"),
    ("nop\n.p2align 2, 0\n.byte 1", b"\x90\0\0\0\x01"),
])
def test_data_directives(source, expected):
    assert assemble_text(source, BASE).code == expected


def test_align_in_code_pads_with_nops_that_run():
    program = assemble_text("mov eax, 1\n.align 16\nmov ebx, 2\ndone: hlt\n", BASE)
    assert program.symbols["done"] == BASE + 16 + 5
    uc = run(program)
    assert uc.reg_read(UC_X86_REG_RBX) == 2


def test_sysretq_is_an_alias_of_sysret():
    assert assemble_text("sysret", BASE).code == bytes.fromhex("480f07")
    assert assemble_text("sysretq", BASE).code == bytes.fromhex("480f07")


def test_offset_keyword_means_the_address():
    program = assemble_text("mov rax, offset here\nhere: nop\n", BASE)
    assert program.code == assemble_text("mov rax, here\nhere: nop\n", BASE).code


def test_numeric_local_labels():
    program = assemble_text(
        "mov ecx, 3\n"
        "1:  dec ecx\n"
        "    jnz 1b\n"
        "    jmp 1f\n"
        "    int3\n"
        "1:  mov eax, 0x1f\n"               # 0x1f is a number, not a label
        "done: hlt\n", BASE)
    uc = run(program)
    assert uc.reg_read(UC_X86_REG_RCX) == 0
    assert uc.reg_read(UC_X86_REG_RAX) == 0x1F
    assert set(program.symbols) == {"done"}


def test_macros_and_repeats_expand():
    program = assemble_text(
        ".macro SAVE reg\n    push \\reg\n.endm\n"
        "SAVE rax\nSAVE rbx\n"
        ".rept 2\n    nop\n.endr\n"
        "after: ret\n", BASE)
    assert program.code == bytes.fromhex("50 53 90 90 c3")
    assert program.symbols["after"] == BASE + 4


def test_harmless_directives_are_accepted():
    program = assemble_text(".intel_syntax noprefix\n.code64\n.text\n.globl f\nf: ret\n", BASE)
    assert program.code == b"\xc3"


# --------------------------------------------------------------------------
# Errors say file:line and what is wrong, on one line
# --------------------------------------------------------------------------

def assembly_error(*args, **kwargs) -> AssemblyError:
    with pytest.raises(AssemblyError) as caught:
        assemble_text(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, "an error message must be one line"
    return caught.value


def test_bad_instruction_in_the_main_file_names_its_line():
    error = assembly_error("nop\nnop\nmov rax, rbx, rcx\nnop\n", BASE, filename="prog.S")
    assert str(error) == "prog.S:3: invalid operand: mov rax, rbx, rcx"


def test_unknown_mnemonic():
    error = assembly_error("nop\n  frobnicate rax\n", BASE, filename="prog.S")
    assert str(error) == "prog.S:2: unknown instruction 'frobnicate': frobnicate rax"


def test_bad_instruction_in_an_included_file_names_that_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "main.S").write_text('nop\n.include "sub/inner.S"\nnop\n')
    (tmp_path / "sub" / "inner.S").write_text("# inner\nret\nmov eax, [rax+rbx*3]\n")
    with pytest.raises(AssemblyError) as caught:
        assemble_file("main.S", BASE)
    assert str(caught.value).startswith("sub/inner.S:3: ")
    assert caught.value.file == "sub/inner.S" and caught.value.line == 3


def test_undefined_symbol_is_named():
    error = assembly_error("start: nop\n    call nowhere\n", BASE, filename="p.S")
    assert str(error) == "p.S:2: undefined symbol 'nowhere'"


def test_undefined_symbol_in_a_memory_operand():
    error = assembly_error("nop\nnop\nmov rax, [rip + missing_table]\n", BASE, filename="p.S")
    assert str(error) == "p.S:3: undefined symbol 'missing_table'"


def test_undefined_symbol_behind_a_constant_is_found_at_its_definition():
    error = assembly_error("nop\nLIMIT = MAXIMUM + 1\nmov eax, LIMIT\n", BASE, filename="p.S")
    assert str(error) == "p.S:2: undefined symbol 'MAXIMUM'"


def test_undefined_symbol_in_a_macro_body_is_named_at_the_use():
    error = assembly_error(".macro GO\n    call nowhere\n.endm\nnop\nGO\n", BASE, filename="p.S")
    assert str(error) == "p.S:5: undefined symbol 'nowhere'"


def test_missing_include(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "main.S").write_text('nop\n\n.include "x.S"\n')
    with pytest.raises(AssemblyError) as caught:
        assemble_file("main.S", BASE)
    assert str(caught.value) == 'main.S:3: cannot include "x.S": no such file'


def test_include_cycle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.S").write_text('.include "b.S"\n')
    (tmp_path / "b.S").write_text('nop\n.include "a.S"\n')
    with pytest.raises(AssemblyError, match=r'^b\.S:2: "a\.S" includes itself'):
        assemble_file("a.S", BASE)


def test_missing_source_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssemblyError, match=r"^nope\.S: no such file$"):
        assemble_file("nope.S", BASE)


def test_duplicate_label():
    error = assembly_error("here: nop\nhere: nop\n", BASE, filename="p.S")
    assert str(error) == "p.S:2: label 'here' already defined at p.S:1"


@pytest.mark.parametrize("source, message", [
    ('.ascii "no end\nnop', "p.S:1: unterminated string"),    # keystone would hang
    (".bogus 3", "p.S:1: unknown directive .bogus"),
    (".bogus", "p.S:1: unknown directive .bogus"),            # keystone ignores it
    (".section .data", "p.S:1: .section: sections are not supported"),
    (".code32", "p.S:1: .code32: sprat sources are 64-bit code"),
    ("iret", "p.S:1: iret assembles to the 16-bit form"),
    ("rax: nop", "p.S:1: 'rax' cannot be a label"),
    ("byte: nop", "p.S:1: 'byte' cannot be a label"),
    ("nop\n.word 0x12345", "p.S:2: value out of range for .word"),   # keystone drops it
    (".byte 0x123", "p.S:1: literal value out of range"),
    ("jmp 1b\n1: nop", "p.S:1: 1b: no label 1: before this line"),
    (".rept 3\nnop\n", "p.S:1: .rept without .endr"),
    (".endm", "p.S:1: .endm without the directive that opens it"),
    ("__sprat_x: nop", "p.S:1: '__sprat_x': names starting with __sprat are reserved"),
])
def test_errors_keystone_would_hide(source, message):
    assert str(assembly_error(source, BASE, filename="p.S")).startswith(message)


def test_not_a_text_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blob.S").write_bytes(b"\x7fELF\x00\x01\xff")
    with pytest.raises(AssemblyError, match=r"^blob\.S: not a text file"):
        assemble_file("blob.S", BASE)


def test_label_above_2gib_used_as_a_32_bit_operand_is_explained():
    error = assembly_error("mov rbx, here\nhere: nop\n", 0xFFFF_FF80_0000_0000, filename="p.S")
    assert str(error).startswith("p.S:1: invalid fixup")
    assert "movabs" in str(error)


# --------------------------------------------------------------------------
# The RIP-relative sharp edge
# --------------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "mov rbx, [0x5000]",            # keystone: [rip + 0x5000], the wrong address
    "mov rbx, qword ptr [0x5000]",
    "mov r8, [ADDRESS]",            # the same through a constant
    "mov qword ptr [0x5000], 1",    # rip-relative (right address, but position-bound)
    "lea rax, [0x5000]",
    "add rax, [0x5000]",
])
def test_implicit_rip_relative_operands_are_refused(source):
    error = assembly_error(f"ADDRESS = 0x5000\nnop\n{source}\n", BASE, filename="p.S")
    assert str(error).startswith("p.S:3: keystone made this memory operand RIP-relative")
    assert "register" in str(error)


@pytest.mark.parametrize("source", ["mov rcx, qword ptr gs:[0x30]",
                                    "mov qword ptr gs:[0x48], rcx",
                                    "mov qword ptr gs:[0x48], 0"])
def test_a_per_core_variable_through_another_register_than_rax_says_use_rax(source):
    """Only rax has an absolute gs: form (moffs); keystone makes the rest
    RIP-relative. The refusal says how to write it (lab 4 asks for gs: a lot)."""
    error = assembly_error(f"nop\n{source}\n", BASE, filename="p.S")
    assert str(error).startswith("p.S:2: keystone made this memory operand RIP-relative")
    assert "go through rax: mov rax, qword ptr gs:[X]" in str(error)


def test_per_core_variables_through_rax_assemble():
    assemble_text("mov rax, qword ptr gs:[0x30]\nmov qword ptr gs:[0x48], rax\n", BASE)


def test_keystone_really_gets_mov_rbx_absolute_wrong():
    """The reason for the check above: keystone's raw output, disassembled."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    from keystone import KS_ARCH_X86, KS_MODE_64, Ks
    encoding, _ = Ks(KS_ARCH_X86, KS_MODE_64).asm("mov rbx, [0x5000]", BASE)
    insn = next(Cs(CS_ARCH_X86, CS_MODE_64).disasm(bytes(encoding), BASE))
    assert insn.op_str == "rbx, qword ptr [rip + 0x5000]"     # not 0x5000 at all


def test_numbers_are_decimal():
    """keystone reads decimals as hex once a symbol resolver is installed: we never do."""
    program = assemble_text("mov eax, 10\n.zero 300\nafter: .byte 99\n", BASE)
    assert program.code[:5] == bytes.fromhex("b80a000000")
    assert program.symbols["after"] == BASE + 5 + 300
    assert program.code[-1] == 99


def test_safe_memory_operand_forms_load_the_right_address():
    program = assemble_text(
        "mov rax, [0x5000]\n"                     # movabs: a true 64-bit address
        "mov rcx, 0x5008\n"
        "mov rbx, [rcx]\n"                        # a register base: always safe
        "mov rdx, [rip + value]\n"                # rip-relative, written as such
        "done: hlt\n"
        "value: .quad 0x77\n", BASE)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(BASE, 0x1000)
    uc.mem_map(DATA, 0x1000)
    uc.mem_write(DATA, struct.pack("<QQ", 0x11, 0x22))
    uc.mem_write(BASE, program.code)
    uc.emu_start(BASE, program.symbols["done"])
    assert uc.reg_read(UC_X86_REG_RAX) == 0x11
    assert uc.reg_read(UC_X86_REG_RBX) == 0x22
    assert uc.reg_read(UC_X86_REG_RDX) == 0x77


def test_rip_inside_a_macro_body_is_not_refused():
    program = assemble_text(".macro LOAD reg\n    mov \\reg, [rip + value]\n.endm\n"
                            "LOAD rbx\nvalue: .quad 5\n", BASE)
    assert len(program.code) == 7 + 8


# --------------------------------------------------------------------------
# Immediates keystone silently changes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("source, message", [
    ("push 0xffff", "keystone encoded push 0xffff as push -1: the CPU would use "
                    "0xffffffffffffffff; put 0xffff in a register first"),
    ("push 0x80000000", "keystone encoded push 0x80000000 as push 0: 0x80000000 does not fit"),
    ("mov al, 0x1234", "keystone encoded mov al, 0x1234 as mov al, 0x34: 0x1234 does not fit"),
    ("mov eax, 0x123456789", "keystone encoded mov eax, 0x123456789 as mov eax, 0x23456789"),
])
def test_immediates_keystone_would_change_are_refused(source, message):
    assert str(assembly_error(source, BASE, filename="p.S")).startswith(f"p.S:1: {message}")


@pytest.mark.parametrize("source, literal", [
    # Keystone takes a symbol it has not met for an address: these came out
    # as `mov rax, 0xffffffff80000000` and as a load from memory.
    ("mov rax, LATER\nLATER = 0x80000000", "mov rax, 0x80000000"),
    ("mov rdi, BASE_HERE + LATER\nBASE_HERE = 0x8000000000\nLATER = 0x100",
     "mov rdi, 0x8000000100"),
    ("mov rax, -LATER\nLATER = 16", "mov rax, -16"),
    ("mov rax, FIRST\nFIRST = SECOND + 1\nSECOND = 0x7000000000", "mov rax, 0x7000000001"),
])
def test_constants_defined_further_down_are_folded_like_the_others(source, literal):
    code = assemble_text(source, BASE).code
    assert code and code == assemble_text(literal, BASE).code


@pytest.mark.parametrize("source", [
    "mov eax, -1", "and rax, ~0xfff", "cmp byte ptr [rax], 0xff", "shl rax, 40",
    "mov rax, 0xffffffffffffffff", "and eax, 0xfffffff0", "int 0x80", "mov cx, -1",
    "add dl, '0'", "mov rbx, 0xFEE00000", "push -129", "push 0x7fffffff",
    "EARLY = 0x80000000\nmov rax, EARLY", "mov eax, 10h", "mov rax, 010",
    "lock add qword ptr [rax], 1",
])
def test_immediates_that_mean_what_they_say_pass(source):
    assemble_text(source, BASE)


# --------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------

class CountingBuild:
    """Wraps the cold path to count how often keystone really runs."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.real = assembler._build
        monkeypatch.setattr(assembler, "_build", self)

    def __call__(self, *args):
        self.calls += 1
        return self.real(*args)


def test_memo_returns_the_same_program():
    first = assemble_text("nop", BASE)
    assert assemble_text("nop", BASE) is first
    assert assemble_text("nop", BASE + 1) is not first


def test_disk_cache_hit_and_rebuild_after_an_included_file_changes(tmp_path, monkeypatch,
                                                                   private_cache):
    builds = CountingBuild(monkeypatch)
    (tmp_path / "main.S").write_text('start: call helper\n.include "helper.S"\n')
    helper = tmp_path / "helper.S"
    helper.write_text("helper: ret\n")
    first = assemble_file(tmp_path / "main.S", BASE)
    assert builds.calls == 1 and any(private_cache.glob("*.json"))

    assembler.clear_memo()                          # a new process, as it were
    again = assemble_file(tmp_path / "main.S", BASE)
    assert builds.calls == 1, "an unchanged source must come from the disk cache"
    assert again == first

    helper.write_text("nop\nhelper: ret\n")
    changed = assemble_file(tmp_path / "main.S", BASE)      # memo sees the new stamp
    assert builds.calls == 2
    assert changed.symbols["helper"] == BASE + 6

    assembler.clear_memo()
    assemble_file(tmp_path / "main.S", BASE, defines={"X": 1})
    assert builds.calls == 3, "other defines are another program"


def test_corrupt_cache_entry_is_rebuilt(tmp_path, monkeypatch, private_cache):
    builds = CountingBuild(monkeypatch)
    source = tmp_path / "p.S"
    source.write_text("start: ret\n")
    first = assemble_file(source, BASE)
    for entry in private_cache.glob("*.json"):
        entry.write_text('{"format": 1, "key": "trunc')
    assembler.clear_memo()
    assert assemble_file(source, BASE) == first
    assert builds.calls == 2


def test_unwritable_cache_directory_only_costs_time(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SPRAT_CACHE_DIR", str(blocker / "cache"))
    assert assemble_text("ret", BASE).code == b"\xc3"


def test_warm_assembly_never_runs_keystone_again(tmp_path, monkeypatch):
    """A boot assembles every program; a warm one must come from the caches:
    from disk in a new process, from memory in the same one."""
    source = tmp_path / "big.S"
    source.write_text("\n".join(f"l{i}: mov rax, [rbx + {i}]\n  add rcx, {i}\n  jne l{i // 2}"
                                for i in range(170)))
    first = assemble_file(source, BASE)
    assembler.clear_memo()

    def no_keystone(*_):
        raise AssertionError("a cached program was assembled again")
    monkeypatch.setattr(assembler, "_build", no_keystone)
    assert assemble_file(source, BASE).code == first.code       # from disk
    monkeypatch.setattr(assembler, "_disk_load", no_keystone)
    assert assemble_file(source, BASE).code == first.code       # from memory
