"""The scheduler's choice, on its own: which core runs next, and its horizon.

In detailed timing the core run is given a horizon, the (ready time, id) of
the first of the others (emulator/scheduler.py): what it may not pass with
a tracked access. These tests hand the scheduler stand-in cores whose
clocks are set by hand, and look at what it runs and with what horizon.
"""

import random

from emulator.core import NO_HORIZON, UNORDERED, CoreState
from emulator.scheduler import Scheduler, horizon_for


class StandIn:
    """What the scheduler reads of a core, and a run() that records its horizon."""

    def __init__(self, core_id, cycles, state=CoreState.RUNNING, not_before=0, event=None):
        self.id, self.cycles, self.state = core_id, cycles, state
        self.not_before, self.event = not_before, event
        self.clock_ratio = 1
        self.horizons = []

    def interrupts_enabled(self):
        return True

    def next_event(self):
        return self.event

    def take_due_interrupts(self):
        if self.state is CoreState.WAITING and self.event is not None \
                and self.event <= self.cycles:
            self.state = CoreState.RUNNING    # its timer: the interrupt unparks it
            return True
        return False

    def masked_interrupt_due(self):
        return False

    def run(self, quantum, horizon):
        self.horizons.append(horizon)
        return quantum


def run_next(scheduler):
    """Pick a core and run it; (its id, its ready time, its horizon)."""
    core, time = scheduler.next_core()
    if core is None:
        return None
    scheduler.run_one(core, time)
    return core.id, time, core.horizons[-1]


def test_the_earliest_core_runs_until_the_first_of_the_others():
    # Core 2 comes next, at 40; core 1, the lower id, may still begin an
    # access at 40: its horizon is 41.
    cores = [StandIn(0, 50), StandIn(1, 30), StandIn(2, 40)]
    assert run_next(Scheduler(cores, ordered=True)) == (1, 30, 41), (
        "core 1 is furthest behind and core 2 comes next at 40: core 1 should run with horizon 41")


def test_equal_clocks_go_to_the_lower_id_which_may_reach_the_others_time():
    # Core 1 and core 2 are both at 30: core 1 runs first, and may begin an
    # access at 30 itself (core 2's turn at 30 comes after its own).
    cores = [StandIn(0, 50), StandIn(1, 30), StandIn(2, 30)]
    assert run_next(Scheduler(cores, ordered=True)) == (1, 30, 31)


def test_a_lower_id_waiting_behind_stops_the_core_run_at_its_time():
    # Core 0 at 40 comes before core 1 at 40 in the scheduler's order.
    cores = [StandIn(0, 40), StandIn(1, 30)]
    assert run_next(Scheduler(cores, ordered=True)) == (1, 30, 40)


def test_a_woken_core_is_ready_when_the_write_reaches_it():
    cores = [StandIn(0, 10, not_before=60), StandIn(1, 30)]
    assert run_next(Scheduler(cores, ordered=True)) == (1, 30, 60)


def test_the_only_ready_core_has_no_horizon():
    cores = [StandIn(0, 10, state=CoreState.STOPPED), StandIn(1, 30),
             StandIn(2, 5, state=CoreState.HALTED)]      # halted, nothing will wake it
    assert run_next(Scheduler(cores, ordered=True)) == (1, 30, NO_HORIZON)


def test_a_core_held_by_the_debugger_is_passed_over():
    scheduler = Scheduler([StandIn(0, 10), StandIn(1, 30), StandIn(2, 35)], ordered=True)
    core, time = scheduler.next_core(skip={0})
    assert (core.id, time) == (1, 30), "a held core was chosen to run"
    scheduler.run_one(core, time)
    assert core.horizons == [36], "a held core still bounded the horizon of the core run"


def test_fast_timing_runs_the_earliest_core_with_no_horizon():
    cores = [StandIn(0, 50), StandIn(1, 30), StandIn(2, 40)]
    assert run_next(Scheduler(cores, ordered=False)) == (1, 30, UNORDERED)


def test_the_choice_is_the_first_by_time_then_id_on_any_mix_of_cores():
    # The rule, stated plainly: sort the ready cores by (ready time, id);
    # the first runs, and the second bounds its horizon.
    draw = random.Random(5)
    for _ in range(500):
        cores = []
        for core_id in range(draw.randint(1, 6)):
            state = draw.choice([CoreState.RUNNING] * 4 + [CoreState.WAITING, CoreState.OFF])
            # (A parked core is ready at its next event, if it has one.)
            cores.append(StandIn(core_id, draw.randint(0, 5) * 10, state=state,
                                 not_before=draw.choice([0, 0, 25]),
                                 event=draw.choice([None, 35]) if state is CoreState.WAITING
                                 else None))
        ready = sorted((time, core.id) for core in cores
                       if (time := Scheduler(cores).ready_time(core)) is not None)
        expected = None
        if ready:
            (time, first), rest = ready[0], ready[1:]
            horizon = horizon_for(cores[first], *rest[0]) if rest else NO_HORIZON
            expected = first, time, horizon
        assert run_next(Scheduler(cores, ordered=True)) == expected, (
            f"cores (id, state, ready time): "
            f"{[(c.id, c.state.name, Scheduler(cores).ready_time(c)) for c in cores]}")
