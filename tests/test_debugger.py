"""The debugger: the engine's exact stops and steps, and the `sprat debug` prompt.

Most tests drive the prompt (sprat/debug.py) in-process with a list of
command lines, then look at both what it printed and what the machine
holds. "Exact" is checked against a bare re-execution: the same image
booted again, without a debugger, stepped the same number of instructions.
"""

import io
import random
import re
import time

import pytest
from unicorn import x86_const as x86

from cpudriver import layout
from emulator import sources
from emulator.core import CoreState
from emulator.debug.engine import DebugEngine
from kernel.boot import boot_image
from sprat import cli
from sprat.debug import DebugShell, attach
from conftest import ROOT, control_word_first_workspace, write_image

DEFAULT_IMAGE = ROOT / "images" / "default.lst"
GPRS = ("RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP", "R8", "R9", "R10", "R11",
        "R12", "R13", "R14", "R15", "RIP", "RFLAGS")


class Session:
    """A booted image under the prompt, with its output captured."""

    def __init__(self, image=DEFAULT_IMAGE, cores=4, max_cycles=10**7):
        self.out = io.StringIO()
        self.system = boot_image(image, cores=cores, output=self._console)
        self.debuggee = attach(self.system, max_cycles=max_cycles)
        self.shell = DebugShell(self.debuggee, stdout=self.out)
        self.machine = self.system.machine
        self.engine = self.debuggee.engine

    def _console(self, core, line):
        self.out.write(f"[core {core}] {line}\n")

    def run(self, *lines) -> str:
        """Run command lines; return what they printed."""
        start = self.out.tell()
        for line in lines:
            self.shell.onecmd(line)
        return self.out.getvalue()[start:]

    def core(self, n):
        return self.machine.cores[n]

    def symbol(self, name):
        return self.system.kernel.symbols[name]


def registers(core):
    return {name: core.regs.read(getattr(x86, f"UC_X86_REG_{name}")) for name in GPRS}


def bare_core_after(image, cores, core_id, instructions):
    """Boot again without a debugger; run until core `core_id` is started, then
    step only that core `instructions` instructions. Return the core."""
    machine = boot_image(image, cores=cores).machine
    target = machine.cores[core_id]
    scheduler = machine.scheduler
    while target.state is CoreState.OFF:
        core, at = scheduler.next_core()
        assert core is not None, f"core {core_id} never started"
        scheduler.run_one(core, at)
    assert target.stats.instructions == 0 or core_id == 0
    machine.step(core_id, instructions - target.stats.instructions)
    return target


# --- what the issue asks to see -------------------------------------------------------
def test_script_steps_core_2_by_exactly_ten_instructions_and_no_other_core_moves():
    session = Session()
    session.run("break ap_entry core 2", "continue", "core 2")
    core2 = session.core(2)
    assert core2.rip == session.symbol("ap_entry")
    before = [c.stats.instructions for c in session.machine.cores]
    output = session.run("step 10", "regs")
    after = [c.stats.instructions for c in session.machine.cores]
    assert after[2] == before[2] + 10, "step 10 must retire exactly 10 instructions"
    assert [a for i, a in enumerate(after) if i != 2] == \
        [b for i, b in enumerate(before) if i != 2], "stepping core 2 moved another core"
    bare = bare_core_after(DEFAULT_IMAGE, 4, 2, after[2])
    assert registers(core2) == registers(bare), "the stepped core differs from a bare re-run"
    assert f"rip {core2.rip:#018x}" in output, output


def test_breakpoint_stop_counts_only_the_instructions_before_it():
    session = Session()
    session.run("break syscall_entry core 1", "continue")
    core1 = session.core(1)
    assert core1.rip == session.symbol("syscall_entry")
    bare = bare_core_after(DEFAULT_IMAGE, 4, 1, core1.stats.instructions)
    assert registers(core1) == registers(bare), \
        "a breakpoint stop must leave the core where a bare run of as many instructions does"


def test_single_step_of_a_syscall_lands_at_syscall_entry_in_ring_0():
    session = Session()
    program = session.system.modules[0].program
    syscall_site = next(address for address, _, _ in program.source_lines
                        if program.code[address - program.base:][:2] == b"\x0f\x05")
    session.run(f"break {syscall_site:#x} core 3", "continue")
    core3 = session.core(3)
    assert core3.rip == syscall_site and core3.privilege == 3
    count = core3.stats.instructions
    output = session.run("core 3", "step")
    assert core3.rip == session.symbol("syscall_entry")
    assert core3.privilege == 0
    assert core3.stats.instructions == count + 1
    assert "core 3 ring 0 " in output and "<syscall_entry>" in output, output


def test_a_due_interrupt_is_one_step_that_lands_at_its_handler():
    session = Session()
    session.run("continue")                     # to the end: every core idles in hlt
    core1 = session.core(1)
    assert core1.state is CoreState.HALTED and core1.interrupts_enabled()
    core1.raise_interrupt(40, core1.cycles)
    count, taken = core1.stats.instructions, core1.stats.interrupts
    output = session.run("core 1", "step")
    assert core1.rip == session.symbol("vector40"), output
    assert core1.stats.instructions == count, "taking an interrupt executes nothing"
    assert core1.stats.interrupts == taken + 1
    assert "took an interrupt" in output


def test_kernel_breakpoint_stops_every_core():
    session = Session()
    session.run("break syscall_entry")
    seen = set()
    for _ in range(20):
        output = session.run("continue")
        if "the run is over" in output:
            break
        seen.add(session.shell.selected)
        assert session.core(session.shell.selected).rip == session.symbol("syscall_entry")
    assert seen == {0, 1, 2, 3}


def test_user_breakpoint_stops_every_core_in_ring_3():
    session = Session()
    session.run("break print_u64")
    seen = set()
    for _ in range(20):
        output = session.run("continue")
        if "the run is over" in output:
            break
        core = session.core(session.shell.selected)
        assert core.privilege == 3 and "<print_u64>" in output, output
        seen.add(core.id)
    assert seen == {0, 1, 2, 3}


def test_watchpoint_on_the_user_stack_stops_each_core_after_its_store():
    session = Session()
    program = session.system.modules[0].program
    top = layout.stack_top(0)     # default.lst's one module
    slot = top - 8          # the first push of every program: its private stack
    session.run(f"watch {slot:#x}")
    seen = set()
    for _ in range(40):
        output = session.run("continue")
        if "the run is over" in output:
            break
        core = session.core(session.shell.selected)
        assert "wrote to watchpoint 1" in output, output
        stored = core.read_virtual(slot, 8)
        # Stopped after the store: the value is there, the rip past it.
        assert stored.hex(" ") in output
        assert program.base <= core.rip < program.end
        seen.add(core.id)
    assert seen == {0, 1, 2, 3}


def test_a_guest_fault_stops_continue_with_a_report(tmp_path):
    image = write_image(tmp_path, {"bad": "start:\n    mov rax, 0x200000\n"
                                          "poke:\n    mov qword ptr [rax], 1\n    jmp start\n"})
    session = Session(image, cores=1)
    output = session.run("continue")
    poke = session.system.modules[0].program.symbols["poke"]
    assert "core 0 took #PF page fault" in output, output
    assert f"at rip {poke:#x}" in output and "<poke>" in output
    assert session.core(0).rip == session.symbol("vector14"), "it stops at the handler"
    assert session.engine.fault.address == 0x200000


def open_gate_to_ring_3(session, vector):
    """Let ring 3 use IDT gate `vector` of core 0 (the CPU driver's gates
    below 32 have DPL 0), once the CPU driver has built its IDT."""
    attributes = layout.PERCORE_BASE + layout.PC_IDT + 16 * vector + 5
    session.machine.memory.write(attributes, bytes([0xEE]))      # present, DPL 3, interrupt gate


def test_a_fault_report_reads_the_frame_an_int_n_pushed_without_an_error_code(tmp_path):
    image = write_image(tmp_path, {"int13": "start:\n    int 13\nafter:\n    call exit\n"})
    session = Session(image, cores=1)
    session.run("break start", "continue")
    open_gate_to_ring_3(session, 13)
    output = session.run("continue")
    after = session.system.modules[0].program.symbols["after"]
    assert "core 0 took #GP general protection" in output, output
    assert f"at rip {after:#x}" in output and "error code" not in output, (
        f"`int 13` pushes no error code, so the frame's first word is the return rip "
        f"{after:#x}; the report read it otherwise: {output}")


def test_a_fault_report_names_the_gp_an_int_n_through_a_kernel_only_gate_became(tmp_path):
    image = write_image(tmp_path, {"int14": "start:\nsoftware:\n    int 14\n    call exit\n"})
    session = Session(image, cores=1)
    output = session.run("continue")
    software = session.system.modules[0].program.symbols["software"]
    assert "core 0 took #GP general protection" in output, (
        f"`int 14` from ring 3 through a DPL 0 gate delivers a #GP, not a page fault: {output}")
    assert f"at rip {software:#x}, error code {14 * 8 + 2:#x}" in output, output
    assert "address" not in output.split("took", 1)[1].split("\n", 1)[0], output


def test_a_fault_report_stops_at_the_gp_of_an_int_n_above_the_exceptions(tmp_path):
    image = write_image(tmp_path, {"int40": "start:\nsoftware:\n    int 0x40\n    call exit\n"})
    session = Session(image, cores=1)
    output = session.run("continue")
    software = session.system.modules[0].program.symbols["software"]
    assert f"core 0 took #GP general protection at rip {software:#x}, error code " \
           f"{0x40 * 8 + 2:#x}" in output, (
        f"`int 0x40` through a kernel-only gate is a #GP the debugger should stop at: {output}")


FAILING = "start:\n    mov edi, 1\n    call exit\n"


def test_a_run_whose_program_exits_1_is_over_as_a_failure_as_sprat_boot_says(tmp_path):
    session = Session(write_image(tmp_path, {"failing": FAILING}), cores=1)
    output = session.run("continue")
    assert "the run is over: every core halted cleanly, but 1 program failed (core 0: 1)" \
        in output, f"a program that exited 1 must not end the run cleanly:\n{output}"


def test_a_run_that_broke_the_channel_protocol_ends_saying_how(tmp_path):
    image = control_word_first_workspace(tmp_path)
    sources.set_workspace(tmp_path)
    try:
        session = Session(image, cores=2)
        output = session.run("continue")
    finally:
        sources.set_workspace(None)
    assert re.search(r"the run is over: .*the channel protocol was broken \(\d+ violations\)",
                     output), f"the end should say that the protocol was broken:\n{output}"
    shown = re.findall(r"^  core 0, channel 3 slot \d+, message \d+: payload word 0 stored "
                       r"after the slot's control word", output, re.M)
    assert len(shown) == 5 and re.search(r"^  \.\.\. and \d+ more$", output, re.M), \
        f"the first five violations should follow, one line each, then how many more:\n{output}"


def test_next_steps_over_a_call():
    session = Session()
    session.run("break start core 0", "continue")
    core0 = session.core(0)
    for _ in range(10):                  # to the first call
        line = session.run("disas $rip 1")
        if " call " in line:
            break
        session.run("step")
    call_length = session.shell._decode(core0.rip, 0).size
    back = core0.rip + call_length
    session.run("next")
    assert core0.rip == back and core0.privilege == 3


def test_breakpoint_on_the_current_rip_does_not_stop_the_next_continue_there():
    session = Session()
    session.run("break syscall_entry core 2", "continue")
    first = session.core(2).stats.instructions
    session.run("continue")
    assert session.core(2).stats.instructions > first, "continue must move off a breakpoint"


def test_delete_removes_a_breakpoint_and_the_run_ends():
    session = Session()
    session.run("break syscall_entry", "continue")
    output = session.run("break", "delete 1", "break", "continue")
    listed = next(line for line in output.splitlines() if line.split()[:1] == ["1"])
    assert listed.split()[1] == "breakpoint" and listed.split()[-1] == "1", \
        f"`break` should list breakpoint 1 with its one hit: {output}"
    assert "no breakpoints or watchpoints" in output
    assert "the run is over: every core halted cleanly" in output


def test_disassembly_names_labels_and_branch_targets():
    session = Session()
    output = session.run("disas syscall_entry 4", "disas kernel_entry 30")
    assert "syscall_entry:  (cpudriver/syscall.S:" in output
    assert "=> 0x200000 <kernel_entry>" in output
    assert re.search(r"call 0x[0-9a-f]+ <\w+>", output), "a call's target is named"


def test_backtrace_finds_the_user_call_from_the_kernel():
    session = Session()
    session.run("break sys_print core 0", "continue")
    output = session.run("bt")
    assert output.startswith("#0  0x")
    assert "<sys_print>" in output.splitlines()[0]
    assert "(after a call" in output and "(after a syscall" in output, output


def test_backtrace_lists_the_user_frame_of_a_syscall_once():
    """syscall leaves its return address in rcx, so the trap frame holds it
    twice (saved rcx, saved rip): one frame, shown once."""
    session = Session()
    session.run("break sys_print core 0", "continue")
    frames = [line.split("   (")[0].split(None, 1)[1]
              for line in session.run("bt").splitlines() if "(after a syscall" in line]
    assert len(frames) == 1, frames


# `leaf` returns and leaves its return address on the stack, under the
# local slot `start` then makes: a scan of the stack would take it for a frame.
STALE_RETURN_ADDRESS = """start:
    call leaf
after_leaf:
    sub rsp, 8
    call inner
after_inner:
    add rsp, 8
    call exit
leaf:
    ret
inner:
    push rbx
    call innermost
    pop rbx
    ret
innermost:
    nop
    ret
"""


def test_backtrace_follows_the_code_not_old_words_on_the_stack(tmp_path):
    """Each routine's frame is read from the code (its pushes and sub rsp):
    bt lists the real callers and ends at start, not at an old return
    address left in a local slot."""
    session = Session(write_image(tmp_path, {"stale": STALE_RETURN_ADDRESS}), cores=1)
    session.run("break innermost core 0", "continue")
    frames = [line.split()[2] for line in session.run("bt").splitlines()]
    assert frames == ["<innermost>", "<inner+6>", "<after_inner>"], frames


def test_backtrace_goes_through_a_system_call_table(tmp_path):
    """A system call's handler is called through the CPU driver's table
    (`call r8`): bt still knows its frame and the dispatcher's."""
    session = Session(ROOT / "images" / "shootdown.lst", cores=4)
    session.run("break sys_invlpg core 0", "continue")
    lines = session.run("bt").splitlines()
    assert "<syscall_result>" in lines[1] and "scanned" not in lines[1], lines
    assert "<trap_syscall+8>" in lines[2] and "scanned" not in lines[2], lines
    assert "(after a syscall, scanned" in lines[-1], lines


def test_cores_table_marks_the_selected_core():
    session = Session()
    output = session.run("core 3", "cores")
    rows = output.splitlines()[3:]
    assert rows[3].startswith("*") and "off" in rows[3]
    assert "kernel_entry" in rows[0]


def test_msgs_says_politely_when_no_channel_has_been_used():
    session = Session()
    assert "no messages yet" in session.run("msgs")


def test_msgs_shows_the_last_messages_of_each_channel():
    session = Session()
    for seq in range(12):
        session.machine._notify("send", time=100 * seq, core=0, peer=1, channel=3, words=[seq, 7],
                                seq=seq)
    output = session.run("msgs")
    assert output.startswith("channel 3:")
    assert "seq 11: 0xb 0x7" in output and "seq 3:" not in output, "the last 8 only"


# --- mistakes ----------------------------------------------------------------------------
BAD_LINES = ["frobnicate", "core 99", "core two", "step zero", "step -3", "step 99999999999",
             "break", "break nosuch_label", "break 0x10 core", "break 0x10 core 77",
             "break start+", "watch", "watch 0x1000 0", "watch nosuch", "x", "x 0xffff00000000",
             "x $nosuch", "disas 0xffffffffffff0000", "delete 42", "delete x", "regs now",
             "cores please", "continue now", "next 3", "bt deeper", "msgs 3", "help nosuch",
             "x 1 2 3", "disas 1 2 3", "break a b c d", "?", "!ls", "step 1_000_0000_0"]


def test_every_mistake_is_one_line_and_never_a_traceback():
    session = Session()
    for line in BAD_LINES:
        output = session.run(line)
        assert "Traceback" not in output and "internal error" not in output, (line, output)
        if line not in ("break", "?"):
            assert output.startswith("*** ") and output.count("\n") == 1, (line, output)
    assert not session.shell.onecmd("core 0"), "a mistake must not end the session"


# --- scripts, determinism, fuzz ------------------------------------------------------------
SCRIPT = """\
# a lab's script: comments and blank lines are skipped

break ap_entry core 2
continue
core 2
step 10
regs
break print_u64 core 2
continue
bt
x $rsp 32
disas
watch 0x80011ffff8
continue
continue
cores
msgs
quit
"""


def test_the_same_script_run_twice_prints_the_same_bytes(tmp_path, capsys):
    script = tmp_path / "lab.txt"
    script.write_text(SCRIPT)
    outputs = []
    for _ in range(2):
        assert cli.main(["debug", "--script", str(script)]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert "(sprat) step 10" in outputs[0] and "core 2 hit breakpoint 2" in outputs[0]
    assert "object at 0x" not in outputs[0], "no host addresses in the output"


def test_a_missing_script_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["debug", "--script", str(tmp_path / "none.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sprat: error: ") and "none.txt: no such debugger script" in err


def test_a_script_whose_run_ends_in_a_failure_exits_1_as_boot_does(tmp_path, capsys):
    # caps.lst's program is killed for touching the page it unmapped: the
    # first continue stops at the fault, the second runs to the failed end.
    script = tmp_path / "to_the_end.txt"
    script.write_text("continue\ncontinue\n")
    image = str(ROOT / "images/caps.lst")
    assert cli.main(["debug", image, "--cores", "1", "--script", str(script)]) == 1, \
        "a script that drove the run to a failed end should exit 1"
    err = capsys.readouterr().err
    assert err.startswith("sprat: the run failed: ") and err.count("\n") == 1, \
        f"one line should say the run failed: {err!r}"
    assert "1 program failed" in err, err
    assert cli.main(["debug", image, "--cores", "1", "--script", str(script),
                     "--expect-failures"]) == 0, \
        "--expect-failures: a killed program does not fail the run, as with sprat boot"


def test_a_script_that_leaves_the_run_before_its_end_exits_0(tmp_path, capsys):
    # Lab replays stop where a mistake shows: the run has no outcome yet.
    script = tmp_path / "fault.txt"
    script.write_text("continue\n")          # stops at the fault, before the kill
    assert cli.main(["debug", str(ROOT / "images/caps.lst"), "--cores", "1",
                     "--script", str(script)]) == 0
    assert capsys.readouterr().err == ""



@pytest.mark.parametrize("leaving", ["quit\n", "", "frob\n", "frob\nquit\n"],
                         ids=["quit", "ctrl-d", "a-mistake-then-ctrl-d", "a-mistake-then-quit"])
def test_the_prompt_exits_1_after_a_failed_run_as_a_script_does(tmp_path, capsys, monkeypatch,
                                                                leaving):
    # At the prompt, not --script: whether the session ends with quit or
    # Ctrl-D, and whatever the last command typed, the exit says how the run
    # ended (caps.lst's program is killed at the second continue).
    monkeypatch.setattr("sys.stdin", io.StringIO("continue\ncontinue\n" + leaving))
    status = cli.main(["debug", str(ROOT / "images/caps.lst"), "--cores", "1"])
    err = capsys.readouterr().err
    assert status == 1, f"the prompt exited {status} after driving the run to a failed end"
    assert err.startswith("sprat: the run failed: ") and err.count("\n") == 1, \
        f"one line should say the run failed: {err!r}"


@pytest.mark.parametrize("leaving", ["quit\n", "frob\n"], ids=["quit", "a-mistake-then-ctrl-d"])
def test_the_prompt_exits_0_after_a_clean_run_even_after_a_mistyped_command(
        capsys, monkeypatch, leaving):
    monkeypatch.setattr("sys.stdin", io.StringIO("continue\n" + leaving))
    assert cli.main(["debug", "--cores", "2"]) == 0, \
        "a run that ended cleanly should exit 0, whatever the last command typed"
    out = capsys.readouterr().out
    assert "every core halted cleanly" in out, out[-500:]


FUZZ_LINES = 3000
FUZZ_LINES_PER_BOOT = 500
FUZZ_SEED = 4
FUZZ_TIME_LIMIT_S = 60
FUZZ_WORDS = ["cores", "core", "step", "s", "stepi", "next", "continue", "break", "b", "watch",
              "delete", "regs", "x", "disas", "bt", "msgs", "help", "frob", "", "?"]
FUZZ_ARGS = ["0", "1", "3", "7", "-1", "0x200000", "syscall_entry", "start", "start+4", "$rsp",
             "$rip+8", "$zz", "core", "2", "0xffffffffffffffff", "1e3", "+", "\x00", "é", "''",
             "print_u64", "99999999999999999999", "0x80011ffff8", "16", "4096", "4097"]


def test_random_lines_at_the_prompt_never_end_the_session():
    rng = random.Random(FUZZ_SEED)
    started = time.monotonic()
    for number in range(FUZZ_LINES):
        if number % FUZZ_LINES_PER_BOOT == 0:       # a fresh machine now and then
            session = Session(max_cycles=2_000_000)
        words = [rng.choice(FUZZ_WORDS)] + [rng.choice(FUZZ_ARGS)
                                            for _ in range(rng.randrange(0, 4))]
        if words[0] in ("continue", "next") and rng.random() < 0.8:
            words[0] = "step"           # keep the run long enough to be interesting
        line = " ".join(words)
        output = session.run(line)
        assert "internal error" not in output and "Traceback" not in output, (line, output)
    assert time.monotonic() - started < FUZZ_TIME_LIMIT_S


# --- the engine on its own ------------------------------------------------------------------
def test_request_interrupt_stops_an_endless_resume(tmp_path):
    import threading
    image = write_image(tmp_path, {"forever": "start:\n    jmp start\n"})
    machine = boot_image(image, cores=2).machine
    engine = DebugEngine(machine)      # no cycle budget: it would spin for a long time
    result = {}
    worker = threading.Thread(target=lambda: result.update(event=engine.resume()))
    worker.start()
    time.sleep(0.2)
    engine.request_interrupt()
    worker.join(10)
    assert not worker.is_alive(), "resume ignored request_interrupt"
    assert result["event"].reason == "interrupt"


def test_engine_refuses_what_it_cannot_do():
    from emulator.debug.target import TargetError
    engine = DebugEngine(boot_image(DEFAULT_IMAGE, cores=2).machine)
    with pytest.raises(TargetError):
        engine.read_memory(5, 0, 1)
    with pytest.raises(TargetError):
        engine.write_register(0, "cs", 0x2b)
    with pytest.raises(TargetError):
        engine.read_memory(0, 0x4000_0000_0000, 8)
    with pytest.raises(TargetError):
        engine.add_watchpoint(0x1000, 1 << 30)


def test_closing_the_engine_leaves_a_run_identical_to_an_undebugged_one():
    plain = boot_image(DEFAULT_IMAGE, cores=4).machine
    plain_result = plain.run(max_cycles=10**7)
    debugged = boot_image(DEFAULT_IMAGE, cores=4).machine
    engine = DebugEngine(debugged)
    engine.add_breakpoint(0x200000)
    engine.add_watchpoint(0x9000, 8)
    engine.close()
    result = debugged.run(max_cycles=10**7)
    assert result == plain_result
    assert [c.stats for c in debugged.cores] == [c.stats for c in plain.cores]


def test_a_spawned_program_has_its_symbols_on_the_core_it_runs_on(tmp_path, capsys):
    from sprat import cli
    script = tmp_path / "spawned.txt"
    script.write_text("break urpc_send core 2\ncontinue\nbt\n")
    assert cli.main(["debug", str(ROOT / "images/spawn.lst"), "--script", str(script)]) == 0
    out = capsys.readouterr().out
    assert "no symbol" not in out
    assert "core 2 hit breakpoint 1" in out
    assert "<start+180> userland/spawn_child.S:" in out


def hits_of(engine, run, limit=1000):
    """(core, its pc, its cycles) at each stop of `run` until the end."""
    hits = []
    for _ in range(limit):
        event = run()
        if event.reason == 'exited':
            return hits
        core = engine.machine.cores[event.core]
        hits.append((event.core, core.rip, core.cycles))
    raise AssertionError(f'the run did not end within {limit} stops')


def test_non_stop_slices_stop_at_the_same_breakpoint_hits_as_a_whole_run():
    # gdb's non-stop mode runs the machine in slices of a few quanta
    # (engine.run_slice); where each core stops must not depend on where
    # the slices fall, nor a breakpoint be skipped at a slice boundary.
    def engine():
        system = boot_image(ROOT / "images" / "default.lst", cores=4)
        debug = DebugEngine(system.machine)
        debug.add_breakpoint(system.kernel.symbols["syscall_entry"])
        return debug

    whole = engine()
    expected = hits_of(whole, whole.resume)
    sliced = engine()

    stopped = []

    def run_in_slices():
        for core in stopped:        # continuing from a stop moves on, as resume does
            sliced.release(core)
        while (event := sliced.run_slice(1)) is None:
            pass
        stopped[:] = [event.core]
        return event
    assert hits_of(sliced, run_in_slices) == expected and len(expected) > 4


def test_run_slice_passes_over_held_cores_and_a_released_core_moves_on():
    system = boot_image(ROOT / "images" / "default.lst", cores=2)
    engine = DebugEngine(system.machine)
    engine.add_breakpoint(system.kernel.symbols["syscall_entry"])
    event = engine.resume()
    engine.held.add(event.core)
    held = system.machine.cores[event.core]
    before = (held.rip, held.cycles)
    for _ in range(5):
        engine.run_slice(2)
        assert (held.rip, held.cycles) == before, 'a held core must not move'
    engine.release(event.core)
    while (stop := engine.run_slice(2)) is None or stop.core != event.core:
        pass
    assert held.cycles > before[1], 'released, the core should run on past its breakpoint'
