"""The cost model's wiring: tracked memory, the charging hook, parked cores.

Memory in sprat is one host buffer, so every core sees every store at once
and for free. What a real machine charges is moving cache lines between
cores; emulator/interconnect/coherence.py knows those rules. This module
connects them to the cores:

  * `track(physical, size)` puts a memory hook on that range of physical
    memory on every core. Each read or write in it is charged to the
    accessing core's clock by the coherence directory, by line state and
    by distance. Only tracked ranges pay (a memory hook slows a core, see
    DESIGN.md section 6), so the OS tracks its message channels and little
    else. (Unicorn 2.1 hands memory hooks the physical address once paging
    is on, verified by experiment: whatever virtual address a core uses,
    the directory sees the same line.)

  * Parking. A receiver polls a channel's control word in a loop with
    `pause`. Burning host time on that loop would make a 64-core machine
    crawl, so when a core executes `pause` after reading tracked lines, it
    is parked (state WAITING) until some core writes one of the lines it
    read since its previous `pause` (a server polling many channels waits
    on all of them, like MONITOR/MWAIT on several lines).
    Its clock does not move while parked; when it reads the line again the
    directory charges it up to the write time plus the transfer latency
    (causality), exactly as if it had spun. Unicorn cannot hook an opcode,
    so the loader tells us where the `pause` instructions are
    (`add_pause_sites`).

  * Speed. Most tracked accesses are cache hits, and crossing from unicorn
    into Python costs more than charging one. So the memory hook is
    emulator/_hitpath.c when it is built: it serves the hits in C, and
    asks the Python code below (`_python_hook`) about everything else.
    Both paths keep the same state, in C memory (emulator/hitpath.py), and
    give the same results; `hit_path` says which one runs ("C", or "pure
    Python (why)"; SPRAT_PURE_COST_MODEL=1 forces the pure one).
"""

import ctypes

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE
from unicorn.unicorn_py3.unicorn import HOOK_CODE_CFUNC, HOOK_MEM_ACCESS_CFUNC

from emulator import hitpath
from emulator.core import CoreState
from emulator.cpustate import emu_counter
from emulator.hitpath import SharedClock, SharedLine, Watch, Window
from emulator.interconnect.coherence import LINE_SHIFT, CoherenceDirectory

PAUSE = b"\xf3\x90"


class CostModel:
    def __init__(self, machine, topology):
        self.machine = machine
        self.topology = topology
        reason = hitpath.why_pure()
        self.hit_path = "C" if reason is None else f"pure Python ({reason})"
        # On the C path, the directory's hit counters and the entries of
        # tracked lines (`track`), and the cores' clocks, live in C memory,
        # where C serves hits too; the pure Python path keeps them in Python
        # objects, which Python reads faster.
        self.hits = (ctypes.c_uint64 * topology.n_cores())() if self.hit_path == "C" else None
        self.directory = CoherenceDirectory(topology, hits=self.hits)
        if self.hit_path == "C":
            for core in machine.cores:      # the clocks too, before anything reads them
                core.clock = SharedClock(emu_counter=ctypes.addressof(emu_counter(core.uc)))
        self.watches = [Watch() for _ in machine.cores]   # per core: read since its last pause
        self.windows = []                 # (physical, size)
        self.waiters = {}                 # line number -> cores parked on it
        self.pause_sites = set()
        self._keep = []                   # what unicorn and C hold bare pointers to

    # --- Tracked windows ----------------------------------------------------
    def track(self, physical: int, size: int) -> None:
        """Charge every access to physical [physical, physical + size) on every core."""
        self.windows.append((physical, size))
        first = physical >> LINE_SHIFT
        if self.hit_path == "C":
            lines = (SharedLine * (((physical + size - 1) >> LINE_SHIFT) - first + 1))()
            self.directory.keep_lines_in(first, lines)
        for core in self.machine.cores:
            serve, charge = self._python_hook(core)
            if self.hit_path == "C":
                window = Window(lines=ctypes.addressof(lines), first_line=first,
                                n_lines=len(lines), clock=ctypes.addressof(core.clock),
                                core_hits=ctypes.addressof(self.hits)
                                + core.id * ctypes.sizeof(ctypes.c_uint64),
                                watch=ctypes.addressof(self.watches[core.id]),
                                l1_hit=self.topology.l1_hit, core=core.id,
                                serve=serve, charge=charge)
                self._keep.append(window)
                hitpath.add_hook(core.uc, window, physical, physical + size - 1)
                continue
            # A raw ctypes callback, not the binding's hook_add: this runs on
            # every access, and the binding's wrapper costs a third again as
            # much as the work.
            def on_access(_uc, kind, address, size, _value, _data, charge=charge, now=core.now):
                charge(kind == UC_MEM_WRITE, address, size, now())
            callback = HOOK_MEM_ACCESS_CFUNC(on_access)
            self._keep.append(callback)
            core.uc._Uc__do_hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, callback,
                                     physical, physical + size - 1)

    def _python_hook(self, core):
        """The Python half of `core`'s memory hook: serve and charge.

        serve(write, line, now) -> cycles: what this access to line number
            `line`, begun at modeled time `now`, costs, by the directory;
            a write wakes the cores parked on the line.
        charge(write, address, size, now): serve every line the access
            touches and record it: the cycles on the core's clock, and a
            read in the lines its poll loop watches.
        The pure Python path calls charge for every access. The C hit path
        (emulator/_hitpath.c) serves hits itself, calls serve for the other
        accesses and records them as charge does, and calls charge only for
        an access to two lines or to a line new to the directory.
        """
        access = self.directory.access
        writes = self.directory.writes
        waiters = self.waiters
        watch = self.watches[core.id]
        clock = core.clock
        core_id = core.id

        def serve(write, line, now):
            try:
                cycles = access(core_id, line << LINE_SHIFT, write, now)
                if write and line in waiters:
                    self._wake(line)
                return cycles
            except BaseException as error:      # a bug in sprat: stop this core, say so
                core.fail(f"internal error in the cost model: {error!r}")
                return 0

        def charge(write, address, size, now):
            try:
                line = address >> LINE_SHIFT
                last = (address + size - 1) >> LINE_SHIFT      # line + 1 if it straddles two
                while True:
                    cycles = serve(write, line, now)
                    clock.charged += cycles
                    if not write:
                        watch.add(line, writes(line))
                    if line == last:
                        return
                    line, now = line + 1, now + cycles
            except BaseException as error:
                core.fail(f"internal error in the cost model: {error!r}")
        return serve, charge

    # --- Parking cores that poll -------------------------------------------------
    def add_pause_sites(self, addresses) -> None:
        """Hook these `pause` instructions (virtual addresses) on every core."""
        for address in sorted(set(addresses) - self.pause_sites):
            self.pause_sites.add(address)
            for core in self.machine.cores:
                callback = HOOK_CODE_CFUNC(self._pause_hook(core))     # raw, as above
                self._keep.append(callback)
                core.uc._Uc__do_hook_add(UC_HOOK_CODE, callback, address, address)
                core.uc.ctl_remove_cache(address, address + 1)

    def _pause_hook(self, core):
        watch = self.watches[core.id]
        writes = self.directory.writes

        def on_pause(_uc, address, size, _data):
            try:
                pause(address, size)
            except BaseException as error:      # a bug in sprat: stop this core, say so
                core.fail(f"internal error in the cost model: {error!r}")

        def pause(address, size):
            if core.skip_pause:
                core.skip_pause = False      # resuming after a wake-up: let it run
                return
            reads = watch.take()     # None: too many lines to watch
            if not reads or size != 2 or core.read_virtual(address, 2) != PAUSE:
                return
            # Like MONITOR/MWAIT: a write that came after the read (say, while
            # this core's quantum ended between its read and this pause)
            # means there is something new to see, so do not sleep. (So a
            # parked core holds a copy of every line it waits on, and the
            # first write to one is a miss: the C hit path never has to wake it.)
            if any(writes(line) != count for line, count in reads):
                return
            lines = tuple(sorted({line for line, _ in reads}))
            core.state = CoreState.WAITING
            core.waiting_on = lines
            for line in lines:
                self.waiters.setdefault(line, []).append(core)
            core.stop_before_this_instruction()     # the pause runs when it wakes
        return on_pause

    def forget_reads(self, core) -> None:
        """The core enters its kernel: what it read so far is no poll loop's."""
        self.watches[core.id].take()

    def unpark(self, core) -> None:
        """An interrupt came for a parked core: it stops waiting for its lines."""
        for line in core.waiting_on:
            waiting = self.waiters.get(line)
            if waiting and core in waiting:
                waiting.remove(core)
                if not waiting:
                    del self.waiters[line]
        core.state = CoreState.RUNNING
        core.waiting_on = ()

    def _wake(self, line: int) -> None:
        for core in self.waiters.pop(line):
            for other in core.waiting_on:
                if other != line:
                    self.waiters[other].remove(core)
                    if not self.waiters[other]:
                        del self.waiters[other]
            core.state = CoreState.RUNNING
            core.waiting_on = ()
            core.skip_pause = True



def find_pause_sites(program) -> list[int]:
    """Addresses of every `pause` instruction in an assembled program.

    Programs mix code and data, so rather than disassembling blindly this
    looks at the start of every statement the assembler placed.
    """
    code, base = program.code, program.base
    return sorted({address for address, _, _ in program.source_lines
                   if code[address - base:address - base + 2] == PAUSE})
