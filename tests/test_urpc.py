"""URPC channels: the protocol, the guest's send and receive paths, their cost.

The guest library (userland/lib/urpc.S) and the host mirror (kernel/urpc.py)
speak one protocol over the same shared frames; these tests hold both to it.
"""

import re

import pytest
from hypothesis import given, settings, strategies as st

import kernel.urpc as urpc
from emulator.memory import PhysicalMemory
from tests.conftest import ROOT, boot_and_run

URPC_SOURCE = ROOT / "userland" / "lib" / "urpc.S"


def stream_image(tmp_path, count, channel=5, cores=(0, 1), extra=""):
    image = tmp_path / "stream.lst"
    sender, receiver = cores
    image.write_text(
        "kernel /cpudriver/cpudriver.S\n"
        f"module /userland/urpc_stream.S core={sender} role=0 channel={channel} count={count}\n"
        f"module /userland/urpc_stream.S core={receiver} role=1 channel={channel} count={count}\n"
        + extra)
    return image


def pingpong_image(tmp_path, a=0, b=1, rounds=50, warmup=None):
    image = tmp_path / "pingpong.lst"
    extra = "" if warmup is None else f" warmup={warmup}"      # None: the program's own
    image.write_text(
        "kernel /cpudriver/cpudriver.S\n"
        f"module /userland/urpc_pingpong.S core={a} role=0 send=0 recv=1 rounds={rounds}{extra}\n"
        f"module /userland/urpc_pingpong.S core={b} role=1 send=1 recv=0 rounds={rounds}{extra}\n")
    return image


def reported(run, core, pattern):
    for line in run.output(core):
        match = re.fullmatch(pattern, line)
        if match:
            return [int(group) for group in match.groups()]
    raise AssertionError(f"core {core} never printed {pattern!r}: {run.output(core)}")


def test_host_and_guest_agree_on_the_channel_layout():
    source = URPC_SOURCE.read_text()
    for name in ("URPC_SLOTS", "URPC_SLOT_SIZE", "URPC_PAYLOAD_WORDS", "URPC_CONTROL", "URPC_ACK"):
        value = re.search(rf"^{name} = (\w+)", source, re.MULTILINE).group(1)
        assert int(value, 0) == getattr(urpc, name), f"{name} differs between urpc.S and urpc.py"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["send", "receive"]), min_size=1, max_size=300))
def test_host_protocol_never_loses_duplicates_or_overwrites(operations):
    memory = PhysicalMemory(64 << 20)
    ring = urpc.channel_address(7)
    sender, receiver = urpc.UrpcSender(memory, ring), urpc.UrpcReceiver(memory, ring)
    sent, received = [], []
    for operation in operations:
        if operation == "send":
            message = [len(sent) * 10 + k for k in range(7)]
            if sender.try_send(message):
                sent.append(message)
            else:
                assert len(sent) - len(received) >= urpc.URPC_SLOTS // 2, \
                    "the sender refused while the ring had room"
        else:
            message = receiver.try_receive()
            if message is not None:
                received.append(message)
        assert len(sent) - len(received) <= urpc.URPC_SLOTS, "more in flight than the ring holds"
    while (message := receiver.try_receive()) is not None:
        received.append(message)
    assert received == sent


def test_guest_stream_wraps_the_ring_many_times_and_checks_every_message(tmp_path):
    run = boot_and_run(stream_image(tmp_path, count=200), cores=2)
    assert run.result.clean, run.result.reason
    messages, cycles = reported(run, 1, r"stream messages (\d+) cycles (\d+)")
    assert messages == 200 and cycles > 0


def test_a_full_ring_blocks_the_sender_instead_of_overwriting(tmp_path):
    # The receiver starts late, so the sender fills the ring and must wait
    # on the ack line: the receiver still sees every message intact, in order.
    image = tmp_path / "late.lst"
    image.write_text(
        "kernel /cpudriver/cpudriver.S\n"
        "module /userland/urpc_stream.S core=0 role=0 channel=2 count=64\n"
        "module /userland/urpc_stream.S core=1 role=1 channel=2 count=64 delay=50000\n")
    run = boot_and_run(image, cores=2)
    assert run.result.clean, run.result.reason
    assert reported(run, 1, r"stream messages (\d+) cycles (\d+)")[0] == 64
    assert run.machine.cost.directory.transfers[0] > 0, "the sender never read the ack line"


@settings(max_examples=8, deadline=None)
@given(st.integers(min_value=50, max_value=20000), st.integers(min_value=1, max_value=120))
def test_messages_arrive_whole_and_in_order_for_any_quantum(tmp_path_factory, quantum, count):
    image = stream_image(tmp_path_factory.mktemp("q"), count=count)
    run = boot_and_run(image, cores=2, quantum=quantum)
    assert run.result.clean, run.result.reason
    assert reported(run, 1, r"stream messages (\d+) cycles (\d+)")[0] == count


@pytest.mark.parametrize("timing", ["fast", "detailed"])
@pytest.mark.parametrize("machine, a, b", [("amd-4x4", 0, 5), ("intel-2x4", 0, 1),
                                           ("intel-2x4", 2, 4)])
def test_latency_does_not_depend_on_the_scheduler_quantum(tmp_path, timing, machine, a, b):
    # At quanta down to one instruction the receiver must not take the line
    # back between the sender's stores: two packages apart on amd-4x4
    # (issue 15 measured 268,097 against 751,297 cycles), and on intel-2x4
    # a pair sharing an L2, whose transfer is shorter than the sender's
    # stores (fast timing: 31,986 cycles for 40 rounds at quantum 1, 20,331
    # at 100, once), and a pair on two dies. Fast timing by causality,
    # detailed by the order of the clocks.
    from emulator.interconnect import load_topology
    from kernel.boot import boot_image
    topology = load_topology(machine)
    image = pingpong_image(tmp_path, a=a, b=b, rounds=30, warmup=8)   # as lab 5's
    latencies = {}
    for quantum in (1, 7, 50, 1_000, 10_000):
        lines = []
        system = boot_image(image, cores=topology.n_cores(), topology=topology, quantum=quantum,
                            output=lambda core, line: lines.append(line), timing=timing)
        assert system.machine.run(max_cycles=10**8).clean
        latencies[quantum] = [line for line in lines if line.startswith("pingpong")]
    assert len({tuple(found) for found in latencies.values()}) == 1, \
        f"the round trip's modeled cycles differ by quantum: {latencies}"


def test_same_run_twice_same_cycles(tmp_path):
    image = stream_image(tmp_path, count=100)
    first = boot_and_run(image, cores=2)
    second = boot_and_run(image, cores=2)
    assert first.lines == second.lines
    assert [c.cycles for c in first.machine.cores] == [c.cycles for c in second.machine.cores]


def test_a_waiting_receiver_costs_the_host_almost_nothing(tmp_path):
    # The receiver waits for a long computation on the sender's core; parked,
    # it must not spin through millions of poll instructions.
    image = tmp_path / "slow.lst"
    image.write_text(
        "kernel /cpudriver/cpudriver.S\n"
        "module /userland/urpc_stream.S core=0 role=0 channel=4 count=1 delay=2000000\n"
        "module /userland/urpc_stream.S core=1 role=1 channel=4 count=1\n")
    run = boot_and_run(image, cores=2, max_cycles=10**8)
    assert run.result.clean, run.result.reason
    receiver = run.machine.cores[1]
    assert receiver.stats.instructions < 100_000
    assert receiver.cycles > 2_000_000, "the receiver's clock must move to the message's arrival"


def test_on_an_opteron_a_message_costs_about_the_same_whichever_socket_the_partner_is_on(
        tmp_path):
    # No probe filter: every transfer waits for the probe responses of all
    # 8 packages, so the partner's distance changes little (protocol.py).
    from emulator.interconnect import load_topology
    from kernel.boot import boot_image
    topology = load_topology("amd-8x4")
    pairs = {}
    for b in range(1, topology.n_cores()):
        pairs.setdefault(topology.relation(0, b), b)
    costs = {}
    for relation, b in pairs.items():
        image = pingpong_image(tmp_path, 0, b)
        lines = []
        system = boot_image(image, cores=topology.n_cores(), topology=topology,
                            output=lambda core, line: lines.append(line))
        assert system.machine.run(max_cycles=10**8).clean
        costs[relation] = int(next(l for l in lines if l.startswith("pingpong")).split()[-1])
    assert set(costs) == {"shared-cache", "1-hop", "2-hop", "3-hop"}, costs
    # A partner 3 hops away lengthens the probe rounds and the data's path
    # (package 0 is 3 hops from 3, 4 and 5): still within a fifth.
    assert max(costs.values()) < 1.2 * min(costs.values()), (
        f"ping-pong cycles by the partner's distance should be within 20%: {costs}")
