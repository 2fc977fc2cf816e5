"""Lab 6 (the interconnect): the recorded streams, the pure path, the replay.

The lab grades a student's coherence directory by replaying access streams
recorded from real runs (labs/06-interconnect/images/streams/). These
tests hold the pieces the grader stands on: the streams are still what
today's machine does (if coherence.py changes what an access costs, they
say how to record them again), a workspace's directory really charges the
machine's accesses (the C hit path, which mirrors only the tree's
directory, stands aside), and a failure's replay command stops at the
access the failure names. (`sprat lab check 6` proves the grader itself.)
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sprat.lab.manifest import find_lab
from sprat.lab.workspace import create, reference_files, wrong_files

LAB = find_lab("6")
STREAMS = sorted((LAB.folder / "images" / "streams").glob("*.stream"))
RECORD = "python labs/06-interconnect/record.py"


def sprat(*args, cwd):
    env = {key: value for key, value in os.environ.items() if key != "SPRAT_LABS"}
    return subprocess.run([sys.executable, "-m", "sprat", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("stream", STREAMS, ids=lambda path: path.stem)
def test_a_recorded_stream_costs_what_the_machine_charged(stream):
    sys.path.insert(0, str(LAB.folder / "images"))
    try:
        import replay
    finally:
        sys.path.pop(0)
    recorded = replay.read_stream(stream.stem)
    charged = [int(line.split()[5]) for line in stream.read_text().splitlines()
               if line[:1].isdigit()]
    directory = replay.new_directory(replay.reference_module(), recorded.topology,
                                     recorded.memory_size)
    for index, (access, cycles) in enumerate(zip(recorded.accesses, charged)):
        got = replay.apply(directory, *access)
        assert got == cycles, (
            f"{stream.name}, access #{index}: the tree's directory charges {got} cycles, the "
            f"machine charged {cycles} when it was recorded: coherence.py or protocol.py "
            f"changed; record the streams again ({RECORD})")


def test_a_workspace_directory_charges_the_machine_on_the_pure_path(tmp_path):
    folder = tmp_path / "work"
    create(LAB, folder, reference_files(LAB))
    done = sprat("bench", "urpc", "--lab", str(folder), "--topology", "amd-2x2", "--rounds", "16",
                 "--messages", "16", "--host-messages", "2", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    hit_path = json.loads(done.stdout)[-1]["hit_path"]
    assert hit_path.startswith("pure Python") and "coherence.py" in hit_path, (
        f"inside a lab 6 workspace the machine ran the {hit_path} hit path: the C path never "
        f"calls the student's directory")


def test_python_m_sprat_inside_a_workspace_uses_the_installed_tree(tmp_path):
    # The workspace holds emulator/interconnect/coherence.py and nothing else
    # of emulator/: `python -m sprat` run there must not take that folder for
    # the package (it used to fail with "No module named
    # 'emulator.interconnect.topology'").
    folder = tmp_path / "work"
    create(LAB, folder, reference_files(LAB))
    done = sprat("bench", "urpc", "--lab", ".", "--topology", "amd-2x2", "--rounds", "16",
                 "--messages", "16", "--host-messages", "2", "--json", cwd=folder)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout)[-1]["hit_path"].startswith("pure Python"), done.stdout


def test_a_stream_failure_replays_to_the_access_it_names(tmp_path):
    folder = tmp_path / "work"
    _, files = wrong_files(LAB, LAB.folder / "wrong" / "invalidations_summed.diff")
    create(LAB, folder, files)
    done = sprat("lab", "grade", str(folder), "--json", "-k",
                 "contended_and_shootdown_streams_replay_as_the_reference", cwd=tmp_path)
    result = json.loads(done.stdout)["tests"][0]
    assert not result["passed"], "summed invalidations replay like the reference's"
    index = re.search(r"access #(\d+)", result["reason"]).group(1)
    replayed = subprocess.run(result["replay"], shell=True, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
    assert replayed.returncode == 1, replayed.stderr
    assert f"first difference at #{index}:" in replayed.stdout, (
        f"the replay does not stop at access #{index}: {replayed.stdout[-600:]}")
    assert Path(folder / "emulator/interconnect/coherence.py").as_posix() in replayed.stdout


def test_a_directory_that_raises_is_one_line_naming_the_students_line(tmp_path):
    """A typo in _serve (line.sharer for line.sharers) raises AttributeError:
    the replay says so in one line with the student's file and line, no
    traceback, and the grader's reason names the access it was serving."""
    folder = tmp_path / "work"
    files = reference_files(LAB)
    path = "emulator/interconnect/coherence.py"
    text = files[path]
    typo = text.replace("        others = sharers & ~bit\n", "        others = line.sharer & ~bit\n")
    assert typo != text, "the reference's _serve no longer computes `others` as this test expects"
    files[path] = typo
    create(LAB, folder, files)
    replayed = subprocess.run([sys.executable, "images/replay.py", "pingpong-intel-2x4"],
                              cwd=folder, capture_output=True, text=True, timeout=300)
    assert replayed.returncode == 1 and "Traceback" not in replayed.stderr, replayed.stderr
    assert ("your directory raised AttributeError: '_Line' object has no attribute 'sharer'"
            in replayed.stdout), replayed.stdout
    assert "(at emulator/interconnect/coherence.py:" in replayed.stdout, replayed.stdout
    done = sprat("lab", "grade", str(folder), "--json", "-k", "urpc_streams", cwd=tmp_path)
    reason = json.loads(done.stdout)["tests"][0]["reason"]
    assert reason.startswith("pingpong-intel-2x4, access #0 of "), reason
    assert "your directory raised AttributeError" in reason, reason
