"""A CSpace, and how user code names a slot in it: capability addresses.

Each dispatcher has one CSpace: a root CNode the kernel holds for it. User
code never holds a capability, only a number that names a slot, a
*capability address* (caddr), resolved here against its own CSpace:

    caddr = L1 << 8 | L2     slot L2 of the CNode whose capability sits in
                             slot L1 of the root CNode (two levels, as in
                             Barrelfish)
    caddr = CADDR_ROOT | L1  slot L1 of the root CNode itself

Any other number names nothing (INVALID_ADDRESS). The root slots are where
the L2 CNodes go, and any other capability may sit there too.

A resolved address is a `Slot`: the CNode capability that leads to the slot
(its rights say whether the slot may be changed, rules.check_slot_writable)
and the index inside that CNode.
"""

from dataclasses import dataclass

from kernel.caps.errors import CapError, ErrorCode
from kernel.caps.mdb import Capability
from kernel.caps.types import CapType

L2_BITS = 8
CADDR_ROOT = 1 << 16        # flag: the address names a slot of the root CNode


def caddr(l1: int, l2: int) -> int:
    """The address of slot `l2` of the CNode in root slot `l1`."""
    return l1 << L2_BITS | l2


def root_caddr(l1: int) -> int:
    """The address of root slot `l1`."""
    return CADDR_ROOT | l1


@dataclass
class Slot:
    cnode_cap: Capability       # the CNode capability the address went through
    index: int

    @property
    def cap(self) -> Capability | None:
        return self.cnode_cap.obj.slots[self.index]


class CSpace:
    """One dispatcher's capability space: a root CNode capability the kernel holds."""

    def __init__(self, root: Capability):
        self.root = root

    def slot(self, address: int) -> Slot:
        """Resolve a capability address to a slot (which may be empty)."""
        if address & ~(CADDR_ROOT | (1 << 2 * L2_BITS) - 1):
            raise CapError(ErrorCode.INVALID_ADDRESS, f"{address:#x} is not a capability address")
        l1 = (address >> L2_BITS) & ((1 << L2_BITS) - 1)
        if address & CADDR_ROOT:
            if l1:
                raise CapError(ErrorCode.INVALID_ADDRESS, f"{address:#x}: a root address has no L1 part")
            return self._index(self.root, address & ((1 << L2_BITS) - 1))
        l1_slot = self._index(self.root, l1)
        cnode = l1_slot.cap
        if cnode is None or cnode.type != CapType.CNODE:
            raise CapError(ErrorCode.NOT_A_CNODE, f"root slot {l1} holds no CNode")
        return self._index(cnode, address & ((1 << L2_BITS) - 1))

    def lookup(self, address: int) -> Capability:
        """The capability at `address`; SLOT_EMPTY if there is none."""
        cap = self.slot(address).cap
        if cap is None:
            raise CapError(ErrorCode.SLOT_EMPTY, f"slot {address:#x} is empty")
        return cap

    @staticmethod
    def _index(cnode_cap: Capability, index: int) -> Slot:
        if index >= len(cnode_cap.obj.slots):
            raise CapError(ErrorCode.INVALID_ADDRESS,
                           f"slot {index} is past the end of a {len(cnode_cap.obj.slots)}-slot CNode")
        return Slot(cnode_cap, index)
