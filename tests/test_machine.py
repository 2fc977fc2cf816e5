"""The bare machine, without sprat's OS: IPIs, hlt, the APIC timer, scheduling.

These guests are tiny ring-0 programs that run with paging off, the state
a core starts in. Each loads a GDT (so that an interrupt's iretq has a code
segment to return to) and an IDT, then does the one thing under test.
"""

import struct

from unicorn import UC_HOOK_CODE

from emulator.assembler import assemble_text
from emulator.core import CoreState
from emulator.devices.apic import IPI_LATENCY_CYCLES
from emulator.machine import Machine

CODE = 0x10000
GDT = 0x3000
IDT = 0x4000
COUNTER = 0x5000
AP_PAGE = 0x20000          # STARTUP vector 0x20

PRELUDE = """
    lgdt [rip + gdtr]
    push 8
    lea rax, [rip + reload_cs_{n}]
    push rax
    retfq
reload_cs_{n}:
    lidt [rip + idtr]
"""

COMMON = f"""
handler:                        # vector 0x40 and 0x41: count, EOI, return
    mov rbx, {COUNTER}
    inc qword ptr [rbx]
    mov rbx, 0xFEE00000
    mov dword ptr [rbx + 0xB0], 0
    iretq
.align 8
gdtr:
    .word 15
    .quad {GDT}
idtr:
    .word 0xFFF
    .quad {IDT}
"""


def build(machine, source, handler_vectors=(0x40, 0x41)):
    parts = source.split("PRELUDE")
    source = parts[0] + "".join(PRELUDE.format(n=n) + part for n, part in enumerate(parts[1:]))
    program = assemble_text(source + COMMON, CODE)
    memory = machine.memory
    memory.write(CODE, program.code)
    memory.write(GDT, struct.pack("<QQ", 0, 0x00AF9A000000FFFF))
    handler = program.symbols["handler"]
    for vector in handler_vectors:
        gate = struct.pack("<HHBBHII", handler & 0xFFFF, 8, 0, 0x8E, (handler >> 16) & 0xFFFF,
                           handler >> 32, 0)
        memory.write(IDT + vector * 16, gate)
    return program


def test_fixed_ipi_wakes_a_halted_core_after_the_ipi_latency():
    machine = Machine(2)
    program = build(machine, f"""
bsp:
    mov rsp, 0x7000
    PRELUDE
    lea rsi, [rip + ap_code]           # copy the AP's code to its STARTUP page
    mov rdi, {AP_PAGE}
    mov ecx, ap_end - ap_code
    rep movsb
    mov rbx, 0xFEE00000
    mov dword ptr [rbx + 0x310], 0x01000000
    mov dword ptr [rbx + 0x300], 0x4500
    mov dword ptr [rbx + 0x300], 0x4620
    mov ecx, 20000                      # give the AP time to halt
spin:
    dec ecx
    jnz spin
send:
    mov dword ptr [rbx + 0x300], 0x40   # fixed IPI, vector 0x40, to core 1
    xor eax, eax
    out 0xF4, al
ap_code:
    movabs rax, ap
    jmp rax
ap_end:
ap:
    mov rsp, 0x8000
    PRELUDE
    sti
    hlt
woken:
    mov rbx, {COUNTER}
    mov rax, qword ptr [rbx]
    sub rax, 1                          # exit code 0 iff the handler ran once
    out 0xF4, al
""")
    times = {}

    def record(label, core):
        def hook(uc, address, size, _):
            times.setdefault(label, core.now())
        core.uc.hook_add(UC_HOOK_CODE, hook, begin=program.symbols[label],
                         end=program.symbols[label])
    record("send", machine.cores[0])
    record("woken", machine.cores[1])
    machine.power_on(CODE)
    result = machine.run(max_cycles=10**6)
    assert result.clean, result.reason
    ap = machine.cores[1]
    assert ap.stats.ipis_received == 3 and ap.stats.interrupts == 1
    assert times["woken"] >= times["send"] + IPI_LATENCY_CYCLES, \
        "the halted core woke before the IPI could have reached it"


def test_apic_timer_interrupts_a_halted_core_after_its_count():
    machine = Machine(1)
    program = build(machine, """
start:
    mov rsp, 0x7000
    PRELUDE
    mov rbx, 0xFEE00000
    mov dword ptr [rbx + 0x3E0], 0xB     # divide by 1
    mov dword ptr [rbx + 0x320], 0x41    # one-shot, vector 0x41
    mov dword ptr [rbx + 0x380], 5000    # go
armed:
    sti
    hlt
woken:
    xor eax, eax
    out 0xF4, al
""")
    seen = {}
    core = machine.cores[0]
    for label in ("armed", "woken"):
        address = program.symbols[label]
        core.uc.hook_add(UC_HOOK_CODE, lambda uc, a, s, _, label=label: seen.setdefault(label, core.now()),
                         begin=address, end=address)
    machine.power_on(CODE)
    result = machine.run(max_cycles=10**6)
    assert result.clean, result.reason
    assert core.stats.interrupts == 1
    assert seen["woken"] - seen["armed"] >= 5000


def test_hlt_with_interrupts_off_ends_the_run_with_a_reason():
    machine = Machine(1)
    build(machine, "start:\n    cli\n    hlt\n")
    machine.power_on(CODE)
    result = machine.run(max_cycles=10**6)
    assert not result.clean
    assert "halted" in result.reason and "nothing will wake it" in result.reason
    assert machine.cores[0].state is CoreState.HALTED


def test_cores_never_started_are_reported():
    machine = Machine(2)
    build(machine, "start:\n    xor eax, eax\n    out 0xF4, al\n")
    machine.power_on(CODE)
    result = machine.run(max_cycles=10**6)
    assert not result.clean and result.reason == "core 1 was never started"


def test_cycle_budget_stops_an_endless_loop():
    machine = Machine(1)
    build(machine, "start:\n    jmp start\n")
    machine.power_on(CODE)
    result = machine.run(max_cycles=50_000)
    assert not result.clean and "cycle budget" in result.reason
    assert 50_000 <= machine.cores[0].cycles < 50_000 + 10_000


def test_scheduler_runs_the_core_furthest_behind():
    machine = Machine(3, quantum=100)
    build(machine, "start:\n    jmp start\n")
    for core in machine.cores:
        core.start(CODE, 0)
    order = []
    for _ in range(9):
        core, time = machine.scheduler.next_core()
        order.append(core.id)
        machine.scheduler.run_one(core, time)
    assert order == [0, 1, 2] * 3
    assert [c.cycles for c in machine.cores] == [300, 300, 300]


def test_a_narrow_register_read_after_a_wide_one_has_no_stale_upper_bytes():
    """Unicorn fills only a register's own width; a read of RFLAGS (4 bytes)
    or CS (2) right after RSP's must not carry RSP's upper bytes (a lab 1
    newcomer's trap frame got RFLAGS 0x8000014312 from that)."""
    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
    from unicorn import x86_const as x86

    from emulator.cpustate import Registers
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    regs = Registers(uc)
    uc.reg_write(x86.UC_X86_REG_RSP, 0x80_0001_FFFD)
    uc.reg_write(x86.UC_X86_REG_EFLAGS, 0x202)
    regs.read(x86.UC_X86_REG_RSP)
    assert regs.read(x86.UC_X86_REG_EFLAGS) == 0x202
    regs.read(x86.UC_X86_REG_RSP)
    assert regs.read(x86.UC_X86_REG_CS) == uc.reg_read(x86.UC_X86_REG_CS)
