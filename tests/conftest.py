"""Shared helpers: boot a machine with given programs and capture its console.

Also the hypothesis profiles. `ci` (the default, and what CI runs) is
derandomised: every run tries the same examples, so a failure in CI is a
failure on a developer's machine too, and the fuzz suite's time is fixed.
`long` tries twenty times as many, drawn afresh each run, for a developer
hunting defects: `python -m pytest tests/test_fuzz_*.py --hypothesis-profile=long`.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings

# Fuzz tests build files in tmp_path once per test and reuse them across
# examples (that is safe: nothing an example does changes them), and a
# booted machine is slower than hypothesis expects of one example.
_QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
# No explain phase in CI: it re-runs a failing case dozens of times (half a
# minute for a booted machine) to say which lines matter.
settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          print_blob=True, suppress_health_check=_QUIET,
                          phases=[phase for phase in Phase if phase is not Phase.explain])
settings.register_profile("long", max_examples=2000, derandomize=False, deadline=None,
                          print_blob=True, suppress_health_check=_QUIET)
# `--hypothesis-profile=long` on pytest's command line overrides this.
settings.load_profile(os.environ.get("SPRAT_HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]
USER_LIBRARY = ROOT / "userland" / "lib" / "sprat.S"

# 200 URPC messages from core 0 to core 1 (userland/urpc_stream.S).
STREAM_IMAGE = """title a stream of 200 messages from core 0 to core 1
kernel /cpudriver/cpudriver.S
module /userland/urpc_stream.S core=0 role=0 channel=3 count=200
module /userland/urpc_stream.S core=1 role=1 channel=3 count=200
"""


def control_word_first_workspace(folder: Path) -> Path:
    """Make `folder` a workspace whose urpc_send stores the control word before
    the payload (the mistake labs/05-urpc/wrong/control_word_first.diff
    records: a race no fixed quantum shows on this stream), with the stream
    image in it; return the image. The caller sets the workspace."""
    urpc = (ROOT / "userland/lib/urpc.S").read_text()
    early = "    lea rcx, [rax + 1]\n    mov qword ptr [rdx + URPC_CONTROL], rcx\n"
    racy = urpc.replace("    # the payload first ...\n", early + "    # the payload first ...\n")
    assert racy != urpc, "urpc.S no longer has the line the mistake goes before"
    (folder / "userland/lib").mkdir(parents=True)
    (folder / "userland/lib/urpc.S").write_text(racy)
    image = folder / "stream.lst"
    image.write_text(STREAM_IMAGE)
    return image


@dataclass
class Run:
    system: object
    result: object
    lines: list = field(default_factory=list)

    def output(self, core):
        return [line for c, line in self.lines if c == core]

    @property
    def machine(self):
        return self.system.machine


def write_image(directory: Path, programs: dict[str, str], module_args: dict[str, str] = None,
                kernel="/cpudriver/cpudriver.S") -> Path:
    """An image with the real CPU driver and the given programs (name -> source)."""
    module_args = module_args or {}
    lines = [f"kernel {kernel}"]
    for name, source in programs.items():
        (directory / f"{name}.S").write_text(f'{source}\n.include "{USER_LIBRARY}"\n')
        lines.append(f"module {name}.S {module_args.get(name, '')}".rstrip())
    image = directory / "test.lst"
    image.write_text("\n".join(lines) + "\n")
    return image


def boot_and_run(image, cores=1, quantum=None, max_cycles=10**7, setup=None) -> Run:
    from emulator.scheduler import DEFAULT_QUANTUM
    from kernel.boot import boot_image
    lines = []
    system = boot_image(image, cores=cores, quantum=quantum or DEFAULT_QUANTUM,
                        output=lambda core, line: lines.append((core, line)))
    if setup:
        setup(system)
    result = system.machine.run(max_cycles=max_cycles)
    return Run(system, result, lines)


@pytest.fixture
def run_programs(tmp_path):
    """run_programs({"name": source}, cores=..., module_args=...) -> Run"""
    def run(programs, cores=1, module_args=None, **kwargs):
        image = write_image(tmp_path, programs, module_args)
        return boot_and_run(image, cores=cores, **kwargs)
    return run
