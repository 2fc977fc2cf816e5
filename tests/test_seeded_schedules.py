"""Seeded schedules (emulator/scheduler.py): another interleaving per seed,
the same run for the same seed, and races found that fixed quanta hide."""

from conftest import STREAM_IMAGE as STREAM, control_word_first_workspace
from emulator import sources
from kernel.boot import boot_image


def run(image, seed=None, quantum=10_000):
    lines = []
    system = boot_image(image, cores=2, quantum=quantum, seed=seed,
                        output=lambda core, line: lines.append((core, line)))
    result = system.machine.run(max_cycles=10**7)
    return system, result, lines


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another(tmp_path):
    image = tmp_path / "stream.lst"
    image.write_text(STREAM)
    first, again, other = (run(image, seed) for seed in (5, 5, 6))
    schedule = [(s.machine.scheduler.quanta_run, [c.cycles for c in s.machine.cores])
                for s, _, _ in (first, again, other)]
    assert schedule[0] == schedule[1], "seed 5 gave two different runs"
    assert schedule[0][0] != schedule[2][0], "seeds 5 and 6 scheduled the cores alike"
    assert first[2] == again[2]


def test_a_correct_program_gives_the_same_answer_under_every_seed(tmp_path):
    image = tmp_path / "stream.lst"
    image.write_text(STREAM)
    for seed in (None, 1, 2, 3):
        system, result, lines = run(image, seed)
        assert result.clean and system.failures() is None, (seed, lines)


def test_seeds_find_a_control_word_written_before_its_payload(tmp_path):
    """The race no fixed quantum shows on this stream: seeds find it."""
    image = control_word_first_workspace(tmp_path)
    sources.set_workspace(tmp_path)
    try:
        for quantum in (1, 7, 13, 100, 10_000):
            system, result, _ = run(image, quantum=quantum)
            assert result.clean and system.failures() is None, f"quantum {quantum} caught it"
        caught = [seed for seed in range(1, 11) if run(image, seed)[0].failures()]
    finally:
        sources.set_workspace(None)
    assert caught, "no seed of 1 to 10 caught a control word written before the payload"
