"""Capability invocations from user code: SYS_INVOKE reaches Python here.

The CPU driver's sys_invoke (cpudriver/syscall.S) puts the operation in rax
and its six arguments in rdi rsi rdx r10 r8 r9, and writes the hypercall port; the machine calls
`CapabilityService(core)`. This module finds which dispatcher asked (from
the CPU driver's per-core variables), hands the invocation to that core's
`CapabilitySystem` (kernel/caps/), and answers in registers: rax the result
(negative: -error), rdx what the TLB must forget in the caller's address
space (0 nothing, -1 everything, else one virtual page).

Every dispatcher's CSpace is made the first time it invokes anything, with
two capabilities in its root CNode:

    slot 0   RAM: 32 KiB of its own to retype (frames, page tables, CNodes)
    slot 1   its user PDPT (the table under USER_BASE): entry 0, which the
             CPU driver made at boot for the program and its channels,
             stays the CPU driver's; entries 1..511 (each 1 GiB of virtual
             space from USER_BASE + 1 GiB) are the program's to map

The memory for both comes from a region set aside per dispatcher above the
per-core areas (CAPS_BASE).
"""

from unicorn import x86_const as x86

from cpudriver import layout
from kernel.caps import CapabilitySystem, CapType, root_caddr

CAPS_BASE = 0x0200_0000            # above the per-core areas (layout.py)
DISPATCHER_CAPS = 0x10000          # each dispatcher's share: CNode, then RAM
CNODE_BITS = 14                    # 256 slots of 64 bytes
RAM_OFFSET = 0x8000
RAM_BITS = 15                      # 32 KiB
SLOT_RAM = 0
SLOT_PDPT = 1
FLUSH_ALL = (1 << 64) - 1


class CapabilityService:
    def __init__(self, machine):
        self.machine = machine
        end = CAPS_BASE + machine.n_cores * layout.MAX_DISPATCHERS * DISPATCHER_CAPS
        self.enabled = end <= machine.memory.size
        self.systems = {}              # core -> CapabilitySystem
        self.cspaces = {}              # (core, dispatcher) -> CSpace

    def __call__(self, core) -> None:
        regs = core.regs
        if not self.enabled:
            regs.write(x86.UC_X86_REG_RAX, -100)      # INVALID_OPERATION: no room for caps
            regs.write(x86.UC_X86_REG_RDX, 0)
            return
        dispatcher, slot = self._caller(core.id)
        system = self._system(core.id)
        cspace = self.cspaces.get((core.id, dispatcher)) or self._boot_cspace(core.id, dispatcher, slot)
        operation = regs.read(x86.UC_X86_REG_RAX)
        args = [regs.read(r) for r in (x86.UC_X86_REG_RDI, x86.UC_X86_REG_RSI, x86.UC_X86_REG_RDX,
                                       x86.UC_X86_REG_R10, x86.UC_X86_REG_R8, x86.UC_X86_REG_R9)]
        result, flushes = system.invoke(cspace, operation, args)
        regs.write(x86.UC_X86_REG_RAX, result)
        regs.write(x86.UC_X86_REG_RDX, self._flush_word(flushes, slot + layout.D_PML4))

    def _caller(self, core: int) -> tuple[int, int]:
        """(index, slot address) of the dispatcher running on `core`."""
        area = layout.PERCORE_BASE + core * layout.PERCORE_SIZE
        slot = self.machine.memory.read_u64(area + layout.PCV_CURRENT)
        index = (slot - area - layout.PC_DISPATCHERS) >> layout.DISPATCHER_SHIFT
        return index, slot

    def _system(self, core: int) -> CapabilitySystem:
        if core not in self.systems:
            self.systems[core] = CapabilitySystem(self.machine.memory)
        return self.systems[core]

    def _boot_cspace(self, core: int, dispatcher: int, slot: int):
        system = self._system(core)
        base = CAPS_BASE + (core * layout.MAX_DISPATCHERS + dispatcher) * DISPATCHER_CAPS
        cspace = system.new_cspace(base, CNODE_BITS)
        system.create(cspace, root_caddr(SLOT_RAM), CapType.RAM, base + RAM_OFFSET, RAM_BITS)
        system.create(cspace, root_caddr(SLOT_PDPT), CapType.VNODE_PDPT, slot + layout.D_PDPT_USER,
                      12, adopt=(slot + layout.D_PML4, layout.USER_BASE))
        self.cspaces[(core, dispatcher)] = cspace
        return cspace

    @staticmethod
    def _flush_word(flushes, pml4: int) -> int:
        """One word for the CPU driver: what to flush in the caller's address space."""
        mine = [flush for flush in flushes if flush.address_space == pml4]
        if not mine:
            return 0
        if len(mine) == 1 and mine[0].address is not None:
            return mine[0].address
        return FLUSH_ALL
