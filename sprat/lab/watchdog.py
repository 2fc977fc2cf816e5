"""A time limit on each call into a lab workspace's Python, for the commands
that run it in their own process (`sprat boot`, `debug`, `trace`, `bench`).

A lab's Python part (lab 1's emulator/traps.py, lab 2's rules, lab 6's
coherence directory) is called by the machine from its hooks, deep inside
unicorn. A call that never returns would hang the command until Ctrl-C; the
grader has its own time limit (runner.py), a bare boot had none.

    with watching(workspace, limit=10):
        system.machine.run(...)

A thread looks at the main thread's stack a few times a second. While the
outermost frame of a workspace file on it is the same frame, one call into
the student's code is still running; once it has run for `limit` seconds of
host time, the thread prints one line naming the file, line and function the
call is stuck in and ends the process with status 1 (no traceback, nothing
unwound: the student's code is never asked to stop, so no `except:` of
theirs can swallow it).

A stopped run ends as any failed run does: the command says, before the
watchdog's line, what it says at the end of a run (`sprat boot` its core
table), and its trace file is closed whole, loadable. The command hands
those last steps to the watchdog while the machine runs:

    with on_stop(lambda: print(core_table(system))):
        system.machine.run()

They run on the watchdog's thread, the student's call still stuck on the
main one, and get ENDING_LIMIT seconds (a last step that waits for
something the stuck thread holds, such as standard output's lock, must not
hang the process); the process ends after them, whatever they did.

The machine never learns of the watchdog: it reads no clock the machine
sees and changes nothing the machine does, so a run that stays within the
limit is the same run, instruction for instruction.

A process forked inside the block (`sprat explore --jobs N`'s workers)
starts a watchdog of its own with the same files and limit: a fork keeps
only the thread that forked.

What it cannot stop: one C-level operation that keeps Python's lock the
whole time (`10 ** 10 ** 10`), since the thread needs that lock to look.
Such a call ends on its own, or at Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path

DEFAULT_LIMIT = 10.0            # seconds; a call of any lab's reference takes milliseconds
LARGEST_LIMIT = 86_400.0        # a day
LOOKS_PER_LIMIT = 10            # how often the thread looks: a tenth of the limit ...
LONGEST_LOOK = 0.25             # ... and at least four times a second
EXIT_STUCK = 1                  # a machine failure (sprat/cli.py), not the user's mistake
ENDING_LIMIT = 10.0             # seconds the command's last steps may take once stopped


def limit_argument(text: str) -> float:
    """An argparse type: seconds, more than 0 and at most a day."""
    import argparse
    import math
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 < value <= LARGEST_LIMIT):
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {LARGEST_LIMIT:,.0f} seconds, got {text}")
    return value


def limit_in(argv: list[str]) -> float:
    """--python-limit S from a command line not parsed yet (the workspace's
    files are imported before the parser runs); the default if none, or if
    it is wrong (the parser says so later)."""
    import argparse
    for index, word in enumerate(argv):
        text = (argv[index + 1] if word == "--python-limit" and index + 1 < len(argv)
                else word.partition("=")[2] if word.startswith("--python-limit=") else None)
        if text is not None:
            with contextlib.suppress(argparse.ArgumentTypeError):
                return limit_argument(text)
    return DEFAULT_LIMIT


class Watchdog(threading.Thread):
    """Ends the process when one call into `files` runs longer than `limit` seconds."""

    def __init__(self, folder: Path, names, limit: float = DEFAULT_LIMIT):
        super().__init__(name="sprat lab watchdog", daemon=True)
        self.folder, self.files = folder, list(names)
        # name by file as Python names code loaded from it (workspace.py's finder)
        self.names = {str(Path(folder) / name): name for name in names}
        self.limit = limit
        self.main = threading.main_thread().ident
        self.stopped = threading.Event()

    def run(self) -> None:
        entry, since = None, 0.0
        while not self.stopped.wait(min(self.limit / LOOKS_PER_LIMIT, LONGEST_LOOK)):
            frame = sys._current_frames().get(self.main)
            outermost, innermost = self._student_frames(frame)
            del frame
            if outermost is not entry:          # another call, or none: start counting again
                entry, since = outermost, time.monotonic()
            elif entry is not None and time.monotonic() - since > self.limit:
                self._stop_the_process(innermost)

    def stop(self) -> None:
        self.stopped.set()

    def _student_frames(self, frame):
        """(outermost, innermost) frame of a workspace file on the stack, or (None, None).

        Holding the outermost keeps its frame object alive, so a later call
        can never be mistaken for it."""
        outermost = innermost = None
        while frame is not None:
            if frame.f_code.co_filename in self.names:
                outermost = frame
                if innermost is None:
                    innermost = frame
            frame = frame.f_back
        return outermost, innermost

    def _stop_the_process(self, frame) -> None:
        name = self.names[frame.f_code.co_filename]
        seconds = f"{self.limit:g} s"
        line = (f"sprat: error: {name}:{frame.f_lineno}: your code ran for more than {seconds} "
                f"of host time in one call, in {frame.f_code.co_name}, and was stopped (a loop "
                f"that never ends? --python-limit SECONDS gives a call longer)\n")
        del frame
        last_steps = threading.Thread(target=_end_the_run, name="sprat lab watchdog: the end",
                                      daemon=True)
        last_steps.start()
        last_steps.join(ENDING_LIMIT)
        # os.write: the main thread may hold sys.stderr's lock, stuck where it is.
        with contextlib.suppress(OSError):
            os.write(2, line.encode("utf-8", errors="replace"))
        os._exit(EXIT_STUCK)


_endings = []                   # the last steps of the run now under way, innermost last


@contextlib.contextmanager
def on_stop(step):
    """Run the block with `step()` among the last steps of a run the
    watchdog stops (see above); the innermost block's step runs first."""
    _endings.append(step)
    try:
        yield
    finally:
        _endings.remove(step)


def _end_the_run() -> None:
    """The stopped command's last steps, then what they printed, flushed:
    os._exit flushes nothing."""
    from emulator.errors import SpratError
    for step in reversed(list(_endings)):
        try:
            step()
        except SpratError as error:        # an OutputError: the trace's disk is full
            print(f"sprat: error: {error}", file=sys.stderr)
        except Exception as error:         # noqa: BLE001 -- a bug in sprat: say so, end anyway
            print(f"sprat: error: ending the stopped run: {type(error).__name__}: {error}",
                  file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


_watching = None                # the watchdog of the block running now, if any


def _watch_in_forked_child() -> None:
    global _watching
    if _watching is not None:
        _watching = Watchdog(_watching.folder, _watching.files, _watching.limit)
        _watching.start()


os.register_at_fork(after_in_child=_watch_in_forked_child)


@contextlib.contextmanager
def watching(folder: Path, names, limit: float = DEFAULT_LIMIT):
    """Run the block with a watchdog over the workspace's Python files `names`
    (the thread is started and stopped with the block); yields it, so that
    its limit can be set once the command line is read."""
    python = [name for name in names if name.endswith(".py")]
    if not python:
        yield None
        return
    global _watching
    watchdog = _watching = Watchdog(folder, python, limit)
    watchdog.start()
    try:
        yield watchdog
    finally:
        _watching = None
        watchdog.stop()
