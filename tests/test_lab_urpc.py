"""Lab 5 (URPC): the schedule sweep sees the mistake the lab is built around.

Writing a control word before its payload delivers correct messages at
quantum 1 and at the default quantum, and wrong ones at 7 and 13 and
under seeded schedules 1 to 3 at quantum 100 (issue 10), in the fast
timing the grader runs. In detailed timing the machine serves a channel's
accesses in the order of the cores' clocks, and no fixed quantum tears.
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


def checked_stream_verdicts(folder, quantum, seed=None, timing="fast"):
    """What each receiver of images/waiting.lst printed, run from workspace `folder`."""
    lines = []
    topology = load_topology("amd-2x2")
    sources.set_workspace(folder)
    try:
        system = boot_image(folder / "images" / "waiting.lst", cores=topology.n_cores(),
                            topology=topology, quantum=quantum, seed=seed, timing=timing,
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


@pytest.mark.parametrize("quantum", [1, 10_000])
def test_control_word_first_looks_right_at_quantum_1_and_the_default(control_word_first, quantum):
    assert checked_stream_verdicts(control_word_first, quantum) == ["checked messages 40"] * 2


@pytest.mark.parametrize("quantum", [7, 13])
def test_control_word_first_delivers_torn_messages_at_quanta_7_and_13(control_word_first,
                                                                     reference, quantum):
    assert checked_stream_verdicts(reference, quantum) == ["checked messages 40"] * 2, \
        "the reference must deliver every message at this quantum"
    torn = [line for line in checked_stream_verdicts(control_word_first, quantum)
            if line.startswith("checked: message")]
    assert torn, f"at quantum {quantum} no receiver saw a half-written message"


@pytest.mark.parametrize("quantum", [7, 13])
def test_in_detailed_timing_no_fixed_quantum_tears_a_message(control_word_first, quantum):
    # The channel's accesses are served in the order of the cores' clocks,
    # the sender's stores a cycle apart: no fixed quantum runs the receiver
    # between two of them (a seeded schedule, out of that order, may).
    assert checked_stream_verdicts(control_word_first, quantum, timing="detailed") \
        == ["checked messages 40"] * 2


def test_control_word_first_delivers_torn_messages_under_the_graders_seeds(control_word_first,
                                                                         reference):
    # A seeded schedule runs the receiver between two of the sender's
    # stores: the grader's seeds (1 to 3, at quantum 100) do, at least one
    # of them (the grader fails a run that tears under any), and never
    # the reference.
    torn = {}
    for seed in (1, 2, 3):
        assert checked_stream_verdicts(reference, 100, seed) == ["checked messages 40"] * 2, \
            f"the reference must deliver every message under seed {seed}"
        torn[seed] = [line for line in checked_stream_verdicts(control_word_first, 100, seed)
                      if line.startswith("checked: message")]
    assert any(torn.values()), \
        "under none of seeds 1 to 3 at quantum 100 did a receiver see a half-written message"
