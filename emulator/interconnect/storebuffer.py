"""The store buffer: stores retire before their cache lines arrive (x86-TSO timing).

A real x86 core does not wait for a store. The store retires into the
core's store buffer and the core goes on; the buffer asks for the line in
the background (a "read for ownership", which invalidates the other
copies) and writes the data into the L1 once the line is there, one store
after the other, in program order. So a sender that writes N messages to
N cores pays about one transfer for all of them, not N in a row: the
misses overlap, up to the number the load/store unit keeps outstanding.

That is x86-TSO (Sewell et al., "x86-TSO: a rigorous and usable programmer's
model for x86 multiprocessors", CACM 2010): every core has a FIFO of
stores; a store becomes visible to the other cores when it leaves the
FIFO; the core's own loads read its newest buffered store (forwarding);
and the FIFO is emptied by MFENCE, SFENCE and any locked instruction
(a `lock` prefix, or `xchg` with memory, which is locked without one).

What this module models is the timing of that, per core, and what the
other cores see of a store before it commits:

    buffer.store(address, size, now, stamp)   a store: cycles the core is charged
    buffer.fence(now, kind)                   mfence/sfence/locked: cycles it waits
    visibility.load(core, address, size, now) a load: the past it must read

A store to a line this core holds M or E is a hit: it goes into the L1 at
once, but commits in program order, after the stores still in the buffer.
Any other store enters the buffer: the core is charged what a hit costs,
the line's transaction is run at the coherence directory at that moment
(CoherenceDirectory.access, so it takes its turn at the line's ordering
point as any access does), and the store commits when its transaction
completes, or when the store before it commits, whichever is later. When
the buffer already holds as many outstanding stores as the core keeps
misses in flight, the core first waits for the oldest to commit. A fence
waits until every store in the buffer has committed, and then costs what
the instruction costs (SPECS below). The store of a locked instruction
does not wait in the buffer: the core holds the line until it is done.

A store's commit time is when the other cores can have it: the directory
records it as the line's write time, so a core reading the line is charged
at least until then plus the trip (causality, coherence.py), and a core
parked polling it runs no earlier (emulator/cost.py). Stores to different
lines thus become visible in the order they were made (message passing
works: data before flag), though the writer did not wait for either.

Before it commits, a store is the storing core's alone. Memory in sprat is
one host buffer, written at once, so the store's bytes are there for every
core; but a core that held a copy of the line when the store began reads
that copy until the invalidation reaches it, at the commit. `Visibility`
(below) keeps, for each such store, the bytes it overwrote, and gives them
back to a load by such a core before the commit (a hit on its stale copy).
So the store-buffering outcome of TSO shows (two cores each store, then
each load the other's location, and both read the old values), and a
fence forbids it, as on the silicon; a core with no copy misses, waits for
the commit and sees the store. No outcome TSO forbids can show, provided
the cores' tracked accesses reach the directory in modeled-time order
(emulator/cost.py, "Ordering"): a seeded schedule runs cores out of
that order, and a writer that already made a tracked access later than a
load is not hidden from it (Visibility.load says why).

emulator/_hitpath.c mirrors store() (buffered_store, hide) for the C
memory hook, and puts a load's present back after it (on_read_done): the
structs below are ctypes structs the C code works on too; change both
sides together (tests/test_hitpath.py compares them). A load that may read
a stale copy is rare, and left to Python.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import NamedTuple

from emulator.assembler import is_one_instruction
from emulator.instcost import block_starts
from emulator.interconnect.coherence import LINE_SHIFT

MAX_OUTSTANDING = 32        # the ring's size; a spec's `outstanding` is at most this


@dataclass(frozen=True)
class StoreBufferSpec:
    """One core microarchitecture's store buffer and fence costs, in core cycles."""

    core: str              # which core these numbers are for
    outstanding: int       # store misses in flight before the core waits
    mfence: int            # what each fence instruction costs, its buffer drained
    sfence: int
    locked: int            # a locked read-modify-write of a line the core holds


# AMD K10 (Family 10h: Barcelona, Shanghai; sprat's amd-* presets).
K10 = StoreBufferSpec(
    core="AMD K10 (Family 10h)",
    # Misses in flight: the load/store unit's LS2 queue holds the accesses
    # that missed the L1, 32 entries in K8 and in Family 10h ("a 32-entry
    # queue for L2 cache or system memory load and store accesses", AMD
    # Software Optimization Guide for AMD64 Processors, pub. 25112, A.15 --
    # seen; "12 and 32 in the previous Stars architecture", xtremehardware.com,
    # "Llano architecture", load/store unit page -- seen); the misses the
    # L1 itself keeps in flight are 8 (its miss address buffers, AMD
    # Software Optimization Guide for Family 10h, pub. 40546, appendix A --
    # cited, not re-read). The smaller bound is the one a stream of store
    # misses meets: 8.
    outstanding=8,
    # Agner Fog, "Instruction tables", AMD K10: MFENCE 33, SFENCE 8 (reciprocal
    # throughput, cycles) -- cited, not re-read.
    mfence=33,
    sfence=8,
    # Same tables, K10: XCHG r,m latency 19 (every locked instruction
    # drains the buffer and holds its line the same way) -- cited, not re-read.
    locked=19,
)

# Intel Core 2 (Core microarchitecture: Clovertown; sprat's intel-* presets).
CORE_2 = StoreBufferSpec(
    core="Intel Core 2 (Core microarchitecture)",
    # Misses in flight: the L1 data cache (DCU) "can handle multiple
    # outstanding cache misses and continue to service incoming stores and
    # loads" (Intel 64 and IA-32 Architectures Optimization Reference Manual,
    # 2.1.4 -- seen), through its 8 fill buffers (same manual, Core
    # microarchitecture -- cited, not re-read).
    outstanding=8,
    # Agner Fog, "Instruction tables", Intel Core 2 (Merom/Conroe): MFENCE 9,
    # SFENCE 9 (reciprocal throughput) -- cited, not re-read.
    mfence=9,
    sfence=9,
    # Same tables, Core 2: XCHG r,m latency about 20 -- cited, not re-read.
    locked=20,
)


def spec_for(topology) -> StoreBufferSpec:
    """The store buffer of `topology`'s cores: the intel-* machines have Core 2
    cores, every other machine (the amd-* presets, generic-N, which borrows
    amd-4x4's numbers) K10 cores."""
    return CORE_2 if topology.name.startswith("intel") else K10


# --- Which instructions drain the buffer -------------------------------------------

MFENCE, SFENCE, LOCKED = "mfence", "sfence", "locked"
_LEGACY_PREFIXES = frozenset(b"\x66\x67\xf2\xf3\x2e\x36\x3e\x26\x64\x65")
_LOCK = 0xF0


def fence_kind(code: bytes) -> str | None:
    """What the instruction at the start of `code` does to the store buffer:
    MFENCE, SFENCE, LOCKED (a `lock` prefix, or `xchg` with a memory
    operand), or None (it leaves it alone; LFENCE orders loads only)."""
    at, locked = 0, False
    while at < len(code) and (code[at] in _LEGACY_PREFIXES or code[at] == _LOCK):
        locked |= code[at] == _LOCK
        at += 1
    if at < len(code) and 0x40 <= code[at] <= 0x4F:      # REX
        at += 1
    if locked:
        return LOCKED
    opcode = code[at:at + 3]
    if len(opcode) >= 2 and opcode[0] in (0x86, 0x87) and opcode[1] >> 6 != 3:
        return LOCKED                                     # xchg with memory
    if len(opcode) == 3 and opcode[:2] == b"\x0f\xae" and opcode[2] >> 6 == 3:
        return {6: MFENCE, 7: SFENCE}.get(opcode[2] >> 3 & 7)
    return None


class FenceSite(NamedTuple):
    """Where an instruction that drains the store buffer is (find_fence_sites)."""

    size: int               # its bytes
    starts_block: bool      # a translation block starts there on every way to it


def find_fence_sites(program) -> dict[int, FenceSite]:
    """{address: FenceSite} of every instruction in an assembled program
    that drains the store buffer (as cost.find_pause_sites: the start of
    every statement). A statement whose bytes are not one instruction is
    data (a table of addresses, say), whatever its first bytes look like.
    Every site costs a hook; one that starts a block (instcost.block_starts:
    a fence after a branch or a call) a block hook, any other a code hook,
    which slows all of a core's code (emulator/cost.py, add_fence_sites)."""
    fences = {address: len(statement) for address, statement in program.statements()
              if fence_kind(statement) and is_one_instruction(statement, address)}
    starts = block_starts(program, fences)
    return {address: FenceSite(size, address in starts) for address, size in fences.items()}


# --- One core's buffer ------------------------------------------------------------------

NO_STAMP = -1
MAX_HIDDEN = 64             # stores a core keeps hidden from other cores' stale copies
LINE_BYTES = 1 << LINE_SHIFT


class HiddenStore(ctypes.Structure):
    """A store other cores may not see yet: struct hidden_store in _hitpath.c.

    `stale` are the cores that still had a copy of the line when the store
    took it from them (or that could not see an earlier hidden store to the
    line yet); one whose clock is before `done` reads that copy, the bytes
    before the store (`old`).
    """

    _fields_ = [
        ("address", ctypes.c_int64),          # physical, within one line
        ("size", ctypes.c_int64),
        ("done", ctypes.c_int64),             # when it commits
        ("stale", ctypes.c_uint64),           # bit c: core c may read the line before done
        ("seq", ctypes.c_int64),              # the machine's count of hidden stores: host order
        ("old", ctypes.c_uint8 * LINE_BYTES),  # the bytes it overwrote
    ]


class HiddenLine(ctypes.Structure):
    """What a tracked line has hidden, for the memory hook's quick test:
    struct hidden_line in _hitpath.c. One per tracked line (`Visibility`)."""

    _fields_ = [
        ("cores", ctypes.c_uint64),           # bit c: core c may be stale (ask `Visibility.load`)
        ("until", ctypes.c_int64),            # the latest commit of a store hidden on it
    ]


class StoreBuffer(ctypes.Structure):
    """One core's outstanding stores: when each commits, oldest first; and
    the stores it hides from other cores' stale copies (`kept`).

    A ctypes struct (struct store_buffer in emulator/_hitpath.c) so that
    the C memory hook works on the same buffer. Commit times never
    decrease from one entry to the next (stores commit in order).
    """

    _fields_ = [
        ("outstanding", ctypes.c_int64),      # the spec's bound on stores in flight
        ("head", ctypes.c_int64),             # index of the oldest entry in `done`
        ("count", ctypes.c_int64),            # entries in flight
        ("last", ctypes.c_int64),             # commit time of the youngest store so far
        ("locked_at", ctypes.c_int64),        # the locked instruction running now (its stamp)
        ("done", ctypes.c_int64 * MAX_OUTSTANDING),   # commit times, a ring
        ("memory", ctypes.c_void_p),          # physical memory in the host; 0: hide nothing
        ("sequence", ctypes.c_void_p),        # int64_t *: the machine's count of hidden stores
        ("floor", ctypes.c_void_p),           # int64_t *: stores done by then are seen by all
        ("kept_head", ctypes.c_int64),        # the oldest of `kept`, a ring
        ("kept_count", ctypes.c_int64),
        ("kept", HiddenStore * MAX_HIDDEN),
        ("undo_address", ctypes.c_int64),     # bytes a load read from the past, to put
        ("undo_size", ctypes.c_int64),        # back once it has read them (`restore`)
        ("undo", ctypes.c_uint8 * LINE_BYTES),
        ("latest", ctypes.c_int64),           # when its latest tracked access began
    ]

    def attach(self, core: int, directory, spec: StoreBufferSpec,
               visibility=None) -> "StoreBuffer":
        """Make this `core`'s buffer, in front of `directory`. With a
        `visibility` (the machine's, below), its stores stay hidden from
        other cores' stale copies until they commit."""
        self.outstanding = spec.outstanding
        self.head = self.count = self.last = 0
        self.locked_at = NO_STAMP
        self.core_id, self.directory, self.spec = core, directory, spec
        self.visibility = visibility
        if visibility is not None:
            self.memory = visibility.memory.address
            self.sequence = ctypes.addressof(visibility.sequence)
            self.floor = ctypes.addressof(visibility.floor)
        return self

    def store(self, address: int, size: int, now: int, stamp: int, seen: int = 0) -> int:
        """The cycles to charge for a store of `size` bytes at `address` (in
        one line) begun at `now` by the instruction `stamp` (the core's
        instruction count). `seen`: no core acts before then any more (the
        stores it hides that commit by then are seen by all)."""
        directory, core = self.directory, self.core_id
        addr = address >> LINE_SHIFT << LINE_SHIFT
        others = directory.holders(addr) & ~(1 << core)
        if self.visibility is not None:
            self.make_room_to_hide(seen)
        if stamp == self.locked_at:                            # locked: it waits
            cycles = directory.access(core, addr, True, now)
        elif directory.state(core, addr) in ("M", "E"):
            cycles = directory.access(core, addr, True, now)   # a hit, committed in order
            directory.commit_write(addr >> LINE_SHIFT, self.last)
        else:
            stall = self._make_room(now)
            now += stall
            done = max(now + directory.access(core, addr, True, now), self.last)
            directory.commit_write(addr >> LINE_SHIFT, done)
            self._push(done)
            cycles = stall + directory.topology.l1_hit
        if self.visibility is not None:
            self._hide(address, size, directory.written_at(addr), others)
        return cycles

    def fence(self, now: int, kind: str) -> int:
        """The cycles an MFENCE, SFENCE or locked instruction at `now` takes
        beyond the one every instruction is charged: the wait for every
        buffered store to commit, then the instruction's own cost."""
        wait = max(0, self.last - now)
        self.head = self.count = 0
        return wait + {MFENCE: self.spec.mfence, SFENCE: self.spec.sfence,
                       LOCKED: self.spec.locked}[kind] - 1

    def _make_room(self, now: int) -> int:
        """Retire what has committed by `now`; if the buffer is still full,
        the cycles until its oldest store commits (and retire that one)."""
        stall = 0
        if self.count >= self.outstanding and self.done[self.head] > now:
            stall = self.done[self.head] - now
        now += stall
        while self.count and self.done[self.head] <= now:
            self.head = (self.head + 1) % MAX_OUTSTANDING
            self.count -= 1
        return stall

    def _push(self, done: int) -> None:
        self.done[(self.head + self.count) % MAX_OUTSTANDING] = done
        self.count += 1
        self.last = done

    def pending(self) -> list[int]:
        """Commit times of the stores in flight, oldest first (tests, checkpoints)."""
        return [self.done[(self.head + i) % MAX_OUTSTANDING] for i in range(self.count)]

    # --- Hiding stores from stale copies (see Visibility) ---

    def make_room_to_hide(self, seen: int) -> None:
        """Raise the machine's floor to `seen` (no core acts before then any
        more, so every core sees every store done by then) and forget the
        hidden stores done by the floor, oldest first. If the ring is still
        full, let the oldest go: the floor rises to its commit. (Seeing the
        machine as it is at one later moment keeps every core's stores in
        order and every line's writes in order: a consistent view.)"""
        floor = ctypes.c_int64.from_address(self.floor)
        floor.value = max(seen, floor.value)
        while self.kept_count and self.kept[self.kept_head].done <= floor.value:
            self.kept_head = (self.kept_head + 1) % MAX_HIDDEN
            self.kept_count -= 1
        if self.kept_count == MAX_HIDDEN:
            floor.value = self.kept[self.kept_head].done
            self.kept_head = (self.kept_head + 1) % MAX_HIDDEN
            self.kept_count -= 1

    def _hide(self, address: int, size: int, done: int, others: int) -> None:
        """Keep the store to [address, address + size), committing at `done`,
        hidden from the cores it took the line from, and from those that
        could not see an earlier store to the line yet."""
        line = self.visibility.line(address >> LINE_SHIFT)
        # A core stale on the line itself keeps the store too: it must read
        # its own bytes over the older stores it rolls back.
        stale = others & ~(1 << self.core_id) | line.cores
        if not stale:
            return
        kept = self.kept[(self.kept_head + self.kept_count) % MAX_HIDDEN]
        kept.address, kept.size, kept.done, kept.stale = address, size, done, stale
        kept.seq = self.visibility.sequence.value
        self.visibility.sequence.value += 1
        ctypes.memmove(kept.old, self.memory + address, size)
        self.kept_count += 1
        line.cores |= stale
        line.until = max(line.until, done)

    def hidden(self) -> list[HiddenStore]:
        """The stores this core keeps hidden, oldest first."""
        return [self.kept[(self.kept_head + i) % MAX_HIDDEN] for i in range(self.kept_count)]

    def restore(self) -> None:
        """After a load that read bytes from the past: put the present back."""
        if self.undo_size:
            ctypes.memmove(self.memory + self.undo_address, self.undo, self.undo_size)
            self.undo_size = 0


# --- What the other cores cannot see yet -------------------------------------------

class Visibility:
    """The stores in the machine's store buffers that some cores cannot see.

    A store that misses is in flight from `now` to `done`. Host memory has
    its bytes at once, but a core that held a copy of the line when the
    store began keeps reading that copy until the invalidation reaches it,
    at `done` (the directory charges the store's transaction at once, and
    drops the copy from its books then: that copy is the past). So each
    buffer keeps, for such a store, the bytes it overwrote and who is stale
    (HiddenStore), and a load by a stale core before `done` reads them:

        until = visibility.load(core, address, size, now)

    puts the bytes that core sees into host memory for the load: going from
    the newest hidden store on the line to the oldest, each one the core
    cannot see (another core's, not done by `now`) gives back the bytes it
    overwrote; a store it can see (its own, or done) keeps its bytes. After
    the load, `StoreBuffer.restore` puts the present back (the memory hook
    that runs after a read). The load is then a hit on the stale copy, and
    `until` when the first of its hidden stores reaches the core (0: the
    core sees everything there; its load goes to the directory).

    Two cores storing to the same bytes: the directory orders their
    transactions (the second waits for the first's commit, causality), so
    host order is commit order, and each store keeps what the one before
    it wrote: a third core rolls back both, newest first.

    A core woken by a write to a line it polls runs no earlier than that
    write reaches it (emulator/cost.py, `not_before`), and so after every
    hidden store on the line: `caught_up` clears it there.
    """

    def __init__(self, memory, buffers):
        self.memory = memory
        self.buffers = buffers
        self.sequence = ctypes.c_int64(0)
        self.floor = ctypes.c_int64(0)          # stores done by then are seen by all
        self._windows = []                # (first line, end line, HiddenLine array)

    def add_window(self, first: int, n_lines: int):
        """HiddenLine records for lines first, first + 1, ...: the C hook's too."""
        lines = (HiddenLine * n_lines)()
        self._windows.append((first, first + n_lines, lines))
        return lines

    def line(self, key: int) -> HiddenLine:
        for first, end, lines in self._windows:
            if first <= key < end:
                return lines[key - first]
        raise KeyError(f"line {key << LINE_SHIFT:#x} is not tracked")

    def load(self, core: int, address: int, size: int, now: int) -> dict[int, int]:
        """A load by `core` at `now`: roll back the hidden stores it cannot
        see; for each line it reads from its stale copy, when that copy is
        gone (the first store that took it commits)."""
        mask = 1 << core
        stale = {}
        for key in range(address >> LINE_SHIFT, ((address + size - 1) >> LINE_SHIFT) + 1):
            line = self.line(key)
            if not line.cores & mask:
                continue
            if line.until <= now:         # it sees everything there, now and later
                line.cores &= ~mask
                continue
            seen = max(now, self.floor.value)
            kept = [(owner, kept) for owner, kept in self._kept_on(key)
                    if owner != core and kept.stale & mask and kept.done > seen]
            # A writer that has already accessed tracked memory after `now`
            # (a seeded schedule runs cores out of modeled-time order) may have
            # read what this core stores later: seeing the past of its stores
            # then could make a cycle TSO forbids. This core sees them.
            if kept and all(self.buffers[owner].latest <= now for owner, _ in kept):
                stale[key] = min(store.done for _, store in kept)
        if not stale or size > LINE_BYTES:
            return {}
        self._roll_back(core, address, size, now, stale)
        return stale

    def caught_up(self, core: int, key: int) -> None:
        """`core` sees every store to line `key` from now on."""
        self.line(key).cores &= ~(1 << core)

    def _kept_on(self, key: int):
        """(core, store) for every store hidden on line `key`."""
        for buffer in self.buffers:
            for kept in buffer.hidden():
                if kept.address >> LINE_SHIFT == key:
                    yield buffer.core_id, kept

    def _roll_back(self, core, address, size, now, stale) -> None:
        present = self.memory.read(address, size)
        seen = bytearray(present)
        settled = [False] * size
        mask = 1 << core
        newest_first = sorted((entry for key in stale for entry in self._kept_on(key)),
                              key=lambda entry: -entry[1].seq)
        for owner, kept in newest_first:
            visible = owner == core or not kept.stale & mask \
                or kept.done <= max(now, self.floor.value)
            begin = max(address, kept.address)
            end = min(address + size, kept.address + kept.size)
            for at in range(begin, end):
                if settled[at - address]:
                    continue
                if visible:
                    settled[at - address] = True
                else:
                    seen[at - address] = kept.old[at - kept.address]
        buffer = self.buffers[core]
        buffer.undo_address, buffer.undo_size = address, size
        ctypes.memmove(buffer.undo, present, size)
        self.memory.write(address, bytes(seen))
