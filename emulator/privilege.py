"""The protection checks the silicon makes and unicorn leaves out.

Unicorn 2.1.4 faults on most privileged instructions in ring 3 as the
processor does (`hlt`, `cli`, `mov cr3`, `rdmsr`, `lgdt`, `invlpg`,
`swapgs`, `wbinvd`, `sysret`, `iretq` to ring 0, `mov dr7`, ... raise #GP;
tests/test_privilege.py runs each one). Three it gets wrong, and this module
holds what the machine does instead:

  in/out/ins/outs  unicorn dropped QEMU's I/O permission check and calls the
                   port hooks from any ring. `io_permitted` makes the check of
                   Intel SDM vol. 1, 19.5: CPL <= IOPL, or else every bit for
                   the accessed ports clear in the TSS's I/O permission bitmap.
  sysenter         unicorn runs its hooks and goes on (a no-op); in long mode
                   on an AMD64 core it is an invalid opcode (emulator/core.py).
  rdpmc            QEMU has no counters and says #UD whatever the privilege
                   (and tests CR4.PCE the wrong way round, which matters only
                   if an OS sets it); `invalid_opcode_vector` makes it #GP(0)
                   in ring 3 with CR4.PCE clear, as the SDM specifies.

A denied port access cannot be stopped from inside the hook: unicorn calls
it in the middle of the instruction and finishes it afterwards (`in` still
writes rax, `ins`/`outs` still step rdi/rsi, `rep` still counts rcx down),
and a RIP written by the hook is overwritten by the next instruction. So
the hook keeps the device out of it, notes a `PendingFault` with the
registers the instruction may change, and ends the quantum right after the
instruction; `Core.run` then puts the registers back and delivers #GP(0) at
the instruction, as if it had never run. One trace remains that the hook
cannot undo: `ins` stores a zero at [rdi] before it reads the port (QEMU's
store that makes a page fault restartable), a store the program could have
made itself; if it may not store there, it gets #PF where the processor
would give #GP. Either way the program dies and no device hears of it.

The instructions that would read the host, `rdtscp` and `rdrand`/`rdseed`,
are emulator/core.py's: the modeled clock, and a CPUID feature taken away.
"""

import struct
from dataclasses import dataclass

from unicorn import x86_const as x86

from emulator.paging import PageFault
from emulator.traps import GENERAL_PROTECTION, INVALID_OPCODE

RFLAGS_IOPL_SHIFT = 12
TSS_IO_MAP_BASE = 0x66        # offset of the 16-bit I/O map base in a 64-bit TSS
TSS_MIN_LIMIT = 0x67          # a 64-bit TSS is at least 104 bytes
CR4_PCE = 1 << 8
RDPMC = b"\x0f\x33"

# What `in`, `out`, `ins`, `outs` and their `rep` forms may change.
PORT_INSTRUCTION_REGISTERS = (x86.UC_X86_REG_RAX, x86.UC_X86_REG_RCX,
                              x86.UC_X86_REG_RSI, x86.UC_X86_REG_RDI)


@dataclass
class PendingFault:
    """A fault found in a hook, delivered once the quantum has stopped."""
    vector: int
    error_code: int
    rip: int                   # the faulting instruction
    registers: dict            # register id -> its value before the instruction


def io_permitted(core, port: int, size: int) -> bool:
    """May the code running on `core` access `size` bytes at I/O port `port`?"""
    regs = core.regs
    cpl = regs.read(x86.UC_X86_REG_CS) & 3
    iopl = (regs.read(x86.UC_X86_REG_RFLAGS) >> RFLAGS_IOPL_SHIFT) & 3
    if cpl <= iopl:
        return True
    return _bitmap_permits(core, port, size)


def _bitmap_permits(core, port: int, size: int) -> bool:
    """The TSS's I/O permission bitmap: one bit per port, 0 = allowed. The
    processor reads the two bytes holding the first port's bit; if they lie
    beyond the TSS limit, or any bit of the accessed ports is 1, it faults."""
    _, base, limit, _ = core.uc.reg_read(x86.UC_X86_REG_TR)
    if limit < TSS_MIN_LIMIT:
        return False                          # no TSS loaded
    try:
        map_base, = struct.unpack("<H", core.read_virtual(base + TSS_IO_MAP_BASE, 2))
        offset = map_base + port // 8
        if offset + 1 > limit:
            return False
        bits, = struct.unpack("<H", core.read_virtual(base + offset, 2))
    except (PageFault, IndexError):       # the TSS itself is not there
        return False
    mask = ((1 << size) - 1) << (port % 8)
    return bits & mask == 0


def saved_port_registers(core) -> dict:
    return {register: core.regs.read(register) for register in PORT_INSTRUCTION_REGISTERS}


def invalid_opcode_vector(core) -> int:
    """The vector for an instruction the engine found invalid. It is #UD,
    except for `rdpmc`: sprat models no performance counters, but with
    CPL > 0 and CR4.PCE clear the processor checks privilege first, #GP(0)."""
    try:
        if core.read_virtual(core.rip, len(RDPMC)) != RDPMC:
            return INVALID_OPCODE
    except (PageFault, IndexError):
        return INVALID_OPCODE
    user = core.privilege > 0
    counters_closed = not core.regs.read(x86.UC_X86_REG_CR4) & CR4_PCE
    return GENERAL_PROTECTION if user and counters_closed else INVALID_OPCODE
