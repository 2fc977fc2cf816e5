"""Fuzz: hostile guest programs kill themselves, never the machine or a neighbour.

tests/test_hostile_syscalls.py throws random system calls at the CPU
driver. Here a program does the rest of what a hostile or broken program
does: passes pointers into kernel memory and huge lengths, runs privileged
instructions, jumps and calls into the kernel, writes its own code, runs
random bytes, overflows its stack, reads and writes the kernel's pages.

Every case runs the hostile program on core 0 next to a neighbour on the
same core (another dispatcher, other page tables) and one on core 1. The
neighbour fills part of its stack with a pattern, yields for a while so
the hostile program runs between, then checks the pattern and says so. A
case passes when the run ends (cleanly, or by the cycle budget if the
hostile program loops), no core failed or panicked, every fault report
names the hostile program's death and nothing else, both neighbours say
their memory is intact, and not a byte of the CPU driver's code or of any
program's code changed.
"""

from hypothesis import event, given, settings, strategies as st

from cpudriver import layout
from emulator.core import CoreState
from tests.conftest import boot_and_run, write_image
from tests.fuzzing import CASE_SECONDS, examples, time_limit

PANIC = 1                          # the CPU driver's power-off code for a kernel panic
MAX_CYCLES = 2_000_000
PATTERN = 0x5A5A_1234_C0DE_0000    # + the word's index

NEIGHBOUR = f"""
# Fill 32 stack words with a pattern, yield 40 times, check them.
start:
    mov r12, rdi
    mov ecx, 32
fill:
    mov rax, {PATTERN:#x}
    add rax, rcx
    push rax
    dec ecx
    jnz fill
    mov r13, 40
wait:
    call yield
    dec r13
    jnz wait
    mov ecx, 1
check:
    mov rax, {PATTERN:#x}
    add rax, rcx
    cmp [rsp + rcx * 8 - 8], rax
    jne broken
    inc ecx
    cmp ecx, 33
    jne check
    lea rdi, [rip + intact]
    call print_cstr
    xor edi, edi
    call exit
broken:
    lea rdi, [rip + damaged]
    call print_cstr
    mov edi, 9
    call exit
intact:  .asciz "neighbour: memory intact\\n"
damaged: .asciz "neighbour: memory CHANGED\\n"
"""

KERNEL_ADDRESSES = [0, layout.TRAMPOLINE, layout.BOOT_INFO, layout.KERNEL_BASE,
                    layout.KERNEL_BASE + 0x100, layout.MODULES_BASE, layout.CHANNELS_PHYS,
                    layout.KERNEL_INBOXES, layout.PERCORE_BASE, layout.PERCORE_BASE + layout.PC_IDT,
                    layout.PERCORE_BASE + layout.PC_DISPATCHERS, layout.PERCORE_BASE + 0x40000,
                    layout.APIC_BASE, 0x7FFF_FFFF_F000, 0xFFFF_8000_0000_0000,
                    0xFFFF_FFFF_FFFF_F000, layout.USER_BASE - 8, layout.stack_top(0),
                    layout.USER_CHANNELS, layout.USER_CHANNELS + layout.CHANNELS_SIZE]
ADDRESSES = st.one_of(st.sampled_from(KERNEL_ADDRESSES), st.integers(0, 2**64 - 1))
LENGTHS = st.sampled_from([0, 1, 4096, 4097, 2**31, 2**32 + 1, 2**63, 2**64 - 1, layout.MAX_PRINT,
                           layout.MAX_PRINT + 1])
PRIVILEGED = st.sampled_from([
    "cli", "sti", "hlt", "in al, 0xe9", "out 0xf4, al", "out 0xa0, al", "mov rbx, cr3",
    "mov cr3, rbx", "mov cr0, rbx", "rdmsr", "wrmsr", "lgdt [rsp]", "lidt [rsp]", "ltr bx",
    "invlpg [rsp]", "swapgs", "wbinvd", "sysret", "sysenter", "int 0x20", "int 0x21", "int 0x80",
    "int3", "int1", "ud2", "rdpmc", "mov dr7, rbx", "clts", "iretq", "rdrand rax", "rdseed rax",
    "xsetbv", "mov ss, bx", "mov ds, bx", "pop fs", "push 0x08\n    pop ss"])


def syscall(number, arguments):
    lines = [f"    mov eax, {number}"]
    lines += [f"    mov {register}, {value:#x}"
              for register, value in zip(("rdi", "rsi", "rdx", "r10", "r8"), arguments)]
    return "\n".join(lines + ["    syscall"])


ACTIONS = st.one_of(
    # system calls with pointers into the kernel and huge lengths
    st.builds(lambda address, length: syscall(layout.SYS_PRINT, [address, length]),
              ADDRESSES, LENGTHS),
    st.builds(lambda number, address, length: syscall(number, [address, length, address]),
              st.sampled_from([layout.SYS_LMP_SEND, layout.SYS_LMP_RECV, layout.SYS_LMP_CALL,
                               layout.SYS_SPAWN, layout.SYS_CHANNEL_MAP, layout.SYS_CHANNEL_UNMAP,
                               layout.SYS_INVLPG, layout.SYS_START_CORE, layout.SYS_INVOKE + 6]),
              ADDRESSES, LENGTHS),
    # privileged instructions, with something plausible in the registers
    st.builds(lambda instruction: f"    mov rbx, 0x10\n    mov edx, 0xe9\n    {instruction}",
              PRIVILEGED),
    # reads and writes anywhere
    st.builds(lambda address: f"    mov rax, {address:#x}\n    mov rbx, [rax]", ADDRESSES),
    st.builds(lambda address: f"    mov rax, {address:#x}\n    mov qword ptr [rax], rax",
              ADDRESSES),
    st.builds(lambda address: f"    mov rdi, {address:#x}\n    mov ecx, 4096\n    rep stosb",
              ADDRESSES),
    # jumps and calls into the kernel (or anywhere)
    st.builds(lambda address, how: f"    mov rax, {address:#x}\n    {how} rax", ADDRESSES,
              st.sampled_from(["jmp", "call"])),
    st.just("    mov rsp, 0x200100\n    ret"),
    # self-modifying code: write its own code, or code into the channel window and run it
    st.just("    lea rax, [rip]\n    mov byte ptr [rax + 8], 0x90"),
    st.just(f"    mov rax, {layout.USER_CHANNELS:#x}\n    mov dword ptr [rax], 0xc3c3c3c3\n"
            "    call rax"),
    # the stack: overflow it, or move it into the kernel and push
    st.just("overflow_{n}:\n    push rax\n    call overflow_{n}"),
    st.builds(lambda address: f"    mov rsp, {address:#x}\n    push rax", ADDRESSES),
    # random bytes as code
    st.binary(min_size=1, max_size=24).map(
        lambda code: "    .byte " + ", ".join(f"{byte:#04x}" for byte in code)),
)


def hostile_program(actions) -> str:
    body = [action.replace("{n}", str(index)) for index, action in enumerate(actions)]
    return "start:\n" + "\n".join(body) + "\n    xor edi, edi\n    call exit\n"


def code_of(system):
    """Every byte the CPU driver and the programs run, as loaded."""
    regions = [(layout.KERNEL_BASE, len(system.kernel.code))]
    regions += [(module.physical, len(module.program.code)) for module in system.modules]
    return [system.machine.memory.read(base, size) for base, size in regions]


@settings(max_examples=examples(40))
@given(actions=st.lists(ACTIONS, min_size=1, max_size=4))
def test_a_hostile_program_dies_alone(tmp_path, actions):
    image = write_image(tmp_path, {"hostile": hostile_program(actions), "neighbour": NEIGHBOUR},
                        module_args={"hostile": "core=0", "neighbour": "core=0"})
    image.write_text(image.read_text() + "module neighbour.S core=1\n")
    at_boot = []
    with time_limit(CASE_SECONDS, "a hostile program"):
        run = boot_and_run(image, cores=2, max_cycles=MAX_CYCLES,
                           setup=lambda system: at_boot.extend(code_of(system)))
    failed = [core for core in run.machine.cores if core.state is CoreState.FAILED]
    assert not failed, f"core {failed[0].id} failed: {failed[0].failure}"
    for core in run.machine.cores:
        assert core.exit_code != PANIC, f"kernel panic on core {core.id}: {run.output(core.id)}"
    assert not any("KERNEL PANIC" in line for _, line in run.lines), run.lines
    neighbours = [line for _, line in run.lines if line.startswith("neighbour:")]
    assert neighbours == ["neighbour: memory intact"] * 2, \
        f"a neighbour of the hostile program was disturbed: {neighbours}"
    reports = [line for _, line in run.lines if line.startswith("cpu driver:")]
    assert len(reports) <= 1 and all("program killed" in line for line in reports), \
        f"only the hostile program may die, once: {reports}"
    assert code_of(run.system) == at_boot, "a byte of the CPU driver's or a program's code changed"
    event("killed" if reports else "exited" if run.result.clean else run.result.reason[:30])
