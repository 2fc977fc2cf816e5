"""Checkpoints (emulator/checkpoint.py): a machine put back runs the same future."""

from pathlib import Path

import pytest

from emulator import checkpoint
from kernel.boot import boot_image

ROOT = Path(__file__).resolve().parents[1]


def boot(image, seed=None):
    lines = []
    system = boot_image(ROOT / "images" / image, cores=4, seed=seed,
                        output=lambda core, line: lines.append((core, line)))
    return system, lines


def run_recording(system, lines, until):
    """Run to `until` cycles; what the run printed and where every core ended up."""
    printed = len(lines)
    result = system.machine.run(max_cycles=until)
    return (result.reason, lines[printed:], checkpoint.fingerprint(system.machine),
            list(system.machine.console.bytes_written))


@pytest.mark.parametrize("image, seed, at", [("twophase.lst", None, 100_000),
                                             ("default.lst", 7, 30_000),
                                             ("shootdown.lst", None, 160_000),
                                             ("shootdown.lst", 3, 100_000)])
def test_a_restored_checkpoint_runs_the_same_future(image, seed, at):
    """Run to `at`, checkpoint, run to the end recording everything, restore,
    run to the end again: the same console bytes, registers, clocks, RAM."""
    system, lines = boot(image, seed)
    system.machine.run(max_cycles=at)
    saved = checkpoint.take(system.machine)
    first = run_recording(system, lines, None)
    checkpoint.restore(system.machine, saved)
    again = run_recording(system, lines, None)
    assert first[1], "the run printed nothing after the checkpoint: the test shows nothing"
    assert again == first, "the run after restoring the checkpoint differs from the first"


def test_a_checkpoint_puts_back_memory_registers_and_clocks():
    system, lines = boot("twophase.lst")
    machine = system.machine
    machine.run(max_cycles=100_000)
    before = checkpoint.fingerprint(machine)
    saved = checkpoint.take(machine)
    machine.run()
    assert checkpoint.fingerprint(machine) != before
    checkpoint.restore(machine, saved)
    assert checkpoint.fingerprint(machine) == before, "restore left the machine elsewhere"


def test_a_checkpoint_saves_every_field_of_a_directory_entry():
    """A field added to the directory's lines (the cost model grows) must be
    saved too, or going back replays a different machine."""
    from emulator.interconnect.coherence import _Line
    assert set(checkpoint._LINE_FIELDS) == set(_Line.__slots__)
