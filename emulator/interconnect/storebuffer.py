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

What this module models is the timing of that, per core:

    buffer.store(addr, now, stamp)   a store: cycles the core is charged
    buffer.fence(now, kind)          mfence/sfence/locked: cycles it waits

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

What is NOT modeled here: hiding a buffered store's bytes from the other
cores. Memory is one host buffer, written at once, and cores run one at a
time, so a load by another core that comes later on the host sees the
store (and is charged as if it came after its commit). The store-buffering
outcome of TSO (two cores each store, then each load the other's location,
and both read the old values) therefore never shows in sprat; every other
TSO outcome does, and no outcome TSO forbids can show.

emulator/_hitpath.c mirrors store() (buffered_store) for the C memory hook:
the ring below is a ctypes struct the C code works on too; change both
sides together (tests/test_hitpath.py compares them).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from emulator.interconnect.coherence import LINE_SHIFT

MAX_OUTSTANDING = 32        # the ring's size; a spec's `outstanding` is at most this

# Off until two things are settled (issue 15): with stores retiring into the
# buffer, lab 8's lesson (the NUMA-aware tree beats plain multicast by
# handing the initiator's own package to a neighbour) no longer holds on
# amd-8x4, and a two-core shootdown on amd-4x4 costs 1,772 cycles at
# quantum 7 against 1,545 at the others. The cause, traced: at quantum 1 a
# reader runs on the host between two stores of a writer's message (each
# now costs the writer 3 cycles, so their clocks interleave); its read is
# charged up to the stores' commit, yet host memory holds only the first,
# and the writer's next store to the line must take it back from the
# reader. A read that waits for a write past the horizon must not be
# served before the writer has caught up (stop before it, not after).
# Off, every store waits for its line (outstanding 0, below), no fence is
# hooked and no quantum yields: the machine main had.
ENABLED = False


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


def find_fence_sites(program) -> list[int]:
    """Addresses of every instruction in an assembled program that drains the
    store buffer (as cost.find_pause_sites: the start of every statement)."""
    code, base = program.code, program.base
    return sorted({address for address, _, _ in program.source_lines
                   if fence_kind(code[address - base:address - base + 15])})


# --- One core's buffer ------------------------------------------------------------------

NO_STAMP = -1


class StoreBuffer(ctypes.Structure):
    """One core's outstanding stores: when each commits, oldest first.

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
    ]

    def attach(self, core: int, directory, spec: StoreBufferSpec,
               enabled: bool = True) -> "StoreBuffer":
        """Make this `core`'s buffer, in front of `directory` (not `enabled`:
        no buffer, every store waits for its line)."""
        self.outstanding = spec.outstanding if enabled else 0
        self.head = self.count = self.last = 0
        self.locked_at = NO_STAMP
        self.core_id, self.directory, self.spec = core, directory, spec
        return self

    def store(self, addr: int, now: int, stamp: int) -> int:
        """The cycles to charge for a store to `addr`'s line begun at `now`
        by the instruction `stamp` (the core's instruction count)."""
        directory, core = self.directory, self.core_id
        if stamp == self.locked_at or not self.outstanding:    # locked, or no buffer: wait
            return directory.access(core, addr, True, now)
        if directory.state(core, addr) in ("M", "E"):
            cycles = directory.access(core, addr, True, now)   # a hit, committed in order
            directory.commit_write(addr >> LINE_SHIFT, self.last)
            return cycles
        stall = self._make_room(now)
        now += stall
        done = max(now + directory.access(core, addr, True, now), self.last)
        directory.commit_write(addr >> LINE_SHIFT, done)
        self._push(done)
        return stall + directory.topology.l1_hit

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
