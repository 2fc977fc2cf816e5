"""Same image + same options = the same run, byte for byte, under any seed.

Every image in images/, under three seeds (each another interleaving), run
twice: the console, every core's final state and clock, and the events the
machine reported must be identical. Tests and students depend on it: a
failure a seed shows once, it shows every time.
"""

from pathlib import Path

import pytest

from kernel.boot import boot_image
from kernel.tracepoints import install_message_tracepoints

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "images").glob("*.lst"))
SEEDS = (1, 2, 3)
CORES = 4


def fingerprint(image: Path, seed: int) -> tuple:
    lines, events = [], []
    system = boot_image(image, cores=CORES, seed=seed,
                        output=lambda core, line: lines.append((core, line)))
    system.machine.observers.append(lambda event, **fields: events.append((event, fields)))
    install_message_tracepoints(system)
    result = system.machine.run(max_cycles=50_000_000)
    cores = [(c.state.value, c.cycles, c.stats.instructions, c.rip) for c in system.machine.cores]
    return result.reason, result.cycles, tuple(lines), tuple(cores), repr(events)


@pytest.mark.parametrize("image", IMAGES, ids=[image.name for image in IMAGES])
def test_every_image_runs_the_same_twice_under_each_seed(image):
    for seed in SEEDS:
        first, again = fingerprint(image, seed), fingerprint(image, seed)
        assert first == again, f"{image.name} with --seed {seed} ran differently the second time"
