"""Every image in images/ on every machine: each boots to a clean end.

The machines are the presets (`sprat topology list`) and the default
machine (`sprat boot IMAGE`, and `--cores N` for the core counts an image
names). Each image says in a comment line at which core counts it is meant
to run, and why not at fewer:

    # cores: 3-64 (the server runs on core 2)

A machine outside that range is skipped with the image's reason. A clean
end is what `sprat boot` exits 0 for: every core halted cleanly and no
program failed, unless the image's comment shows it booted with
`--expect-failures` (its point is a program killed). Runs use the default
quantum, as `sprat boot` does.
"""

import re

import pytest

from emulator.interconnect import list_presets, load_topology
from sprat.boot import DEFAULT_CORES
from tests.conftest import ROOT

IMAGES = sorted((ROOT / "images").glob("*.lst"))
CORES_LINE = re.compile(r"#\s*cores:\s*(\d+)-(\d+)\s*(?:\((.*)\))?\s*$")
MAX_CYCLES = 10**8                     # sprat boot's budget


def core_range(image):
    """(fewest, most, why not fewer) from the image's `# cores:` line, or None."""
    for line in image.read_text().splitlines():
        found = CORES_LINE.match(line)
        if found:
            return int(found[1]), int(found[2]), found[3] or ""
    return None


def expects_failures(image) -> bool:
    """The image's comment boots it with --expect-failures."""
    return any(line.startswith("#") and "--expect-failures" in line
               for line in image.read_text().splitlines())


def machines(image):
    """Every preset by name; and the default machine (a core count, no
    topology, as `sprat boot --cores N` makes it) at the default count and at
    the fewest and most cores the image names."""
    fewest, most, _ = core_range(image) or (1, 64, "")
    return list_presets() + sorted({fewest, DEFAULT_CORES, most})


def machine_shape(machine):
    """(cores, topology or None) for a preset's name or a core count."""
    if isinstance(machine, int):
        return machine, None
    topology = load_topology(machine)
    return topology.n_cores(), topology


MATRIX = [pytest.param(image, machine, id=f"{image.name}-"
                       + (f"cores-{machine}" if isinstance(machine, int) else machine))
          for image in IMAGES for machine in machines(image)]


@pytest.mark.parametrize("image", IMAGES, ids=[image.name for image in IMAGES])
def test_every_image_says_at_which_core_counts_it_runs(image):
    assert core_range(image), f"{image.name} has no '# cores: FEWEST-MOST (why)' line"
    fewest, most, why = core_range(image)
    assert 1 <= fewest <= most <= 64, f"{image.name}: cores {fewest}-{most} is no range"
    assert fewest == 1 or why, f"{image.name} runs on {fewest} cores at least but says not why"


@pytest.mark.parametrize("image, machine", MATRIX)
def test_image_boots_to_a_clean_end_on_the_machine(image, machine):
    from kernel.boot import boot_image
    cores, topology = machine_shape(machine)
    name = topology.name if topology else f"the default machine of {cores} cores"
    fewest, most, why = core_range(image) or (1, 64, "")
    if not fewest <= cores <= most:
        pytest.skip(f"{image.name} runs on {fewest} to {most} cores ({why}); {name} has {cores}")
    system = boot_image(image, cores=cores, topology=topology)
    result = system.machine.run(max_cycles=MAX_CYCLES)
    assert result.clean, f"{image.name} on {name} did not end cleanly: {result.reason}"
    if not expects_failures(image):
        assert system.failures() is None, f"{image.name} on {name}: {system.failures()}"
