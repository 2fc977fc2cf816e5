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
the host (each quantum costs some microseconds beyond its instructions:
emu_start, the choice below, the core's bookkeeping), a smaller one
interleaves cores more finely. In fast timing (the default, emulator/cost.py
"Timing modes") a core's accesses reach the coherence directory as it runs
them, and what contends is served in the order the quanta fall; causality
keeps message latencies between cores that wait for each other the same at
any quantum (a core woken by a write to a line it polls runs no earlier than
that write could reach it: `not_before`, emulator/cost.py;
tests/test_urpc.py, tests/test_shootdown.py). In detailed timing (`ordered`)
the quantum does not change what cores see of each other. The core run is
given a horizon: the (ready time, id) of the first of the others, the one
the scheduler would run next. An instruction that begins at or past it makes
no access to a tracked line, nor parks on a `pause`: the core stops before
it and the others run first (emulator/cost.py, "Ordering"). So the coherence
directory sees accesses in the order of their modeled times, as at a quantum
of one instruction, and what a run measures is the same for any quantum
(tests/test_ordering.py). A woken core is ready at `not_before`, and the
writer's horizon comes down to it. Small quanta cost host time, not
accuracy. (`sprat bench shm-vs-msg` still switches to a quantum of 1 for its
measured phase, from before the horizon; it gives the same figures at
10,000.)

A seed chooses another schedule (`--seed S`): among the cores ready within
one quantum's worth of cycles of the earliest, one is picked at random, and
it runs for a random number of instructions, from 1 to the quantum, drawn
so that short turns are as likely as long ones (log-uniform). It runs with
no horizon: a seed is there to run cores out of the order of their clocks,
so that a race that needs two cores to interleave at one exact instruction
(a receiver reading between two of a sender's stores, lab 5) shows under
some seeds; with a horizon every such pick would stop at its first tracked
access and the schedule would fall back to the clocks' order. Causality
still holds, since it is the cost model's (a line written at time t is seen
no earlier than t plus its transfer), so what a run measures stays
meaningful, though it may differ from the unseeded figure. The generator is
Python's own, seeded with S and used by nothing else: the same seed gives
the same run; no seed gives the schedule above.
"""

import math
import random

from emulator.core import NO_HORIZON, UNORDERED, CoreState

DEFAULT_QUANTUM = 10_000
_NO_CHOICE = None, UNORDERED      # Scheduler._horizon when next_core chose no core


class Scheduler:
    def __init__(self, cores, quantum: int = DEFAULT_QUANTUM, seed: int | None = None,
                 ordered: bool = False):
        if quantum < 1:
            raise ValueError("quantum must be at least 1 instruction")
        self.cores = cores
        self.quantum = quantum
        self.quanta_run = 0
        self.seed = seed
        self._random = random.Random(seed) if seed is not None else None
        self.ordered = ordered               # give the core run a horizon (detailed timing)
        self._horizon = _NO_CHOICE          # (core next_core chose, its quantum's horizon)

    def ready_time(self, core) -> int | None:
        """When `core` could next run, or None if it never can by itself."""
        if core.state is CoreState.RUNNING:
            # A core woken by a write waits for the line (emulator/cost.py,
            # _wake) without its clock moving: what its read costs is the
            # cost model's to say.
            return max(core.cycles, core.not_before)
        # A core halted, or parked polling (emulator/cost.py), is ready at
        # its next interrupt: for a parked core, say, a time slice's end lets
        # the core's other dispatchers run, as it would on a spinning core.
        if core.state is CoreState.WAITING or core.state is CoreState.HALTED:
            event = core.next_event()
            if event is None or (core.state is CoreState.HALTED and
                                 not core.interrupts_enabled()):
                return None      # (the event first: IF is a register read)
            return event if event > core.cycles else core.cycles
        return None

    def next_core(self, skip=()):
        """The ready core with the lowest ready time, and that time (with a
        seed: any ready core within a quantum of the lowest). Cores whose ids
        are in `skip` are passed over (a debugger holds them)."""
        if self._random is not None:
            return self._pick_at_random(skip)
        # One pass, no lists: this runs before every quantum, and where cores
        # meet (URPC) a quantum is a few dozen instructions. `best` is the
        # first core with the lowest time (ties: the lower id, as the cores
        # are in id order); `runner_up` the first of the others by (time, id).
        best = best_time = runner_up = None
        for core in self.cores:
            if core.id in skip:
                continue
            state = core.state
            if state is CoreState.RUNNING:           # ready_time's cases, inline
                time = core.cycles if core.cycles >= core.not_before else core.not_before
            elif state is CoreState.WAITING:
                if (time := core.next_event()) is None:
                    continue
                if time < core.cycles:
                    time = core.cycles
            elif state is not CoreState.HALTED or (time := self.ready_time(core)) is None:
                continue
            if best is None:
                best, best_time = core, time
            elif time < best_time:
                runner_up = best_time, best.id
                best, best_time = core, time
            elif runner_up is None or time < runner_up[0]:
                runner_up = time, core.id
        if best is None:
            return None, None
        if not self.ordered:
            self._horizon = best, UNORDERED
        else:       # the core runs until the first of the others would
            self._horizon = best, horizon_for(best, *runner_up) if runner_up else NO_HORIZON
        return best, best_time

    def _pick_at_random(self, skip):
        """next_core with a seed: any ready core within a quantum of the lowest."""
        ready = [(core, time) for core in self.cores
                 if core.id not in skip and (time := self.ready_time(core)) is not None]
        if not ready:
            return None, None
        best_time = min(time for _, time in ready)
        close = [(core, time) for core, time in ready if time <= best_time + self.quantum]
        best, best_time = close[self._random.randrange(len(close))]
        self._horizon = best, UNORDERED
        return best, best_time

    def _turn(self) -> int:
        """How many instructions the next quantum may run."""
        if self._random is None:
            return self.quantum
        return max(1, int(math.exp(self._random.uniform(0, math.log(self.quantum + 1)))))

    def run_one(self, core, time: int, limit: int | None = None) -> int:
        """Bring `core` to `time`, take its due interrupts, run one quantum."""
        if core.state is not CoreState.RUNNING:
            core.cycles = max(core.cycles, time)
        while core.take_due_interrupts():
            pass
        if core.state is not CoreState.RUNNING:
            return 0
        budget = self._turn() if limit is None else min(self._turn(), limit)
        if core.masked_interrupt_due():
            # Due but masked (IF clear, or right after sti): it is taken at
            # the first instruction boundary that allows it, whatever the
            # quantum, so the core goes one instruction at a time till then.
            budget = 1
        chosen, horizon = self._horizon
        self._horizon = _NO_CHOICE
        # A core run otherwise than as next_core's choice (a debugger's step)
        # runs its instructions, whoever is ready first.
        horizon = horizon if chosen is core else UNORDERED
        event = core.next_event()
        if event is not None and event > core.cycles:
            # A slowed core (emulator/faults.py) spends clock_ratio cycles an instruction.
            budget = min(budget, -(-(event - core.cycles) // core.clock_ratio))
            # The quantum ends at the event as counted in instructions; the
            # cycles the cost model charges bring it sooner, and the core
            # makes no tracked access once it is due (it is taken first).
            if horizon != UNORDERED:
                horizon = min(horizon, event)
        self.quanta_run += 1
        return core.run(max(1, budget), horizon)


def horizon_for(core, time: int, other_id: int) -> int:
    """The horizon of `core` when another core, `other_id`, is ready at
    `time`: the modeled time from which `core` comes after it in the
    scheduler's order (ties go to the lower id)."""
    return time + 1 if core.id < other_id else time
