"""The sprat machine: N cores, one shared physical memory, and the devices.

    machine = Machine(cores=4, output=print)
    machine.memory.write(0x200000, code)    # the boot loader's job
    machine.power_on(entry=0x200000, registers={...})
    result = machine.run(max_cycles=10**8)

Core 0 (the bootstrap processor) starts at the entry point in 64-bit mode
with paging off, the state a boot loader leaves it in; every other core
waits, as on real x86, for an INIT and a STARTUP IPI from a running core
(emulator/devices/apic.py). The machine also plays the part of the system
bus: it carries IPIs between local APICs.

`run` returns when no core can run any more, when the cycle budget is
spent, or when the machine is stuck: cores wait on lines that no core
writes, and the only thing left that wakes a core is a timer, after which
it polls and waits again (a guest's service has died and its clients wait
for it forever). The machine knows nothing of operating systems: any
x86-64 guest that speaks to these devices can run on it.

The interconnect is a parameter: `topology` (emulator/interconnect/) says
which cores share caches and how far apart packages are, and the cost
model (emulator/cost.py) charges accesses to tracked memory by it. With
`cost_model=False` nothing is tracked and memory is free, for comparison.
"""

import traceback
from dataclasses import dataclass
from pathlib import Path

from emulator import sources
from emulator.core import Core, CoreState
from emulator.cpustate import check_layout
from emulator.devices.apic import (DELIVERY_FIXED, DELIVERY_INIT, DELIVERY_STARTUP,
                                   IPI_LATENCY_CYCLES)
from emulator.devices.console import Console
from unicorn import x86_const as x86

from emulator.cost import TIMING_MODES, CostModel, lower_horizon
from emulator.devices.hypercall import ENOSYS
from emulator.errors import SpratError
from emulator.interconnect import generic
from emulator.memory import PhysicalMemory
from emulator.scheduler import DEFAULT_QUANTUM, Scheduler

MAX_CORES = 64
DEFAULT_MEMORY = 64 << 20
# Stuck: in STUCK_WINDOW cycles no core retired STUCK_INSTRUCTIONS and one
# waits on a line. A machine at work retires about one instruction per
# cycle on a busy core; on a stuck one each core only takes its timer
# interrupts (a time slice of sprat's CPU driver is 100,000 cycles: a few
# hundred instructions each, about a thousand where the core switches
# between two waiting dispatchers). Counted per core, so that 64 cores
# taking their ticks are no busier than one.
STUCK_WINDOW = 10_000_000
STUCK_INSTRUCTIONS = STUCK_WINDOW // 50
STARTUP_PAGE_SIZE = 4096      # a STARTUP IPI's vector names a 4 KiB page


@dataclass
class RunResult:
    clean: bool          # every core switched itself off with exit code 0
    reason: str          # one line: why the run ended
    cycles: int          # the highest core clock


class Machine:
    def __init__(self, cores: int, memory_size: int = DEFAULT_MEMORY,
                 quantum: int = DEFAULT_QUANTUM, output=None, topology=None,
                 cost_model: bool = True, seed: int | None = None, timing: str = "fast"):
        if not 1 <= cores <= MAX_CORES:
            raise SpratError(f"--cores must be between 1 and {MAX_CORES}, got {cores}")
        if topology is not None and topology.n_cores() != cores:
            raise SpratError(f"topology {topology.name} has {topology.n_cores()} cores, "
                             f"not {cores}")
        if quantum < 1:
            raise SpratError(f"--quantum must be at least 1 instruction, got {quantum}")
        if timing not in TIMING_MODES:
            raise SpratError(f"--timing must be one of {', '.join(TIMING_MODES)}, got {timing!r}")
        check_layout()
        self.n_cores = cores
        self.memory = PhysicalMemory(memory_size)
        self.console = Console(cores, output or (lambda core, line: None))
        self.cores = [Core(i, self.memory, self) for i in range(cores)]
        # Detailed timing serves tracked accesses in the order of the cores'
        # clocks; the scheduler keeps that order (emulator/cost.py, "Timing").
        self.timing = timing if cost_model else "fast"
        self.scheduler = Scheduler(self.cores, quantum, seed,
                                   ordered=self.timing == "detailed")
        self.observers = []       # callables(event, **fields), e.g. the message trace
        self._hypercall_handler = None
        self.topology = topology or generic(cores)
        self.cost = CostModel(self, self.topology, timing) if cost_model else None

    def power_on(self, entry: int, registers: dict[int, int] | None = None) -> None:
        """Start the bootstrap processor (core 0) at `entry`."""
        bsp = self.cores[0]
        for register, value in (registers or {}).items():
            bsp.regs.write(register, value)
        bsp.start(entry, 0)

    # --- The bus: IPIs between local APICs ----------------------------------
    def send_ipi(self, source: int, target: int, mode: int, vector: int, now: int) -> None:
        if not 0 <= target < self.n_cores:
            return                      # nobody at that APIC ID: the IPI is lost
        sender, receiver = self.cores[source], self.cores[target]
        arrival = now + IPI_LATENCY_CYCLES
        sender.stats.ipis_sent += 1
        receiver.stats.ipis_received += 1
        self._notify("ipi", source=source, target=target, mode=mode, vector=vector, time=now)
        if mode == DELIVERY_INIT:
            if receiver.state is CoreState.OFF:
                receiver.init_received = True
        elif mode == DELIVERY_STARTUP:
            if receiver.state is CoreState.OFF and receiver.init_received:
                receiver.start(vector * STARTUP_PAGE_SIZE, arrival)
        elif mode == DELIVERY_FIXED and vector >= 16:
            receiver.raise_interrupt(vector, arrival)
        if self.cost is not None and receiver is not sender \
                and (time := self.scheduler.ready_time(receiver)) is not None:
            # The receiver may now be ready before the sender's horizon.
            lower_horizon(sender, receiver, time)

    # --- The hypercall port (emulator/devices/hypercall.py) -------------------
    def set_hypercall_handler(self, handler) -> None:
        """`handler(core)` serves `out HYPERCALL_PORT` from that core's kernel."""
        self._hypercall_handler = handler

    def hypercall(self, core) -> None:
        handler = self._hypercall_handler
        if handler is None:
            core.regs.write(x86.UC_X86_REG_RAX, -ENOSYS)
            return
        try:
            handler(core)
        except SpratError as error:        # the OS's service refused: a machine fault
            core.fail(f"hypercall: {error}")
        except (Exception, SystemExit) as error:     # noqa: BLE001 -- a bug in the
            # service (a lab's student code, say; even a sys.exit) stops this
            # core, with the reason, not the machine
            core.fail(f"hypercall: the service raised {type(error).__name__}: {error}"
                      f"{_raised_in(error)}")

    def _notify(self, event: str, **fields) -> None:
        for observer in self.observers:
            observer(event, **fields)

    # --- Running --------------------------------------------------------------
    def run(self, max_cycles: int | None = None) -> RunResult:
        """Run until no core can run, until every clock passes max_cycles, or
        until the machine is stuck."""
        window_start, retired_then = None, self._retired()
        next_core, run_one = self.scheduler.next_core, self.scheduler.run_one  # once a quantum
        while True:
            core, time = next_core()
            if core is None:
                break
            if max_cycles is not None and time >= max_cycles:
                self.console.flush()
                return RunResult(False, self._budget_reason(max_cycles), self.elapsed())
            if window_start is None:
                window_start = time
            elif time >= window_start + STUCK_WINDOW:
                retired = self._retired()
                busiest = max(now - then for now, then in zip(retired, retired_then))
                if busiest < STUCK_INSTRUCTIONS and self._waiting():
                    self.console.flush()
                    return RunResult(False, self._stuck_reason(sum(retired) - sum(retired_then)),
                                     self.elapsed())
                window_start, retired_then = time, retired
            limit = None if max_cycles is None else max_cycles - time
            run_one(core, time, limit)
        self.console.flush()
        return self._outcome()

    def step(self, core_id: int, count: int = 1) -> int:
        """Run exactly `count` instructions of one core (the debugger's step)."""
        core = self.cores[core_id]
        done = 0
        while done < count and core.state in (CoreState.RUNNING, CoreState.HALTED):
            time = self.scheduler.ready_time(core)
            if time is None:
                break
            done += self.scheduler.run_one(core, time, count - done) or 0
            if core.state is CoreState.HALTED:
                break
        return done

    def outcome(self) -> RunResult:
        """How the machine stands: why it ended, once no core can run (the debugger asks)."""
        return self._outcome()

    def elapsed(self) -> int:
        return max(core.cycles for core in self.cores)

    def _budget_reason(self, max_cycles):
        busy = [c for c in self.cores if c.state is CoreState.RUNNING]
        where = f" (core {busy[0].id} still running at RIP {busy[0].rip:#x})" if busy else ""
        return f"cycle budget of {max_cycles:,} cycles exhausted{where}"

    def _retired(self) -> list[int]:
        return [core.stats.instructions for core in self.cores]

    def _waiting(self) -> list:
        return [core for core in self.cores if core.state is CoreState.WAITING]

    def _stuck_reason(self, retired: int) -> str:
        waiting = [str(core.id) for core in self._waiting()]
        halted = [str(core.id) for core in self.cores if core.state is CoreState.HALTED]
        named = ", ".join(waiting[:3]) + (f", ... ({len(waiting)} cores)" if waiting[3:] else "")
        return (f"stuck: {retired:,} instructions in the last {STUCK_WINDOW:,} cycles; "
                f"waiting on lines that no core writes: core {named}"
                + (f"; halted: core {', '.join(halted)}" if halted else ""))

    def _outcome(self) -> RunResult:
        for core in self.cores:
            if core.state is CoreState.FAILED:
                return RunResult(False, f"core {core.id}: {core.failure}", self.elapsed())
        for core in self.cores:
            if core.state is CoreState.OFF:
                return RunResult(False, f"core {core.id} was never started", self.elapsed())
            if core.state is CoreState.HALTED and not core.interrupts_enabled():
                return RunResult(False, f"core {core.id} halted at RIP {core.rip:#x} with "
                                        f"interrupts off: nothing will wake it", self.elapsed())
            if core.state is CoreState.WAITING:
                return RunResult(False, f"core {core.id} waits at RIP {core.rip:#x} for a write "
                                        f"to physical line {core.waiting_on[0] << 6:#x} that no core "
                                        f"will make", self.elapsed())
            if core.exit_code:
                return RunResult(False, f"core {core.id} stopped with exit code {core.exit_code}",
                                 self.elapsed())
        # What is left: cores switched off with code 0, and cores idle in `hlt`
        # waiting for an interrupt that no one will send: the machine is quiet.
        return RunResult(True, "every core halted cleanly", self.elapsed())


def _raised_in(error: Exception) -> str:
    """ (at FILE:LINE in FUNCTION): the innermost frame of the tree's (or a
    lab workspace's) code that the exception passed through, where a person
    looks first, rather than inside Python's own library."""
    frame = sources.innermost_own_frame(traceback.extract_tb(error.__traceback__))
    if frame is None:
        return ""
    return f" (at {sources.tree_relative(Path(frame.filename))}:{frame.lineno} in {frame.name})"
