"""Booting the default image: every core comes up, says hello, halts cleanly."""

import pytest

from emulator.core import CoreState

from tests.conftest import ROOT, boot_and_run

DEFAULT_IMAGE = ROOT / "images" / "default.lst"


def test_default_image_boots_four_cores_and_each_names_itself():
    run = boot_and_run(DEFAULT_IMAGE, cores=4)
    assert run.result.clean, run.result.reason
    for core in range(4):
        assert run.output(core) == [f"hello from core {core} of 4"], \
            f"core {core} did not print its greeting"


@pytest.mark.parametrize("cores", [32, 64])
def test_many_cores_all_boot(cores):
    run = boot_and_run(DEFAULT_IMAGE, cores=cores)
    assert run.result.clean, run.result.reason
    greeted = {core for core, line in run.lines if line == f"hello from core {core} of {cores}"}
    assert greeted == set(range(cores)), f"cores that never greeted: {set(range(cores)) - greeted}"


def test_bsp_starts_every_ap_with_init_and_startup():
    run = boot_and_run(DEFAULT_IMAGE, cores=4)
    bsp, *aps = run.machine.cores
    assert bsp.stats.ipis_sent == 2 * len(aps)
    assert all(ap.stats.ipis_received == 2 for ap in aps)


def test_every_core_runs_in_user_mode_and_makes_system_calls():
    run = boot_and_run(DEFAULT_IMAGE, cores=2)
    for core in run.machine.cores:
        # print x5 (greeting, two numbers, " of ", newline) + exit
        assert core.stats.syscalls == 6
        # its program done, the core idles, interrupts on, waiting for work
        assert core.state is CoreState.HALTED and core.interrupts_enabled()


def test_same_options_give_the_same_run_instruction_for_instruction():
    def fingerprint():
        run = boot_and_run(DEFAULT_IMAGE, cores=8, quantum=777)
        return run.lines, [(c.stats, c.cycles, c.rip) for c in run.machine.cores]
    assert fingerprint() == fingerprint()


def test_cpu_driver_symbols_are_known():
    run = boot_and_run(DEFAULT_IMAGE, cores=1)
    symbols = run.system.kernel.symbols
    for name in ("kernel_entry", "syscall_entry", "trap_common", "ap_entry"):
        assert name in symbols
    assert symbols["kernel_entry"] == 0x200000
