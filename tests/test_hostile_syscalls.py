"""Hostile system calls: any numbers in any registers never break the kernel.

A user program may ask anything of the CPU driver. Whatever it asks, the
answer is an error code, its own death, or at worst a deadlock the CPU
driver reports; never a kernel panic, a triple fault, a crash of the
emulator, or a hang (the run ends by the cycle budget at the latest).
"""

from hypothesis import HealthCheck, given, settings, strategies as st

from cpudriver import layout
from emulator.core import CoreState
from tests.conftest import USER_LIBRARY, boot_and_run

PANIC = 1                 # the CPU driver's power-off code for a kernel panic

interesting = st.one_of(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.sampled_from([0, 1, 2, 7, 63, 64, 4095, 4096, 2**63, 2**64 - 1,
                     layout.USER_BASE, layout.USER_STACK_TOP - 8, layout.USER_CHANNELS,
                     layout.KERNEL_BASE, layout.PERCORE_BASE, layout.BOOT_INFO]))
calls = st.lists(st.tuples(st.integers(min_value=0, max_value=layout.N_SYSCALLS + 2),
                           interesting, interesting, interesting, interesting, interesting),
                 min_size=1, max_size=12)


def program(sequence) -> str:
    lines = ["start:"]
    for number, *args in sequence:
        if number == layout.SYS_EXIT:
            continue                       # exiting early proves nothing
        lines.append(f"    mov eax, {number}")
        for register, value in zip(("rdi", "rsi", "rdx", "r10", "r8"), args):
            lines.append(f"    mov {register}, {value:#x}")
        lines.append("    syscall")
    lines += ["    xor edi, edi", "    call exit"]
    return "\n".join(lines) + f'\n.include "{USER_LIBRARY}"\n'


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls)
def test_random_system_calls_never_break_the_kernel(tmp_path, sequence):
    (tmp_path / "hostile.S").write_text(program(sequence))
    image = tmp_path / "hostile.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule hostile.S core=0\n")
    run = boot_and_run(image, cores=2, max_cycles=3_000_000)
    for core in run.machine.cores:
        assert core.state is not CoreState.FAILED, f"core {core.id}: {core.failure}"
        assert core.exit_code != PANIC, f"kernel panic on core {core.id}: {run.output(core.id)}"
    assert not any("KERNEL PANIC" in line for _, line in run.lines)
