"""The cost model's C fast path: the memory it shares with Python, and whether it runs.

Every access to tracked memory runs a unicorn memory hook, and one served
in Python costs over a microsecond, half of it unicorn calling into Python.
emulator/_hitpath.c holds the cost model's hooks written in C: the memory
hook serves accesses itself, by a mirror of the directory's rules, and the
hook on `pause` instructions lets run the pauses that cannot park; both
call the Python code of emulator/cost.py for the rest (the CPython
accelerator pattern: Lib/heapq.py and Modules/_heapqmodule.c). The rules a
student reads stay in emulator/interconnect/coherence.py and cost.py.

C and Python work on the same memory, never on copies. These ctypes
structs mirror the C ones field for field:

    SharedLine       a coherence directory entry (_Line's fields,
                     emulator/interconnect/coherence.py), one array per
                     tracked window, handed to the directory with `keep_lines_in`
    SharedDirectory  the rest of what the directory's rules need: its
                     cost tables (protocol.py), the bus's busy period and
                     the per-core counters
    Watch            the lines a core read since its last `pause` (parking, cost.py)
    PauseHook        one core's hook on its `pause` instructions (code
                     hooks, or block hooks where a pause starts a block)
    Window           one core's hook on one tracked window: what the C hook
                     gets as its user_data
    SharedClock      a core's clock during a quantum (core.clock, emulator/core.py),
                     with where to find unicorn's instruction count, and what
                     the C hook needs to stop the core before an instruction
    StoreBuffer      a core's outstanding stores (emulator/interconnect/storebuffer.py,
                     where it lives: the rules are read there), and the stores
                     it hides from stale copies (HiddenStore; HiddenLine per
                     tracked line)

The cost model keeps its state in these on both paths; the paths differ
only in which functions unicorn calls. A run gives the same cycles,
instructions and counters with or without the C code (tests/test_hitpath.py).

Which path runs:

    hitpath.describe()       "C", or "pure Python (why)"
    machine.cost.hit_path    the same, for one machine's cost model

The C module is built when sprat is installed (setup.py: `pip install -e .`
builds it in place). Without a C compiler the build is skipped and the
pure Python path runs: same results, slower. To force the pure Python path,
set SPRAT_PURE_COST_MODEL=1 in the environment (it applies to cost models
made while it is set). The C code mirrors the tree's own directory, so a
directory from anywhere else (a lab workspace's copy of coherence.py,
labs/06-interconnect) runs on the pure Python path too: the mirror would
serve most accesses without ever calling it.
"""

import ctypes
import importlib
import os
import sys
from pathlib import Path

from unicorn import (UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_READ_AFTER,
                     UC_HOOK_MEM_WRITE, UC_MEM_WRITE, UcError)
from unicorn import x86_const as x86
from unicorn.unicorn_const import UC_ERR_OK
from unicorn.unicorn_py3.unicorn import uc_hook_h, uclib

from emulator.interconnect.storebuffer import (MAX_HIDDEN, MAX_OUTSTANDING, HiddenLine,
                                               HiddenStore, StoreBuffer)


PURE_ENV = "SPRAT_PURE_COST_MODEL"
MAX_WATCHED_LINES = 128    # a poll loop reading more lines than this is not parked
                           # (a monitor on 64 cores reads 65: userland/monitor.S serve)
UNDO_BYTES = 16            # the widest deferred store the C hook puts back itself


class SharedClock(ctypes.Structure):
    """A core's clock in C memory (core.py's Clock, and the instruction count
    that now() adds): struct clock in _hitpath.c."""
    _fields_ = [
        ("start", ctypes.c_int64),
        ("quantum", ctypes.c_int64),
        ("charged", ctypes.c_int64),
        ("emu_counter", ctypes.c_void_p),       # uint64_t *: cpustate.emu_counter()
        ("horizon", ctypes.c_int64),
        ("served", ctypes.c_uint64),
        ("ahead", ctypes.c_int64),              # 1: charged ahead, Python decides deferrals
        ("deferred", ctypes.c_int64),           # 1: stopped before an instruction
        ("memory", ctypes.c_void_p),            # physical memory, in the host
        ("memory_size", ctypes.c_uint64),
        ("emu_stop", ctypes.c_void_p),          # UC_EMU_STOP
        ("undo_address", ctypes.c_int64),       # a store deferred in C: what it
        ("undo_size", ctypes.c_int64),          # overwrote (Core._run puts it back)
        ("undo", ctypes.c_uint8 * UNDO_BYTES),
    ]


class SharedLine(ctypes.Structure):
    """A coherence directory entry in C memory: struct line in _hitpath.c."""
    _fields_ = [
        ("sharers", ctypes.c_uint64),
        ("owner", ctypes.c_int32),
        ("owner_state", ctypes.c_wchar),      # reads and writes as a 1-letter str, like _Line's
        ("home", ctypes.c_int32),
        ("written_at", ctypes.c_int64),
        ("writer", ctypes.c_int32),
        ("busy_from", ctypes.c_int64),
        ("busy_until", ctypes.c_int64),
        ("busy_read", ctypes.c_int32),
        ("hits", ctypes.c_uint64),
        ("transfers", ctypes.c_uint64),
        ("memory_fills", ctypes.c_uint64),
        ("invalidations", ctypes.c_uint64),
        ("writes", ctypes.c_uint64),
    ]


class SharedDirectory(ctypes.Structure):
    """The directory's transfer costs and per-core counters in C memory:
    struct directory in _hitpath.c. The counters are the directory's own
    (CoherenceDirectory(counter=...)); `directory_in_c_memory` makes one."""
    _fields_ = [
        ("n_cores", ctypes.c_int64),
        ("l1_hit", ctypes.c_int64),
        ("merge_reads", ctypes.c_int64),
        ("bus_occupancy", ctypes.c_int64),
        ("fetch", ctypes.c_void_p),             # int64_t [homes][n_cores][n_cores + 1]
        ("invalidate", ctypes.c_void_p),        # the same shape
        ("die", ctypes.c_void_p),               # int32_t [n_cores]
        ("bus", ctypes.c_void_p),               # uint64_t [2]: the bus's busy period
        ("hits", ctypes.c_void_p),              # uint64_t [n_cores] each
        ("transfers", ctypes.c_void_p),
        ("memory_fills", ctypes.c_void_p),
        ("invalidations", ctypes.c_void_p),
        ("waits", ctypes.c_void_p),
    ]


class Watch(ctypes.Structure):
    """The lines a core read since its last `pause`, each with its write count
    at the time, and whether the core was just woken from parking or its
    poll round cut short by an interrupt (then its next pause runs without
    a look at them, and the next round starts afresh): struct watch in
    _hitpath.c."""
    _fields_ = [
        ("count", ctypes.c_int32),
        ("overflowed", ctypes.c_int32),         # more reads than we watch: never park
        ("woken", ctypes.c_int32),
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

    def clear(self) -> None:
        """Forget the reads so far."""
        self.count = self.overflowed = 0

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
        ("parked", ctypes.c_void_p),            # int32_t per line: cores parked on it
        ("hidden", ctypes.c_void_p),            # HiddenLine per line, or 0: hide nothing
        ("first_line", ctypes.c_uint64),        # line number of lines[0]
        ("n_lines", ctypes.c_uint64),
        ("directory", ctypes.c_void_p),         # the SharedDirectory
        ("clock", ctypes.c_void_p),             # the core's SharedClock
        ("watch", ctypes.c_void_p),             # its Watch
        ("buffer", ctypes.c_void_p),            # its StoreBuffer
        ("core", ctypes.c_int64),
        ("wake", ctypes.py_object),             # cost.py's wake(): after a write, if parked
        ("charge", ctypes.py_object),           # cost.py's charge(): the rest
        ("defer", ctypes.py_object),            # cost.py's defer(): stop before the instruction
    ]


class PauseHook(ctypes.Structure):
    """One core's hook on its `pause` sites (code hooks, or block hooks on
    sites that start a block: cost.find_pause_sites): struct pause_hook in
    _hitpath.c."""
    _fields_ = [
        ("watch", ctypes.c_void_p),             # the core's Watch
        ("clock", ctypes.c_void_p),             # its SharedClock (block hooks read it)
        ("memory", ctypes.c_void_p),            # physical memory, in the host
        ("memory_size", ctypes.c_uint64),
        ("reg_read", ctypes.c_void_p),          # UC_REG_READ
        ("pause", ctypes.py_object),            # cost.py's on_pause(address, size)
        ("checked_pause", ctypes.py_object),    # cost.py's on_checked_pause()
    ]


# unicorn's uc_reg_read, for PauseHook: the C pause hook reads CR0 and CR3 with it.
UC_REG_READ = ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value
# unicorn's uc_emu_stop, for SharedClock: the C memory hook stops a core with it.
UC_EMU_STOP = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value


def counters(n: int):
    """A per-core counter of the directory in C memory (CoherenceDirectory(counters=...))."""
    return (ctypes.c_uint64 * n)()


def share(directory) -> SharedDirectory:
    """`directory`'s costs and counters for the C path; its counters must be
    in C memory (made by `counters`)."""
    n = directory.topology.n_cores()
    # The directory's own cost tables, flattened: [(home * n + me) * (n + 1) + source].
    fetch = (ctypes.c_int64 * (len(directory._fetch_cost) * n * (n + 1)))(
        *(cycles for rows in directory._fetch_cost for row in rows for cycles in row))
    invalidate = (ctypes.c_int64 * (len(directory._invalidate_cost) * n * (n + 1)))(
        *(cycles for rows in directory._invalidate_cost for row in rows for cycles in row))
    die = (ctypes.c_int32 * n)(*directory._die)
    shared = SharedDirectory(n_cores=n, l1_hit=directory.topology.l1_hit,
                             merge_reads=int(directory.merge_reads),
                             bus_occupancy=directory._bus_occupancy,
                             fetch=ctypes.addressof(fetch), invalidate=ctypes.addressof(invalidate),
                             die=ctypes.addressof(die),
                             **{name: ctypes.addressof(getattr(directory, name))
                                for name in ("bus", "hits", "transfers", "memory_fills",
                                             "invalidations", "waits")})
    shared.tables = (fetch, invalidate, die)       # C holds bare pointers to them
    return shared


def _load():
    """The C module, or None and why not."""
    try:
        _hitpath = importlib.import_module("emulator._hitpath")
    except ModuleNotFoundError:
        return None, "emulator/_hitpath.c is not built; `pip install -e .` builds it, given a C compiler"
    except ImportError as error:
        return None, f"emulator/_hitpath.c is built but does not load: {error}"
    mirrors = {"clock": SharedClock, "line": SharedLine, "directory": SharedDirectory,
               "watch": Watch, "pause_hook": PauseHook, "window": Window,
               "store_buffer": StoreBuffer, "hidden_store": HiddenStore,
               "hidden_line": HiddenLine}
    layouts = getattr(_hitpath, "layouts", {})
    differ = [f"struct {name}" for name, mirror in mirrors.items()
              if layouts.get(name) != _layout(mirror)]
    constants = {"UC_MEM_WRITE": UC_MEM_WRITE, "MAX_WATCHED_LINES": MAX_WATCHED_LINES,
                 "UNDO_BYTES": UNDO_BYTES,
                 "MAX_OUTSTANDING": MAX_OUTSTANDING, "MAX_HIDDEN": MAX_HIDDEN,
                 "UC_X86_REG_CR0": x86.UC_X86_REG_CR0, "UC_X86_REG_CR3": x86.UC_X86_REG_CR3}
    if any(getattr(_hitpath, name, None) != value for name, value in constants.items()):
        differ.append("constants")
    if differ:
        return None, (f"{_hitpath.__file__} was built from another version of "
                      f"_hitpath.c ({', '.join(differ)} differ); rebuild it: pip install -e .")
    return _hitpath, None


def _layout(mirror) -> tuple:
    """A ctypes struct's size and field offsets, as _hitpath.c reports its own."""
    return (ctypes.sizeof(mirror), *(getattr(mirror, name).offset for name, _ in mirror._fields_))


_hitpath, _unavailable = _load()


# The directory the C code mirrors: the tree's own.
MIRRORED = Path(__file__).resolve().parent / "interconnect" / "coherence.py"


def why_pure(directory=None) -> str | None:
    """Why a cost model made now, with `directory` (a CoherenceDirectory
    class; None: the one `import` gives), would take the pure Python path;
    None if it takes C."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV}={os.environ[PURE_ENV]}"
    if directory is None:
        from emulator.interconnect.coherence import CoherenceDirectory as directory
    source = getattr(sys.modules.get(directory.__module__), "__file__", None)
    if source is None or Path(source).resolve() != MIRRORED:
        return (f"the directory is {source or directory.__module__}, not the tree's, "
                f"which the C code mirrors")
    return _unavailable


def describe() -> str:
    """The path a cost model made now would take: "C" or "pure Python (why)"."""
    reason = why_pure()
    return "C" if reason is None else f"pure Python ({reason})"


def add_hook(uc, window: Window, begin: int, end: int) -> None:
    """Have unicorn call the C memory hook on every read and write in
    [begin, end], with `window` as its user_data (which the binding's
    hook_add cannot pass)."""
    _add(uc, UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, _hitpath.on_access, window, begin, end)


def add_restore_hook(uc, buffer: StoreBuffer, begin: int, end: int) -> None:
    """Have unicorn call the C hook that puts the present back after a load
    that read a stale copy (StoreBuffer.restore) on every read in [begin, end]."""
    _add(uc, UC_HOOK_MEM_READ_AFTER, _hitpath.on_read_done, buffer, begin, end)


def add_pause_hook(uc, hook: PauseHook, address: int) -> None:
    """Have unicorn call the C pause hook on the instruction at `address`."""
    _add(uc, UC_HOOK_CODE, _hitpath.on_pause, hook, address, address)


def add_pause_block_hook(uc, hook: PauseHook, address: int) -> None:
    """Have unicorn call the C pause hook as a block starts at `address`
    (a pause every way to which starts a block: cost.find_pause_sites).
    Its Python functions must be made to run as from a code hook
    (Core.as_code_hook)."""
    _add(uc, UC_HOOK_BLOCK, _hitpath.on_pause_block, hook, address, address)


def _add(uc, kind: int, function: int, user_data, begin: int, end: int) -> None:
    handle = uc_hook_h()
    status = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), kind, ctypes.c_void_p(function),
                               ctypes.c_void_p(ctypes.addressof(user_data)),
                               ctypes.c_uint64(begin), ctypes.c_uint64(end))
    if status != UC_ERR_OK:
        raise UcError(status)
