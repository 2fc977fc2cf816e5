"""Lab 5's grader: URPC's send and receive paths, judged on what the machine did.

Every test boots images of programs/checked_stream.S (word k of message n is
(n + 1) * 0x10000 + k) with the student's userland/lib/urpc.S and reads:
  * the messages the machine reports at the tracepoints urpc_send_commit
    and urpc_received (kernel/tracepoints.py): which message, on which
    channel, with which words, in the order the cores executed them;
  * the coherence directory's counters: which lines of a channel were
    touched, how often the ack line was written, lines moved per message;
  * the channel's memory at the end (the ack line's count, each slot's
    control word);
  * what each core did to a channel's ack line and slots, in the order the
    cores did it (`Watch`, by the bytes each access touches): when the ack
    line was written, and how many messages had been taken by then; who
    read it, who wrote the slots, which control words were stored and
    where, the control word a receiver read before it took a message, and
    payload words stored non-temporally with no fence before the control
    word (the machine keeps those in order, a real x86 does not);
  * the protocol violations the machine's channel observer reports
    (kernel/channel_observer.py): a payload word stored after its control
    word, a slot written before its message was acknowledged;
  * the cycles the test programs measure and print by design (one line
    each, no shorter than the tracepoints' times say), and the
    instructions a waiting sender ran (a parked one runs none).
Correctness runs under the schedule sweep (QUANTA) and on two machines; the
cost test measures the reference in the same grader run.
"""

import re
from collections import Counter

from unicorn import UC_HOOK_CODE

from sprat.lab.grading import QUANTA, SEEDS, boot, fail, test

from emulator.interconnect.storebuffer import find_fence_sites
from kernel.diagnosis import short_source, symbols_of
from kernel.urpc import URPC_ACK, URPC_CONTROL, URPC_SLOT_SIZE, URPC_SLOTS, channel_address

MAX_CYCLES = 600_000          # the images end by ~140,000; a stuck sender spins no longer
# One-way latency, student / reference, at the default quantum (where it does
# not depend on the quantum): between cores sharing a cache the path's
# instructions are much of the cost, so a plainer path may take longer
# there; across the bus to the other socket the cache line transfers dominate.
LATENCY_BOUNDS = ((0, "cores 0 and 1 (sharing a cache)", 1.5),
                  (2, "cores 2 and 4 (other socket)", 1.25))
LINES_BOUND = 1.25            # student / reference, cache lines moved per message
TORN_QUANTUM = 100            # with a seed: turns of 1 to 100 instructions
LINES_QUANTUM = 100           # at 10,000 one quantum spans many messages and hides a line's moves
# A sender that waits with `pause` reads the ack line once, is parked until the
# receiver writes it, and reads it again: a few reads per acknowledgement (the
# reference: 6 to 12 for 64 messages on paced.lst; reading it on every send
# makes 64 more). A wait loop without pause reads it thousands of times.
ACK_READS_PER_MESSAGE = 4
# Likewise a receiver reads the control word it waits for at most twice per
# message at the default quantum (waiting.lst, paced.lst); one that spins,
# 8 to 16 times (at short quanta the other cores' turns hide the spinning).
CONTROL_READS_PER_MESSAGE = 4
SENDER_INSTRUCTIONS_BOUND = 2      # student / reference, the sender's instructions in paced.lst
# A receiver's own instructions are few beside its program's (~65,000 in
# waiting.lst, most of them before the first message), so it is judged by
# what it runs beyond the reference: a parked receiver runs none while it
# waits, and a path written another way a few dozen more per message. One
# that waits in a delay loop runs all the while the sender is slow (waiting.lst:
# ~200 more per message, at any length of loop that reads the control word
# seldom enough to pass the count above).
RECEIVER_EXTRA_INSTRUCTIONS_PER_MESSAGE = 50
TRACEPOINTS = {"urpc_send_commit": "on the store of the control word",
               "urpc_received": "just after the payload is copied out"}


def sent_word(message, k):
    """Word k of message `message`, as checked_stream.S fills it: the same
    number in both halves, so a word moved 4 bytes at a time shows."""
    return ((message + 1) * 0x10000 + k) * 0x1_0000_0001


# --- the tests -----------------------------------------------------------------------------
@test(points=35)
def messages_arrive_once_in_order_and_whole():
    """Every message arrives once, in order, payload intact: every quantum, one and two hops."""
    runs = [("images/waiting.lst", "amd-2x2", q, None) for q in sorted(QUANTA, reverse=True)]
    # Seeded schedules: at a fixed quantum the machine serves the channel's
    # accesses in the order of the cores' clocks, and a sender's stores come
    # a cycle apart; only a schedule that runs the receiver between two of
    # them shows a message taken half-written.
    runs += [("images/waiting.lst", "amd-2x2", TORN_QUANTUM, seed) for seed in SEEDS[:3]]
    runs += [("images/far.lst", "amd-8x4", q, None) for q in (100, 10_000)]
    for image, topology, quantum, seed in runs:
        run = start(image, topology, quantum, seed)
        for channel in (1, 2):
            check_channel(run, channel, count=40)
        check_finished(run)


@test(points=20)
def the_sender_waits_while_the_ring_is_full():
    """Slow receivers, one package: the ring fills, no slot is reused before it is taken."""
    for quantum in sorted(QUANTA, reverse=True):
        run = start("images/paced.lst", "amd-2x2", quantum)
        for channel in (1, 2):
            check_channel(run, channel, count=64)
            check_sender_parks(run, channel, count=64)
            if quantum == max(QUANTA):
                check_sender_rests(run, channel)
                # At shorter quanta the other pair's turns can keep a sender
                # from getting that far ahead; at the default both do.
                check_ring_fills(run, channel)
        check_finished(run)


@test(points=20)
def acks_every_half_ring():
    """The receiver writes its count to the ack line every URPC_SLOTS/2 messages."""
    run = start("images/paced.lst", "amd-2x2")
    directory = run.system.machine.cost.directory
    half = URPC_SLOTS // 2
    for channel in (1, 2):
        check_ring_lines(run, channel, f"channel {channel} ({describe_cores(run, channel)})")
        taken = len(run.receives(channel))
        ack = channel_address(channel) + URPC_ACK
        writes = directory.writes(ack >> 6)
        where = f"channel {channel}: the receiver"
        if taken >= half and writes == 0:
            fail(f"{where} took {taken} messages and never wrote the ack line (ring + {URPC_ACK}):"
                 f" the sender cannot know the ring has room", run,
                 stop=f"urpc_received {cores(run, channel)}")
        if taken >= 2 * half and writes >= taken // 2:
            fail(f"{where} wrote the ack line {writes} times for {taken} messages: write it once every"
                 f" URPC_SLOTS/2 = {half} messages (each write takes the line from the sender's cache)",
                 run, stop=f"urpc_received {cores(run, channel)}")
        if writes != taken // half:
            fail(f"{where} wrote the ack line {writes} times for {taken} messages; expected"
                 f" {taken // half}, once every {half} messages", run)
        count = run.system.machine.memory.read_u64(ack)
        if count != taken // half * half:
            fail(f"{where} took {taken} messages and the ack line holds {count}: it must hold how many"
                 f" messages the receiver has taken, written after every {half}th", run)
        check_ack_follows_the_copies(run, channel)
    for channel in (1, 2):
        check_channel(run, channel, count=64)
    check_finished(run)


@test(points=25)
def costs_no_more_than_the_reference():
    """One-way latency and cache lines moved per message, against the reference's."""
    yours = start("images/pingpong.lst", "intel-2x4")
    check_finished(yours)
    reference = boot("images/pingpong.lst", topology="intel-2x4", reference=True)
    for core, pair, bound in LATENCY_BOUNDS:
        mine, theirs = latency(yours, core), latency(reference, core)
        if mine > bound * theirs:
            fail(f"one-way latency between {pair} is {mine:.0f} cycles, the reference's {theirs:.0f}:"
                 f" more than {bound}x (what does your path do that it need not?)", yours)
    yours = start("images/stream.lst", "amd-2x2", LINES_QUANTUM)
    check_channel(yours, 1, count=64)
    reference = boot("images/stream.lst", topology="amd-2x2", quantum=LINES_QUANTUM,
                     reference=True)
    mine, theirs = lines_moved(yours, 1) / 64, lines_moved(reference, 1) / 64
    if mine > LINES_BOUND * theirs:
        fail(f"a stream of 64 messages moved {mine:.2f} cache lines between the cores per message, the"
             f" reference {theirs:.2f}: more than {LINES_BOUND}x (is the ack line read or written more"
             f" often than every half ring?)", yours)


# --- running an image and reading what happened -----------------------------------------
class Watch:
    """What the cores did to each channel's ack line and slots, in the order
    they did it: hooked on the machine before the first instruction."""

    def __init__(self):
        self.taken = Counter()          # channel -> messages taken so far
        self.acks = {}                  # channel -> [(core, count written, taken by then)]
        self.ack_reads = Counter()      # (channel, core) -> loads of the ack line
        self.control_reads = Counter()  # (channel, core) -> loads of control words
        self.slot_writes = {}           # (channel, core) -> its first store into a slot
        self.stray_acks = {}            # channel -> (core, offset, value): a store to the ack
                                        # line's other 56 bytes
        self.unfenced = {}              # core -> (channel, rip) of its first non-temporal
                                        # store into a slot since its last fence
        self.published_unfenced = {}    # channel -> (core, rip, slot): a control word stored
                                        # while such a store could still be in flight
        self.last_control = {}          # (channel, core) -> the control word it read last
        self.taken_when = {}            # (channel, seq) -> the control word its receiver
                                        # read last before it took the message
        self.controls = Counter()       # (channel, core) -> control words it stored
        self.wrong_control = {}         # (channel, core) -> (n, value, rip): the first
                                        # control word it stored that was not n + 1

    def install(self, system):
        self.memory = system.machine.memory
        system.machine.observers.append(self.on_event)
        system.machine.cost.observe(self.on_access)
        # Fast timing has no store buffer, so it keeps every store in order;
        # a fence ends what a non-temporal store may reorder on a real x86.
        cores = system.machine.cores
        for module in system.modules:
            on = cores if module.core is None else [cores[module.core]]
            for address in find_fence_sites(module.program):
                for core in on:
                    core.uc.hook_add(UC_HOOK_CODE, self.on_fence, core.id, address, address)

    def on_fence(self, _uc, _address, _size, core_id):
        self.unfenced.pop(core_id, None)

    def on_event(self, event, **fields):
        if event == "recv":
            self.taken[fields["channel"]] += 1
            said = self.last_control.get((fields["channel"], fields["core"]))
            self.taken_when.setdefault((fields["channel"], fields["seq"]), said)

    def on_access(self, core, write, address, size, value):
        # An access is judged by the bytes it touches, not where it starts: a
        # load at ring + 1020 reads half the ack word, one at slot + 52 half
        # a control word, and a wait loop may spin on either.
        channel, start = divmod(address - channel_address(0), 4096)
        end = start + size
        if start < URPC_ACK + 8 and end > URPC_ACK:
            if write:
                count = self.ack_after(channel, start, size, value)
                self.acks.setdefault(channel, []).append((core.id, count, self.taken[channel]))
            else:
                self.ack_reads[channel, core.id] += 1
        elif write and URPC_ACK + 8 <= start < URPC_ACK + URPC_SLOT_SIZE:
            self.stray_acks.setdefault(channel, (core.id, start, value))
        if start < URPC_ACK:
            if write:
                self.slot_writes.setdefault((channel, core.id), (start, value))
                self.on_slot_store(core, channel, start, size, value)
            elif any(start < control + 8 and end > control
                     for control in controls_between(start, end)):
                self.control_reads[channel, core.id] += 1
                if start % URPC_SLOT_SIZE == URPC_CONTROL and size == 8:
                    self.last_control[channel, core.id] = value

    def on_slot_store(self, core, channel, start, size, value):
        """Note what a store into a slot says about the sender: a control word
        that is not its number + 1, a non-temporal store, and a control word
        stored after one with no fence between (x86 may make it visible first)."""
        if non_temporal(core.read_virtual(core.rip, 15)):
            self.unfenced.setdefault(core.id, (channel, core.rip))
            return
        if start % URPC_SLOT_SIZE != URPC_CONTROL or size != 8:
            return
        n = self.controls[channel, core.id]
        self.controls[channel, core.id] += 1
        if value != n + 1:
            self.wrong_control.setdefault((channel, core.id), (n, value, core.rip))
        if core.id in self.unfenced:
            _, rip = self.unfenced[core.id]
            self.published_unfenced.setdefault(channel, (core.id, rip, start // URPC_SLOT_SIZE))

    def ack_after(self, channel, start, size, value):
        """The ack word as it will read once a store of `size` bytes at ring +
        `start` (the hook runs before the store) lands on part or all of it."""
        ack = channel_address(channel) + URPC_ACK
        word = bytearray(self.memory.read(ack, 8))
        for i, byte in enumerate(value.to_bytes(size, "little")):
            if 0 <= start + i - URPC_ACK < 8:
                word[start + i - URPC_ACK] = byte
        return int.from_bytes(word, "little")


def non_temporal(code):
    """Is the instruction at the start of `code` a non-temporal store (movnti,
    movntps/pd, movntq/dq, or their VEX forms)? x86 orders those neither
    with each other nor with the ordinary stores after them."""
    at = 0
    while at < len(code) and code[at] in b"\x66\x67\xf2\xf3\x2e\x36\x3e\x26\x64\x65\xf0":
        at += 1
    if at < len(code) and 0x40 <= code[at] <= 0x4F:      # REX
        at += 1
    if code[at:at + 1] == b"\xc5":                      # two-byte VEX: map 0F
        opcode = code[at + 2:at + 3]
    elif code[at:at + 1] == b"\xc4" and len(code) > at + 3 and code[at + 1] & 0x1F == 1:
        opcode = code[at + 3:at + 4]
    elif code[at:at + 1] == b"\x0f":
        opcode = code[at + 1:at + 2]
    else:
        return False
    return opcode in (b"\xc3", b"\x2b", b"\xe7")


def controls_between(start, end):
    """Ring offsets of the control words a slot access [start, end) may touch."""
    first = start // URPC_SLOT_SIZE * URPC_SLOT_SIZE + URPC_CONTROL
    return range(first - URPC_SLOT_SIZE, min(end, URPC_ACK), URPC_SLOT_SIZE)


def start(image, topology, quantum=None, seed=None):
    """Boot `image` with the student's urpc.S, run it, and fail on the obvious first."""
    options = {} if quantum is None else {"quantum": quantum}
    if seed is not None:
        options["seed"] = seed
    watch = Watch()
    run = boot(image, topology=topology, max_cycles=MAX_CYCLES, setup=watch.install, **options)
    run.watch, run.lab_image = watch, image
    for core, line in run.console:
        if "not written yet" in line:
            fail(f"core {core}: {line.strip()}", run)
    for module in run.system.modules:
        symbols = module.program.symbols
        if "urpc_send" not in symbols:
            continue
        for label, where in TRACEPOINTS.items():
            if label not in symbols:
                fail(f"userland/lib/urpc.S has no label {label}: keep it {where};"
                     f" the grader sees messages there (README.md, 'What you write')")
    return run


def check_channel(run, channel, count):
    """The whole story of one channel: slots in the ring, flow control, each message."""
    where = f"channel {channel} ({describe_cores(run, channel)})"
    stop = f"urpc_received {cores(run, channel)}"
    check_ring_lines(run, channel, where)
    sends = run.sends(channel)
    if sends and sends[0]["seq"] != 0:
        fail(f"{where}: the first message was sent with control word {sends[0]['seq'] + 1}:"
             f" message n's control word is n + 1 (0 is what an empty slot holds)", run,
             stop=f"urpc_send_commit {cores(run, channel, 'send')}")
    check_control_words(run, channel, where)
    check_payload_stored_in_order(run, channel, where)
    check_flow_control(run, channel, where)
    late = late_payload(run, channel)
    if late:
        # Whether a receiver copies the half-written message depends on the
        # schedule; the order of the sender's stores does not.
        n = late["seq"]
        fail(f"{where}: message {n} may be copied half-written under some schedule (store the"
             f" control word last: {late['text']})", run,
             stop=f"urpc_send_commit {cores(run, channel, 'send')} if $rcx == {n + 1}")
    received = run.receives(channel)
    for index, message in enumerate(received):
        if message["seq"] != index:
            fail(f"{where}: message {message['seq']} was taken where message {index} was due"
                 f"{' (taken twice)' if message['seq'] < index else ''}; or is rcx at"
                 f" urpc_received not the message number + 1?", run,
                 stop=f"{stop} if $rcx == {message['seq'] + 1}")
        for k, word in enumerate(message["words"]):
            if word != sent_word(index, k):
                # The replay stops as that message is taken: rcx is its number + 1.
                fail(f"{where}: message {index} arrived with word {k} = {word:#x} (sent as"
                     f" {sent_word(index, k):#x}){diagnose(run, channel, index, k, word)}", run,
                     stop=f"{stop} if $rcx == {index + 1}")
    if len(received) < count:
        # A test program that found a register changed stops there and says so.
        said = program_complaint(run)
        fail(f"{where}: {len(received)} of {count} messages arrived; "
             f"{said or why_stuck(run)}", run)
    if len(received) > count:
        fail(f"{where}: {len(received)} messages arrived, {count} were sent", run, stop=stop)
    check_only_the_sender_writes_slots(run, channel, where)
    if run.options["quantum"] in (None, max(QUANTA)):
        check_receiver_parks(run, channel, count, where)
        check_receiver_rests(run, channel, count, where)
    check_each_message_in_its_slot(run, channel, count, where)


def check_ring_lines(run, channel, where):
    """Only the slots and the ack line of a channel's page may be touched."""
    ring = channel_address(channel)
    end = ring + URPC_ACK + URPC_SLOT_SIZE
    stray = run.watch.stray_acks.get(channel)
    if stray is not None:
        core, offset, value = stray
        fail(f"{where}: core {core} wrote {value:#x} at ring + {offset}, in the ack line but"
             f" past its count: the receiver's count goes in the ack line's first word, ring +"
             f" {URPC_ACK} (URPC_ACK), where the sender and every other end of a channel read it",
             run, stop=f"urpc_received core {core}")
    for line in run.system.machine.cost.directory.tracked_lines():
        if end <= line < ring + 4096:
            fail(f"{where}: something was written at ring + {line - ring}, past the last slot"
                 f" (ring + {URPC_ACK - URPC_SLOT_SIZE}) and the ack line (ring + {URPC_ACK}):"
                 f" message n goes to slot n mod URPC_SLOTS", run,
                 stop=f"urpc_send_commit {cores(run, channel, 'send')}")


def check_control_words(run, channel, where):
    """The sender's control words count on past the ring's end: message n's is n + 1."""
    sender = ends(run, channel).get("send")
    wrong = run.watch.wrong_control.get((channel, sender))
    if wrong is None:
        return
    n, value, rip = wrong
    place = describe_place(run, rip)
    if not place.startswith("urpc_send_commit"):
        fail(f"{where}: core {sender} stored {value:#x} into slot {n % URPC_SLOTS}'s control word"
             f" at {place}, before urpc_send_commit stored {n + 1} there: the payload is 7 words"
             f" (56 bytes), and the control word is stored once, last", run,
             stop=f"urpc_send core {sender} if [$rdi + 8] == {n}")
    fail(f"{where}: message {n}'s control word was stored as {value}, not {n + 1}: message"
         f" n's control word is n + 1, counted on past the ring's end (a slot holds 0 before"
         f" its first message and n + 1 - {URPC_SLOTS} from the previous lap: only n + 1 tells"
         f" a new message from an old one)", run,
         stop=f"urpc_send_commit core {sender} if $rcx == {n + 1}")


def check_payload_stored_in_order(run, channel, where):
    """No payload word is stored with a non-temporal store that x86 may make
    visible after the control word: the machine keeps every store in order,
    a real x86 does so only for ordinary stores (or after an sfence)."""
    found = run.watch.published_unfenced.get(channel)
    if found is None:
        return
    core, rip, slot = found
    place = describe_place(run, rip)
    fail(f"{where}: core {core} stored a payload word into slot {slot} with a non-temporal"
         f" store at {place}, then the control word with no sfence between: x86 keeps"
         f" ordinary stores in order but not non-temporal ones, so on a real machine the"
         f" receiver may see the control word before the payload (store the payload with"
         f" mov, or put an sfence before the control word)", run,
         stop=f"urpc_send_commit core {core}")


def describe_place(run, rip):
    """`label+offset (file:line)` of an instruction of the run's programs."""
    symbols = symbols_of(run.system)
    source = symbols.source(rip)
    return (symbols.describe(rip) or f"{rip:#x}") + (f" ({short_source(source)})" if source else "")


def check_flow_control(run, channel, where):
    """In the order the cores ran: message n goes in only once message n - URPC_SLOTS was taken."""
    taken, early = 0, None
    for event in run.events:
        if event.get("channel") != channel:
            continue
        if event["event"] == "recv":
            taken += 1
        elif event["event"] == "send" and event["seq"] >= taken + URPC_SLOTS:
            n = event["seq"]
            fail(f"{where}: message {n} was written into slot {n % URPC_SLOTS} while message"
                 f" {n - URPC_SLOTS}, still in it, had not been taken: the sender must wait while"
                 f" URPC_SLOTS messages are unconsumed", run,
                 stop=f"urpc_send_commit {cores(run, channel, 'send')}")
        elif event["event"] == "violation" and event["kind"] == "slot_reused" and early is None:
            early = event               # a payload word: the check above sees the control word
    if early is not None:
        # Its control word came after the slot's message was taken (if ever):
        # the sender waited, but only after it had written the payload. The
        # replay stops as urpc_send starts on message n (rdi + URPC_SEQ).
        n = early["seq"]
        fail(f"{where}: message {n}'s payload went into slot {n % URPC_SLOTS} while message"
             f" {n - URPC_SLOTS}, still in it, had not been taken ({early['place']}): wait for"
             f" room before writing any word of the slot", run,
             stop=f"urpc_send {cores(run, channel, 'send')} if [$rdi + 8] == {n}")


def check_sender_parks(run, channel, count):
    """The sender waits for room with `pause`: it reads the ack line a few times
    per acknowledgement, not over and over (a loop without pause spins)."""
    sender = ends(run, channel).get("send")
    reads = run.watch.ack_reads[channel, sender]
    if reads > ACK_READS_PER_MESSAGE * count:
        fail(f"channel {channel}: core {sender}, the sender, read the ack line {reads:,} times for"
             f" {count} messages: {spins('receiver')}", run,
             stop=f"urpc_send_commit core {sender} if $rcx == {URPC_SLOTS + 1}")


def check_sender_rests(run, channel):
    """A sender that waits for room is parked, not running: a delay loop
    between reads of the ack line reads it seldom, but runs all the while
    (in paced.lst it waits for most of the run: the reference's sender runs
    ~68,000 instructions, one with a delay loop more than twice that)."""
    sender = ends(run, channel)["send"]
    reference = reference_run(run.lab_image, run.options["topology"])
    mine = run.system.machine.cores[sender].stats.instructions
    theirs = reference.system.machine.cores[sender].stats.instructions
    if mine > SENDER_INSTRUCTIONS_BOUND * theirs:
        fail(f"channel {channel}: core {sender}, the sender, ran {mine:,} instructions in"
             f" {run.lab_image}, the reference {theirs:,}: while the ring is full it keeps"
             f" running (a delay loop?) where it should wait with `pause`, parked until the"
             f" receiver writes the ack line", run,
             stop=f"urpc_send_commit core {sender} if $rcx == {URPC_SLOTS + 1}")


REFERENCE_RUNS = {}


def reference_run(image, topology):
    """The reference's run of `image` at the longest quantum, booted once per test."""
    if (image, topology) not in REFERENCE_RUNS:
        REFERENCE_RUNS[image, topology] = boot(image, topology=topology, max_cycles=MAX_CYCLES,
                                               quantum=max(QUANTA), reference=True)
    return REFERENCE_RUNS[image, topology]


def check_receiver_parks(run, channel, count, where):
    """The receiver waits with `pause` too: a read of the control word, then parked."""
    receiver = ends(run, channel).get("recv")
    reads = run.watch.control_reads[channel, receiver]
    if reads > CONTROL_READS_PER_MESSAGE * count:
        fail(f"{where}: core {receiver}, the receiver, read control words {reads:,} times for"
             f" {count} messages: {spins('sender')}", run, stop=f"urpc_received core {receiver}")


def check_receiver_rests(run, channel, count, where):
    """A receiver that waits for a message is parked, not running: a delay
    loop between reads of the control word reads it seldom, but runs all the
    while the sender is slow."""
    receiver = ends(run, channel)["recv"]
    reference = reference_run(run.lab_image, run.options["topology"])
    mine = run.system.machine.cores[receiver].stats.instructions
    theirs = reference.system.machine.cores[receiver].stats.instructions
    if mine - theirs > RECEIVER_EXTRA_INSTRUCTIONS_PER_MESSAGE * count:
        fail(f"{where}: core {receiver}, the receiver, ran {mine:,} instructions in"
             f" {run.lab_image}, the reference {theirs:,}: {(mine - theirs) // count:,} more per"
             f" message, more than {RECEIVER_EXTRA_INSTRUCTIONS_PER_MESSAGE}; while no message"
             f" has come it keeps running (a delay loop?) where it should wait with `pause`,"
             f" parked until the sender writes the control word", run,
             stop=f"urpc_received core {receiver}")


def spins(other):
    """What a wait loop that reads a channel line over and over is missing."""
    return (f"its wait loop spins instead of waiting (put a `pause` before each jump back to the"
            f" load: the machine parks a core that pauses until the {other} writes the line)")


def check_ring_fills(run, channel):
    """With a slow receiver the sender gets URPC_SLOTS messages ahead, not fewer."""
    outstanding = most = 0
    for event in run.events:
        if event.get("channel") == channel and event["event"] in ("send", "recv"):
            outstanding += 1 if event["event"] == "send" else -1
            most = max(most, outstanding)
    if 0 < most < URPC_SLOTS:
        for core, count, taken in run.watch.acks.get(channel, []):
            if count < taken:
                fail(f"channel {channel}: core {core} wrote {count} to the ack line when it had"
                     f" taken {taken} messages: the ack line holds the receiver's count, and the"
                     f" sender, believing it, never had more than {most} messages outstanding",
                     run, stop=f"urpc_received core {core} if $rcx == {taken}")
        fail(f"channel {channel} ({describe_cores(run, channel)}): the receiver is slow, but the"
             f" sender never had more than {most} messages outstanding: it may have"
             f" URPC_SLOTS = {URPC_SLOTS} (it waits only while seq - URPC_ACKED >= URPC_SLOTS)",
             run, stop=f"urpc_send_commit {cores(run, channel, 'send')} if $rcx == {most + 1}")


def check_ack_follows_the_copies(run, channel):
    """The receiver writes count c to the ack line only once it has taken c
    messages: the sender may overwrite a slot as soon as it reads the count."""
    for core, count, taken in run.watch.acks.get(channel, []):
        if count > taken:
            fail(f"channel {channel}: core {core} wrote {count} to the ack line when it had taken"
                 f" {taken} messages (urpc_received): acknowledge a message only after its words"
                 f" are copied out, or the sender may overwrite slot {(count - 1) % URPC_SLOTS}"
                 f" while it is being read", run,
                 stop=f"urpc_received core {core} if $rcx == {count}")


def check_only_the_sender_writes_slots(run, channel, where):
    """The receiver reads the slots and never writes them: each write would take
    the line from the sender's cache, and the control words of the next lap
    tell the slots apart already."""
    sender = ends(run, channel).get("send")
    for (on, core), (offset, value) in run.watch.slot_writes.items():
        if on == channel and core != sender:
            fail(f"{where}: core {core} wrote {value:#x} at ring + {offset} (slot"
                 f" {offset // URPC_SLOT_SIZE}): only the sender writes the slots; the receiver's"
                 f" only store to the ring is its count, to the ack line", run,
                 stop=f"urpc_received core {core}")


def check_each_message_in_its_slot(run, channel, count, where):
    """After the run each slot holds the last message that went into it: message
    n in slot n mod URPC_SLOTS, as every other end of a channel expects
    (kernel/urpc.py, the channel observer, the debugger's `msgs`)."""
    memory = run.system.machine.memory
    ring = channel_address(channel)
    for slot in range(min(count, URPC_SLOTS)):
        last = slot + (count - 1 - slot) // URPC_SLOTS * URPC_SLOTS
        control = memory.read_u64(ring + slot * URPC_SLOT_SIZE + URPC_CONTROL)
        if control != last + 1:
            fail(f"{where}: after {count} messages slot {slot} holds control word {control},"
                 f" not {last + 1} (message {last}'s): message n goes into slot n mod"
                 f" URPC_SLOTS, the layout the other ends of a channel rely on", run,
                 stop=f"urpc_send_commit {cores(run, channel, 'send')}")


def check_finished(run):
    """Each test program said it finished, and the machine ended cleanly."""
    said = program_complaint(run)
    if said:
        fail(said, run)
    if not run.clean:
        fail(f"the run did not end cleanly: {why_stuck(run)}", run)


def program_complaint(run):
    """What the first test program that found something wrong printed ("core C: ..."),
    or None: a wrong word, or a register your routine changed (checked_stream.S)."""
    for core, line in run.console:
        if line.startswith("checked:"):
            return f"core {core}: {line[len('checked: '):].strip()}"
    return None


def diagnose(run, channel, n, k, word):
    """What a wrong word tells about the mistake, as a parenthesis."""
    owner = (word & 0xFFFF_FFFF) // 0x10000 - 1
    if owner >= 0 and word == sent_word(owner, k) & 0xFFFF_FFFF:
        return (f": the low half of message {owner}'s word {k}, its high half lost: a payload"
                f" word is 8 bytes, and a routine that moves 4 of them loses the rest")
    late = stored_after_control(run, channel)
    said = run.watch.taken_when.get((channel, n))
    if word == 0:
        if late and said == n + 1:
            return (f": the slot was empty; the receiver saw the control word say {n + 1} before"
                    f" the payload was complete (store the control word last: {late})")
        if not late:
            return (": the slot was empty; the sender stored every payload word before the"
                    f" control word, so the receiver took message {n} before the control word"
                    f" said {n + 1} (read the control word first, and copy only once it says"
                    f" {n + 1})")
        return (": the slot was empty; was the message taken before its control word said so,"
                " or was the control word stored before the payload?")
    if word == sent_word(owner, k) and owner == n - URPC_SLOTS and said not in (None, n + 1):
        whose = f"message {said - 1}'s" if said else "an empty slot's"
        return (f": that is message {owner}'s, the slot's previous message; the receiver took"
                f" message {n} when the slot's control word said {said} ({whose}): copy only"
                f" once it says exactly {n + 1}; any other value is an old or empty slot")
    if word == sent_word(owner, k) and owner == n - URPC_SLOTS:
        if not late:
            return (f": that is message {owner}'s, the slot's previous message; the sender stored"
                    f" every payload word before the control word, so the receiver read word {k}"
                    f" before the control word said {n + 1} (read the control word first, and"
                    f" copy only once it says {n + 1})")
        return (f": that is message {owner}'s, the slot's previous message; the receiver saw the"
                f" control word before the payload was complete (store the control word last:"
                f" {late})")
    if word == sent_word(owner, k) and owner == n + URPC_SLOTS:
        return (f": that is message {owner}'s, the slot's next message: the sender wrote into"
                f" slot {n % URPC_SLOTS} before message {n} was taken")
    if word == sent_word(owner, k) and owner == n - 1:
        return f": that is message {owner}'s, still in the buffer; was word {k} copied out?"
    return ""


def stored_after_control(run, channel):
    """Where the sender stored a payload word after the control word, or None."""
    late = late_payload(run, channel)
    return late and late["text"]


def late_payload(run, channel):
    """The channel observer's first report (kernel/channel_observer.py) of a
    payload word stored after its control word, or None."""
    for event in run.events:
        if (event["event"] == "violation" and event["kind"] == "payload_after_control"
                and event["channel"] == channel):
            return event
    return None


def why_stuck(run):
    """The run's end in the student's words: which core waits or spins where, on what."""
    unfinished = run.diagnosis()
    killed = f"{run.killed()}; " if run.killed() else ""
    if run.clean or not unfinished:
        return killed + run.result.reason
    if run.result.reason.startswith("cycle budget"):
        return killed + f"after {MAX_CYCLES:,} cycles " + "; ".join(unfinished)
    return killed + "; ".join(unfinished) + ", and no core will write what they poll"


def ends(run, channel):
    """{"send": core, "recv": core} of a channel, from the image's module lines."""
    found = {}
    for entry in run.system.image.modules:
        options = entry.options
        if options.get("channel") == str(channel) and "role" in options:
            found["send" if options["role"] == "0" else "recv"] = int(options["core"])
    return found


def cores(run, channel, kind="recv"):
    """`core N` of the channel's receiver (or sender), for a breakpoint."""
    return f"core {ends(run, channel).get(kind, 0)}"


def describe_cores(run, channel):
    found = ends(run, channel)
    return f"core {found.get('send', '?')} -> core {found.get('recv', '?')}"


def latency(run, core):
    """One-way latency measured by urpc_pingpong.S's pinger on `core`: half a round trip.
    The program prints its one line at its end; a line printed by anyone
    else (urpc.S may print) is not its measurement."""
    rounds = next(int(entry.options["rounds"]) for entry in run.system.image.modules
                  if entry.options.get("core") == str(core))
    said = [line.strip() for on, line in run.console if on == core and "pingpong rounds" in line]
    if not said:
        fail(f"the ping-pong on core {core} never finished: {why_stuck(run)}", run)
    measured = PINGPONG_LINE.fullmatch(said[-1])
    if len(said) > 1 or not measured or int(measured[1]) != rounds:
        more = f" and {len(said) - 1} more such line(s)" if len(said) > 1 else ""
        fail(f"core {core} printed {said[0]!r}{more}: the ping-pong prints one line,"
             f" 'pingpong rounds {rounds} cycles C', when it ends; your urpc.S prints nothing",
             run)
    cycles = int(measured[2])
    check_measured_span(run, core, rounds, cycles)
    return cycles / (2 * rounds)


def check_measured_span(run, core, rounds, cycles):
    """The pinger's clock ran at least from its first measured send to its
    last receive, as the tracepoints saw them: a measurement shorter than
    that was not taken by the clock (the pinger keeps its start in r13)."""
    warmup = next(int(entry.options["warmup"]) for entry in run.system.image.modules
                  if entry.options.get("core") == str(core))
    sends = [e["time"] for e in run.events if e["event"] == "send" and e["core"] == core]
    takes = [e["time"] for e in run.events if e["event"] == "recv" and e["core"] == core]
    if len(sends) != warmup + rounds or len(takes) != warmup + rounds:
        return                  # the messages' tests say what went wrong
    span = takes[-1] - sends[warmup]
    if cycles < span:
        fail(f"core {core}'s ping-pong printed {cycles:,} cycles for {rounds} round trips, but"
             f" its first measured send and its last receive were {span:,} cycles apart: did"
             f" urpc_send or urpc_recv change r13, which it must keep?", run)


PINGPONG_LINE = re.compile(r"pingpong rounds (\d+) cycles (\d+)")


def lines_moved(run, channel):
    """Cache-line transfers between cores on a channel's page (slots and ack line)."""
    directory = run.system.machine.cost.directory
    ring = channel_address(channel)
    return sum(directory.line_stats(line)["transfers"]
               for line in range(ring, ring + URPC_ACK + URPC_SLOT_SIZE, 64))
