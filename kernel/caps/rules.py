"""THE capability rules: every check an operation makes, and nothing else.

This is the one file to read to know what user code may do with a
capability, and the one place that enforces it: system.py calls these
functions before it changes anything, and docs/capabilities.md is generated
from the tables here (a test keeps the two equal). Each rule is a small
function that returns what the operation needs or raises `CapError` with
the code user code will see.

The tables:
  RETYPE    what each type may be retyped into
  MAPPABLE  what each page-table level may point to
  NEEDS     the rights each operation needs, on which capability
  IMPORTABLE what IMPORT may make: what one core can describe to another

The rules that are not a table:
  retype    the new objects are naturally aligned, lie inside the source, and
            overlap no live descendant of the source (nor of any copy of it:
            descendants belong to the object, not to one copy); they get the
            source's rights, never more
  mint      may only remove rights; a badge goes on an unbadged endpoint, once
  revoke    a copy with fewer rights cannot revoke a copy with more
  store     a CNode's capability may not go inside that CNode, directly or
            through other CNodes (a cycle no delete could ever free)
  map       a page-table entry maps a Frame page or the next level's table;
            the PTE is writable only with WRITE and no-execute unless EXECUTE
  lock      a RAM object with no descendants on this core may be locked
            through one copy; until that copy unlocks it, only that copy
            retypes it, nothing revokes it, and that copy is not deleted.
            An unlock may mark it retyped elsewhere: then it is never
            retyped nor locked here again. (Each core's capability system
            is one replica; the monitors lock every core's copy of shared
            memory before one of them retypes it: two-phase commit.)
  kernel    the KERNEL capability is never copied, minted nor handed to
            another dispatcher: the kernel puts one into each monitor's
            CSpace (kernel/capservice.py), and TAKE, GIVE and IMPORT need it
  move      TAKE and GIVE move one capability between two CSpaces of a
            core: it needs GRANT, maps nothing, holds no lock, and is no
            CNode nor the KERNEL capability. Its copies, descendants and
            derivation stay as they were: only its slot changes
  import    IMPORT makes a foreign copy: RAM or a Frame another core owns,
            aligned to its size, in RAM, overlapping nothing of this core
            (the same foreign object again gets one more copy). A foreign
            object is copied, minted, mapped, deleted here, never retyped
            nor locked: what is made of it is its home core's business
"""

from kernel.caps import mdb
from kernel.caps.errors import CapError, ErrorCode
from kernel.caps.types import (ENTRIES_PER_VNODE, SIZES, VNODE_SHIFT, VNODE_TYPES, CapType, Rights,
                               type_name)

T = CapType

# LAB caps BEGIN retype_table
RETYPE = {
    T.RAM: (T.RAM, T.FRAME, T.CNODE, T.VNODE_PML4, T.VNODE_PDPT, T.VNODE_PD, T.VNODE_PT,
            T.DISPATCHER),
    T.FRAME: (T.FRAME,),
    T.DISPATCHER: (T.ENDPOINT,),    # endpoints are views of it: any number, no memory
}
# LAB caps END retype_table

# Memory one core can describe to another in a message (type, base, size,
# rights): RAM and Frames are nothing but memory. A CNode holds capabilities
# of its core, a page table entries its core's capabilities made, a
# dispatcher is run by its core's CPU driver, an endpoint is a view of such
# a dispatcher (LMP stays on a core), and the KERNEL capability is each
# core's own: none of those means anything on another core.
IMPORTABLE = (T.RAM, T.FRAME)

MAPPABLE = {
    T.VNODE_PML4: (T.VNODE_PDPT,),
    T.VNODE_PDPT: (T.VNODE_PD, T.FRAME),    # a Frame here is a 1 GiB page
    T.VNODE_PD: (T.VNODE_PT, T.FRAME),      # a Frame here is a 2 MiB page
    T.VNODE_PT: (T.FRAME,),                 # a 4 KiB page
}

R = Rights
NEEDS = {
    # (operation, which capability): rights it must hold
    ("retype", "source"): R.WRITE,
    ("retype", "destination CNode"): R.WRITE,
    ("copy", "source"): R.NONE,
    ("copy", "destination CNode"): R.WRITE,
    ("mint", "source"): R.NONE,
    ("mint", "destination CNode"): R.WRITE,
    ("delete", "its CNode"): R.WRITE,
    ("revoke", "capability"): R.NONE,       # and check_revoke below
    ("identify", "capability"): R.NONE,
    ("map", "page table"): R.WRITE,
    ("map", "source"): R.READ,
    ("unmap", "page table"): R.WRITE,
    ("transfer", "capability"): R.GRANT,    # to another dispatcher (LMP/monitor)
    ("lock", "capability"): R.WRITE,        # it holds off retypes: what a retype needs
    ("unlock", "capability"): R.WRITE,
    ("take", "kernel capability"): R.WRITE,
    ("take", "capability"): R.GRANT,        # it goes to another dispatcher: a hand-over
    ("take", "source CNode"): R.WRITE,
    ("take", "destination CNode"): R.WRITE,
    ("give", "kernel capability"): R.WRITE,
    ("give", "capability"): R.GRANT,
    ("give", "source CNode"): R.WRITE,
    ("give", "destination CNode"): R.WRITE,
    ("import", "kernel capability"): R.WRITE,
    ("import", "destination CNode"): R.WRITE,
}

MAX_RETYPE_COUNT = 256          # no more objects than the largest CNode has slots
MAX_BADGE = (1 << 32) - 1
PTE_PRESENT, PTE_WRITABLE, PTE_USER, PTE_LARGE = 1 << 0, 1 << 1, 1 << 2, 1 << 7
PTE_NO_EXECUTE = 1 << 63
# PML4 entries the kernel keeps for itself in every address space: entry 0
# maps physical RAM for the CPU driver (cpudriver/paging.S).
KERNEL_PML4_ENTRIES = frozenset({0})


def refuse(code: ErrorCode, message: str):
    raise CapError(code, message)


def check_rights(cap: mdb.Capability, operation: str, role: str) -> None:
    """The NEEDS table: `cap`, playing `role` in `operation`, holds what it must."""
    missing = NEEDS[(operation, role)] & ~cap.rights
    if missing:
        refuse(ErrorCode.NO_RIGHTS, f"{operation} needs {missing.name} on the {role}")


def check_type(cap: mdb.Capability, allowed, operation: str) -> None:
    if cap.type not in allowed:
        refuse(ErrorCode.WRONG_TYPE, f"{operation} does not work on a {cap.type.name}")


def check_rights_value(rights: int) -> Rights:
    """A rights argument from user code: only bits that are rights."""
    if rights & ~int(Rights.ALL):       # (~ on a flag stays within its bits)
        refuse(ErrorCode.INVALID_ARGUMENT, f"{rights:#x} has bits that are no right")
    return Rights(rights)


# -- retype -------------------------------------------------------------------

def check_retype(src: mdb.Capability, new_type: int, size_bits: int, offset: int,
                 count: int) -> tuple[int, int]:
    """The new type is in RETYPE[source], its size in SIZES, the count 1..256;
    the objects are aligned to their size and fit in the source.

    Retype makes `count` objects of 2**size_bits bytes at `offset` in the
    source. Returns (the first object's base, each object's size in bytes).
    """
    # LAB caps BEGIN check_retype
    check_rights(src, "retype", "source")
    if new_type not in RETYPE.get(src.type, ()):
        refuse(ErrorCode.RETYPE_NOT_ALLOWED, f"a {src.type.name} cannot become a {type_name(new_type)}")
    new_type = CapType(new_type)
    allowed = SIZES[new_type]
    if not allowed.min_bits <= size_bits <= allowed.max_bits:
        refuse(ErrorCode.INVALID_SIZE, f"a {new_type.name} is 2**{allowed.min_bits}.."
               f"2**{allowed.max_bits} bytes, not 2**{size_bits}")
    if not 1 <= count <= MAX_RETYPE_COUNT:
        refuse(ErrorCode.INVALID_SIZE, f"count {count} is not 1..{MAX_RETYPE_COUNT}")
    size = 1 << size_bits if size_bits else 0
    if size == 0:                                   # a view: it takes no memory
        if offset:
            refuse(ErrorCode.OUT_OF_RANGE, f"a {new_type.name} has no offset")
        return src.base, 0
    if offset + count * size > src.obj.size:
        refuse(ErrorCode.OUT_OF_RANGE, f"{count} x {size:#x} bytes at offset {offset:#x} "
               f"do not fit in {src.obj.size:#x}")
    start = src.base + offset
    if start % size:
        refuse(ErrorCode.MISALIGNED, f"{start:#x} is not a multiple of the object size {size:#x}")
    return start, size
    # LAB caps END check_retype


def check_not_foreign(src: mdb.Capability) -> None:
    """A foreign copy (IMPORT) is never retyped nor locked here.

    Its memory is another core's: only that core's capability system knows
    what else was made of it, so only there can a retype be checked."""
    if src.obj.foreign:
        refuse(ErrorCode.FOREIGN, f"the {src.type.name} lives on another core")


def check_no_overlap(src: mdb.KernelObject, start: int, end: int) -> None:
    """No live descendant of the source may overlap [start, end).

    Looking at the children is enough: every deeper descendant lies inside
    one of them, since a retype never reaches outside its source.
    """
    # LAB caps BEGIN check_no_overlap
    for child in src.children:
        if child.overlaps(start, end):
            refuse(ErrorCode.OVERLAP, f"{child.type.name} at {child.base:#x}..{child.end:#x} "
                   f"is already there")
    # LAB caps END check_no_overlap


def check_not_locked(src: mdb.Capability) -> None:
    """A locked object is retyped only through the copy that holds the lock; one
    retyped elsewhere, never.

    The monitor that started a two-phase commit retypes its own locked copy
    once every core has voted yes, before it unlocks."""
    if src.obj.retyped_elsewhere:
        refuse(ErrorCode.RETYPED_ELSEWHERE, "it was retyped on another core")
    if src.obj.locked_by is not None and src.obj.locked_by is not src:
        refuse(ErrorCode.LOCKED, "another copy holds its lock")


def retyped_rights(src: mdb.Capability) -> Rights:
    """New objects get the source's rights: a retype never adds any."""
    # LAB caps BEGIN retyped_rights
    return src.rights
    # LAB caps END retyped_rights


# -- copy, mint, revoke, store --------------------------------------------------

def check_copyable(cap: mdb.Capability, operation: str) -> None:
    """The KERNEL capability is never copied, minted nor handed on.

    It is what makes a dispatcher its core's monitor: only the kernel gives
    it, at boot, to the dispatchers its boot modules name monitors."""
    if cap.type == CapType.KERNEL:
        refuse(ErrorCode.WRONG_TYPE, f"{operation} does not work on the KERNEL capability")


def check_mint(src: mdb.Capability, rights: int, badge: int) -> tuple[Rights, int]:
    """The rights and badge of a minted copy: rights only removed, a badge set once."""
    # LAB caps BEGIN check_mint
    rights = check_rights_value(rights)
    if rights & ~src.rights:
        refuse(ErrorCode.NO_RIGHTS, f"mint cannot add {(rights & ~src.rights).name}")
    if badge == 0:
        return rights, src.badge
    if src.type != CapType.ENDPOINT:
        refuse(ErrorCode.BADGE, f"only an ENDPOINT takes a badge, not a {src.type.name}")
    if src.badge:
        refuse(ErrorCode.BADGE, f"already badged {src.badge}")
    if badge > MAX_BADGE:
        refuse(ErrorCode.BADGE, f"badge {badge:#x} is over {MAX_BADGE:#x}")
    return rights, badge
    # LAB caps END check_mint


def check_revoke(cap: mdb.Capability) -> None:
    """Revoke deletes every other copy: it may not take away rights the caller lacks,
    nor a copy the kernel holds for itself, nor touch a locked object.

    The kernel holds the original of each shared region on each core, so
    that every dispatcher there gets a copy and no dispatcher can revoke the
    others' away."""
    # LAB caps BEGIN check_revoke
    check_rights(cap, "revoke", "capability")
    if cap.obj.locked_by is not None:
        refuse(ErrorCode.LOCKED, "the object is locked")
    for other in cap.obj.caps:
        if other.rights & ~cap.rights:
            refuse(ErrorCode.NO_RIGHTS,
                   f"a copy holds {(other.rights & ~cap.rights).name}, which this one lacks")
        if other.cnode is None and other is not cap:
            refuse(ErrorCode.NO_RIGHTS, "a copy is the kernel's own")
    # LAB caps END check_revoke


def check_lock_holders_stay(doomed: list) -> None:
    """A copy that holds a lock is not deleted, directly or with what goes with it
    (the CNode it sits in, an object revoked above it): it unlocks first.

    `doomed` is every capability the operation would delete (mdb.doomed)."""
    for cap in doomed:
        if cap.obj.locked_by is cap:
            refuse(ErrorCode.LOCKED, f"a copy to delete holds the lock on a {cap.type.name}")


def check_slot_writable(cnode_cap: mdb.Capability, operation: str,
                        role: str | None = None) -> None:
    """Changing a slot needs WRITE on the CNode capability that leads to it."""
    if role is None:
        role = "its CNode" if operation == "delete" else "destination CNode"
    check_rights(cnode_cap, operation, role)


def check_store(dest_cnode: mdb.KernelObject, cap_obj: mdb.KernelObject) -> None:
    """A CNode capability may not be stored inside itself, however indirectly."""
    if cap_obj.type == CapType.CNODE and id(dest_cnode) in mdb.cnodes_reachable(cap_obj):
        refuse(ErrorCode.CNODE_CYCLE, "that CNode would contain itself")


def check_transfer(cap: mdb.Capability) -> None:
    """Handing a capability to another dispatcher needs GRANT on it."""
    check_copyable(cap, "transfer")
    check_rights(cap, "transfer", "capability")


# -- lock and unlock: a core's votes in a two-phase commit -------------------------

def check_lock(cap: mdb.Capability) -> None:
    """Only RAM is locked, and only if not foreign, never retyped elsewhere,
    not locked already, and without descendants on this core (not in use here).

    RAM because a lock is a promise about a retype: only RAM is retyped
    into what the memory becomes. The checks go from the most lasting
    refusal to the most passing one."""
    check_type(cap, (CapType.RAM,), "lock")
    check_rights(cap, "lock", "capability")
    check_not_foreign(cap)
    if cap.obj.retyped_elsewhere:
        refuse(ErrorCode.RETYPED_ELSEWHERE, "it was retyped on another core")
    if cap.obj.locked_by is not None:
        refuse(ErrorCode.LOCKED, "it is locked already")
    if cap.obj.children:
        refuse(ErrorCode.HAS_DESCENDANTS, f"{len(cap.obj.children)} objects were retyped "
               f"from it on this core")


def check_unlock(cap: mdb.Capability) -> None:
    """Unlock through the copy that holds the lock.

    The lock is that copy's: another dispatcher holding a copy of the same
    memory cannot release a monitor's vote."""
    check_type(cap, (CapType.RAM,), "unlock")
    check_rights(cap, "unlock", "capability")
    if cap.obj.locked_by is None:
        refuse(ErrorCode.NOT_LOCKED, "it is not locked")
    if cap.obj.locked_by is not cap:
        refuse(ErrorCode.LOCKED, "another copy holds its lock")


# -- the kernel capability: moving capabilities between cores --------------------

def check_kernel(cap: mdb.Capability, operation: str) -> None:
    """The first argument is the KERNEL capability: only a monitor holds one."""
    check_type(cap, (CapType.KERNEL,), operation)
    check_rights(cap, operation, "kernel capability")


def check_move(cap: mdb.Capability, operation: str) -> None:
    """A capability moves if it has GRANT, maps nothing, holds no lock, and is
    neither a CNode nor the KERNEL capability.

    A move hands the capability to another dispatcher, so it needs what a
    transfer needs. What it mapped would stay mapped in the old holder's
    page tables after it left: that is unmapped first. A lock is a core's
    vote, kept by the copy that took it. A CNode would take every
    capability inside it along, past their own GRANT, and no other core
    could make one from a description; the KERNEL capability never leaves
    its monitor."""
    check_copyable(cap, operation)
    if cap.type == CapType.CNODE:
        refuse(ErrorCode.WRONG_TYPE, f"{operation} does not move a CNode")
    check_rights(cap, operation, "capability")
    if cap.obj.locked_by is cap:
        refuse(ErrorCode.LOCKED, "this copy holds the object's lock: it unlocks first")
    if cap.mappings:
        refuse(ErrorCode.MAPPED, f"it maps {len(cap.mappings)} entries")


def check_import(new_type: int, size_bits: int, rights: int) -> tuple[CapType, Rights]:
    """IMPORT makes a type IMPORTABLE names, of a size SIZES allows, with
    nothing but rights in its rights."""
    if new_type not in IMPORTABLE:
        refuse(ErrorCode.WRONG_TYPE, f"a {type_name(new_type)} cannot come from another core")
    new_type = CapType(new_type)
    allowed = SIZES[new_type]
    if not allowed.min_bits <= size_bits <= allowed.max_bits:
        refuse(ErrorCode.INVALID_SIZE, f"a {new_type.name} is 2**{allowed.min_bits}.."
               f"2**{allowed.max_bits} bytes, not 2**{size_bits}")
    return new_type, check_rights_value(rights)


def check_placement(base: int, size: int, memory) -> None:
    """An object made from nothing (at boot, or by IMPORT) is aligned to its
    size and lies in RAM."""
    if not size:
        return                                      # it owns no memory
    if base % size:
        refuse(ErrorCode.MISALIGNED, f"{base:#x} is not a multiple of its size {size:#x}")
    if not memory.contains(base, size):
        refuse(ErrorCode.OUT_OF_RANGE, f"{base:#x}+{size:#x} is not in RAM")


def check_import_overlap(originals: list, new_type: CapType, base: int,
                         size: int) -> "mdb.KernelObject | None":
    """An import overlaps nothing of this core, unless it is exactly a foreign
    object this core has already (same type, base and size): then it is one
    more copy of that object.

    Looking at the originals is enough: everything else lies inside one.
    Returns that foreign object, or None for a new one."""
    for other in originals:
        if not other.overlaps(base, base + size):
            continue
        if other.foreign and (other.type, other.base, other.size) == (new_type, base, size):
            return other
        whose = "a foreign" if other.foreign else "this core's"
        refuse(ErrorCode.OVERLAP, f"{base:#x}..{base + size:#x} overlaps {whose} "
               f"{other.type.name} at {other.base:#x}..{other.end:#x}")
    return None


# -- map and unmap --------------------------------------------------------------

def check_entry(vnode: mdb.Capability, entry: int, kernel_entries) -> None:
    """Entries are 0..511, and the kernel's PML4 entries are never the user's."""
    if entry >= ENTRIES_PER_VNODE:
        refuse(ErrorCode.INVALID_ENTRY, f"entry {entry} is not 0..{ENTRIES_PER_VNODE - 1}")
    if vnode.type == CapType.VNODE_PML4 and entry in kernel_entries:
        refuse(ErrorCode.INVALID_ENTRY, f"PML4 entry {entry} belongs to the kernel")
    if entry in vnode.obj.info.get("boot_entries", ()):
        refuse(ErrorCode.INVALID_ENTRY, f"entry {entry} was made at boot: it is the CPU driver's")


def check_map(vnode: mdb.Capability, entry: int, src: mdb.Capability, rights: int,
              offset: int, kernel_entries) -> int:
    """The entry is free; MAPPABLE[level] has the source's type; the mapping's
    rights are the source's or fewer; a Frame page is aligned to the level's
    page size and lies inside the frame.

    Returns the PTE to write into entry `entry` of `vnode`.
    """
    check_type(vnode, VNODE_TYPES, "map")
    check_rights(vnode, "map", "page table")
    check_entry(vnode, entry, kernel_entries)
    if entry in vnode.obj.entries:
        refuse(ErrorCode.ENTRY_IN_USE, f"entry {entry} already maps something")
    if src.type not in MAPPABLE[vnode.type]:
        refuse(ErrorCode.NOT_MAPPABLE, f"a {src.type.name} cannot go into a {vnode.type.name}")
    check_rights(src, "map", "source")
    rights = check_rights_value(rights)
    if rights & ~src.rights:
        refuse(ErrorCode.NO_RIGHTS, f"the mapping asks for {(rights & ~src.rights).name}, "
               f"which the capability lacks")
    if src.type != CapType.FRAME:                   # the next level's table
        if offset:
            refuse(ErrorCode.OUT_OF_RANGE, "a page table is mapped whole (offset 0)")
        return pte_for(src.base, table=True, large=False, rights=rights)
    page = 1 << VNODE_SHIFT[vnode.type]
    if offset % page or (src.base + offset) % page:
        refuse(ErrorCode.MISALIGNED, f"a {vnode.type.name} entry maps {page:#x}-aligned pages")
    if offset + page > src.obj.size:
        refuse(ErrorCode.OUT_OF_RANGE, f"a {page:#x} page at offset {offset:#x} is past the frame's end")
    return pte_for(src.base + offset, table=False, large=vnode.type != CapType.VNODE_PT, rights=rights)


def pte_for(address: int, table: bool, large: bool, rights: Rights) -> int:
    """The x86-64 entry: present and user; writable only with WRITE;
    no-execute unless EXECUTE; a Frame in a PD or PDPT is a large page.

    An entry that points to the next table allows everything: the page's
    own entry decides (x86 takes the most restrictive along the walk).
    """
    if table:
        return address | PTE_PRESENT | PTE_WRITABLE | PTE_USER
    pte = address | PTE_PRESENT | PTE_USER
    if rights & Rights.WRITE:
        pte |= PTE_WRITABLE
    if large:
        pte |= PTE_LARGE
    if not rights & Rights.EXECUTE:
        pte |= PTE_NO_EXECUTE
    return pte


def check_unmap(vnode: mdb.Capability, entry: int, kernel_entries) -> None:
    """Clear an entry of a page table: one that maps something."""
    check_type(vnode, VNODE_TYPES, "unmap")
    check_rights(vnode, "unmap", "page table")
    check_entry(vnode, entry, kernel_entries)
    if entry not in vnode.obj.entries:
        refuse(ErrorCode.ENTRY_EMPTY, f"entry {entry} maps nothing")


# Which rule functions each operation applies (docs/capabilities.md prints
# the first paragraph of each docstring: the rules as they are enforced).
RULES = {
    "retype": (check_not_foreign, check_retype, check_not_locked, check_no_overlap,
               retyped_rights, check_slot_writable),
    "copy": (check_copyable, check_store, check_slot_writable),
    "mint": (check_copyable, check_mint, check_store, check_slot_writable),
    "delete": (check_slot_writable, check_lock_holders_stay),
    "revoke": (check_revoke, check_lock_holders_stay),
    "identify": (),
    "map": (check_map, check_entry, pte_for),
    "unmap": (check_unmap, check_entry),
    "lock": (check_lock,),
    "unlock": (check_unlock,),
    "take": (check_kernel, check_move, check_slot_writable),
    "give": (check_kernel, check_move, check_slot_writable),
    "import": (check_kernel, check_import, check_placement, check_import_overlap,
               check_slot_writable),
}
