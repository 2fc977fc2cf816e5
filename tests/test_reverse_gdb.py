"""Reverse execution through real gdb: `reverse-stepi` and `reverse-continue`
become the remote protocol's `bs` and `bc` (emulator/debug/gdbstub.py)."""

import re
import shutil
import subprocess
import threading

import capstone
import pytest

from cpudriver import layout

from emulator import sources
from emulator.debug.gdbstub import GdbServer
from kernel.boot import boot_image
from sprat.debug import attach

from conftest import ROOT, control_word_first_workspace
from test_reverse import SLOT_SIZE, SLOTS

GDB = shutil.which("gdb")
TIMEOUT_S = 120

pytestmark = pytest.mark.skipif(GDB is None, reason="gdb is not installed (apt-get install gdb)")


def gdb_session(engine, *commands) -> str:
    """Serve `engine` on a thread and run `gdb -batch` with these commands."""
    server = GdbServer(engine)
    thread = threading.Thread(target=server.serve_one, daemon=True)
    thread.start()
    line = [GDB, "-nx", "-batch", "-ex", "set architecture i386:x86-64",
            "-ex", f"target remote 127.0.0.1:{server.port}"]
    for command in commands:
        line += ["-ex", command]
    try:
        done = subprocess.run(line, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S)
    finally:
        server.close()
        thread.join(TIMEOUT_S)
    assert done.returncode == 0, f"gdb failed:\n{done.stdout}"
    return done.stdout


def rips(output) -> list[int]:
    return [int(rip, 16) for rip in re.findall(r"^rip\s+(0x[0-9a-f]+)", output, re.M)]


def test_gdb_reverse_stepi_and_reverse_continue_go_back_exactly():
    system = boot_image(ROOT / "images" / "default.lst", cores=4)
    engine = attach(system).engine
    entry = system.kernel.symbols["syscall_entry"]
    output = gdb_session(engine, f"break *{entry:#x}", "continue", "stepi", "info registers rip",
                         "stepi", "reverse-stepi", "info registers rip",
                         "reverse-continue", "info registers rip",
                         "reverse-continue", "info registers rip", "detach")
    after_one, back_one, at_break, at_start = rips(output)
    assert back_one == after_one, f"reverse-stepi did not undo the second stepi:\n{output}"
    assert at_break == entry, f"reverse-continue did not go back to the breakpoint:\n{output}"
    assert "No more reverse-execution history" in output, output
    assert at_start == layout.KERNEL_BASE, "the start of history is not the first instruction"


def test_gdb_reverse_continue_from_a_wrong_message_lands_on_the_senders_store(tmp_path):
    image = control_word_first_workspace(tmp_path)
    sources.set_workspace(tmp_path)
    try:
        for seed in range(1, 11):
            system = boot_image(image, cores=2, seed=seed)
            engine = attach(system, max_cycles=10**7).engine
            receiver = system.programs_by_core()[1][0]
            wrong = receiver.symbols["receive_wrong"]
            event = engine.run_until(1, wrong)
            if event.reason == "breakpoint":
                break
        else:
            raise AssertionError("no seed of 1 to 10 made the receiver take a wrong message")
        regs = engine.read_registers(1)
        ring = int.from_bytes(engine.read_memory(1, regs["rsp"], 8), "little")
        payload = ring + (regs["r12"] % SLOTS) * SLOT_SIZE + 8 * regs["rcx"]
        sender = system.programs_by_core()[0][0]
        output = gdb_session(engine, f"watch *(long*){payload:#x}", "reverse-continue",
                             "info registers rip", "reverse-stepi", "stepi",
                             "info registers rip", "detach")
    finally:
        sources.set_workspace(None)
    assert re.search(r"Thread 1 hit Hardware watchpoint 1", output), output
    at_store, again = rips(output)
    store = next(capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64).disasm(
        engine.read_memory(0, at_store, 15), at_store, 1))
    text = f"{store.mnemonic} {store.op_str}"
    assert text.startswith("mov qword ptr [rdx"), f"not on the sender's payload store: {text}"
    assert sender.symbols["urpc_send"] <= at_store < sender.symbols["urpc_send_end"]
    assert again == at_store, "reverse-stepi then stepi did not come back to the store"


def test_gdb_reverse_stepi_steps_back_the_thread_gdb_shows_not_the_last_stopped():
    system = boot_image(ROOT / "images" / "default.lst", cores=2)
    engine = attach(system).engine
    entry = system.kernel.symbols["syscall_entry"]
    output = gdb_session(engine, f"break *{entry:#x}", "continue", "delete",
                         "thread 2", "stepi", "info registers rip", "stepi",
                         "thread 1", "stepi",                   # the last stop is thread 1's
                         "thread 2", "reverse-stepi", "info registers rip", "detach")
    after_first, back = rips(output)
    assert back == after_first, \
        f"reverse-stepi on thread 2 should undo core 1's second stepi:\n{output}"
    assert "Thread 1 received signal SIGTRAP" not in output, \
        f"reverse-stepi on thread 2 moved thread 1 instead:\n{output}"


def test_gdb_reverse_stepi_at_the_start_of_history_says_there_is_no_more():
    system = boot_image(ROOT / "images" / "default.lst", cores=2)
    engine = attach(system).engine
    output = gdb_session(engine, "reverse-stepi", "info registers rip", "detach")
    assert "No more reverse-execution history" in output, \
        f"reverse-stepi before anything ran should say the history begins here:\n{output}"
    assert rips(output) == [layout.KERNEL_BASE], output
