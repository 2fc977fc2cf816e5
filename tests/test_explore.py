"""`sprat explore`: seeds that break a program are found, reported, and replay exactly."""

import re

import pytest

from emulator import sources
from sprat.cli import main
from tests.conftest import STREAM_IMAGE as STREAM, control_word_first_workspace


@pytest.fixture
def racy_stream(tmp_path):
    """A workspace whose urpc.S stores the control word before the payload."""
    image = control_word_first_workspace(tmp_path)
    sources.set_workspace(tmp_path)
    yield image
    sources.set_workspace(None)


def test_seeds_find_a_control_word_written_before_its_payload_and_replay_it(racy_stream, capsys):
    image = str(racy_stream)
    # Under the default schedule the output is right.
    assert main(["boot", image, "--cores", "2"]) == 0
    assert "stream messages 200" in capsys.readouterr().out
    # Seeds find the race in the output alone.
    status = main(["explore", image, "--cores", "2", "--seeds", "50", "--no-protocol-check",
                   "--expect-line", "stream messages 200"])
    out, err = capsys.readouterr()
    assert status == 1, out
    assert "sprat explore: 50/50 seeds run" in err
    replay = re.search(r"replay the first: (sprat debug .*)$", out, re.MULTILINE)
    assert replay, f"no replay command in: {out}"
    words = replay.group(1).split()
    assert words[:3] == ["sprat", "debug", image] and "--seed" in words
    seed = words[words.index("--seed") + 1]
    assert re.search(rf"^seed {seed}: .*no console line contains 'stream messages 200'", out,
                     re.MULTILINE), out
    # The reported seed fails again, byte for byte, twice.
    runs = []
    for _ in range(2):
        assert main(["boot", image, "--cores", "2", "--seed", seed]) == 1
        runs.append(capsys.readouterr())
    assert runs[0] == runs[1], f"seed {seed} gave two different runs"
    assert "stream: wrong message at" in runs[0].out
    # And in the debugger the replay command names, to its end.
    script = racy_stream.parent / "continue.txt"
    script.write_text("continue\n")
    assert main(words[1:] + ["--script", str(script)]) in (0, 1)
    assert "stream: wrong message at" in capsys.readouterr().out


def test_the_protocol_check_fails_every_seed_of_a_control_word_stored_first(racy_stream, capsys):
    assert main(["explore", str(racy_stream), "--cores", "2", "--seeds", "3", "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "sprat: 3 of 3 seeds failed (1, 2, 3)" in out
    assert "channel protocol violations, the first: core 0, channel 3 slot 0, message 0" in out


def test_a_correct_program_passes_every_seed(tmp_path, capsys):
    image = tmp_path / "stream.lst"
    image.write_text(STREAM.replace("200", "40"))
    assert main(["explore", str(image), "--cores", "2", "--seeds", "4",
                 "--expect-line", "stream messages 40"]) == 0
    assert capsys.readouterr().out == "sprat: all 4 seeds ran cleanly\n"


@pytest.mark.parametrize("argv, message", [
    (["explore", "nowhere.lst", "--seeds", "2"], "nowhere.lst"),
    (["explore", "images/default.lst", "--seeds", "0"], "argument --seeds: must be between 1 and 100,000, got 0"),
    (["explore", "images/default.lst", "--seeds", "2", "--jobs", "0"], "argument --jobs: must be between 1 and 64, got 0"),
    (["explore", "images/default.lst"], "--seeds"),
])
def test_bad_input_is_a_one_line_error(argv, message, capsys):
    try:
        status = main(argv)
    except SystemExit as exit:          # argparse's usage errors
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_replay_command_keeps_the_timing_the_seeds_ran_in(racy_stream, capsys):
    # A seed found in detailed timing fails in detailed timing: the replay
    # must say so, or it replays another machine.
    assert main(["explore", str(racy_stream), "--cores", "2", "--seeds", "2", "--jobs", "1",
                 "--timing", "detailed"]) == 1
    replay = re.search(r"replay the first: (sprat debug .*)$", capsys.readouterr().out,
                       re.MULTILINE)
    assert replay and " --timing detailed " in replay.group(1) + " ", replay
