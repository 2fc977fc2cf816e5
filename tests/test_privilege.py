"""Ring 3 cannot reach the hardware: every privileged instruction faults and
changes nothing, and nothing a program executes reads the host.

Each case runs one instruction in a user program on core 0 under the real
CPU driver, next to a program on core 1 that must finish untouched. At the
first instruction of the kernel's trap path (trap_common) the frame must
name the fault and the instruction, and the registers must be the ones the
program set before it: the instruction has not happened. Afterwards no
device may have seen it: no console byte, no power-off, no call into the
capability service from ring 3 (emulator/privilege.py says how).
"""

import struct

import pytest
from unicorn import UC_HOOK_CODE
from unicorn import x86_const as x86

from cpudriver import layout

GP, UD = 13, 6
CONSOLE, POWER, HYPERCALL = 0xE9, 0xF4, 0xA0
RAX = 0x1122_3344_5566_0007          # al = 7: the exit code a power-off would take
RCX = 4                              # a `rep` count
BUFFER = layout.stack_top(0) - 64  # rsi and rdi: writable user memory

# (instruction, port in dx, vector, error code). One entry, one guest program.
CASES = [
    *[(f"in {reg}, {CONSOLE:#x}", 0, GP, 0) for reg in ("al", "ax", "eax")],
    *[(f"in {reg}, dx", CONSOLE, GP, 0) for reg in ("al", "ax", "eax")],
    *[(f"out {port:#x}, al", 0, GP, 0) for port in (CONSOLE, POWER, HYPERCALL)],
    *[(f"out {CONSOLE:#x}, {reg}", 0, GP, 0) for reg in ("ax", "eax")],
    *[(f"out dx, {reg}", port, GP, 0) for reg in ("al", "ax", "eax")
      for port in (CONSOLE, POWER, HYPERCALL)],
    *[(f"{prefix}{op}{width}", port, GP, 0) for prefix in ("", "rep ") for op in ("ins", "outs")
      for width in "bwd" for port in (CONSOLE, POWER)],
    ("cli", 0, GP, 0), ("sti", 0, GP, 0), ("hlt", 0, GP, 0),
    *[(f"mov rbx, cr{n}", 0, GP, 0) for n in (0, 2, 3, 4, 8)],
    *[(f"mov cr{n}, rbx", 0, GP, 0) for n in (0, 2, 3, 4, 8)],
    ("lmsw bx", 0, GP, 0), ("clts", 0, GP, 0),
    ("rdmsr", 0, GP, 0), ("wrmsr", 0, GP, 0),
    ("lgdt [rsp]", 0, GP, 0), ("lidt [rsp]", 0, GP, 0), ("ltr bx", 0, GP, 0), ("lldt bx", 0, GP, 0),
    ("invlpg [rsp]", 0, GP, 0), ("swapgs", 0, GP, 0), ("wbinvd", 0, GP, 0), ("invd", 0, GP, 0),
    ("sysret", 0, GP, 0), ("sysexit", 0, GP, 0),
    *[(f"mov rbx, dr{n}", 0, GP, 0) for n in (0, 6, 7)],
    *[(f"mov dr{n}, rbx", 0, GP, 0) for n in (0, 7)],
    ("rdpmc", 0, GP, 0),
    ("int 0x40", 0, GP, 0x40 * 8 + 2),
    ("sysenter", 0, UD, 0),
    # iretq to a ring-0 selector: #GP naming the selector, at the iretq
    ("push 0x10\n    push rsp\n    pushfq\n    push 0x08\n    push rsp\nprivileged:\n    iretq",
     0, GP, layout.KERNEL_CS),
]


def program(instruction: str, port: int) -> str:
    label = "" if "privileged:" in instruction else "privileged:\n"
    return f"""
start:
    mov rax, {RAX:#x}
    mov ecx, {RCX}
    mov edx, {port:#x}
    mov rsi, {BUFFER:#x}
    mov rdi, {BUFFER:#x}
    mov rbx, 0x2b
{label}    {instruction}
    lea rdi, [rip + survived]
    call print_cstr
    mov edi, 3
    call exit
survived: .asciz "survived\\n"
"""


NEIGHBOUR = """
start:
    lea rdi, [rip + message]
    call print_cstr
    xor edi, edi
    call exit
message: .asciz "still here\\n"
"""


def watch(system, seen, user_hypercalls):
    """Record the core at trap_common, and every hypercall made from ring 3."""
    core = system.machine.cores[0]
    entry = system.kernel.symbols["trap_common"]

    def at_trap(uc, address, size, _):
        if seen:
            return
        rsp = core.regs.read(x86.UC_X86_REG_RSP)
        vector, error, rip, cs = struct.unpack("<4Q", core.read_virtual(rsp, 32))
        registers = {name: core.regs.read(getattr(x86, f"UC_X86_REG_{name.upper()}"))
                     for name in ("rax", "rcx", "rdx", "rsi", "rdi")}
        seen.append((vector, error, rip, cs, registers))
    core.uc.hook_add(UC_HOOK_CODE, at_trap, begin=entry, end=entry)

    service = system.machine._hypercall_handler

    def checked_service(calling_core):
        if calling_core.privilege != 0:
            user_hypercalls.append(calling_core.id)
        service(calling_core)
    system.machine.set_hypercall_handler(checked_service)


@pytest.mark.parametrize("instruction, port, vector, error", CASES,
                         ids=[case[0].split("\n")[-1].strip() + f"@{case[1]:#x}" for case in CASES])
def test_privileged_instruction_in_ring_3_faults_and_changes_nothing(
        run_programs, instruction, port, vector, error):
    seen, user_hypercalls = [], []
    run = run_programs({"hostile": program(instruction, port), "neighbour": NEIGHBOUR}, cores=2,
                       module_args={"hostile": "core=0", "neighbour": "core=1"},
                       setup=lambda system: watch(system, seen, user_hypercalls))
    where = run.system.modules[0].program.symbols["privileged"]
    assert seen, f"`{instruction}` ran in ring 3 without a fault: {run.output(0)}"
    got_vector, got_error, rip, cs, registers = seen[0]
    assert (got_vector, got_error) == (vector, error), \
        f"`{instruction}` raised vector {got_vector} error {got_error:#x}, not {vector} {error:#x}"
    assert (rip, cs) == (where, layout.USER_CS), \
        f"the fault must report the instruction at {where:#x}, not {rip:#x}"
    if "iretq" not in instruction:
        before = {"rax": RAX, "rcx": RCX, "rdx": port, "rsi": BUFFER, "rdi": BUFFER}
        assert registers == before, f"`{instruction}` changed registers before faulting"
    name = "#GP general protection" if vector == GP else "#UD invalid opcode"
    assert run.output(0) == [f"cpu driver: user fault: {name} at rip {where:#x}, "
                             f"error {error:#x}: program killed"], \
        "nothing but the fault report may reach core 0's console"
    assert run.result.clean, f"core 0 was switched off or failed: {run.result.reason}"
    assert not user_hypercalls, "the capability service was called from ring 3"
    assert run.output(1) == ["still here"], "the program on core 1 was disturbed"


def test_popf_cannot_raise_iopl_to_open_the_ports(run_programs):
    run = run_programs({"iopl": """
start:
    pushfq
    or qword ptr [rsp], 0x3000
    popfq
    mov al, 7
privileged:
    out 0xf4, al
    xor edi, edi
    call exit
"""})
    where = run.system.modules[0].program.symbols["privileged"]
    assert run.output(0) == [f"cpu driver: user fault: #GP general protection at rip {where:#x}, "
                             f"error 0x0: program killed"]
    assert run.result.clean, run.result.reason


def grant_console_port(system):
    """When the program starts, give its core a TSS I/O bitmap that opens
    port 0xE9 and nothing else (the CPU driver's TSS has no bitmap)."""
    core = system.machine.cores[0]
    start = system.modules[0].program.symbols["start"]
    map_offset = 0x68                 # right after the 104-byte TSS
    bitmap = bytearray(b"\xff" * 33)  # ports 0-255, and the byte after them
    bitmap[CONSOLE // 8] &= ~(1 << (CONSOLE % 8))

    def at_start(uc, address, size, _):
        selector, base, limit, flags = uc.reg_read(x86.UC_X86_REG_TR)
        core.write_virtual(base + 0x66, struct.pack("<H", map_offset))
        core.write_virtual(base + map_offset, bytes(bitmap))
        uc.reg_write(x86.UC_X86_REG_TR, (selector, base, map_offset + len(bitmap) - 1, flags))
    core.uc.hook_add(UC_HOOK_CODE, at_start, begin=start, end=start)


def test_a_port_the_tss_bitmap_grants_is_open_to_ring_3_and_no_other(run_programs):
    run = run_programs({"granted": """
start:
    mov al, 'A'
    out 0xe9, al
    mov al, 10
    out 0xe9, al
    mov al, 7
privileged:
    out 0xf4, al
    xor edi, edi
    call exit
"""}, setup=grant_console_port)
    where = run.system.modules[0].program.symbols["privileged"]
    assert run.output(0) == ["A", f"cpu driver: user fault: #GP general protection at rip "
                                  f"{where:#x}, error 0x0: program killed"]
    assert run.result.clean, run.result.reason


def test_the_cpu_driver_still_prints_serves_capabilities_and_powers_off(run_programs):
    kernel_hypercalls = []

    def count(system):
        service = system.machine._hypercall_handler

        def counted(core):
            kernel_hypercalls.append(core.privilege)
            service(core)
        system.machine.set_hypercall_handler(counted)
    run = run_programs({"caps": """
start:
    mov edi, 1 << 16                  # the root CNode's first slot: RAM
    xor esi, esi                      # field 0: the type
    call cap_identify
    mov rdi, rax
    call print_u64
    lea rdi, [rip + newline]
    call print_cstr
    xor edi, edi
    call exit
newline: .asciz "\\n"
"""}, setup=count)
    assert run.result.clean, run.result.reason
    assert len(run.output(0)) == 1 and run.output(0)[0].isdigit()
    assert kernel_hypercalls and set(kernel_hypercalls) == {0}


# --- Nothing reads the host ------------------------------------------------------

IDENTITY = """
start:
    mov eax, 1
    cpuid
    mov rdi, rcx
    call print_line                   # CPUID.1:ECX (bit 30: RDRAND)
    mov eax, 7
    xor ecx, ecx
    cpuid
    mov rdi, rbx
    call print_line                   # CPUID.7.0:EBX (bit 18: RDSEED)
    mov eax, 0x80000001
    cpuid
    mov rdi, rdx
    call print_line                   # CPUID.80000001h:EDX (bit 27: RDTSCP)
    rdtscp
    mov r12, rcx
    shl rdx, 32
    or rax, rdx
    mov rdi, rax
    call print_line                   # the time stamp counter
    mov rdi, r12
    call print_line                   # IA32_TSC_AUX
random:
    rdrand rax
    xor edi, edi
    call exit

print_line:
    call print_u64
    lea rdi, [rip + newline]
    jmp print_cstr
newline: .asciz "\\n"
"""

TSC_AUX = 0xC000_0103


def set_tsc_aux(system):
    system.machine.cores[0].uc.reg_write(x86.UC_X86_REG_MSR, (TSC_AUX, 41))


def test_rdtscp_cpuid_and_rdrand_give_the_same_run_twice(run_programs):
    first = run_programs({"identity": IDENTITY}, setup=set_tsc_aux)
    second = run_programs({"identity": IDENTITY}, setup=set_tsc_aux)
    assert first.lines == second.lines, "two runs of the same image differ"
    assert first.machine.elapsed() == second.machine.elapsed()

    *values, report = first.output(0)
    ecx_1, ebx_7, edx_ext, tsc, aux = map(int, values)
    assert not ecx_1 & (1 << 30), "cpuid must not offer RDRAND: it would read the host"
    assert not ebx_7 & (1 << 18), "cpuid must not offer RDSEED: it would read the host"
    assert edx_ext & (1 << 27), "cpuid offers RDTSCP, which reads the modeled clock"
    assert 0 < tsc < first.machine.elapsed(), f"rdtscp read {tsc}, not the modeled clock"
    assert aux == 41, "rdtscp puts IA32_TSC_AUX in ecx"
    where = first.system.modules[0].program.symbols["random"]
    assert report == f"cpu driver: user fault: #UD invalid opcode at rip {where:#x}, " \
                     f"error 0x0: program killed"


@pytest.mark.parametrize("instruction", ["rdrand rax", "rdseed rax", "rdrand ax", "rdseed ebx"])
def test_rdrand_and_rdseed_are_invalid_opcodes(run_programs, instruction):
    run = run_programs({"random": f"start:\nrandom:\n    {instruction}\n    xor edi, edi\n"
                                  f"    call exit\n"})
    where = run.system.modules[0].program.symbols["random"]
    assert run.output(0) == [f"cpu driver: user fault: #UD invalid opcode at rip {where:#x}, "
                             f"error 0x0: program killed"]
