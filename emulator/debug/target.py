"""What a debugger may ask of a machine: the Target interface.

The GDB stub (`emulator/debug/gdbstub.py`) speaks gdb's wire protocol and
knows nothing about unicorn; the machine knows nothing about gdb. This file
is the contract between them:

- `Target`: the dozen calls the stub makes (registers, memory, breakpoints,
  step, resume, interrupt, kill). The real machine implements it; so does
  `FakeTarget` below, a pretend machine small enough to read in one sitting,
  used by the tests and handy for trying gdb without booting anything.
- `StopEvent`: what a step or a run ended with, which the stub turns into
  gdb's stop reply (`T05thread:02;`).
- `REGISTERS`: the registers gdb sees for each core, in the order of gdb's
  `g` packet, with the sizes and types the target description announces.
- `TargetError`: what a target raises for "that cannot be done" (an
  unmapped address, a register it will not write); the stub answers with an
  error reply instead of failing.

Cores are numbered 0..N-1. gdb calls them threads, and a gdb thread id must
be positive, so the stub shows core c as thread c + 1; nothing on this side
of the contract ever sees a thread id.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from typing import NamedTuple, Protocol

# Unix signal numbers as gdb's stop replies use them.
SIGINT = int(signal.SIGINT)    # 2: stopped because somebody asked (Ctrl-C)
SIGTRAP = int(signal.SIGTRAP)  # 5: breakpoint, watchpoint or single step
SIGSEGV = int(signal.SIGSEGV)  # 11: the guest faulted

STOP_REASONS = ('breakpoint', 'watchpoint', 'step', 'interrupt', 'exited', 'fault')

# The signal gdb is told about when a StopEvent does not name one.
_DEFAULT_SIGNAL = {
    'breakpoint': SIGTRAP,
    'watchpoint': SIGTRAP,
    'step': SIGTRAP,
    'interrupt': SIGINT,
    'exited': 0,
    'fault': SIGSEGV,
}


class TargetError(Exception):
    """The target cannot do what was asked (unmapped memory, bad register)."""


@dataclass
class StopEvent:
    """Why the machine stopped, as returned by `step()` and `resume()`.

    core: the core that stopped (for 'interrupt' and 'exited', any core;
          gdb will show it as the current thread).
    reason: one of STOP_REASONS.
    addr: for 'watchpoint', the address that was written.
    signal: the Unix signal gdb reports; None means the usual one for the
            reason (SIGTRAP, SIGINT for 'interrupt', SIGSEGV for 'fault').
    exit_code: for 'exited', the machine's exit status (0..255).
    """

    core: int
    reason: str
    addr: int | None = None
    signal: int | None = None
    exit_code: int = 0

    def __post_init__(self) -> None:
        if self.reason not in STOP_REASONS:
            raise ValueError(f'unknown stop reason {self.reason!r}')
        if self.signal is None:
            self.signal = _DEFAULT_SIGNAL[self.reason]


class Target(Protocol):
    """A stopped machine that a debugger drives, core by core.

    Between calls the whole machine is stopped. Only `request_interrupt`
    may be called from another thread, and only while `resume` (or `step`)
    is running: the stub runs those on a worker thread so that it can keep
    reading gdb's Ctrl-C from the socket.
    """

    def cores(self) -> list[int]:
        """The core ids, 0..N-1."""

    def read_registers(self, core: int) -> dict[str, int]:
        """The core's registers by REGISTERS name, as unsigned integers.

        A name left out is shown in gdb as <unavailable> (fine for the
        x87 registers if the machine does not model them).
        """

    def write_register(self, core: int, name: str, value: int) -> None:
        """Set one register; raise TargetError if it cannot be written."""

    def read_memory(self, core: int, addr: int, length: int) -> bytes:
        """`length` bytes at virtual address `addr` as `core` sees them.

        Raise TargetError (or return None) if any of it is unmapped. The
        stub never asks for a range that crosses a 4 KiB page boundary, so
        "part of it is mapped" does not arise.
        """

    def write_memory(self, core: int, addr: int, data: bytes) -> None:
        """Store `data` at virtual address `addr`; TargetError if unmapped."""

    def add_breakpoint(self, addr: int) -> None:
        """Stop any core about to execute `addr` (an engine hook, never int3)."""

    def remove_breakpoint(self, addr: int) -> None:
        """Forget the breakpoint at `addr`."""

    def add_watchpoint(self, addr: int, length: int, kind: str = 'write') -> None:
        """Stop any core right after it writes to [addr, addr + length)
        (kind 'read': right after it reads from it; 'access': either)."""

    def remove_watchpoint(self, addr: int, length: int, kind: str = 'write') -> None:
        """Forget the watchpoint of that kind on [addr, addr + length)."""

    def step(self, core: int) -> StopEvent:
        """Execute one instruction on `core` while every other core waits.

        Returns reason 'step' normally; 'watchpoint', 'fault' or 'exited'
        if that instruction caused one. A breakpoint at the starting pc
        does not stop the step (gdb steps off breakpoints this way).
        """

    def resume(self, only=None) -> StopEvent:
        """Run all cores (or only the cores in the set `only`, gdb's
        scheduler-locking) until a breakpoint, watchpoint, fault, the end.

        Must also return (reason 'interrupt') soon after request_interrupt,
        including when the request arrived between the call starting and
        the run getting going: clear the request when returning, not when
        starting. A breakpoint at a core's current pc is skipped once, so
        that continuing from a breakpoint moves on.
        """

    def request_interrupt(self) -> None:
        """Ask a running resume() to stop soon. Thread-safe."""

    def kill(self) -> None:
        """gdb is ending the session and the machine's run with it."""

    # Optional: a target may also have these, and the stub uses them if so.
    #   end_reason: str | None       why the machine can run no more (after 'exited')
    #   end_notes: list[str]         lines that say more about that end, if any
    #   thread_info(core) -> str     what `info threads` shows beside the core
    #   monitor(command) -> str      the answer to gdb's `monitor COMMAND`;
    #                                raises TargetError for a command it refuses
    #   step_while_others_run(core) -> StopEvent
    #                                a step during which the other cores may run
    #                                (gdb's `vCont;s:N;c`): a core that cannot
    #                                move yet steps once it can
    # For gdb's non-stop mode (all four, or the stub refuses QNonStop:1):
    #   held: set[int]               cores that runs pass over; the stub adds to it
    #   release(core)                take a core out of `held`; a breakpoint at its
    #                                pc is skipped once, as resume() does
    #   run_slice(quanta) -> StopEvent | None
    #                                run the cores not held a little while: the
    #                                event that stopped one (or 'exited'), or None
    #   stalled: bool                set by run_slice when it returned None because
    #                                no core outside `held` can run, though a held
    #                                one could (nothing changes until gdb acts)
    # and, if it can tell:
    #   cannot_run(core) -> str | None
    #                                why a core could not move if stepped now
    #                                (not started yet), or None


class Register(NamedTuple):
    """One register as gdb sees it (see gdb's "Target Descriptions")."""

    name: str
    bits: int
    gdb_type: str
    feature: str
    group: str | None = None


# Features gdb knows by name. 'core' and 'segments' are gdb's own amd64
# features; gdb insists on the x87 registers being in 'core' (it rejects a
# description without them), though a target may leave them unavailable.
# The system registers are ours: gdb shows registers of a feature it does
# not know as plain registers, `info registers cr3` works.
CORE = 'org.gnu.gdb.i386.core'
SEGMENTS = 'org.gnu.gdb.i386.segments'
SYSTEM = 'org.sprat.x86.system'

_GPRS = ('rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp',
         'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15')
_POINTERS = {'rbp': 'data_ptr', 'rsp': 'data_ptr'}
_X87_CONTROL = ('fctrl', 'fstat', 'ftag', 'fiseg', 'fioff', 'foseg', 'fooff', 'fop')

REGISTERS: tuple[Register, ...] = (
    *(Register(n, 64, _POINTERS.get(n, 'int64'), CORE) for n in _GPRS),
    Register('rip', 64, 'code_ptr', CORE),
    Register('eflags', 32, 'i386_eflags', CORE),
    *(Register(n, 32, 'int32', CORE) for n in ('cs', 'ss', 'ds', 'es', 'fs', 'gs')),
    *(Register(f'st{i}', 80, 'i387_ext', CORE, 'float') for i in range(8)),
    *(Register(n, 32, 'int', CORE, 'float') for n in _X87_CONTROL),
    Register('fs_base', 64, 'int', SEGMENTS),
    Register('gs_base', 64, 'int', SEGMENTS),
    *(Register(n, 64, 'int64', SYSTEM, 'system')
      for n in ('k_gs_base', 'cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer')),
)


class FakeTarget:
    """A pretend multicore machine: tests and demos for the GDB stub.

    All cores share one flat memory of `size` bytes at `base` (virtual =
    physical, the same for every core). Each byte is a one-byte
    instruction except the two-byte jump, so programs can be poked in by
    hand:

        0x90        nop: rip += 1
        0xaa        store: byte [rdi] = al (write and access watchpoints see it)
        0xeb rel8   jmp short, as on x86: `eb fe` loops forever
        0xf4        hlt: the machine ends, exit code = al
        other       executes as a nop

    Fetching outside memory is a fault. Core c starts at base + 0x100 * c
    with its stack at the top of memory; core 0 runs in ring 0, the others
    in ring 3. resume() runs the cores round-robin, one instruction each,
    and ends the machine after `max_ticks` rounds (None: never) so that a
    test can never run forever by accident.
    """

    NOP, STORE, JMP8, HLT = 0x90, 0xAA, 0xEB, 0xF4

    def __init__(self, ncores: int = 4, base: int = 0x1000, size: int = 0x10000,
                 max_ticks: int | None = 10_000) -> None:
        self.base = base
        self.memory = bytearray([self.NOP]) * size
        self.max_ticks = max_ticks
        self.regs = [self._boot_registers(core) for core in range(ncores)]
        self.breakpoints: set[int] = set()
        self.watchpoints: set[tuple[int, int, str]] = set()
        self.killed = False
        self._interrupt = threading.Event()
        self.held: set[int] = set()         # non-stop: cores run_slice passes over
        self.stalled = False
        self._skip_once: set[int] = set()   # released at a breakpoint: step off it

    def _boot_registers(self, core: int) -> dict[str, int]:
        regs = {r.name: 0 for r in REGISTERS if r.group != 'float'}
        ring = 0 if core == 0 else 3
        regs.update(rip=self.base + 0x100 * core, eflags=0x202,
                    rsp=self.base + len(self.memory) - 0x100 * (core + 1),
                    cs=0x08 if ring == 0 else 0x2b, ss=0x10 if ring == 0 else 0x23)
        return regs

    # -- the Target interface --------------------------------------------

    def cores(self) -> list[int]:
        return list(range(len(self.regs)))

    def read_registers(self, core: int) -> dict[str, int]:
        return dict(self.regs[core])

    def write_register(self, core: int, name: str, value: int) -> None:
        if name not in self.regs[core]:
            raise TargetError(f'register {name} is not modelled')
        self.regs[core][name] = value

    def read_memory(self, core: int, addr: int, length: int) -> bytes:
        start = self._offset(addr, length)
        return bytes(self.memory[start:start + length])

    def write_memory(self, core: int, addr: int, data: bytes) -> None:
        start = self._offset(addr, len(data))
        self.memory[start:start + len(data)] = data

    def add_breakpoint(self, addr: int) -> None:
        self.breakpoints.add(addr)

    def remove_breakpoint(self, addr: int) -> None:
        self.breakpoints.discard(addr)

    def add_watchpoint(self, addr: int, length: int, kind: str = 'write') -> None:
        self.watchpoints.add((addr, length, kind))

    def remove_watchpoint(self, addr: int, length: int, kind: str = 'write') -> None:
        self.watchpoints.discard((addr, length, kind))

    def step(self, core: int) -> StopEvent:
        regs = self.regs[core]
        rip = regs['rip']
        try:
            opcode = self.read_memory(core, rip, 1)[0]
        except TargetError:
            return StopEvent(core, 'fault')
        if opcode == self.HLT:
            return StopEvent(core, 'exited', exit_code=regs['rax'] & 0xFF)
        if opcode == self.JMP8:
            return self._jump(core, rip)
        regs['rip'] = rip + 1
        if opcode == self.STORE:
            return self._store(core, regs['rdi'], regs['rax'] & 0xFF)
        return StopEvent(core, 'step')

    def resume(self, only=None) -> StopEvent:
        try:
            return self._run(self.cores() if only is None else sorted(only))
        finally:
            # Cleared on the way out, not on the way in: a request that came
            # before the run got going must still stop it.
            self._interrupt.clear()

    def request_interrupt(self) -> None:
        self._interrupt.set()

    def kill(self) -> None:
        self.killed = True

    # -- non-stop: the stub runs the free cores a slice at a time ------------

    def release(self, core: int) -> None:
        self.held.discard(core)
        self._skip_once.add(core)

    def run_slice(self, quanta: int) -> StopEvent | None:
        """`quanta` rounds of one instruction on each core not held."""
        free = [core for core in self.cores() if core not in self.held]
        self.stalled = not free
        for _ in range(quanta if free else 0):
            for core in free:
                if self.regs[core]['rip'] in self.breakpoints and core not in self._skip_once:
                    return StopEvent(core, 'breakpoint')
                self._skip_once.discard(core)
                event = self.step(core)
                if event.reason != 'step':
                    return event
        return None

    # -- the pretend CPU -------------------------------------------------

    def _offset(self, addr: int, length: int) -> int:
        start = addr - self.base
        if start < 0 or start + length > len(self.memory):
            raise TargetError(f'{addr:#x}+{length} is not mapped')
        return start

    def _jump(self, core: int, rip: int) -> StopEvent:
        try:
            rel8 = int.from_bytes(self.read_memory(core, rip + 1, 1), 'little', signed=True)
        except TargetError:
            return StopEvent(core, 'fault')
        self.regs[core]['rip'] = rip + 2 + rel8
        return StopEvent(core, 'step')

    def _store(self, core: int, addr: int, value: int) -> StopEvent:
        try:
            self.write_memory(core, addr, bytes([value]))
        except TargetError:
            return StopEvent(core, 'fault')
        for start, length, kind in self.watchpoints:
            if kind != 'read' and start <= addr < start + length:
                return StopEvent(core, 'watchpoint', addr=addr)
        return StopEvent(core, 'step')

    def _run(self, cores: list[int]) -> StopEvent:
        # Like an engine hook, a breakpoint under a core's pc when the run
        # starts is skipped once, or "continue" would never move.
        skip_once = set(cores)
        ticks = 0
        while not self._interrupt.is_set():
            for core in cores:
                if self.regs[core]['rip'] in self.breakpoints and core not in skip_once:
                    return StopEvent(core, 'breakpoint')
                skip_once.discard(core)
                event = self.step(core)
                if event.reason != 'step':
                    return event
            ticks += 1
            if self.max_ticks is not None and ticks >= self.max_ticks:
                return StopEvent(0, 'exited', exit_code=0)
        return StopEvent(0, 'interrupt')
