"""The user's files: reading them with bounds, writing outputs that may fail.

Everything sprat reads that a person hands it (a boot image, a topology,
a debugger script, a trace) goes through `read_text`:

    text = read_text(path, "topology file")

It must be a regular file (a device such as /dev/zero or /dev/full would be
read without end, a fifo would block, a directory is not a file; /dev/null
reads as the empty file it is), at most `limit` bytes, and UTF-8 text
without NUL bytes (so a binary or a UTF-16 file is refused). Anything else
is one SpratError line naming the file.

Everything sprat writes for a person (a trace, a chart) goes through
`OutputFile` or `write_bytes`. A failure to write (a full disk, an I/O
error, no permission, a name too long) is an OutputError: one line, exit
status 1, because the run itself may have been fine. An OutputFile keeps
the first failure and reports it at `close()`, so that a machine observer
writing to it never raises from inside a running core.

What does not live here: what a file means (its parser does that), and
the sources the assembler reads (emulator/assembler.py bounds its own).
"""

from __future__ import annotations

import errno
import os
import stat

from emulator.errors import OutputError, SpratError

# A hand-written file (image, topology, script) is a few kilobytes; a
# megabyte is already far more than any of them needs.
TEXT_LIMIT = 1 << 20
# A trace holds a line per message: a long run writes tens of megabytes.
TRACE_LIMIT = 256 << 20


def read_text(path, what: str, limit: int = TEXT_LIMIT) -> str:
    """The UTF-8 text of the user's file `path`, or a one-line SpratError."""
    data = read_bytes(path, what, limit)
    if b"\0" in data:
        raise SpratError(f"{path}: not a text file (it holds NUL bytes: binary, or UTF-16?); "
                         f"{_a(what)} is UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpratError(f"{path}: not a text file (invalid UTF-8 at byte {error.start}); "
                         f"{_a(what)} is UTF-8 text") from None


def read_bytes(path, what: str, limit: int = TEXT_LIMIT) -> bytes:
    """At most `limit` bytes of the regular file `path`, or a one-line SpratError."""
    try:
        # O_NONBLOCK: opening a fifo must not wait for a writer; fstat then
        # refuses it. A regular file ignores the flag.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise SpratError(_cannot_read(path, what, error)) from None
    try:
        status = os.fstat(descriptor)
        if _is_devnull(status):
            return b""                      # the empty file everyone knows: `--script /dev/null`
        check_regular(path, what, status)
        chunks, size = [], 0
        while size <= limit:                # one byte past the limit says "too big"
            chunk = os.read(descriptor, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise SpratError(_cannot_read(path, what, error)) from None
    finally:
        os.close(descriptor)
    if size > limit:
        raise SpratError(f"{path}: more than {limit:,} bytes, too big for {_a(what)}")
    return b"".join(chunks)


def check_file(path, what: str, shown=None) -> None:
    """Raise a one-line SpratError unless `path` names a regular file.

    The message starts with `shown` if given (say, the image line that
    named the file), else with the path."""
    shown = path if shown is None else shown
    try:
        status = os.stat(path)
    except OSError as error:
        raise SpratError(_cannot_read(shown, what, error)) from None
    check_regular(shown, what, status)


def check_regular(shown, what: str, status: os.stat_result) -> None:
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        raise SpratError(f"{shown}: is a directory, not {_a(what)}")
    if not stat.S_ISREG(mode):
        kind = "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
               "a fifo" if stat.S_ISFIFO(mode) else "not a regular file"
        raise SpratError(f"{shown}: is {kind}, not {_a(what)} ({_a(what)} is a regular file)")


def _is_devnull(status: os.stat_result) -> bool:
    if not stat.S_ISCHR(status.st_mode):
        return False
    null = os.stat(os.devnull)
    return (status.st_rdev, status.st_dev) == (null.st_rdev, null.st_dev)


def _cannot_read(path, what: str, error: OSError) -> str:
    if error.errno == errno.ENOENT:
        return f"{path}: no such {what}"
    if error.errno == errno.EISDIR:
        return f"{path}: is a directory, not {_a(what)}"
    return f"{path}: cannot read the {what}: {_reason(error)}"


def _a(what: str) -> str:
    return ("an " if what[0] in "aeiou" else "a ") + what


def _reason(error: OSError) -> str:
    if error.errno == errno.ENAMETOOLONG:
        return "the name is too long for this system"
    return error.strerror or str(error)


# --- Outputs -------------------------------------------------------------------------
def check_output_name(path: str, what: str, suffix: str = "") -> str:
    """An argparse-style check of an output file name; returns it, or raises ValueError."""
    if not path:
        raise ValueError(f"an empty name is not {_a(what)}")
    if suffix and not path.lower().endswith(suffix):
        raise ValueError(f"{path!r}: {_a(what)} is written as {suffix.upper().lstrip('.')}, "
                         f"so its name must end in {suffix}")
    # What can be known before a run that may take minutes: the folder is
    # there and the system takes the name (a bench found out at its end).
    folder, name = os.path.split(path)
    if not os.path.isdir(folder or "."):
        raise ValueError(f"{path!r}: no such folder {folder!r} to write {_a(what)} in")
    try:
        longest = os.pathconf(folder or ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = None
    if longest is not None and len(os.fsencode(name)) > longest:
        raise ValueError(f"{path[:60]!r}...: the name is too long for this system "
                         f"(at most {longest} bytes)")
    return path


def write_bytes(path, data: bytes, what: str) -> None:
    """Write the whole of `data` to `path`; an OutputError if the system refuses."""
    out = OutputFile(path, what, binary=True)
    out.write(data)
    out.close()


class OutputFile:
    """A file sprat writes for the user; the first failure surfaces at close()."""

    def __init__(self, path, what: str, binary: bool = False):
        self.path, self.what = path, what
        self.failure = None
        try:
            self.stream = open(path, "wb" if binary else "w",
                               **({} if binary else {"encoding": "utf-8"}))
        except OSError as error:
            raise OutputError(self._message(error)) from None

    def write(self, data) -> None:
        if self.failure is not None:
            return                          # already broken: keep the first reason
        try:
            self.stream.write(data)
        except OSError as error:
            self.failure = self._message(error)

    def close(self) -> None:
        """Close the file; raise OutputError if any write (or the last flush) failed."""
        try:
            self.stream.close()
        except OSError as error:
            self.failure = self.failure or self._message(error)
        if self.failure is not None:
            raise OutputError(self.failure)

    def _message(self, error: OSError) -> str:
        return f"cannot write the {self.what} {self.path}: {_reason(error)}"
