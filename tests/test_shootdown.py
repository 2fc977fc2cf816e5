"""TLB shootdown by the monitors: it really invalidates, and the protocols rank as in the paper.

The monitors (userland/monitor.S) are built with probe=1 here: between its
unmap and its invlpg each one reads the page and counts whether it still
saw the initiator's value there. Those reads succeeding on every core shows
the stale TLB entry is real until the shootdown reaches the core; a touch
after the shootdown faulting on every core shows it is gone once it is
complete.
"""

import json
import re

import pytest

from emulator.interconnect import load_topology
from kernel.skb import PROTOCOLS
from sprat.bench.tlb import MODE_TLB, MODE_TOUCH, MODE_UNMAP, run_shootdowns
from sprat.cli import main
from tests.conftest import ROOT

AMD_4X4 = load_topology("amd-4x4")
SHOOTDOWN_IMAGE = ROOT / "images" / "shootdown.lst"


def test_every_protocol_invalidates_every_core_each_seeing_its_stale_entry_first():
    rows = run_shootdowns(AMD_4X4, MODE_TLB, [6, 16], PROTOCOLS, probe=True, runs=1)
    assert {(r["protocol"], r["cores"]) for r in rows} == \
        {(p, n) for p in PROTOCOLS for n in (6, 16)}
    for row in rows:
        assert row["acked"] == row["cores"], f"not every core invalidated: {row}"
        assert row["stale"] == row["cores"] - 1, \
            f"a core did not see the page through its stale TLB entry before invlpg: {row}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_once_the_shootdown_completes_every_core_faults_on_the_page(protocol):
    lines, booted = [], []
    run_shootdowns(AMD_4X4, MODE_TOUCH, [6], [protocol], probe=True, lines=lines,
                   booted_system=booted.append, runs=1)
    touch = booted[0].modules[0].program.symbols["touch_read"]
    faulted = sorted({core for core, line in lines
                      if f"#PF page fault at rip {touch:#x}" in line})
    assert faulted == [1, 2, 3, 4, 5], f"{protocol}: the cores that faulted: {faulted}"
    assert not [line for _, line in lines if "still mapped" in line]


@pytest.fixture(scope="module")
def at_32_cores():
    """{protocol: cycles} for one shootdown over the 32 cores of amd-8x4."""
    rows = run_shootdowns(load_topology("amd-8x4"), MODE_TLB, [32], PROTOCOLS)
    return {r["protocol"]: r["cycles"] for r in rows}


def test_the_multicasts_are_far_below_unicast_and_broadcast_at_32_cores(at_32_cores):
    # The initiator's sends retire into its store buffer; what it waits for
    # is its acknowledgements, one per child (sprat/bench/tlb.py): the trees
    # with one child per package wait for 8, unicast and broadcast for 31.
    # The two multicasts are within a few percent of each other.
    t = at_32_cores
    assert max(t["numa-multicast"], t["multicast"]) < 0.5 * min(t["unicast"], t["broadcast"]), t
    assert t["numa-multicast"] < 1.05 * t["multicast"], t


def test_a_protocols_figure_depends_on_its_core_count_alone():
    # Each core count is a boot of its own, with monitors on those cores
    # only (sprat bench tlb), and a figure is the median of five runs. With
    # one boot of every monitor, the ones not taking part read the
    # broadcast ring too, and broadcast over 4 cores took 4,655 cycles in
    # the default list and 2,694 in another; with one run, a run the
    # initiator's time-slice interrupt fell into took about 1,500 cycles
    # more (unicast over 4 cores: 4,175 after unicast over 2, 2,678 alone).
    amd_8x4 = load_topology("amd-8x4")
    together = {(r["protocol"], r["cores"]): r["cycles"]
                for r in run_shootdowns(amd_8x4, MODE_TLB, [2, 4, 32], PROTOCOLS)}
    for protocol, cores in (("unicast", 4), ("broadcast", 4), ("multicast", 32)):
        alone = run_shootdowns(amd_8x4, MODE_TLB, [cores], [protocol])[0]["cycles"]
        assert alone == together[protocol, cores], \
            f"{protocol} over {cores} cores: {alone} cycles alone, " \
            f"{together[protocol, cores]} measured with other counts and protocols"
    # Over 2 cores every protocol is the one message to core 1.
    two = [together[protocol, 2] for protocol in PROTOCOLS]
    assert max(two) - min(two) <= 0.02 * min(two), \
        f"one message to one core costs {dict(zip(PROTOCOLS, two))} under the four protocols"


@pytest.mark.parametrize("runs, ok", [(0, False), (13, True), (14, False)])
def test_the_shootdown_program_takes_1_to_13_runs(runs, ok, tmp_path, capsys):
    image = tmp_path / "runs.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     "module /userland/monitor.S core=0 monitor\n"
                     f"module /userland/shootdown.S core=0 protocols=4 counts=2 runs={runs} "
                     "channels=1536-1537\n"
                     "module /userland/monitor.S monitor\n")
    status = main(["boot", str(image), "--topology", "amd-2x2"])
    out = capsys.readouterr().out
    if ok:
        assert status == 0 and shootdowns_printed(out) == {(2, 2): 2}, out
    else:
        assert status == 1, f"runs={runs}: the boot did not fail"
        assert "shootdown.S: runs must be 1 to 13" in out
        assert not shootdowns_printed(out), f"runs={runs}: it measured anyway"


def test_unmap_end_to_end_costs_more_than_the_protocol_and_grows_with_cores(at_32_cores):
    rows = run_shootdowns(load_topology("amd-8x4"), MODE_UNMAP, [1, 8, 32], ["numa-multicast"],
                          whole_machine=True)
    cycles = [r["cycles"] for r in rows]
    assert cycles == sorted(cycles) and cycles[0] < cycles[-1], rows
    assert cycles[-1] > at_32_cores["numa-multicast"]


def test_an_unmap_never_waits_for_a_time_slice():
    # The monitors' cores take time-slice interrupts all through these
    # unmaps. One that came while a monitor polled its rings once left it
    # parked on the rings it had not yet read, and the 8-core unmap took
    # 103,602 cycles: a whole time slice spent waiting for the message.
    # (One run each: the bench's median of five would hide such a run.)
    from cpudriver.layout import TIME_SLICE_CYCLES
    rows = run_shootdowns(load_topology("amd-8x4"), MODE_UNMAP, [1, 2, 4, 8], ["numa-multicast"],
                          runs=1, whole_machine=True)
    slow = [(r["cores"], r["cycles"]) for r in rows if r["cycles"] > TIME_SLICE_CYCLES // 4]
    assert not slow, f"unmaps (cores, cycles) that waited for a time slice to end: {slow}"


def test_bench_tlb_json_rows_and_plot(capsys, tmp_path):
    plot = tmp_path / "tlb.png"
    status = main(["bench", "tlb", "--topology", "amd-2x2", "--cores", "2,4", "--json",
                   "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert status == 0, err
    rows = json.loads(out)
    assert {(r["protocol"], r["cores"]) for r in rows} == \
        {(p, n) for p in PROTOCOLS for n in (2, 4)}
    assert all(set(r) == {"protocol", "cores", "latency_cycles"} for r in rows)
    assert plot.stat().st_size > 0


def test_bench_unmap_json_rows(capsys):
    status = main(["bench", "unmap", "--topology", "amd-2x2", "--cores", "1,4", "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert [(r["cores"], set(r)) for r in json.loads(out)] == \
        [(1, {"cores", "latency_cycles"}), (4, {"cores", "latency_cycles"})]


def test_bench_tlb_measures_a_machine_of_your_own_whole_and_says_what_it_left_out(
        tmp_path, capsys):
    # A 6-core machine (amd-2x2's file, three cores a package): the default
    # counts 2, 4 and 6 (its size), not 2 and 4 only; a count past the
    # machine given on the command line is left out, and said so.
    from emulator.interconnect.topology import PRESET_DIR
    machine = tmp_path / "amd-2x3.toml"
    machine.write_text((PRESET_DIR / "amd-2x2.toml").read_text()
                       .replace("packages = [[0, 1], [2, 3]]", "packages = [[0, 1, 2], [3, 4, 5]]"))
    assert main(["bench", "unmap", "--topology", str(machine), "--json"]) == 0
    out, _ = capsys.readouterr()
    assert [row["cores"] for row in json.loads(out)] == [1, 2, 4, 6]
    assert main(["bench", "tlb", "--topology", str(machine), "--cores", "2,40", "--json"]) == 0
    out, err = capsys.readouterr()
    assert {row["cores"] for row in json.loads(out)} == {2}
    assert "--cores: 40 left out:" in err and "has 6 cores" in err, err


def test_bench_refuses_core_counts_the_machine_lacks(capsys):
    assert main(["bench", "tlb", "--cores", "64"]) == 2
    assert "none of 64" in capsys.readouterr().err


def shootdowns_printed(out):
    """{(protocol number, cores): acked} from 'shootdown protocol P cores N ... acked A' lines."""
    found = re.findall(r"shootdown protocol (\d) cores (\d+) cycles \d+ acked (\d+)", out)
    return {(int(p), int(n)): int(acked) for p, n, acked in found}


def test_readme_demo_shoots_down_under_every_protocol_at_2_to_32_cores_on_amd_8x4(capsys):
    status = main(["boot", str(SHOOTDOWN_IMAGE), "--topology", "amd-8x4"])
    out, err = capsys.readouterr()
    assert status == 0, f"the README's demo failed: {err}"
    counts = (2, 4, 8, 16, 24, 32)
    assert shootdowns_printed(out) == {(p, n): n for p in range(4) for n in counts}, \
        "not every protocol shot the page down on every core at 2 to 32 cores"


def test_shootdown_image_runs_every_protocol_at_64_cores(capsys):
    status = main(["boot", str(SHOOTDOWN_IMAGE), "--cores", "64"])
    out, err = capsys.readouterr()
    assert status == 0, f"the shootdown image failed at 64 cores: {err}"
    at_64 = {key: acked for key, acked in shootdowns_printed(out).items() if key[1] == 64}
    assert at_64 == {(p, 64): 64 for p in range(4)}, \
        "not every protocol shot the page down on all 64 cores"


@pytest.mark.parametrize("timing", ["fast", "detailed"])
def test_a_shootdown_costs_the_same_at_every_quantum(timing):
    # The initiator and its one partner wait for each other; what the
    # shootdown costs must not depend on how finely the scheduler
    # interleaves the cores (issue 15 measured 1,527 against 3,673 cycles).
    found = {}
    for quantum in (1, 7, 50, 1_000, 10_000):
        rows = run_shootdowns(AMD_4X4, MODE_TLB, [2], PROTOCOLS, timing=timing, runs=1,
                              booted_system=lambda system, q=quantum:
                              setattr(system.machine.scheduler, "quantum", q))
        found[quantum] = {row["protocol"]: row["cycles"] for row in rows}
    assert len({tuple(sorted(costs.items())) for costs in found.values()}) == 1, \
        f"the shootdown's modeled cycles differ by quantum: {found}"
