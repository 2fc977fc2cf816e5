"""The capability system: one per core, doing what rules.py allows.

Every operation reads the same way: resolve the slot numbers user code gave
(cspace.py), ask rules.py whether it may happen (which raises CapError if
not), and only then change anything, so a refused operation changes
nothing. Operations that clear page-table entries return the TLB flushes
the CPU driver must do (vspace.Flush).

    system = CapabilitySystem(memory, kernel_pml4=core_pml4)
    cspace = system.new_cspace(base=..., size_bits=14)          # boot only
    system.create(cspace, root_caddr(1), CapType.RAM, base, 24)   # boot only
    system.retype(cspace, root_caddr(1), 0, CapType.FRAME, 12, 4, caddr(0, 0))
    system.invoke(cspace, Op.MAP, [vnode, entry, frame, rights, offset])  # from user code

`new_cspace`, `create` and `give` are the kernel's own, for boot: they make
capabilities from nothing (or hand out copies of the kernel's), and no
invocation reaches them (GIVE, the invocation, is `give_away`: a move). Everything else is what user code may ask for,
through `invoke` (invoke.py).

Each core has its own CapabilitySystem: one replica of the capabilities of
memory every core holds a copy of (the shared regions, kernel/capservice.py).
`lock` and `unlock` are how that core votes when the monitors agree, by
two-phase commit, that one core retypes such memory; `lock_state` says
where a core's copy stands:

    system.lock(cspace, region)            # vote yes: no retype here till unlock
    system.unlock(cspace, region, 1)       # committed elsewhere: never retype here
    system.lock_state(cap.obj)             # "foreign", "retyped elsewhere", "locked", ...

A monitor moves capabilities between cores with the KERNEL capability the
kernel gave it: TAKE one out of a dispatcher's CSpace into its own, and
GIVE one of its own to a dispatcher (both a move within this core), and
IMPORT one that another core's monitor described to it (a foreign copy:
another core's memory, never retyped here). TAKE and GIVE name the other
dispatcher by its index on the core: the CSpaces `new_cspace` was told
the index of (`dispatchers`).

    system.invoke(monitor, Op.TAKE, [kernel, 2, src, dest])    # dispatcher 2's src -> dest
    system.invoke(monitor, Op.IMPORT, [kernel, CapType.FRAME, base, 12, rights, dest])
"""

from kernel.caps import mdb, rules, vspace
from kernel.caps.cspace import CSpace
from kernel.caps.errors import CapError, ErrorCode
from kernel.caps.mdb import Capability, KernelObject
from kernel.caps.types import SIZES, VNODE_TYPES, CapType, Rights
from kernel.caps.vspace import Flush

# What lock_state says of an object: the first of these that holds.
FOREIGN = "foreign"                         # IMPORT made it: another core's memory
RETYPED_ELSEWHERE = "retyped elsewhere"     # an UNLOCK marked it: never retyped here again
LOCKED = "locked"                           # a copy holds its lock (a yes vote, or a commit)
IN_USE = "in use"                           # it has live descendants on this core
FREE = "free"                               # none of these: a LOCK would be granted


class CapabilitySystem:
    """All capabilities of one core, and the operations on them."""

    def __init__(self, memory, kernel_pml4: int | None = None,
                 kernel_entries=rules.KERNEL_PML4_ENTRIES):
        self.memory = memory
        self.kernel_pml4 = kernel_pml4          # copied into every new PML4 (its kernel entries)
        self.kernel_entries = frozenset(kernel_entries)
        self.originals: list[KernelObject] = []  # made from nothing: the derivation tree's roots
        self.dispatchers: dict[int, CSpace] = {}  # index on this core -> its CSpace (TAKE, GIVE)

    # -- boot: capabilities from nothing -------------------------------------

    def new_cspace(self, base: int, size_bits: int = 14, dispatcher: int | None = None) -> CSpace:
        """A CSpace whose root CNode takes 2**size_bits bytes at `base` (kernel memory);
        with `dispatcher`, TAKE and GIVE find it as that dispatcher of this core."""
        obj = self._original(CapType.CNODE, base, size_bits)
        cspace = CSpace(mdb.place_cap(obj, Rights.ALL, 0, None, 0))
        if dispatcher is not None:
            self.dispatchers[dispatcher] = cspace
        return cspace

    def create(self, cspace: CSpace | None, address: int | None, obj_type: CapType, base: int,
               size_bits: int, rights: Rights = Rights.ALL,
               adopt: tuple[int, int] | None = None) -> Capability:
        """Boot: put a capability to memory nobody else holds into slot `address`,
        or, with cspace None, keep it in no slot: the kernel holds it (`give` hands
        out copies, and no revoke can take it, rules.check_revoke).

        The region must lie in RAM and overlap no other original. RAM and
        Frames keep their contents (a boot module stays loaded); any other
        object starts as a retype would make it, unless `adopt` = (PML4
        address, virtual address its range starts at): then a page table the
        CPU driver built at boot keeps its entries, those entries stay the
        CPU driver's (rules.check_entry refuses them), and what is mapped
        under it is flushed in that address space."""
        if obj_type == CapType.ENDPOINT:
            raise CapError(ErrorCode.RETYPE_NOT_ALLOWED, "an ENDPOINT is retyped from a DISPATCHER")
        cnode, index = (self._free_slots(cspace, address, 1, "copy") if cspace is not None
                        else (None, 0))
        obj = self._original(obj_type, base, size_bits)
        if adopt and obj_type in VNODE_TYPES:
            obj.info["boot_entries"] = vspace.present_entries(self.memory, obj)
            obj.info["boot_address_space"] = adopt
        elif adopt and obj_type == CapType.DISPATCHER:
            pass                          # a running dispatcher's control block: keep it
        elif obj_type not in (CapType.RAM, CapType.FRAME):
            self._initialise(obj)
        return mdb.place_cap(obj, rules.check_rights_value(rights), 0, cnode, index)

    def give(self, cap: Capability, cspace: CSpace, address: int) -> Capability:
        """Boot: a copy of a capability the kernel holds (same rights and badge) into
        slot `address` of a dispatcher's CSpace."""
        cnode, index = self._free_slots(cspace, address, 1, "copy")
        rules.check_store(cnode, cap.obj)
        return mdb.place_cap(cap.obj, cap.rights, cap.badge, cnode, index)

    def _original(self, obj_type: CapType, base: int, size_bits: int) -> KernelObject:
        obj_type = CapType(obj_type)
        allowed = SIZES.get(obj_type)
        if allowed is None or not allowed.min_bits <= size_bits <= allowed.max_bits:
            raise CapError(ErrorCode.INVALID_SIZE, f"no {obj_type.name} of 2**{size_bits} bytes")
        size = 1 << size_bits if size_bits else 0
        rules.check_placement(base, size, self.memory)
        obj = mdb.new_object(obj_type, base if size else 0, size, None)
        for other in self.originals:
            if other.overlaps(obj.base, obj.end) and obj.owns_memory:
                raise CapError(ErrorCode.OVERLAP, f"{base:#x} is already {other.type.name}'s")
        self.originals.append(obj)
        return obj

    # -- operations user code may invoke ---------------------------------------

    def retype(self, cspace: CSpace, src: int, offset: int, new_type: int, size_bits: int,
               count: int, dest: int) -> list[Flush]:
        """`count` new objects from the source's memory, into slots dest, dest+1, ..."""
        cap = cspace.lookup(src)
        rules.check_not_foreign(cap)
        start, size = rules.check_retype(cap, new_type, size_bits, offset, count)
        rules.check_not_locked(cap)
        cnode, index = self._free_slots(cspace, dest, count, "retype")
        rules.check_no_overlap(cap.obj, start, start + count * size)
        for i in range(count):
            obj = mdb.new_object(CapType(new_type), start + i * size, size, cap.obj)
            self._initialise(obj)
            mdb.place_cap(obj, rules.retyped_rights(cap), 0, cnode, index + i)
        return []

    def copy(self, cspace: CSpace, src: int, dest: int) -> list[Flush]:
        """Another capability to the same object, with the same rights and badge."""
        cap = cspace.lookup(src)
        rules.check_copyable(cap, "copy")
        rules.check_rights(cap, "copy", "source")
        cnode, index = self._free_slots(cspace, dest, 1, "copy")
        rules.check_store(cnode, cap.obj)
        mdb.place_cap(cap.obj, cap.rights, cap.badge, cnode, index)
        return []

    def transfer(self, src_cspace: CSpace, src: int, dest_cspace: CSpace, dest: int) -> None:
        """Give another dispatcher a copy (LMP's capability transfer): needs GRANT."""
        cap = src_cspace.lookup(src)
        rules.check_transfer(cap)
        cnode, index = self._free_slots(dest_cspace, dest, 1, "copy")
        rules.check_store(cnode, cap.obj)
        mdb.place_cap(cap.obj, cap.rights, cap.badge, cnode, index)

    def mint(self, cspace: CSpace, src: int, dest: int, rights: int, badge: int) -> list[Flush]:
        """A copy with fewer rights, and for an endpoint perhaps a badge."""
        cap = cspace.lookup(src)
        rules.check_copyable(cap, "mint")
        rules.check_rights(cap, "mint", "source")
        new_rights, new_badge = rules.check_mint(cap, rights, badge)
        cnode, index = self._free_slots(cspace, dest, 1, "mint")
        rules.check_store(cnode, cap.obj)
        mdb.place_cap(cap.obj, new_rights, new_badge, cnode, index)
        return []

    def delete(self, cspace: CSpace, address: int) -> list[Flush]:
        """Empty one slot. The object goes with its last capability, unless it has
        descendants: they stay valid, and it stays until they go."""
        slot = cspace.slot(address)
        if slot.cap is None:
            raise CapError(ErrorCode.SLOT_EMPTY, f"slot {address:#x} is empty")
        rules.check_slot_writable(slot.cnode_cap, "delete")
        rules.check_lock_holders_stay(mdb.doomed([slot.cap]))
        return self._delete_caps([slot.cap])

    def revoke(self, cspace: CSpace, address: int) -> list[Flush]:
        """Delete every other copy and every descendant; this capability stays."""
        cap = cspace.lookup(address)
        rules.check_revoke(cap)
        # LAB caps BEGIN revoke
        obj = cap.obj
        others = [other for other in obj.caps if other is not cap]
        rules.check_lock_holders_stay(
            mdb.doomed(others + [copy for below in mdb.descendants(obj) for copy in below.caps]))
        flushes = self._delete_caps(others)
        while obj.live and obj.children:
            leaf = obj.children[-1]                 # a descendant without descendants ...
            while leaf.children:
                leaf = leaf.children[-1]
            assert leaf.caps, "an unnamed object was left in the tree"
            flushes += self._delete_caps(list(leaf.caps))   # ... goes with its copies
        return list(dict.fromkeys(flushes))
        # LAB caps END revoke

    def identify(self, cspace: CSpace, address: int) -> dict:
        """What a capability is. User code may learn this, never change it."""
        cap = cspace.lookup(address)
        rules.check_rights(cap, "identify", "capability")
        return {"type": cap.type, "base": cap.base, "size_bits": cap.size_bits,
                "rights": cap.rights, "badge": cap.badge}

    def map(self, cspace: CSpace, vnode: int, entry: int, src: int, rights: int,
            offset: int) -> list[Flush]:
        """Point entry `entry` of a page table at a Frame page or the next table."""
        vnode_cap, src_cap = cspace.lookup(vnode), cspace.lookup(src)
        pte = rules.check_map(vnode_cap, entry, src_cap, rights, offset, self.kernel_entries)
        vspace.install(self.memory, vnode_cap.obj, entry, src_cap, pte)
        return []       # x86 caches no not-present entry: nothing to flush

    def unmap(self, cspace: CSpace, vnode: int, entry: int) -> list[Flush]:
        """Clear one page-table entry; returns where the TLB may still hold it."""
        vnode_cap = cspace.lookup(vnode)
        rules.check_unmap(vnode_cap, entry, self.kernel_entries)
        return vspace.remove(self.memory, vnode_cap.obj.entries[entry])

    def lock(self, cspace: CSpace, address: int) -> list[Flush]:
        """Lock the object through this copy: a core's yes vote in a two-phase commit."""
        cap = cspace.lookup(address)
        rules.check_lock(cap)
        cap.obj.locked_by = cap
        return []

    def unlock(self, cspace: CSpace, address: int, retyped_elsewhere: int) -> list[Flush]:
        """Release the lock; retyped_elsewhere != 0 marks the object as another core's
        memory from now on (the commit went the other core's way)."""
        cap = cspace.lookup(address)
        rules.check_unlock(cap)
        cap.obj.locked_by = None
        if retyped_elsewhere:
            cap.obj.retyped_elsewhere = True
        return []

    # -- the monitor's: with the KERNEL capability ----------------------------------

    def take(self, cspace: CSpace, kernel: int, dispatcher: int, src: int,
             dest: int) -> list[Flush]:
        """Move the capability in slot `src` of dispatcher `dispatcher` into slot `dest`."""
        rules.check_kernel(cspace.lookup(kernel), "take")
        return self._move("take", self._dispatcher(dispatcher), src, cspace, dest)

    def give_away(self, cspace: CSpace, kernel: int, src: int, dispatcher: int,
                  dest: int) -> list[Flush]:
        """Move the capability in slot `src` into slot `dest` of dispatcher `dispatcher`."""
        rules.check_kernel(cspace.lookup(kernel), "give")
        return self._move("give", cspace, src, self._dispatcher(dispatcher), dest)

    def import_foreign(self, cspace: CSpace, kernel: int, obj_type: int, base: int,
                       size_bits: int, rights: int, dest: int) -> list[Flush]:
        """A foreign copy in slot `dest`: a capability to memory another core owns.

        Its contents stay (it is that core's memory, in use there). It is a
        root of this core's tree, as an original is, so that nothing made
        here later overlaps it; and it goes with its last copy."""
        rules.check_kernel(cspace.lookup(kernel), "import")
        obj_type, rights = rules.check_import(obj_type, size_bits, rights)
        size = 1 << size_bits
        rules.check_placement(base, size, self.memory)
        obj = rules.check_import_overlap(self.originals, obj_type, base, size)
        cnode, index = self._free_slots(cspace, dest, 1, "import")
        if obj is None:
            obj = mdb.new_object(obj_type, base, size, None)
            obj.foreign = True
            self.originals.append(obj)
        mdb.place_cap(obj, rights, 0, cnode, index)
        return []

    def invoke(self, cspace: CSpace, operation: int, args: list[int]) -> tuple[int, list[Flush]]:
        """The hypercall layer's entry: see invoke.py."""
        from kernel.caps.invoke import invoke
        return invoke(self, cspace, operation, args)

    # -- for the kernel above: looking, never changing --------------------------

    def lookup(self, cspace: CSpace, address: int) -> Capability:
        """The capability at a slot (e.g. an endpoint to send on); CapError if none."""
        return cspace.lookup(address)

    @staticmethod
    def lock_state(obj: KernelObject) -> str:
        """Where this core's copy of an object stands, for two-phase commit:
        FOREIGN (IMPORT made it), RETYPED_ELSEWHERE, LOCKED, IN_USE
        (descendants here) or FREE, the first that holds. FREE is exactly
        when a LOCK would be granted (to a RAM copy with WRITE)."""
        if obj.foreign:
            return FOREIGN
        if obj.retyped_elsewhere:
            return RETYPED_ELSEWHERE
        if obj.locked_by is not None:
            return LOCKED
        if obj.children:
            return IN_USE
        return FREE

    def objects(self) -> list[KernelObject]:
        """Every live object, originals first."""
        found = []
        for original in self.originals:
            found.append(original)
            found.extend(mdb.descendants(original))
        return found

    @staticmethod
    def held(cspace: CSpace) -> list[Capability]:
        """Every capability reachable from a CSpace's root, through any CNode."""
        caps, seen = [cspace.root], set()
        pending = [cspace.root.obj]
        while pending:
            cnode = pending.pop()
            if id(cnode) in seen:
                continue
            seen.add(id(cnode))
            for cap in cnode.slots:
                if cap is not None:
                    caps.append(cap)
                    if cap.type == CapType.CNODE:
                        pending.append(cap.obj)
        return caps

    # -- the machinery ---------------------------------------------------------

    def _free_slots(self, cspace: CSpace, dest: int, count: int, operation: str):
        """(CNode object, first index) of `count` empty slots from `dest` on."""
        slot = cspace.slot(dest)
        rules.check_slot_writable(slot.cnode_cap, operation)
        slots = slot.cnode_cap.obj.slots
        if slot.index + count > len(slots):
            raise CapError(ErrorCode.INVALID_ADDRESS, f"{count} slots from {dest:#x} run past the CNode")
        if any(slots[slot.index + i] is not None for i in range(count)):
            raise CapError(ErrorCode.SLOT_IN_USE, f"a slot in {dest:#x}..+{count} is not empty")
        return slot.cnode_cap.obj, slot.index

    def _dispatcher(self, index: int) -> CSpace:
        """The CSpace of dispatcher `index` of this core (any 64-bit value may come)."""
        cspace = self.dispatchers.get(index)
        if cspace is None:
            raise CapError(ErrorCode.INVALID_ARGUMENT, f"no dispatcher {index} on this core")
        return cspace

    def _move(self, operation: str, src_cspace: CSpace, src: int, dest_cspace: CSpace,
              dest: int) -> list[Flush]:
        """The same capability record into another slot: its copies, descendants and
        place in the derivation tree do not change."""
        slot = src_cspace.slot(src)
        if slot.cap is None:
            raise CapError(ErrorCode.SLOT_EMPTY, f"slot {src:#x} is empty")
        rules.check_move(slot.cap, operation)
        rules.check_slot_writable(slot.cnode_cap, operation, "source CNode")
        cnode, index = self._free_slots(dest_cspace, dest, 1, operation)
        mdb.move_cap(slot.cap, cnode, index)
        return []

    def _initialise(self, obj: KernelObject) -> None:
        """New objects start zeroed: no one reads what the memory held before."""
        if obj.owns_memory:
            self.memory.write(obj.base, bytes(obj.size))
        if obj.type == CapType.VNODE_PML4 and self.kernel_pml4 is not None:
            vspace.share_kernel_entries(self.memory, obj, self.kernel_pml4, self.kernel_entries)

    def _delete_caps(self, pending: list[Capability]) -> list[Flush]:
        """Delete capabilities, their mappings, and every object left unnamed.

        A worklist, not recursion: a dying CNode adds its capabilities to it,
        so a chain of CNodes however long costs no stack."""
        flushes = []
        while pending:
            cap = pending.pop()
            if not cap.live:
                continue
            for mapping in list(cap.mappings):
                flushes += vspace.remove(self.memory, mapping)
            mdb.unlink_cap(cap)
            obj = cap.obj
            while obj is not None and obj.live and mdb.is_unnamed(obj):
                flushes += self._destroy(obj, pending)
                obj = obj.parent
        return list(dict.fromkeys(flushes))         # each flush once, in order

    def _destroy(self, obj: KernelObject, pending: list[Capability]) -> list[Flush]:
        flushes = []
        if obj.type == CapType.CNODE:
            pending.extend(cap for cap in obj.slots if cap is not None)
        if obj.type in VNODE_TYPES:
            flushes = vspace.clear(self.memory, obj)
        mdb.unlink_object(obj)
        if obj.parent is None:
            self.originals.remove(obj)
        return flushes
