"""Trap delivery: the frame and privilege the architecture specifies.

Each test runs a user program under the real CPU driver and looks at the
core at the first instruction of the kernel's handler (a code hook on the
CPU driver's symbol), where the processor's work is done and the kernel's
has not begun.
"""

import struct

import pytest

from unicorn import UC_HOOK_CODE
from unicorn import x86_const as x86

from cpudriver import layout

USER_CS, USER_SS = layout.USER_CS, layout.USER_SS
RFLAGS_IF = 1 << 9


def snapshot_at(symbol, frame_words=7):
    """A setup() that records registers and the stack at `symbol` (first hit)."""
    seen = []

    def setup(system):
        address = system.kernel.symbols[symbol]
        for core in system.machine.cores:
            core.uc.hook_add(UC_HOOK_CODE, recorder(core), begin=address, end=address)

    def recorder(core):
        def hook(uc, addr, size, _):
            if seen:
                return
            rsp = core.regs.read(x86.UC_X86_REG_RSP)
            words = struct.unpack(f"<{frame_words}Q", core.read_virtual(rsp, 8 * frame_words)
                                  if frame_words else b"")
            seen.append({
                "core": core.id, "cpl": core.privilege, "rsp": rsp, "stack": words,
                "rcx": core.regs.read(x86.UC_X86_REG_RCX),
                "r11": core.regs.read(x86.UC_X86_REG_R11),
                "rflags": core.regs.read(x86.UC_X86_REG_RFLAGS),
                "cr2": core.regs.read(x86.UC_X86_REG_CR2),
            })
        return hook
    return setup, seen


def kernel_stack_top(core):
    return layout.PERCORE_BASE + core * layout.PERCORE_SIZE + layout.PC_KSTACK_TOP


def user_address(run, label):
    return run.system.modules[0].program.symbols[label]


def test_user_write_to_kernel_memory_is_a_page_fault_frame_on_the_kernel_stack(run_programs):
    setup, seen = snapshot_at("trap_common")
    run = run_programs({"poke": """
start:
    mov rax, 0x200000
fault:
    mov qword ptr [rax], 1
    call exit
"""}, setup=setup)
    assert run.result.clean, run.result.reason
    frame = seen[0]
    vector, error, rip, cs, rflags, rsp, ss = frame["stack"]
    assert frame["cpl"] == 0, "the handler must run in ring 0"
    assert frame["rsp"] == kernel_stack_top(0) - 7 * 8, "the frame must be on the TSS's RSP0 stack"
    assert vector == 14 and error == 0b111, "present | write | user"
    assert rip == user_address(run, "fault"), "a fault reports the faulting instruction"
    assert (cs, ss) == (USER_CS, USER_SS)
    assert rsp == layout.stack_top(0)
    assert rflags & RFLAGS_IF
    assert frame["cr2"] == 0x200000
    assert frame["rflags"] & RFLAGS_IF == 0, "an interrupt gate clears IF"
    report = run.output(0)[-1]
    assert report.startswith("cpu driver: user fault: #PF page fault at rip ")
    assert f"{rip:#x}" in report and "address 0x200000" in report and "program killed" in report


def test_privileged_instruction_in_user_mode_is_a_general_protection_fault(run_programs):
    setup, seen = snapshot_at("trap_common")
    run = run_programs({"halt": "start:\nprivileged:\n    hlt\n    call exit\n"}, setup=setup)
    vector, error, rip, cs, *_ = seen[0]["stack"]
    assert (vector, error, rip, cs) == (13, 0, user_address(run, "privileged"), USER_CS)
    assert "#GP general protection" in run.output(0)[-1]
    assert run.result.clean


def test_int_through_a_kernel_only_gate_is_a_gp_naming_the_vector(run_programs):
    setup, seen = snapshot_at("trap_common")
    run = run_programs({"int40": "start:\nsoftware:\n    int 0x40\n    call exit\n"}, setup=setup)
    vector, error, rip, *_ = seen[0]["stack"]
    # error code: the IDT bit (2) and the vector, as the SDM specifies
    assert (vector, error, rip) == (13, 0x40 * 8 + 2, user_address(run, "software"))


@pytest.mark.parametrize("instruction", ["int 14", "int 0x40"])
def test_a_programs_int_n_that_became_a_gp_is_reported_as_the_gp(run_programs, instruction):
    """The run's report of a killed program names what was delivered: `int
    14` through the CPU driver's DPL 0 gate is a #GP (it said #PF, reading
    CR2 as the address touched), and `int 0x40` one too (it said nothing)."""
    from kernel.diagnosis import user_faults
    run = run_programs({"intn": f"start:\nsoftware:\n    {instruction}\n    call exit\n"})
    vector = int(instruction.split()[1], 0)
    reported = user_faults(run.system)
    assert len(reported) == 1 and reported[0].startswith("core 0: #GP general protection"), \
        reported
    assert f"(error {vector * 8 + 2:#x}: IDT gate {vector:#x})" in reported[0], reported


def test_int_13_pushes_no_error_code_though_the_gp_exception_does(run_programs):
    """`int n` is a software interrupt: it pushes no error code, even through
    #GP's gate (Intel SDM vol. 3, 6.13). The CPU driver's gate 13 has DPL 0;
    the test opens it to ring 3 as the program starts."""
    snapshot, seen = snapshot_at("vector13", frame_words=5)

    def setup(system):
        snapshot(system)
        attributes = layout.PERCORE_BASE + layout.PC_IDT + 16 * 13 + 5
        start = system.modules[0].program.symbols["start"]

        def open_gate(uc, address, size, _):
            system.machine.memory.write(attributes, bytes([0xEE]))     # present, DPL 3
        system.machine.cores[0].uc.hook_add(UC_HOOK_CODE, open_gate, begin=start, end=start)
    run = run_programs({"int13": "start:\n    int 13\nafter:\n    call exit\n"}, setup=setup)
    assert seen, f"vector 13's handler never ran: {run.result.reason}"
    pushed = (kernel_stack_top(0) - seen[0]["rsp"]) // 8
    assert pushed == 5, f"`int 13` pushed {pushed} words, expected 5 (no error code)"
    rip, cs, _, rsp, ss = seen[0]["stack"]
    assert (rip, cs, rsp, ss) == (user_address(run, "after"), USER_CS, layout.stack_top(0),
                                  USER_SS)


def test_int3_from_user_is_a_breakpoint_trap_after_the_instruction(run_programs):
    setup, seen = snapshot_at("trap_common")
    run = run_programs({"bp": "start:\n    int3\nafter:\n    call exit\n"}, setup=setup)
    vector, error, rip, cs, *_ = seen[0]["stack"]
    assert (vector, rip, cs) == (3, user_address(run, "after"), USER_CS)
    assert seen[0]["cpl"] == 0
    assert "#BP breakpoint" in run.output(0)[-1]


def test_syscall_enters_the_kernel_at_lstar_with_rcx_and_r11(run_programs):
    setup, seen = snapshot_at("syscall_entry", frame_words=0)
    run = run_programs({"call": """
start:
    mov eax, SYS_CORE_ID
    syscall
returned:
    xor edi, edi
    call exit
"""}, setup=setup)
    frame = seen[0]
    assert frame["cpl"] == 0
    assert frame["rcx"] == user_address(run, "returned")
    assert frame["r11"] & RFLAGS_IF, "r11 holds the user's rflags"
    assert frame["rflags"] & RFLAGS_IF == 0, "FMASK clears IF"
    assert frame["rsp"] == layout.stack_top(0), "syscall does not switch stacks"
    assert run.result.clean


def test_system_call_preserves_registers_and_returns_to_ring_3(run_programs):
    run = run_programs({"regs": """
start:
    mov rbx, 0x1111
    mov rdx, 0x2222
    mov r8, 0x3333
    mov r12, 0x4444
    mov r15, 0x5555
    call core_id
    cmp rbx, 0x1111
    jne bad
    cmp rdx, 0x2222
    jne bad
    cmp r8, 0x3333
    jne bad
    cmp r12, 0x4444
    jne bad
    cmp r15, 0x5555
    jne bad
    mov rax, cs
    and eax, 3
    cmp eax, 3
    jne bad
    lea rdi, [rip + good]
    call print_cstr
    xor edi, edi
    call exit
bad:
    lea rdi, [rip + clobbered]
    call print_cstr
    mov edi, 1
    call exit
good:      .asciz "preserved\\n"
clobbered: .asciz "clobbered\\n"
"""})
    assert run.output(0) == ["preserved"]


def test_many_faults_in_a_row_are_each_delivered_as_page_faults(run_programs):
    # Each bad print takes a kernel page fault in the user-copy loop and
    # returns -EFAULT: 200 faults in a row on one core, none a double fault.
    run = run_programs({"badptr": """
start:
    mov r12, 200
again:
    mov rdi, USER_BASE + 0x100000
    mov esi, 8
    call print
    cmp rax, -14
    jne wrong
    dec r12
    jnz again
    lea rdi, [rip + good]
    call print_cstr
    xor edi, edi
    call exit
wrong:
    mov edi, 2
    call exit
good: .asciz "200 x EFAULT\\n"
"""})
    assert run.output(0) == ["200 x EFAULT"]
    assert run.result.clean
    assert run.machine.cores[0].stats.interrupts == 200


def test_a_faulting_program_is_killed_but_the_other_cores_finish(run_programs):
    run = run_programs({
        "crash": "start:\n    xor eax, eax\n    mov qword ptr [rax], 1\n    call exit\n",
        "hello": "start:\n    lea rdi, [rip + msg]\n    call print_cstr\n    xor edi, edi\n"
                 "    call exit\nmsg: .asciz \"still here\\n\"\n",
    }, cores=4, module_args={"crash": "core=1"})
    assert run.result.clean, run.result.reason
    assert "#PF page fault" in run.output(1)[0]
    for core in (0, 2, 3):
        assert run.output(core) == ["still here"]


def test_a_system_call_returns_by_sysret_and_an_interrupt_by_iretq(run_programs):
    hits = {"syscall_return": 0, "trap_return_to_kernel": 0}

    def setup(system):
        core = system.machine.cores[0]
        for label in hits:
            address = system.kernel.symbols[label]

            def count(uc, addr, size, _, label=label):
                hits[label] += 1
            core.uc.hook_add(UC_HOOK_CODE, count, begin=address, end=address)
    run = run_programs({"calls": "start:\n    call core_id\n    call core_id\n    xor edi, edi\n"
                                 "    call exit\n"}, setup=setup)
    assert run.result.clean
    assert hits["syscall_return"] == 2, "each of the two system calls should leave by sysret"
    assert hits["trap_return_to_kernel"] == 1, "the first entry to ring 3 is an iretq"


def test_an_exception_in_trap_delivery_stops_that_core_with_the_reason(run_programs, monkeypatch):
    # Lab 1's students write the delivery: a bug there is their core's
    # failure, said in one line, not a traceback out of the machine.
    from emulator import traps

    def broken(*args):
        raise NotImplementedError("traps: _vector_through_idt is not written yet")
    monkeypatch.setattr(traps, "_vector_through_idt", broken)
    run = run_programs({"poke": "start:\n    mov rax, 0x200000\nfault:\n    mov qword ptr [rax], 1\n"
                                "    call exit\n"})
    assert not run.result.clean
    assert run.result.reason == ("core 0: #PF page fault at RIP "
                                 f"{user_address(run, 'fault'):#x}: delivery raised "
                                 "NotImplementedError: traps: _vector_through_idt is not written yet")


def test_an_exception_in_syscall_delivery_stops_that_core_with_the_reason(run_programs,
                                                                          monkeypatch):
    from emulator import traps

    def broken(core):
        raise NotImplementedError("traps: deliver_syscall is not written yet")
    monkeypatch.setattr(traps, "deliver_syscall", broken)
    run = run_programs({"quiet": "start:\n    xor edi, edi\n    call exit\n"})
    assert not run.result.clean
    assert "delivery raised NotImplementedError: traps: deliver_syscall is not written yet" \
        in run.result.reason
