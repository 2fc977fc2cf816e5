"""Call-frame rules read from the code (emulator/debug/frames.py): where gdb's
`bt` finds a routine's return address. Only what is sure gets a rule."""

from emulator.assembler import assemble_text
from emulator.debug.frames import Outermost, frame_rules

BASE = 0x80_0000_0000

SOURCE = """\
start:
    call uneven
    call unknown
    hlt
uneven:                    # one path pushes, the other does not: where they meet is unsure
    test rdi, rdi
    jz uneven_join
    push rbx
uneven_join:
    nop
    ret
unknown:
    push rbp
    mov rbp, rsp
    sub rsp, 24
    mov rsp, rbp           # rsp moves by a register: nothing after it is counted
    pop rbp
    ret
"""


def rules_of(source):
    program = assemble_text(source, BASE)
    return program, frame_rules(program, outermost=("start",))


def test_each_instruction_of_a_routine_is_given_its_depth_from_its_entry():
    program, rules = rules_of(SOURCE)
    unknown = program.symbols["unknown"]
    depths = [rules.get(address) for address in sorted(rules) if address >= unknown]
    assert depths == [8, 16, 16, 40], \
        f"push rbp, mov rbp, sub rsp 24, then the mov rsp and nothing after it: {depths}"


def test_where_two_paths_meet_with_different_depths_there_is_no_rule():
    program, rules = rules_of(SOURCE)
    join = program.symbols["uneven_join"]
    assert join not in rules and join + 1 not in rules, \
        "uneven_join is reached at rsp + 8 and at rsp + 16: gdb must guess there, not be told"
    assert rules[program.symbols["uneven"]] == 8


def test_code_an_outermost_label_reaches_has_no_caller():
    program, rules = rules_of(SOURCE)
    assert {rules[a] for a in rules if a < program.symbols["uneven"]} == {Outermost(BASE)}, \
        "start, up to the routines it calls, is one outermost frame"
