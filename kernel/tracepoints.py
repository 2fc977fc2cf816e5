"""Message tracepoints: telling the machine's observers about URPC messages.

The machine sees loads and stores, not messages. The OS knows where in its
programs a message becomes visible and where one is taken, because
userland/lib/urpc.S marks the two places with labels:

  urpc_send_commit  about to store the control word: the payload is in
                    the slot (rdx), rcx is the message number + 1
  urpc_received     the payload is copied out (to rsi), rcx is the message
                    number + 1, rdi the receiver's end (its ring first)

A code hook on each (only when someone listens: `sprat boot --trace`, the
debugger's `msgs`) reads the message and reports a `send` or `recv` event
through `machine._notify`, with the modeled time, the core, the channel,
the seven words and the message number, and on a page of several rings
(the monitors': three to a page) which `ring` of it. `peer` is the core
last seen at the other end of the same ring (None until there is one; a
trace file fills a send's in once its receiver shows, emulator/debug/trace.py).

A program that sends its own way has no such labels: the channel observer
(kernel/channel_observer.py) sees its messages in the machine's loads and
stores, and flags protocol violations. `install_message_tracepoints`
installs both. They share what was reported, so a message both see is
reported once, by whichever sees it first, with its place named by the
label where there is one.

What each core runs is told the same way, from the CPU driver's labels
(`install_run_tracepoints`, for `--trace` only): a `run` event (time,
core, what: "kernel", "user" or "idle", and for "user" the dispatcher
number) each time a core crosses into the CPU driver (syscall_entry,
trap_common), back out to a dispatcher (its `sysret`, or an `iretq` to
ring 3), or goes to sleep (idle_sleep). Only changes are reported.

The debugger stops on messages with the same knowledge: `message_points`
says where, in each program, a message has just been sent (the control
word is stored) or just been taken (the receiver's count is stored), and
`read_message` reads channel, number and words from a core standing at
either a tracepoint or such a point (the registers named above still hold
them there).
"""

import struct
from dataclasses import dataclass

from unicorn import UC_HOOK_CODE
from unicorn import x86_const as x86

from cpudriver import layout
from kernel.channel_observer import CONVENTION, ChannelObserver, monitor_layout
from kernel.urpc import URPC_PAYLOAD_WORDS, URPC_SLOT_SIZE, URPC_SLOTS

PAYLOAD_BYTES = 8 * URPC_PAYLOAD_WORDS

# Both labels stand on one store (the control word; the receiver's count):
# the message has been sent, or taken, once that statement has run.
LABELS = {"send": "urpc_send_commit", "recv": "urpc_received"}


@dataclass(frozen=True)
class Message:
    event: str          # "send" or "recv"
    channel: int
    seq: int            # the message number, from 0
    words: tuple
    slot_address: int   # the slot it travels in (virtual)


def message_points(system, event: str) -> list[tuple[int, object]]:
    """(address, program) for each program that links URPC: where a core
    stands right after it sent (event "send") or took ("recv") a message."""
    points = []
    for module in system.modules:
        program = module.program
        address = program.symbols.get(LABELS[event])
        if address is None or any(known is program for _, known in points):
            continue
        after = [a for a, _, _ in program.source_lines if a > address]
        if after:
            points.append((min(after), program))
    return points


SYSRET = b"\x48\x0f\x07"
KERNEL_ENTRIES = ("syscall_entry", "trap_common")


def install_run_tracepoints(system) -> None:
    """Report what each core runs: kernel, a dispatcher, or idle (see above)."""
    kernel = system.kernel
    symbols = kernel.symbols
    points = {symbols[name]: "kernel" for name in KERNEL_ENTRIES if name in symbols}
    if "idle_sleep" in symbols:
        points[symbols["idle_sleep"]] = "idle"
    if "trap_return_to_kernel" in symbols:
        points[symbols["trap_return_to_kernel"]] = "iretq"
    if "syscall_return" in symbols:
        start = symbols["syscall_return"] - kernel.base
        found = kernel.code.find(SYSRET, start)
        if found >= 0:
            points[kernel.base + found] = "user"
    for core in system.machine.cores:
        last = [None]
        for address, what in points.items():
            core.uc.hook_add(UC_HOOK_CODE, _run_point(system.machine, core, what, last),
                             begin=address, end=address)
            core.uc.ctl_remove_cache(address, address + 1)


def _run_point(machine, core, what, last):
    def on_run(uc, address, size, _):
        state = what
        if what == "iretq":         # back to ring 3, or to the kernel it interrupted?
            frame = core.regs.read(x86.UC_X86_REG_RSP)
            cs = struct.unpack("<Q", core.read_virtual(frame + 8, 8))[0]
            state = "user" if cs & 3 == 3 else "kernel"
        dispatcher = _current_dispatcher(machine, core.id) if state == "user" else None
        if last[0] == (state, dispatcher):
            return
        last[0] = (state, dispatcher)
        machine._notify("run", time=core.now(), core=core.id, what=state, dispatcher=dispatcher)
    return on_run


def _current_dispatcher(machine, core_id: int) -> int | None:
    """The number of the dispatcher the CPU driver of `core_id` runs (its PCV_CURRENT)."""
    base = layout.PERCORE_BASE + core_id * layout.PERCORE_SIZE
    slot = machine.memory.read_u64(base + layout.PCV_CURRENT)
    first = base + layout.PC_DISPATCHERS
    if not first <= slot < first + layout.MAX_DISPATCHERS * layout.DISPATCHER_SIZE:
        return None
    return (slot - first) >> layout.DISPATCHER_SHIFT


def read_message(core, event: str) -> Message:
    """The message a core standing at a send or recv point (or its tracepoint) handles."""
    regs = core.regs
    sequence = regs.read(x86.UC_X86_REG_RCX) - 1
    if event == "send":
        at = regs.read(x86.UC_X86_REG_RDX)
        ring, words = at & ~(layout.CHANNEL_SIZE - 1), core.read_virtual(at, PAYLOAD_BYTES)
    else:
        ring = struct.unpack("<Q", core.read_virtual(regs.read(x86.UC_X86_REG_RDI), 8))[0]
        at = ring + sequence % URPC_SLOTS * URPC_SLOT_SIZE
        words = core.read_virtual(regs.read(x86.UC_X86_REG_RSI), PAYLOAD_BYTES)
    channel = (ring - layout.USER_CHANNELS) // layout.CHANNEL_SIZE
    return Message(event, channel, sequence, struct.unpack(f"<{URPC_PAYLOAD_WORDS}Q", words),
                   at)


def install_message_tracepoints(system) -> ChannelObserver:
    """Hook the send and receive points of every program that links URPC, and
    watch the channel frames; return the observer (its `violations`)."""
    monitors = any(module.flags & layout.MODULE_FLAG_MONITOR for module in system.modules)
    observer = ChannelObserver(system, monitor_layout() if monitors else CONVENTION)
    observer.install()
    reported = observer.reported
    ends = {}                                  # (channel, ring) -> {"send": core, "recv": core}
    hooked = set()                             # programs built alike share their hooks
    for module in system.modules:
        program = module.program
        for event, label in LABELS.items():
            address = program.symbols.get(label)
            if address is None:
                continue
            expected = program.code[address - program.base:address - program.base + 4]
            if (address, expected) in hooked:
                continue
            hooked.add((address, expected))
            for core in system.machine.cores:
                hook = _tracepoint(system.machine, core, event, expected, ends, reported, label,
                                   observer.rings_layout)
                core.uc.hook_add(UC_HOOK_CODE, hook, begin=address, end=address)
                core.uc.ctl_remove_cache(address, address + 1)
    return observer


def _tracepoint(machine, core, event, expected, ends, reported, label, rings_layout):
    def on_message(uc, address, size, _):
        # Several programs share virtual addresses: is this one of ours?
        if core.read_virtual(address, len(expected)) != expected:
            return
        message = read_message(core, event)
        key = (event, message.slot_address - layout.USER_CHANNELS, message.seq)
        # Seen already: by the channel observer, or by this hook before a
        # debugger stop here (resuming runs the hook again). One message.
        if key in reported:
            return
        reported.add(key)
        ring = rings_layout.ring_index(message.slot_address - layout.USER_CHANNELS)
        sides = ends.setdefault((message.channel, ring), {})
        sides[event] = core.id
        other = sides.get("recv" if event == "send" else "send")
        machine._notify(event, time=core.now(), core=core.id, peer=other,
                        channel=message.channel, slot=message.seq % URPC_SLOTS,
                        seq=message.seq, place=label, words=list(message.words),
                        **({} if ring is None else {"ring": ring}))
    return on_message
