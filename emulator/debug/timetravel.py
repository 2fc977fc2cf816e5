"""Running backwards: checkpoints as the machine runs, and exact re-execution.

    travel = TimeTravel(engine)            # from now on, history is kept
    engine.resume()                        # ... a watchpoint stops core 1
    event = travel.reverse_continue()      # the previous breakpoint or watchpoint hit
    event = travel.reverse_step(0)         # one instruction of core 0 undone

sprat's machine is deterministic (DESIGN.md section 2), so the past need
not be stored, only found again, as the OCaml debugger and rr do:

  the journal      every core's every quantum and every look for a due
                   interrupt, in order (Core.run and Core.take_due_interrupts
                   report them: `ran`, `interrupts_checked`), with the
                   instructions it retired and the cycle it began at
  checkpoints      the whole machine (emulator/checkpoint.py), taken at the
                   start and every `every` quanta after
  a position       (entry, n): the journal's entries before `entry` done,
                   and the first n instructions of entry `entry`

Going to a position restores the last checkpoint at or before it and
replays the journal from there: each quantum for exactly the instructions
it retired, cut where the position falls. A quantum replayed in pieces
is the quantum: nothing happens between instructions of one quantum but
the instructions. What comes after the position is forgotten (the
journal and the later checkpoints): from there the machine makes a new
future, which may differ (the debugger's stops cut quanta).

`reverse_continue` looks for the last breakpoint or watchpoint hit before
now: it replays from the nearest checkpoint with the debugger's hooks
live, noting every hit without stopping, and goes back one checkpoint at
a time until it finds one. A watchpoint hit lands before the store (the
core stands on the storing instruction, the memory still old), as in
gdb's reverse execution; a breakpoint hit lands on the breakpoint.

Changes made from outside (a register or memory written from the
debugger) are not in the journal: `changed()` takes a checkpoint after
one, so that no replay crosses it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from emulator import checkpoint
from emulator.core import CoreState
from emulator.debug.target import StopEvent, TargetError

# A checkpoint every CHECKPOINT_QUANTA quanta: going back replays at most
# that many (each up to a quantum of instructions). `sprat bench explore`
# measures what taking them costs.
CHECKPOINT_QUANTA = 200
MAX_CHECKPOINTS = 32          # then every other old one goes (the spacing doubles)


@dataclass(frozen=True)
class Entry:
    kind: str                 # "run" or "interrupts"
    core: int
    cycles: int               # the core's clock when it began
    amount: int               # run: instructions retired; interrupts: 1 if one was delivered
    parked: bool = False      # run: it ended parking the core on a poll loop
    quanta: int = 0           # the scheduler's count of quanta


@dataclass
class Hit:
    position: tuple[int, int]
    event: StopEvent
    causes: list


class TimeTravel:
    """The history of one debugged machine, and moving through it."""

    def __init__(self, engine, every: int = CHECKPOINT_QUANTA):
        if every < 1:
            raise TargetError(f"checkpoints every {every} quanta: at least 1")
        self.engine = engine
        self.machine = engine.machine
        self.every = every
        self.journal: list[Entry] = []
        self.checkpoints: list[tuple[int, checkpoint.Checkpoint]] = []
        self._since = 0                 # quanta since the last checkpoint
        self._replaying = False
        self.at_start = False           # the last reverse_continue found no hit
        self._checkpoint()
        for core in self.machine.cores:
            core.journal = self

    def close(self) -> None:
        for core in self.machine.cores:
            core.journal = None

    # --- What the cores report (emulator/core.py) -----------------------------------
    def ran(self, core, at: int, retired: int, parked: bool) -> None:
        if self._replaying:
            return
        self.journal.append(Entry("run", core.id, at, retired, parked,
                                  self.machine.scheduler.quanta_run))
        self._since += 1
        if self._since >= self.every:
            self._checkpoint()

    def interrupts_checked(self, core, at: int, delivered: bool) -> None:
        if not self._replaying:
            self.journal.append(Entry("interrupts", core.id, at, int(delivered), False,
                                      self.machine.scheduler.quanta_run))

    def changed(self) -> None:
        """The debugger changed the machine: the journal cannot replay that."""
        self._checkpoint()

    def _checkpoint(self) -> None:
        if self.checkpoints and self.checkpoints[-1][0] == len(self.journal):
            self.checkpoints.pop()      # the same moment, changed since: only the new one holds
        self.checkpoints.append((len(self.journal), checkpoint.take(self.machine)))
        self._since = 0
        if len(self.checkpoints) > MAX_CHECKPOINTS:
            # Keep the first and the newest; thin the rest to every other one.
            first, *middle, last = self.checkpoints
            self.checkpoints = [first, *middle[1::2], last]
            self.every *= 2

    # --- Where we are ---------------------------------------------------------------
    def now(self) -> tuple[int, int]:
        return len(self.journal), 0

    def _normal(self, position: tuple[int, int]) -> tuple[int, int]:
        """A position at the very end of a quantum is the one after it."""
        entry, n = position
        if entry < len(self.journal) and self.journal[entry].kind == "run" \
                and n >= self.journal[entry].amount:
            return entry + 1, 0
        return position

    # --- Going backwards --------------------------------------------------------------
    def reverse_step(self, core_id: int) -> StopEvent:
        """Undo the last instruction `core_id` executed (or the interrupt it took)."""
        self.engine.core(core_id)
        for index in range(len(self.journal) - 1, -1, -1):
            entry = self.journal[index]
            if entry.core != core_id or entry.amount == 0:
                continue
            position = (index, entry.amount - 1) if entry.kind == "run" else (index, 0)
            self.go_to(position)
            return StopEvent(core_id, "step")
        raise TargetError(f"core {core_id} has not executed anything since the debugger "
                          f"started recording: nothing to undo")

    def reverse_continue(self) -> StopEvent:
        """Back to the last breakpoint or watchpoint hit before now; if none,
        to the start of the recorded history (then `at_start` is true)."""
        self.at_start = False
        end = self.now()
        for start, _ in reversed(self.checkpoints):
            if start >= end[0] and end[1] == 0 and start != 0:
                continue
            hits = self._hits_between(start, end)
            if hits:
                hit = hits[-1]
                self.go_to(hit.position)
                self.engine.stop_causes = hit.causes
                for cause in hit.causes:
                    cause.hits += 1
                return hit.event
            end = (start, 0)
        self.go_to((0, 0))
        self.at_start = True
        return StopEvent(self.engine._last_core, "step")

    def _hits_between(self, start: int, end: tuple[int, int]) -> list[Hit]:
        """Replay from the checkpoint at entry `start` up to `end`, noting hits."""
        hits: list[Hit] = []
        self._restore_at(start)
        engine, saved = self.engine, self._engine_state()
        try:
            for index in range(start, min(end[0] + 1, len(self.journal))):
                limit = end[1] if index == end[0] else None
                if index == end[0] and limit == 0:
                    break
                self._replay(index, limit, hits)
        finally:
            self._restore_engine(saved)
        # A hit at the very position we are leaving from is where we are, not before it.
        return [hit for hit in hits if self._normal(hit.position) < self._normal(end)]

    def go_to(self, position: tuple[int, int]) -> None:
        """Make the machine what it was at `position`, and forget what came after."""
        entry, n = self._normal(position)
        start = max(index for index, _ in self.checkpoints if index <= entry)
        self._restore_at(start)
        saved = self._engine_state()
        try:
            for index in range(start, entry):
                self._replay(index)
            if n:
                self._replay(entry, n)
        finally:
            self._restore_engine(saved)
        kept = self.journal[:entry]
        if n:
            kept.append(replace(self.journal[entry], amount=n, parked=False))
        last = kept[-1] if len(kept) > start else None
        self.journal = kept
        self.checkpoints = [(index, saved_) for index, saved_ in self.checkpoints
                            if index <= len(kept)]
        self._since = sum(1 for e in kept[self.checkpoints[-1][0]:] if e.kind == "run")
        if last is not None:
            self.machine.scheduler.quanta_run = last.quanta
        self.engine._stop = None
        self.engine.end_reason = None
        self.engine.exit_code = None
        self.engine.end_notes = []

    def _restore_at(self, start: int) -> None:
        saved = next(saved for index, saved in self.checkpoints if index == start)
        checkpoint.restore(self.machine, saved)

    # --- Replaying one entry ------------------------------------------------------------
    def _replay(self, index: int, limit: int | None = None, hits=None) -> None:
        """Do journal entry `index` again (only its first `limit` instructions),
        noting the debugger's hits in `hits`."""
        entry = self.journal[index]
        core = self.machine.cores[entry.core]
        core.cycles = entry.cycles
        self._replaying = True
        try:
            if entry.kind == "interrupts":
                core.take_due_interrupts()
                return
            self._run_in_pieces(core, index, entry, limit, hits)
        finally:
            self._replaying = False

    def _run_in_pieces(self, core, index, entry, limit, hits) -> None:
        """Run the entry's instructions; a debugger hook that cuts them short is
        a hit, noted, and the run goes on from there."""
        engine = self.engine
        goal = entry.amount if limit is None else limit
        # A quantum that ended parking the core was cut by the pause hook at the
        # next instruction: let that hook see it again.
        extra = 1 if entry.parked and limit is None else 0
        done, first = 0, True
        skip_start = hits is not None and self._resumed_from_hit(index, entry, hits)
        while done < goal or (extra and done == goal and core.state is CoreState.RUNNING):
            engine._stop, engine.stop_causes = None, []
            engine._resume_points = {} if first and not skip_start else {core.id: core.rip}
            engine._place_watches([core])
            before = core.stats.instructions
            core.run(goal - done + extra)
            done += core.stats.instructions - before
            first = False
            stop = engine._stop
            if stop is None or stop.reason not in ("breakpoint", "watchpoint"):
                break
            if hits is not None:
                where = (index, done - 1) if stop.reason == "watchpoint" else (index, done)
                hits.append(Hit(where, stop, list(engine.stop_causes)))
            if core.state is not CoreState.RUNNING:
                break

    def _resumed_from_hit(self, index: int, entry: Entry, hits: list) -> bool:
        """Did this core's previous quantum end on a breakpoint hit already
        noted? Then standing there at this one's start is not a new hit."""
        for before in range(index - 1, -1, -1):
            previous = self.journal[before]
            if previous.core == entry.core:
                end = (before, previous.amount)
                return previous.kind == "run" and any(
                    hit.position == end and hit.event.reason == "breakpoint" for hit in hits)
        return False

    def _engine_state(self):
        """What replaying must not change in the debugger, saved; and the
        console and the observers that cannot go back kept quiet meanwhile
        (what the machine printed once is not printed again)."""
        machine = self.machine
        quiet = (machine.console._sink, machine.observers)
        machine.console._sink = lambda core, line: None
        machine.observers = [o for o in machine.observers if hasattr(o, "checkpoint_state")]
        engine = self.engine
        counts = [(point, point.hits) for point in
                  (*engine._breakpoints, *engine.watchpoints.values())]
        return counts, engine.fault, engine.stop_causes, engine._stop, quiet

    def _restore_engine(self, saved) -> None:
        counts, fault, causes, stop, quiet = saved
        self.machine.console._sink, self.machine.observers = quiet
        for point, hits in counts:
            point.hits = hits
        engine = self.engine
        engine.fault, engine.stop_causes, engine._stop = fault, causes, stop
        engine._resume_points = {}
