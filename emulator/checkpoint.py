"""Checkpoints: the whole machine at one moment, taken and put back.

    saved = checkpoint.take(machine)
    machine.run(max_cycles=t2)           # anything at all
    checkpoint.restore(machine, saved)   # the machine is as it was at `take`

Going back in time (emulator/debug/timetravel.py) is restoring a
checkpoint and running forward again, which determinism makes exact. So a
checkpoint must hold everything a run's future depends on; it holds:

  RAM              a copy of physical memory, every byte
  each core        unicorn's CPU context (registers, control registers,
                   MSRs, descriptor caches: context_save), and what the Core
                   object keeps beside it: its state, clock, exit code,
                   pending interrupts, counters, the cost model's parking
  each local APIC  its registers and timer deadline
  the console      the half-written line of each core and the byte counts
                   (lines already printed stay printed)
  the scheduler    quanta run and, with a seed, its generator's state
  the cost model   the coherence directory (every tracked line's entry and
                   the per-core counters, in C memory on the C path), the
                   lines each core read since its last `pause`, the parked
                   cores, each core's store buffer (the stores in flight
                   and those it hides from stale copies) and which cores
                   may be stale on each line
  attachments      the hypercall handler (the OS's services) and the
                   observers keep state of their own: each one that has
                   `checkpoint_state()` and `restore_state(state)` methods
                   is asked for it (kernel/capservice.py,
                   kernel/channel_observer.py, emulator/debug/trace.py)

What unicorn keeps outside its context is not copied but made harmless
(DESIGN.md section 6). Its TLB and its cache of translated code belong to
the moment they were filled: `restore` empties both on every core, so
nothing translated or walked after the checkpoint survives into the past.
`take` empties the TLBs too, so that the run after a checkpoint walks the
page tables exactly as the run after a restore does (a stale entry kept
across a checkpoint would be the one thing a restore could not give
back; the translation cache is only a cache of RAM and needs nothing).
The CPUID feature words emulator/core.py clears are set once when a core
is made and never change. Hooks added after a checkpoint (a breakpoint,
a tracked window, a pause site) stay: they belong to whoever added them.
"""

import copy
import ctypes
from dataclasses import dataclass

from unicorn import x86_const as x86
from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH


@dataclass
class Checkpoint:
    """One moment of one machine (opaque: only `restore` reads it)."""
    ram: dict                 # page number -> its bytes, for every page in use
    cores: list
    console: tuple
    scheduler: tuple
    cost: tuple | None
    attachments: list


def take(machine) -> Checkpoint:
    """Everything the machine's future depends on, copied."""
    for core in machine.cores:
        _flush_tlb(core)
    return Checkpoint(ram=_take_ram(machine.memory),
                      cores=[_take_core(core) for core in machine.cores],
                      console=_take_console(machine.console),
                      scheduler=_take_scheduler(machine.scheduler),
                      cost=None if machine.cost is None else _take_cost(machine.cost),
                      attachments=[(thing, thing.checkpoint_state())
                                   for thing in _attachments(machine)])


def restore(machine, saved: Checkpoint) -> None:
    """Put the machine back as it was when `saved` was taken."""
    _restore_ram(machine.memory, saved.ram)
    for core, state in zip(machine.cores, saved.cores):
        _restore_core(core, state)
    _restore_console(machine.console, saved.console)
    _restore_scheduler(machine.scheduler, saved.scheduler)
    if saved.cost is not None:
        _restore_cost(machine.cost, saved.cost)
    for thing, state in saved.attachments:
        thing.restore_state(state)


# --- RAM ---------------------------------------------------------------------
# Of a machine's RAM (64 MiB by default) a run touches little: a URPC
# stream, a few hundred pages. The host knows which pages of the buffer
# were ever touched (/proc/self/pagemap says which are present); the rest
# still read as zeros, and copying them would cost more than the run.
PAGE = 4096


def _pages_in_use(memory) -> list[int]:
    """Page numbers of RAM the host has backed so far (all, if it cannot tell)."""
    count = memory.size // PAGE
    try:
        with open("/proc/self/pagemap", "rb") as pagemap:
            pagemap.seek(memory.address // PAGE * 8)
            entries = pagemap.read(count * 8)
    except OSError:
        return list(range(count))
    if len(entries) != count * 8:
        return list(range(count))
    # Bit 63 of each little-endian 8-byte entry: the high bit of its last
    # byte. Most pages are not present, so find the present ones by search.
    present = entries[7::8].translate(_HIGH_BIT)
    pages, page = [], present.find(1)
    while page >= 0:
        pages.append(page)
        page = present.find(1, page + 1)
    return pages


_HIGH_BIT = bytes(1 if byte & 0x80 else 0 for byte in range(256))


def _take_ram(memory) -> dict:
    return {page: memory.read(page * PAGE, PAGE) for page in _pages_in_use(memory)}


def _restore_ram(memory, pages: dict) -> None:
    zeros = bytes(PAGE)
    for page in set(_pages_in_use(memory)) | pages.keys():
        memory.write(page * PAGE, pages.get(page, zeros))


# --- Cores --------------------------------------------------------------------
_CORE_FIELDS = ("state", "cycles", "exit_code", "failure", "init_received", "_sequence",
                "waiting_on", "_pending_fault", "not_before")
_APIC_FIELDS = ("icr_high", "spurious", "lvt_timer", "timer_initial", "timer_divide",
                "timer_start", "timer_deadline")


def _take_core(core) -> dict:
    state = {name: getattr(core, name) for name in _CORE_FIELDS}
    state["context"] = core.uc.context_save()
    state["pending"] = list(core._pending)
    state["stats"] = copy.copy(core.stats)
    state["apic"] = {name: getattr(core.apic, name) for name in _APIC_FIELDS}
    return state


def _restore_core(core, state: dict) -> None:
    core.uc.context_restore(state["context"])
    for name in _CORE_FIELDS:
        setattr(core, name, state[name])
    core._pending[:] = state["pending"]
    core.stats = copy.copy(state["stats"])
    for name, value in state["apic"].items():
        setattr(core.apic, name, value)
    # Translations and TLB entries made after the checkpoint describe a
    # future this core no longer has.
    core.uc.ctl_flush_tb()
    _flush_tlb(core)


def _flush_tlb(core) -> None:
    """Empty the core's TLB (as a CR3 write would, without one)."""
    core.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)


# --- Console and scheduler ------------------------------------------------------
def _take_console(console) -> tuple:
    return [bytes(line) for line in console._lines], list(console.bytes_written)


def _restore_console(console, state: tuple) -> None:
    lines, written = state
    for buffer, line in zip(console._lines, lines):
        buffer[:] = line
    console.bytes_written[:] = written


def _take_scheduler(scheduler) -> tuple:
    generator = scheduler._random
    return scheduler.quanta_run, None if generator is None else generator.getstate()


def _restore_scheduler(scheduler, state: tuple) -> None:
    scheduler.quanta_run, generator = state
    if generator is not None:
        scheduler._random.setstate(generator)


# --- The cost model -------------------------------------------------------------
_COUNTERS = ("hits", "transfers", "memory_fills", "invalidations", "waits", "bus")
_LINE_FIELDS = ("sharers", "owner", "owner_state", "home", "written_at", "writer", "busy_from",
                "busy_until", "busy_read", "hits", "transfers", "memory_fills",
                "invalidations", "writes")


def _take_cost(cost) -> tuple:
    directory = cost.directory
    # Entries of tracked windows live in ctypes arrays (the C path's memory,
    # where an entry of all zeros is a line the directory does not hold yet):
    # copy the entries in use as bytes; others are Python objects, by field.
    lines = {}
    for key, line in directory._lines.items():
        if _store_record(directory, key) is not None:
            lines[key] = bytes(line)
        else:
            lines[key] = {name: getattr(line, name) for name in _LINE_FIELDS}
    counters = {name: list(getattr(directory, name)) for name in _COUNTERS}
    watches = [bytes(watch) for watch in cost.watches]
    parked = [bytes(counts) for _, _, counts in cost._parked]
    waiters = {line: [core.id for core in cores] for line, cores in cost.waiters.items()}
    # Stores in flight, and what they hide (detailed timing only).
    buffers = [bytes(buffer) for buffer in cost.store_buffers or ()]
    hidden = None if cost.visibility is None else _take_hidden(cost.visibility)
    return lines, counters, watches, parked, waiters, buffers, hidden


def _restore_cost(cost, state: tuple) -> None:
    from emulator.interconnect.coherence import _Line
    lines, counters, watches, parked, waiters, buffers, hidden = state
    directory = cost.directory
    for key in directory._lines.keys() - lines.keys():
        record = _store_record(directory, key)
        if record is not None:              # new since the checkpoint: not held then
            ctypes.memset(ctypes.addressof(record), 0, ctypes.sizeof(record))
    directory._lines.clear()
    for key, saved in lines.items():
        if isinstance(saved, bytes):
            record = directory._lines[key] = _store_record(directory, key)
            ctypes.memmove(ctypes.addressof(record), saved, len(saved))
        else:
            line = directory._lines[key] = _Line()
            for name, value in saved.items():
                setattr(line, name, value)
    for name, values in counters.items():
        getattr(directory, name)[:] = values
    for watch, data in zip(cost.watches, watches):
        ctypes.memmove(ctypes.addressof(watch), data, len(data))
    for (_, _, counts), data in zip(cost._parked, parked):
        ctypes.memmove(ctypes.addressof(counts), data, len(data))
    for buffer, data in zip(cost.store_buffers or (), buffers):
        ctypes.memmove(ctypes.addressof(buffer), data, len(data))
    if hidden is not None:
        _restore_hidden(cost.visibility, hidden)
    cost.waiters.clear()
    for line, cores in waiters.items():
        cost.waiters[line] = [cost.machine.cores[core] for core in cores]


def _take_hidden(visibility) -> tuple:
    """What the store buffers hide, beyond the buffers themselves: which
    cores may be stale on each line, the floor and the count of stores."""
    return ([bytes(lines) for _, _, lines in visibility._windows],
            visibility.floor.value, visibility.sequence.value)


def _restore_hidden(visibility, hidden) -> None:
    windows, visibility.floor.value, visibility.sequence.value = hidden
    for (_, _, lines), data in zip(visibility._windows, windows):
        ctypes.memmove(ctypes.addressof(lines), data, len(data))


def _store_record(directory, key: int):
    for first, end, records in directory._stores:
        if first <= key < end:
            return records[key - first]
    return None


# --- Attachments ------------------------------------------------------------------
def _attachments(machine) -> list:
    """The hypercall handler and the observers that can save their state,
    each once (a bound method's object counts as the object)."""
    candidates = [machine._hypercall_handler, *machine.observers]
    if machine.cost is not None:
        candidates += machine.cost.listeners
    found = []
    for thing in candidates:
        thing = getattr(thing, "__self__", thing)
        if hasattr(thing, "checkpoint_state") and all(thing is not f for f in found):
            found.append(thing)
    return found


def fingerprint(machine) -> tuple:
    """What a run has done so far, to compare two runs: every core's
    registers, state and clock, and a digest of RAM (for tests and checks)."""
    import hashlib
    cores = []
    for core in machine.cores:
        registers = tuple(core.regs.read(getattr(x86, f"UC_X86_REG_{name}"))
                          for name in ("RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP",
                                       "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15",
                                       "RIP", "RFLAGS", "CR3"))
        cores.append((core.state.value, core.cycles, core.stats.instructions, registers))
    # Pages the host never backed are zeros: hashing them would back them all.
    digest = hashlib.sha256()
    zeros = bytes(PAGE)
    for page in _pages_in_use(machine.memory):
        data = machine.memory.read(page * PAGE, PAGE)
        if data != zeros:
            digest.update(page.to_bytes(8, "little") + data)
    return tuple(cores), digest.hexdigest()
