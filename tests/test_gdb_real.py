"""The GDB stub against the real gdb: what a student will actually type.

The first tests serve a FakeTarget (emulator/debug/target.py) on a background
thread and run `gdb -batch` against it with a list of commands, then read
gdb's output; the next ones run `sprat debug IMAGE --gdb` (and `sprat boot
--gdb`) on a real image and gdb with the script it writes (symbols, source
lines, the end); the last ones drive gdb in non-stop mode through a pipe
(`InteractiveGdb`), as docs/gdb.md shows it. Every wait has a timeout, so a stub that stops answering
fails the test instead of hanging it. Without gdb they fail: they never skip.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from emulator.debug.gdbstub import GdbServer
from emulator.debug.target import FakeTarget

GDB = shutil.which('gdb') or '/usr/bin/gdb'
GDB_TIMEOUT_S = 60
TREE = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def gdb_is_installed():
    """Every test here drives the real gdb: without it they fail, they do not
    skip (.ci/run installs it), so a machine without gdb cannot pass them."""
    assert shutil.which(GDB), f'gdb is not installed (no {GDB}): apt-get install gdb'


DATA_ADDR = 0x2000
DATA = bytes.fromhex('deadbeef')
NCORES = 4


class Served:
    """A FakeTarget served for exactly one gdb session on a thread."""

    def __init__(self, target: FakeTarget) -> None:
        self.target = target
        self.server = GdbServer(target)
        self.result: dict = {}
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.result['ended'] = self.server.serve_one()
        except BaseException as error:
            self.result['error'] = error

    def gdb_command(self, *commands: str) -> list[str]:
        line = [GDB, '-nx', '-batch', '-ex', 'set architecture i386:x86-64',
                '-ex', f'target remote 127.0.0.1:{self.server.port}']
        for command in commands:
            line += ['-ex', command]
        return line

    def run_gdb(self, *commands: str) -> str:
        done = subprocess.run(self.gdb_command(*commands), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=GDB_TIMEOUT_S)
        assert done.returncode == 0, f'gdb failed:\n{done.stdout}'
        return done.stdout

    def ended(self) -> str:
        self.thread.join(GDB_TIMEOUT_S)
        assert not self.thread.is_alive(), 'the stub is still serving after gdb left'
        assert 'error' not in self.result, f'the stub raised {self.result.get("error")!r}'
        return self.result['ended']

    def close(self) -> None:
        self.server.close()
        self.thread.join(GDB_TIMEOUT_S)


@pytest.fixture
def served():
    target = FakeTarget(ncores=NCORES)
    target.write_memory(0, DATA_ADDR, DATA)
    served = Served(target)
    yield served
    served.close()


def test_gdb_sees_cores_registers_memory_and_stops_at_a_breakpoint(served):
    core1_rip = served.target.regs[1]['rip']
    output = served.run_gdb(
        'info threads', 'thread 2', 'info registers rip', f'x/4xb {DATA_ADDR:#x}',
        f'break *{core1_rip + 5:#x}', 'continue', 'stepi', 'info registers rip', 'detach')

    threads = re.findall(r'^\*?\s+(\d+)\s+Thread (\d+) \(core (\d+) ring (\d)\)', output, re.M)
    assert [t[0] for t in threads] == [str(n + 1) for n in range(NCORES)], \
        f'gdb should list one thread per core:\n{output}'
    assert threads[0][2:] == ('0', '0') and threads[2][2:] == ('2', '3')

    rips = re.findall(r'^rip\s+(0x[0-9a-f]+)', output, re.M)
    assert rips[0] == hex(core1_rip), f'thread 2 should show core 1 rip:\n{output}'
    assert re.search(r'0x2000:\s+0xde\s+0xad\s+0xbe\s+0xef', output), \
        f'x/4xb should show the fake memory:\n{output}'
    assert f'Thread 2 hit Breakpoint 1, 0x{core1_rip + 5:016x}' in output, \
        f'the breakpoint stop was not reported:\n{output}'
    assert rips[1] == hex(core1_rip + 6), f'stepi should move one instruction:\n{output}'
    assert served.target.regs[1]['rip'] == core1_rip + 6

    assert '[Inferior 1 (Remote target) detached]' in output
    assert served.ended() == 'detach'
    assert served.target.breakpoints == set(), 'detach must leave no breakpoint behind'


def test_gdb_writes_registers_and_memory_and_catches_a_watchpoint(served):
    target = served.target
    target.memory[2] = FakeTarget.STORE          # core 0: nop, nop, store
    target.regs[0].update(rdi=0x3000, rax=0x42)
    output = served.run_gdb(
        'watch *(char*)0x3000', 'continue', 'delete',
        'thread 3', 'set $rbx = 0x1234', f'set {{int}}{DATA_ADDR:#x} = 0x11223344',
        'p $cr3', 'p $st0', 'info registers eflags', 'kill')
    assert 'Thread 1 hit Hardware watchpoint 1: *(char*)0x3000' in output, output
    assert "New value = 66 'B'" in output
    assert target.regs[2]['rbx'] == 0x1234
    assert target.read_memory(0, DATA_ADDR, 4) == bytes.fromhex('44332211')
    assert '= <unavailable>' in output, 'x87 registers are declared but not modelled'
    assert re.search(r'eflags\s+0x202\s+\[ IF \]', output)
    assert served.ended() == 'kill' and target.killed


def test_gdb_scheduler_locking_runs_only_the_selected_thread(served):
    core0_rip, core1_rip = served.target.regs[0]['rip'], served.target.regs[1]['rip']
    output = served.run_gdb(
        f'break *{core0_rip + 2:#x}', f'break *{core1_rip + 16:#x}',
        'set scheduler-locking on', 'thread 2', 'continue', 'detach')
    assert 'Thread 2 hit Breakpoint 2' in output, \
        f'continue with scheduler-locking on should run thread 2 alone to its breakpoint:\n{output}'
    assert served.target.regs[0]['rip'] == core0_rip, \
        'core 0 (thread 1) ran although scheduler-locking held it'
    assert served.ended() == 'detach'


class SignallingTarget(FakeTarget):
    """A FakeTarget that says when resume() has started."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.running = threading.Event()

    def resume(self, only=None):
        self.running.set()
        return super().resume(only)


def test_gdb_ctrl_c_interrupts_a_running_machine():
    target = SignallingTarget(ncores=2, max_ticks=None)
    for core in range(2):  # `jmp $` on every core: runs until interrupted
        target.write_memory(0, target.regs[core]['rip'], b'\xeb\xfe')
    served = Served(target)
    try:
        gdb = subprocess.Popen(served.gdb_command('continue', 'info threads', 'detach'),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        try:
            assert target.running.wait(GDB_TIMEOUT_S), 'gdb never resumed the machine'
            gdb.send_signal(signal.SIGINT)   # what Ctrl-C at the terminal does
            output, _ = gdb.communicate(timeout=GDB_TIMEOUT_S)
        finally:
            gdb.kill()
        assert 'received signal SIGINT' in output, output
        assert served.ended() == 'detach'
    finally:
        served.close()


# -- sprat debug --gdb on a real image: symbols, source lines, the end ------------

SPRAT = [sys.executable, '-m', 'sprat']


class SpratGdb:
    """`sprat debug IMAGE --gdb 0 --gdb-files DIR` (or `sprat boot ...`)
    running, its script written."""

    def __init__(self, tmp_path, image: str, *options: str, command: str = 'debug',
                 cwd=TREE, env=None) -> None:
        self.files = tmp_path / 'gdb'
        self.script = self.files / 'sprat.gdb'
        self.sprat = subprocess.Popen(
            [*SPRAT, command, image, *options, '--gdb', '0', '--gdb-files', str(self.files)],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        # The script is written once the port is listening: wait for it (or
        # for sprat to give up), within the bound every wait here has.
        deadline = time.monotonic() + GDB_TIMEOUT_S
        while not self.script.exists() and self.sprat.poll() is None:
            assert time.monotonic() < deadline, 'sprat debug --gdb never wrote its gdb script'
            time.sleep(0.05)
        assert self.script.exists(), f'sprat debug --gdb failed:\n{self.sprat.stdout.read()}'

    def run_gdb(self, *commands: str) -> str:
        line = [GDB, '-nx', '-batch', '-x', str(self.script)]
        for command in commands:
            line += ['-ex', command]
        done = subprocess.run(line, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=GDB_TIMEOUT_S)
        assert done.returncode == 0, f'gdb failed:\n{done.stdout}'
        return done.stdout

    def finish(self) -> tuple[int, str]:
        output, _ = self.sprat.communicate(timeout=GDB_TIMEOUT_S)
        return self.sprat.returncode, output

    def close(self) -> None:
        if self.sprat.poll() is None:
            self.sprat.kill()
            self.sprat.communicate()


@pytest.fixture
def spawn_under_gdb(tmp_path):
    session = SpratGdb(tmp_path, 'images/spawn.lst', '--cores', '3')
    yield session
    session.close()


def test_gdb_breaks_by_name_in_a_spawned_program_and_steps_its_source(spawn_under_gdb):
    output = spawn_under_gdb.run_gdb(
        'break urpc_send thread 3', 'continue', 'bt', 'list',
        'info line *$pc', 'next', 'next', 'step', 'info threads', 'monitor cycles',
        'monitor cores', 'monitor msgs', 'monitor help')

    assert re.search(r'Thread 3 hit Breakpoint 1\.\d, urpc_send \(\) at userland/lib/urpc\.S:\d+',
                     output), f'the break on urpc_send should stop core 2 (thread 3):\n{output}'
    assert re.search(r'#1\s+0x[0-9a-f]+ in start \(\) at userland/spawn_child\.S:\d+', output), \
        f'bt should name the caller and its file:line:\n{output}'
    assert not re.search(r'^#2', output, re.M), \
        f'bt should end at the program\'s start, which nothing called:\n{output}'
    assert re.search(r'^\d+\s+urpc_send:$', output, re.M), \
        f'list should show urpc_send\'s source:\n{output}'
    assert re.search(r'Line \d+ of "userland/lib/urpc\.S" starts at address 0x[0-9a-f]+ '
                     r'<urpc_send>', output), f'info line should place the pc:\n{output}'
    first = int(re.search(r'urpc\.S:(\d+)', output).group(1))
    stepped = [int(n) for n in re.findall(r'^(\d+)\t', output, re.M)]
    assert stepped[-3:] == [first + 1, first + 2, first + 3], \
        f'next, next, step should walk urpc_send line by line from {first}:\n{output}'
    assert re.search(r'Thread 3 \(core 2 running, ring 3, spawn_child\)', output), \
        f'info threads should name core 2\'s state and program:\n{output}'
    assert re.search(r'^core 2: [\d,]+ cycles', output, re.M), \
        f'monitor cycles should show each core\'s cycles:\n{output}'
    assert re.search(r'^\s+2\s+running\s+3\s+0x[0-9a-f]+\s+urpc_send', output, re.M), \
        f'monitor cores should show the cores as the sprat prompt does:\n{output}'
    assert re.search(r'^channel 20:', output, re.M), f'monitor msgs shows the messages:\n{output}'
    assert 'monitor cycles' in output, f'monitor help lists the commands:\n{output}'


def test_a_bad_monitor_command_is_one_line_of_sprats_own(spawn_under_gdb):
    output = spawn_under_gdb.run_gdb('monitor nonsense', 'monitor msgs 5', 'monitor cycles now',
                                     'info threads')
    assert "no monitor command 'nonsense': `monitor help` lists them" in output, output
    assert 'monitor msgs takes no arguments (`monitor help` lists the commands)' in output, \
        f'the message should point at gdb\'s monitor help, not the prompt\'s help:\n{output}'
    assert 'monitor cycles takes no arguments' in output and not re.search(
        r'^core 0: [\d,]+ cycles', output, re.M), \
        f'monitor cycles should refuse an argument, not ignore it:\n{output}'
    assert 'Protocol error' not in output, \
        f'a refused command should be sprat\'s line alone, without gdb\'s protocol error:\n{output}'
    assert 'Thread 1 (core 0' in output, f'gdb should go on after a refused command:\n{output}'


def test_gdb_names_each_cores_frame_in_its_own_program(spawn_under_gdb):
    # spawn.lst: the parent runs on core 0, the child it spawns on core 2, and
    # both link urpc_send. Every program has its own virtual base, so gdb holds
    # all their symbols at once: no command to switch between them.
    output = spawn_under_gdb.run_gdb('break urpc_send', 'continue', 'continue',
                                     'info symbol $pc', 'thread apply all bt')

    assert re.search(r'Breakpoint 1 at 0x[0-9a-f]+: urpc_send\. \(2 locations\)', output), \
        f'break urpc_send should find it in both programs:\n{output}'
    assert re.search(r'Thread 1 hit Breakpoint 1\.\d, urpc_send \(\)', output) and \
        re.search(r'Thread 3 hit Breakpoint 1\.\d, urpc_send \(\)', output), \
        f'the parent (core 0) and then the child (core 2) should stop in urpc_send:\n{output}'
    assert 'urpc_send in section .text.spawn_child' in output, \
        f'info symbol should name the child\'s urpc_send on core 2:\n{output}'
    threads = dict(re.findall(r'^Thread (\d+) \(.*?\):\n((?:#.*\n?)+)', output, re.M))
    assert re.search(r'in start \(\) at userland/spawn_child\.S:\d+', threads.get('3', '')), \
        f'core 2\'s backtrace should end in the child\'s start:\n{output}'
    assert re.search(r'in start \(\) at userland/spawn_parent\.S:\d+', threads.get('1', '')), \
        f'core 0\'s backtrace should end in the parent\'s start:\n{output}'


def backtraces(output: str) -> dict[str, list[str]]:
    """Each thread's frames as `thread apply all bt` prints them: number -> lines."""
    return {number: frames.splitlines() for number, frames in
            re.findall(r'^Thread (\d+) \(.*?\):\n((?:#.*\n?)+)', output, re.M)}


def test_gdb_bt_on_an_idle_core_ends_in_the_idle_loop(spawn_under_gdb):
    # Nothing called the idle loop (nor a core's first instruction): gdb
    # must not read the zero word at the top of its fresh stack as a caller.
    output = spawn_under_gdb.run_gdb('bt', 'break pick_next thread 2', 'continue', 'bt',
                                     'delete', 'continue', 'thread apply all bt')

    assert re.search(r'^#0\s+kernel_entry \(\) at cpudriver/boot\.S:\d+\n(?!#1)', output, re.M), \
        f'bt on core 0 before its first instruction should show kernel_entry alone:\n{output}'
    assert re.search(r'^#0\s+pick_next \(\) at cpudriver/dispatch\.S:\d+\n'
                     r'#1\s+0x[0-9a-f]+ in idle_wait \(\) at cpudriver/dispatch\.S:\d+\n(?!#2)',
                     output, re.M), \
        f'bt in a call from the idle loop (core 1) should end at the idle loop:\n{output}'
    frames = backtraces(output)
    assert sorted(frames) == ['1', '2', '3'], f'every core should have a backtrace:\n{output}'
    for thread, lines in frames.items():
        assert len(lines) == 1 and re.match(r'#0\s+idle_sleep \(\)', lines[0]), \
            f'bt on idle thread {thread} should be idle_sleep alone, not {lines}:\n{output}'
    assert not re.search(r'^#\d+\s+0x0+ in', output, re.M), \
        f'no backtrace should show a frame at address 0:\n{output}'


def test_gdb_bt_past_a_routines_pushes_names_its_real_callers(tmp_path):
    # Lab 5's stream: receive_next (in start's frame) calls take_one, which
    # jumps to kept_call; kept_call pushes nine registers and calls urpc_recv
    # through rax. gdb, guessing from prologues, read saved registers as
    # return addresses past those pushes; the symbol files' call-frame
    # information says where the return address is.
    source = (TREE / 'labs/05-urpc/programs/checked_stream.S').read_text().splitlines()
    take_one_called = source.index('    call take_one') + 1       # in receive_next
    rax_called = source.index('    call rax') + 1                 # in kept_call
    session = SpratGdb(tmp_path, 'labs/05-urpc/images/stream.lst', '--cores', '4')
    try:
        output = session.run_gdb('break urpc_recv thread 3', 'continue', 'bt',
                                 f'break checked_stream.S:{rax_called} thread 3', 'continue',
                                 'bt')
    finally:
        session.close()
    frames = re.findall(r'^(#\d+\s+.*)$', output, re.M)
    names = [re.search(r'(\w+|\?\?) \(\)', frame).group(1) for frame in frames]
    assert names == ['urpc_recv', 'kept_call', 'receive_next', 'kept_call', 'receive_next'], \
        f'bt in urpc_recv should show kept_call and then receive_next, where the call was ' \
        f'made, and end there (start\'s frame); inside kept_call, past its pushes, the ' \
        f'same:\n{output}'
    assert f'checked_stream.S:{take_one_called}' in frames[2] \
        and f'checked_stream.S:{rax_called}' in frames[1], \
        f'each caller should be named at the line of its call:\n{output}'


def test_gdb_is_told_why_the_machine_ended_and_can_still_look_at_it(spawn_under_gdb):
    output = spawn_under_gdb.run_gdb('continue', 'info registers rip', 'info threads',
                                     'continue')
    assert 'sprat: the machine has ended: every core halted cleanly' in output, \
        f'gdb should be told why the machine stopped:\n{output}'
    assert re.search(r'^rip\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <idle_sleep', output, re.M), \
        f'after the end the registers should still be there, with names:\n{output}'
    assert '[Inferior 1 (Remote target) exited normally]' in output, \
        f'continuing after the end should report the exit:\n{output}'
    status, printed = spawn_under_gdb.finish()
    assert status == 0, f'sprat debug --gdb should end well once gdb leaves:\n{printed}'


def test_gdb_read_and_access_watchpoints_stop_the_core_that_touches_the_word(spawn_under_gdb):
    output = spawn_under_gdb.run_gdb(
        'break urpc_send thread 3', 'continue', 'set $end = $rdi', 'delete',
        'rwatch *(long *)$end', 'continue', 'delete', 'awatch *(long *)($end + 8)',
        'continue')
    # The end is (ring, seq, acked): urpc_send loads the ring pointer, then
    # stores the next sequence number.
    assert re.search(r'Thread 3 hit Hardware read watchpoint 2: \*\(long \*\)\$end', output), \
        f'the load of the channel end\'s ring pointer should stop core 2:\n{output}'
    assert re.search(r'Thread 3 hit Hardware access \(read/write\) watchpoint 3: .*\n+'
                     r'Old value = 0\nNew value = 1', output), \
        f'the store of the next sequence number should stop core 2:\n{output}'


WAITER = """\
# Receives on a channel that nobody sends on: a deadlock, on purpose.
start:
    sub rsp, 128
    mov rdi, 30
    call urpc_channel
    mov rsi, rax
    mov rdi, rsp
    call urpc_init
    mov rdi, rsp
    lea rsi, [rsp + 32]
    call urpc_recv
    xor edi, edi
    call exit
.include "{tree}/userland/lib/urpc.S"
.include "{tree}/userland/lib/sprat.S"
"""


def test_gdb_is_told_of_a_deadlock_and_shows_where_the_core_waits(tmp_path):
    (tmp_path / 'waiter.S').write_text(WAITER.format(tree=TREE))
    image = tmp_path / 'deadlock.lst'
    image.write_text('kernel /cpudriver/cpudriver.S\nmodule waiter.S core=1 channels=30\n')
    session = SpratGdb(tmp_path, str(image), '--cores', '2')
    try:
        output = session.run_gdb('continue', 'thread 2', 'bt 1')
    finally:
        session.close()
    assert re.search(r'sprat: the machine has ended: core 1 waits at RIP 0x[0-9a-f]+ for a '
                     r'write to physical line 0x[0-9a-f]+ that no core will make', output), \
        f'gdb should be told that the machine is stuck, and why:\n{output}'
    assert 'received signal SIGABRT' in output, \
        f'a machine that ends stuck is a failure, not a clean stop:\n{output}'
    assert re.search(r'#0\s+.*urpc_recv_poll \(\) at \S*lib/urpc\.S:\d+', output), \
        f'the waiting core should still be there to look at, in urpc_recv:\n{output}'


def test_gdb_stepi_on_a_core_not_yet_started_ends_when_it_starts(spawn_under_gdb):
    # gdb lets the other threads run during a step (scheduler-locking off):
    # core 2 starts once core 0's program spawns the child there.
    output = spawn_under_gdb.run_gdb('thread 3', 'info registers rip', 'stepi',
                                     'info registers rip', 'info threads')
    rips = re.findall(r'^rip\s+(0x[0-9a-f]+)', output, re.M)
    assert rips[0] == '0x0' and rips[1] != '0x0', \
        f'stepi on an unstarted core should end where it starts, not where it was:\n{output}'
    assert re.search(r'Thread 3 \(core 2 running, ring 0\)', output), output
    # Core 0 may still be in its kernel, posting the spawn: from the moment
    # core 2 starts, core 0 waits to touch a channel until core 2 has.
    assert re.search(r'Thread 1 \(core 0 \w+, ring [03], spawn_parent\)', output), \
        f'core 0 should have run on to spawn the child meanwhile:\n{output}'


# -- non-stop mode: one core held at a breakpoint while another runs on ------------

class InteractiveGdb:
    """gdb reading its commands from a pipe, as from a terminal.

    `gdb -batch` runs its commands back to back without returning to its
    event loop, so it never takes the asynchronous stops of non-stop mode
    between them. Fed through stdin, gdb reads each command from its event
    loop, as at a terminal, and prints each stop as it comes. `run` sends a
    command and an `echo` after it, and returns what gdb printed up to that
    echo (and, if asked, until a pattern has appeared); every wait is bounded.
    """

    def __init__(self, *arguments: str) -> None:
        self.gdb = subprocess.Popen([GDB, '-nx', '-q', *arguments], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=0)
        self.printed: list[str] = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.commands = 0

    def _read(self) -> None:
        while chunk := self.gdb.stdout.read(1):
            with self.lock:
                self.printed.append(chunk)

    def text(self) -> str:
        with self.lock:
            return ''.join(self.printed)

    def run(self, command: str, until: str | None = None) -> str:
        start = len(self.text())
        self.commands += 1
        marker = f'@@ done {self.commands}'
        self.gdb.stdin.write(f'{command}\necho {marker}\\n\n')
        deadline = time.monotonic() + GDB_TIMEOUT_S
        while True:
            out = self.text()[start:]
            if marker in out and (until is None or re.search(until, out)):
                return out
            assert self.gdb.poll() is None, f'gdb ended during {command!r}:\n{self.text()}'
            assert time.monotonic() < deadline, \
                f'gdb never finished {command!r} (waited for {until!r}):\n{out}'
            time.sleep(0.02)

    def close(self) -> int:
        self.gdb.stdin.close()
        try:
            return self.gdb.wait(GDB_TIMEOUT_S)
        finally:
            if self.gdb.poll() is None:
                self.gdb.kill()
                self.gdb.wait()


# Counts in r13 on core 1 until r12 is set (by gdb), then exits: a core that
# keeps running for as long as the test needs, and no longer.
SPINNER = """\
start:
    xor r12d, r12d
spin:
    inc r13
    test r12, r12
    jz spin
    xor edi, edi
    call exit
.include "{tree}/userland/lib/sprat.S"
"""

SPAWN_AND_SPIN = """\
kernel /cpudriver/cpudriver.S
module /userland/spawn_parent.S core=0 child=1 on=2 channel=20 channels=20-21
module /userland/spawn_child.S nospawn
module spinner.S core=1
"""


def core_cycles(output: str) -> dict[int, int]:
    return {int(core): int(cycles.replace(',', '')) for core, cycles in
            re.findall(r'^core (\d+): ([\d,]+) cycles', output, re.M)}


def test_non_stop_gdb_holds_a_core_at_a_breakpoint_while_another_runs_on(tmp_path):
    # images/spawn.lst, and a spinning program on core 1: the spawned child
    # stops at urpc_send on core 2 while core 1 goes on counting.
    (tmp_path / 'spinner.S').write_text(SPINNER.format(tree=TREE))
    image = tmp_path / 'spawn_and_spin.lst'
    image.write_text(SPAWN_AND_SPIN)
    session = SpratGdb(tmp_path, str(image), '--cores', '3')
    gdb = InteractiveGdb('-ex', 'set non-stop on', '-x', str(session.script))
    try:
        gdb.run('break urpc_send thread 3')
        hit = gdb.run('continue &', until=r'hit Breakpoint 1')
        assert re.search(r'Thread 3 hit Breakpoint 1(\.\d+)?, urpc_send \(\) at userland/lib/urpc\.S:\d+',
                         hit), f'the spawned child on core 2 should stop at urpc_send:\n{hit}'

        threads = gdb.run('info threads')
        assert re.search(r'^\s+2\s+Thread 2 \(core 1 running, ring 3, spinner\)\s+\(running\)',
                         threads, re.M), f'core 1 should be running on:\n{threads}'
        assert re.search(r'^\s+3\s+Thread 3 \(core 2 .*\)\s+urpc_send \(\)', threads, re.M), \
            f'core 2 should be stopped at the breakpoint:\n{threads}'
        before = core_cycles(gdb.run('monitor cycles'))
        after = core_cycles(gdb.run('monitor cycles'))
        assert after[1] > before[1], \
            f'core 1 should run on while core 2 is stopped: cycles {before} then {after}'
        assert after[2] == before[2], \
            f'core 2, stopped at its breakpoint, should not move: cycles {before} then {after}'

        gdb.run('thread 2')
        stopped = gdb.run('interrupt', until=r'Thread 2 stopped')
        assert 'Thread 2 stopped.' in stopped, stopped
        # Let the spinner finish: core 1 alone runs on, core 2 stays at the breakpoint.
        gdb.run('set $r12 = 1')
        gdb.run('continue &')
        threads = gdb.run('info threads')
        assert re.search(r'^\s+3\s+Thread 3 \(core 2 .*\)\s+urpc_send \(\)', threads, re.M), \
            f'core 2 should stay at its breakpoint while core 1 runs:\n{threads}'

        gdb.run('thread 3')
        gdb.run('delete')
        every_core_stopped = ''.join(f'(?=.*Thread {n} stopped)' for n in (1, 2, 3))
        end = gdb.run('continue &', until=f'(?s){every_core_stopped}')
        assert end.count('sprat: the machine has ended: every core halted cleanly') == 1, \
            f'non-stop gdb should be told once why the machine stopped:\n{end}'
        threads = gdb.run('info threads')
        assert '(running)' not in threads and threads.count('idle_sleep ()') == 3, \
            f'at the end every core should be stopped, there to look at:\n{threads}'
        assert 'exited normally' in gdb.run('continue'), \
            'running the ended machine again should report its exit'
        assert gdb.close() == 0
        status, printed = session.finish()
    finally:
        gdb.close()
        session.close()
    assert status == 0, f'sprat debug --gdb should end well once gdb leaves:\n{printed}'
    assert '[core 0] parent: the child answered 42 from core 2' in printed, printed


def test_non_stop_gdb_is_told_of_a_deadlock_and_keeps_the_waiting_core(tmp_path):
    (tmp_path / 'waiter.S').write_text(WAITER.format(tree=TREE))
    image = tmp_path / 'deadlock.lst'
    image.write_text('kernel /cpudriver/cpudriver.S\nmodule waiter.S core=1 channels=30\n')
    session = SpratGdb(tmp_path, str(image), '--cores', '2')
    gdb = InteractiveGdb('-ex', 'set non-stop on', '-x', str(session.script))
    try:
        both = ''.join(f'(?=.*Thread {n} received signal SIGABRT)' for n in (1, 2))
        end = gdb.run('continue &', until=f'(?s){both}')
        assert re.search(r'sprat: the machine has ended: core 1 waits at RIP 0x[0-9a-f]+ for a '
                         r'write to physical line 0x[0-9a-f]+ that no core will make', end), \
            f'non-stop gdb should be told that the machine is stuck, and why:\n{end}'
        gdb.run('thread 2')
        frame = gdb.run('bt 1')
        assert re.search(r'#0\s+.*urpc_recv_poll \(\) at \S*lib/urpc\.S:\d+', frame), \
            f'the waiting core should still be there to look at, in urpc_recv:\n{frame}'
    finally:
        gdb.close()
        session.close()


def documented_session(page: Path) -> list[tuple[str, list[str]]]:
    """(command, the lines shown after it) for each `(gdb) ` line of a page."""
    session = []
    for line in page.read_text(encoding='utf-8').splitlines():
        if line.startswith('    (gdb) '):
            session.append((line[len('    (gdb) '):], []))
        elif session and line.startswith('    ') and line.strip():
            session[-1][1].append(line.strip())
        elif session:
            break       # the session's block has ended
    return session


def shown_lines_pattern(lines: list[str]) -> str:
    """A pattern found once every line appears in gdb's output, spacing aside."""
    words = [r'\s+'.join(re.escape(word) for word in line.split()) for line in lines]
    return '(?s)' + ''.join(f'(?=.*{word})' for word in words)


def test_the_non_stop_session_in_docs_gdb_md_runs_as_shown(tmp_path):
    session = documented_session(TREE / 'docs' / 'gdb.md')
    assert len(session) > 5, 'docs/gdb.md should show a non-stop gdb session'
    sprat = SpratGdb(tmp_path, 'images/spawn.lst', '--cores', '3')
    gdb = InteractiveGdb('-ex', 'set non-stop on', '-x', str(sprat.script))
    try:
        for command, shown in session:
            gdb.run(command, until=shown_lines_pattern(shown))
    finally:
        gdb.close()
        sprat.close()


def test_sprat_boot_with_gdb_serves_symbols_and_runs_on_after_detach(tmp_path):
    session = SpratGdb(tmp_path, 'images/spawn.lst', '--cores', '3', command='boot')
    try:
        output = session.run_gdb('break urpc_send thread 3', 'continue', 'bt 1',
                                 'monitor cycles', 'detach')
        status, printed = session.finish()
    finally:
        session.close()
    assert re.search(r'Thread 3 hit Breakpoint 1(\.\d+)?, urpc_send \(\) at userland/lib/urpc\.S:\d+',
                     output), f'sprat boot --gdb should give gdb names and lines:\n{output}'
    assert re.search(r'^core 2: [\d,]+ cycles', output, re.M), \
        f'monitor commands should work under sprat boot --gdb:\n{output}'
    assert 'sprat: with symbols and source lines: gdb -x' in printed, printed
    assert status == 0 and 'every core halted cleanly' in printed, \
        f'after gdb detaches, the run should go on to its end:\n{printed}'


LONG_SPIN = 'kernel /cpudriver/cpudriver.S\nmodule /userland/spin.S iterations=100000000\n'


def cpu_seconds(pid: int) -> float:
    """How much CPU time process `pid` has used (user + system), from /proc."""
    fields = Path(f'/proc/{pid}/stat').read_text().rpartition(')')[2].split()
    return (int(fields[11]) + int(fields[12])) / 100   # utime, stime in clock ticks


def test_ctrl_c_on_sprat_while_gdb_runs_the_machine_exits_130_without_crashing(tmp_path):
    image = tmp_path / 'longspin.lst'
    image.write_text(LONG_SPIN)
    session = SpratGdb(tmp_path, str(image), '--cores', '2', '--max-cycles', str(10 ** 13))
    start = cpu_seconds(session.sprat.pid)
    gdb = subprocess.Popen([GDB, '-nx', '-batch', '-x', str(session.script), '-ex', 'continue'],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        # sprat waits for gdb without using the CPU: once it has used some,
        # gdb has it running the machine (the spin ends minutes later).
        while cpu_seconds(session.sprat.pid) < start + 0.5:
            assert gdb.poll() is None, f'gdb left before running the machine:\n{gdb.stdout.read()}'
            time.sleep(0.02)
        session.sprat.send_signal(signal.SIGINT)       # Ctrl-C at sprat's terminal
        status, printed = session.finish()
    finally:
        gdb.kill()
        gdb.communicate()
        session.close()
    assert status == 130, \
        f'Ctrl-C should end sprat with status 130, not {status} (-11 is a crash):\n{printed}'
    assert 'sprat: interrupted' in printed, printed


FAILING = """\
start:
    mov edi, 1
    call exit
.include "{tree}/userland/lib/sprat.S"
"""


def test_gdb_hears_that_a_program_exited_1_and_the_run_failed(tmp_path):
    (tmp_path / 'failing.S').write_text(FAILING.format(tree=TREE))
    image = tmp_path / 'failing.lst'
    image.write_text('kernel /cpudriver/cpudriver.S\nmodule failing.S\n')
    session = SpratGdb(tmp_path, str(image), '--cores', '1')
    try:
        output = session.run_gdb('continue', 'continue')
        status, printed = session.finish()
    finally:
        session.close()
    assert status == 1 and 'sprat: the run failed: ' in printed, \
        f'sprat debug --gdb should exit 1 after a failed end, as sprat boot does:\n{printed}'
    assert 'but 1 program failed (core 0: 1)' in output and '(exit status 1)' in output, \
        f'gdb should be told that a program failed, as sprat boot says:\n{output}'
    assert 'received signal SIGABRT' in output, \
        f'a run whose program failed ends as a failure, not a clean stop:\n{output}'
    assert '[Inferior 1 (Remote target) exited with code 01]' in output, \
        f'the exit gdb reports should be the failure\'s, not a normal one:\n{output}'


def test_gdb_lists_the_lab_workspaces_file_not_the_trees(tmp_path):
    env = dict(os.environ, SPRAT_LABS=str(TREE / 'tests' / 'fixtures' / 'labs'))
    started = subprocess.run([*SPRAT, 'lab', 'start', '97', 'work'], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=GDB_TIMEOUT_S)
    assert started.returncode == 0, started.stderr
    workspace = tmp_path / 'work'
    session = SpratGdb(tmp_path, 'images/hello.lst', '--cores', '1', cwd=workspace, env=env)
    try:
        output = session.run_gdb('list start', 'info source')
    finally:
        session.close()
    students = workspace / 'tests' / 'fixtures' / 'labs' / '97-hello' / 'greet.S'
    assert f'Located in {students}' in output, \
        f'gdb should read the student\'s greet.S, not the tree\'s:\n{output}'
    assert re.search(r'^9\s+lea rdi, \[rip \+ not_written\]$', output, re.M), \
        f'list should show the student\'s lines (the blanked region):\n{output}'


def test_after_gdb_disconnects_the_next_gdb_finds_the_machine_where_it_was(spawn_under_gdb):
    first = spawn_under_gdb.run_gdb('stepi', 'stepi', 'info registers rip', 'disconnect')
    second = spawn_under_gdb.run_gdb('info registers rip', 'detach')
    status, printed = spawn_under_gdb.finish()
    rips = re.findall(r'^rip\s+(0x[0-9a-f]+)', first + second, re.M)
    assert len(rips) == 2 and rips[0] == rips[1], \
        f'a second gdb should find the machine where the first left it:\n{first}\n{second}'
    assert 'sprat: gdb disconnected; waiting for gdb again' in printed, printed
    assert status == 0, f'sprat should end well once the second gdb detaches:\n{printed}'
