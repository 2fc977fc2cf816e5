"""Two-phase commit between the monitors: replicas agree, refusals roll back everywhere.

The monitors (userland/monitor.S) keep replicated records of the shared
regions; a retype of a whole region is a two-phase commit run by monitor 0
(kernel/caps LOCK/UNLOCK are each core's part). These tests boot images
with programs that use regions on some cores and a client that asks for
retypes, then read every monitor's replica (kernel/replica.py) and every
core's capability state (CapabilityService.region_state).
"""

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, boot_and_run
from kernel.capservice import N_SHARED_REGIONS, CapabilityService
from kernel.replica import read_replicas

DEMO = ROOT / "images" / "twophase.lst"
CORES = 4


def service(run) -> CapabilityService:
    return run.machine._hypercall_handler


def states(run, region) -> list[str]:
    return [service(run).region_state(core, region) for core in range(CORES)]


def test_demo_commits_one_region_and_rolls_back_a_refusal_on_every_core():
    run = boot_and_run(DEMO, cores=CORES, max_cycles=10**8)
    assert run.result.clean, run.result.reason
    client = [line for line in run.output(3) if line.startswith("retype")]   # forwarded
    assert client[0].startswith("retype region 0: committed, transaction 1; "
                                "the new frame is ours, at physical ")
    assert client[1:] == [
        "retype region 1: refused by core 2, error 120 (in use there): rolled back on every core",
        "retype region 0: refused by core 0, error 121 (retyped on another core): "
        "rolled back on every core",
        "retype region 2: refused by core 3, error 107 (cannot be retyped into that): "
        "rolled back on every core"]
    replicas = read_replicas(run.system)
    assert sorted(replicas) == list(range(CORES))
    assert len({replica.regions for replica in replicas.values()}) == 1
    regions = replicas[0].regions
    assert (regions[0].state, regions[0].owner, regions[0].version) == ("retyped", 3, 1)
    assert all(region.state == "free" and region.version == 0 for region in regions[1:])
    assert all(region.pending == 0 for region in regions)
    assert {(r.commits, r.aborts) for r in replicas.values()} == {(1, 2)}
    # and each core's capabilities say the same thing: the frame is the asker's
    assert states(run, 0) == ["retyped elsewhere"] * 3 + ["in use"]
    assert states(run, 1) == ["free", "free", "in use", "free"]   # no lock left anywhere
    assert states(run, 2) == ["free"] * CORES   # failed on the asker after the others' yes


def test_every_monitor_prints_the_same_replica():
    run = boot_and_run(DEMO, cores=CORES, max_cycles=10**8)
    lines = [line.split(":", 1)[1] for _, line in run.lines if line.startswith("monitor ")]
    assert len(lines) == CORES and len(set(lines)) == 1, lines


def plan_word(steps) -> int:
    return sum(step << (4 * index) for index, step in enumerate(steps))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.integers(0, 7), min_size=1, max_size=5),
       other=st.tuples(st.integers(1, CORES - 1), st.lists(st.integers(0, 7), max_size=4)),
       users=st.dictionaries(st.integers(1, CORES - 1),
                             st.tuples(st.integers(0, N_SHARED_REGIONS - 1),
                                       st.integers(0, 400_000)), max_size=3),
       quantum=st.sampled_from([1, 7, 100, 10_000]))
def test_replicas_agree_after_any_interleaving(tmp_path_factory, steps, other, users, quantum):
    """Programs on two cores ask for retypes at once (one through its own
    monitor, which forwards to monitor 0) while programs on other cores use
    regions at random moments: whatever the interleaving, every replica
    holds the same records, no lock is left, and a retyped region is in use
    nowhere else."""
    other_core, other_steps = other
    clients = 2 if other_steps else 1
    directory = tmp_path_factory.mktemp("twophase")
    image = directory / "random.lst"
    lines = ["kernel /cpudriver/cpudriver.S",
             "module /userland/monitor.S core=0 monitor",
             f"module /userland/twophase.S core=0 plan={plan_word(steps)} steps={len(steps)} "
             f"clients={clients} channels=1537"]
    for core in range(1, CORES):
        lines.append(f"module /userland/monitor.S core={core} monitor")
        if core in users:
            region, delay = users[core]
            lines.append(f"module /userland/region_user.S core={core} region={region} "
                         f"delay={delay}")
        if core == other_core and other_steps:
            lines.append(f"module /userland/twophase.S core={core} "
                         f"plan={plan_word(other_steps)} steps={len(other_steps)} stop=0 "
                         f"channels=1537")
    image.write_text("\n".join(lines) + "\n")

    run = boot_and_run(image, cores=CORES, quantum=quantum, max_cycles=10**9)
    assert run.result.clean, run.result.reason
    replicas = read_replicas(run.system)
    assert sorted(replicas) == list(range(CORES))
    assert len({(r.regions, r.commits, r.aborts) for r in replicas.values()}) == 1
    records = replicas[0].regions
    answers = [line for _, line in run.lines if line.startswith("retype region")]
    assert len(answers) == len(steps) + len(other_steps)
    assert replicas[0].commits == sum("committed" in line for line in answers)
    transactions = [int(line.rsplit(" ", 1)[1]) for line in answers if "committed" in line]
    assert len(set(transactions)) == len(transactions)      # one commit per transaction
    for region, record in enumerate(records):
        assert record.pending == 0
        held = states(run, region)
        assert "locked" not in held
        if record.state == "retyped":
            assert record.version == 1                      # retyped once, by one core
            assert held[record.owner] == "in use"           # the asker's core holds it
            assert held.count("retyped elsewhere") == CORES - 1
        else:
            assert "retyped elsewhere" not in held
