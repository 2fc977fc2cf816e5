"""Lab 5 (URPC): the schedule sweep sees the mistake the lab is built around.

Writing a control word before its payload delivers correct messages at
every fixed quantum (the machine serves a channel's accesses in the order
of the cores' clocks), and wrong ones under seeded schedules 1 to 3 at
quantum 100 (issue 10).
The lab's grader relies on that: these tests hold the machine to it, with
the lab's own image and its recorded mistake, so that a change to the
scheduler or the cost model that hides the mistake is seen here first.
(`sprat lab check 5` proves the whole grader: reference, skeleton, every
recorded mistake.)
"""

import pytest

from emulator import sources
from emulator.interconnect import load_topology
from kernel.boot import boot_image
from sprat.lab.manifest import find_lab
from sprat.lab.workspace import create, reference_files, wrong_files

LAB = find_lab("5")


def checked_stream_verdicts(folder, quantum, seed=None):
    """What each receiver of images/waiting.lst printed, run from workspace `folder`."""
    lines = []
    topology = load_topology("amd-2x2")
    sources.set_workspace(folder)
    try:
        system = boot_image(folder / "images" / "waiting.lst", cores=topology.n_cores(),
                            topology=topology, quantum=quantum, seed=seed,
                            output=lambda core, line: lines.append(line))
    finally:
        sources.set_workspace(None)
    system.machine.run(max_cycles=600_000)
    return [line for line in lines if line.startswith("checked")]


@pytest.fixture(scope="module")
def control_word_first(tmp_path_factory):
    _, files = wrong_files(LAB, LAB.folder / "wrong" / "control_word_first.diff")
    return create(LAB, tmp_path_factory.mktemp("wrong") / "work", files).folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return create(LAB, tmp_path_factory.mktemp("reference") / "work",
                  reference_files(LAB)).folder


@pytest.mark.parametrize("quantum", [1, 7, 13, 10_000])
def test_control_word_first_looks_right_at_every_fixed_quantum(control_word_first, quantum):
    assert checked_stream_verdicts(control_word_first, quantum) == ["checked messages 40"] * 2


def test_control_word_first_delivers_torn_messages_under_the_graders_seeds(control_word_first,
                                                                         reference):
    # At a fixed quantum the channel's accesses are served in the order of
    # the cores' clocks, the sender's stores a cycle apart: no fixed quantum
    # runs the receiver between two of them; the grader's seeds (1 to 3, at
    # quantum 100) do, at least one of them (the grader fails a run that
    # tears under any), and never the reference.
    torn = {}
    for seed in (1, 2, 3):
        assert checked_stream_verdicts(reference, 100, seed) == ["checked messages 40"] * 2, \
            f"the reference must deliver every message under seed {seed}"
        torn[seed] = [line for line in checked_stream_verdicts(control_word_first, 100, seed)
                      if line.startswith("checked: message")]
    assert any(torn.values()), \
        "under none of seeds 1 to 3 at quantum 100 did a receiver see a half-written message"
