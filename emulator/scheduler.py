"""The deterministic scheduler: run the core that is furthest behind.

Every core has a modeled clock. The scheduler always picks the core whose
clock is lowest (ties go to the lower core id) and runs it for at most one
quantum of instructions, cut short so that it stops exactly when its next
interrupt is due. Nothing depends on the host: the same image with the same
options gives the same run, instruction for instruction.

A halted core is not run at all: it is "ready" at the time of its next
interrupt, and its clock jumps there. So is a core parked in a poll loop
(emulator/cost.py): a write to a line it polls wakes it, and so does its
next interrupt (a time slice ending, when its core has several
dispatchers), with its clock where it would be had it spun till then.
A core that is off, stopped or failed is never ready. When no core is ready, the machine is done.

The quantum is a trade-off (DESIGN.md section 6): a larger one is faster on
the host (each emu_start costs ~20 us), a smaller one interleaves cores more
finely. The coherence model charges by causality, so message latencies
between cores that wait for each other (a ping-pong, a request and its
reply) come out the same for any quantum above a few dozen instructions
(tests/test_urpc.py checks this). Contended shared memory is different:
with a large quantum a core makes many updates while its lines stay in its
cache before another core runs, so `sprat bench shm-vs-msg` measures with
a quantum of 1. Small quanta cost host time, not accuracy.
"""

from emulator.core import CoreState

DEFAULT_QUANTUM = 10_000


class Scheduler:
    def __init__(self, cores, quantum: int = DEFAULT_QUANTUM):
        if quantum < 1:
            raise ValueError("quantum must be at least 1 instruction")
        self.cores = cores
        self.quantum = quantum
        self.quanta_run = 0

    def ready_time(self, core) -> int | None:
        """When `core` could next run, or None if it never can by itself."""
        if core.state is CoreState.RUNNING:
            return core.cycles
        # A core halted, or parked polling (emulator/cost.py), is ready at
        # its next interrupt: for a parked core, say, a time slice's end lets
        # the core's other dispatchers run, as it would on a spinning core.
        if core.state is CoreState.WAITING or \
                (core.state is CoreState.HALTED and core.interrupts_enabled()):
            event = core.next_event()
            return None if event is None else max(event, core.cycles)
        return None

    def next_core(self):
        """The ready core with the lowest ready time, and that time."""
        best, best_time = None, None
        for core in self.cores:
            time = self.ready_time(core)
            if time is not None and (best_time is None or time < best_time):
                best, best_time = core, time
        return best, best_time

    def run_one(self, core, time: int, limit: int | None = None) -> int:
        """Bring `core` to `time`, take its due interrupts, run one quantum."""
        core.cycles = max(core.cycles, time)
        while core.take_due_interrupts():
            pass
        if core.state is not CoreState.RUNNING:
            return 0
        budget = self.quantum if limit is None else min(self.quantum, limit)
        event = core.next_event()
        if event is not None and event > core.cycles:
            budget = min(budget, event - core.cycles)
        self.quanta_run += 1
        return core.run(max(1, budget))
