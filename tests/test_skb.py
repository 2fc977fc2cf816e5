"""The SKB: latencies the monitors measure at boot, and the routing trees built from them."""

import pytest

from emulator.interconnect import load_topology
from kernel.skb import PROTOCOLS, SystemKnowledgeBase, covered

from conftest import ROOT

AMD_8X4 = load_topology("amd-8x4")


def modeled_skb(topology=AMD_8X4):
    """An SKB whose round trips are four line transfers, as a URPC round trip roughly is."""
    n = topology.n_cores()
    return SystemKnowledgeBase(topology, {(a, b): 4 * topology.transfer_cycles(a, b)
                                          for a in range(n) for b in range(n) if a != b})


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("root", [0, 13])
def test_routing_tree_covers_each_core_exactly_once(protocol, root):
    skb = modeled_skb()
    for n in range(1, 33):
        cores = set(range(n)) | {root}
        reached = covered(skb.route(protocol, cores, root))
        assert sorted(reached) == sorted(cores - {root}), \
            f"{protocol} from core {root} over {n} cores reaches {sorted(reached)}"


@pytest.mark.parametrize("protocol", ["multicast", "numa-multicast"])
def test_multicast_sends_one_message_per_other_package(protocol):
    skb = modeled_skb()
    routes = skb.route(protocol, range(32))
    remote = [r for r in routes if AMD_8X4.package_of(r.child) != 0]
    assert sorted(AMD_8X4.package_of(r.child) for r in remote) == list(range(1, 8))
    for route in remote:
        package = AMD_8X4.package_of(route.child)
        assert {AMD_8X4.package_of(core) for core in route.forwards} <= {package}, \
            f"the aggregator of package {package} forwards outside it: {route}"


def test_numa_multicast_serves_its_own_package_first_then_the_nearest_packages():
    # The initiator reads the acknowledgements in route order: first what
    # arrives first (sprat/bench/tlb.py).
    skb = modeled_skb()
    routes = skb.route("numa-multicast", range(32))
    remote = [skb.latency(0, r.child) for r in routes[1:]]
    assert remote == sorted(remote), f"not nearest first: {routes}"
    assert AMD_8X4.package_of(routes[0].child) == 0 and len(routes[0].forwards) == 2


def test_numa_multicast_on_one_package_is_plain_multicast():
    skb = modeled_skb()
    assert skb.route("numa-multicast", range(4)) == skb.route("multicast", range(4))


def test_monitors_measure_latencies_at_boot_that_follow_the_topology():
    from sprat.bench.tlb import MODE_TLB, run_shootdowns
    topology = load_topology("amd-4x4")
    booted = []
    n = topology.n_cores()
    run_shootdowns(topology, MODE_TLB, [n], ["unicast"], booted_system=booted.append,
                   runs=1)
    skb = booted[0].skb
    assert skb is not None, "monitor 0 never asked the SKB"
    assert set(skb.round_trips) == {(a, b) for a in range(n) for b in range(n) if a != b}
    # What the model charges a round trip between two cores over a channel
    # homed where the measuring channels are (a transfer is a probe round
    # from the line's home, protocol.py).
    from cpudriver.layout import CHANNELS_PHYS
    from emulator.interconnect.coherence import CoherenceDirectory
    from emulator.machine import DEFAULT_MEMORY
    home = CoherenceDirectory(topology, memory_size=DEFAULT_MEMORY).home(CHANNELS_PHYS)
    fetch = topology.costs.fetch[home]
    modeled = {(a, b): fetch[a][b] + fetch[b][a] for a, b in skb.round_trips}
    for (a, b), cycles in skb.round_trips.items():
        assert cycles == skb.round_trips[(b, a)]
        for (c, d), other in skb.round_trips.items():
            if modeled[(a, b)] < modeled[(c, d)]:
                assert cycles < other, (f"cores {a}-{b} ({topology.relation(a, b)}) measured "
                                        f"{cycles}, {c}-{d} ({topology.relation(c, d)}) {other}")



def boot_shootdowns_with_tree(monkeypatch, tree):
    """The shootdown demo on amd-2x2, with `tree` as the SKB's NUMA-aware tree."""
    from kernel.boot import boot_image
    monkeypatch.setattr(SystemKnowledgeBase, "_numa_multicast", tree)
    lines = []
    system = boot_image(ROOT / "images" / "shootdown.lst", cores=4,
                        topology=load_topology("amd-2x2"),
                        output=lambda core, line: lines.append(line))
    return system.machine.run(max_cycles=10**7), lines


def test_an_unwritten_tree_has_no_routes_and_the_other_protocols_still_run(monkeypatch):
    # A lab's skeleton (labs/08-shootdown): its monitors must still serve
    # the protocols whose trees are there.
    def unwritten(self, cores, root):
        raise NotImplementedError("the NUMA-aware tree is not written yet")
    result, lines = boot_shootdowns_with_tree(monkeypatch, unwritten)
    assert result.clean, result.reason
    acked = {line.split()[2]: line.split()[8] for line in lines
             if line.startswith("shootdown protocol") and " cores 4 " in line}
    assert acked == {"0": "4", "1": "4", "2": "4", "3": "1"}, lines


def test_a_tree_that_fails_stops_monitor_0s_core_with_the_reason(monkeypatch):
    def broken(self, cores, root):
        return {}[root]
    result, _ = boot_shootdowns_with_tree(monkeypatch, broken)
    assert not result.clean
    assert "the SKB failed: KeyError: 0" in result.reason, result.reason
