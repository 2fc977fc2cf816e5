"""The channel observer (kernel/channel_observer.py): messages seen in the
machine's loads and stores, without the library's labels, and the channel
protocol's violations flagged on the first run, whatever the schedule."""

import json
import subprocess
from types import SimpleNamespace

import pytest

from emulator import sources
from kernel.boot import boot_image
from kernel.channel_observer import ChannelObserver
from kernel.tracepoints import install_message_tracepoints
from sprat.cli import main
from tests.conftest import ROOT

# A sender and a receiver that speak the channel convention with no library:
# no urpc_send_commit, no urpc_received. Word k of message n is 8n + k.
HAND_WRITTEN = f"""
ROLE = 0
CHANNEL = 5
COUNT = 10

start:
    mov rbx, USER_CHANNELS + CHANNEL * 4096
    xor r12d, r12d
    mov rax, ROLE
    test rax, rax
    jnz take
give:
    mov rdx, r12                      # the slot: ring + (n mod 16) * 64
    and rdx, 15
    shl rdx, 6
    add rdx, rbx
    xor ecx, ecx
give_word:
    lea rax, [rcx + r12 * 8]
    mov qword ptr [rdx + rcx * 8], rax
    inc ecx
    cmp ecx, 7
    jb give_word
    lea rax, [r12 + 1]
hand_publish:
    mov qword ptr [rdx + 56], rax     # the control word, last
    inc r12
    cmp r12, COUNT
    jb give
    xor edi, edi
    call exit
take:
    mov rdx, r12
    and rdx, 15
    shl rdx, 6
    add rdx, rbx
    lea rax, [r12 + 1]
take_poll:
    cmp qword ptr [rdx + 56], rax
    je take_read
    pause
    jmp take_poll
take_read:
    xor ecx, ecx
take_word:
    mov rax, qword ptr [rdx + rcx * 8]
    lea r8, [rcx + r12 * 8]
    cmp rax, r8
    jne take_wrong
    inc ecx
    cmp ecx, 7
    jb take_word
    inc r12
    cmp r12, COUNT
    jb take
    xor edi, edi
    call exit
take_wrong:
    mov edi, 1
    call exit

.include "{ROOT}/userland/lib/sprat.S"
"""

PUBLISH = HAND_WRITTEN.splitlines().index("hand_publish:") + 2     # the store after the label

STREAM = """kernel /cpudriver/cpudriver.S
module /userland/urpc_stream.S core=0 role=0 channel=3 count=40
module /userland/urpc_stream.S core=1 role=1 channel=3 count=40
"""


def run(image, quantum=10_000, cores=2):
    system = boot_image(image, cores=cores, quantum=quantum)
    events = []
    system.machine.observers.append(lambda event, **fields: events.append({"event": event,
                                                                            **fields}))
    observer = install_message_tracepoints(system)
    result = system.machine.run(max_cycles=10**7)
    return system, result, events, observer


@pytest.fixture
def hand_written(tmp_path):
    (tmp_path / "hand.S").write_text(HAND_WRITTEN)
    image = tmp_path / "hand.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     "module hand.S core=0 role=0\n"
                     "module hand.S core=1 role=1\n")
    return image


@pytest.fixture
def control_word_first(tmp_path):
    """A workspace whose urpc.S is lab 5's recorded wrong solution: the control
    word stored before the payload."""
    (tmp_path / "userland/lib").mkdir(parents=True)
    (tmp_path / "userland/lib/urpc.S").write_text((ROOT / "userland/lib/urpc.S").read_text())
    diff = ROOT / "labs/05-urpc/wrong/control_word_first.diff"
    subprocess.run(["patch", "-s", "-p1", "-d", str(tmp_path), "-i", str(diff)], check=True)
    image = tmp_path / "stream.lst"
    image.write_text(STREAM)
    sources.set_workspace(tmp_path)
    yield image
    sources.set_workspace(None)


@pytest.mark.parametrize("quantum", [10_000, 1])
def test_a_send_path_without_the_librarys_labels_is_traced(hand_written, quantum):
    system, result, events, observer = run(hand_written, quantum)
    assert result.clean and system.failures() is None, result.reason
    sends = [e for e in events if e["event"] == "send"]
    receives = [e for e in events if e["event"] == "recv"]
    assert [e["seq"] for e in sends] == list(range(10)), "the hand-written sends were not traced"
    assert [e["seq"] for e in receives] == list(range(10)), "the hand-written receives were not traced"
    for sent, received in zip(sends, receives):
        n = sent["seq"]
        assert sent["words"] == received["words"] == [8 * n + k for k in range(7)]
        assert (sent["core"], received["core"], sent["channel"]) == (0, 1, 5)
        assert sent["slot"] == n % 16 and received["time"] > sent["time"]
        assert sent["place"] == "hand_publish" and sent["line"].endswith(f"hand.S:{PUBLISH}"), sent
    assert observer.violations == [], observer.violations[0]["text"]


def test_library_messages_are_reported_once_named_by_their_labels(tmp_path):
    image = tmp_path / "stream.lst"
    image.write_text(STREAM)
    system, result, events, observer = run(image)
    sends = [e for e in events if e["event"] == "send"]
    receives = [e for e in events if e["event"] == "recv"]
    assert [e["seq"] for e in sends] == list(range(40)) == [e["seq"] for e in receives]
    assert {e["place"] for e in sends} == {"urpc_send_commit"}
    assert observer.violations == []


@pytest.mark.parametrize("quantum", [10_000, 1])
def test_a_control_word_stored_before_its_payload_is_flagged_on_the_first_run(
        control_word_first, quantum):
    system, result, events, observer = run(control_word_first, quantum)
    # The output is right under this schedule: only the observer sees the bug.
    assert result.clean and system.failures() is None, result.reason
    assert observer.violations, f"quantum {quantum}: no violation flagged"
    first = observer.violations[0]
    assert (first["kind"], first["core"], first["channel"], first["slot"], first["seq"]) == \
        ("payload_after_control", 0, 3, 0, 0), first
    line = next(number for number, text in
                enumerate((control_word_first.parent / "userland/lib/urpc.S").read_text()
                          .splitlines(), 1) if "mov qword ptr [rdx], rcx" in text)
    assert first["line"] == f"userland/lib/urpc.S:{line}", first
    assert "core 0, channel 3 slot 0, message 0: payload word 0 stored after" in first["text"]
    assert [e for e in events if e["event"] == "violation"][0] == {"event": "violation", **first}


def test_boot_and_trace_show_violations(control_word_first, tmp_path, capsys):
    trace = tmp_path / "run.trace"
    assert main(["boot", str(control_word_first), "--cores", "2", "--trace", str(trace)]) == 1
    err = capsys.readouterr().err
    assert "sprat: 40 channel protocol violations:" in err
    assert "core 0, channel 3 slot 0, message 0: payload word 0 stored after" in err
    assert "the channel protocol was broken" in err
    kinds = [json.loads(line)["event"] for line in trace.read_text().splitlines()]
    assert kinds.count("violation") == 40
    assert main(["trace", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "channel protocol violations: 40" in out
    assert "  core 0, channel 3 slot 0, message 0: payload word 0" in out


def test_lab_graders_see_violations_in_run_events(control_word_first):
    from sprat.lab.grading import boot
    run = boot(control_word_first, cores=2)
    violations = [e for e in run.events if e["event"] == "violation"]
    assert violations and violations[0]["kind"] == "payload_after_control"


# --- The rules, fed accesses directly ---------------------------------------------------
RING = 7 * 4096                    # channel 7's offset in the channel frames


@pytest.fixture
def observer(tmp_path):
    image = tmp_path / "idle.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule /userland/hello.S\n")
    system = boot_image(image, cores=2)
    watcher = ChannelObserver(system)
    system.machine.memory.write(0x0080_0000 + RING, bytes(4096))
    return watcher


def access(watcher, core, write, offset, value=0):
    fake = SimpleNamespace(id=core, rip=0, now=lambda: 0)
    if write:
        watcher.machine.memory.write_u64(0x0080_0000 + RING + offset, value)
    else:                               # the machine reports what the load reads
        value = watcher.machine.memory.read_u64(0x0080_0000 + RING + offset)
    watcher.on_access(fake, write, 0x0080_0000 + RING + offset, 8, value)


def send(watcher, n, core=0):
    slot = (n % 16) * 64
    for k in range(7):
        access(watcher, core, True, slot + 8 * k, n)
    access(watcher, core, True, slot + 56, n + 1)


def receive(watcher, n, core=1):
    slot = (n % 16) * 64
    access(watcher, core, False, slot + 56)
    for k in range(7):
        access(watcher, core, False, slot + 8 * k)


def kinds(watcher):
    return [(v["kind"], v["seq"]) for v in watcher.violations]


def test_a_correct_exchange_with_acks_every_half_ring_is_no_violation(observer):
    for n in range(40):
        send(observer, n)
        receive(observer, n)
        if (n + 1) % 8 == 0:
            access(observer, 1, True, 1024, n + 1)
    assert kinds(observer) == []


def test_a_slot_written_before_its_message_was_acknowledged_is_flagged(observer):
    for n in range(16):
        send(observer, n)
    receive(observer, 0)
    send(observer, 16)                  # slot 0 again, message 0 never acknowledged
    assert kinds(observer) == [("slot_reused", 16)]
    assert "message 0 was still in it, unacknowledged (the ack line said 0)" in \
        observer.violations[0]["text"]


def test_an_acknowledgement_ahead_of_the_messages_consumed_is_flagged(observer):
    for n in range(8):
        send(observer, n)
    for n in range(4):
        receive(observer, n)
    access(observer, 1, True, 1024, 8)  # acknowledges 8, 4 seen
    assert kinds(observer) == [("ack_ahead", 7)]
    assert "the ack line set to 8, but receivers have seen 4" in observer.violations[0]["text"]


def test_plain_shared_memory_in_a_channel_page_is_not_a_ring(observer):
    for value in range(1, 40):          # counters, flags: never control word 1 in slot 0 first
        access(observer, value % 2, True, 56 + 64 * (value % 16), value * 3)
        access(observer, 0, True, 8 * (value % 7), value)
    assert kinds(observer) == [] and observer.rings == {}
