"""keystone in a child process, so that its hangs and crashes are not the host's.

keystone 0.9.2 loops forever on some malformed lines and, asked for a huge
block of data, allocates until the operating system kills the process. The
assembler screens what it can (emulator/asm_screen.py), but a student's
program must never hang or crash the machine that assembles it, so keystone
itself runs here, in a small worker process that lives as long as ours:

  * every request has a deadline; a worker that misses it is killed, and
    the request ends in `Stuck("did not finish in 4 s")`;
  * the worker's address space is limited (RLIMIT_AS), so a runaway
    allocation kills the worker, not the host: `Stuck("crashed ...")`;
  * the next request starts a fresh worker (~50 ms).

Use (the parent's side; keystone is never imported in the parent):

    code = assemble(source, base, seconds=4)  # KeystoneError, Stuck
    names = symbols_asked(source)             # what keystone could not find
    index = first_stuck([text, ...], base, seconds=2)   # which one hangs

Run as a program, this file is the worker: it reads requests on stdin and
answers on stdout (a mode byte, the base and a length, then the payload;
the answer is a status byte, keystone's error number and a length).
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time

__all__ = ["KeystoneError", "Stuck", "assemble", "symbols_asked", "first_stuck", "start",
           "stop"]

MEMORY_LIMIT = 512 << 20        # the worker's address space: keystone's own ~30 MB, and
                                # ~70 MB for the biggest .fill the screen lets through

_REQUEST = struct.Struct("<BQI")        # mode, base, payload length
_ANSWER = struct.Struct("<BiI")         # status, keystone's errno, payload length
_ASSEMBLE, _NAMES, _EACH = 0, 1, 2      # modes
_OK, _KS_ERROR, _OTHER_ERROR = 0, 1, 2  # statuses
_SEPARATOR = b"\0"                      # between the texts of an _EACH request (never in source)
_DONE = b"."                            # the worker's word that one text of _EACH finished
_READY = b"R"                           # ... that it has started and loaded keystone
STARTUP_SECONDS = 60                    # a Python and keystone starting on a busy machine


class KeystoneError(Exception):
    """keystone refused the source; `errno` is its KS_ERR_* number."""

    def __init__(self, errno: int, message: str):
        super().__init__(message)
        self.errno = errno


class Stuck(Exception):
    """keystone did not finish in time, or its process died; str() says which."""


def assemble(source: bytes, base: int, seconds: float) -> bytes:
    """keystone's output for `source` laid out at `base`."""
    return _worker.request(_ASSEMBLE, base, source, seconds)


def symbols_asked(source: bytes, seconds: float) -> list[str]:
    """The names keystone asked a resolver for (resolving none) while reading `source`."""
    answer = _worker.request(_NAMES, 0, source, seconds)
    return answer.decode("utf-8", errors="replace").split("\n") if answer else []


def first_stuck(texts: list[bytes], base: int, seconds: float) -> tuple[int, Stuck] | None:
    """The first text keystone hangs or dies on when assembled by itself, or None."""
    return _worker.first_stuck(texts, base, seconds)


def start() -> None:
    """Start the worker now, so it is ready when the first request comes."""
    with _worker.lock:
        _worker.start()


def stop() -> None:
    """End the worker (it is started again when needed)."""
    _worker.stop()


# --------------------------------------------------------------------------
# The parent's side
# --------------------------------------------------------------------------

class _Worker:
    """One worker process, started on demand and replaced when it fails."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.ready = False
        self.lock = threading.Lock()

    def start(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.stop()
            self.process = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
            self.ready = False

    def wait_until_ready(self) -> None:
        """Deadlines count from here: starting is not keystone's work, and may be slow."""
        self.start()
        if not self.ready:
            try:
                self.read(len(_READY), time.monotonic() + STARTUP_SECONDS, STARTUP_SECONDS)
            except Stuck as stuck:
                raise RuntimeError(f"the keystone worker did not start: it {stuck}") from None
            self.ready = True

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout):
                pipe.close()
            self.process = None

    def request(self, mode: int, base: int, payload: bytes, seconds: float) -> bytes:
        with self.lock:
            self.wait_until_ready()
            deadline = time.monotonic() + seconds
            self.send(mode, base, payload, seconds)
            return self.answer(deadline, seconds)

    def first_stuck(self, texts: list[bytes], base: int,
                    seconds: float) -> tuple[int, Stuck] | None:
        with self.lock:
            self.wait_until_ready()
            self.send(_EACH, base, _SEPARATOR.join(texts), seconds)
            for index in range(len(texts)):
                try:
                    self.read(1, time.monotonic() + seconds, seconds)
                except Stuck as stuck:
                    return index, stuck
            self.answer(time.monotonic() + seconds, seconds)
            return None

    def send(self, mode: int, base: int, payload: bytes, seconds: float) -> None:
        try:
            self.process.stdin.write(_REQUEST.pack(mode, base, len(payload)) + payload)
        except OSError:                        # it died before reading
            raise self.failed(seconds) from None

    def answer(self, deadline: float, seconds: float) -> bytes:
        status, errno, size = _ANSWER.unpack(self.read(_ANSWER.size, deadline, seconds))
        payload = self.read(size, deadline, seconds)
        if status == _OK:
            return payload
        message = payload.decode("utf-8", errors="replace")
        raise KeystoneError(errno if status == _KS_ERROR else -1, message)

    def read(self, size: int, deadline: float, seconds: float) -> bytes:
        """Exactly `size` bytes of the answer, or Stuck when time runs out or the worker dies."""
        chunks, fd = [], self.process.stdout.fileno()
        while size > 0:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.stop()
                raise Stuck(f"did not finish in {seconds:g} s")
            chunk = os.read(fd, size)
            if not chunk:
                raise self.failed(seconds)
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def failed(self, seconds: float) -> Stuck:
        """The worker died under a request: say how, and forget it."""
        try:
            code = self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            code = None
        self.stop()
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return Stuck(f"crashed (killed by {name}; it may have run out of its "
                         f"{MEMORY_LIMIT >> 20} MiB of memory)")
        return Stuck(f"crashed (exit status {code})")


_worker = _Worker()
atexit.register(_worker.stop)


# --------------------------------------------------------------------------
# The worker's side
# --------------------------------------------------------------------------

def _serve() -> None:
    """Answer requests until stdin closes."""
    _limit_memory()
    _leave_with_the_parent()
    from keystone import KS_ARCH_X86, KS_MODE_64, Ks, KsError
    plain = Ks(KS_ARCH_X86, KS_MODE_64)
    # A second instance records the names it is asked for. It is never used
    # for code: with a resolver, keystone reads decimal numbers as hex.
    asking, asked = Ks(KS_ARCH_X86, KS_MODE_64), []

    def resolver(name, value):
        asked.append(name.decode("utf-8", errors="replace"))
        return False

    asking.sym_resolver = resolver
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    answers.write(_READY)
    answers.flush()
    while True:
        header = requests.read(_REQUEST.size)
        if len(header) < _REQUEST.size:
            return
        mode, base, size = _REQUEST.unpack(header)
        payload = requests.read(size)
        try:
            if mode == _ASSEMBLE:
                answer = plain.asm(payload, base, as_bytes=True)[0] or b""
            elif mode == _NAMES:
                asked.clear()
                try:
                    asking.asm(payload, 0)
                except KsError:
                    pass
                answer = "\n".join(asked).encode()
            else:
                for text in payload.split(_SEPARATOR):
                    try:
                        plain.asm(text, base)
                    except KsError:
                        pass
                    answers.write(_DONE)
                    answers.flush()
                answer = b""
            reply = _ANSWER.pack(_OK, 0, len(answer)) + answer
        except KsError as error:
            message = str(error).encode()
            reply = _ANSWER.pack(_KS_ERROR, error.errno, len(message)) + message
        except Exception as error:             # keystone's binding raises others too
            message = f"{type(error).__name__}: {error}".encode()
            reply = _ANSWER.pack(_OTHER_ERROR, 0, len(message)) + message
        answers.write(reply)
        answers.flush()


def _limit_memory() -> None:
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass                    # not on this system: the deadline still holds


def _leave_with_the_parent() -> None:
    """Exit when the parent is gone, even while keystone loops (it runs without the GIL)."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(1)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    _serve()
