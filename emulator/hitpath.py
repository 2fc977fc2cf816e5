"""The cost model's C hit path: the memory it shares with Python, and whether it runs.

Most accesses to tracked memory are cache hits, and a hit served in Python
costs ~1.6 us, half of it unicorn calling into Python. emulator/_hitpath.c
is a unicorn memory hook written in C: it serves the hits itself, and for
every other access asks the Python code of emulator/cost.py, which makes
every other decision (the CPython accelerator pattern: Lib/heapq.py and
Modules/_heapqmodule.c).

C and Python work on the same memory, never on copies. These ctypes
structs mirror the C ones field for field:

    SharedLine   a coherence directory entry (_Line's fields,
                 emulator/interconnect/coherence.py), one array per tracked
                 window, handed to the directory with `keep_lines_in`
    Watch        the lines a core read since its last `pause` (parking, cost.py)
    Window       one core's hook on one tracked window: what the C hook gets
                 as its user_data
    SharedClock  a core's clock during a quantum (core.clock, emulator/core.py),
                 with where to find unicorn's instruction count

plus the directory's per-core hit counters, a ctypes array. The cost model
keeps its state in these on both paths, and the same Python code decides
every access that is not a hit; the paths differ only in which function
unicorn calls on an access. So a run gives the same cycles, instructions
and counters with or without the C code (tests/test_hitpath.py).

Which path runs:

    hitpath.describe()       "C", or "pure Python (why)"
    machine.cost.hit_path    the same, for one machine's cost model

The C module is built when sprat is installed (setup.py: `pip install -e .`
builds it in place). Without a C compiler the build is skipped and the
pure Python path runs: same results, slower. To force the pure Python path,
set SPRAT_PURE_COST_MODEL=1 in the environment (it applies to cost models
made while it is set).
"""

import ctypes
import importlib
import os

from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE, UcError
from unicorn.unicorn_const import UC_ERR_OK
from unicorn.unicorn_py3.unicorn import uc_hook_h, uclib


PURE_ENV = "SPRAT_PURE_COST_MODEL"
MAX_WATCHED_LINES = 64     # a poll loop reading more lines than this is not parked


class SharedClock(ctypes.Structure):
    """A core's clock in C memory (core.py's Clock, and the instruction count
    that now() adds): struct clock in _hitpath.c."""
    _fields_ = [
        ("start", ctypes.c_int64),
        ("quantum", ctypes.c_int64),
        ("charged", ctypes.c_int64),
        ("emu_counter", ctypes.c_void_p),       # uint64_t *: cpustate.emu_counter()
    ]


class SharedLine(ctypes.Structure):
    """A coherence directory entry in C memory: struct line in _hitpath.c."""
    _fields_ = [
        ("sharers", ctypes.c_uint64),
        ("owner", ctypes.c_int32),
        ("owner_state", ctypes.c_wchar),      # reads and writes as a 1-letter str, like _Line's
        ("written_at", ctypes.c_int64),
        ("writer", ctypes.c_int32),
        ("hits", ctypes.c_uint64),
        ("transfers", ctypes.c_uint64),
        ("memory_fills", ctypes.c_uint64),
        ("invalidations", ctypes.c_uint64),
        ("writes", ctypes.c_uint64),
    ]


class Watch(ctypes.Structure):
    """The lines a core read since its last `pause`, each with its write count
    at the time: struct watch in _hitpath.c."""
    _fields_ = [
        ("count", ctypes.c_int32),
        ("overflowed", ctypes.c_int32),         # more reads than we watch: never park
        ("line", ctypes.c_int64 * MAX_WATCHED_LINES),
        ("writes", ctypes.c_uint64 * MAX_WATCHED_LINES),
    ]

    def add(self, line: int, writes: int) -> None:
        """Remember one read (watch() in _hitpath.c does the same for hits)."""
        count = self.count
        if count < MAX_WATCHED_LINES:
            self.line[count] = line
            self.writes[count] = writes
            self.count = count + 1
        else:
            self.overflowed = 1

    def take(self) -> set | None:
        """The reads so far as a set of (line, writes), or None if there were
        too many to watch; then start afresh."""
        count = self.count
        reads = None if self.overflowed else set(zip(self.line[:count], self.writes[:count]))
        self.count = self.overflowed = 0
        return reads


class Window(ctypes.Structure):
    """One core's hook on one tracked window: struct window in _hitpath.c."""
    _fields_ = [
        ("lines", ctypes.c_void_p),             # SharedLine array of the window
        ("first_line", ctypes.c_uint64),        # line number of lines[0]
        ("n_lines", ctypes.c_uint64),
        ("clock", ctypes.c_void_p),             # the core's SharedClock
        ("core_hits", ctypes.c_void_p),         # its counter in directory.hits
        ("watch", ctypes.c_void_p),             # its Watch
        ("l1_hit", ctypes.c_int64),
        ("core", ctypes.c_int32),
        ("serve", ctypes.py_object),            # cost.py's serve(): a miss's cost
        ("charge", ctypes.py_object),           # cost.py's charge(): the rest
    ]


def _load():
    """The C module, or None and why not."""
    try:
        _hitpath = importlib.import_module("emulator._hitpath")
    except ModuleNotFoundError:
        return None, "emulator/_hitpath.c is not built; `pip install -e .` builds it, given a C compiler"
    except ImportError as error:
        return None, f"emulator/_hitpath.c is built but does not load: {error}"
    mirrors = {"clock": SharedClock, "line": SharedLine, "watch": Watch, "window": Window}
    layouts = getattr(_hitpath, "layouts", {})
    differ = [f"struct {name}" for name, mirror in mirrors.items()
              if layouts.get(name) != _layout(mirror)]
    if (getattr(_hitpath, "UC_MEM_WRITE", None) != UC_MEM_WRITE
            or getattr(_hitpath, "MAX_WATCHED_LINES", None) != MAX_WATCHED_LINES):
        differ.append("constants")
    if differ:
        return None, (f"{_hitpath.__file__} was built from another version of "
                      f"_hitpath.c ({', '.join(differ)} differ); rebuild it: pip install -e .")
    return _hitpath, None


def _layout(mirror) -> tuple:
    """A ctypes struct's size and field offsets, as _hitpath.c reports its own."""
    return (ctypes.sizeof(mirror), *(getattr(mirror, name).offset for name, _ in mirror._fields_))


_hitpath, _unavailable = _load()


def why_pure() -> str | None:
    """Why a cost model made now would take the pure Python path; None if it takes C."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV}={os.environ[PURE_ENV]}"
    return _unavailable


def describe() -> str:
    """The path a cost model made now would take: "C" or "pure Python (why)"."""
    reason = why_pure()
    return "C" if reason is None else f"pure Python ({reason})"


def add_hook(uc, window: Window, begin: int, end: int) -> None:
    """Have unicorn call the C hook on every read and write in [begin, end],
    with `window` as its user_data (which the binding's hook_add cannot pass)."""
    handle = uc_hook_h()
    status = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE,
                               ctypes.c_void_p(_hitpath.on_access),
                               ctypes.c_void_p(ctypes.addressof(window)),
                               ctypes.c_uint64(begin), ctypes.c_uint64(end))
    if status != UC_ERR_OK:
        raise UcError(status)
