"""The channel observer: URPC messages and protocol violations, from loads and stores.

The machine reports every load and store on the channel frames
(emulator/cost.py, `observe`); it knows nothing of messages. The OS knows
the channel convention (userland/lib/urpc.S): a ring of 16 slots of one
cache line, seven payload words and then the control word, message n's
control word n + 1 in slot n mod 16, and the receiver's count of consumed
messages in the ack line after the slots. From the accesses alone, then:

  send   a store of control word n + 1 into slot n mod 16: message n is
         published, with the seven words the slot holds;
  recv   a core read that control word, then all seven payload words:
         it took message n, with the words it read.

and three protocol violations, each reported once per message, on the
first run whatever the schedule (they are about the order of one core's
stores, not about how the cores interleave):

  payload_after_control  a payload word stored into a slot whose control
                         word already published the message there (the
                         receiver may take it half written);
  slot_reused            a slot written while the message in it was not
                         yet acknowledged (the sender overwrote a message
                         the receiver may not have taken);
  ack_ahead              the ack line set to more messages than any
                         receiver has seen.

Both go to the machine's observers as events (`machine._notify`), as the
label tracepoints' messages do (kernel/tracepoints.py, which installs this
observer too and shares `reported` with it, so a message seen both ways is
reported once, by whichever sees it first). Each event names the place by
its label and source line (`place`, `source`).

Which memory is a ring is a parameter (`RingLayout`): by default every user
channel page holds one ring at its start; the monitors pack three rings of
1088 bytes (a ring and its ack line) to a page (userland/monitor.S), which
`monitor_layout` describes. Since programs also use channel pages as plain
shared memory (userland/shm_update.S), a ring counts only from its first
message: control word 1 stored into slot 0. Nothing else is recognised.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from cpudriver import layout
from kernel.urpc import URPC_ACK, URPC_CONTROL, URPC_PAYLOAD_WORDS, URPC_SLOT_SIZE, URPC_SLOTS

# The ring's layout, as kernel/urpc.py mirrors userland/lib/urpc.S, in words.
WORD = 8
SLOTS = URPC_SLOTS
SLOT_SIZE = URPC_SLOT_SIZE
PAYLOAD_WORDS = URPC_PAYLOAD_WORDS
CONTROL_WORD = URPC_CONTROL // WORD  # the slot's last word
ACK = URPC_ACK                       # the ack line's offset in a ring

# userland/monitor.S and lib/monitor_client.S: the monitors' rings, three to a page.
MONITOR_RING_BYTES = 1088
MONITOR_RINGS_PER_PAGE = 3
MONITOR_PACKED_PAGES = (range(0, 342),          # pair rings, PAIR_PAGES..BROADCAST_PAGE
                        range(364, 386))        # client rings, MONITOR_CLIENT_PAGE, 22 pages

VIOLATIONS = {
    "payload_after_control": "payload word {word} stored after the slot's control word "
                             "published the message",
    "slot_reused": "slot reused before its acknowledgement: message {old} was still in it, "
                   "unacknowledged (the ack line said {ack})",
    "ack_ahead": "acknowledgement ahead of the messages consumed: the ack line set to {ack}, "
                 "but receivers have seen {seen}",
}


@dataclass(frozen=True)
class RingLayout:
    """Where rings are in the channel frames: pages in `packed` hold
    `per_page` rings of `ring_bytes` each; every other user channel page
    holds one ring at its start."""
    packed: tuple = ()
    per_page: int = 1
    ring_bytes: int = layout.CHANNEL_SIZE

    def ring_at(self, offset: int) -> int | None:
        """The offset (in the channel frames) of the ring holding `offset`, or None."""
        page, within = divmod(offset, layout.CHANNEL_SIZE)
        if page >= layout.N_USER_CHANNELS:
            return None                           # the CPU drivers' inboxes
        if any(page in pages for pages in self.packed):
            index = within // self.ring_bytes
            if index >= self.per_page:
                return None
            return page * layout.CHANNEL_SIZE + index * self.ring_bytes
        return page * layout.CHANNEL_SIZE

    def ring_index(self, offset: int) -> int | None:
        """Which ring of its page holds `offset`, on a page of several rings;
        None on a page of one (its channel number names it)."""
        page, within = divmod(offset, layout.CHANNEL_SIZE)
        if not any(page in pages for pages in self.packed):
            return None
        return within // self.ring_bytes


CONVENTION = RingLayout()


def monitor_layout() -> RingLayout:
    """The rings of an image with monitors: theirs packed, the rest one per page."""
    return RingLayout(MONITOR_PACKED_PAGES, MONITOR_RINGS_PER_PAGE, MONITOR_RING_BYTES)


@dataclass
class Ring:
    """What the observer knows of one ring, from the accesses so far."""
    channel: int                  # the page: the number programs and traces use
    name: str                     # "channel 3", or "channel 364 ring 1" where packed
    published: list = field(default_factory=lambda: [None] * SLOTS)   # message in each slot
    last_sent: int = -1
    ack: int = 0
    seen: int = 0                 # messages whose control word a receiver has read
    sender: int | None = None
    receiver: int | None = None


@dataclass
class Taking:
    """A core that read message `seq`'s control word, reading its payload."""
    ring: int
    slot: int
    seq: int
    words: dict = field(default_factory=dict)


class ChannelObserver:
    """Turns the machine's accesses to the channel frames into messages and violations."""

    def __init__(self, system, rings: RingLayout = CONVENTION, reported=None):
        from kernel.diagnosis import short_source, symbols_of
        self.machine = system.machine
        self.rings_layout = rings
        self.rings: dict[int, Ring] = {}          # ring offset -> Ring, once started
        self.taking: dict[int, Taking] = {}       # core -> the message it is reading
        self.reported = set() if reported is None else reported   # (kind, slot offset, seq)
        self.violations: list[dict] = []
        self._symbols = symbols_of(system)
        self._short = short_source

    # --- Checkpoints (emulator/checkpoint.py): what was seen so far -------------
    def checkpoint_state(self):
        return copy.deepcopy((self.rings, self.taking, self.reported, self.violations))

    def restore_state(self, state) -> None:
        rings, taking, reported, violations = copy.deepcopy(state)
        self.rings, self.taking, self.violations = rings, taking, violations
        self.reported.clear()              # shared with the label tracepoints: in place
        self.reported.update(reported)

    def install(self) -> None:
        """Listen to the machine's channel frames (nothing to hear without a cost model)."""
        if self.machine.cost is not None:
            self.machine.cost.observe(self.on_access)

    # --- The accesses --------------------------------------------------------------
    def on_access(self, core, write: bool, address: int, size: int, value: int) -> None:
        offset = address - layout.CHANNELS_PHYS
        base = self.rings_layout.ring_at(offset)
        if base is None:
            return
        within = offset - base
        if within >= ACK + SLOT_SIZE:
            return
        if within >= ACK:
            if write and within == ACK and size == WORD:
                self._acknowledged(core, base, value)
            return
        slot, word = divmod(within, SLOT_SIZE)
        word //= WORD
        if word == CONTROL_WORD and size == WORD and within % WORD == 0:
            if write:
                self._published(core, base, slot, value)
            else:
                self._looked(core, base, slot, value)
        elif word < CONTROL_WORD:
            if write:
                self._payload_stored(core, base, slot, word)
            else:
                self._payload_read(core, base, slot, word, within % SLOT_SIZE, size, value)

    def _published(self, core, base: int, slot: int, value: int) -> None:
        """A control word stored: a send, if it names a message of this slot."""
        seq = value - 1
        if value == 0 or seq % SLOTS != slot:
            return
        ring = self.rings.get(base)
        if seq == 0:                              # a ring's first message: (re)start it
            ring = self.rings[base] = self._new_ring(base)
        if ring is None:
            return
        if seq - ring.ack >= SLOTS:
            self._violation("slot_reused", core, ring, base, slot, seq, old=seq - SLOTS,
                            ack=ring.ack)
        ring.published[slot] = seq
        ring.last_sent = seq
        ring.sender = core.id
        words = self._slot_words(base, slot)
        self._message("send", core, ring, base, slot, seq, words, peer=ring.receiver)

    def _looked(self, core, base: int, slot: int, value: int) -> None:
        """A control word read: if it shows the slot's message, the core takes it."""
        ring = self.rings.get(base)
        if ring is None or value == 0 or ring.published[slot] != value - 1:
            return
        seq = value - 1
        ring.seen = max(ring.seen, seq + 1)
        self.taking[core.id] = Taking(base, slot, seq)

    def _payload_read(self, core, base, slot, word, at, size, value) -> None:
        taking = self.taking.get(core.id)
        if taking is None or taking.ring != base or taking.slot != slot:
            return
        if size == WORD and at % WORD == 0:
            taking.words[word] = value
        if len(taking.words) == PAYLOAD_WORDS:
            del self.taking[core.id]
            ring = self.rings[base]
            ring.receiver = core.id
            words = [taking.words[k] for k in range(PAYLOAD_WORDS)]
            self._message("recv", core, ring, base, slot, taking.seq, words, peer=ring.sender)

    def _payload_stored(self, core, base: int, slot: int, word: int) -> None:
        """A payload word stored: into an unacknowledged message, a violation."""
        ring = self.rings.get(base)
        if ring is None:
            return
        old = ring.published[slot]
        if old is None or old < ring.ack:
            return                                # empty, or its message acknowledged
        if old == ring.last_sent:                 # the message just published: a late word
            self._violation("payload_after_control", core, ring, base, slot, old, word=word)
        else:                                     # the next lap's message, too early
            self._violation("slot_reused", core, ring, base, slot, old + SLOTS, old=old,
                            ack=ring.ack)

    def _acknowledged(self, core, base: int, value: int) -> None:
        ring = self.rings.get(base)
        if ring is None:
            return
        if value > ring.seen:
            self._violation("ack_ahead", core, ring, base, (value - 1) % SLOTS, value - 1,
                            ack=value, seen=ring.seen)
        ring.ack = value

    def _new_ring(self, base: int) -> Ring:
        channel, within = divmod(base, layout.CHANNEL_SIZE)
        packed = self.rings_layout.per_page > 1 and \
            any(channel in pages for pages in self.rings_layout.packed)
        name = f"channel {channel}" + (f" ring {within // self.rings_layout.ring_bytes}"
                                       if packed else "")
        return Ring(channel=channel, name=name)

    # --- Reporting -------------------------------------------------------------------
    def _slot_words(self, base: int, slot: int) -> list[int]:
        memory = self.machine.memory
        start = layout.CHANNELS_PHYS + base + slot * SLOT_SIZE
        return [memory.read_u64(start + WORD * k) for k in range(PAYLOAD_WORDS)]

    def _message(self, event, core, ring, base, slot, seq, words, peer) -> None:
        key = (event, base + slot * SLOT_SIZE, seq)
        if key in self.reported:                  # a label tracepoint saw it first
            return
        self.reported.add(key)
        place, source = self._place(core)
        index = self.rings_layout.ring_index(base)
        self.machine._notify(event, time=core.now(), core=core.id, peer=peer,
                             channel=ring.channel, slot=slot, seq=seq, words=words,
                             place=place, line=source,
                             **({} if index is None else {"ring": index}))

    def _violation(self, kind, core, ring, base, slot, seq, **details) -> None:
        key = (kind, base + slot * SLOT_SIZE, seq)
        if key in self.reported:
            return
        self.reported.add(key)
        place, source = self._place(core)
        what = VIOLATIONS[kind].format(**details)
        where = f" at {place}" if place else ""
        where += f" ({source})" if source else ""
        text = (f"core {core.id}, {ring.name} slot {slot}, message {seq}: "
                f"{what}{where}")
        record = {"kind": kind, "time": core.now(), "core": core.id, "channel": ring.channel,
                  "slot": slot, "seq": seq, "place": place, "line": source, "text": text}
        self.violations.append(record)
        self.machine._notify("violation", **record)

    def _place(self, core) -> tuple[str | None, str | None]:
        """The label and source line of the instruction `core` is executing."""
        rip = core.rip
        source = self._symbols.source(rip)
        return self._symbols.describe(rip), source and self._short(source)
