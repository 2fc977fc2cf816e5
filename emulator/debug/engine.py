"""The debug engine: stop a sprat machine at an exact instruction, on any core.

    engine = DebugEngine(machine)
    engine.add_breakpoint(0x200123)            # every core; cores={2}: core 2 only
    event = engine.resume()                    # StopEvent(core=2, reason='breakpoint')
    engine.step(2)                             # exactly one instruction of core 2
    engine.read_registers(2)["rip"]

This is the `Target` of emulator/debug/target.py, so the GDB stub drives
it as it is; the `sprat debug` prompt (sprat/debug.py) drives it too.
Between calls the whole machine is stopped.

How each kind of stop is made (DESIGN.md section 6 says why):

  breakpoint  a UC_HOOK_CODE on that one address, on every core. It fires
              before the instruction runs, and ends the quantum there
              (Core.stop_before_this_instruction): the instruction is
              neither executed nor counted. Unicorn caches translated code,
              so every add and delete flushes that address.
              Resuming from a breakpoint would hit it again at once, so the
              address each core stands on when a run starts is skipped once:
              only as that core's first instruction of the run.
  watchpoint  a UC_HOOK_MEM_WRITE on the watched bytes (UC_HOOK_MEM_READ for a
              read watchpoint, both for an access watchpoint). Unicorn hands memory
              hooks *physical* addresses once paging is on (verified), so
              the virtual range is translated through each core's page
              tables before each of its quanta, and hooked there: a store
              through a mapping made in the middle of a quantum is seen from
              the next quantum on (a step is a quantum of one). The hook
              lets the access happen and ends the quantum right after the
              instruction (Core.stop_after_this_instruction). Accesses the
              host makes for the guest (the interrupt frame that
              emulator/traps.py pushes, a page walk) are not watched, nor
              are instruction fetches.
  fault       a UC_HOOK_INTR added after the core's own: when it runs, the
              exception has been delivered, so the core stops at the first
              instruction of the guest's handler, and the frame on the stack
              says where the fault was. Which exception, and whether its
              frame has an error code, is what the delivery says it did
              (Core.delivered): an `int 13` pushes none, and an `int n`
              through a gate its caller may not use is a #GP.
  step        exactly one event on one core while the others keep still:
              one instruction, or -- when an interrupt is due on that core --
              the delivery of that interrupt, which lands at the handler's
              first instruction and executes nothing. A `syscall`, like a
              faulting instruction, is one instruction that lands in its
              handler.
  resume      the machine's own scheduler, one quantum at a time, until a
              hook stops a core, a core fails, no core can run (the end), the
              cycle budget is spent, or request_interrupt is called.
  held        non-stop, as a deterministic scheduler can have it: the cores
              in `held` are skipped by resume (the scheduler picks among the
              others), so one core stays at its breakpoint while the rest
              run on; `resume(only=K)` runs core K alone. A held core's clock
              stands still. Released, it is the furthest behind and runs
              first until it catches up; the cost model already makes it see
              another core's store no earlier than that store happened.
              When every free core is done but a held one could still run,
              resume stops with reason 'interrupt' and `stalled` set.
  slice       non-stop through gdb: run_slice(n) runs the free cores for at
              most n quanta and returns, so that the GDB stub can read gdb's
              packets between slices. `release(K)` lets a held core run
              again; like resume, it skips a breakpoint under the core's pc
              once, on its first instruction after the release (and not at
              every slice boundary, where a core may stand on a breakpoint it
              has not yet executed).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Callable

from unicorn import UC_HOOK_CODE, UC_HOOK_INTR, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE
from unicorn import x86_const as x86

from emulator import traps
from emulator.core import CoreState
from emulator.cpustate import emu_counter
from emulator.debug.target import StopEvent, TargetError
from emulator.paging import PageFault, translate

PAGE = 4096
ADDRESS_MASK = 2**64 - 1
FIRST_EXTERNAL_VECTOR = 32      # 0..31 are the CPU's exceptions (Intel SDM vol. 3, 6.3)
WIDEST_STORE = 8                # a store starting this far before a watch can overlap it
MAX_WATCH_LENGTH = 0x10000      # each watched page costs a hook and a page walk per run

_GPRS = ('rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp',
         'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15')
# gdb's register names (emulator/debug/target.py) -> unicorn's register ids.
_REGISTER_IDS = {
    **{name: getattr(x86, f"UC_X86_REG_{name.upper()}") for name in
       (*_GPRS, 'rip', 'cs', 'ss', 'ds', 'es', 'fs', 'gs',
        'fs_base', 'gs_base', 'cr0', 'cr2', 'cr3', 'cr4', 'cr8')},
    'eflags': x86.UC_X86_REG_EFLAGS,
}
_MSRS = {'k_gs_base': 0xC000_0102, 'efer': 0xC000_0080}
# Unicorn writes only 16 bits for a selector and 32 for eflags: the rest of
# the (reused) buffer would be whatever the previous read left there.
_MASKS = {**{name: 0xFFFF for name in ('cs', 'ss', 'ds', 'es', 'fs', 'gs')},
          'eflags': 0xFFFF_FFFF}
# Writing a segment selector or a control register from outside would not
# do what the silicon does (DESIGN.md section 6: writing CS does not change
# the privilege), so only these may be changed.
WRITABLE_REGISTERS = frozenset((*_GPRS, 'rip', 'eflags'))


@dataclass
class Breakpoint:
    number: int
    address: int
    cores: frozenset[int] | None = None     # None: every core
    condition: Callable | None = None       # condition(core) -> bool, checked at each hit
    temporary: bool = False                 # the engine's own (run_until), not listed
    hits: int = 0
    also: tuple[int, ...] = ()              # more addresses (a routine in several programs)
    enabled: bool = True

    @property
    def addresses(self) -> tuple[int, ...]:
        return (self.address, *self.also)

    def applies(self, core) -> bool:
        return (self.enabled and (self.cores is None or core.id in self.cores)
                and (self.condition is None or self.condition(core)))


# What a watchpoint watches, and the unicorn hooks that see it.
WATCH_KINDS = {"write": UC_HOOK_MEM_WRITE, "read": UC_HOOK_MEM_READ,
               "access": UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE}


@dataclass
class Watchpoint:
    number: int
    address: int
    length: int
    hits: int = 0
    kind: str = "write"                     # a key of WATCH_KINDS
    enabled: bool = True
    # Per core: the hooked pieces (physical, virtual, size) and their hooks.
    pieces: dict = field(default_factory=dict)
    hooks: dict = field(default_factory=dict)

    def virtual_of(self, core: int, physical: int) -> int:
        """The watched virtual address a store to `physical` hit."""
        for start, virtual, size in self.pieces.get(core, ()):
            if start - WIDEST_STORE < physical < start + size:
                return virtual + max(0, physical - start)
        return self.address


@dataclass
class Fault:
    """A CPU exception a core took (the handler has not run yet)."""
    core: int
    vector: int
    rip: int | None             # where it happened, from the pushed frame
    error_code: int | None
    address: int | None         # CR2, for a page fault

    def __str__(self) -> str:
        text = traps.exception_name(self.vector)
        if self.rip is not None:
            text += f" at rip {self.rip:#x}"
        if self.error_code is not None:
            text += f", error code {self.error_code:#x}"
        if self.address is not None:
            text += f", address {self.address:#x}"
        return text


class DebugEngine:
    """Breakpoints, watchpoints, steps and runs of one machine (a Target)."""

    def __init__(self, machine, max_cycles: int | None = None):
        self.machine = machine
        self.max_cycles = max_cycles        # None: a run may go on for ever
        self._breakpoints: list[Breakpoint] = []        # the temporary ones too
        self.watchpoints: dict[int, Watchpoint] = {}
        self.stop_causes: list = []         # the breakpoints or watchpoint of the last stop
        self.fault: Fault | None = None     # the last stop's fault, if it was one
        self.end_reason: str | None = None  # why the machine can run no more
        self.exit_code: int | None = None   # with end_reason: the run's (0: a clean end)
        # What the layers above know of a run's end that the machine does not
        # (a program exited with status 1, a channel's protocol was broken):
        # each check returns the lines that say what went wrong, the first a
        # summary, or none. A machine that halts cleanly but fails a check has
        # failed, as `sprat boot` says it has.
        self.end_checks: list[Callable[[], list[str]]] = []
        self.end_notes: list[str] = []      # the failed checks' lines after their summary
        self.killed = False
        self._numbers = itertools.count(1)
        self._code_hooks: dict[int, list] = {}      # address -> a hook on every core
        self._counters = [emu_counter(core.uc) for core in machine.cores]
        self._resume_points: dict[int, int] = {}
        self._stop: StopEvent | None = None
        self._interrupt = threading.Event()
        self._last_core = 0
        self.held: set[int] = set()         # cores resume skips (non-stop)
        self._released: dict[int, int] = {}  # core -> pc it was released at (run_slice)
        self.stalled = False                # the last resume ended with only held cores left
        self._fault_hooks = [core.uc.hook_add(UC_HOOK_INTR, self._fault_hook(core))
                             for core in machine.cores]
        self.travel = None      # the history, when kept (emulator/debug/timetravel.py)

    def close(self) -> None:
        """Take every hook out: the machine runs on as if it had never been debugged."""
        for breakpoint_ in list(self._breakpoints):
            self._forget_breakpoint(breakpoint_)
        for number in list(self.watchpoints):
            self.delete(number)
        for core, handle in zip(self.machine.cores, self._fault_hooks):
            core.uc.hook_del(handle)
        self._fault_hooks = []

    # --- Registers and memory ---------------------------------------------------
    def cores(self) -> list[int]:
        return list(range(self.machine.n_cores))

    def core(self, core_id: int):
        if not isinstance(core_id, int) or not 0 <= core_id < self.machine.n_cores:
            raise TargetError(f"no core {core_id}: cores are 0 to {self.machine.n_cores - 1}")
        return self.machine.cores[core_id]

    def read_registers(self, core_id: int) -> dict[str, int]:
        core = self.core(core_id)
        values = {name: core.regs.read(reg) & _MASKS.get(name, ADDRESS_MASK)
                  for name, reg in _REGISTER_IDS.items()}
        for name, msr in _MSRS.items():
            values[name] = core.read_msr(msr)
        return values

    def write_register(self, core_id: int, name: str, value: int) -> None:
        core = self.core(core_id)
        if name not in WRITABLE_REGISTERS:
            raise TargetError(f"register {name} cannot be changed from the debugger")
        core.regs.write(_REGISTER_IDS[name], value)
        self._changed()

    def read_memory(self, core_id: int, address: int, length: int) -> bytes:
        """Bytes at a virtual address as the core sees it (TargetError if unmapped)."""
        core = self.core(core_id)
        if length <= 0:
            return b""
        try:
            return core.read_virtual(address, length)
        except (PageFault, IndexError, OverflowError):
            raise TargetError(f"{address:#x} is not mapped on core {core_id}") from None

    def write_memory(self, core_id: int, address: int, data: bytes) -> None:
        """Store bytes at a virtual address, read-only pages included (as ptrace does)."""
        pieces = [(self._physical(core_id, virtual), chunk)
                  for virtual, chunk in _page_pieces(address, data)]
        if not pieces:
            return
        for physical, chunk in pieces:
            self.machine.memory.write(physical, chunk)
        # The bytes may be code some core has already translated.
        for core in self.machine.cores:
            _flush_code(core, address, len(data))
        self._changed()

    def _changed(self) -> None:
        """The debugger changed the machine: history cannot replay that by itself."""
        if self.travel is not None:
            self.travel.changed()

    def _physical(self, core_id: int, address: int) -> int:
        core = self.core(core_id)
        try:
            physical = translate(self.machine.memory, core.regs.read(x86.UC_X86_REG_CR0),
                                 core.regs.read(x86.UC_X86_REG_CR3), address)
        except (PageFault, OverflowError):
            physical = None
        if physical is None or not self.machine.memory.contains(physical):
            raise TargetError(f"{address:#x} is not mapped on core {core_id}")
        return physical

    # --- Breakpoints --------------------------------------------------------------
    def add_breakpoint(self, address: int, cores=None, condition=None,
                       temporary: bool = False, also=()) -> Breakpoint:
        """Stop any core (or one of `cores`) about to execute `address` (or one
        of the addresses `also`)."""
        address &= ADDRESS_MASK
        also = tuple(a & ADDRESS_MASK for a in also if a & ADDRESS_MASK != address)
        cores = None if cores is None else frozenset(cores)
        number = 0 if temporary else next(self._numbers)
        breakpoint_ = Breakpoint(number, address, cores, condition, temporary, also=also)
        self._breakpoints.append(breakpoint_)
        for place in breakpoint_.addresses:
            if place not in self._code_hooks:
                self._hook_code(place)
        return breakpoint_

    @property
    def breakpoints(self) -> dict[int, Breakpoint]:
        """The breakpoints a person set, by number."""
        return {b.number: b for b in self._breakpoints if not b.temporary}

    def remove_breakpoint(self, address: int) -> None:
        """Forget every breakpoint at `address` (what gdb's z0 asks)."""
        for breakpoint_ in list(self._breakpoints):
            if breakpoint_.address == address & ADDRESS_MASK:
                self._forget_breakpoint(breakpoint_)

    def delete(self, number: int) -> bool:
        """Delete breakpoint or watchpoint `number`; False if there is none."""
        if number in self.breakpoints:
            self._forget_breakpoint(self.breakpoints[number])
            return True
        if number in self.watchpoints:
            self._unhook_watch(self.watchpoints.pop(number))
            return True
        return False

    def breakpoints_at(self, address: int, core) -> list[Breakpoint]:
        """The breakpoints that would stop `core` at `address`."""
        return [b for b in self._breakpoints if address in b.addresses and b.applies(core)]

    def _forget_breakpoint(self, breakpoint_: Breakpoint) -> None:
        self._breakpoints.remove(breakpoint_)
        for address in breakpoint_.addresses:
            if not any(address in b.addresses for b in self._breakpoints):
                self._unhook_code(address)

    def _hook_code(self, address: int) -> None:
        handles = []
        for core in self.machine.cores:
            handles.append(core.uc.hook_add(UC_HOOK_CODE, self._breakpoint_hook(core),
                                            begin=address, end=address))
            # Unicorn may keep running an old translation without the hook.
            _flush_code(core, address, 1)
        self._code_hooks[address] = handles

    def _unhook_code(self, address: int) -> None:
        for core, handle in zip(self.machine.cores, self._code_hooks.pop(address)):
            core.uc.hook_del(handle)
            # A deleted single-address hook can go on firing until flushed.
            _flush_code(core, address, 1)

    def _breakpoint_hook(self, core):
        counter = self._counters[core.id]

        def on_code(uc, address, size, _):
            try:
                if address == self._resume_points.get(core.id) and counter.value == 1:
                    return      # where this core stopped last time: skip once
                hits = self.breakpoints_at(address, core)
                if hits:
                    self._report(StopEvent(core.id, 'breakpoint', addr=address), hits)
                    core.stop_before_this_instruction()
            except Exception as error:      # a bug in sprat, not the guest's: say so
                core.fail(f"internal error in a debugger hook: {error!r}")
        return on_code

    # --- Watchpoints ----------------------------------------------------------------
    def add_watchpoint(self, address: int, length: int, kind: str = "write") -> Watchpoint:
        """Stop any core right after it stores to [address, address + length)
        (kind "read": loads from it; "access": either)."""
        if not 1 <= length <= MAX_WATCH_LENGTH:
            raise TargetError(f"a watchpoint covers 1 to {MAX_WATCH_LENGTH:#x} bytes, not {length}")
        if kind not in WATCH_KINDS:
            raise TargetError(f"a watchpoint watches {', '.join(WATCH_KINDS)}, not {kind!r}")
        watch = Watchpoint(next(self._numbers), address & ADDRESS_MASK, length, kind=kind)
        self.watchpoints[watch.number] = watch
        self._place_watch(watch)
        return watch

    def remove_watchpoint(self, address: int, length: int, kind: str = "write") -> None:
        for number, watch in list(self.watchpoints.items()):
            if (watch.address, watch.length, watch.kind) == (address & ADDRESS_MASK, length, kind):
                self._unhook_watch(self.watchpoints.pop(number))

    def _place_watches(self, cores) -> None:
        for watch in self.watchpoints.values():
            self._place_watch(watch, cores)

    def _place_watch(self, watch: Watchpoint, cores=None) -> None:
        """Hook the physical bytes behind the watched range, on these cores (default all)."""
        for core in self.machine.cores if cores is None else cores:
            pieces = self._translate_range(core, watch.address, watch.length)
            if pieces == watch.pieces.get(core.id):
                continue        # the page tables did not move it
            for handle in watch.hooks.pop(core.id, ()):
                core.uc.hook_del(handle)
            watch.pieces[core.id] = pieces
            hook_type = WATCH_KINDS[watch.kind]
            watch.hooks[core.id] = [
                core.uc.hook_add(hook_type, self._watch_hook(core, watch),
                                 begin=max(0, physical - WIDEST_STORE + 1),
                                 end=physical + size - 1)
                for physical, _, size in pieces]
            if sum(size for _, _, size in pieces) < watch.length:
                watch.hooks[core.id].append(
                    core.uc.hook_add(hook_type, self._unmapped_watch_hook(core, watch)))

    def _unhook_watch(self, watch: Watchpoint) -> None:
        for core in self.machine.cores:
            for handle in watch.hooks.pop(core.id, ()):
                core.uc.hook_del(handle)
        watch.pieces.clear()

    def _translate_range(self, core, address: int, length: int) -> list[tuple[int, int, int]]:
        """(physical, virtual, size) of each mapped page piece of a virtual range."""
        pieces = []
        end = min(address + length, 2**64)
        while address < end:
            size = min(end - address, PAGE - (address & (PAGE - 1)))
            try:
                pieces.append((self._physical(core.id, address), address, size))
            except TargetError:
                pass        # not mapped on this core (yet): nothing to hook
            address += size
        return pieces

    def _watch_hook(self, core, watch: Watchpoint):
        def on_write(uc, access, address, size, value, _):
            try:
                if watch.enabled and any(start < address + size and address < start + length
                       for start, _, length in watch.pieces.get(core.id, ())):
                    self._report(StopEvent(core.id, 'watchpoint',
                                           addr=watch.virtual_of(core.id, address)), [watch])
                    core.stop_after_this_instruction()
            except Exception as error:
                core.fail(f"internal error in a debugger hook: {error!r}")
        return on_write

    def _unmapped_watch_hook(self, core, watch: Watchpoint):
        """While part of a watched range is unmapped on a core, check every store
        of that core against a fresh translation. Slow, but the OS may map a
        page and store to it within one quantum (it builds a program's stack
        and runs it), and a watch set at boot must not miss that."""
        def on_any_write(uc, access, address, size, value, _):
            if not watch.enabled:
                return
            try:
                for start, virtual, length in self._translate_range(core, watch.address,
                                                                    watch.length):
                    if start < address + size and address < start + length:
                        self._report(StopEvent(core.id, 'watchpoint',
                                               addr=virtual + max(0, address - start)), [watch])
                        core.stop_after_this_instruction()
                        return
            except Exception as error:
                core.fail(f"internal error in a debugger hook: {error!r}")
        return on_any_write

    # --- Faults -----------------------------------------------------------------
    def _fault_hook(self, core):
        def on_interrupt(uc, vector, _):
            # What was delivered, not what unicorn raised: `int 0x40` through
            # a kernel-only gate is a #GP.
            delivered = core.delivered if isinstance(core.delivered, traps.Delivery) else None
            if delivered is not None:
                vector = delivered.vector
            if vector >= FIRST_EXTERNAL_VECTOR:
                return      # `int n` to a system call gate: not a fault
            try:
                self.fault = self._describe_fault(core, vector, delivered)
            except Exception:
                self.fault = Fault(core.id, vector, None, None, None)
            self._report(StopEvent(core.id, 'fault'), [])
            core.request_stop()
        return on_interrupt

    def _describe_fault(self, core, vector: int, delivered) -> Fault:
        """Read the frame the delivery pushed: [error code], rip, cs, rflags, ...

        Whether an error code is on top is what the delivery says it pushed
        (`int 13` pushes none); a lab 1 workspace whose delivery does not say
        is read by the vector's rule."""
        if core.state is CoreState.FAILED:
            return Fault(core.id, vector, None, None, None)
        if delivered is not None:
            has_code = delivered.error_code is not None
        else:
            has_code = vector in traps.VECTORS_WITH_ERROR_CODE
        rsp = core.regs.read(x86.UC_X86_REG_RSP)
        words = core.read_virtual(rsp, 16)
        error_code = int.from_bytes(words[:8], "little") if has_code else None
        rip = int.from_bytes(words[8:16] if has_code else words[:8], "little")
        address = core.regs.read(x86.UC_X86_REG_CR2) if vector == traps.PAGE_FAULT else None
        return Fault(core.id, vector, rip, error_code, address)

    # --- Running ------------------------------------------------------------------
    def step(self, core_id: int) -> StopEvent:
        """One instruction of one core (or the delivery of its due interrupt)."""
        core = self.core(core_id)
        self._released.pop(core_id, None)       # the step moves it off that pc
        try:
            self._begin_run()
            time = self.machine.scheduler.ready_time(core)
            if time is None:
                return StopEvent(core_id, 'step')       # cannot move by itself
            core.cycles = max(core.cycles, time)        # a halted core sleeps to its event
            if not core.take_due_interrupts() and core.state is CoreState.RUNNING:
                self._place_watches([core])
                core.run(1)
            return self._stopped(core) or self._after_step(core)
        finally:
            self._end_run()

    def step_while_others_run(self, core_id: int) -> StopEvent:
        """gdb's step when the other threads may run (`vCont;s:N;c`).

        A core that can move takes one step, the others keeping still as in
        step(). One that cannot yet (off, halted, waiting on a line) would
        answer at once with its pc unchanged; instead the machine runs until
        that core is about to execute its first instruction, which is where
        the step ends -- or until anything else stops the machine first.
        """
        if self.cannot_run(core_id) is None:
            return self.step(core_id)
        core = self.core(core_id)

        def on_first_instruction(uc, address, size, _):
            self._report(StopEvent(core_id, 'step'), [])
            core.stop_before_this_instruction()

        handle = core.uc.hook_add(UC_HOOK_CODE, on_first_instruction)
        core.uc.ctl_flush_tb()      # translations made before the hook would not call it
        try:
            return self.resume()
        finally:
            core.uc.hook_del(handle)
            core.uc.ctl_flush_tb()

    def resume(self, only: int | set[int] | None = None) -> StopEvent:
        """Run every core but the held ones (or core `only`, alone, or the
        cores in the set `only`) until something stops the machine (see the
        module doc)."""
        if only is None:
            skip = self.held
        else:
            wanted = {only} if isinstance(only, int) else only
            skip = set(self.cores()) - {self.core(core).id for core in wanted}
        try:
            self._begin_run()
            return self._run_quanta(skip)
        finally:
            # Cleared on the way out (target.py): a request that came before
            # the run got going must still stop it.
            self._end_run()

    def run_slice(self, quanta: int) -> StopEvent | None:
        """At most `quanta` quanta of the cores that are not held: the event
        that stopped one of them (or the machine's end), or None. None with
        `stalled` set: no free core can run, but a held one could."""
        self._stop = None
        self.stop_causes = []
        self.fault = None
        # The same dict: a released core's skip-once is used up by its first
        # quantum, whichever slice that falls in.
        self._resume_points = self._released
        try:
            event = self._run_quanta(self.held, quanta)
            return None if self.stalled else event
        finally:
            self._end_run()

    def release(self, core_id: int) -> None:
        """Let a held core run again (non-stop); it moves on from a breakpoint."""
        core = self.core(core_id)
        self.held.discard(core_id)
        self._released[core_id] = core.rip

    def _run_quanta(self, skip, quanta: int | None = None) -> StopEvent | None:
        """The scheduler's quanta, cores in `skip` passed over, until a stop
        (or after `quanta` of them: None)."""
        scheduler = self.machine.scheduler
        self.stalled = False
        done = 0
        while not self._interrupt.is_set():
            if quanta is not None and done == quanta:
                return None
            core, time = scheduler.next_core(skip=skip)
            if core is None:
                return self._nothing_to_run(skip)
            if self.max_cycles is not None and time >= self.max_cycles:
                return self._out_of_budget(core)
            limit = None if self.max_cycles is None else self.max_cycles - time
            self._last_core = core.id
            self._place_watches([core])     # its page tables may have changed
            scheduler.run_one(core, time, limit)
            done += 1
            self._resume_points.pop(core.id, None)
            event = self._stopped(core)
            if event:
                return event
        return StopEvent(self._last_core, 'interrupt')

    def run_until(self, core_id: int, address: int, condition=None,
                  only: bool = False) -> StopEvent:
        """Resume until `core_id` is about to run `address` (and `condition`),
        or until anything else stops the machine first (`only`: run that
        core alone)."""
        temporary = self.add_breakpoint(address, cores={core_id}, condition=condition,
                                        temporary=True)
        try:
            return self.resume(only=core_id if only else None)
        finally:
            self._forget_breakpoint(temporary)

    def _nothing_to_run(self, skip) -> StopEvent:
        """No core outside `skip` can run: the end, unless a skipped one could."""
        waiting = [c.id for c in self.machine.cores
                   if c.id in skip and self.machine.scheduler.ready_time(c) is not None]
        if not waiting:
            return self._the_end()
        self.stalled = True
        return StopEvent(waiting[0], 'interrupt')

    def request_interrupt(self) -> None:
        self._interrupt.set()

    def kill(self) -> None:
        self.killed = True

    def cannot_run(self, core_id: int) -> str | None:
        """Why a step of this core would do nothing, or None if it can move."""
        core = self.core(core_id)
        if self.machine.scheduler.ready_time(core) is not None:
            return None
        if core.state is CoreState.OFF:
            return f"core {core_id} is off: it waits for INIT and STARTUP IPIs from a running core"
        if core.state is CoreState.HALTED:
            return f"core {core_id} is halted and no interrupt will wake it"
        if core.state is CoreState.WAITING:
            return (f"core {core_id} waits for another core to write a line it polls: "
                    f"`continue` runs the others")
        if core.state is CoreState.STOPPED:
            return f"core {core_id} has stopped (exit code {core.exit_code})"
        return f"core {core_id} has failed: {core.failure}"

    def _begin_run(self) -> None:
        self._stop = None
        self.stop_causes = []
        self.fault = None
        self._resume_points = {core.id: core.rip for core in self.machine.cores}

    def _end_run(self) -> None:
        self._resume_points = {}
        self._interrupt.clear()

    def _report(self, event: StopEvent, causes: list) -> None:
        """A hook asks to stop; the first request of a run wins."""
        if self._stop is None:
            self._stop = event
            self.stop_causes = causes
            for cause in causes:
                cause.hits += 1

    def _stopped(self, core) -> StopEvent | None:
        if self._stop is not None:
            return self._stop
        if core.state is CoreState.FAILED:
            return StopEvent(core.id, 'fault')
        return None

    def _after_step(self, core) -> StopEvent:
        if self.machine.scheduler.next_core()[0] is None:
            return self._the_end(core.id)
        return StopEvent(core.id, 'step')

    def _the_end(self, core_id: int | None = None) -> StopEvent:
        self.machine.console.flush()
        result = self.machine.outcome()
        failed = [lines for lines in (check() for check in self.end_checks) if lines]
        joiner = ", but " if result.clean else "; and "
        self.end_reason = result.reason + "".join(joiner + lines[0] for lines in failed)
        self.end_notes = [note for lines in failed for note in lines[1:]]
        clean = result.clean and not failed
        codes = [c.exit_code for c in self.machine.cores if c.exit_code]
        code = 0 if clean else (codes[0] if codes else 1)
        self.exit_code = code
        return StopEvent(self._last_core if core_id is None else core_id, 'exited', exit_code=code)

    def _out_of_budget(self, core) -> StopEvent:
        self.end_reason = (f"cycle budget of {self.max_cycles:,} cycles spent "
                           f"(core {core.id} still running at rip {core.rip:#x})")
        self.exit_code = 1
        return StopEvent(core.id, 'exited', exit_code=1)


def _flush_code(core, address: int, length: int) -> None:
    """Make `core` translate [address, address + length) afresh (unicorn wants begin < end)."""
    end = min(address + length, ADDRESS_MASK)
    core.uc.ctl_remove_cache(min(address, end - 1), end)


def _page_pieces(address: int, data: bytes):
    """Split a store at page boundaries: (virtual address, bytes) pieces."""
    offset = 0
    while offset < len(data):
        size = min(len(data) - offset, PAGE - ((address + offset) & (PAGE - 1)))
        yield address + offset, data[offset:offset + size]
        offset += size
