"""One x86-64 core: a unicorn instance, its clock, and its wiring.

A Core owns one `unicorn.Uc` in 64-bit mode. It maps the machine's shared
physical memory (no copy), its own local APIC, and hooks that hand every
trap to emulator/traps.py and every port access to the devices, once the
checks unicorn leaves out (emulator/privilege.py) allow it. It counts what
the final table of `sprat boot` shows: instructions retired, modeled cycles,
system calls, interrupts and IPIs.

The core's clock (`cycles`) is modeled time: one cycle per instruction plus
whatever the interconnect's cost model charges and what privileged
instructions and trap delivery cost beyond that (emulator/instcost.py), and
a halted core's clock jumps to the moment something wakes it. The
scheduler (emulator/scheduler.py) decides which core runs next and for how
long; a core only runs when asked.
What moves during a quantum lives in `clock` (Clock): where the quantum
began, how long it may run, what the cost model charged in it. The cost
model's C hit path replaces it with an equal clock in C memory
(emulator/hitpath.py), which its C code reads and charges too.

States:
  OFF      powered but not started: waits for INIT then STARTUP IPIs
  RUNNING  executing, or ready to
  HALTED   executed `hlt`; an interrupt will wake it (if IF is set)
  WAITING  parked polling a tracked cache line (emulator/cost.py) until
           another core writes it
  STOPPED  switched itself off through the power port (exit code kept)
  FAILED   a machine-level failure (triple fault, access outside RAM)
"""

import ctypes
import enum
import functools
import heapq
from dataclasses import dataclass

from unicorn import (Uc, UcError, UC_ARCH_X86, UC_MODE_64, UC_HOOK_INTR, UC_HOOK_INSN,
                     UC_HOOK_INSN_INVALID, UC_HOOK_MEM_UNMAPPED)
from unicorn import x86_const as x86
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC

from emulator import privilege, traps
from emulator.cpustate import (ERROR_CODE, EXCEPTION_IS_INT, FEAT_1_ECX, OLD_EXCEPTION,
                               Registers, SavedContext, clear_cpuid_feature, emu_counter,
                               instruction_pointer, set_instruction_limit)
from emulator.devices.apic import APIC_BASE, APIC_SIZE, LocalApic
from emulator.devices.console import CONSOLE_PORT
from emulator.devices.hypercall import HYPERCALL_PORT
from emulator.devices.power import POWER_PORT
from emulator.paging import read_virtual, write_virtual

# Each unicorn reserves a translation buffer; the default (1 GiB of address
# space) does not scale to 64 cores, and sprat's code is small.
TRANSLATION_BUFFER_BYTES = 16 << 20
PR_SET_THP_DISABLE = 41                   # prctl(2), Linux


@functools.cache
def no_huge_pages() -> None:
    """Ask Linux, once, for no transparent huge pages in this process. QEMU
    advises them for each unicorn's translation buffer, and the kernel then
    zeroes 2 MiB pages as a new core first touches it: 64 unicorns took 0.6 to
    3.3 s to map memory that way, 0.13 to 0.15 s without (where THP is
    `madvise`, the usual setting); sprat's code is small, and huge pages
    bought its runs nothing. Elsewhere, or if refused, nothing changes."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass                               # not Linux (no prctl): nothing to do

HLT_OPCODE = 0xF4
RFLAGS_IF = 1 << 9
SYSENTER_LENGTH = 2       # unicorn adds this to RIP after the sysenter hook
MSR_TSC_AUX = 0xC000_0103
# Events delivered in a row with no instruction retired between them: a
# handler that is never reached (a delivery that leaves RIP on an unmapped
# page, lab 1's to write). Unicorn counts no instruction, so the quantum
# never ends and modeled time stands still: without this, a hang. Real
# delivery pushes a frame each time, and runs out of stack long before.
FAULT_STORM = 1000
# RDRAND (and RDSEED, which QEMU decodes under the same bit) would read the
# host's randomness. Without the feature bit, `cpuid` says they are absent
# and both are invalid opcodes: a run stays the same run.
CPUID_1_ECX_RDRAND = 1 << 30


class CoreState(enum.Enum):
    OFF = "off"
    RUNNING = "running"
    HALTED = "halted"
    WAITING = "waiting"
    STOPPED = "stopped"
    FAILED = "failed"


NO_HORIZON = 1 << 62          # no other core is ready: nothing to yield to
UNORDERED = NO_HORIZON + 1    # a run that keeps no order (a seed's, a debugger's
                              # step, a replay): nothing lowers its horizon


class Clock:
    """What `now()` needs during a quantum, besides unicorn's instruction
    count, and what the cost model needs to keep the directory's order:
    the horizon, the instruction that was served last, and whether the
    core stopped before one (defer_this_instruction; the C hit path's
    SharedClock, emulator/hitpath.py, does that in C too, and keeps there
    the bytes of a store it stopped before)."""

    __slots__ = ("start", "quantum", "charged", "horizon", "served", "ahead", "deferred",
                 "undo_size")

    def __init__(self):
        self.start = 0        # `cycles` when this quantum began
        self.quantum = 0      # instructions this quantum may run
        self.charged = 0      # cycles the cost model charged in it
        # An instruction begun at this modeled time or later touches no
        # tracked line: another core comes first (emulator/scheduler.py).
        self.horizon = NO_HORIZON
        self.served = 0       # unicorn's count at the last tracked access served
        self.ahead = 0        # 1: cycles were charged ahead in this quantum
        self.deferred = 0     # 1: it stopped before an instruction
        self.undo_size = 0    # the C path's deferred store (never, here)


@dataclass
class CoreStats:
    instructions: int = 0
    syscalls: int = 0
    interrupts: int = 0
    ipis_received: int = 0
    ipis_sent: int = 0
    privileged_cycles: int = 0     # charged for privileged instructions and traps


class Core:
    def __init__(self, core_id: int, memory, bus):
        self.id = core_id
        self.memory = memory
        self.bus = bus
        no_huge_pages()
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.uc.ctl_set_tcg_buffer_size(TRANSLATION_BUFFER_BYTES)
        memory.map_into(self.uc)
        clear_cpuid_feature(self.uc, FEAT_1_ECX, CPUID_1_ECX_RDRAND)
        self.apic = LocalApic(self, bus)
        self.uc.mmio_map(APIC_BASE, APIC_SIZE, self.apic.read, None, self.apic.write, None)
        self.regs = Registers(self.uc)
        self._emu_counter = emu_counter(self.uc)    # unicorn's count of this quantum
        self._rip = instruction_pointer(self.uc)    # read before every quantum
        self.clock = Clock()
        self.context = SavedContext(self.uc)
        self.stats = CoreStats()
        self.state = CoreState.OFF
        self.cycles = 0               # modeled time at the start of the current quantum
        self.exit_code = None
        self.failure = None           # one line, when state is FAILED
        self.init_received = False
        self._pending = []            # heap of (arrival cycle, sequence, vector)
        self._sequence = 0
        self._in_quantum = False
        self._stop_requested = False
        self.waiting_on = ()           # the cost model's parking state (emulator/cost.py)
        self.not_before = 0            # woken by a write: runs no earlier (emulator/cost.py)
        self._pending_fault = None     # a fault a hook found (emulator/privilege.py)
        self.stop_at = None            # injected faults (emulator/faults.py): the cycle
        self.clock_ratio = 1           # it dies at; the cycles each instruction costs
        self.syscall_cycles = 0        # what a syscall and a trap's delivery cost beyond
        self.delivery_cycles = 0       # their instructions (emulator/instcost.py)
        self._storm = (-1, 0)          # (instructions retired, events since): FAULT_STORM
        self.user_faults = []          # (vector, rip, error code, cr2) of each exception
                                       # taken in ring 3, for the run's report
        self.delivered = None          # the last event's traps.Delivery (the debugger reads it)
        self._charged_ahead = []       # (unicorn's count, cycles, privileged) of instructions charged
                                       # before they ran (emulator/instcost.py)
        self._undo = []                # (physical address, bytes) of stores deferred this quantum
        self.journal = None            # told of every run and interrupt check: time
                                       # travel's record (emulator/debug/timetravel.py)
        self._install_hooks()

    # --- Wiring -----------------------------------------------------------
    def _install_hooks(self):
        uc = self.uc
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(UC_HOOK_INSN, self._on_syscall, aux1=x86.UC_X86_INS_SYSCALL)
        uc.hook_add(UC_HOOK_INSN, self._on_sysenter, aux1=x86.UC_X86_INS_SYSENTER)
        uc.hook_add(UC_HOOK_INSN, self._on_port_out, aux1=x86.UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, self._on_port_in, aux1=x86.UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid_instruction)
        uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped)
        # The Python binding refuses RDTSC and RDTSCP hooks; the C API takes
        # them with the CPUID callback's shape (return 1: the hook did it).
        self._rdtsc_callbacks = [HOOK_INSN_CPUID_CFUNC(self._on_rdtsc),
                                 HOOK_INSN_CPUID_CFUNC(self._on_rdtscp)]
        for callback, instruction in zip(self._rdtsc_callbacks,
                                         (x86.UC_X86_INS_RDTSC, x86.UC_X86_INS_RDTSCP)):
            uc._Uc__do_hook_add(UC_HOOK_INSN, callback, 1, 0, ctypes.c_int(instruction))

    def _on_rdtsc(self, _handle, _user_data):
        """The time stamp counter is the core's modeled clock: deterministic."""
        now = self.now()
        self.regs.write(x86.UC_X86_REG_RAX, now & 0xFFFF_FFFF)
        self.regs.write(x86.UC_X86_REG_RDX, (now >> 32) & 0xFFFF_FFFF)
        return 1

    def _on_rdtscp(self, handle, user_data):
        """RDTSC, and ECX = IA32_TSC_AUX (the OS puts what it likes there)."""
        self._on_rdtsc(handle, user_data)
        self.regs.write(x86.UC_X86_REG_RCX, self.read_msr(MSR_TSC_AUX) & 0xFFFF_FFFF)
        return 1

    def _on_interrupt(self, uc, vector, _):
        # a fault cuts its block short: what was charged for the rest of it
        # (emulator/instcost.py), the faulting instruction on, did not run
        self._take_back_charges(self._emu_counter.value)
        context = self.context
        context.save()
        software = context.read_i32(EXCEPTION_IS_INT) == 1
        error_code = context.read_i32(ERROR_CODE) & 0xFFFF_FFFF
        if context.read_i32(OLD_EXCEPTION) != -1:
            # Unicorn never marks an exception delivered (DESIGN.md section 6):
            # left so, the next fault is a #DF and the one after hangs the
            # engine. The delivery is lab 1's to write; this is the machine's.
            context.write_i32(OLD_EXCEPTION, -1)
            context.restore()
        self._deliver(vector, error_code, software)

    def _on_invalid_instruction(self, uc, _):
        self._take_back_charges(self._emu_counter.value)
        vector = privilege.invalid_opcode_vector(self)
        self._deliver(vector, 0 if vector == traps.GENERAL_PROTECTION else None, False)
        return True     # go on, at the handler

    def _on_syscall(self, uc, _):
        self.stats.syscalls += 1
        if self.syscall_cycles:
            self.charge(self.syscall_cycles)
        self._entering_kernel()
        try:
            traps.deliver_syscall(self)
        except (Exception, SystemExit) as error:     # noqa: BLE001 -- see _deliver
            self.fail(f"syscall at RIP {self.rip:#x}: delivery raised "
                      f"{type(error).__name__}: {error}")

    def _on_sysenter(self, uc, _):
        """In long mode an AMD64 core has no SYSENTER: #UD, at any privilege."""
        self._deliver(traps.INVALID_OPCODE, None, False, return_rip=self.rip)
        self.regs.write(x86.UC_X86_REG_RIP, self.rip - SYSENTER_LENGTH)

    def _on_port_out(self, uc, port, size, value, _):
        if not privilege.io_permitted(self, port, size):
            self._fault_after_this_instruction(traps.GENERAL_PROTECTION, 0)
        elif port == CONSOLE_PORT:
            self.bus.console.write_byte(self.id, value)
        elif port == HYPERCALL_PORT:
            self.bus.hypercall(self)
        elif port == POWER_PORT:
            self.exit_code = value & 0xFF
            self.state = CoreState.STOPPED
            self.request_stop()

    def _on_port_in(self, uc, port, size, _):
        if not privilege.io_permitted(self, port, size):
            self._fault_after_this_instruction(traps.GENERAL_PROTECTION, 0)
            return 0
        return (1 << (8 * size)) - 1     # nothing answers: the bus floats high

    def _fault_after_this_instruction(self, vector, error_code):
        """From a port hook: the engine finishes the instruction whatever the
        hook does, so undo it once the quantum stops (emulator/privilege.py)."""
        self._pending_fault = privilege.PendingFault(
            vector, error_code, self.rip, privilege.saved_port_registers(self))
        # Count this instruction as the quantum's last, and stop before the
        # engine translates another block (whose fetch could fault first).
        self.stop_after_this_instruction()
        self.request_stop()

    def _raise_pending_fault(self):
        fault, self._pending_fault = self._pending_fault, None
        for register, value in fault.registers.items():
            self.regs.write(register, value)
        self.regs.write(x86.UC_X86_REG_RIP, fault.rip)
        self._deliver(fault.vector, fault.error_code, False, return_rip=fault.rip)

    def _on_unmapped(self, uc, access, address, size, value, _):
        self.fail(f"access to non-existent physical memory at {address:#x}")
        return False

    def _deliver(self, vector, error_code, software, return_rip=None):
        self.delivered = None
        self._entering_kernel(cut_short=not software)
        # A program's exception, or its `int n` (which may become a #GP), is
        # a user fault; an interrupt that finds the core in ring 3 is not.
        fault = None
        if self.privilege == 3 and (vector < traps.FIRST_INTERRUPT_VECTOR or software):
            fault = (self.rip if return_rip is None else return_rip,
                     self.regs.read(x86.UC_X86_REG_CR2))
        try:
            self._vector(vector, error_code, software, return_rip)
        finally:
            if fault is not None:
                self._record_user_fault(vector, error_code, *fault)

    def _record_user_fault(self, vector, error_code, rip, cr2):
        """Note what the program's event became: what was delivered (`int
        14` through a kernel-only gate is a #GP), else what was raised."""
        if self.delivered is not None:
            vector, error_code = self.delivered.vector, self.delivered.error_code
        if vector < traps.FIRST_INTERRUPT_VECTOR:
            self.user_faults.append((vector, rip, error_code or 0, cr2))

    def _vector(self, vector, error_code, software, return_rip):
        if self.delivery_cycles:
            self.charge(self.delivery_cycles)
        if self._no_progress():
            self.fail(f"{FAULT_STORM} events in a row at RIP {self.rip:#x}, the last "
                      f"{traps.exception_name(vector)}, with no instruction run between them: "
                      f"their handler is never reached")
            return
        try:
            # A lab 1 workspace's traps.py from before Delivery returns None.
            self.delivered = traps.deliver_interrupt(self, vector, error_code, software,
                                                     return_rip)
        except traps.TripleFault as fault:
            self.fail(f"triple fault at RIP {self.rip:#x}: {fault}")
        except (Exception, SystemExit) as error:     # noqa: BLE001 -- a bug in trap
            # delivery (lab 1's student code, say; even a sys.exit) stops this
            # core, with the reason, not the machine
            self.fail(f"{traps.exception_name(vector)} at RIP {self.rip:#x}: delivery raised "
                      f"{type(error).__name__}: {error}")

    def _no_progress(self) -> bool:
        """Is this the FAULT_STORM-th event delivered since an instruction last retired?"""
        retired = self.stats.instructions + (self._emu_counter.value if self._in_quantum else 0)
        seen, count = self._storm
        count = count + 1 if retired == seen else 0
        self._storm = (retired, count)
        return count >= FAULT_STORM

    def _entering_kernel(self, cut_short: bool = False) -> None:
        # A `pause` parks a core on the lines read since the previous one
        # (emulator/cost.py), but only if they were all read by the code now
        # polling: once the kernel runs it may switch to another dispatcher.
        # An interrupt or exception (`cut_short`), unlike a system call or
        # `int n`, can stop a poll loop in the middle of its round.
        if self.bus.cost is not None:
            self.bus.cost.forget_reads(self, cut_short)

    # --- Host access to this core's view of memory ------------------------
    def read_virtual(self, address: int, length: int) -> bytes:
        return read_virtual(self.memory, self.regs.read(x86.UC_X86_REG_CR0),
                            self.regs.read(x86.UC_X86_REG_CR3), address, length)

    def write_virtual(self, address: int, data: bytes) -> None:
        write_virtual(self.memory, self.regs.read(x86.UC_X86_REG_CR0),
                      self.regs.read(x86.UC_X86_REG_CR3), address, data)

    def read_msr(self, msr: int) -> int:
        return self.uc.reg_read(x86.UC_X86_REG_MSR, msr)

    @property
    def rip(self) -> int:
        return self._rip.value

    @property
    def privilege(self) -> int:
        return self.regs.read(x86.UC_X86_REG_CS) & 3

    # --- Time ---------------------------------------------------------------
    def now(self) -> int:
        """Modeled time, exact even in the middle of a quantum."""
        if not self._in_quantum:
            return self.cycles
        clock = self.clock
        return clock.start + min(self._emu_counter.value, clock.quantum) + clock.charged

    def charge(self, cycles: int) -> None:
        """Add `cycles` of privileged work (emulator/instcost.py) to modeled
        time: during a quantum to its clock, between quanta to `cycles`."""
        self.stats.privileged_cycles += cycles
        if self._in_quantum:
            self.clock.charged += cycles
        else:
            self.cycles += cycles

    def charge_ahead(self, instructions: int, cycles: int) -> None:
        """From a block hook: the block's `instructions`-th instruction (the
        first is 1) costs `cycles` more.

        Not if it will not run in this quantum; and if the quantum ends or
        a fault comes before it, the charge is taken back
        (_take_back_charges), so an instruction is charged once, when it
        runs.
        """
        counter = self._emu_counter.value       # the instructions run before the block
        index = counter + instructions
        if index > self.clock.quantum:
            return
        self.charge(cycles)
        self._charged_ahead = [entry for entry in self._charged_ahead if entry[0] > counter]
        self._charged_ahead.append((index, cycles, True))
        self.clock.ahead = 1        # the C hit path leaves deferrals to Python

    def charge_this_instruction(self, cycles: int) -> None:
        """From a code hook: the instruction about to run (unicorn has
        counted it already) takes `cycles` more: a fence waiting for its
        store buffer (emulator/cost.py). Taken back, as charge_ahead's, if
        it does not run in this quantum (the cost model may stop before it:
        defer_this_instruction)."""
        counter = self._emu_counter.value
        if counter > self.clock.quantum:
            return
        self.clock.charged += cycles
        self._charged_ahead.append((counter, cycles, False))
        self.clock.ahead = 1

    def _take_back_charges(self, first: int) -> None:
        """Take back what was charged ahead for the instructions from
        unicorn's count `first` on: they will not run in this quantum."""
        if not self._charged_ahead:         # most quanta: nothing was
            return
        for index, cycles, privileged in self._charged_ahead:
            if index >= first:
                self.clock.charged -= cycles
                if privileged:
                    self.stats.privileged_cycles -= cycles
        self._charged_ahead = [entry for entry in self._charged_ahead if entry[0] < first]
        self.clock.ahead = 1 if self._charged_ahead else 0

    # --- Power and interrupts -------------------------------------------------
    def start(self, rip: int, at_cycle: int) -> None:
        """Begin executing at `rip` in 64-bit mode with paging off (our reset state)."""
        self.regs.write(x86.UC_X86_REG_RIP, rip)
        self.cycles = max(self.cycles, at_cycle)
        self.state = CoreState.RUNNING

    def raise_interrupt(self, vector: int, arrival: int) -> None:
        heapq.heappush(self._pending, (arrival, self._sequence, vector))
        self._sequence += 1

    def next_event(self) -> int | None:
        """The modeled time of the earliest pending interrupt or timer expiry."""
        # No list and no min(): the scheduler asks this of every waiting
        # core before every quantum.
        event = self._pending[0][0] if self._pending else None
        deadline = self.apic.timer_deadline
        if deadline is not None and (event is None or deadline < event):
            event = deadline
        if self.stop_at is not None and (event is None or self.stop_at < event):
            event = self.stop_at
        return event

    def interrupts_enabled(self) -> bool:
        return bool(self.regs.read(x86.UC_X86_REG_RFLAGS) & RFLAGS_IF)

    def take_due_interrupts(self) -> bool:
        """Deliver one arrived interrupt if IF allows; True if one was delivered."""
        if self.journal is None:
            return self._take_due_interrupts()
        at = self.cycles
        delivered = self._take_due_interrupts()
        self.journal.interrupts_checked(self, at, delivered)
        return delivered

    def _take_due_interrupts(self) -> bool:
        now = self.cycles
        if self.stop_at is not None and now >= self.stop_at and self._alive():
            self._stop_injected()
            return False
        if self.apic.timer_deadline is not None and self.apic.timer_deadline <= now:
            vector = self.apic.timer_expired(self.apic.timer_deadline)
            if vector is not None:
                self.raise_interrupt(vector, now)
        if not self._pending or self._pending[0][0] > now or not self.interrupts_enabled():
            return False
        if self._in_sti_shadow():
            return False
        _, _, vector = heapq.heappop(self._pending)
        if self.state is CoreState.HALTED:
            self.state = CoreState.RUNNING
        elif self.state is CoreState.WAITING:
            # Parked in a poll loop until its time slice ran out: a real core
            # would have spun until the timer interrupted it. Let it.
            self.bus.cost.unpark(self)
        self._deliver(vector, None, False)
        return True

    def masked_interrupt_due(self) -> bool:
        """Is an interrupt due that the core does not take yet (IF clear)?"""
        return bool(self._pending) and self._pending[0][0] <= self.cycles

    def _alive(self) -> bool:
        return self.state in (CoreState.RUNNING, CoreState.HALTED, CoreState.WAITING)

    def _stop_injected(self) -> None:
        """--inject stop: the core dies here (emulator/faults.py)."""
        if self.state is CoreState.WAITING:
            self.bus.cost.unpark(self)     # no write may wake it again
        self.fail(f"stopped by --inject at cycle {self.stop_at:,}")

    def _in_sti_shadow(self) -> bool:
        """Was the last instruction `sti`? Then no interrupt until the next one
        has run (Intel SDM: STI), which makes `sti; hlt` safe for idle loops."""
        try:
            return self.read_virtual(self.rip - 1, 1) == b"\xfb"
        except Exception:
            return False

    def fail(self, reason: str) -> None:
        if self.state is not CoreState.FAILED:
            self.failure = reason
            self.state = CoreState.FAILED
        self.request_stop()

    def request_stop(self) -> None:
        self._stop_requested = True
        if self._in_quantum:
            self.uc.emu_stop()

    # --- Stopping at an exact instruction (the debugger, emulator/debug/) ------
    def stop_before_this_instruction(self) -> None:
        """From a code hook: end the quantum before the hooked instruction runs.

        Unicorn's own counting hook runs before every other code hook, so
        the instruction is already counted though it will not execute
        (verified by experiment): the quantum is cut to the ones before it.
        """
        self.clock.quantum = min(self.clock.quantum, self._emu_counter.value - 1)
        self.request_stop()

    def as_code_hook(self, hook, *args) -> None:
        """From a block hook on a block's first instruction: call
        `hook(*args)` as a code hook on that instruction would be called,
        in the same state, leaving the core in the same state.

        A block hook runs before unicorn's counting hook has counted the
        block's first instruction; a code hook after it, and not at all if
        that count ends the quantum (verified by experiment). So: nothing
        if the instruction will not run in this quantum; else it is counted
        here as unicorn would, and the count put back unless the hook stops
        the core (stop_before_this_instruction, fail): unicorn's counting
        hook does not run after a stop, and the core stops counted as from
        a code hook. For hooks that stop before the instruction or not at
        all (emulator/cost.py's pause hooks), and that charge it
        (charge_this_instruction: the fence hooks), which they do at the
        count a code hook would.
        """
        counter = self._emu_counter
        if counter.value + 1 > self.clock.quantum:
            return
        counter.value += 1
        hook(*args)
        if not self._stop_requested:
            counter.value -= 1

    def stop_after_this_instruction(self) -> None:
        """From a memory hook: end the quantum as soon as this instruction is done.

        emu_stop here would leave RIP on an instruction whose store already
        happened, to be repeated on resume (DESIGN.md section 6). Lowering
        unicorn's instruction limit instead stops before the next one.
        """
        self.clock.quantum = min(self.clock.quantum, self._emu_counter.value)
        set_instruction_limit(self.uc, self.clock.quantum)
        self._stop_requested = True

    def defer_this_instruction(self, store: int | None = None, size: int = 0) -> bool:
        """From a cost model hook: end the quantum before this instruction if
        it began past the horizon (Clock.horizon: another core is ready
        first, emulator/scheduler.py); it runs again when the core does.
        False, and nothing done, if it did not.

        The cost model calls it before an instruction's first access to a
        tracked line, and before a `pause` that may park. Unicorn stopped
        from a memory hook leaves the core as a page fault at that access
        would, RIP on the instruction, and x86 makes every instruction
        restartable from there. All but one thing (verified by experiment,
        DESIGN.md section 6): the store the hook was called for is made
        anyway. `store`: its physical address; its `size` bytes are put
        back when the quantum ends, before any other core runs.
        """
        counter = self._emu_counter.value
        began = self.now() - 1                 # the clock the core stops with, which
        if self._charged_ahead:                # leaves out what was charged ahead for it
            began -= sum(cycles for index, cycles, _ in self._charged_ahead if index >= counter)
        if began < self.clock.horizon:
            return False
        if store is not None:
            self._undo.append((store, self.memory.read(store, size)))
        self.clock.deferred = 1
        self.stop_before_this_instruction()
        return True

    # --- Running ----------------------------------------------------------------
    def run(self, quantum: int, horizon: int = UNORDERED) -> int:
        """Run at most `quantum` instructions; return how many retired.
        `horizon`: see Clock (the scheduler's; a debugger's step or a replay
        runs its instructions, whoever else is ready)."""
        if self.journal is None:
            return self._run(quantum, horizon)
        at, running = self.cycles, self.state
        retired = self._run(quantum, horizon)
        self.journal.ran(self, at, retired, parked=self.state is not running
                         and self.state is CoreState.WAITING)
        return retired

    def _run(self, quantum: int, horizon: int) -> int:
        clock = self.clock
        clock.start = self.cycles       # `cycles` does not move during a quantum
        clock.quantum = quantum
        clock.charged = 0
        clock.horizon = horizon
        clock.served = 0
        clock.deferred = 0
        if self._charged_ahead:
            self._charged_ahead = []
            clock.ahead = 0
        self._stop_requested = False
        self._in_quantum = True
        try:
            self.uc.emu_start(self._rip.value, 0, count=quantum)
        except UcError as error:
            if self.state is not CoreState.FAILED:
                self.fail(f"unicorn stopped at RIP {self.rip:#x}: {error}")
        finally:
            self._in_quantum = False
        deferred = clock.deferred
        if deferred:
            self._unmake_deferred_stores()
        # clock.quantum, not quantum: a debugger stop may have cut it short.
        retired = min(self._emu_counter.value, clock.quantum)    # cpustate.retired_instructions,
                                                                 # through the view kept
        if self._charged_ahead:             # charged ahead, but the quantum ended first
            self._take_back_charges(retired + 1)
        self.stats.instructions += retired
        self.cycles += retired * self.clock_ratio + clock.charged   # zeroed as the next begins
        if self._pending_fault is not None:
            self._raise_pending_fault()
        # The counter passes `quantum` only when the quantum ran out; if it did
        # not, unicorn stopped by itself: `hlt` (even as the quantum's last one).
        if self._emu_counter.value <= quantum and not self._stop_requested \
                and not deferred and self._halted_here():
            self.state = CoreState.HALTED
        return retired

    def _unmake_deferred_stores(self) -> None:
        """The quantum stopped before an instruction whose store was made all
        the same (defer_this_instruction): put its bytes back, before any
        other core runs. Latest first: the C hit path's (in the clock) is
        the quantum's first, if any."""
        while self._undo:
            address, data = self._undo.pop()
            self.memory.write(address, data)
        clock = self.clock
        if clock.undo_size:
            self.memory.write(clock.undo_address, bytes(clock.undo)[:clock.undo_size])
            clock.undo_size = 0

    def _halted_here(self) -> bool:
        """Did the quantum end early because of `hlt`? (unicorn stops on it)"""
        try:
            return self.read_virtual(self.rip - 1, 1)[0] == HLT_OPCODE
        except Exception:
            return False
