"""The cost model's wiring: tracked memory, the charging hook, parked cores.

Memory in sprat is one host buffer, so every core sees every store at once
and for free. What a real machine charges is moving cache lines between
cores; emulator/interconnect/coherence.py knows those rules. This module
connects them to the cores:

  * `track(physical, size)` puts a memory hook on that range of physical
    memory on every core. Each read or write in it is charged to the
    accessing core's clock by the coherence directory, by line state and
    by the path its machine's protocol takes (interconnect/protocol.py).
    Only tracked ranges pay (a memory hook slows a core, see DESIGN.md
    section 6), so the OS tracks its message channels and little else. (Unicorn 2.1 hands memory hooks the physical address once paging
    is on, verified by experiment: whatever virtual address a core uses,
    the directory sees the same line.)

  * Parking. A receiver polls a channel's control word in a loop with
    `pause`. Burning host time on that loop would make a 64-core machine
    crawl, so when a core executes `pause` after reading tracked lines, it
    is parked (state WAITING) until some core writes one of the lines it
    read since its previous `pause` (a server polling many channels waits
    on all of them, like MONITOR/MWAIT on several lines).
    Only a whole round of the loop may park the core: one that began after
    the core last entered its kernel by a call of its own (a system call
    between two rounds may switch dispatchers, so the reads before it are
    forgotten). An interrupt or exception can come in the middle of a
    round, and the rest of that round alone is no poll set: a core that
    parked on it would sleep through a write to a line it read before the
    interrupt, until its next time slice. So the pause that ends a round
    cut short runs, as on a spinning core, and the next round, whole,
    decides.
    Its clock does not move while parked; when it reads the line again the
    directory charges it up to the write time plus the transfer latency
    (causality), exactly as if it had spun. A woken core is not run before
    that time either (`core.not_before`, the scheduler's ready time): its
    read cannot reach the writer before then, so the writer's further
    stores to the line, earlier in modeled time, find the line still its
    own; the writer's accesses after that time wait for the woken core's
    (Ordering, below). Unicorn cannot hook an opcode,
    so the loader tells us where the `pause` instructions are
    (`add_pause_sites`); a pause that only a block can start with gets a
    block hook, which costs the core's other code nothing, and any other
    a code hook (find_pause_sites says why and which).

  * Timing modes. The model runs in one of two modes, as gem5 has atomic
    and timing memory (`--timing`, Machine(timing=...)):
      fast      the default. A core's accesses reach the directory when
                the core runs them, in the host's order; a store waits
                for its line; reads of a line merge, so that cores woken
                by one write are served alike, whoever runs first. Message
                latencies between cores that wait for each other come out
                the same at every quantum (the writer's clock decides, by
                causality), but what contends (N readers of one line, a
                sender's stores to N cores) is served as the scheduler
                happens to run it.
      detailed  the accesses reach the directory in the order of the
                cores' clocks (Ordering, below), reads of a line wait
                their turn unless the topology merges them, and every core
                has a store buffer (Store buffers, below). What contends is
                served as the silicon serves it, at any quantum; the host
                pays a core switch wherever two cores meet on a line,
                several times slower (`sprat bench urpc` prints both
                speeds). The benches measure in it by default.

  * Ordering (detailed timing). The directory must see the accesses to a
    line in the order of their modeled times (coherence.py, "Ordering"), but
    cores run one after another, a quantum each, and a core's clock runs
    ahead of the others' during its quantum. So the scheduler gives the core
    it runs a horizon (core.clock.horizon, emulator/scheduler.py): the
    modeled time from which another core comes first. An instruction that
    begins at or past it does not touch a tracked line: at its first access
    to one the core stops before the instruction
    (core.defer_this_instruction), and runs it again when its turn comes,
    after the cores ready before it have made their accesses. A `pause` that
    may park waits so too: whether a write came after the poll's reads is
    known only then. A write that wakes a parked core, or an IPI, lowers the
    writer's horizon to the time the other core is ready (`lower_horizon`).
    Every other instruction runs on past the horizon, since no other core
    sees what it does, so a quantum ends early only where cores meet. The
    result is what a quantum of one instruction gives, at any quantum (the
    tests: tests/test_ordering.py, and the URPC and shootdown latencies at
    quanta 1 to 10,000). A seeded schedule keeps no horizon (scheduler.py
    says why).

  * Speed. Crossing from unicorn into Python costs more than charging an
    access. So when emulator/_hitpath.c is built, its C functions are the
    hooks: the memory hook serves accesses in C, by a mirror of the
    directory's rules, and the pause hook lets run the pauses that cannot
    park. They leave to the Python code below what changes parking (a
    core parks, a write wakes the cores parked on a line) and what is rare
    (an access to two lines at once, or to a line new to the directory).
    Both paths give the same results; `hit_path` says which one runs ("C",
    or "pure Python (why)"; SPRAT_PURE_COST_MODEL=1 forces the pure one,
    and so does a directory that is not the tree's own, as in lab 6).

  * Store buffers (detailed timing). A store does not wait for its line: it
    retires into the core's store buffer, and the line's transaction runs
    while the core goes on, up to a number of misses in flight; `mfence`,
    `sfence` and locked instructions wait for the buffer to drain
    (emulator/interconnect/storebuffer.py says what is modeled and why).
    Every write to a tracked line goes through the core's StoreBuffer, and
    the loader tells us where the draining instructions are
    (`add_fence_sites`), as it does for `pause`, and each gets a block
    hook or a code hook as a pause does. Until it commits, a store
    is hidden from the cores whose copy of the line it took: a load by one
    of them reads its stale copy, the bytes before the store
    (storebuffer.Visibility, which the C hook leaves such loads to; a hook
    after each read puts the present back). A core that read a stale copy
    and pauses is not parked on it (the write is made) but runs again once
    its copy is gone, as a woken core would.

  * Listening. `observe(listener)` reports every load and store on the
    tracked lines to `listener(core, write, address, size, value)` (the
    physical address; for a load, the value it is about to read). The OS
    turns them into messages (kernel/channel_observer.py). The report is a
    memory hook of its own, added only once someone listens: a machine
    nobody observes runs the hooks above and nothing else.
"""

import ctypes
from functools import partial

from unicorn import (UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_READ_AFTER,
                     UC_HOOK_MEM_WRITE, UC_MEM_WRITE)
from unicorn.unicorn_py3.unicorn import HOOK_CODE_CFUNC, HOOK_MEM_ACCESS_CFUNC

from emulator import hitpath
from emulator.core import NO_HORIZON, UNORDERED, CoreState
from emulator.cpustate import emu_counter
from emulator.hitpath import PauseHook, SharedClock, SharedLine, Watch, Window
from emulator.instcost import InstructionCosts, block_starts
from emulator.interconnect.coherence import LINE_SHIFT, CoherenceDirectory
from emulator.scheduler import horizon_for
from emulator.interconnect.storebuffer import (LOCKED, StoreBuffer, Visibility, fence_kind,
                                               spec_for)

PAUSE = b"\xf3\x90"


TIMING_MODES = ("fast", "detailed")


class CostModel:
    def __init__(self, machine, topology, timing: str = "fast"):
        self.machine = machine
        self.topology = topology
        self.timing = timing
        detailed = timing == "detailed"
        reason = hitpath.why_pure(CoherenceDirectory)
        self.hit_path = "C" if reason is None else f"pure Python ({reason})"
        # On the C path, the directory's counters and the entries of tracked
        # lines (`track`), and the cores' clocks, live in C memory, where C
        # serves accesses too; the pure Python path keeps them in Python
        # objects, which Python reads faster.
        in_c = self.hit_path == "C"
        # Whether reads of one line merge at its ordering point is the
        # machine family's (the topology's [protocol] merge_reads), when
        # accesses come in modeled-time order. In host order they must
        # merge: readers woken by one write are then served alike, whatever
        # order the scheduler runs them in (see "Timing modes" above).
        self.directory = CoherenceDirectory(topology, counters=hitpath.counters if in_c else None,
                                            merge_reads=topology.merge_reads if detailed else True,
                                            memory_size=machine.memory.size)
        self._shared_directory = hitpath.share(self.directory) if in_c else None
        if in_c:
            for core in machine.cores:      # the clocks too, before anything reads them
                core.clock = SharedClock(emu_counter=ctypes.addressof(emu_counter(core.uc)),
                                         horizon=NO_HORIZON, memory=machine.memory.address,
                                         memory_size=machine.memory.size,
                                         emu_stop=hitpath.UC_EMU_STOP)
        self.watches = [Watch() for _ in machine.cores]   # per core: read since its last pause
        self.store_buffers = self.visibility = None     # fast: every store waits for its line
        if detailed:
            spec = spec_for(topology)
            self.store_buffers = [StoreBuffer() for _ in machine.cores]
            self.visibility = Visibility(machine.memory, self.store_buffers)
            for core, buffer in zip(machine.cores, self.store_buffers):
                buffer.attach(core.id, self.directory, spec, visibility=self.visibility)
        self.stale_until = [0] * len(machine.cores)   # a stale copy read since the last pause
        self.fence_sites = set()
        self.windows = []                 # (physical, size)
        self.waiters = {}                 # line number -> cores parked on it
        self._parked = []                 # C path: (first line, end line, cores parked per line)
        self.pause_sites = set()
        self._pause_hooks = {}            # C path: (core id, block hook?) -> its PauseHook
        self._keep = []                   # what unicorn and C hold bare pointers to
        self.listeners = []               # observe(): told of every access to a tracked line
        # Privileged instructions and trap delivery (emulator/instcost.py).
        self.instructions = InstructionCosts(machine, topology.instruction_costs)

    # --- Tracked windows ----------------------------------------------------
    def track(self, physical: int, size: int) -> None:
        """Charge every access to physical [physical, physical + size) on every core."""
        self.windows.append((physical, size))
        first = physical >> LINE_SHIFT
        n_lines = ((physical + size - 1) >> LINE_SHIFT) - first + 1
        hidden = None if self.visibility is None else self.visibility.add_window(first, n_lines)
        if self.hit_path == "C":
            lines, parked = (SharedLine * n_lines)(), (ctypes.c_int32 * n_lines)()
            self.directory.keep_lines_in(first, lines)
            self._parked.append((first, first + n_lines, parked))
        for core in self.machine.cores:
            charge, wake, defer = self._python_hook(core)
            buffer = None if self.store_buffers is None else self.store_buffers[core.id]
            if self.hit_path == "C":
                window = Window(lines=ctypes.addressof(lines), parked=ctypes.addressof(parked),
                                hidden=0 if hidden is None else ctypes.addressof(hidden),
                                first_line=first, n_lines=n_lines,
                                directory=ctypes.addressof(self._shared_directory),
                                clock=ctypes.addressof(core.clock),
                                watch=ctypes.addressof(self.watches[core.id]),
                                buffer=0 if buffer is None else ctypes.addressof(buffer),
                                core=core.id, wake=wake, charge=charge, defer=defer)
                self._keep.append(window)
                hitpath.add_hook(core.uc, window, physical, physical + size - 1)
                if buffer is not None:
                    hitpath.add_restore_hook(core.uc, buffer, physical, physical + size - 1)
                continue
            if buffer is not None:
                # After a load that read a stale copy, the present goes back.
                restore = HOOK_MEM_ACCESS_CFUNC(
                    lambda _uc, _kind, _address, _size, _value, _data, buffer=buffer:
                    buffer.restore())
                self._add_raw_hook(core, UC_HOOK_MEM_READ_AFTER, restore,
                                   physical, physical + size - 1)
            def on_access(_uc, kind, address, size, _value, _data, charge=charge, now=core.now):
                charge(kind == UC_MEM_WRITE, address, size, now())
            self._add_raw_hook(core, UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE,
                               HOOK_MEM_ACCESS_CFUNC(on_access), physical, physical + size - 1)
        for listener in self.listeners:
            self._report_to(listener, physical, size)

    def _add_raw_hook(self, core, kind: int, callback, begin: int, end: int) -> None:
        """Have unicorn call `callback` (a HOOK_CODE_CFUNC or
        HOOK_MEM_ACCESS_CFUNC) for `kind` on [begin, end] of `core`. Raw
        ctypes, not the binding's hook_add: these run on every access or at
        every site, and the binding's wrapper costs a third again as much as
        the work. Kept alive here: unicorn holds a bare pointer to it."""
        self._keep.append(callback)
        core.uc._Uc__do_hook_add(kind, callback, begin, end)

    # --- Listening to the tracked lines ------------------------------------------
    def observe(self, listener) -> None:
        """Tell `listener(core, write, address, size, value)` of every access
        to tracked memory from now on, on every core."""
        self.listeners.append(listener)
        for physical, size in self.windows:
            self._report_to(listener, physical, size)

    def _report_to(self, listener, physical: int, size: int) -> None:
        """Hook [physical, physical + size) on every core for one listener."""
        memory = self.machine.memory
        for core in self.machine.cores:
            def on_access(_uc, kind, address, length, value, _data, core=core):
                try:
                    if kind == UC_MEM_WRITE:
                        value &= (1 << 8 * length) - 1         # unicorn hands it signed
                    else:                                      # what the load will read
                        value = int.from_bytes(memory.read(address, length), "little")
                    listener(core, kind == UC_MEM_WRITE, address, length, value)
                except BaseException as error:     # a bug in an observer: stop this core, say so
                    core.fail(f"internal error in an observer of memory: {error!r}")
            self._add_raw_hook(core, UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE,
                               HOOK_MEM_ACCESS_CFUNC(on_access), physical, physical + size - 1)

    def _python_hook(self, core):
        """The Python half of `core`'s memory hook: charge and wake.

        charge(write, address, size, now): what an access begun at modeled
            time `now` costs, line by line, by the directory, recorded: the
            cycles on the core's clock, a read in the lines its poll loop
            watches; a write wakes the cores parked on the line.
        wake(line): wake the cores parked on line number `line`.
        The pure Python path calls charge for every access. The C path
        (emulator/_hitpath.c) serves an access to one line the directory
        holds itself, records it as charge does, and calls wake after a
        write to a line with parked cores; it calls charge for an access to
        two lines or to a line new to the directory.
        """
        access = self.directory.access
        buffer = None if self.store_buffers is None else self.store_buffers[core.id]
        visibility = self.visibility
        writes = self.directory.writes
        waiters = self.waiters
        watch = self.watches[core.id]
        clock = core.clock
        counter = core._emu_counter
        defer = core.defer_this_instruction
        core_id = core.id
        mask = 1 << core_id

        def charge(write, address, size, now):
            try:
                line = address >> LINE_SHIFT
                last = (address + size - 1) >> LINE_SHIFT      # line + 1 if it straddles two
                # Ordered: an instruction begun past the horizon makes no
                # access to a tracked line before the cores ready earlier
                # have made theirs (see "Ordering" above).
                if now - 1 >= clock.horizon and clock.served != counter.value \
                        and defer(address if write else None, size):
                    return
                clock.served = counter.value
                stale = {}
                if buffer is not None:
                    buffer.latest = now - 1         # when the instruction began (Visibility)
                    stamp = clock.start + counter.value     # the instruction (StoreBuffer.store)
                    if not write and stamp != buffer.locked_at and \
                            any(visibility.line(key).cores & mask for key in range(line, last + 1)):
                        # A woken core acts no earlier than not_before (_wake).
                        stale = visibility.load(core_id, address, size, max(now, core.not_before))
                while True:
                    if write and buffer is None:    # fast: the store waits for its line
                        cycles = access(core_id, line << LINE_SHIFT, True, now)
                    elif write:
                        begin = max(address, line << LINE_SHIFT)
                        end = min(address + size, (line + 1) << LINE_SHIFT)
                        # No core acts before this quantum's start or its horizon.
                        cycles = buffer.store(begin, end - begin, now, stamp,
                                       min(clock.start, clock.horizon - 1))
                    elif line in stale:       # its copy, which a store is on its way to take
                        cycles = self.directory.stale_hit(core_id, line << LINE_SHIFT)
                        self.stale_until[core_id] = max(self.stale_until[core_id], stale[line])
                    else:
                        cycles = access(core_id, line << LINE_SHIFT, False, now)
                    clock.charged += cycles
                    if not write:       # a stale copy has not seen the line's last write
                        watch.add(line, writes(line) - (line in stale))
                    elif line in waiters:
                        self._wake(line, core)
                    if line == last:
                        break
                    line, now = line + 1, now + cycles
            except BaseException as error:      # a bug in sprat: stop this core, say so
                core.fail(f"the cost model raised {type(error).__name__}: {error}")

        def wake(line):
            try:
                self._wake(line, core)
            except BaseException as error:
                core.fail(f"the cost model raised {type(error).__name__}: {error}")

        def defer_in_c(address, size, write):
            try:
                defer(address if write else None, size)
            except BaseException as error:
                core.fail(f"the cost model raised {type(error).__name__}: {error}")
        return charge, wake, defer_in_c

    # --- Parking cores that poll -------------------------------------------------
    def add_pause_sites(self, sites: dict) -> None:
        """Hook these `pause` instructions on every core: {virtual address:
        whether a translation block starts there on every way to it}
        (find_pause_sites). A site that is a block start gets a block hook,
        the others a code hook (see "Pause sites" at find_pause_sites)."""
        for address in sorted(sites.keys() - self.pause_sites):
            self.pause_sites.add(address)
            starts_block = sites[address]
            for core in self.machine.cores:
                if self.hit_path == "C":
                    hook = self._c_pause_hook(core, starts_block)
                    add = hitpath.add_pause_block_hook if starts_block else hitpath.add_pause_hook
                    add(core.uc, hook, address)
                else:
                    on_pause, _ = self._pause_hook(core)
                    self._add_site_hook(core, address, starts_block, len(PAUSE), on_pause)
                core.uc.ctl_remove_cache(address, address + 1)

    def _add_site_hook(self, core, address: int, starts_block: bool, size: int, hook) -> None:
        """Have `hook(address, size)` called before `core` runs the
        instruction at `address` (a pause or fence site, of `size` bytes):
        from a block hook if a block starts there on every way to it
        (instcost.block_starts), as a code hook would call it
        (Core.as_code_hook); else from a code hook. Pure Python hooks."""
        if starts_block:
            def on_block(_uc, address, _size, _data):      # _size: the block's
                core.as_code_hook(hook, address, size)
            callback, kind = HOOK_CODE_CFUNC(on_block), UC_HOOK_BLOCK
        else:
            def on_code(_uc, address, size, _data):
                hook(address, size)
            callback, kind = HOOK_CODE_CFUNC(on_code), UC_HOOK_CODE
        self._add_raw_hook(core, kind, callback, address, address)

    def _c_pause_hook(self, core, starts_block: bool) -> PauseHook:
        """`core`'s PauseHook for the C path, one for all its code-hooked
        pause sites and one for its block-hooked ones, whose Python calls
        are made as from a code hook (Core.as_code_hook)."""
        key = core.id, starts_block
        if key not in self._pause_hooks:
            on_pause, on_checked_pause = self._pause_hook(core)
            if starts_block:
                on_pause = partial(core.as_code_hook, on_pause)
                on_checked_pause = partial(core.as_code_hook, on_checked_pause)
            self._pause_hooks[key] = PauseHook(
                watch=ctypes.addressof(self.watches[core.id]), clock=ctypes.addressof(core.clock),
                memory=core.memory.address, memory_size=core.memory.size,
                reg_read=hitpath.UC_REG_READ, pause=on_pause, checked_pause=on_checked_pause)
        return self._pause_hooks[key]

    def _pause_hook(self, core):
        """`core`'s hook on a `pause` at virtual `address`, in two forms:

        on_pause(address, size) decides whether the core parks there. The
        pure Python path calls it on every pause.
        on_checked_pause() decides the same once the first tests passed: the
        core just read lines it can watch, and the instruction is a `pause`
        (another dispatcher may have other code at that address). The C path
        (emulator/_hitpath.c) makes those tests itself and calls it; it
        calls on_pause where it cannot tell.
        """
        watch = self.watches[core.id]
        writes = self.directory.writes

        def on_pause(address, size):
            try:
                if watch.woken:              # resuming after a wake-up, or the round
                    watch.woken = 0          # was cut short: let it run, and start
                    watch.clear()            # the next round afresh
                    return
                if not watch.count or watch.overflowed or size != 2 \
                        or core.read_virtual(address, 2) != PAUSE:
                    watch.clear()            # nothing it may park on
                    return
                decide()
            except BaseException as error:   # a bug in sprat: stop this core, say so
                core.fail(f"the cost model raised {type(error).__name__}: {error}")

        def on_checked_pause():
            try:
                decide()
            except BaseException as error:
                core.fail(f"the cost model raised {type(error).__name__}: {error}")

        def decide():
            # Whether a write came after its reads is known only once the
            # cores ready before this pause have run (see "Ordering"): past
            # the horizon, decide when the core runs again.
            if not core.defer_this_instruction():
                park_unless_written(watch.take())

        def run_again_from(time):
            # As a woken core (_wake): it runs no earlier than `time`, and
            # then its pause runs.
            core.not_before = max(core.not_before, time)
            watch.woken = 1
            core.stop_before_this_instruction()

        def park_unless_written(reads):
            # It read a stale copy (Visibility, storebuffer.py): the write it
            # waits for is made, and on its way. Spinning, it would see it
            # once its copy is gone.
            gone, self.stale_until[core.id] = self.stale_until[core.id], 0
            if gone > core.now():
                run_again_from(gone)
                return
            # Like MONITOR/MWAIT: a write that came after the read (say, while
            # this core's quantum ended between its read and this pause)
            # means there is something new to see, so do not sleep. (So a
            # parked core holds a copy of every line it waits on, and the
            # first write to one is a miss.) In fast timing it sees it no
            # sooner than the write can reach it (causality), as if that
            # write had woken it. Run on at once, its read would be served
            # at once, between the writer's stores to the line, each of which
            # then waits for the line anew (a same-die pair on intel-2x4, where a
            # transfer is short: at quantum 1 every store of a message was
            # an invalidation, and a round trip cost half as much again as
            # at quantum 100). In detailed timing the read takes its turn at
            # the line's ordering point when it is made, as a spinning
            # core's does, and the writer's stores sit in its store buffer.
            written = [line for line, count in reads if writes(line) != count]
            if written:
                if self.store_buffers is None:          # fast timing
                    seen = min(self.directory.visible_at(core.id, line) for line in written)
                    if seen > core.now():
                        run_again_from(seen)
                return
            lines = tuple(sorted({line for line, _ in reads}))
            core.state = CoreState.WAITING
            core.waiting_on = lines
            for line in lines:
                self.waiters.setdefault(line, []).append(core)
                self._count_parked(line)
            core.stop_before_this_instruction()     # the pause runs when it wakes
        return on_pause, on_checked_pause

    # --- Instructions that drain the store buffer ---------------------------------
    def add_fence_sites(self, sites: dict, cores=None) -> None:
        """Hook these `mfence`, `sfence` and locked instructions ({virtual
        address: FenceSite}, storebuffer.find_fence_sites) on the cores with
        these ids (None: every core), where each waits for its core's store
        buffer. A site that starts a block gets a block hook, the others a
        code hook, as pause sites do (find_pause_sites says why). In fast
        timing there is no buffer to drain, and no hook: a hook slows its
        core, a code hook all of its code."""
        if self.store_buffers is None:
            return
        # Unicorn runs a block's hooks in the order they were added, all
        # before any code hook (verified by experiment). So a block-hooked
        # fence sees the charges its block's instruction-cost hooks made
        # ahead (instcost.py), as a code hook would, only if added after
        # them: kernel/boot.py adds the fences last.
        for address in sorted(sites.keys() - self.fence_sites):
            self.fence_sites.add(address)
            site = sites[address]
            for core in self.machine.cores:
                if cores is not None and core.id not in cores:
                    continue
                self._add_site_hook(core, address, site.starts_block, site.size,
                                    self._fence_hook(core))
                core.uc.ctl_remove_cache(address, address + 1)

    def _fence_hook(self, core):
        """`core`'s hook on a draining instruction at virtual `address`: it
        runs before the instruction. The bytes there are looked at again:
        another dispatcher may have other code at that address."""
        buffer = self.store_buffers[core.id]
        clock = core.clock
        instructions = core._emu_counter

        def on_fence(address, size):
            try:
                kind = fence_kind(core.read_virtual(address, size))
                if kind is None:
                    return
                # Taken back if the core stops before the instruction; the
                # buffer's last commit stays, so running it again waits anew.
                core.charge_this_instruction(buffer.fence(core.now(), kind))
                if kind == LOCKED:      # its own store will not wait in the buffer
                    buffer.locked_at = clock.start + instructions.value
            except BaseException as error:   # a bug in sprat: stop this core, say so
                core.fail(f"the cost model raised {type(error).__name__}: {error}")
        return on_fence

    def forget_reads(self, core, cut_short: bool = False) -> None:
        """The core enters its kernel: what it read so far is no poll loop's.

        `cut_short`: not by a call of its own but by an interrupt or an
        exception, maybe in the middle of a poll round; then its next pause
        runs rather than park on what is left of that round.
        """
        watch = self.watches[core.id]
        watch.clear()
        if cut_short:
            watch.woken = 1

    def unpark(self, core) -> None:
        """An interrupt came for a parked core: it stops waiting for its lines."""
        self._stop_waiting(core)

    def _wake(self, line: int, writer) -> None:
        """`line` was written by `writer`: every core parked on it runs again,
        once the write can reach it; the writer yields to it from then on."""
        for core in list(self.waiters.get(line, ())):
            self._stop_waiting(core)
            self.watches[core.id].woken = 1
            core.not_before = max(core.not_before, self.directory.visible_at(core.id, line))
            if self.visibility is not None:     # by then every store to it reached it
                self.visibility.caught_up(core.id, line)
            lower_horizon(writer, core, max(core.cycles, core.not_before))

    def _stop_waiting(self, core) -> None:
        """Take `core` off every line it waits on; it runs again."""
        for line in core.waiting_on:
            waiting = self.waiters.get(line)
            if waiting and core in waiting:
                waiting.remove(core)
                if not waiting:
                    del self.waiters[line]
                self._count_parked(line)
        core.state = CoreState.RUNNING
        core.waiting_on = ()

    def _count_parked(self, line: int) -> None:
        """Tell the C path how many cores are parked on `line`: after a write
        to such a line it calls wake() above."""
        for first, end, parked in self._parked:
            if first <= line < end:
                parked[line - first] = len(self.waiters.get(line, ()))


def lower_horizon(running, core, ready: int) -> None:
    """`core` became ready at `ready` while `running` runs (a write woke it,
    an IPI reached it): `running` must not begin a transaction after it."""
    if running.clock.horizon < UNORDERED:       # (a seeded schedule keeps no order)
        running.clock.horizon = min(running.clock.horizon, horizon_for(running, ready, core.id))


def find_pause_sites(program) -> dict[int, bool]:
    """{address: starts_block} of every `pause` instruction in an assembled
    program.

    Programs mix code and data, so rather than disassembling blindly this
    looks at the start of every statement the assembler placed.

    Pause sites. Each site needs a hook that runs before its pause. A code
    hook does, but while the core counts its quantum the engine checks
    every instruction it runs against every code hook's range, so each
    one slows all of the core's code (measured: about 3% a hook; see
    emulator/instcost.py). A block hook runs only as a block starts at its
    address, before the block's first instruction: at the same moment as
    a code hook, if the pause is always the first instruction of its
    block (Core.as_code_hook makes the rest the same). instcost.block_starts
    says which statements are; a poll loop's pause, after its conditional
    branch, is. Any other pause (a straight run into it, or the program's
    first statement) may be in the middle of a block, where a block hook
    would not run: it keeps a code hook.
    """
    code, base = program.code, program.base
    pauses = [address for address, _ in program.statements()
              if code[address - base:address - base + 2] == PAUSE]
    starts = block_starts(program, pauses)
    return {address: address in starts for address in pauses}
