"""What a capability can be: its types, its rights, and how big each object is.

This module is vocabulary only. It says which kinds of kernel object exist
(`CapType`), which rights a capability can carry (`Rights`), and the sizes
and alignments of objects (`SIZES`); it decides nothing. What may be done
with them is in rules.py.

Every object is a naturally aligned power-of-two region of physical memory
(`size_bits` is always log2 of its size in bytes), except the objects that
own no memory at all (`MEMORYLESS`): an EndPoint is a view of the dispatcher
it was retyped from, and the Kernel capability names the kernel itself.
"""

from dataclasses import dataclass
from enum import IntEnum, IntFlag


class CapType(IntEnum):
    """The kinds of kernel object. The numbers are ABI: the guest uses them."""
    NULL = 0            # an empty slot
    RAM = 1             # untyped memory: only good for retyping
    FRAME = 2           # memory that can be mapped
    CNODE = 3           # a table of capability slots
    VNODE_PML4 = 4      # a page table, one type per x86-64 level ...
    VNODE_PDPT = 5
    VNODE_PD = 6
    VNODE_PT = 7        # ... down to the last level, whose entries map 4 KiB
    DISPATCHER = 8      # a dispatcher control block
    ENDPOINT = 9        # a way to send to one dispatcher (a view of it)
    KERNEL = 10         # the kernel's own: privileged operations (monitor)


class Rights(IntFlag):
    """What the holder of a capability may do with it (rules.NEEDS says where)."""
    NONE = 0
    READ = 1
    WRITE = 2
    EXECUTE = 4
    GRANT = 8
    ALL = READ | WRITE | EXECUTE | GRANT


RIGHTS_MEANING = {
    Rights.READ: "map it at all (x86 has no unreadable page); map a table into a table",
    Rights.WRITE: "map it writable; retype it; change a page table or the slots of a CNode",
    Rights.EXECUTE: "map it executable (without it every page is no-execute)",
    Rights.GRANT: "hand it to another dispatcher",
}


@dataclass(frozen=True)
class Size:
    """The sizes an object of one type may have: 2**min_bits .. 2**max_bits bytes."""
    min_bits: int
    max_bits: int


PAGE_BITS = 12
MAX_PHYSICAL_BITS = 48          # no region is bigger than the physical address space
SLOT_BITS = 6                   # a CNode slot takes 64 bytes (Barrelfish's CTE size)
MAX_CNODE_SLOT_BITS = 8         # a CNode has 2 to 256 slots

SIZES = {
    CapType.RAM: Size(PAGE_BITS, MAX_PHYSICAL_BITS),
    CapType.FRAME: Size(PAGE_BITS, MAX_PHYSICAL_BITS),
    CapType.CNODE: Size(SLOT_BITS + 1, SLOT_BITS + MAX_CNODE_SLOT_BITS),
    CapType.VNODE_PML4: Size(PAGE_BITS, PAGE_BITS),
    CapType.VNODE_PDPT: Size(PAGE_BITS, PAGE_BITS),
    CapType.VNODE_PD: Size(PAGE_BITS, PAGE_BITS),
    CapType.VNODE_PT: Size(PAGE_BITS, PAGE_BITS),
    CapType.DISPATCHER: Size(10, 10),
    CapType.ENDPOINT: Size(0, 0),
    CapType.KERNEL: Size(0, 0),
}

# Objects that own no memory: the overlap rule never counts them.
MEMORYLESS = frozenset({CapType.ENDPOINT, CapType.KERNEL})

# The page-table levels: the bit where each level's index starts in a
# virtual address, and the level below (what one of its entries points to).
VNODE_TYPES = (CapType.VNODE_PML4, CapType.VNODE_PDPT, CapType.VNODE_PD, CapType.VNODE_PT)
VNODE_SHIFT = {CapType.VNODE_PML4: 39, CapType.VNODE_PDPT: 30,
               CapType.VNODE_PD: 21, CapType.VNODE_PT: 12}
ENTRIES_PER_VNODE = 512


def cnode_slots(size_bits: int) -> int:
    """How many slots a CNode of 2**size_bits bytes has."""
    return 1 << (size_bits - SLOT_BITS)


def type_name(number: int) -> str:
    """A type's name for messages, even for numbers that are no type."""
    try:
        return CapType(number).name
    except ValueError:
        return f"type {number}"
