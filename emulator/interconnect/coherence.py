"""The coherence directory: who holds each 64-byte line, and what an access costs.

Memory in sprat is one host buffer shared by every core, so data is always
coherent for free. What is NOT free on a real machine is moving a cache line
from the core that wrote it to the core that reads it. This directory keeps,
for each tracked line, the MOESI state each core's cache would have, and
charges every access by that state and by the path the machine's protocol
takes to serve it (protocol.py: one path per machine family):

    directory = CoherenceDirectory(load_topology("amd-4x4"))
    cycles = directory.access(core=0, addr=0x5000, is_write=True, now=1200)

MOESI, the state of one line in one core's cache:

    M  Modified   the only copy, dirty (memory is stale)
    O  Owned      dirty, other cores may hold S copies; this core supplies it
    E  Exclusive  the only copy, clean
    S  Shared     a clean copy; others may hold copies too
    I  Invalid    no copy

What an access does (this core = "me"; the line's owner is the core in M,
O or E, if any; the state machine is `_serve`, all in one place):

    access  my state  who serves it                  then
    ------  --------  -----------------------------  --------------------------
    read    M/O/E/S   my cache (l1_hit)              unchanged
    read    I         the owner                      me: S; owner M->O, E->S
                      else an S copy on my die       me: S
                      (a shared L2), or memory       me: E if no copy at all
    write   M/E       my cache (l1_hit)              me: M
    write   O/S       an invalidation of the others  me: M, others: I
    write   I         the owner or memory, while     me: M, others: I
                      invalidating the others

What it costs is the family's path for that case (protocol.py), looked up
in tables built once per machine (`_fetch_cost`, `_invalidate_cost`, by
the line's home, the requester and the source):

    amd-probe-broadcast  every miss and every invalidation goes to the
                         line's home, which probes every package; it
                         completes when the last probe response is in, so
                         it costs about the same whichever core held the
                         line, and an invalidation is one broadcast
    intel-fsb            a source on my die: an on-die snoop; anything
                         else is a transaction on the front-side bus,
                         which every die snoops; invalidations wait for
                         the farthest copy

Lines are never evicted: a core keeps its copy until another core's write
invalidates it (the tracked pages are small message channels).

Causality. Cores run one after another, each with its own modeled clock,
so a reader's clock may be behind the writer's even though it already sees
the written bytes in host memory. Each line remembers when it was last
written (the writer's modeled time when the write completed). A core that
gets the line from elsewhere after another core wrote it at time t is
charged at least enough to bring its clock to t + the transfer: what a
benchmark measures then does not depend on how the scheduler interleaved
the cores. The extra cycles are counted as `waits`.

Ordering. Each line has one ordering point (on an Opteron, the home
memory controller; in gem5's MOESI_hammer directory, a line in a
transient state), and it takes one transaction at a time: every access
that is not a hit is a transaction that occupies the line from when it is
served until it completes. A request that reaches the line while one is in
flight (its clock, or the write it must wait for, falls in the line's busy
period [busy_from, busy_until)) waits its turn, so N cores reading one line
at once finish one transfer apart. With `merge_reads`, a read that finds a
read in flight rides along with it and finishes with it, so only writes,
and the first read behind a write, queue; the reads that queue behind a
write are served as one. It is the topology's choice ([protocol]
merge_reads, topofile.py), and no preset makes it: gem5's AMD-style
directory merges ("NO_B_S ... next queued request GETS", "NO_B_S_W ...
forwarded merged GETS", a TBE's "GetSRequestors ... GETS merged
requestors": gem5, src/mem/ruby/protocol/MOESI_hammer-dir.sm -- seen), but
that is its model's choice, and the presets say why they do not.
The directory must see the accesses in the order of their modeled times:
a request from before a line's busy period is not queued behind it. The
cost model sees to that (emulator/cost.py, "Ordering"): a core runs no
access to a tracked line that begins after another core is ready to run.
Hits never queue: a core reads its own copy while others' requests travel.
`home(addr)` says which package's memory holds a line; on AMD the home is
where the line's requests go, so it decides their cost.

A bus is an ordering point for the whole machine (intel-fsb): a
transaction that leaves its die holds the bus for `bus_occupancy` cycles
(protocol.CostTables), and one that reaches it while another holds it
waits (`_wait_for_bus`, with the same rule for cores whose clock is
behind). The waits count as `waits` too.

Counters, per core and per line: hits, transfers (served by another
cache), memory_fills, invalidations (copies destroyed by a write), and per
core the causality `waits` in cycles. Each line also counts its writes
(`writes`), so that a core polling it can tell whether anything changed
(emulator/cost.py parks such cores).

Speed: access() runs from a unicorn memory hook on every access to a
tracked page, so it allocates nothing after a line's first touch: sharers
are a bit mask (bit c = core c holds a copy), costs come from tables
precomputed from the topology (protocol.CostTables). The cost model goes further: it has the
directory keep the entries of its tracked lines and its counters in C
memory (`keep_lines_in`, `counters=`), where emulator/_hitpath.c serves
most accesses without calling Python, by a mirror of access(), _serve and
_fetch written for speed. This file is the reference: the rules are read
and changed here (and then in the mirror; tests/test_hitpath.py checks
that the two agree).

What does not live here: the topology (topology.py), what a transaction
costs on each family's hardware (protocol.py), which pages are tracked and
the memory hook (emulator/cost.py).
"""

from __future__ import annotations

from emulator.interconnect.topology import Topology

LINE_SHIFT = 6            # 64-byte cache lines on every machine sprat models
LINE_SIZE = 1 << LINE_SHIFT

NO_OWNER = -1
NEVER_WRITTEN = -1


class _Line:
    """The directory entry of one line: its copies, owner, last write, counters.

    emulator/hitpath.py has the same fields in a C struct (SharedLine) for
    the lines the cost model tracks; change both together.
    """

    __slots__ = ("sharers", "owner", "owner_state", "home", "written_at", "writer",
                 "busy_from", "busy_until", "busy_read",
                 "hits", "transfers", "memory_fills", "invalidations", "writes")

    def __init__(self):
        self.sharers = 0              # bit c set: core c holds a valid copy
        self.owner = NO_OWNER         # core holding it in M, O or E
        self.owner_state = "I"        # "M", "O" or "E" while there is an owner
        self.home = 0                 # the package whose memory holds it (its ordering point)
        self.written_at = 0           # modeled time the last write completed
        self.writer = NEVER_WRITTEN   # core that wrote it last
        self.busy_from = 0            # the ordering point: transactions queued back to
        self.busy_until = 0           # back occupy [busy_from, busy_until) of modeled time
        self.busy_read = 0            # 1: the last of them is a read (merge_reads)
        self.hits = 0
        self.transfers = 0
        self.memory_fills = 0
        self.invalidations = 0
        self.writes = 0               # every write, hit or not


class CoherenceDirectory:
    """MOESI directory over the tracked lines of one machine."""

    def __init__(self, topology: Topology, counters=None, merge_reads: bool = False,
                 memory_size: int | None = None):
        """`counters(n)`: makes each per-core counter, n zeros (a list by
        default; the cost model makes arrays in C memory, where its C path
        counts too). `merge_reads`: a read that finds a read of the line in
        flight rides along with it instead of queueing behind it (see
        "Ordering"). `memory_size`: the machine's physical memory, split
        among the packages for `home` (None: everything is package 0's)."""
        self.topology = topology
        self.merge_reads = merge_reads
        self.memory_size = memory_size
        n = topology.n_cores()
        # What a transaction costs, by the family's path (protocol.py), looked
        # up as _fetch[home][me][source] (source n: memory) and
        # _invalidate[home][me][sharer] (sharer n: no other copy). Copies:
        # fault injection (emulator/faults.py) scales them per machine.
        costs = topology.costs
        self._fetch_cost = [[list(row) for row in rows] for rows in costs.fetch]
        self._invalidate_cost = [[list(row) for row in rows] for rows in costs.invalidate]
        self._die = costs.die
        self._bus_occupancy = costs.bus_occupancy
        self._l1_hit = topology.l1_hit
        self._n = n
        self._lines: dict[int, _Line] = {}
        self._stores = []             # (first key, end key, records): keep_lines_in
        zeros = counters or (lambda n: [0] * n)
        self.hits = zeros(n)
        self.transfers = zeros(n)
        self.memory_fills = zeros(n)
        self.invalidations = zeros(n)
        self.waits = zeros(n)
        # The machine-wide ordering point of a bus (intel-fsb): the busy
        # period [bus[0], bus[1]) of the transactions queued on it.
        self.bus = zeros(2)
        self._took_bus = False        # set by _serve: the transaction left its die

    # -- the one entry point of the memory hook --

    def access(self, core: int, addr: int, is_write: bool, now: int) -> int:
        """Cycles to charge `core` for reading/writing the line holding `addr`.

        `now` is the core's modeled clock when the access starts.
        """
        key = addr >> LINE_SHIFT
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = self._new_line(key)
        elif line.sharers >> core & 1:
            # The common case, a hit, decided first: it never waits (the copy
            # was fetched after any other core's write) and needs no fetch.
            if not is_write:
                self.hits[core] += 1
                line.hits += 1
                return self._l1_hit
            if line.owner == core and line.owner_state != "O":
                line.owner_state = "M"
                self.hits[core] += 1
                line.hits += 1
                line.written_at = now + self._l1_hit
                line.writer = core
                line.writes += 1
                return self._l1_hit
        # A transaction: it takes its turn at the line's ordering point.
        # It reaches the line at `now`, or, if another core wrote the line
        # after that (causality), no earlier than that write.
        writer = line.writer
        reaches = now
        if writer != core and writer != NEVER_WRITTEN and line.written_at > now:
            reaches = line.written_at
        queued = line.busy_from <= reaches < line.busy_until
        cycles = self._serve(core, line, is_write)
        if not queued:
            total = cycles
        elif self.merge_reads and not is_write and line.busy_read:
            total = max(cycles, line.busy_until - now)   # rides along the read in flight
        else:
            total = line.busy_until - now + cycles       # after the one in flight
        if writer != core and writer != NEVER_WRITTEN:
            # Causality: the data cannot be here before it was written + the trip.
            # (A hit never waits: the copy was fetched after that write.)
            total = max(total, line.written_at + self._fetch_cost[line.home][core][writer] - now)
        if self._took_bus:
            total += self._wait_for_bus(now + total - cycles)
        self.waits[core] += total - cycles
        end = now + total
        if end > line.busy_until:
            if not queued:                 # the line was free: a new busy period
                line.busy_from = end - cycles
            line.busy_until = end
            line.busy_read = 0 if is_write else 1
        cycles = total
        if is_write:
            line.written_at = now + cycles
            line.writer = core
            line.writes += 1
        return cycles

    def _wait_for_bus(self, start: int) -> int:
        """A transaction that leaves its die takes the bus at `start`, after
        the one on it if it is busy then; the cycles it waits for it.
        (As at a line: a request from before the busy period is not queued.)"""
        bus = self.bus
        if bus[0] <= start < bus[1]:
            wait = bus[1] - start
        else:
            wait = 0
            if start >= bus[1]:
                bus[0] = start             # the bus was free: a new busy period
        bus[1] = max(bus[1], start + wait + self._bus_occupancy)
        return wait

    def commit_write(self, key: int, at: int) -> None:
        """The last write to line number `key` commits no earlier than `at`:
        it waited in its core's store buffer behind older stores
        (emulator/interconnect/storebuffer.py)."""
        line = self._lines[key]
        if at > line.written_at:
            line.written_at = at

    def stale_hit(self, core: int, addr: int) -> int:
        """`core` reads the copy of `addr`'s line that a buffered store is
        still on its way to take (emulator/interconnect/storebuffer.py,
        Visibility): a hit, whatever the books say now."""
        return self._count_hit(core, self._lines[addr >> LINE_SHIFT])

    def holders(self, addr: int) -> int:
        """The cores holding a copy of `addr`'s line, a bit mask (bit c: core c)."""
        line = self._lines.get(addr >> LINE_SHIFT)
        return 0 if line is None else line.sharers

    def written_at(self, addr: int) -> int:
        """When the last write to `addr`'s line completes (commits)."""
        line = self._lines.get(addr >> LINE_SHIFT)
        return 0 if line is None else line.written_at

    def read(self, core: int, addr: int, now: int) -> int:
        return self.access(core, addr, False, now)

    def write(self, core: int, addr: int, now: int) -> int:
        return self.access(core, addr, True, now)

    # -- where entries live --

    def keep_lines_in(self, first_key: int, records) -> None:
        """Keep the entries of lines first_key, first_key + 1, ... in `records`.

        `records` is a sequence of objects with _Line's fields: the cost
        model passes a ctypes array, so that its C hit path reads and
        counts in the same entries this directory uses. A line already in
        the directory keeps its entry.
        """
        self._stores.append((first_key, first_key + len(records), records))

    def _new_line(self, key: int) -> _Line:
        line = None
        for first, end, records in self._stores:
            if first <= key < end:
                line = records[key - first]
                _Line.__init__(line)       # a fresh entry's fields, set on the record
                break
        if line is None:
            line = _Line()
        line.home = self.home(key << LINE_SHIFT)
        return line

    # -- the state machine --

    def _serve(self, me: int, line: _Line, is_write: bool) -> int:
        """Apply one access to `line` by core `me`: update its MOESI states,
        count what happened, return the cycles it costs (before its turn at
        the ordering points and causality)."""
        self._took_bus = False                         # _fetch and _invalidate set it
        # LAB interconnect BEGIN serve
        bit = 1 << me
        sharers, owner, state = line.sharers, line.owner, line.owner_state
        mine = sharers & bit
        others = sharers & ~bit

        if not is_write:
            if mine:                                   # M, O, E or S: a hit
                return self._count_hit(me, line)
            cycles = self._fetch(me, line, others)
            line.sharers = sharers | bit
            if owner == NO_OWNER and not others:       # nobody else had it
                line.owner, line.owner_state = me, "E"
            elif state == "M":                         # dirty data now shared
                line.owner_state = "O"
            elif state == "E":                         # clean: all copies are S now
                line.owner, line.owner_state = NO_OWNER, "I"
            return cycles

        if mine and owner == me and state in ("M", "E"):
            line.owner_state = "M"                     # no one else has a copy
            return self._count_hit(me, line)
        # Become the only holder: invalidate every other copy, in parallel,
        # while fetching the data if we do not have it (O or S: we do).
        if others:
            n = others.bit_count()
            self.invalidations[me] += n
            line.invalidations += n
        if mine:
            cycles = self._invalidate(me, line, others)
        else:
            cycles = max(self._fetch(me, line, others), self._invalidate(me, line, others))
        line.sharers, line.owner, line.owner_state = bit, me, "M"
        return cycles
        # LAB interconnect END serve

    def _fetch(self, me: int, line: _Line, others: int) -> int:
        """Cycles to bring in a line `me` does not hold, and count where it came from."""
        cost = self._fetch_cost[line.home][me]        # cost[source]; cost[self._n]: memory
        # LAB interconnect BEGIN fetch
        owner = line.owner
        if owner != NO_OWNER:                          # M, O or E elsewhere supplies it
            source = owner
        else:                                          # only S copies, or none
            source = self._n                           # memory, unless a clean copy on
            copies = others                            # my die is nearer (a shared L2)
            while copies:
                low = copies & -copies
                sharer = low.bit_length() - 1
                if self._die[sharer] == self._die[me] and cost[sharer] < cost[source]:
                    source = sharer
                copies ^= low
        if source != self._n:
            self.transfers[me] += 1
            line.transfers += 1
        else:
            self.memory_fills[me] += 1
            line.memory_fills += 1
        # LAB interconnect END fetch
        if self._bus_occupancy and (source == self._n or self._die[source] != self._die[me]):
            self._took_bus = True
        return cost[source]

    def _invalidate(self, me: int, line: _Line, others: int) -> int:
        """Cycles for `me` to invalidate every other copy (in parallel: the
        farthest decides); with none, what an upgrade costs all the same."""
        cost = self._invalidate_cost[line.home][me]   # cost[sharer]; cost[self._n]: none
        if self._bus_occupancy and self._off_die(me, others):
            self._took_bus = True                      # the invalidation leaves the die
        # LAB interconnect BEGIN invalidate
        if not others:
            return max(self._l1_hit, cost[self._n])
        farthest = 0
        copies = others
        while copies:
            low = copies & -copies
            farthest = max(farthest, cost[low.bit_length() - 1])
            copies ^= low
        return farthest
        # LAB interconnect END invalidate

    def _off_die(self, me: int, cores: int) -> bool:
        """Is any core of the bit mask `cores` on another die than `me`'s?"""
        die = self._die
        while cores:
            low = cores & -cores
            if die[low.bit_length() - 1] != die[me]:
                return True
            cores ^= low
        return False

    def _count_hit(self, me: int, line: _Line) -> int:
        self.hits[me] += 1
        line.hits += 1
        return self._l1_hit

    # -- looking inside (tests, `sprat debug`, benches) --

    def state(self, core: int, addr: int) -> str:
        """The MOESI state of `addr`'s line in `core`'s cache: "M", "O", "E", "S" or "I"."""
        line = self._lines.get(addr >> LINE_SHIFT)
        if line is None or not line.sharers >> core & 1:
            return "I"
        return line.owner_state if line.owner == core else "S"

    def core_stats(self, core: int) -> dict[str, int]:
        return {"hits": self.hits[core], "transfers": self.transfers[core],
                "memory_fills": self.memory_fills[core],
                "invalidations": self.invalidations[core], "waits": self.waits[core]}

    def line_stats(self, addr: int) -> dict[str, int]:
        line = self._lines.get(addr >> LINE_SHIFT) or _Line()
        return {"hits": line.hits, "transfers": line.transfers,
                "memory_fills": line.memory_fills, "invalidations": line.invalidations}

    def transfer(self, core: int, holder: int, addr: int) -> int:
        """Cycles for `core` to get the line of `addr` from `holder`'s cache,
        by the family's path and the line's home (before any queueing)."""
        return self._fetch_cost[self.home(addr)][core][holder]

    def writes(self, key: int) -> int:
        """How many writes line number `key` (address >> LINE_SHIFT) has had."""
        line = self._lines.get(key)
        return 0 if line is None else line.writes

    def visible_at(self, core: int, key: int) -> int:
        """The earliest modeled time `core` can have the last write to line
        number `key`: when it completed, plus the trip from its writer."""
        line = self._lines.get(key)
        if line is None or line.writer in (NEVER_WRITTEN, core):
            return 0
        return line.written_at + self._fetch_cost[line.home][core][line.writer]

    def home(self, addr: int) -> int:
        """The package whose memory holds `addr`: physical memory split into
        one contiguous range per package, as a BIOS lays out NUMA nodes."""
        packages = len(self.topology.packages)
        if not self.memory_size:
            return 0
        return min(addr * packages // self.memory_size, packages - 1)

    def tracked_lines(self) -> list[int]:
        """Addresses of the lines touched so far, in order."""
        return sorted(key << LINE_SHIFT for key in self._lines)
