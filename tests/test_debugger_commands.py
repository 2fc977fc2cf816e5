"""The `sprat debug` prompt's gdb-style commands, message breakpoints,
channel views and non-stop holding, driven as a person types them.

Each test runs command lines through the prompt (the Session of
tests/test_debugger.py) and checks both what it printed and what the
machine holds afterwards.
"""

import pytest
from unicorn import x86_const as x86

from emulator.core import CoreState
from test_debugger import Session
from conftest import ROOT

SPAWN = ROOT / "images" / "spawn.lst"
CHANNEL_20 = 0x80_0021_4000          # USER_CHANNELS + 20 pages, as every program maps it
CONTROL_WORD = 56                    # slot 0's control word (userland/lib/urpc.S)


def spawn_session():
    return Session(image=SPAWN, cores=4)


def child(session):
    """The program spawn.lst starts on core 2."""
    return next(m.program for m in session.system.modules if m.name.endswith("spawn_child.S"))


def parent(session):
    return next(m.program for m in session.system.modules if m.name.endswith("spawn_parent.S"))


def rsp(core):
    return core.regs.read(x86.UC_X86_REG_RSP)


def rax(core):
    return core.regs.read(x86.UC_X86_REG_RAX)


# --- source lines --------------------------------------------------------------------
def test_list_shows_the_source_around_where_the_core_stands():
    session = spawn_session()
    output = session.run("break urpc_send core 0", "continue", "list")
    marked = [line for line in output.splitlines() if line.startswith("=>")]
    assert len(marked) == 1 and "mov rax, qword ptr [rdi + URPC_SEQ]" in marked[0], \
        f"list should mark the line urpc_send starts with: {output}"
    more = session.run("list")
    assert "urpc_send_room" in more or "URPC_SLOTS" in more, \
        f"a second `list` should go on with the next lines: {more}"
    lines = session.run("list urpc.S:107")
    assert "mov qword ptr [rdx + URPC_CONTROL], rcx" in lines, lines


def test_a_file_line_breakpoint_stops_a_spawned_program_on_that_line():
    session = spawn_session()
    output = session.run("break spawn_child.S:20", "continue")
    core2 = session.core(2)
    line_20 = next(a for a, f, n in child(session).source_lines
                   if f.endswith("spawn_child.S") and n == 20)
    assert session.shell.selected == 2 and core2.rip == line_20, output
    assert "spawn_child.S:20" in output and "call" in output, output


def test_a_library_label_stops_each_program_that_links_it():
    session = spawn_session()
    session.run("break urpc_send")
    stops = {}
    for _ in range(4):
        output = session.run("continue")
        if "the run is over" in output:
            break
        stops[session.shell.selected] = session.core(session.shell.selected).rip
    assert stops == {0: parent(session).symbols["urpc_send"],
                     2: child(session).symbols["urpc_send"]}, \
        f"urpc_send should stop the parent on core 0 and the child on core 2: {stops}"


def test_a_label_on_a_core_that_runs_no_program_with_it_is_a_one_line_error():
    # Lab 5's stream: cores 0 and 2 run the program; core 1 runs none.
    session = Session(image=ROOT / "labs/05-urpc/images/stream.lst", cores=4)
    for place in ("urpc_send", "urpc.S:67"):
        output = session.run(f"break {place} core 1")
        assert output.startswith("*** ") and output.count("\n") == 1, output
        assert "core 1 runs no program" in output and "cores 0 and 2" in output, \
            f"the error should say core 1 runs no program with it, and which cores do: {output}"
    assert not session.engine.breakpoints, "no breakpoint may be set on another core's program"


def test_a_label_of_a_spawned_program_on_a_core_that_starts_none_says_so():
    # spawn.lst starts nothing on core 1; its one nospawn module, the child,
    # could be spawned there: the breakpoint is the child's, and says so.
    session = spawn_session()
    output = session.run("break start core 1")
    assert f"{child(session).symbols['start']:#x} <start>" in output, output
    assert "core 1 starts no program" in output and "spawn_child.S" in output, \
        f"the breakpoint should say it is the spawned child's start, not core 1's own: {output}"
    assert "starts no program" not in session.run("break urpc_send core 0"), \
        "core 0's own program has urpc_send"


# --- running to a place -------------------------------------------------------------------
def test_finish_runs_until_the_routine_returns_to_its_caller():
    session = spawn_session()
    session.run("break urpc_channel core 2", "continue")
    core2 = session.core(2)
    back = int.from_bytes(core2.read_virtual(rsp(core2), 8), "little")
    stack = rsp(core2)
    output = session.run("finish")
    assert core2.rip == back and rsp(core2) == stack + 8, \
        f"finish should stop right after the call, the return address popped: {output}"
    assert rax(core2) == CHANNEL_20, "urpc_channel(20) returns channel 20's address"
    assert f"value returned: rax = {CHANNEL_20:#x}" in output, output


def test_until_a_location_and_until_out_of_a_loop():
    session = spawn_session()
    output = session.run("core 2", "until urpc_recv_poll")
    core2 = session.core(2)
    assert core2.rip == child(session).symbols["urpc_recv_poll"], output
    assert session.core(0).stats.instructions > 0, "the other cores run meanwhile"
    # print_u64's digit loop ends in `jnz print_u64_divide`, a jump back.
    session = Session()
    program = session.system.modules[0].program
    test = loop_test(program, "print_u64_divide")
    session.run("break print_u64 core 1", "continue", "delete", f"until {test:#x}",
                "set $rax = 123456", "step")        # `test rax, rax`: more digits to come
    core1 = session.core(1)
    jump = core1.rip
    instructions = core1.stats.instructions
    output = session.run("until")
    assert core1.rip == jump + 2, f"until at a jump back should run the loop to its end: {output}"
    assert core1.stats.instructions - instructions > 5 * 7, "five more digits, seven instructions each"
    assert "hello from core 1 of 4" not in output


def loop_test(program, label):
    """The address of the `test` before the jump back to `label`."""
    import capstone
    start = program.symbols[label]
    code = program.code[start - program.base:start - program.base + 64]
    instructions = list(capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64).disasm(code, start))
    for before, jump in zip(instructions, instructions[1:]):
        if jump.mnemonic.startswith("j") and jump.op_str == hex(start):
            assert before.mnemonic == "test", before
            return before.address
    raise AssertionError(f"no jump back to {label}")


def test_tbreak_stops_once_and_is_gone():
    session = Session()
    output = session.run("tbreak print_u64", "continue")
    assert "temporary breakpoint 1 deleted" in output, output
    assert 1 not in session.engine.breakpoints
    assert "print_u64" not in session.run("continue").split("the run is over")[0]


def test_a_condition_picks_which_hits_stop():
    session = Session()
    output = session.run("break print_u64 if $rdi == 2 && $rsi != 0", "continue")
    core = session.core(session.shell.selected)
    assert core.regs.read(x86.UC_X86_REG_RDI) == 2, f"stopped where $rdi != 2: {output}"
    output = session.run("condition 1 $rdi == 4", "continue")
    core = session.core(session.shell.selected)
    assert core.regs.read(x86.UC_X86_REG_RDI) == 4, output
    assert "$rdi == 4" in session.run("info breakpoints")


# --- looking and changing -------------------------------------------------------------------
def test_print_computes_expressions_with_spaces_registers_and_memory():
    session = spawn_session()
    session.run("break urpc_send core 0", "continue")
    core0 = session.core(0)
    top = int.from_bytes(core0.read_virtual(rsp(core0), 8), "little")
    second = int.from_bytes(core0.read_virtual(rsp(core0) + 8, 4), "little")
    output = session.run("print $rsp + 8", "print/x [$rsp]", "print u32[ $rsp + 8 ]",
                         "print (1 + 2) * 3 == 9", "print/x urpc_send")
    assert f"$rsp + 8 = {rsp(core0) + 8}" in output, output
    assert f"[$rsp] = {top:#x}" in output, output
    assert f"u32[ $rsp + 8 ] = {second}" in output, output
    assert "(1 + 2) * 3 == 9 = 1" in output, output
    assert f"urpc_send = {parent(session).symbols['urpc_send']:#x}" in output, output


def test_set_changes_a_register_and_memory():
    session = spawn_session()
    session.run("break urpc_send core 0", "continue")
    core0 = session.core(0)
    session.run("set $rax = $rsp + 1", "set *($rsp + 16) = 0x1122334455667788",
                "set u16[$rsp + 16] = 0xabcd")
    assert rax(core0) == rsp(core0) + 1
    stored = int.from_bytes(core0.read_virtual(rsp(core0) + 16, 8), "little")
    assert stored == 0x112233445566abcd, f"set should store 8 bytes, then 2: {stored:#x}"
    output = session.run("set $cs = 0", "set 4 = 5")
    assert output.count("***") == 2, output


def test_display_shows_its_expressions_at_every_stop():
    session = Session()
    session.run("break print_u64")
    output = session.run("display/x $rdi", "continue", "step")
    assert output.count("1: $rdi = 0x") == 3, f"display, a stop and a step each show it: {output}"
    session.run("undisplay 1")
    assert "1: $rdi" not in session.run("continue")


def test_x_formats_show_units_and_instructions():
    session = spawn_session()
    session.run("break urpc_send core 0", "continue")
    core0 = session.core(0)
    words = [int.from_bytes(core0.read_virtual(rsp(core0) + 8 * i, 8), "little") for i in range(4)]
    output = session.run("x/4gx $rsp")
    assert all(f"{w:#018x}" in output for w in words), output
    output = session.run("x/2wd $rsp", "x/3i $rip", "x/2c text_spawning")
    assert "mov rax, qword ptr [rdi + 8]" in output, output
    assert "112 'p'" in output and "97 'a'" in output, output


def test_read_and_access_watchpoints_stop_the_reader():
    session = spawn_session()
    output = session.run(f"rwatch {CHANNEL_20 + CONTROL_WORD:#x}", "continue")
    core2 = session.core(2)
    assert session.shell.selected == 2 and "read watchpoint 1" in output, \
        f"the child polling channel 20 should stop at the read watchpoint: {output}"
    poll = child(session).symbols["urpc_recv_poll"]
    assert core2.rip == poll + 4, "it stops right after the load, at the je"
    session.run("delete 1", f"awatch {CHANNEL_20:#x}")
    output = session.run("continue")
    assert "accessed watchpoint 2" in output, output


def test_disable_enable_and_delete_points():
    session = Session()
    session.run("break print_u64", "watch 0x1000")
    output = session.run("disable 1", "info breakpoints")
    assert "disabled 1" in output
    assert "print_u64" not in session.run("continue").split("the run is over")[0]
    session = Session()
    session.run("break print_u64", "disable", "enable 1")
    assert "hit breakpoint 1" in session.run("continue")
    output = session.run("delete 1", "info breakpoints", "delete 9")
    assert "no breakpoints or watchpoints" in output and "*** no breakpoint" in output, output


# --- messages and channels ------------------------------------------------------------------
def test_break_recv_stops_the_receiver_right_after_it_took_the_message():
    session = spawn_session()
    output = session.run("break recv 20", "continue")
    core2 = session.core(2)
    assert session.shell.selected == 2, output
    assert core2.rip == child(session).symbols["urpc_received"] + 4, \
        "the receiver stops once its count is stored"
    assert "core 2 took message 0 on channel 20: 0x15" in output, output
    assert "continue" and "on channel 21" not in output


def test_break_send_with_a_payload_condition():
    session = spawn_session()
    output = session.run("break send 21 if word[0] == 42", "continue")
    assert session.shell.selected == 2 and "core 2 sent message 0 on channel 21: 0x2a 0x2" \
        in output, output
    session = spawn_session()
    output = session.run("break send 21 if word[0] == 41", "continue")
    assert "the run is over" in output and "hit" not in output, \
        f"a payload that does not match must not stop: {output}"


def test_channels_shows_ends_numbers_and_ring_fill():
    session = spawn_session()
    session.run("break send 20", "continue")
    rows = table(session.run("channels"))
    assert rows["20"][:6] == ["0", "-", "1", "0", "0", "1/16"], \
        f"one message sent on channel 20, none taken yet: {rows}"
    session.run("delete", "continue")
    rows = table(session.run("channels"))
    assert rows["20"][:6] == ["0", "2", "1", "1", "0", "0/16"], rows
    assert rows["21"][:6] == ["2", "0", "1", "1", "0", "0/16"], rows


def test_msgs_names_the_receiving_core_the_image_gives_the_channel_before_it_took_one():
    # Lab 5's stream: the image gives channel 1 to core 0 (the sender) and
    # core 2 alone, so a message sent before core 2 took any goes to core 2.
    session = Session(image=ROOT / "labs/05-urpc/images/stream.lst", cores=4)
    session.run("break send 1", "continue", "continue")
    sends = [line for line in session.run("msgs").splitlines() if " send " in line]
    assert len(sends) == 2 and all("core 0 -> core 2 " in line for line in sends), \
        f"msgs should say the messages go to core 2, the channel's other end: {sends}"
    assert "2" == table(session.run("channels"))["1"][1], \
        "channels should name core 2 as channel 1's receiver"


def table(output):
    """channel -> the rest of its row, from the `channels` table."""
    rows = {}
    for line in output.splitlines():
        cells = line.split()
        if cells and cells[0].isdigit():
            rows[cells[0]] = cells[1:]
    return rows


# --- non-stop -----------------------------------------------------------------------------
def test_a_held_core_stays_while_the_others_run_on():
    session = Session()
    session.run("break print_u64 core 1", "continue")
    core1 = session.core(1)
    where, done = core1.rip, core1.stats.instructions
    others = [session.core(n).stats.instructions for n in (0, 2, 3)]
    output = session.run("delete", "stop core 1", "cores", "continue")
    assert "(held)" in output
    assert core1.rip == where and core1.stats.instructions == done, \
        "a held core must not move while the others run"
    assert all(session.core(n).stats.instructions > before or session.core(n).state is
               CoreState.HALTED for n, before in zip((0, 2, 3), others)), \
        "the other cores should run on"
    assert all(session.core(n).state is CoreState.HALTED for n in (0, 2, 3)), output
    assert "stood still" in output and "the run is over" not in output, output
    output = session.run("continue core 1")
    assert core1.state is CoreState.HALTED and "the run is over" in output, output
    assert 1 not in session.engine.held


def test_continue_core_runs_one_core_alone():
    session = Session()
    session.run("break print_u64 core 2", "continue")
    before = [c.stats.instructions for c in session.machine.cores]
    session.run("break print_cstr core 2", "continue core 2")
    after = [c.stats.instructions for c in session.machine.cores]
    assert after[2] > before[2]
    assert [a for i, a in enumerate(after) if i != 2] == [b for i, b in enumerate(before) if i != 2], \
        "continue core 2 moved another core"


# --- help and mistakes ------------------------------------------------------------------------
NEW_COMMANDS = ("list", "finish", "until", "advance", "tbreak", "condition", "display",
                "undisplay", "print", "set", "rwatch", "awatch", "disable", "enable", "info",
                "channels", "stop")


@pytest.mark.parametrize("command", NEW_COMMANDS)
def test_every_new_command_has_help(command):
    session = Session()
    output = session.run(f"help {command}")
    assert command.split()[0] in output and "***" not in output and len(output.split()) > 8, \
        f"`help {command}` should explain it: {output!r}"


def test_mistakes_in_new_commands_are_one_line_each():
    session = spawn_session()
    mistakes = ["list nosuch.S:3", "list nosuch", "break nosuch.S:1", "break send x",
                "break recv 20 if word[", "condition 9 1", "print", "print 1 / 0",
                "print/q 1", "x/4z $rsp", "x/4gx", "set", "set $rip", "display 1 +",
                "undisplay 4", "rwatch", "awatch 0 0", "stop core 9", "stop 1",
                "continue core", "info nothing", "finish now", "until nosuch", "tbreak"]
    for mistake in mistakes:
        output = session.run(mistake)
        lines = output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("*** "), \
            f"`{mistake}` should be one *** line, not: {output!r}"
        assert "internal error" not in output, output
