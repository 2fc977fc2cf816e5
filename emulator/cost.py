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
"""

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE
from unicorn.unicorn_py3.unicorn import HOOK_MEM_ACCESS_CFUNC

from emulator.core import CoreState
from emulator.interconnect.coherence import LINE_SHIFT, CoherenceDirectory

PAUSE = b"\xf3\x90"
MAX_WATCHED_LINES = 64     # a poll loop reading more lines than this is not parked
TOO_MANY = (-1, -1)        # marks a read list that overflowed


class CostModel:
    def __init__(self, machine, topology):
        self.machine = machine
        self.topology = topology
        self.directory = CoherenceDirectory(topology)
        self.windows = []                 # (physical, size)
        self.waiters = {}                 # line number -> cores parked on it
        self.versions = {}                # line number -> how many writes it has had
        self.pause_sites = set()
        self._callbacks = []

    # --- Tracked windows ----------------------------------------------------
    def track(self, physical: int, size: int) -> None:
        """Charge every access to physical [physical, physical + size) on every core."""
        self.windows.append((physical, size))
        for core in self.machine.cores:
            # A raw ctypes callback, not the binding's hook_add: this runs on
            # every access to a channel, and the binding's wrapper costs a
            # third again as much as the work.
            callback = HOOK_MEM_ACCESS_CFUNC(self._access_hook(core))
            self._callbacks.append(callback)            # unicorn holds a bare pointer
            core.uc._Uc__do_hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, callback,
                                     physical, physical + size - 1)

    def _access_hook(self, core):
        access = self.directory.access
        waiters = self.waiters
        watched = core.tracked_reads
        now = core.now
        core_id = core.id

        versions = self.versions

        def charge_line(line, write):
            core.extra_cycles += access(core_id, line << LINE_SHIFT, write, now())
            if write:
                versions[line] = versions.get(line, 0) + 1
                if line in waiters:
                    self._wake(line)
            elif len(watched) < MAX_WATCHED_LINES:
                watched.append((line, versions.get(line, 0)))
            elif watched[-1] is not TOO_MANY:
                watched.append(TOO_MANY)     # no longer sure what it polls: never park it

        def on_access(_handle, kind, address, size, _value, _user_data):
            try:
                write = kind == UC_MEM_WRITE
                line = address >> LINE_SHIFT
                charge_line(line, write)
                if (address + size - 1) >> LINE_SHIFT != line:      # straddles two lines
                    charge_line(line + 1, write)
            except BaseException as error:      # a bug in sprat: stop this core, say so
                core.fail(f"internal error in the cost model: {error!r}")
        return on_access

    # --- Parking cores that poll -------------------------------------------------
    def add_pause_sites(self, addresses) -> None:
        """Hook these `pause` instructions (virtual addresses) on every core."""
        for address in sorted(set(addresses) - self.pause_sites):
            self.pause_sites.add(address)
            for core in self.machine.cores:
                core.uc.hook_add(UC_HOOK_CODE, self._pause_hook(core), begin=address, end=address)
                core.uc.ctl_remove_cache(address, address + 1)

    def _pause_hook(self, core):
        def on_pause(uc, address, size, _):
            if core.skip_pause:
                core.skip_pause = False      # resuming after a wake-up: let it run
                return
            reads = set(core.tracked_reads)
            core.tracked_reads.clear()
            if not reads or TOO_MANY in reads or size != 2 \
                    or core.read_virtual(address, 2) != PAUSE:
                return
            # Like MONITOR/MWAIT: a write that came after the read (say, while
            # this core's quantum ended between its read and this pause)
            # means there is something new to see, so do not sleep.
            if any(self.versions.get(line, 0) != version for line, version in reads):
                return
            lines = tuple(sorted({line for line, _ in reads}))
            core.state = CoreState.WAITING
            core.waiting_on = lines
            for line in lines:
                self.waiters.setdefault(line, []).append(core)
            core.stop_before_this_instruction()     # the pause runs when it wakes
        return on_pause

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
