"""Fault injection (emulator/faults.py): a core stopped, a core slowed, a link
slowed, on purpose; and a two-phase commit with a participant that dies."""

import re
import subprocess
import sys

import pytest

from emulator import faults
from emulator.errors import SpratError
from kernel.boot import boot_image
from kernel.diagnosis import explain
from conftest import ROOT

STREAM = """title a stream of 100 messages from core 0 to core 1
kernel /cpudriver/cpudriver.S
module /userland/urpc_stream.S core=0 role=0 channel=3 count=100
module /userland/urpc_stream.S core=1 role=1 channel=3 count=100
"""


def run(image, rules, cores=2, max_cycles=10**8):
    lines = []
    system = boot_image(image, cores=cores, output=lambda core, line: lines.append(line))
    faults.apply(system.machine, [faults.parse(rule) for rule in rules])
    result = system.machine.run(max_cycles=max_cycles)
    return system, result, lines


@pytest.fixture
def stream(tmp_path):
    image = tmp_path / "stream.lst"
    image.write_text(STREAM)
    return image


def stream_cycles(lines) -> int:
    """The receiver's own measure: cycles from its first message to its last."""
    return int(re.search(r"stream messages 100 cycles (\d+)", "\n".join(lines)).group(1))


def test_a_stopped_core_stops_at_its_cycle_and_says_why(stream):
    system, result, _ = run(stream, ["stop:0@60000"])
    core = system.machine.cores[0]
    assert core.failure == "stopped by --inject at cycle 60,000", core.failure
    # It stops at the first instruction boundary at or past the cycle (the
    # cost model's charges within the last quantum may carry it a little past).
    assert 60_000 <= core.cycles < 65_000, f"the core ran on to cycle {core.cycles:,}"
    assert not result.clean


def test_a_slowed_core_spends_ratio_cycles_an_instruction(stream):
    _, plain, plain_lines = run(stream, [])
    system, slowed, slowed_lines = run(stream, ["slow:1*4"])
    assert plain.clean and slowed.clean, "a slow receiver must still get every message"
    receiver = system.machine.cores[1]
    assert receiver.cycles >= 4 * receiver.stats.instructions
    assert stream_cycles(slowed_lines) > 1.5 * stream_cycles(plain_lines), \
        "a receiver four times slower did not make the stream slower"


def test_a_slowed_link_slows_only_the_messages_that_cross_it(stream):
    _, _, plain = run(stream, [], cores=4)
    _, crossing_result, crossing = run(stream, ["link:0-1*10"], cores=4)
    _, _, elsewhere = run(stream, ["link:2-3*10"], cores=4)
    assert crossing_result.clean
    assert stream_cycles(crossing) > 2 * stream_cycles(plain), \
        "a link ten times slower between sender and receiver changed nothing"
    assert stream_cycles(elsewhere) == stream_cycles(plain), \
        "a slow link between two other cores changed the stream"


def test_two_phase_commit_with_a_dead_participant_ends_naming_it():
    system, result, _ = run(ROOT / "images" / "twophase.lst", ["stop:2@150000"], cores=4)
    assert result.reason.startswith("stuck:"), f"not diagnosed as stuck: {result.reason}"
    assert result.cycles < 10**8 // 4, "the run spent its cycle budget before it was found stuck"
    diagnosis = explain(system)
    # (and where it was stopped: "... (in LABEL+N, file:line)")
    assert any(line.startswith("core 2 failed: stopped by --inject at cycle 150,000 (in ")
               for line in diagnosis), diagnosis
    assert any(line.startswith("core 3 waits") for line in diagnosis), diagnosis


def test_sprat_boot_injects_and_reports_the_stopped_core():
    done = subprocess.run([sys.executable, "-m", "sprat", "boot", "images/twophase.lst",
                           "--inject", "stop:2@150000"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "sprat: stuck:" in done.stderr
    assert "core 2 failed: stopped by --inject at cycle 150,000" in done.stderr


@pytest.mark.parametrize("rule, message", [
    ("stop:2", "not a rule; rules are stop:CORE@CYCLE"),
    ("slow:1*0", "the ratio must be between 1 and 1000, got 0"),
    ("link:1-1*2", "a link joins two different cores"),
    ("stop:9@100", "there is no core 9 (cores are 0 to 3)"),
])
def test_a_bad_rule_is_one_line_saying_what_is_wrong(rule, message):
    done = subprocess.run([sys.executable, "-m", "sprat", "boot", "images/twophase.lst",
                           "--inject", rule], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
