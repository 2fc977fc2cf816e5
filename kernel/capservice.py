"""Capability invocations from user code: SYS_INVOKE reaches Python here.

The CPU driver's sys_invoke (cpudriver/syscall.S) puts the operation in rax
and its six arguments in rdi rsi rdx r10 r8 r9, and writes the hypercall port; the machine calls
`CapabilityService(core)`. This module finds which dispatcher asked (from
the CPU driver's per-core variables), hands the invocation to that core's
`CapabilitySystem` (kernel/caps/), and answers in registers: rax the result
(negative: -error), rdx what the TLB must forget in the caller's address
space (0 nothing, -1 everything, else one virtual page).

Every dispatcher's CSpace is made when the CPU driver makes the dispatcher
(HYPERCALL_NEW_DISPATCHER), with these in its root CNode:

    slot 0     RAM: 32 KiB of its own to retype (frames, page tables, CNodes)
    slot 1     its user PDPT (the table under USER_BASE): entry 0, which the
               CPU driver made at boot for the program and its channels,
               stays the CPU driver's; entries 1..511 (each 1 GiB of virtual
               space from USER_BASE + 1 GiB) are the program's to map
    slot 232+r RAM: its core's copy of shared region r (below)
    slot 240   its Dispatcher (adopted: the CPU driver's control block)
    slot 241   an EndPoint to itself, retyped from it
    slot 242   the KERNEL capability, if it is its core's monitor (the CPU
               driver copies its boot module's flags into DCB_FLAGS, and
               DCB_FLAG_MONITOR says so); empty in every other dispatcher
    slot 243   a CNode of the channel pages it holds (kernel/channels.py)
    slot 248+j an EndPoint to dispatcher j of the same core (LMP)
    slot 255   where a capability sent to it over LMP arrives

The memory for the CNode and the RAM comes from a region set aside per
dispatcher above the per-core areas (CAPS_BASE).

Shared regions: N_SHARED_REGIONS regions of 2**SHARED_REGION_BITS bytes at
SHARED_REGIONS_BASE, above the capability areas of MAX_CORES cores, are
memory every core holds a capability to. Each core's CapabilitySystem is
one replica, as each Barrelfish CPU driver has its own capability
database: the kernel holds that core's original of each region (no
dispatcher can revoke it away) and every dispatcher there gets a copy.
A program may retype part of its copy (the region is then in use on its
core); a retype of a whole region is the monitors' business: they LOCK
every core's copy, retype on one, and UNLOCK the others marking them
retyped elsewhere (two-phase commit, userland/monitor.S; the rules are
kernel/caps/rules.py's). `region_state(core, region)` says where a core's
copy stands, for tests and tools.

Moving capabilities between cores is the monitors' business, as in
Barrelfish: the kernel holds one KERNEL capability per core and gives a
copy to that core's monitors, which alone may TAKE a capability out of a
dispatcher's CSpace, GIVE one to it, and IMPORT one another core's monitor
described (kernel/caps/rules.py). A dispatcher is named there by its index
on the core, as here: each CSpace is registered with its core's
CapabilitySystem under that index, so that kernel/caps knows nothing of
cores. `slot_state(core, dispatcher, address)` says whether what a slot
holds is foreign (imported) or where it stands, for tests and tools.

The same port serves the channel capabilities (HYPERCALL_NEW_DISPATCHER
.. HYPERCALL_CHANNEL_GRANT, kernel/channels.py): a new dispatcher's
channels, and mapping, unmapping, handing on and granting channel pages.

The same port serves LMP over an endpoint (HYPERCALL_LMP): the CPU driver
asks which dispatcher an endpoint names, and, if the sender gives a
capability, it is copied into the receiver's slot 255 (GRANT needed) before
the CPU driver hands the message over (cpudriver/lmp.S).
"""

import copy

from unicorn import x86_const as x86

from cpudriver import layout
from kernel.caps import CapabilitySystem, CapError, CapType, Rights, root_caddr
from kernel.channels import CHANNEL_CNODE_OFFSET, SLOT_CHANNELS, Channels

CAPS_BASE = 0x0200_0000            # above the per-core areas (layout.py)
DISPATCHER_CAPS = 0x10000          # each dispatcher's share: CNode, then RAM
CNODE_BITS = 14                    # 256 slots of 64 bytes
RAM_OFFSET = 0x8000
RAM_BITS = 15                      # 32 KiB
SLOT_RAM = 0
SLOT_PDPT = 1
SLOT_DISPATCHER = 240
SLOT_SELF_ENDPOINT = 241
SLOT_KERNEL = 242                  # monitors only
SLOT_PEERS = 248                   # + the peer's index on this core
SLOT_RECEIVE = 255
SLOT_REGIONS = 232                 # + the shared region's number
SHARED_REGIONS_BASE = 0x0380_0000  # above the capability areas (asserted below)
SHARED_REGION_BITS = 16            # 64 KiB each
N_SHARED_REGIONS = 4
SHARED_REGIONS_END = SHARED_REGIONS_BASE + (N_SHARED_REGIONS << SHARED_REGION_BITS)
DISPATCHER_BITS = 10
KERNEL_RIGHTS = Rights.READ | Rights.WRITE   # no GRANT: it is never handed on
HYPERCALL_LMP = layout.HYPERCALL_LMP   # rax: resolve an endpoint for LMP (not a cap operation)
EAGAIN = 11                        # the CPU driver's errno for "not waiting yet"
FLUSH_ALL = (1 << 64) - 1

assert CAPS_BASE + layout.MAX_CORES * layout.MAX_DISPATCHERS * DISPATCHER_CAPS \
    <= SHARED_REGIONS_BASE, "the shared regions overlap the dispatchers' capability areas"
assert SLOT_REGIONS + N_SHARED_REGIONS <= SLOT_DISPATCHER, "the shared regions' slots overlap"
assert SLOT_SELF_ENDPOINT < SLOT_KERNEL < SLOT_CHANNELS < SLOT_PEERS, "the kernel's slots overlap"
assert CNODE_BITS <= 14 and CHANNEL_CNODE_OFFSET + (1 << 14) <= RAM_OFFSET, \
    "the channel CNode overlaps the dispatcher's other capability memory"
assert SHARED_REGIONS_END <= layout.CHANNEL_TABLES_BASE, \
    "the shared regions overlap the dispatchers' channel page tables"
assert SLOT_PEERS + layout.MAX_DISPATCHERS <= SLOT_RECEIVE, "the peers' slots overlap"


def defines() -> dict[str, int]:
    """The slot numbers and the shared regions, for user programs (as assembler constants)."""
    return {"SLOT_RAM": SLOT_RAM, "SLOT_PDPT": SLOT_PDPT, "SLOT_DISPATCHER": SLOT_DISPATCHER,
            "SLOT_SELF_ENDPOINT": SLOT_SELF_ENDPOINT, "SLOT_KERNEL": SLOT_KERNEL,
            "SLOT_PEERS": SLOT_PEERS, "SLOT_RECEIVE": SLOT_RECEIVE, "SLOT_REGIONS": SLOT_REGIONS,
            "N_SHARED_REGIONS": N_SHARED_REGIONS, "SHARED_REGION_BITS": SHARED_REGION_BITS,
            "SHARED_REGIONS_BASE": SHARED_REGIONS_BASE}


def region_base(region: int) -> int:
    """The physical address of shared region `region`."""
    return SHARED_REGIONS_BASE + (region << SHARED_REGION_BITS)


CHANNEL_HYPERCALLS = range(layout.HYPERCALL_NEW_DISPATCHER, layout.HYPERCALL_CHANNEL_GRANT + 1)


class CapabilityService:
    def __init__(self, machine, module_channels=()):
        self.machine = machine
        self.channels = Channels(machine.memory, list(module_channels))
        end = CAPS_BASE + machine.n_cores * layout.MAX_DISPATCHERS * DISPATCHER_CAPS
        self.enabled = end <= machine.memory.size
        # (the regions lie above the capability areas: if they fit, those do)
        self.regions_fit = SHARED_REGIONS_END <= machine.memory.size
        self.systems = {}              # core -> CapabilitySystem
        self.cspaces = {}              # (core, dispatcher) -> CSpace
        self.regions = {}              # core -> the kernel's original of each shared region
        self.kernels = {}              # core -> the kernel's KERNEL capability (monitors: copies)

    # -- Checkpoints (emulator/checkpoint.py): the capability databases are
    # the machine's state too, and going back in time takes them back.
    def checkpoint_state(self):
        return copy.deepcopy((self.systems, self.cspaces, self.regions, self.kernels),
                             {id(self.machine.memory): self.machine.memory})

    def restore_state(self, state) -> None:
        self.systems, self.cspaces, self.regions, self.kernels = copy.deepcopy(
            state, {id(self.machine.memory): self.machine.memory})

    def __call__(self, core) -> None:
        regs = core.regs
        if not self.enabled:
            regs.write(x86.UC_X86_REG_RAX, -100)      # INVALID_OPERATION: no room for caps
            regs.write(x86.UC_X86_REG_RDX, 0)
            return
        operation = regs.read(x86.UC_X86_REG_RAX)
        if operation in CHANNEL_HYPERCALLS:
            regs.write(x86.UC_X86_REG_RAX, self._channel_call(core.id, operation, regs))
            regs.write(x86.UC_X86_REG_RDX, 0)
            return
        dispatcher, slot = self._caller(core.id)
        self._prepare_core(core.id)
        cspace = self.cspaces[(core.id, dispatcher)]
        if operation == HYPERCALL_LMP:
            result, flush = self._lmp(core.id, cspace, regs.read(x86.UC_X86_REG_RDI),
                                      regs.read(x86.UC_X86_REG_RSI))
        else:
            args = [regs.read(r) for r in (x86.UC_X86_REG_RDI, x86.UC_X86_REG_RSI,
                                           x86.UC_X86_REG_RDX, x86.UC_X86_REG_R10,
                                           x86.UC_X86_REG_R8, x86.UC_X86_REG_R9)]
            result, flushes = self._system(core.id).invoke(cspace, operation, args)
            flush = self._flush_word(flushes, slot + layout.D_PML4)
        regs.write(x86.UC_X86_REG_RAX, result)
        regs.write(x86.UC_X86_REG_RDX, flush)

    # --- channel capabilities (kernel/channels.py) -------------------------------------
    def _channel_call(self, core: int, operation: int, regs) -> int:
        """One of the channel hypercalls: 0 or -errno."""
        args = [regs.read(r) for r in (x86.UC_X86_REG_RDI, x86.UC_X86_REG_RSI,
                                       x86.UC_X86_REG_RDX, x86.UC_X86_REG_R10)]
        channels = self.channels
        try:
            if operation == layout.HYPERCALL_NEW_DISPATCHER:
                index, module, first, count = args
                return self._new_dispatcher(core, index, module, _pages(first, count))
            dispatcher, slot = self._caller(core)
            cspace = self.cspaces.get((core, dispatcher))
            if cspace is None:
                return -layout.EPERM
            monitor = self._is_monitor(slot)
            if operation == layout.HYPERCALL_CHANNEL_MAP:
                return channels.map(core, dispatcher, cspace, args[0])
            if operation == layout.HYPERCALL_CHANNEL_UNMAP:
                return channels.unmap(core, dispatcher, args[0])
            if operation == layout.HYPERCALL_CHANNEL_HOLDS:
                pages = _pages(args[0], args[1])
                return 0 if monitor else channels.holds_all(cspace, pages)
            target, first, count = args[:3]       # HYPERCALL_CHANNEL_GRANT
            if not monitor:
                return -layout.EPERM
            if (core, target) not in self.cspaces:
                return -layout.EINVAL
            return channels.grant(self._system(core), core, target,
                                  self.cspaces[(core, target)], _pages(first, count))
        except CapError as error:
            return -int(error.code)

    def _new_dispatcher(self, core: int, index: int, module: int, handed: list[int]) -> int:
        """The CPU driver made dispatcher `index`: its CSpace, and the channels it holds."""
        if index >= layout.MAX_DISPATCHERS:
            return -layout.EINVAL
        slot = self._slot(core, index)
        cspace = self.cspaces.get((core, index)) or self._boot_cspace(core, index, slot)
        base = CAPS_BASE + (core * layout.MAX_DISPATCHERS + index) * DISPATCHER_CAPS
        return self.channels.new_dispatcher(
            self._system(core), core, index, cspace, base + CHANNEL_CNODE_OFFSET,
            slot + layout.D_PML4, self._is_monitor(slot), module, handed)

    # --- LMP over an endpoint --------------------------------------------------------
    def _lmp(self, core: int, cspace, endpoint: int, give: int) -> tuple[int, int]:
        """(the receiver's index, 1 if a capability went along) or (-error, 0)."""
        system = self._system(core)
        try:
            cap = system.lookup(cspace, endpoint)
            if cap.type != CapType.ENDPOINT:
                return -106, 0                         # WRONG_TYPE
            target_core, target = cap.obj.parent.info["dispatcher"]
            if target_core != core:
                return -101, 0                         # INVALID_ARGUMENT: LMP stays on a core
            if self._state(core, target) != layout.DISPATCHER_WAITING:
                return -EAGAIN, 0
            if give:
                system.transfer(cspace, give, self.cspaces[(core, target)],
                                root_caddr(SLOT_RECEIVE))
            return target, 1 if give else 0
        except CapError as error:
            return -int(error.code), 0

    def _state(self, core: int, index: int) -> int:
        return self.machine.memory.read_u64(self._slot(core, index) + layout.DCB_STATE)

    @staticmethod
    def _slot(core: int, index: int) -> int:
        return (layout.PERCORE_BASE + core * layout.PERCORE_SIZE + layout.PC_DISPATCHERS
                + index * layout.DISPATCHER_SIZE)

    def _prepare_core(self, core: int) -> None:
        """CSpaces for every dispatcher of `core`, and endpoints between them all.

        An empty peer slot is filled again from the peer's own endpoint, unless
        that is gone too (deleted, or taken by its monitor): then it stays empty."""
        area = layout.PERCORE_BASE + core * layout.PERCORE_SIZE
        count = self.machine.memory.read_u64(area + layout.PCV_N_DISPATCHERS)
        count = min(count, layout.MAX_DISPATCHERS)
        for index in range(count):
            if (core, index) not in self.cspaces:
                self._boot_cspace(core, index, self._slot(core, index))
        system = self._system(core)
        for index in range(count):
            mine = self.cspaces[(core, index)]
            for peer in range(count):
                if mine.root.obj.slots[SLOT_PEERS + peer] is None:
                    try:
                        system.transfer(self.cspaces[(core, peer)],
                                        root_caddr(SLOT_SELF_ENDPOINT), mine,
                                        root_caddr(SLOT_PEERS + peer))
                    except CapError:
                        pass                # a refusal changes nothing: the slot stays empty

    def _caller(self, core: int) -> tuple[int, int]:
        """(index, slot address) of the dispatcher running on `core`."""
        area = layout.PERCORE_BASE + core * layout.PERCORE_SIZE
        slot = self.machine.memory.read_u64(area + layout.PCV_CURRENT)
        index = (slot - area - layout.PC_DISPATCHERS) >> layout.DISPATCHER_SHIFT
        return index, slot

    def _system(self, core: int) -> CapabilitySystem:
        """The core's capability system, made with its KERNEL capability and its
        originals of the shared regions."""
        if core not in self.systems:
            system = CapabilitySystem(self.machine.memory)
            self.kernels[core] = system.create(None, None, CapType.KERNEL, 0, 0, KERNEL_RIGHTS)
            if self.regions_fit:
                self.regions[core] = [system.create(None, None, CapType.RAM, region_base(region),
                                                    SHARED_REGION_BITS)
                                      for region in range(N_SHARED_REGIONS)]
            self.systems[core] = system
        return self.systems[core]

    # --- for tests and tools ---------------------------------------------------------
    def region_state(self, core: int, region: int) -> str:
        """Where core `core`'s copy of shared region `region` stands: "free", "in use"
        (descendants on that core), "locked" or "retyped elsewhere"
        (CapabilitySystem.lock_state)."""
        if not self.regions_fit:
            raise ValueError(f"no shared regions: memory ends below {SHARED_REGIONS_END:#x}")
        if not 0 <= core < self.machine.n_cores or not 0 <= region < N_SHARED_REGIONS:
            raise ValueError(f"no region {region} on core {core}")
        self._system(core)             # a core that never invoked: its regions are untouched
        return CapabilitySystem.lock_state(self.regions[core][region].obj)

    def slot_state(self, core: int, dispatcher: int, address: int) -> str:
        """Where the object in a slot of a dispatcher's CSpace stands: "foreign"
        if IMPORT made it, else as region_state says (CapabilitySystem.lock_state)."""
        if (core, dispatcher) not in self.cspaces:
            raise ValueError(f"dispatcher {dispatcher} of core {core} has no CSpace (yet)")
        cap = self.systems[core].lookup(self.cspaces[(core, dispatcher)], address)
        return CapabilitySystem.lock_state(cap.obj)

    def _is_monitor(self, slot: int) -> bool:
        """Whether the dispatcher whose slot is at `slot` is its core's monitor."""
        flags = self.machine.memory.read_u64(slot + layout.D_DCB + layout.DCB_FLAGS)
        return bool(flags & layout.DCB_FLAG_MONITOR)

    def _boot_cspace(self, core: int, dispatcher: int, slot: int):
        system = self._system(core)
        base = CAPS_BASE + (core * layout.MAX_DISPATCHERS + dispatcher) * DISPATCHER_CAPS
        cspace = system.new_cspace(base, CNODE_BITS, dispatcher=dispatcher)
        system.create(cspace, root_caddr(SLOT_RAM), CapType.RAM, base + RAM_OFFSET, RAM_BITS)
        system.create(cspace, root_caddr(SLOT_PDPT), CapType.VNODE_PDPT, slot + layout.D_PDPT_USER,
                      12, adopt=(slot + layout.D_PML4, layout.USER_BASE))
        me = system.create(cspace, root_caddr(SLOT_DISPATCHER), CapType.DISPATCHER,
                           slot + layout.D_DCB, DISPATCHER_BITS, adopt=(0, 0))
        me.obj.info["dispatcher"] = (core, dispatcher)
        system.retype(cspace, root_caddr(SLOT_DISPATCHER), 0, CapType.ENDPOINT, 0, 1,
                      root_caddr(SLOT_SELF_ENDPOINT))
        for region, original in enumerate(self.regions.get(core, ())):
            system.give(original, cspace, root_caddr(SLOT_REGIONS + region))
        if self._is_monitor(slot):
            system.give(self.kernels[core], cspace, root_caddr(SLOT_KERNEL))
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


def _pages(first: int, count: int) -> list[int]:
    """A range of channel pages from the CPU driver's registers (at most the window)."""
    if count > layout.N_USER_CHANNELS:
        return [layout.N_USER_CHANNELS]          # out of range: refused as EINVAL
    return list(range(first, first + count))
