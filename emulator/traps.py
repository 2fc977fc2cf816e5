"""Trap delivery: what the silicon does between "an event happened" and
"the handler's first instruction runs".

Unicorn executes instructions but does not vector through the guest's IDT,
and `syscall` does not jump to LSTAR by itself (DESIGN.md section 2). So the
hooks of emulator/core.py hand every event here, and this module does what
the Intel SDM (vol. 3, 6.14 "Exception and interrupt handling in 64-bit
mode" and vol. 2, SYSCALL) says the processor does:

  syscall:    RCX <- next RIP, R11 <- RFLAGS, RFLAGS &= ~FMASK,
              CS/SS <- STAR[47:32] (+8), CPL <- 0, RIP <- LSTAR
  interrupt:  read the gate from the IDT; if the privilege changes, switch
              to the stack in the TSS (RSP0, or an IST slot); align it to 16;
              push SS, RSP, RFLAGS, CS, RIP (and an error code); load CS from
              the gate; clear IF for an interrupt gate; RIP <- handler.

The handler is the guest's own assembly and it returns with `iretq` or
`sysret`, which unicorn executes correctly. If the delivery itself faults
(no gate, an unmapped stack) the processor would try #DF and then reset: we
raise TripleFault, which the machine reports as a machine-level failure.

The one trick: privilege lives in unicorn's hidden state, so the new CPL and
segment caches are written into a saved context that is then restored
(emulator/cpustate.py). Restoring also clears the engine's "exception in
flight" record, which it never clears by itself (unicorn issue #1883).
"""

import struct
from dataclasses import dataclass

from unicorn import x86_const as x86

from emulator import cpustate
from emulator.paging import PageFault, read_virtual, write_virtual

# Exception vectors (Intel SDM vol. 3, table 6-1).
DIVIDE_ERROR = 0
DEBUG = 1
BREAKPOINT = 3
INVALID_OPCODE = 6
DOUBLE_FAULT = 8
GENERAL_PROTECTION = 13
PAGE_FAULT = 14
VECTORS_WITH_ERROR_CODE = {8, 10, 11, 12, 13, 14, 17, 21, 29, 30}
FIRST_INTERRUPT_VECTOR = 32     # below: the processor's exceptions

EXCEPTION_NAMES = {
    0: "#DE divide error", 1: "#DB debug", 2: "NMI", 3: "#BP breakpoint", 4: "#OF overflow",
    5: "#BR bound range", 6: "#UD invalid opcode", 7: "#NM no math coprocessor",
    8: "#DF double fault", 10: "#TS invalid TSS", 11: "#NP segment not present",
    12: "#SS stack fault", 13: "#GP general protection", 14: "#PF page fault",
    16: "#MF x87 error", 17: "#AC alignment check", 18: "#MC machine check",
    19: "#XM SIMD error",
}

# RFLAGS bits the processor clears on interrupt entry.
RFLAGS_TF = 1 << 8
RFLAGS_IF = 1 << 9
RFLAGS_NT = 1 << 14
RFLAGS_RF = 1 << 16
RFLAGS_VM = 1 << 17

GATE_INTERRUPT = 0xE
GATE_TRAP = 0xF

# Where the 64-bit TSS keeps its stack pointers (Intel SDM vol. 3, "64-bit TSS format"):
# RSP0..RSP2 for a change to ring 0..2, then IST1..IST7, 8 bytes each.
TSS_RSP0 = 0x04
TSS_IST1 = 0x24

# Segment descriptor flag bits as the engine keeps them (the descriptor's
# high dword); used for the fixed descriptors SYSCALL loads.
DESC_A = 1 << 8
DESC_W = 1 << 9           # writable (data) / readable (code)
DESC_CODE = 1 << 11
DESC_S = 1 << 12
DESC_P = 1 << 15
DESC_L = 1 << 21
DESC_B = 1 << 22
DESC_G = 1 << 23
DESC_DPL_SHIFT = 13
SYSCALL_CS_FLAGS = DESC_G | DESC_P | DESC_S | DESC_CODE | DESC_W | DESC_A | DESC_L
SYSCALL_SS_FLAGS = DESC_G | DESC_B | DESC_P | DESC_S | DESC_W | DESC_A

MSR_STAR = 0xC000_0081
MSR_LSTAR = 0xC000_0082
MSR_FMASK = 0xC000_0084
SYSCALL_LENGTH = 2        # unicorn adds this to RIP after the syscall hook


class TripleFault(Exception):
    """Delivery failed twice over: on hardware the core would reset."""


def exception_name(vector: int) -> str:
    return EXCEPTION_NAMES.get(vector, f"vector {vector}")


def deliver_syscall(core) -> None:
    """Enter the kernel at LSTAR, as the SYSCALL instruction does."""
    # LAB traps BEGIN syscall
    regs = core.regs
    next_rip = regs.read(x86.UC_X86_REG_RIP) + SYSCALL_LENGTH
    rflags = regs.read(x86.UC_X86_REG_RFLAGS)
    star = core.read_msr(MSR_STAR)
    lstar = core.read_msr(MSR_LSTAR)
    fmask = core.read_msr(MSR_FMASK)
    kernel_cs = (star >> 32) & 0xFFFC
    _switch_privilege(core, 0,
                      cs=(kernel_cs, 0, 0xFFFF_FFFF, SYSCALL_CS_FLAGS),
                      ss=(kernel_cs + 8, 0, 0xFFFF_FFFF, SYSCALL_SS_FLAGS))
    regs.write(x86.UC_X86_REG_RCX, next_rip)
    regs.write(x86.UC_X86_REG_R11, rflags)
    regs.write(x86.UC_X86_REG_RFLAGS, rflags & ~fmask)
    regs.write(x86.UC_X86_REG_RIP, lstar - SYSCALL_LENGTH)
    # LAB traps END syscall


@dataclass(frozen=True)
class Delivery:
    """What one delivery did: the gate whose handler now runs, and the error
    code on top of its frame (None: the frame has none). The debugger reads
    the frame by it: an `int 13` pushes no error code, `int 0x40` through a
    kernel-only gate becomes a #GP that pushes one."""
    vector: int
    error_code: int | None


def pushes_error_code(vector: int, software: bool) -> bool:
    """Does delivering `vector` push an error code? Only the exceptions that
    have one, and never for `int n` (SDM vol. 3, 6.13)."""
    return vector in VECTORS_WITH_ERROR_CODE and not software


def deliver_interrupt(core, vector: int, error_code: int | None = None,
                      software: bool = False, return_rip: int | None = None) -> Delivery:
    """Vector through the guest's IDT: the common path of every interrupt.

    `software` is set for `int n`, whose gate must allow the caller's
    privilege. `return_rip` is the RIP to push (the faulting instruction for
    a fault, the next one for `int n` and external interrupts). Returns what
    was delivered: another event than `vector` when the gate refused the
    caller (#GP) or the delivery faulted (#DF).
    """
    try:
        _vector_through_idt(core, vector, error_code, software, return_rip)
        return Delivery(vector, (error_code or 0) if pushes_error_code(vector, software) else None)
    except _GateTooPrivileged:
        # `int n` through a gate the caller may not use is a #GP at the int
        # instruction, whose error code names the gate (index * 8, IDT bit 2).
        return deliver_interrupt(core, GENERAL_PROTECTION, vector * 8 + 2,
                                 return_rip=_software_interrupt_start(core, vector))
    except _DeliveryFault as first:
        # A fault while delivering becomes a double fault; a fault while
        # delivering that is a triple fault.
        if vector == DOUBLE_FAULT:
            raise TripleFault(f"{exception_name(vector)} could not be delivered: {first}") from None
        try:
            _vector_through_idt(core, DOUBLE_FAULT, 0, False, return_rip)
        except _DeliveryFault as second:
            raise TripleFault(f"{exception_name(vector)} could not be delivered ({first}), "
                              f"nor the double fault ({second})") from None
        return Delivery(DOUBLE_FAULT, 0)


class _DeliveryFault(Exception):
    pass


class _GateTooPrivileged(Exception):
    pass


def _software_interrupt_start(core, vector):
    """The address of the `int n` (2 bytes) or `int3` (1 byte) just executed."""
    rip = core.regs.read(x86.UC_X86_REG_RIP)
    try:
        if vector == BREAKPOINT and core.read_virtual(rip - 1, 1) == b"\xcc":
            return rip - 1
    except PageFault:
        pass
    return rip - 2


def _vector_through_idt(core, vector, error_code, software, return_rip):
    """Deliver one event through IDT gate `vector`: stack, frame, privilege, RIP.

    Raises _GateTooPrivileged for `int n` through a gate whose DPL is below
    the caller's CPL, and _DeliveryFault (from the helpers below) when a
    table or the stack cannot be used; deliver_interrupt turns those into
    #GP and #DF.
    """
    # LAB traps BEGIN vector
    regs = core.regs
    rip = regs.read(x86.UC_X86_REG_RIP) if return_rip is None else return_rip
    rflags = regs.read(x86.UC_X86_REG_RFLAGS)
    old_cs = regs.read(x86.UC_X86_REG_CS) & 0xFFFF      # a selector: 16 bits
    old_ss = regs.read(x86.UC_X86_REG_SS) & 0xFFFF
    old_rsp = regs.read(x86.UC_X86_REG_RSP)
    cpl = old_cs & 3

    handler, selector, gate_type, gate_dpl, ist = _read_gate(core, vector)
    if software and gate_dpl < cpl:
        raise _GateTooPrivileged()
    cs_descriptor = _read_descriptor(core, selector)
    new_cpl = (cs_descriptor[3] >> DESC_DPL_SHIFT) & 3

    if ist:
        rsp = _read_tss_u64(core, TSS_IST1 + 8 * (ist - 1))
    elif new_cpl < cpl:
        rsp = _read_tss_u64(core, TSS_RSP0 + 8 * new_cpl)
    else:
        rsp = old_rsp
    rsp &= ~0xF

    frame = [old_ss, old_rsp, rflags, old_cs, rip]
    # `int n` pushes none, even `int 13` (SDM vol. 3, 6.13): why those gates have DPL 0
    if vector in VECTORS_WITH_ERROR_CODE and not software:
        frame.append(error_code or 0)
    rsp -= 8 * len(frame)
    try:
        core.write_virtual(rsp, struct.pack(f"<{len(frame)}Q", *reversed(frame)))
    except PageFault as fault:
        raise _DeliveryFault(f"interrupt stack at {fault.address:#x} is not mapped writable") from None

    new_ss = (new_cpl, 0, 0, new_cpl << DESC_DPL_SHIFT) if new_cpl != cpl else None
    _switch_privilege(core, new_cpl, cs=(selector & 0xFFFC | new_cpl,) + cs_descriptor[1:],
                      ss=new_ss)
    cleared = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM
    if gate_type == GATE_INTERRUPT:
        cleared |= RFLAGS_IF
    regs.write(x86.UC_X86_REG_RFLAGS, rflags & ~cleared)
    regs.write(x86.UC_X86_REG_RSP, rsp)
    regs.write(x86.UC_X86_REG_RIP, handler)
    # LAB traps END vector
    core.stats.interrupts += 1


def _read_gate(core, vector):
    """Decode a 16-byte long-mode IDT gate: (handler, selector, type, dpl, ist)."""
    _, base, limit, _ = core.uc.reg_read(x86.UC_X86_REG_IDTR)
    if vector * 16 + 15 > limit:
        raise _DeliveryFault(f"vector {vector} is beyond the IDT limit {limit:#x}")
    try:
        raw = core.read_virtual(base + vector * 16, 16)
    except PageFault:
        raise _DeliveryFault(f"IDT at {base:#x} is not mapped") from None
    low, selector, ist, attributes, middle, high, _ = struct.unpack("<HHBBHII", raw)
    if not attributes & 0x80:
        raise _DeliveryFault(f"IDT gate {vector} is not present")
    gate_type = attributes & 0xF
    if gate_type not in (GATE_INTERRUPT, GATE_TRAP):
        raise _DeliveryFault(f"IDT gate {vector} has type {gate_type:#x}, not a 64-bit gate")
    handler = low | (middle << 16) | (high << 32)
    return handler, selector, gate_type, (attributes >> 5) & 3, ist & 7


def _read_descriptor(core, selector):
    """Read a code descriptor from the GDT: (selector, base, limit, flags)."""
    _, base, limit, _ = core.uc.reg_read(x86.UC_X86_REG_GDTR)
    index = selector & ~7
    if index == 0 or index + 7 > limit:
        raise _DeliveryFault(f"gate selector {selector:#x} is not in the GDT")
    try:
        low, high = struct.unpack("<II", core.read_virtual(base + index, 8))
    except PageFault:
        raise _DeliveryFault(f"GDT at {base:#x} is not mapped") from None
    if not high & DESC_P or not high & DESC_CODE:
        raise _DeliveryFault(f"selector {selector:#x} is not a present code segment")
    seg_base = (low >> 16) | ((high & 0xFF) << 16) | (high & 0xFF00_0000)
    seg_limit = (low & 0xFFFF) | (high & 0x000F_0000)
    if high & DESC_G:
        seg_limit = (seg_limit << 12) | 0xFFF
    return selector, seg_base, seg_limit, high


def _read_tss_u64(core, offset):
    """Read the 8-byte field at `offset` in the TSS that TR points at."""
    _, base, limit, _ = core.uc.reg_read(x86.UC_X86_REG_TR)
    if offset + 7 > limit:
        raise _DeliveryFault("no TSS loaded (ltr) to switch stacks with")
    try:
        return struct.unpack("<Q", core.read_virtual(base + offset, 8))[0]
    except PageFault:
        raise _DeliveryFault(f"TSS at {base:#x} is not mapped") from None


def _switch_privilege(core, cpl, cs, ss=None):
    """Load CS (and SS) descriptor caches and the CPL into the engine."""
    context = core.context
    context.save()
    context.load_segment(cpustate.SEG_CS, *cs)
    if ss is not None:
        context.load_segment(cpustate.SEG_SS, *ss)
    hflags = context.read_u32(cpustate.HFLAGS)
    context.write_u32(cpustate.HFLAGS, (hflags & ~cpustate.HF_CPL_MASK) | cpl)
    context.restore()        # (the exception in flight the core cleared before delivery)
