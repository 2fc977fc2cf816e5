"""What a lab's grader (labs/NN-slug/grade.py) is written with.

    from sprat.lab.grading import test, fail, boot, QUANTA

    @test(points=20)
    def messages_arrive_in_order():
        \"\"\"Every message arrives once, in order, payload intact.\"\"\"
        for quantum in QUANTA:
            run = boot("images/stream.lst", topology="amd-2x2", quantum=quantum)
            run.expect_clean()
            if wrong:
                fail("message 5 arrived as ...", run, stop="urpc_received core 1")

Each test runs in a child process of its own with the student's workspace
active (sprat/lab/runner.py): `boot` builds the machine from the student's
files, and `import` gives the student's Python modules. A test passes by
returning; `fail(reason)`, a failed `assert` or any exception fail it with
a one-line reason. With a run, the report adds the `sprat debug` command
that replays it on the student's files, stopped where the test looks.

Graders judge what the machine did, as its observers saw it (`run.events`:
messages, IPIs) and the state it ended in (`run.system`), not console text.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

# The schedule sweep: an ordering bug often shows only under some
# interleavings (a control word written before its payload is caught at
# 7 and 13, not at 1 or the default).
QUANTA = (1, 7, 13, 100, 10_000)
# Seeded schedules (emulator/scheduler.py): which core runs next, and for how
# long, drawn from the seed. A few seeds shake out what fixed quanta miss.
SEEDS = (1, 2, 3, 4, 5, 6, 7, 8)
DEFAULT_MAX_CYCLES = 10_000_000
KILLED = ": program killed"     # how the CPU driver ends its line on a program it kills
EXITED = "cpu driver: program exited with status"     # ...and begins one on a failed exit


@dataclass
class Test:
    name: str
    points: int
    function: object
    description: str
    timeout: int | None = None


class Failure(Exception):
    """A test's verdict: failed, for `reason` (one line)."""

    def __init__(self, reason: str, replay: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.replay = replay


# What the runner tells the grader before loading it (sprat/lab/runner.py).
@dataclass
class _Context:
    lab_folder: Path | None = None
    workspace_shown: str | None = None       # the workspace as the student named it
    tests: list = field(default_factory=list)


context = _Context()


def test(points: int, timeout: int | None = None):
    """Register a test worth `points`; its name and docstring say what it checks."""
    if not isinstance(points, int) or points < 0:
        raise ValueError("a test's points are a whole number, 0 or more")

    def register(function):
        doc = (function.__doc__ or "").strip().splitlines()
        context.tests.append(Test(function.__name__, points, function,
                                  doc[0] if doc else function.__name__, timeout))
        return function
    return register


def fail(reason: str, run: "Run | None" = None, stop: str | None = None):
    """End the test as failed. `stop`: where the replay stops (`LABEL [core N]`)."""
    raise Failure(" ".join(str(reason).split()), run.replay_command(stop) if run else None)


def expect_given_code() -> None:
    """Fail unless each of the lab's files is the tree's outside its regions
    (sprat/lab/regions.py, changed_outside). The runner calls it before
    every test: each runs the given code around the student's, or tests
    the student's through it."""
    from emulator import sources
    from emulator.files import read_text
    from sprat.lab.manifest import load_lab
    from sprat.lab.regions import changed_outside
    lab = load_lab(context.lab_folder)
    for name in lab.files:
        theirs = sources.locate(sources.TREE / name)
        if theirs == sources.TREE / name:
            continue
        change = changed_outside(read_text(sources.TREE / name, "lab file"),
                                 read_text(theirs, "lab file"), lab.slug, name)
        if change:
            fail(change)


def raised(error: BaseException) -> str:
    """An exception on one line, as a failed test shows it: `ValueError: 11 is
    not a valid CapType (at kernel/caps/rules.py:153 in check_retype)`. For a
    grader that catches what the student's code raised, to say what it was
    asked too: `fail(f"RETYPE of ... raised {raised(error)}; it must be ...")`."""
    return f"{type(error).__name__}: {error} (at {where(error)})"


def where(error: BaseException) -> str:
    """Where an exception came from, as FILE:LINE in FUNCTION: the innermost
    frame in sprat's code or the student's, which is where a student looks
    (a ValueError raised inside enum.py came from the line that called it),
    and the innermost frame too if that is elsewhere."""
    import traceback
    from emulator import sources
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?"
    shown = sources.innermost_own_frame(frames) or frames[-1]
    text = f"{_tree_relative(shown.filename)}:{shown.lineno} in {shown.name}"
    if shown is not frames[-1]:
        inner = frames[-1]
        text += f", raised in {Path(inner.filename).name}:{inner.lineno} in {inner.name}"
    return text


def _tree_relative(filename: str) -> str:
    from emulator import sources
    return sources.tree_relative(Path(filename)) or filename


# --- Booting the student's machine ----------------------------------------------------

@dataclass
class Run:
    """One finished run: the machine's state, what it printed, what it reported."""
    system: object                  # kernel.boot.System
    result: object                  # emulator.machine.RunResult
    console: list                   # (core, line)
    events: list                    # dicts, each with "event": "send", "recv", "ipi", ...
    image: Path
    options: dict

    @property
    def clean(self) -> bool:
        """Every core finished, and no program failed (exit status, or killed)."""
        return self.result.clean and self.system.failures() is None

    def sends(self, channel=None) -> list[dict]:
        return self._messages("send", channel)

    def receives(self, channel=None) -> list[dict]:
        return self._messages("recv", channel)

    def _messages(self, kind, channel):
        return [e for e in self.events
                if e["event"] == kind and (channel is None or e.get("channel") == channel)]

    def expect_clean(self, stop: str | None = None, failed: int = 0) -> None:
        """Fail unless every core finished cleanly (the reason names who waits on
        what) and exactly `failed` programs failed (0: none; more where the
        test kills programs on purpose, say by a touch that must fault)."""
        if not self.result.clean:
            fail(f"the run did not end cleanly: {self.why_unfinished()}", self, stop)
        count = sum(self.system.failed_programs(core)
                    for core in range(self.system.machine.n_cores))
        if count != failed:
            said = self.system.failures() or "no program failed"
            first = self._first_failed()
            fail(f"{said}{': ' + first if first else ''}"
                 f"{f' (expected {failed} to)' if failed else ''}", self, stop)

    def _first_failed(self) -> str | None:
        """The first program that failed: killed (named as killed() names it),
        or exited with an error (the CPU driver's line)."""
        for _, line in self.console:
            if _kill_line(line):
                return self.killed()
            if line.startswith(EXITED):
                return line.strip()
        return None

    def diagnosis(self) -> list[str]:
        """Each unfinished core: where it is, what it waits on (kernel/diagnosis.py)."""
        from kernel.diagnosis import explain
        return explain(self.system)

    def why_unfinished(self) -> str:
        """Why the run did not end cleanly, on one line: the machine's reason and
        each unfinished core (kernel/diagnosis.explain_end, nothing said twice),
        and the CPU driver's last words on a core it stopped (its own
        explanation, as `sprat boot` shows it on the console)."""
        from kernel.diagnosis import explain_end
        lines = explain_end(self.system, self.result.reason)
        for core in self.system.machine.cores:
            said = [line.strip() for c, line in self.console
                    if c == core.id and line.startswith("cpu driver:")]
            if core.exit_code and said and "KERNEL PANIC" not in said[-1]:
                lines.append(f"core {core.id}'s {said[-1]}")
        killed = self.killed()
        if killed:
            lines.append(killed)
        return "; ".join(lines)

    def killed(self) -> str | None:
        """The first program the CPU driver killed for a fault, or None:
        "core 0's program was killed: user fault: #PF page fault (in
        write_kernel+7, userland/faulty.S:30) touching 0x200000: ...". Named
        by label and source line (kernel/diagnosis.user_fault), where the CPU
        driver's own line has raw numbers; in its words if the machine saw no
        such fault. The cores that wait for that program say what they wait
        on, not why it never came."""
        from kernel.diagnosis import user_fault
        for core, line in self.console:
            if _kill_line(line):
                said = line.strip().removeprefix("cpu driver:").removesuffix(KILLED).strip()
                # The first kill on this core: the first fault it took in ring 3.
                named = user_fault(self.system, core)
                return f"core {core}'s program was killed: " \
                       f"{'user fault: ' + named if named else said}"
        return None

    def printed(self, core: int | None = None) -> list[str]:
        """The lines the guest printed (by design: a program's own report)."""
        return [line for c, line in self.console if core is None or c == core]

    def replay_command(self, stop: str | None = None) -> str:
        """The `sprat debug` command that replays this run on the student's files."""
        words = ["sprat", "debug", _shown_image(self.image)]
        if context.workspace_shown and not self.options.get("reference"):
            words += ["--lab", context.workspace_shown]
        for option in ("topology", "cores", "quantum", "seed", "max_cycles", "timing"):
            value = self.options.get(option)
            if value is not None:
                words += [f"--{option.replace('_', '-')}", str(value)]
        if stop:
            words += ["--break", stop]
        return " ".join(shlex.quote(word) for word in words)


def _kill_line(line: str) -> bool:
    """Is this the CPU driver's line on a program it killed for a fault?"""
    return line.startswith("cpu driver:") and line.rstrip().endswith(KILLED)


def boot(image, *, cores: int | None = None, topology: str | None = None,
         quantum: int | None = None, seed: int | None = None,
         max_cycles: int = DEFAULT_MAX_CYCLES, timing: str | None = None,
         reference: bool = False, setup=None) -> Run:
    """Boot `image` (relative to the lab's folder) and run it to its end.

    The student's files are used, except with `reference=True`, which boots
    the tree's own assembly (to measure the reference in the same grade).
    `setup(system)`, if given, runs before the first instruction: to hook
    what the test watches (a handler's entry, a line of memory).
    `timing`: the cost model's mode, "fast" (None: the default) or
    "detailed" (`sprat boot --timing`).
    """
    from emulator import sources
    from emulator.interconnect import load_topology
    from emulator.scheduler import DEFAULT_QUANTUM
    from kernel.boot import boot_image
    from kernel.tracepoints import install_message_tracepoints

    path = _lab_path(image)
    shape = load_topology(topology) if topology is not None else None
    n_cores = shape.n_cores() if shape is not None else (cores or 4)
    console, events = [], []
    options = {"topology": topology, "cores": cores if topology is None else None,
               "quantum": quantum, "seed": seed, "max_cycles": max_cycles,
               "timing": timing, "reference": reference}

    def build():
        return boot_image(path, cores=n_cores, quantum=quantum or DEFAULT_QUANTUM,
                          output=lambda core, line: console.append((core, line)),
                          topology=shape, seed=seed, timing=timing or "fast")
    if reference:
        with sources.without_workspace():
            system = build()
    else:
        system = build()
    system.machine.observers.append(lambda event, **fields: events.append({"event": event,
                                                                            **fields}))
    install_message_tracepoints(system)
    if setup is not None:
        setup(system)
    result = system.machine.run(max_cycles=max_cycles)
    system.machine.console.flush()
    return Run(system, result, console, events, path, options)


def _lab_path(image) -> Path:
    path = Path(image)
    if not path.is_absolute() and context.lab_folder is not None:
        path = context.lab_folder / path
    return path


def _shown_image(path: Path) -> str:
    """The image as the student finds it: their workspace's copy if it has one."""
    if context.lab_folder is not None and context.workspace_shown:
        try:
            inside = path.relative_to(context.lab_folder)
        except ValueError:
            return str(path)
        if inside.parts[:1] == ("images",):
            return str(Path(context.workspace_shown) / inside)
    return str(path)
