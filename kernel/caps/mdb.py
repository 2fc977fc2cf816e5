"""The mapping database: kernel objects, the capabilities that name them, and
the derivation tree between objects.

Two things are kept apart, as in Barrelfish:

- a `KernelObject` is a region of physical memory with a type (a Frame, a
  CNode, ...). It knows the object it was retyped from (`parent`) and the
  objects retyped from it (`children`): the derivation tree.
- a `Capability` is one reference to an object, sitting in one CNode slot,
  with its own rights and badge. Copies and minted copies of a capability
  are further `Capability` records on the same object (`obj.caps`).

So "the descendants of a capability" are the descendants of its object,
whichever copy was used to make them, and "every copy" is `obj.caps`.

An object may also be locked (`locked_by`: the copy that took the lock)
and marked `retyped_elsewhere`: a core's votes in the monitors' two-phase
commit over memory every core holds a copy of (rules.check_lock says what
they forbid). An object IMPORT made is `foreign`: memory another core owns,
named here by a root of this core's tree that is never retyped.

A capability moves (TAKE, GIVE) by changing slots and nothing else: the same
record, with its copies, descendants, lock and mappings (`move_cap`).

An object lives while something names it: a capability, or a child (an
object whose last capability is deleted but which still has children stays
in the tree, unnamed, until they go). This module only holds the records and
links them; what an operation may do is rules.py, and doing it is system.py.
User code never sees any of this: it holds slot numbers, nothing more.
"""

from dataclasses import dataclass, field

from kernel.caps.types import CapType, Rights, SLOT_BITS, MEMORYLESS


@dataclass(eq=False)
class KernelObject:
    type: CapType
    base: int
    size: int                                   # bytes (0 for MEMORYLESS types)
    parent: "KernelObject | None" = None
    children: list = field(default_factory=list)
    caps: list = field(default_factory=list)    # every copy that names it
    slots: list | None = None                   # a CNode's slots
    entries: dict = field(default_factory=dict)  # a VNode's mappings, by entry index
    info: dict = field(default_factory=dict)    # what the kernel above attaches
    locked_by: "Capability | None" = None       # the copy holding its lock (LOCK)
    retyped_elsewhere: bool = False             # UNLOCK said so: never retyped here again
    foreign: bool = False                       # IMPORT made it: another core's memory
    live: bool = True

    @property
    def end(self) -> int:
        return self.base + self.size

    @property
    def size_bits(self) -> int:
        return self.size.bit_length() - 1 if self.size else 0

    @property
    def owns_memory(self) -> bool:
        return self.type not in MEMORYLESS

    def overlaps(self, base: int, end: int) -> bool:
        return self.owns_memory and self.base < end and base < self.end

    def derives_from(self, other: "KernelObject") -> bool:
        """True if `other` is this object or one of its ancestors."""
        node = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False


@dataclass(eq=False)
class Capability:
    obj: KernelObject
    rights: Rights
    badge: int = 0
    cnode: KernelObject | None = None   # where it sits (None: held by the kernel)
    index: int = 0
    mappings: list = field(default_factory=list)   # page-table entries made with it
    live: bool = True

    @property
    def type(self) -> CapType:
        return self.obj.type

    @property
    def base(self) -> int:
        return self.obj.base

    @property
    def size_bits(self) -> int:
        return self.obj.size_bits


@dataclass(eq=False)
class Mapping:
    """Entry `entry` of page table `vnode` maps what `cap` names (PTE `pte`)."""
    vnode: KernelObject
    entry: int
    cap: Capability
    pte: int


def new_object(obj_type: CapType, base: int, size: int, parent: KernelObject | None) -> KernelObject:
    """A new object, linked under `parent` in the derivation tree."""
    obj = KernelObject(obj_type, base, size, parent)
    if obj_type == CapType.CNODE:
        obj.slots = [None] * (size >> SLOT_BITS)
    if parent is not None:
        parent.children.append(obj)
    return obj


def place_cap(obj: KernelObject, rights: Rights, badge: int,
              cnode: KernelObject | None, index: int) -> Capability:
    """A new capability to `obj` in slot `index` of `cnode` (which must be empty)."""
    cap = Capability(obj, Rights(rights), badge, cnode, index)
    obj.caps.append(cap)
    if cnode is not None:
        assert cnode.slots[index] is None, "place_cap into a full slot"
        cnode.slots[index] = cap
    return cap


def move_cap(cap: Capability, cnode: KernelObject, index: int) -> None:
    """Put `cap` into empty slot `index` of `cnode` and empty the slot it was in."""
    assert cnode.slots[index] is None, "move_cap into a full slot"
    if cap.cnode is not None and cap.cnode.slots[cap.index] is cap:
        cap.cnode.slots[cap.index] = None
    cap.cnode, cap.index = cnode, index
    cnode.slots[index] = cap


def unlink_cap(cap: Capability) -> None:
    """Take `cap` out of its slot and off its object (its mappings are the caller's)."""
    cap.live = False
    cap.obj.caps.remove(cap)
    if cap.cnode is not None and cap.cnode.slots[cap.index] is cap:
        cap.cnode.slots[cap.index] = None


def unlink_object(obj: KernelObject) -> None:
    """Take a dead object out of the derivation tree."""
    obj.live = False
    if obj.parent is not None:
        obj.parent.children.remove(obj)


def is_unnamed(obj: KernelObject) -> bool:
    """Nothing names it any more: no capability and no child. It must go."""
    return not obj.caps and not obj.children


def doomed(caps: list) -> list:
    """Every capability that deleting `caps` would take: them, and what sits in
    a CNode that goes with its last capability. A dry run of system._delete_caps
    that changes nothing, so that a rule can refuse the deletion before it starts."""
    gone_caps, gone_objects = set(), set()
    found, pending = [], list(caps)
    while pending:
        cap = pending.pop()
        if not cap.live or id(cap) in gone_caps:
            continue
        gone_caps.add(id(cap))
        found.append(cap)
        obj = cap.obj
        while (obj is not None and id(obj) not in gone_objects
               and all(id(c) in gone_caps for c in obj.caps)
               and all(id(child) in gone_objects for child in obj.children)):
            gone_objects.add(id(obj))
            if obj.type == CapType.CNODE:
                pending.extend(c for c in obj.slots if c is not None)
            obj = obj.parent
    return found


def descendants(obj: KernelObject) -> list:
    """Every object derived from `obj`, children before their own children."""
    found, pending = [], list(obj.children)
    while pending:
        node = pending.pop()
        found.append(node)
        pending.extend(node.children)
    return found


def cnodes_reachable(start: KernelObject) -> set:
    """The ids of `start` and of every CNode whose capability is inside it, however deep."""
    seen, pending = {id(start): start}, [start]
    while pending:
        for cap in pending.pop().slots:
            if cap is not None and cap.type == CapType.CNODE and id(cap.obj) not in seen:
                seen[id(cap.obj)] = cap.obj
                pending.append(cap.obj)
    return set(seen)
