"""Why a run did not end: each unfinished core, where it is and what it waits on.

The machine knows states, RIPs and physical cache lines; the OS knows what
they are called. This module puts the two together for a person:

    for line in explain(system):
        print(line)
    # core 1 waits in urpc_send_wait (userland/lib/urpc.S:75), polling channel 20
    #   (ack line) that no core will write
    # core 2 is still running in spin_loop (userland/spin.S:12)

`sprat boot`, the lab graders and the debugger show these lines when a run
spends its cycle budget or stops with cores still waiting.
"""

from __future__ import annotations

from pathlib import Path

from cpudriver import layout
from emulator import sources
from emulator.core import CoreState
from emulator.debug.symbols import SymbolTable
from kernel.urpc import URPC_ACK, URPC_SLOT_SIZE

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
        return f"core {core.id} failed: {core.failure}"
    if core.state is CoreState.STOPPED and core.exit_code:
        return f"core {core.id} stopped with exit code {core.exit_code}"
    return None


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
    name = symbols.describe(rip, core.id)
    source = symbols.source(rip, core.id)
    ring = "kernel" if core.privilege == 0 else "user"
    if name is None:
        return f"at RIP {rip:#x} ({ring})"
    return f"in {name}" + (f" ({short_source(source)})" if source else "")


def short_source(source: str) -> str:
    """file:line with the file named by its place in the tree (or a lab workspace)."""
    file, _, line = source.rpartition(":")
    return f"{sources.tree_relative(Path(file)) or file}:{line}"


def symbols_of(system) -> SymbolTable:
    """Every program's labels, per core as the CPU driver places them, read live."""
    def read(core_id, address, length):
        return system.machine.cores[core_id].read_virtual(address, length)
    return SymbolTable(shared=[system.kernel], per_core=system.programs_by_core(), read=read)
