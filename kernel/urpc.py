"""URPC channels from the host: the same protocol as userland/lib/urpc.S.

The guest's send and receive paths are the real thing (a student steps
through them in `sprat debug`). This module speaks the same protocol on the
same shared memory from Python, so that tests can drive a channel directly,
check the guest against it, and explore interleavings the guest would take
millions of instructions to reach:

    ring = channel_address(3)                    # physical address of channel 3
    sender, receiver = UrpcSender(memory, ring), UrpcReceiver(memory, ring)
    sender.try_send([1, 2, 3, 4, 5, 6, 7])       # False if the ring is full
    receiver.try_receive()                       # [1, 2, ...] or None

The layout (see urpc.S for the why): URPC_SLOTS slots of one cache line,
payload words 0..6 then the control word (message number + 1), written
last; the receiver's consumed count in the ack line after the slots,
written every half ring.
"""

from dataclasses import dataclass

from cpudriver import layout

URPC_SLOTS = 16
URPC_SLOT_SIZE = 64
URPC_PAYLOAD_WORDS = 7
URPC_CONTROL = 56
URPC_ACK = URPC_SLOTS * URPC_SLOT_SIZE


def channel_address(index: int) -> int:
    """The physical address of shared channel `index` (USER_CHANNELS + index pages)."""
    if not 0 <= index < layout.N_CHANNELS:
        raise ValueError(f"channel {index} does not exist (0..{layout.N_CHANNELS - 1})")
    return layout.CHANNELS_PHYS + index * layout.CHANNEL_SIZE


@dataclass(frozen=True)
class RingState:
    """What a channel's shared page says, read by an onlooker (the debugger)."""
    sent: int           # messages in the ring's history: the newest control word
    acked: int          # the receiver's count, as last written to the ack line
    controls: tuple     # each slot's control word


def ring_state(memory, index: int) -> RingState:
    """Read channel `index`'s ring. The newest message is the highest control
    word (message n carries n + 1, and every lap raises them), so the
    sender's next message number can be told from shared memory alone."""
    ring = channel_address(index)
    controls = tuple(memory.read_u64(ring + slot * URPC_SLOT_SIZE + URPC_CONTROL)
                     for slot in range(URPC_SLOTS))
    return RingState(sent=max(controls), acked=memory.read_u64(ring + URPC_ACK),
                     controls=controls)


class UrpcSender:
    """The sending end: its state is private to the sender, like the guest's struct."""

    def __init__(self, memory, ring: int):
        self.memory, self.ring = memory, ring
        self.seq = 0          # next message number
        self.acked = 0        # the receiver's count, as last read

    def try_send(self, words) -> bool:
        """Send 7 words unless the ring is full; True if sent."""
        if len(words) != URPC_PAYLOAD_WORDS:
            raise ValueError(f"a message is {URPC_PAYLOAD_WORDS} words, got {len(words)}")
        if self.seq - self.acked >= URPC_SLOTS:
            self.acked = self.memory.read_u64(self.ring + URPC_ACK)
            if self.seq - self.acked >= URPC_SLOTS:
                return False
        slot = self.ring + (self.seq % URPC_SLOTS) * URPC_SLOT_SIZE
        for index, word in enumerate(words):                  # the payload first ...
            self.memory.write_u64(slot + 8 * index, word)
        self.seq += 1
        self.memory.write_u64(slot + URPC_CONTROL, self.seq)  # ... the control word last
        return True


class UrpcReceiver:
    def __init__(self, memory, ring: int):
        self.memory, self.ring = memory, ring
        self.seq = 0          # next message number expected

    def try_receive(self):
        """The next message's 7 words, or None if it has not arrived."""
        slot = self.ring + (self.seq % URPC_SLOTS) * URPC_SLOT_SIZE
        if self.memory.read_u64(slot + URPC_CONTROL) != self.seq + 1:
            return None
        words = [self.memory.read_u64(slot + 8 * i) for i in range(URPC_PAYLOAD_WORDS)]
        self.seq += 1
        if self.seq % (URPC_SLOTS // 2) == 0:
            self.memory.write_u64(self.ring + URPC_ACK, self.seq)
        return words
