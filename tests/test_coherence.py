"""The coherence directory: MOESI transitions, charging by each family's path, causality,
counters, the ordering points (a line's, and the Intel bus)."""


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
    assert cycles == d.transfer(1, 0, LINE)
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
    assert cycles == d.transfer(8, 0, LINE)
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


def test_shared_clean_line_comes_from_the_l2_of_my_die():
    d = directory("intel-2x4")
    d.read(0, LINE, now=0)                       # E in core 0
    d.read(2, LINE, now=LATER)                   # other die: both S now
    cycles = d.read(1, LINE, now=2 * LATER)      # core 1 shares core 0's L2
    assert cycles == d.transfer(1, 0, LINE) < d.transfer(1, 2, LINE)
    assert states(d, [0, 1, 2]) == "SSS"


def test_clean_copies_on_other_dies_do_not_supply_the_line_memory_does():
    # On the front-side bus only a modified copy (HITM) supplies data.
    d = directory("intel-2x4")
    d.read(0, LINE, now=0)
    d.read(1, LINE, now=LATER)                   # S in 0 and 1, no owner
    cycles = d.read(4, LINE, now=2 * LATER)      # other socket
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


# -- charging by the family's path (protocol.py) --

def transfer_cost(name, reader, writer):
    """Cycles for `reader` to read a line just written by `writer`."""
    d = directory(name)
    d.write(writer, LINE, now=0)
    return d.read(reader, LINE, now=LATER)


def first_core_at(topo, relation):
    return next((b for b in range(topo.n_cores()) if topo.relation(0, b) == relation), None)


def legs(name):
    return load_topology(name).legs_in_cycles()


def test_an_amd_transfer_waits_for_the_last_probe_response():
    # amd-4x4, the line homed at package 0 (the directory's default): core 1
    # reads what core 0 (same die) wrote. The data is on the die, but the
    # home probes every package and the farthest, 2 hops away, answers last.
    leg = legs("amd-4x4")
    assert transfer_cost("amd-4x4", 1, 0) == round(leg["on_chip"] + 4 * leg["ht_hop"])


def test_an_amd_transfer_from_another_socket_adds_the_line_on_the_link():
    # Core 12 (2 hops from the home, package 0) reads what core 0 wrote: the
    # request travels 2 hops, and the data 2 hops back with its serialization.
    leg = legs("amd-4x4")
    assert transfer_cost("amd-4x4", 12, 0) == round(
        leg["on_chip"] + 2 * leg["ht_hop"] + 2 * leg["ht_hop"] + leg["line_on_link"])


@pytest.mark.parametrize("name", ["amd-4x4", "amd-8x4"])
def test_on_amd_the_partners_socket_changes_a_transfer_little(name):
    topo = load_topology(name)
    costs = {relation: transfer_cost(name, 0, first_core_at(topo, relation))
             for relation in ("shared-cache", "1-hop", "2-hop")}
    assert max(costs.values()) < 1.25 * min(costs.values()), (
        f"{name}: a probe broadcast costs about the same whichever socket the partner "
        f"is on, got {costs}")
    assert min(costs.values()) > 3 * topo.l3_hit, (
        f"{name}: a transfer leaves the die (a probe round) and should cost far more than "
        f"an L3 hit, got {costs}")


def test_on_the_bus_leaving_the_die_is_the_big_step():
    topo = load_topology("intel-2x4")
    same_die, other_die, other_socket = (transfer_cost("intel-2x4", 0, holder)
                                         for holder in (1, 2, 4))
    assert same_die < other_die <= other_socket < topo.memory
    leg = topo.legs_in_cycles()
    assert other_die == round(leg["l2_miss"] + leg["bus_transaction"] + leg["snoop_forward"]
                              + leg["hitm_supply"])


def test_an_amd_invalidation_is_one_broadcast_whoever_holds_copies():
    costs = []
    for readers in ((1,), (1, 4, 8, 12)):        # a neighbour; copies up to 3 hops away
        d = directory("amd-8x4")
        d.write(0, LINE, now=0)
        for reader in readers:
            d.read(reader, LINE, now=LATER)
        costs.append(d.write(0, LINE, now=2 * LATER))
    assert costs[0] == costs[1] > 3 * load_topology("amd-8x4").l3_hit, costs


def test_invalidation_on_the_bus_waits_for_the_farthest_sharer():
    d = directory("intel-2x4")
    d.write(0, LINE, now=0)
    d.read(1, LINE, now=LATER)                   # on my die
    on_die = d.write(0, LINE, now=2 * LATER)
    d.read(1, LINE, now=3 * LATER)
    d.read(4, LINE, now=3 * LATER + 1000)        # other socket
    both = d.write(0, LINE, now=4 * LATER)
    assert on_die == d.transfer(0, 1, LINE) < both


# -- causality --

def test_reader_behind_the_writer_waits_until_the_write_has_travelled():
    d = directory("amd-8x4")
    topo = d.topology
    write_cycles = d.write(8, LINE, now=5000)
    written_at = 5000 + write_cycles
    cycles = d.read(0, LINE, now=100)            # reader's clock is far behind
    assert 100 + cycles == written_at + d.transfer(0, 8, LINE)
    # Without causality it would cost one transfer; the rest is waiting.
    assert d.core_stats(0)["waits"] == cycles - d.transfer(0, 8, LINE)


@given(reader_now=st.integers(0, 20_000), write_now=st.integers(0, 20_000),
       reader=st.integers(0, 31), writer=st.integers(0, 31))
def test_the_reader_sees_the_data_at_the_same_modeled_time_whatever_its_clock(
        reader_now, write_now, reader, writer):
    if reader == writer:
        return
    d = directory("amd-8x4")
    written_at = write_now + d.write(writer, LINE, now=write_now)
    done = reader_now + d.read(reader, LINE, now=reader_now)
    transfer = d.transfer(reader, writer, LINE)
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


# -- the ordering point: one transaction on a line at a time --

def test_readers_of_one_line_finish_one_occupancy_apart():
    d = directory("amd-4x4")
    d.write(0, LINE, now=0)
    transfer = d.topology.transfer_cycles(1, 0)      # the same for cores 1, 2 and 3
    done = [LATER + d.read(reader, LINE, now=LATER) for reader in (1, 2, 3)]
    assert done == [LATER + transfer, LATER + 2 * transfer, LATER + 3 * transfer], \
        f"three reads of one line at once should be served one after another: {done}"


def test_merged_reads_finish_together():
    d = CoherenceDirectory(load_topology("amd-4x4"), merge_reads=True)
    d.write(0, LINE, now=0)
    transfer = d.topology.transfer_cycles(1, 0)
    done = [LATER + d.read(reader, LINE, now=LATER) for reader in (1, 2, 3)]
    assert done == [LATER + transfer] * 3, f"merged reads should finish with the first: {done}"


def test_a_write_waits_for_the_read_in_flight():
    d = directory("amd-4x4")
    d.write(0, LINE, now=0)
    read_done = LATER + d.read(4, LINE, now=LATER)
    cycles = d.write(8, LINE, now=LATER + 1)         # the line is still on its way to core 4
    assert LATER + 1 + cycles >= read_done + d.topology.transfer_cycles(8, 0), \
        "a write began before the read in flight on its line was done"


def test_a_request_from_before_the_busy_period_does_not_wait_for_it():
    # Cores run one after another: a core whose clock is behind may reach
    # the directory after a transaction that, in modeled time, came later.
    # It is not queued behind that one (no causality: nothing was written).
    d = directory("amd-4x4")
    d.read(0, LINE, now=0)
    d.read(4, LINE, now=LATER)
    d.read(8, LINE, now=LATER // 2)
    assert d.core_stats(8)["waits"] == 0, "an earlier read was queued behind a later one"


def test_each_package_is_home_to_its_share_of_memory():
    d = CoherenceDirectory(load_topology("amd-4x4"), memory_size=4 << 20)
    assert [d.home(address) for address in (0, 1 << 20, 2 << 20, (4 << 20) - 64)] == [0, 1, 2, 3]


# -- the bus: one transaction at a time, machine-wide (intel-fsb) --

def test_transactions_on_the_bus_are_served_one_occupancy_apart():
    # Two cores on different dies each read a different line, modified on a
    # third die, at the same moment: the lines are free, but the bus is one.
    d = directory("intel-2x4")
    d.write(0, LINE, now=0)
    d.write(0, LINE + LINE_SIZE, now=0)
    first = d.read(2, LINE, now=LATER)
    second = d.read(4, LINE + LINE_SIZE, now=LATER)
    occupancy = d.topology.costs.bus_occupancy
    assert occupancy > 0
    assert second == d.transfer(4, 0, LINE) + occupancy, (
        f"the second bus transaction should wait one occupancy ({occupancy} cycles) for the "
        f"first: took {second}, the first {first}")


def test_transfers_within_a_die_do_not_take_the_bus():
    d = directory("intel-2x4")
    d.write(0, LINE, now=0)
    d.write(2, LINE + LINE_SIZE, now=0)
    d.read(4, LINE, now=LATER)                   # on the bus
    assert d.read(3, LINE + LINE_SIZE, now=LATER) == d.transfer(3, 2, LINE), \
        "a transfer between the two cores of a die waited for the bus"


def test_amd_machines_have_no_machine_wide_ordering_point():
    d = directory("amd-4x4")
    d.write(0, LINE, now=0)
    d.write(0, LINE + LINE_SIZE, now=0)
    d.read(4, LINE, now=LATER)
    assert d.read(8, LINE + LINE_SIZE, now=LATER) == d.transfer(8, 0, LINE)
