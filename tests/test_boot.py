"""Booting the default image: every core comes up, says hello, halts cleanly."""

import pytest

from cpudriver import layout
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


WHERE_AM_I = """\
# Prints where it runs: its first instruction's address, then its stack pointer.
start:
    mov rbx, rsp
    lea rdi, [rip + start]
    call print_u64
    lea rdi, [rip + space]
    call print_cstr
    mov rdi, rbx
    call print_u64
    lea rdi, [rip + newline]
    call print_cstr
    xor edi, edi
    call exit
space: .asciz " "
newline: .asciz "\\n"
.include "{tree}/userland/lib/sprat.S"
"""


def test_each_program_runs_at_its_own_base_and_copies_of_one_share_it(tmp_path):
    # Lines 1 and 3 are one program (same file, same numeric options); line 2
    # differs in a constant, so it is another program with addresses of its own.
    (tmp_path / "where.S").write_text(WHERE_AM_I.format(tree=ROOT))
    image = tmp_path / "where.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     "module where.S core=0 tag=1\n"
                     "module where.S core=1 tag=2\n"
                     "module where.S core=2 tag=1\n")
    run = boot_and_run(image, cores=3)
    assert run.result.clean, run.result.reason
    first, second, third = run.system.modules
    assert third.program is first.program and third.physical == first.physical, \
        "two lines of the same program should be loaded once"
    assert second.program.base != first.program.base, \
        "two different programs should not share addresses"
    for core, program in ((0, 0), (1, 1), (2, 0)):
        assert run.output(core) == [f"{layout.program_base(program)} "
                                    f"{layout.stack_top(program)}"], \
            f"core {core} should start at program {program}'s base, its stack at its window's top"
