"""A lab's Python part that never returns stops `sprat boot` and `sprat debug`
with one line naming where it is stuck (sprat/lab/watchdog.py); one that
returns in time leaves the run as it was."""

import os
import re
import subprocess
import sys

import pytest

from emulator.debug.trace import read_trace
from sprat.lab.manifest import find_lab
from sprat.lab.workspace import create, reference_files
from sprat.trace import messages

from conftest import ROOT

LAB = find_lab("1")                      # emulator/traps.py: every system call runs it
TRAPS = "emulator/traps.py"
# A run that hangs fails the test instead of hanging the suite (not a timing:
# a stopped run takes seconds).
HANG = 600


def sprat(*args, cwd):
    env = {key: value for key, value in os.environ.items() if key != "SPRAT_LABS"}
    try:
        return subprocess.run([sys.executable, "-m", "sprat", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=HANG)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`sprat {' '.join(args)}` hung: the watchdog never stopped it")


def workspace(tmp_path, change=None):
    """A lab 1 workspace holding the reference traps.py, changed by `change`."""
    files = reference_files(LAB)
    if change:
        files[TRAPS] = change(files[TRAPS])
    return create(LAB, tmp_path / "work", files).folder


def loop_in_deliver_syscall(text):
    start = text.index("def deliver_syscall")
    body = text.index("\n    regs = core.regs\n", start) + 1
    return text[:body] + "    while True:\n        pass\n" + text[body:]


def line_of(folder, words):
    lines = (folder / TRAPS).read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if words in line)


def assert_stopped_at(done, folder, words, function):
    stuck = [line for line in done.stderr.splitlines() if line.startswith("sprat: error:")]
    assert done.returncode == 1, f"exit {done.returncode}, expected 1: {done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    assert len(stuck) == 1, f"not one error line: {done.stderr}"
    where = re.match(r"sprat: error: (\S+):(\d+): your code ran for more than 1 s of host "
                     r"time in one call, in (\w+)", stuck[0])
    assert where, f"the error does not say where the call was stuck: {stuck[0]}"
    assert where.group(1) == TRAPS and where.group(3) == function, stuck[0]
    assert int(where.group(2)) in (line_of(folder, words), line_of(folder, words) + 1), (
        f"stuck at line {where.group(2)}, but the loop is at line {line_of(folder, words)}")


@pytest.mark.parametrize("command", [["boot"], ["debug", "--script", "continue.txt"]],
                         ids=["boot", "debug"])
def test_a_python_part_that_never_returns_is_stopped_naming_its_line(tmp_path, command):
    folder = workspace(tmp_path, loop_in_deliver_syscall)
    (tmp_path / "continue.txt").write_text("continue\n")
    done = sprat(*command, "--lab", str(folder), "--python-limit", "1", cwd=tmp_path)
    assert_stopped_at(done, folder, "while True:", "deliver_syscall")


def loop_from_call(count):
    """A change to traps.py: call `count` of deliver_syscall, and every one
    after it, never returns."""
    def change(text):
        start = text.index("def deliver_syscall")
        body = text.index("\n    regs = core.regs\n", start) + 1
        loop = (f"    global CALLS\n    CALLS = globals().get('CALLS', 0) + 1\n"
                f"    while CALLS >= {count}:\n        pass\n")
        return text[:body] + loop + text[body:]
    return change


@pytest.mark.parametrize("command", [["boot"], ["debug", "--script", "continue.txt"]],
                         ids=["boot", "debug"])
def test_a_stopped_run_ends_as_a_failed_run_does_with_the_core_table_and_a_whole_trace(
        tmp_path, command):
    # spawn.lst's 15th system call is core 0's, after the parent and the
    # child have each sent their message: a few kilobytes of trace, which
    # a stop that flushed nothing lost.
    folder = workspace(tmp_path, loop_from_call(15))
    (tmp_path / "continue.txt").write_text("continue\n")
    image = str(ROOT / "images" / "spawn.lst")
    done = sprat(*command, image, "--lab", str(folder), "--python-limit", "1",
                 "--trace", "run.trace", cwd=tmp_path)
    assert_stopped_at(done, folder, "while CALLS", "deliver_syscall")
    table = done.stdout[done.stdout.find("core  state"):].splitlines()
    assert table and table[0].split()[:2] == ["core", "state"], \
        f"no core table after the stop: {done.stdout[-600:]}"
    rows = [line.split() for line in table[2:] if line.split()[:1] in (["0"], ["1"], ["2"], ["3"])]
    assert [row[:2] for row in rows] == [["0", "running"], ["1", "halted"], ["2", "halted"],
                                         ["3", "halted"]], \
        f"the core table should show core 0 stuck running, the others halted: {table}"
    events = read_trace(tmp_path / "run.trace")
    sent = [(m["send"]["channel"], m["recv"] and m["recv"]["core"]) for m in messages(events)]
    assert sent == [(20, 2), (21, 0)], \
        f"the trace lost the messages sent before the stop: it holds {sent}"
    timeline = sprat("trace", "run.trace", "--perfetto", "run.json", cwd=tmp_path)
    assert timeline.returncode == 0, f"the trace of a stopped run does not load: {timeline.stderr}"


def test_a_python_part_that_hangs_as_it_is_imported_is_stopped(tmp_path):
    folder = workspace(tmp_path, lambda text: text + "\nwhile True:\n    pass\n")
    done = sprat("boot", "--lab", str(folder), "--python-limit", "1", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(rf"^sprat: error: {TRAPS}:\d+: your code ran for more than 1 s .* in "
                     r"<module>", done.stderr, re.M), done.stderr


def test_a_python_part_within_the_limit_runs_the_same_machine(tmp_path):
    folder = workspace(tmp_path)
    watched = sprat("boot", "--lab", str(folder), "--python-limit", "0.5", cwd=tmp_path)
    tree = sprat("boot", cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout == tree.stdout, (
        "the reference traps.py under the watchdog printed another run than the tree's")


def test_explores_forked_workers_are_watched_too(tmp_path):
    """sprat explore --jobs 2 runs its seeds in forked workers, which keep
    no thread but the one that forked: each starts a watchdog of its own,
    and explore says a worker ended without its seed's outcome."""
    folder = workspace(tmp_path, loop_in_deliver_syscall)
    done = sprat("explore", str(folder / "images" / "calls.lst"), "--seeds", "2", "--jobs", "2",
                 "--lab", str(folder), "--python-limit", "1", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(rf"^sprat: error: {TRAPS}:\d+: your code ran for more than 1 s of host "
                     r"time in one call, in deliver_syscall", done.stderr, re.M), done.stderr
    assert "a worker process ended before its seed's outcome" in done.stderr, done.stderr
