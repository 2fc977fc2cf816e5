"""Running a grader's tests so that no submission can hurt the grader.

Each test runs in a child process of its own (`python -m sprat.lab.runner`)
with the student's workspace active, a time limit and a memory limit. A
test that hangs, loops in the assembler, eats memory or crashes the
emulator fails with a reason; the grader goes on. The child reports its
verdict as JSON in a file, since a student's program may print anything;
what it prints is read as it comes and only its end kept, so a program
that prints gigabytes costs the grader no memory.

A lab whose student part is Python runs that code in the child, next to the
test that judges it. The child learns where its verdict goes, and a secret
the verdict must carry, on its stdin before any of the student's code is
imported: a student's module that writes a verdict of its own and exits
(the path is not on the command line) scores nothing. A module that sets
out to patch the runner or the grader in their own process (their frames,
their functions, json) can still forge a pass: nothing in one process stops
that, and such code says what it does plainly to whoever reads it. Graders
of Python labs take the student's values as Python's own types only (lab
6's replay.plain), so that a value cannot lie to a comparison; they call
the student's code before the reference's, so that the answer is not on
the stack; and before every test of every lab, the runner checks that the given
code around the student's regions is the tree's (grading.expect_given_code). What stays open in one process:
code inside a region may call the reference (it is the tree, on disk and
often already imported, as lab 6's replay loads it), or change what the
reference computes with (a class of sprat's, a builtin such as `round`)
so that both sides agree on nonsense. Closing that takes the reference's
answers computed, and compared with the student's plain values, in a
process the student's code never ran in (the parent, say), and the tree's
reference regions unreadable to the student's code (another user, or a
copy of the tree without them).

    results = run_tests(lab, workspace, tests, jobs=2)

Tests run in parallel (one child per host core): their verdicts do not
depend on it, since every run is deterministic.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MEMORY_LIMIT = 6 << 30          # bytes of address space a test may take
BUILD_TIMEOUT = 60              # seconds to assemble a lab's images
OUTPUT_KEPT = 2000              # characters of a crashed child's output shown
OUTPUT_SECONDS = 1              # to read what is left in the pipe once the child ended


@dataclass
class Result:
    name: str
    points: int
    passed: bool
    reason: str = ""
    replay: str | None = None
    seconds: float = 0.0

    @property
    def earned(self) -> int:
        return self.points if self.passed else 0


# --- The parent's side -----------------------------------------------------------------

def load_tests(graders: list[Path]) -> list:
    """The tests the grader files register, in order (loaded here only to list them)."""
    from emulator.errors import SpratError
    from sprat.lab import grading
    grading.context.tests = []
    for number, path in enumerate(graders):
        try:
            _load_grader(path, number)
        except SpratError:
            raise
        except Exception as error:              # noqa: BLE001 -- an instructor's file
            raise SpratError(f"{path}: the grader does not load: "
                             f"{type(error).__name__}: {error}") from None
    names = [t.name for t in grading.context.tests]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SpratError(f"two tests are called {duplicates[0]} (test names must be unique)")
    return list(grading.context.tests)


NOT_RUN = "not run (an earlier test failed)"


def run_tests(lab, workspace: Path | None, tests: list, *, shown: str | None = None,
              graders: list[Path] | None = None, jobs: int | None = None,
              stop_at_first_failure: bool = False, progress=None) -> list[Result]:
    """Run `tests` (from load_tests) in child processes; results in the same order.
    With `stop_at_first_failure`, tests not yet started when one fails are
    not run (their reason says so)."""
    graders = graders or [lab.grader]
    jobs = jobs or max(1, min(len(tests), os.cpu_count() or 1))
    results: dict[str, Result] = {}
    failed = False

    def one(test):
        nonlocal failed
        if stop_at_first_failure and failed:
            result = Result(test.name, test.points, False, NOT_RUN)
        else:
            result = _run_child(lab, workspace, shown, graders, test)
            failed = failed or not result.passed
        results[test.name] = result
        if progress:
            progress(len(results), len(tests))
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, tests))


def build_problem(lab, workspace: Path) -> str | None:
    """Why the student's files do not build (one line), or None if they do.

    Python files must compile; assembly files are assembled inside every
    image of the lab, as a boot would. In a child process with a time
    limit, as everything that touches a submission."""
    check = type("BuildCheck", (), {"name": "build", "points": 0, "timeout": BUILD_TIMEOUT})
    result = _run_child(lab, workspace, None, [], check, mode="--build")
    return None if result.passed else result.reason


def _run_child(lab, workspace, shown, graders, test, mode="--test") -> Result:
    import time
    timeout = test.timeout or lab.timeout
    with tempfile.TemporaryDirectory(prefix="sprat-lab-") as scratch:
        verdict = Path(scratch) / "verdict.json"
        secret = secrets.token_hex(16)
        command = [sys.executable, "-m", "sprat.lab.runner", "--lab", str(lab.folder),
                   mode, test.name]
        if workspace is not None:
            command += ["--workspace", str(workspace), "--shown", shown or str(workspace)]
        for grader in graders:
            command += ["--grader", str(grader)]
        started = time.monotonic()
        # Unbuffered: a buffered pipe's close waits for a read that another
        # process holding the pipe may never end.
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.PIPE, bufsize=0, start_new_session=True,
                              cwd=scratch, preexec_fn=_limit_memory) as child:
            output = _Tail(child.stdout)
            _tell(child, json.dumps({"verdict": str(verdict), "secret": secret}))
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                return Result(test.name, test.points, False,
                              f"took longer than {timeout} s and was stopped (a hang? a "
                              "program that never finishes, or an assembler loop)",
                              seconds=time.monotonic() - started)
            finally:
                # A process the test started may outlive it, holding the pipe.
                _kill_group(child.pid)
                output.join(timeout=OUTPUT_SECONDS)
        seconds = time.monotonic() - started
        try:
            data = json.loads(verdict.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return Result(test.name, test.points, False,
                          _crash_reason(child.returncode, output.text()), seconds=seconds)
    if not isinstance(data, dict) or data.get("secret") != secret:
        return Result(test.name, test.points, False,
                      "the test's verdict was not the grader's own (did your code write one?)",
                      seconds=seconds)
    return Result(test.name, test.points, data.get("passed") is True, str(data.get("reason", "")),
                  data.get("replay"), seconds)


def _tell(child, line: str) -> None:
    """Give the child its one line on stdin (it may be dead already)."""
    try:
        child.stdin.write(line.encode("utf-8") + b"\n")
        child.stdin.close()
    except OSError:
        pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass                        # the group is empty: everyone has ended


class _Tail(threading.Thread):
    """Reads a pipe to its end in the background, keeping its last bytes only."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        # Its own descriptor: the pipe's may be closed, and its number reused,
        # while this thread still waits on a process that outlived the test.
        self.fd, self.kept = os.dup(pipe.fileno()), b""
        self.start()

    def run(self):
        while chunk := os.read(self.fd, 1 << 16):
            self.kept = (self.kept + chunk)[-OUTPUT_KEPT * 4:]
        os.close(self.fd)

    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _crash_reason(status: int, output: str) -> str:
    text = output.strip()
    last = text.splitlines()[-1] if text else ""
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.Signals._value2member_map_ \
            else f"signal {-status}"
        return f"the test's process was killed by {name} (a crash in the emulator, or out of " \
               f"memory){': ' + last[:200] if last else ''}"
    if "MemoryError" in text:
        return f"ran out of memory (more than {MEMORY_LIMIT >> 30} GiB)"
    if not last:
        return (f"the test's process ended with status {status} without a verdict and "
                "without a word (did your code call sys.exit or os._exit?)")
    return f"the test's process ended with status {status} without a verdict: {last[:200]}"


# --- The child's side ------------------------------------------------------------------

def _child(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sprat.lab.runner")
    parser.add_argument("--lab", required=True)
    parser.add_argument("--workspace")
    parser.add_argument("--shown")
    parser.add_argument("--grader", action="append", default=[])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--test")
    what.add_argument("--build")
    args = parser.parse_args(argv)
    told = _told()
    sys.setrecursionlimit(10_000)
    if args.workspace:
        # Before anything imports a module the student may have swapped.
        from sprat.lab.manifest import load_lab
        from sprat.lab.workspace import Workspace, activate
        activate(Workspace(Path(args.workspace), load_lab(Path(args.lab))))
    from sprat.lab import grading
    grading.context.lab_folder = Path(args.lab)
    grading.context.workspace_shown = args.shown
    verdict = _build_verdict(Path(args.lab)) if args.build else _verdict(args)
    verdict["secret"] = told["secret"]
    Path(told["verdict"]).write_text(json.dumps(verdict), encoding="utf-8")
    return 0


def _told() -> dict:
    """What the parent said on stdin: where the verdict goes, and its secret.
    Read before any of the student's code runs; stdin is then empty."""
    line = b""
    while not line.endswith(b"\n") and (chunk := os.read(0, 4096)):
        line += chunk
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    return json.loads(line)


def _verdict(args) -> dict:
    from emulator.errors import SpratError
    from sprat.lab import grading
    try:
        for number, path in enumerate(args.grader):
            _load_grader(Path(path), number)
        test = next((t for t in grading.context.tests if t.name == args.test), None)
        if test is None:
            return {"passed": False, "reason": f"no test {args.test} in the grader"}
        # Every test runs the given code around the student's (the machine,
        # the rest of the monitor, access()), so every test first checks
        # that it is the tree's: a change there could make any check pass.
        grading.expect_given_code()
        test.function()
        return {"passed": True}
    except grading.Failure as failure:
        return {"passed": False, "reason": failure.reason, "replay": failure.replay}
    except AssertionError as error:
        return {"passed": False, "reason": str(error) or f"an assertion failed at "
                                                         f"{grading.where(error)}"}
    except NotImplementedError as error:
        return {"passed": False, "reason": str(error) if str(error)
                else f"not written yet ({grading.where(error)})"}
    except SpratError as error:
        return {"passed": False, "reason": str(error)}
    except MemoryError:
        return {"passed": False, "reason": "ran out of memory"}
    except RecursionError as error:
        return {"passed": False, "reason": f"recursion too deep at {grading.where(error)}"}
    except Exception as error:                               # noqa: BLE001 -- any submission
        return {"passed": False, "reason": grading.raised(error)}


def _build_verdict(lab_folder: Path) -> dict:
    """Compile the student's Python files; assemble every image of the lab."""
    from emulator import sources
    from emulator.errors import SpratError
    from emulator.files import read_text
    from sprat.lab.manifest import load_lab
    from sprat.lab.workspace import Workspace, import_swapped
    try:
        lab = load_lab(lab_folder)
        for name in lab.files:
            path = sources.locate(sources.TREE / name)
            if name.endswith(".py"):
                compile(read_text(path, "Python file"), name, "exec")
        # Before kernel.boot, which imports them: an import that raises or
        # exits is a reason, not a verdict that never comes.
        if sources.workspace() is not None:
            import_swapped(Workspace(sources.workspace(), lab))
        from kernel.boot import assemble_image
        from kernel.image import parse_image
        for image_path in sorted((lab_folder / "images").glob("*.lst")):
            assemble_image(parse_image(image_path))
    except SyntaxError as error:
        return {"passed": False, "reason": f"{error.filename}:{error.lineno}: {error.msg}"}
    except (SpratError, OSError, UnicodeDecodeError) as error:
        return {"passed": False, "reason": str(error)}
    return {"passed": True}


def _load_grader(path: Path, number: int) -> None:
    from emulator.errors import SpratError
    spec = importlib.util.spec_from_file_location(f"sprat_lab_grader_{number}", path)
    if spec is None or not path.is_file():
        raise SpratError(f"{path}: no such grader file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise SpratError(f"{error.filename}:{error.lineno}: the grader does not compile: "
                         f"{error.msg}") from None


if __name__ == "__main__":
    sys.exit(_child())
