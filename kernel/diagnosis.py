"""Why a run did not end: each unfinished core, where it is and what it waits on.

The machine knows states, RIPs and physical cache lines; the OS knows what
they are called. This module puts the two together for a person:

    for line in explain(system):
        print(line)
    # core 1 waits in urpc_send_wait (userland/lib/urpc.S:75), polling channel 20
    #   (ack line) that no core will write
    # core 2 is still running in spin_loop (userland/spin.S:12)
    # core 3 stopped with exit code 1: a kernel panic, #GP general protection
    #   at 0x200499 (in trap_return_to_kernel, cpudriver/trap.S:82)

`sprat boot`, the lab graders and the debugger show these lines when a run
spends its cycle budget or stops with cores still waiting.
"""

from __future__ import annotations

import struct
from pathlib import Path

from unicorn.x86_const import UC_X86_REG_RBX

from cpudriver import layout
from emulator import sources
from emulator.core import CoreState
from emulator.debug.symbols import SymbolTable
from emulator.paging import PageFault
from emulator.traps import GENERAL_PROTECTION, PAGE_FAULT, exception_name
from kernel.urpc import URPC_ACK, URPC_SLOT_SIZE

TF_VECTOR = 120                 # trap.S's frame: vector, error code, rip
LINES_NAMED = 3                 # a monitor polls dozens of rings: name the first few


def explain(system) -> list[str]:
    """One line per core that is neither off cleanly nor idle; the cores
    that failed first, for a failure is usually why the others wait."""
    symbols = symbols_of(system)
    failed, rest = [], []
    for core in system.machine.cores:
        line = _explain_core(core, symbols)
        if line:
            (failed if core.state is CoreState.FAILED else rest).append(line)
    return failed + rest


def explain_end(system, reason: str) -> list[str]:
    """Why a run ended, for a person: `reason` (the machine's: which core
    stopped it), then explain()'s line for every unfinished core. The line of
    the core the reason names says the reason again and where that core
    stopped: it stands in for the reason, so that nothing is said twice."""
    lines = explain(system)
    same = [line for line in lines if line.replace(" failed:", ":", 1).startswith(reason)]
    first = same[0] if same else reason
    return [first] + [line for line in lines if line != first]


def _explain_core(core, symbols) -> str | None:
    if core.state is CoreState.WAITING:
        lines = [describe_line(line << 6) for line in core.waiting_on]
        what = ", ".join(lines[:LINES_NAMED]) or "a line"
        if len(lines) > LINES_NAMED:
            what += f" and {len(lines) - LINES_NAMED} more lines"
        return f"core {core.id} waits {_where(core, symbols)}, polling {what}"
    if core.state is CoreState.RUNNING:
        return f"core {core.id} is still running {_where(core, symbols)}"
    if core.state is CoreState.OFF:
        return f"core {core.id} was never started"
    if core.state is CoreState.FAILED:
        return f"core {core.id} failed: {core.failure}{_named(core.rip, symbols)}"
    if core.state is CoreState.STOPPED and core.exit_code:
        return (f"core {core.id} stopped with exit code {core.exit_code}"
                f"{_kernel_panic(core, symbols) or ' ' + _where(core, symbols)}")
    return None


def _named(address: int, symbols) -> str:
    """' (in LABEL+N, file:line)' for a raw address a message gives, or ''."""
    name = symbols.describe(address)
    if name is None:
        return ""
    source = symbols.source(address)
    return f" (in {name}" + (f", {short_source(source)})" if source else ")")


def _kernel_panic(core, symbols) -> str | None:
    """': a kernel panic, VECTOR at LABEL+N (file:line)' for a core that stopped
    in trap.S's trap_kernel_panic: the kernel faulted, and the frame of that
    fault (rbx there, as trap_kernel_panic keeps it) says where."""
    stopped_in = symbols.describe(core.rip) or ""
    if not stopped_in.startswith("trap_kernel_panic"):
        return None
    frame = core.regs.read(UC_X86_REG_RBX)
    try:
        vector, _, rip = struct.unpack("<3Q", core.read_virtual(frame + TF_VECTOR, 24))
    except (PageFault, IndexError, OverflowError, struct.error):
        return ": a kernel panic"
    return f": a kernel panic, {exception_name(vector)} at {rip:#x}{_named(rip, symbols)}"


def user_faults(system) -> list[str]:
    """One line per exception a program took in ring 3 (the CPU driver kills
    the program for it), named: its label and source line, and what the
    error code says, where the CPU driver's console line has raw numbers."""
    symbols = symbols_of(system)
    return [f"core {core.id}: {_user_fault(fault, symbols)}"
            for core in system.machine.cores for fault in core.user_faults]


def user_fault(system, core: int, number: int = 0) -> str | None:
    """The `number`th exception a program on `core` took in ring 3, as
    user_faults names it (without the core), or None if it took fewer.
    Every one kills its program, so the Nth program killed on a core died
    of the Nth."""
    faults = system.machine.cores[core].user_faults
    if number >= len(faults):
        return None
    return _user_fault(faults[number], symbols_of(system))


def _user_fault(fault, symbols) -> str:
    vector, rip, error, cr2 = fault
    what = f"{exception_name(vector)}{_named(rip, symbols) or f' at {rip:#x}'}"
    if vector == PAGE_FAULT:
        what += f" touching {cr2:#x}: {page_fault_cause(error)} (error {error:#x})"
    elif vector == GENERAL_PROTECTION and error & 2:      # bit 1: the index is an IDT gate's
        what += f" (error {error:#x}: IDT gate {error >> 3:#x})"
    elif vector == GENERAL_PROTECTION and error:
        what += f" (error {error:#x}: selector {error & ~7:#x})"
    return what


def page_fault_cause(error: int) -> str:
    """A #PF error code in words (Intel SDM vol. 3, "Interrupt 14")."""
    access = "an instruction fetch" if error & 0x10 else "a write" if error & 2 else "a read"
    mode = "in user mode" if error & 4 else "in kernel mode"
    if error & 8:
        return f"{access} {mode} through a page-table entry with reserved bits set"
    if not error & 1:
        return f"{access} {mode} of a page that is not mapped"
    forbids = [why for bit, why in ((4, "kernel-only"), (2, "read-only"), (0x10, "no-execute"))
               if error & bit]
    return f"{access} {mode} of a mapped page that forbids it ({' or '.join(forbids)})"


def describe_line(physical: int) -> str:
    """A physical address in the channel frames, as a person names it."""
    offset = physical - layout.CHANNELS_PHYS
    if not 0 <= offset < layout.CHANNELS_SIZE:
        return f"physical line {physical:#x}"
    channel, within = divmod(offset, layout.CHANNEL_SIZE)
    if channel >= layout.N_USER_CHANNELS:
        return f"core {channel - layout.N_USER_CHANNELS}'s kernel inbox"
    if within == URPC_ACK:
        return f"channel {channel}'s ack line"
    if within < URPC_ACK:
        return f"channel {channel} slot {within // URPC_SLOT_SIZE}"
    return f"channel {channel} at +{within:#x}"


def _where(core, symbols) -> str:
    rip = core.rip
    name = symbols.describe(rip)
    source = symbols.source(rip)
    ring = "kernel" if core.privilege == 0 else "user"
    if name is None:
        return f"at RIP {rip:#x} ({ring})"
    return f"in {name}" + (f" ({short_source(source)})" if source else "")


def short_source(source: str) -> str:
    """file:line with the file named by its place in the tree (or a lab workspace)."""
    file, _, line = source.rpartition(":")
    return f"{sources.tree_relative(Path(file)) or file}:{line}"


def symbols_of(system) -> SymbolTable:
    """Every program's labels (an address names one instruction on every core;
    which programs a core may run matters only from name to address)."""
    def read(core_id, address, length):
        return system.machine.cores[core_id].read_virtual(address, length)
    return SymbolTable(shared=[system.kernel], per_core=system.programs_by_core(), read=read)
