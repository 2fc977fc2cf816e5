"""What every fuzz test (tests/test_fuzz_*.py) shares: how many cases, how
long one may take, and what an acceptable ending looks like.

A case may end in exactly one of three ways (issue 14): a one-line error
on stderr with the documented exit status (2 for the user's mistakes, 1
for machine failures and outputs that cannot be written), a guest fault
report that kills only the guest, or a clean run. Never a traceback, never
a hang.

    @settings(max_examples=examples(40))    # 40 under the ci profile
    @given(...)
    def test_...(capsys, ...):
        status, out, err = run_cli(capsys, argv)
        assert_one_line_or_success(argv, status, err)

Cases run in-process (a subprocess costs a second of host time, a case
here a few milliseconds); `time_limit` turns a hang into a failure that
names the case.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path

from hypothesis import settings

from sprat.cli import main

# Longest a single case may take on a loaded 2-core machine before it
# counts as a hang: a small boot takes well under a second.
CASE_SECONDS = 20


def examples(ci_count: int) -> int:
    """`ci_count` cases under the ci profile, proportionally more under `long`."""
    return max(1, ci_count * settings().max_examples // 100)


class Hang(BaseException):
    """A case ran past its time limit. BaseException, so that no handler in
    sprat (which catch Exception to report a failure) can swallow it."""


@contextmanager
def time_limit(seconds: float, what: str):
    """Raise Hang in the main thread if the block runs longer than `seconds`."""
    def expired(signum, frame):
        raise Hang(f"{what}: still running after {seconds} s (a hang)")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `sprat argv...` run in this process.

    Any exception but SystemExit escaping main() is what a user would see
    as a traceback: it fails the test with the command line that raised."""
    capsys.readouterr()
    with time_limit(CASE_SECONDS, f"sprat {shown(argv)}"):
        try:
            status = main(argv)
        except SystemExit as exit_info:
            status = exit_info.code
        except Exception as error:                              # noqa: BLE001
            raise AssertionError(f"sprat {shown(argv)}: a traceback "
                                 f"({type(error).__name__}: {str(error)[:300]})") from error
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_or_success(argv, status, err, allowed=(0, 1, 2)) -> None:
    """The case ended as sprat promises: exit 0; one line and exit 2 (the
    user's mistake); or exit 1 with the reason on its first line and, for a
    run that failed inside the machine, the diagnosis indented below it."""
    command = f"sprat {shown(argv)}"
    assert "Traceback" not in err, f"{command}: a traceback:\n{err}"
    assert status in allowed, f"{command}: exit status {status!r}, expected one of {allowed}: {err!r}"
    lines = [line for line in err.splitlines() if line.strip()]
    if status == 2:
        assert len(lines) == 1, f"{command}: exit 2 needs one line on stderr, got {err!r}"
    elif status == 1:
        assert lines, f"{command}: exit 1 with nothing on stderr"
        assert all(line.startswith("sprat:") for line in lines), \
            f"{command}: exit 1, but stderr is not sprat's reason and diagnosis: {err!r}"


def shown(argv) -> str:
    """The command line as a person would type it, long words cut short."""
    def word(text):
        text = text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"
        return repr(text) if not text or " " in text else text
    return " ".join(word(text) for text in argv)


# --- Files that no reader may choke on -------------------------------------------------
def hostile_files(directory: Path) -> dict[str, str]:
    """name -> path of files that are not what a reader wants: devices, a fifo,
    a directory, binary and UTF-16 text, a name too long, nothing at all."""
    directory.mkdir(parents=True, exist_ok=True)
    fifo = directory / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    (directory / "folder").mkdir(exist_ok=True)
    (directory / "binary").write_bytes(b"\x7fELF\x02\x01\x01\0" + bytes(range(256)) * 4)
    (directory / "utf16").write_bytes("kernel /cpudriver/cpudriver.S\n".encode("utf-16"))
    (directory / "latin1").write_bytes("caf\xe9 = 1\n".encode("latin-1"))
    return {"/dev/zero": "/dev/zero", "/dev/full": "/dev/full", "fifo": str(fifo),
            "folder": str(directory / "folder"), "binary": str(directory / "binary"),
            "utf16": str(directory / "utf16"), "latin1": str(directory / "latin1"),
            "missing": str(directory / "missing"), "long": str(directory / ("x" * 5000)),
            "empty name": ""}
