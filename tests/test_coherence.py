"""The coherence directory: MOESI transitions, charging by distance, causality, counters."""


import pytest
from hypothesis import given, settings, strategies as st

from emulator.interconnect.coherence import LINE_SIZE, CoherenceDirectory
from emulator.interconnect.topology import load_topology

PRESETS = ["amd-2x2", "amd-4x4", "amd-8x4", "intel-2x4"]
LINE = 0x5000
LATER = 1_000_000        # a clock far past every earlier write: no causality wait


def directory(name="amd-8x4"):
    return CoherenceDirectory(load_topology(name))


def states(d, cores, addr=LINE):
    return "".join(d.state(core, addr) for core in cores)


# -- MOESI transitions --

def test_first_read_fills_from_memory_exclusive():
    d = directory()
    cycles = d.read(0, LINE, now=0)
    assert cycles == d.topology.memory
    assert d.state(0, LINE) == "E"
    assert d.core_stats(0)["memory_fills"] == 1


def test_second_reader_gets_the_line_from_the_exclusive_holder_and_both_share():
    d = directory()
    d.read(0, LINE, now=0)
    cycles = d.read(1, LINE, now=LATER)
    assert cycles == d.topology.transfer_cycles(1, 0)
    assert states(d, [0, 1]) == "SS"


def test_write_to_exclusive_line_is_a_silent_hit():
    d = directory()
    d.read(0, LINE, now=0)
    assert d.write(0, LINE, now=LATER) == d.topology.l1_hit
    assert d.state(0, LINE) == "M"
    assert d.core_stats(0)["invalidations"] == 0


def test_reading_a_modified_line_leaves_the_writer_owning_it():
    d = directory()
    d.write(0, LINE, now=0)
    assert d.state(0, LINE) == "M"
    d.read(4, LINE, now=LATER)
    assert states(d, [0, 4]) == "OS"
    d.read(8, LINE, now=LATER)
    assert states(d, [0, 4, 8]) == "OSS"


def test_owner_writing_again_invalidates_every_sharer():
    d = directory()
    d.write(0, LINE, now=0)
    d.read(4, LINE, now=LATER)
    d.read(8, LINE, now=LATER)
    d.write(0, LINE, now=2 * LATER)
    assert states(d, [0, 4, 8]) == "MII"
    assert d.core_stats(0)["invalidations"] == 2


def test_sharer_writing_takes_ownership_from_the_owner():
    d = directory()
    d.write(0, LINE, now=0)
    d.read(4, LINE, now=LATER)
    d.write(4, LINE, now=2 * LATER)
    assert states(d, [0, 4]) == "IM"


def test_write_miss_takes_the_line_from_the_modified_holder():
    d = directory()
    d.write(0, LINE, now=0)
    cycles = d.write(8, LINE, now=LATER)
    assert cycles == d.topology.transfer_cycles(8, 0)
    assert states(d, [0, 8]) == "IM"
    assert d.core_stats(8)["transfers"] == 1
    assert d.core_stats(8)["invalidations"] == 1


def test_reads_and_writes_of_one_core_hit_after_the_first():
    d = directory()
    d.write(3, LINE, now=0)
    for step in range(5):
        assert d.read(3, LINE + 8, now=LATER + step) == d.topology.l1_hit
        assert d.write(3, LINE + 56, now=LATER + step) == d.topology.l1_hit
    assert d.core_stats(3)["hits"] == 10


def test_lines_are_64_bytes_apart():
    d = directory()
    d.write(0, LINE, now=0)
    assert d.state(0, LINE + LINE_SIZE - 1) == "M"
    assert d.state(0, LINE + LINE_SIZE) == "I"


def test_shared_clean_line_comes_from_the_nearest_copy():
    d = directory("intel-2x4")
    topo = d.topology
    d.read(0, LINE, now=0)                       # E in core 0
    d.read(2, LINE, now=LATER)                   # other die: both S now
    cycles = d.read(1, LINE, now=LATER)          # core 1 shares core 0's L2
    assert cycles == topo.transfer_cycles(1, 0) == topo.shared_cache_transfer
    assert states(d, [0, 1, 2]) == "SSS"


def test_memory_is_used_when_every_copy_is_farther_than_memory():
    d = directory("intel-2x4")
    d.read(0, LINE, now=0)
    d.read(1, LINE, now=LATER)                   # S in 0 and 1, no owner
    cycles = d.read(4, LINE, now=LATER)          # other socket: 350 > memory 306
    assert cycles == d.topology.memory
    assert d.core_stats(4)["memory_fills"] == 1


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 7), st.booleans()), min_size=1, max_size=40))
def test_moesi_invariants_hold_for_any_access_sequence(accesses):
    d = directory("intel-2x4")
    now = 0
    for core, is_write in accesses:
        now += d.access(core, LINE, is_write, now)
        row = states(d, range(8))
        owners = [s for s in row if s in "MOE"]
        assert len(owners) <= 1, f"two owners in {row}"
        if "M" in row or "E" in row:
            assert row.count("I") == 7, f"M/E must be the only copy: {row}"
        assert d.state(core, LINE) != "I", "the accessing core must hold the line"
        if is_write:
            assert d.state(core, LINE) == "M"


# -- charging by distance --

def transfer_cost(name, reader, writer):
    """Cycles for `reader` to read a line just written by `writer`."""
    d = directory(name)
    d.write(writer, LINE, now=0)
    return d.read(reader, LINE, now=LATER)


def first_core_at(topo, relation):
    return next((b for b in range(topo.n_cores()) if topo.relation(0, b) == relation), None)


@pytest.mark.parametrize("name", PRESETS)
def test_farther_holders_cost_more_on_every_preset(name):
    topo = load_topology(name)
    order = ["same-core", "shared-cache", "same-package", "1-hop", "2-hop"]
    costs = []
    for relation in order:
        holder = first_core_at(topo, relation)
        if holder is not None:
            cost = transfer_cost(name, 0, holder)
            assert cost == topo.transfer_cycles(0, holder)
            costs.append((relation, cost))
    assert len(costs) >= 3
    for (near, near_cost), (far, far_cost) in zip(costs, costs[1:]):
        assert far_cost > near_cost, (
            f"{name}: reading from a {far} holder ({far_cost} cycles) should cost more "
            f"than from a {near} holder ({near_cost} cycles)")


def test_two_hops_cost_more_than_one_hop_on_the_8x4():
    assert transfer_cost("amd-8x4", 0, 8) > transfer_cost("amd-8x4", 0, 4) > \
        transfer_cost("amd-8x4", 0, 1) > transfer_cost("amd-8x4", 0, 0)


def test_invalidation_waits_for_the_farthest_sharer():
    d = directory("amd-8x4")
    topo = d.topology
    d.write(0, LINE, now=0)
    for reader in (1, 4, 8):                     # shared cache, 1 hop, 2 hops
        d.read(reader, LINE, now=LATER)
    cycles = d.write(0, LINE, now=2 * LATER)
    assert cycles == topo.transfer_cycles(0, 8)  # not the sum: in parallel


def test_invalidating_only_a_cache_neighbour_costs_a_shared_cache_transfer():
    d = directory("amd-8x4")
    d.write(0, LINE, now=0)
    d.read(1, LINE, now=LATER)
    assert d.write(0, LINE, now=2 * LATER) == d.topology.shared_cache_transfer


# -- causality --

def test_reader_behind_the_writer_waits_until_the_write_has_travelled():
    d = directory("amd-8x4")
    topo = d.topology
    write_cycles = d.write(8, LINE, now=5000)
    written_at = 5000 + write_cycles
    cycles = d.read(0, LINE, now=100)            # reader's clock is far behind
    assert 100 + cycles == written_at + topo.transfer_cycles(0, 8)
    # Without causality it would cost one transfer; the rest is waiting.
    assert d.core_stats(0)["waits"] == cycles - topo.transfer_cycles(0, 8)


@given(reader_now=st.integers(0, 20_000), write_now=st.integers(0, 20_000),
       reader=st.integers(0, 31), writer=st.integers(0, 31))
def test_the_reader_sees_the_data_at_the_same_modeled_time_whatever_its_clock(
        reader_now, write_now, reader, writer):
    if reader == writer:
        return
    d = directory("amd-8x4")
    written_at = write_now + d.write(writer, LINE, now=write_now)
    done = reader_now + d.read(reader, LINE, now=reader_now)
    transfer = d.topology.transfer_cycles(reader, writer)
    assert done == max(reader_now + transfer, written_at + transfer)


def test_a_core_never_waits_for_its_own_writes():
    d = directory()
    d.write(0, LINE, now=10_000)
    assert d.read(0, LINE, now=0) == d.topology.l1_hit
    assert d.core_stats(0)["waits"] == 0


# -- counters --

def test_counters_per_core_and_per_line():
    d = directory("amd-4x4")
    d.write(0, LINE, now=0)                      # memory fill
    d.write(0, LINE, now=LATER)                  # hit
    d.read(5, LINE, now=LATER)                   # transfer (1 hop)
    d.read(6, LINE, now=LATER)                   # transfer from the owner
    d.write(0, LINE, now=2 * LATER)              # invalidates 5 and 6
    d.read(0, LINE + LINE_SIZE, now=2 * LATER)   # another line: memory fill
    assert d.core_stats(0) == {"hits": 1, "transfers": 0, "memory_fills": 2,
                               "invalidations": 2, "waits": 0}
    assert d.core_stats(5)["transfers"] == 1
    assert d.line_stats(LINE) == {"hits": 1, "transfers": 2, "memory_fills": 1,
                                  "invalidations": 2}
    assert d.line_stats(LINE + LINE_SIZE)["memory_fills"] == 1
    assert d.tracked_lines() == [LINE, LINE + LINE_SIZE]


def test_untouched_line_has_zero_counters_and_no_copies():
    d = directory()
    assert d.line_stats(0x9000) == {"hits": 0, "transfers": 0, "memory_fills": 0,
                                    "invalidations": 0}
    assert d.state(0, 0x9000) == "I"
