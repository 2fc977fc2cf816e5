"""Reverse execution in `sprat debug` (emulator/debug/timetravel.py): back to
the previous hit, one instruction back, and the same future run again."""

import io
import re

from unicorn import x86_const as x86

from emulator import checkpoint, sources
from kernel.boot import boot_image
from sprat.debug import DebugShell, attach
from conftest import ROOT, control_word_first_workspace

SLOTS, SLOT_SIZE = 16, 64                 # userland/lib/urpc.S


class Session:
    def __init__(self, image, cores, seed=None):
        self.out = io.StringIO()
        self.system = boot_image(image, cores=cores, seed=seed,
                                 output=lambda core, line: self.out.write(f"[core {core}] {line}\n"))
        self.debuggee = attach(self.system, max_cycles=10**7)
        self.shell = DebugShell(self.debuggee, stdout=self.out)
        self.machine = self.system.machine
        self.engine = self.debuggee.engine

    def run(self, *lines) -> str:
        start = self.out.tell()
        for line in lines:
            self.shell.onecmd(line)
        return self.out.getvalue()[start:]

    def register(self, core, name):
        return self.machine.cores[core].regs.read(getattr(x86, f"UC_X86_REG_{name}"))


def test_reverse_continue_from_a_wrong_message_lands_on_the_senders_store(tmp_path):
    image = control_word_first_workspace(tmp_path)
    sources.set_workspace(tmp_path)
    try:
        for seed in range(1, 11):
            session = Session(image, cores=2, seed=seed)
            stopped = session.run("break receive_wrong core 1", "continue")
            if "hit breakpoint 1" in stopped:
                break
        else:
            raise AssertionError("no seed of 1 to 10 made the receiver take a wrong message")
        # The receiver holds message r12; word rcx of it was wrong. Its end
        # (at rsp) names the ring.
        seq, word = session.register(1, "R12"), session.register(1, "RCX")
        rsp = session.register(1, "RSP")
        ring = int.from_bytes(session.engine.read_memory(1, rsp, 8), "little")
        payload = ring + (seq % SLOTS) * SLOT_SIZE + 8 * word
        session.run(f"watch {payload:#x} 8")
        back = session.run("reverse-continue")
    finally:
        sources.set_workspace(None)
    assert f"core 0 is about to store to watchpoint 2 at {payload:#x}" in back, back
    where = back.splitlines()[-1]
    assert re.match(r"core 0 ring 3 0x[0-9a-f]+ <urpc_send\w*\+\d+> \S*userland/lib/urpc.S:\d+"
                    r"  mov qword ptr \[rdx", where), f"not at the sender's store: {where}"
    # Going forward again makes the store the watchpoint sees.
    forward = session.run("continue")
    assert "core 0 wrote to watchpoint 2" in forward, forward


def test_reverse_stepi_undoes_exactly_one_instruction():
    session = Session(ROOT / "images" / "default.lst", cores=2)
    session.run("step 500")
    before = checkpoint.fingerprint(session.machine)
    session.run("step")
    assert checkpoint.fingerprint(session.machine) != before
    session.run("reverse-stepi")
    assert checkpoint.fingerprint(session.machine) == before, \
        "reverse-stepi did not bring the machine back to before the step"


def test_reverse_continue_without_a_hit_goes_back_to_the_start_and_the_run_repeats():
    session = Session(ROOT / "images" / "twophase.lst", cores=4)
    start = checkpoint.fingerprint(session.machine)
    first = session.run("continue")
    end = checkpoint.fingerprint(session.machine)
    assert "the run is over" in first
    back = session.run("reverse-continue")
    assert "at the start of the recorded history" in back
    assert checkpoint.fingerprint(session.machine) == start
    again = session.run("continue")
    assert again == first, "the run after going back printed something else"
    assert checkpoint.fingerprint(session.machine) == end


def test_reverse_continue_stops_at_the_previous_breakpoint_hit():
    session = Session(ROOT / "images" / "twophase.lst", cores=4)
    session.run("break syscall_entry")
    hits = []
    for _ in range(3):
        session.run("continue")
        hits.append(checkpoint.fingerprint(session.machine))
    back = session.run("reverse-continue")
    assert "hit breakpoint 1 (going backwards)" in back, back
    assert checkpoint.fingerprint(session.machine) == hits[1], \
        "reverse-continue did not land on the previous hit"
    session.run("reverse-continue")
    assert checkpoint.fingerprint(session.machine) == hits[0]


def test_a_register_changed_from_the_debugger_survives_going_back_past_it():
    session = Session(ROOT / "images" / "default.lst", cores=2)
    session.run("step 300")
    session.engine.write_register(0, "rbx", 0x1234_5678)
    session.run("step 50")
    after = checkpoint.fingerprint(session.machine)
    session.run("reverse-stepi 20", "step 20")
    assert checkpoint.fingerprint(session.machine) == after, \
        "replaying across a register the debugger wrote lost the write"
