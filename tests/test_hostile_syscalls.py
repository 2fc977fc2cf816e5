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
                     layout.USER_BASE, layout.program_base(0), layout.stack_top(0) - 8,
                     layout.USER_CHANNELS,
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


# --- capability invocations: nothing is ever mapped without a capability ------------

from kernel.caps import CapType  # noqa: E402
from kernel.caps.invoke import Op  # noqa: E402

ROOT_SLOT = 1 << 16
slots = st.sampled_from([ROOT_SLOT | k for k in range(8)] + [k for k in range(4)] + [2**64 - 1])
cap_args = st.one_of(slots, st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 15, 511, 0x1000,
                                             0x2000, 0x4000]), interesting)
invocations = st.lists(st.tuples(st.sampled_from(list(Op) + [0, 9, 31]),
                                 cap_args, cap_args, cap_args, cap_args, cap_args, cap_args),
                       min_size=1, max_size=25)


R = ROOT_SLOT
RW = 3
# A valid start, so that mappings exist for the random tail to attack: a PD,
# a PT and two frames from the RAM in slot 0, mapped under the PDPT (slot 1),
# and a copy of one frame's capability (so delete and revoke have work).
MAPPED_START = [
    (Op.RETYPE, R | 0, 0x0000, CapType.VNODE_PD, 12, 1, R | 2),
    (Op.RETYPE, R | 0, 0x1000, CapType.VNODE_PT, 12, 1, R | 3),
    (Op.RETYPE, R | 0, 0x2000, CapType.FRAME, 12, 2, R | 4),
    (Op.MAP, R | 1, 1, R | 2, RW, 0, 0),
    (Op.MAP, R | 2, 0, R | 3, RW, 0, 0),
    (Op.MAP, R | 3, 0, R | 4, RW, 0, 0),
    (Op.MAP, R | 3, 1, R | 5, RW, 0, 0),
    (Op.COPY, R | 4, R | 6, 0, 0, 0, 0),
]


def invocation_program(sequence) -> str:
    lines = ["start:"]
    for op, *args in MAPPED_START + list(sequence):
        lines.append(f"    mov eax, {layout.SYS_INVOKE + int(op)}")
        for register, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
            lines.append(f"    mov {register}, {value:#x}")
        lines.append("    syscall")
    lines += ["    xor edi, edi", "    call exit"]
    return "\n".join(lines) + f'\n.include "{USER_LIBRARY}"\n'


def user_leaves(memory, pml4):
    """(virtual, physical) of every present 4 KiB or large page in the user half."""
    def walk(table, level, virtual):
        for index in range(512):
            if level == 0 and index == 0:
                continue                              # the kernel's half
            entry = memory.read_u64(table + 8 * index)
            if not entry & 1:
                continue
            address = virtual | index << (39 - 9 * level)
            physical = entry & 0x000F_FFFF_FFFF_F000
            if level == 3 or (level in (1, 2) and entry & 0x80):
                yield address, physical, 1 << (39 - 9 * level)
            else:
                yield from walk(physical, level + 1, address)
    yield from walk(pml4, 0, 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(invocations)
def test_no_invocation_sequence_maps_memory_without_a_capability(tmp_path, sequence):
    (tmp_path / "grabby.S").write_text(invocation_program(sequence))
    image = tmp_path / "grabby.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule grabby.S core=0\n")
    run = boot_and_run(image, cores=1, max_cycles=3_000_000)
    core = run.machine.cores[0]
    assert core.state is not CoreState.FAILED, core.failure
    assert core.exit_code != PANIC
    slot = layout.PERCORE_BASE + layout.PC_DISPATCHERS
    module = run.system.modules[0]
    allowed = [(module.physical, -(-len(module.program.code) // 4096) * 4096),
               (slot + layout.D_USTACK, layout.USER_STACK_PAGES * 4096),
               (layout.CHANNELS_PHYS, layout.N_USER_CHANNELS * layout.CHANNEL_SIZE)]
    service = run.machine._hypercall_handler
    cspace = service.cspaces.get((0, 0))
    if cspace is not None:
        allowed += [(cap.base, 1 << cap.size_bits) for cap in service.systems[0].held(cspace)
                    if cap.type == CapType.FRAME]
    assert cspace is not None, "the valid start never reached the capability system"
    for virtual, physical, size in user_leaves(run.machine.memory, slot + layout.D_PML4):
        assert any(base <= physical and physical + size <= base + length
                   for base, length in allowed), \
            f"{virtual:#x} maps physical {physical:#x}, which no capability of the program covers"


# --- spawning: a program cannot make CPU drivers wait on each other ----------------

FLOOD = """
# spawns copies of itself on the next core as fast as it can; prints how
# many spawns were refused with -EAGAIN (a full inbox)
start:
    mov r12, rdi
    mov r13, rsi
    mov r14, 24
    xor r15, r15
flood_next:
    lea rax, [r12 + 1]
    xor edx, edx
    div r13
    mov rsi, rdx
    mov rdi, 1
    xor edx, edx
    xor ecx, ecx                      # no channels handed over
    call spawn
    cmp rax, -EAGAIN
    jne flood_counted
    inc r15
flood_counted:
    dec r14
    jnz flood_next
    mov rdi, r15
    call print_u64
    lea rdi, [rip + refused]
    call print_cstr
    xor edi, edi
    call exit
refused: .asciz " refused\\n"
"""


def test_a_spawn_flood_is_refused_not_waited_for(tmp_path):
    """Programs spawning themselves on each other's cores: a full inbox is
    -EAGAIN, and no CPU driver waits with interrupts off for another's."""
    (tmp_path / "flood.S").write_text(f'{FLOOD}\n.include "{USER_LIBRARY}"\n')
    image = tmp_path / "flood.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule flood.S core=0\n"
                     "module flood.S nospawn\n")
    run = boot_and_run(image, cores=4, max_cycles=5_000_000)
    assert run.result.clean, run.result.reason
    refused = [int(line.split()[0]) for _, line in run.lines if line.endswith(" refused")]
    assert refused and sum(refused) > 0, "no spawn was refused: the inboxes never filled"
