"""Real gdb against `sprat debug --gdb` and `sprat boot --gdb`, and noise against the stub.

gdb runs in batch mode against a sprat process; what gdb prints is then
checked against the same session replayed in-process on the debug engine
(the machine is deterministic, so the replay holds what the process held).
Skipped only if gdb is not installed.
"""

import random
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from cpudriver import layout
from emulator.debug.engine import DebugEngine
from emulator.debug.gdbstub import GdbServer, frame
from kernel.boot import boot_image

from conftest import ROOT
from test_gdbstub import Client, _drain, fuzz_stream

GDB = shutil.which("gdb")
TIMEOUT_S = 60
CORES = 4
DEFAULT_IMAGE = ROOT / "images" / "default.lst"

needs_gdb = pytest.mark.skipif(GDB is None, reason="gdb is not installed (apt-get install gdb)")


class SpratProcess:
    """`python -m sprat ARGS...` that serves gdb; knows the port it printed."""

    def __init__(self, *args):
        self.process = subprocess.Popen([sys.executable, "-m", "sprat", *args, "--gdb", "0"],
                                        cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        line = self.process.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, f"sprat did not say where it listens: {line!r}"
        self.port = int(match.group(1))

    def gdb(self, *commands) -> str:
        line = [GDB, "-nx", "-batch", "-ex", "set architecture i386:x86-64",
                "-ex", f"target remote 127.0.0.1:{self.port}"]
        for command in commands:
            line += ["-ex", command]
        done = subprocess.run(line, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S)
        assert done.returncode == 0, f"gdb failed:\n{done.stdout}"
        return done.stdout

    def finish(self) -> tuple[int, str]:
        output, _ = self.process.communicate(timeout=TIMEOUT_S)
        return self.process.returncode, output

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def sprat_debug():
    process = SpratProcess("debug", "--cores", str(CORES))
    yield process
    process.kill()


def replay_to_breakpoint(symbol):
    """In-process: the same image, a breakpoint, continue, one step of that core."""
    system = boot_image(DEFAULT_IMAGE, cores=CORES)
    engine = DebugEngine(system.machine)
    engine.add_breakpoint(system.kernel.symbols[symbol])
    event = engine.resume()
    engine.step(event.core)
    return system, engine, event.core


@needs_gdb
def test_gdb_lists_cores_breaks_steps_and_reads_what_the_emulator_holds(sprat_debug):
    system, engine, core = replay_to_breakpoint("syscall_entry")
    entry = system.kernel.symbols["syscall_entry"]
    output = sprat_debug.gdb(
        "info threads", f"break *{entry:#x}", "continue", "stepi",
        "info registers rip rsp", "x/1xg $rsp", "thread 2", "info registers rip", "detach")

    threads = re.findall(r"^\*?\s+(\d+)\s+Thread \d+ \(core (\d+) \w+, ring \d\)", output, re.M)
    assert [t[0] for t in threads] == ["1", "2", "3", "4"], f"one thread per core:\n{output}"
    assert f"hit Breakpoint 1, {entry:#018x}" in output, output
    registers = engine.read_registers(core)
    rips = re.findall(r"^rip\s+(0x[0-9a-f]+)", output, re.M)
    assert rips[0] == hex(registers["rip"]), "stepi: gdb's rip is not the emulator's"
    assert re.search(rf"^rsp\s+{registers['rsp']:#x}", output, re.M)
    # (one word: rsp is the stack's last word, and above the stack is the
    # channel window, where this program holds no channel)
    word = engine.read_memory(core, registers["rsp"], 8)
    shown = re.search(r"^0x[0-9a-f]+:\s+(0x[0-9a-f]+)", output, re.M)
    assert int(shown.group(1), 16) == int.from_bytes(word, "little")
    assert rips[1] == hex(engine.read_registers(1)["rip"]), "thread 2 is core 1"
    assert "[Inferior 1 (Remote target) detached]" in output
    code, printed = sprat_debug.finish()
    assert code == 0 and "gdb session ended (detach)" in printed


@needs_gdb
def test_gdb_write_watchpoint_on_a_user_stack_then_kill(sprat_debug):
    slot = layout.stack_top(0) - 8      # the first word the image's one program pushes
    program = range(layout.program_base(0), layout.program_base(0) + layout.PROGRAM_SPAN)
    output = sprat_debug.gdb(f"watch *(long*){slot:#x}", "continue", "info registers rip", "kill")
    assert f"Hardware watchpoint 1: *(long*){slot:#x}" in output
    assert re.search(r"Thread \d+ hit Hardware watchpoint 1", output), output
    # The store was a call's push: it holds the return address into the program.
    new_value = int(re.search(r"New value = (\d+)", output).group(1))
    assert new_value in program, "the pushed word is not a return address into the program"
    rip = re.search(r"^rip\s+(0x[0-9a-f]+)\s", output, re.M)
    assert rip and int(rip.group(1), 16) in program, "stopped in user code"
    code, printed = sprat_debug.finish()
    assert code == 0 and "gdb session ended (kill)" in printed


@needs_gdb
def test_sprat_boot_with_gdb_runs_on_after_detach():
    process = SpratProcess("boot", "--cores", "2")
    try:
        output = process.gdb("break *0x200000", "info threads", "detach")
        assert "Thread 2 (core 1" in output
        code, printed = process.finish()
        assert code == 0, printed
        assert "[core 1] hello from core 1 of 2" in printed
        assert "every core halted cleanly" in printed
    finally:
        process.kill()


# --- noise ---------------------------------------------------------------------------
def test_fuzzed_packets_never_break_the_stub_on_the_real_machine(caplog):
    system = boot_image(DEFAULT_IMAGE, cores=2)
    engine = DebugEngine(system.machine, max_cycles=300_000)
    server = GdbServer(engine)
    result = {}
    worker = threading.Thread(target=lambda: result.update(ended=server.serve_one()),
                              daemon=True)
    worker.start()
    client = Client(server.port)
    client.sock.settimeout(None)
    received = bytearray()
    reader = threading.Thread(target=_drain, args=(client.sock, received), daemon=True)
    reader.start()
    rng = random.Random(11)
    stream = fuzz_stream(rng)
    started = time.monotonic()
    at = 0
    while at < len(stream):
        size = rng.randrange(1, 200)
        client.send_raw(stream[at:at + size])
        at += size
    client.send_raw(frame("?") + frame("D"))
    worker.join(TIMEOUT_S)
    try:
        assert not worker.is_alive(), "the stub stopped answering the real machine"
        assert result.get("ended") == "detach"
        reader.join(TIMEOUT_S)
        replies = re.findall(rb"\$([^#$]*)#[0-9a-f]{2}", bytes(received))
        assert len(replies) > 1000
        errors = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
        assert not errors, f"the engine failed on fuzzed input: {errors[:3]}"
        assert time.monotonic() - started < TIMEOUT_S
    finally:
        client.close()
        server.close()
