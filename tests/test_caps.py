"""Capabilities: every rule in kernel/caps/rules.py, page tables, and a property test.

The tests speak to the capability system the way user code will, through
`invoke` with raw 64-bit arguments, and look at the result code and at guest
physical memory (the page-table entries the MMU would walk).
"""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from emulator import paging
from emulator.memory import PhysicalMemory
from kernel.caps import (CapabilitySystem, CapType, ErrorCode, Field, Flush, Op, Rights, caddr,
                         defines, root_caddr)
from kernel.caps import doc, rules, vspace
from kernel.caps.types import SIZES, VNODE_SHIFT, VNODE_TYPES

T, R, E = CapType, Rights, ErrorCode
MEMORY_SIZE = 16 << 20
ROOT_CNODE = 0x1_0000           # the root CNode's memory (kernel's)
KERNEL_PML4 = 0x2_0000          # a stand-in for the core's own PML4
KERNEL_ENTRY = 0x3_0000 | rules.PTE_PRESENT | rules.PTE_WRITABLE
RAM_BASE, RAM_BITS = 1 << 20, 20          # root slot 1: 1 MiB of RAM
BIG_RAM_BASE, BIG_RAM_BITS = 4 << 20, 22  # root slot 2: 4 MiB, for large pages
RAM, BIG_RAM, L2 = root_caddr(1), root_caddr(2), root_caddr(0)


class World:
    """A core's capability system with one CSpace: RAM in root slots 1 and 2."""

    def __init__(self, boot_l2=False):
        self.memory = PhysicalMemory(MEMORY_SIZE)
        self.memory.write_u64(KERNEL_PML4, KERNEL_ENTRY)
        self.system = CapabilitySystem(self.memory, kernel_pml4=KERNEL_PML4)
        self.cspace = self.system.new_cspace(ROOT_CNODE, size_bits=14)
        self.system.create(self.cspace, RAM, T.RAM, RAM_BASE, RAM_BITS)
        self.system.create(self.cspace, BIG_RAM, T.RAM, BIG_RAM_BASE, BIG_RAM_BITS)
        # a 256-slot CNode in root slot 0: from the boot, or from the last 16 KiB of RAM
        if boot_l2:
            self.system.create(self.cspace, L2, T.CNODE, ROOT_CNODE + 0x4000, 14)
        else:
            self.ok(Op.RETYPE, RAM, 0xFC000, T.CNODE, 14, 1, L2)

    def call(self, op, *args):
        return self.system.invoke(self.cspace, op, list(args))

    def ok(self, op, *args):
        result, flushes = self.call(op, *args)
        assert result >= 0, f"{Op(op).name}{args} was refused: {ErrorCode(-result).name}"
        return flushes

    def refused(self, op, *args):
        result, flushes = self.call(op, *args)
        assert result < 0, f"{Op(op).name}{args} should have been refused"
        assert flushes == []
        return ErrorCode(-result)

    def identify(self, address, field):
        return self.call(Op.IDENTIFY, address, field)[0]

    def empty(self, address):
        return self.refused(Op.IDENTIFY, address, Field.TYPE) == E.SLOT_EMPTY

    def pte(self, vnode_address, entry):
        base = self.identify(vnode_address, Field.BASE)
        return self.memory.read_u64(base + entry * 8)

    def address_space(self):
        """PML4 at L2 slot 0 -> PDPT (entry 1) -> PD (0) -> PT (0); a frame at slots 4.."""
        for slot, vnode_type, offset in ((0, T.VNODE_PML4, 0x10000), (1, T.VNODE_PDPT, 0x11000),
                                         (2, T.VNODE_PD, 0x12000), (3, T.VNODE_PT, 0x13000)):
            self.ok(Op.RETYPE, RAM, offset, vnode_type, 12, 1, caddr(0, slot))
        self.ok(Op.MAP, caddr(0, 0), 1, caddr(0, 1), R.ALL, 0)
        self.ok(Op.MAP, caddr(0, 1), 0, caddr(0, 2), R.ALL, 0)
        self.ok(Op.MAP, caddr(0, 2), 0, caddr(0, 3), R.ALL, 0)
        self.ok(Op.RETYPE, RAM, 0x20000, T.FRAME, 12, 4, caddr(0, 4))
        return self.identify(caddr(0, 0), Field.BASE)


USER_VA = 1 << 39                   # PML4 entry 1, PDPT 0, PD 0, PT 0


# -- retype --------------------------------------------------------------------

def test_retype_fills_consecutive_slots_with_adjacent_objects():
    world = World()
    world.ok(Op.RETYPE, RAM, 0x8000, T.FRAME, 12, 3, caddr(0, 10))
    bases = [world.identify(caddr(0, 10 + i), Field.BASE) for i in range(3)]
    assert bases == [RAM_BASE + 0x8000, RAM_BASE + 0x9000, RAM_BASE + 0xA000]
    assert world.identify(caddr(0, 11), Field.TYPE) == T.FRAME
    assert world.identify(caddr(0, 11), Field.SIZE_BITS) == 12


def test_retype_refused_where_a_descendant_overlaps():
    world = World()
    world.ok(Op.RETYPE, RAM, 0x8000, T.FRAME, 13, 1, caddr(0, 1))
    assert world.refused(Op.RETYPE, RAM, 0x9000, T.FRAME, 12, 1, caddr(0, 2)) == E.OVERLAP
    assert world.refused(Op.RETYPE, RAM, 0x0, T.FRAME, 16, 1, caddr(0, 2)) == E.OVERLAP
    world.ok(Op.RETYPE, RAM, 0xA000, T.FRAME, 12, 1, caddr(0, 2))      # beside it: fine


def test_retype_of_a_copy_sees_the_descendants_of_the_original():
    world = World()
    world.ok(Op.COPY, RAM, root_caddr(5))
    world.ok(Op.RETYPE, RAM, 0x8000, T.FRAME, 12, 1, caddr(0, 1))
    assert world.refused(Op.RETYPE, root_caddr(5), 0x8000, T.DISPATCHER, 10, 1,
                         caddr(0, 2)) == E.OVERLAP


def test_retype_refuses_misaligned_objects():
    world = World()
    assert world.refused(Op.RETYPE, RAM, 0x800, T.FRAME, 12, 1, caddr(0, 1)) == E.MISALIGNED
    assert world.refused(Op.RETYPE, RAM, 0x1000, T.FRAME, 13, 1, caddr(0, 1)) == E.MISALIGNED
    assert world.refused(Op.RETYPE, RAM, 0x40, T.CNODE, 7, 1, caddr(0, 1)) == E.MISALIGNED
    world.ok(Op.RETYPE, RAM, 0x80, T.CNODE, 7, 1, caddr(0, 1))


def test_retype_refuses_objects_outside_the_source():
    world = World()
    assert world.refused(Op.RETYPE, RAM, 0xFF000, T.FRAME, 12, 2, caddr(0, 1)) == E.OUT_OF_RANGE
    assert world.refused(Op.RETYPE, RAM, 0, T.FRAME, 21, 1, caddr(0, 1)) == E.OUT_OF_RANGE
    assert world.refused(Op.RETYPE, RAM, 2**64 - 4096, T.FRAME, 12, 1,
                         caddr(0, 1)) == E.OUT_OF_RANGE


def test_retype_refuses_sizes_and_counts_a_type_cannot_have():
    world = World()
    for obj_type, size in SIZES.items():
        if obj_type in rules.RETYPE[T.RAM]:
            for bits in (size.min_bits - 1, size.max_bits + 1):
                assert world.refused(Op.RETYPE, RAM, 0, obj_type, bits, 1,
                                     caddr(0, 1)) == E.INVALID_SIZE, obj_type.name
    assert world.refused(Op.RETYPE, RAM, 0, T.FRAME, 12, 0, caddr(0, 1)) == E.INVALID_SIZE
    assert world.refused(Op.RETYPE, RAM, 0, T.FRAME, 12, 257, caddr(0, 1)) == E.INVALID_SIZE


def one_of_each_type(world):
    """A capability of every type that can exist, in L2 slots; {type: address}."""
    made = {T.RAM: RAM}
    for slot, obj_type in enumerate((T.FRAME, T.CNODE, T.VNODE_PML4, T.VNODE_PDPT, T.VNODE_PD,
                                     T.VNODE_PT, T.DISPATCHER), start=1):
        world.ok(Op.RETYPE, RAM, slot * 0x10000, obj_type, SIZES[obj_type].min_bits, 1,
                 caddr(0, slot))
        made[obj_type] = caddr(0, slot)
    world.ok(Op.RETYPE, made[T.DISPATCHER], 0, T.ENDPOINT, 0, 1, caddr(0, 20))
    made[T.ENDPOINT] = caddr(0, 20)
    world.system.create(world.cspace, caddr(0, 21), T.KERNEL, 0, 0)
    made[T.KERNEL] = caddr(0, 21)
    return made


def test_retype_follows_the_table_and_nothing_else():
    world = World()
    made = one_of_each_type(world)
    for src_type, address in made.items():
        for new_type in list(CapType) + [11, 2**64 - 1]:
            if new_type in rules.RETYPE.get(src_type, ()):
                continue
            assert world.refused(Op.RETYPE, address, 0, new_type, 12, 1,
                                 caddr(0, 30)) == E.RETYPE_NOT_ALLOWED, (src_type, new_type)


def test_retype_needs_write_and_never_adds_rights():
    world = World()
    world.ok(Op.MINT, RAM, root_caddr(5), R.READ | R.GRANT, 0)
    assert world.refused(Op.RETYPE, root_caddr(5), 0, T.FRAME, 12, 1, caddr(0, 1)) == E.NO_RIGHTS
    world.ok(Op.MINT, RAM, root_caddr(6), R.READ | R.WRITE, 0)
    world.ok(Op.RETYPE, root_caddr(6), 0, T.FRAME, 12, 1, caddr(0, 1))
    assert world.identify(caddr(0, 1), Field.RIGHTS) == R.READ | R.WRITE


def test_retype_zeroes_the_new_objects():
    world = World()
    world.memory.write(RAM_BASE, b"\xAA" * 0x2000)
    world.ok(Op.RETYPE, RAM, 0, T.FRAME, 12, 2, caddr(0, 1))
    assert world.memory.read(RAM_BASE, 0x2000) == bytes(0x2000)


def test_retype_refuses_occupied_or_missing_destination_slots():
    world = World()
    world.ok(Op.RETYPE, RAM, 0, T.FRAME, 12, 1, caddr(0, 3))
    assert world.refused(Op.RETYPE, RAM, 0x1000, T.FRAME, 12, 4, caddr(0, 1)) == E.SLOT_IN_USE
    assert world.refused(Op.RETYPE, RAM, 0x1000, T.FRAME, 12, 2, caddr(0, 255)) == E.INVALID_ADDRESS


def test_endpoints_are_views_of_a_dispatcher():
    world = World()
    world.ok(Op.RETYPE, RAM, 0x400, T.DISPATCHER, 10, 1, caddr(0, 1))
    world.ok(Op.RETYPE, caddr(0, 1), 0, T.ENDPOINT, 0, 2, caddr(0, 2))
    world.ok(Op.RETYPE, caddr(0, 1), 0, T.ENDPOINT, 0, 1, caddr(0, 4))     # again: no overlap
    assert world.identify(caddr(0, 2), Field.BASE) == RAM_BASE + 0x400
    dispatcher = world.system.lookup(world.cspace, caddr(0, 1)).obj
    assert world.system.lookup(world.cspace, caddr(0, 4)).obj.parent is dispatcher
    assert world.refused(Op.RETYPE, caddr(0, 1), 8, T.ENDPOINT, 0, 1, caddr(0, 5)) == E.OUT_OF_RANGE


# -- copy, mint, identify ---------------------------------------------------------

def test_copy_keeps_rights_and_badge():
    world = World()
    world.ok(Op.RETYPE, RAM, 0x400, T.DISPATCHER, 10, 1, caddr(0, 1))
    world.ok(Op.RETYPE, caddr(0, 1), 0, T.ENDPOINT, 0, 1, caddr(0, 2))
    world.ok(Op.MINT, caddr(0, 2), caddr(0, 3), R.WRITE | R.GRANT, 42)
    world.ok(Op.COPY, caddr(0, 3), caddr(0, 4))
    assert world.identify(caddr(0, 4), Field.BADGE) == 42
    assert world.identify(caddr(0, 4), Field.RIGHTS) == R.WRITE | R.GRANT


def test_mint_only_ever_removes_rights():
    world = World()
    world.ok(Op.RETYPE, RAM, 0, T.FRAME, 12, 1, caddr(0, 1))
    world.ok(Op.MINT, caddr(0, 1), caddr(0, 2), R.READ | R.WRITE, 0)
    world.ok(Op.MINT, caddr(0, 2), caddr(0, 3), R.READ, 0)
    for more in (R.WRITE, R.EXECUTE, R.GRANT, R.ALL):
        assert world.refused(Op.MINT, caddr(0, 3), caddr(0, 9), R.READ | more, 0) == E.NO_RIGHTS
    assert world.refused(Op.MINT, caddr(0, 1), caddr(0, 9), 1 << 4, 0) == E.INVALID_ARGUMENT
    assert world.identify(caddr(0, 3), Field.RIGHTS) == R.READ


def test_a_badge_goes_once_on_an_endpoint_only():
    world = World()
    world.ok(Op.RETYPE, RAM, 0, T.FRAME, 12, 1, caddr(0, 1))
    world.ok(Op.RETYPE, RAM, 0x400 * 8, T.DISPATCHER, 10, 1, caddr(0, 2))
    world.ok(Op.RETYPE, caddr(0, 2), 0, T.ENDPOINT, 0, 1, caddr(0, 3))
    assert world.refused(Op.MINT, caddr(0, 1), caddr(0, 9), R.ALL, 7) == E.BADGE
    world.ok(Op.MINT, caddr(0, 3), caddr(0, 4), R.ALL, 7)
    assert world.refused(Op.MINT, caddr(0, 4), caddr(0, 9), R.ALL, 8) == E.BADGE
    assert world.refused(Op.MINT, caddr(0, 3), caddr(0, 9), R.ALL, 2**32) == E.BADGE
    world.ok(Op.MINT, caddr(0, 4), caddr(0, 5), R.WRITE, 0)          # 0: keep the badge
    assert world.identify(caddr(0, 5), Field.BADGE) == 7


def test_identify_tells_what_a_capability_is():
    world = World()
    world.ok(Op.RETYPE, BIG_RAM, 1 << 21, T.FRAME, 21, 1, caddr(0, 1))
    world.ok(Op.MINT, caddr(0, 1), caddr(0, 2), R.READ | R.EXECUTE, 0)
    facts = [world.identify(caddr(0, 2), field) for field in Field]
    assert facts == [T.FRAME, BIG_RAM_BASE + (1 << 21), 21, R.READ | R.EXECUTE, 0]
    assert world.refused(Op.IDENTIFY, caddr(0, 2), 5) == E.INVALID_ARGUMENT


def test_transfer_needs_grant():
    world = World()
    world.ok(Op.MINT, RAM, root_caddr(5), R.READ | R.WRITE, 0)
    with pytest.raises(rules.CapError) as refused:
        rules.check_transfer(world.system.lookup(world.cspace, root_caddr(5)))
    assert refused.value.code == E.NO_RIGHTS
    rules.check_transfer(world.system.lookup(world.cspace, RAM))


# -- addresses and CNodes ------------------------------------------------------

def test_bad_addresses_are_refused_not_crashed_on():
    world = World()
    assert world.refused(Op.IDENTIFY, 1 << 17, 0) == E.INVALID_ADDRESS
    assert world.refused(Op.IDENTIFY, root_caddr(0) | 1 << 8, 0) == E.INVALID_ADDRESS
    assert world.refused(Op.IDENTIFY, caddr(3, 0), 0) == E.NOT_A_CNODE       # empty root slot
    assert world.refused(Op.IDENTIFY, caddr(1, 0), 0) == E.NOT_A_CNODE       # RAM, not a CNode
    assert world.refused(Op.IDENTIFY, caddr(0, 7), 0) == E.SLOT_EMPTY
    world.ok(Op.RETYPE, RAM, 0x80, T.CNODE, 7, 1, root_caddr(3))             # two slots
    assert world.refused(Op.IDENTIFY, caddr(3, 2), 0) == E.INVALID_ADDRESS
    assert world.refused(Op.IDENTIFY, 2**64 - 1, 0) == E.INVALID_ADDRESS


def test_a_cnode_cannot_be_stored_inside_itself():
    world = World()
    world.ok(Op.RETYPE, RAM, 0x4000, T.CNODE, 8, 1, root_caddr(3))
    world.ok(Op.RETYPE, RAM, 0x4100, T.CNODE, 8, 1, caddr(3, 0))
    assert world.refused(Op.COPY, root_caddr(3), caddr(3, 1)) == E.CNODE_CYCLE
    world.ok(Op.COPY, caddr(3, 0), root_caddr(4))
    assert world.refused(Op.MINT, root_caddr(3), caddr(4, 0), R.READ, 0) == E.CNODE_CYCLE
    world.ok(Op.COPY, root_caddr(3), caddr(0, 0))        # into a CNode outside it: fine


def test_a_cnode_without_write_cannot_be_changed():
    world = World()
    world.ok(Op.RETYPE, RAM, 0, T.FRAME, 12, 1, caddr(0, 1))
    world.ok(Op.MINT, L2, root_caddr(4), R.READ, 0)
    assert world.refused(Op.COPY, caddr(4, 1), caddr(4, 2)) == E.NO_RIGHTS
    assert world.refused(Op.DELETE, caddr(4, 1)) == E.NO_RIGHTS
    assert world.refused(Op.RETYPE, RAM, 0x1000, T.FRAME, 12, 1, caddr(4, 2)) == E.NO_RIGHTS
    world.ok(Op.COPY, caddr(4, 1), caddr(0, 2))          # its capabilities are still usable


def test_deleting_a_cnode_deletes_what_it_holds():
    world = World()
    world.ok(Op.RETYPE, RAM, 0x4000, T.CNODE, 8, 1, root_caddr(3))
    world.ok(Op.RETYPE, RAM, 0x8000, T.FRAME, 12, 1, caddr(3, 0))
    world.ok(Op.DELETE, root_caddr(3))
    world.ok(Op.RETYPE, RAM, 0x4000, T.FRAME, 14, 1, caddr(0, 1))     # both regions are free
    world.ok(Op.RETYPE, RAM, 0x8000, T.FRAME, 12, 1, caddr(0, 2))


def test_deleting_a_long_chain_of_cnodes_needs_no_recursion():
    world = World()
    depth = 3000            # past Python's recursion limit
    world.ok(Op.RETYPE, BIG_RAM, 0, T.CNODE, 7, 1, root_caddr(5))     # the chain's head
    world.ok(Op.COPY, root_caddr(5), root_caddr(3))                     # its tail, to work on
    for i in range(1, depth):       # each new CNode goes into slot 0 of the tail
        world.ok(Op.RETYPE, BIG_RAM, i * 128, T.CNODE, 7, 1, caddr(3, 0))
        world.ok(Op.COPY, caddr(3, 0), root_caddr(4))
        world.ok(Op.DELETE, root_caddr(3))
        world.ok(Op.COPY, root_caddr(4), root_caddr(3))
        world.ok(Op.DELETE, root_caddr(4))
    world.ok(Op.DELETE, root_caddr(3))
    assert len(world.system.objects()) > depth
    world.ok(Op.DELETE, root_caddr(5))
    world.ok(Op.RETYPE, BIG_RAM, 0, T.FRAME, 22, 1, caddr(0, 1))      # all of it is free


# -- delete and revoke -----------------------------------------------------------

def test_delete_of_the_last_copy_frees_the_region():
    world = World()
    world.ok(Op.RETYPE, RAM, 0, T.FRAME, 12, 1, caddr(0, 1))
    world.ok(Op.COPY, caddr(0, 1), caddr(0, 2))
    world.ok(Op.DELETE, caddr(0, 1))
    assert world.refused(Op.RETYPE, RAM, 0, T.FRAME, 12, 1, caddr(0, 3)) == E.OVERLAP
    world.ok(Op.DELETE, caddr(0, 2))
    world.ok(Op.RETYPE, RAM, 0, T.VNODE_PT, 12, 1, caddr(0, 3))
    assert world.refused(Op.DELETE, caddr(0, 1)) == E.SLOT_EMPTY


def test_delete_leaves_descendants_valid():
    world = World()
    world.ok(Op.RETYPE, RAM, 0, T.RAM, 16, 1, root_caddr(3))
    world.ok(Op.RETYPE, root_caddr(3), 0, T.FRAME, 12, 1, caddr(0, 1))
    world.ok(Op.DELETE, root_caddr(3))
    assert world.identify(caddr(0, 1), Field.TYPE) == T.FRAME
    assert world.refused(Op.RETYPE, RAM, 0, T.FRAME, 16, 1, caddr(0, 2)) == E.OVERLAP
    world.ok(Op.DELETE, caddr(0, 1))                 # the last one: the whole 64 KiB is free
    world.ok(Op.RETYPE, RAM, 0, T.FRAME, 16, 1, caddr(0, 2))


def test_revoke_reaches_every_copy_and_every_descendant():
    world = World()
    world.ok(Op.RETYPE, RAM, 0x40000, T.RAM, 16, 1, root_caddr(3))
    world.ok(Op.COPY, root_caddr(3), root_caddr(4))
    world.ok(Op.COPY, root_caddr(3), caddr(0, 1))
    world.ok(Op.RETYPE, root_caddr(4), 0, T.FRAME, 13, 1, caddr(0, 2))   # from one copy
    world.ok(Op.RETYPE, caddr(0, 2), 0x1000, T.FRAME, 12, 1, caddr(0, 3))  # a grandchild
    world.ok(Op.COPY, caddr(0, 3), caddr(0, 4))
    world.ok(Op.RETYPE, caddr(0, 1), 0x4000, T.CNODE, 14, 1, root_caddr(5))  # from another
    world.ok(Op.RETYPE, caddr(0, 1), 0x8000, T.FRAME, 12, 1, caddr(5, 0))    # inside it
    world.ok(Op.REVOKE, root_caddr(3))
    for address in (root_caddr(4), caddr(0, 1), caddr(0, 2), caddr(0, 3), caddr(0, 4),
                    root_caddr(5)):
        assert world.empty(address), f"{address:#x} survived the revoke"
    assert world.identify(root_caddr(3), Field.TYPE) == T.RAM
    world.ok(Op.RETYPE, root_caddr(3), 0, T.FRAME, 16, 1, caddr(0, 1))   # all of it is free


def test_a_reduced_copy_cannot_revoke_a_fuller_one():
    world = World()
    world.ok(Op.MINT, RAM, root_caddr(3), R.READ | R.WRITE, 0)
    assert world.refused(Op.REVOKE, root_caddr(3)) == E.NO_RIGHTS
    world.ok(Op.REVOKE, RAM)
    assert world.empty(root_caddr(3))


# -- page tables -------------------------------------------------------------------

def test_map_writes_a_user_pte_with_the_rights_asked_for():
    world = World()
    pml4 = world.address_space()
    world.ok(Op.MAP, caddr(0, 3), 0, caddr(0, 4), R.READ, 0)
    world.ok(Op.MAP, caddr(0, 3), 1, caddr(0, 5), R.READ | R.WRITE, 0)
    world.ok(Op.MAP, caddr(0, 3), 2, caddr(0, 6), R.READ | R.EXECUTE, 0)
    frame = RAM_BASE + 0x20000
    P, W, U, NX = rules.PTE_PRESENT, rules.PTE_WRITABLE, rules.PTE_USER, rules.PTE_NO_EXECUTE
    assert world.pte(caddr(0, 3), 0) == frame | P | U | NX
    assert world.pte(caddr(0, 3), 1) == frame + 0x1000 | P | U | W | NX
    assert world.pte(caddr(0, 3), 2) == frame + 0x2000 | P | U
    assert world.pte(caddr(0, 2), 0) == world.identify(caddr(0, 3), Field.BASE) | P | W | U
    # and the hardware's own walk agrees
    assert paging.translate(world.memory, paging.CR0_PG, pml4, USER_VA + 0x1234, write=True,
                            user=True) == frame + 0x1234
    with pytest.raises(paging.PageFault):
        paging.translate(world.memory, paging.CR0_PG, pml4, USER_VA + 0x10, write=True, user=True)


def test_a_frame_without_write_cannot_be_mapped_writable():
    world = World()
    world.address_space()
    world.ok(Op.MINT, caddr(0, 4), caddr(0, 10), R.READ, 0)
    assert world.refused(Op.MAP, caddr(0, 3), 0, caddr(0, 10), R.READ | R.WRITE, 0) == E.NO_RIGHTS
    assert world.refused(Op.MAP, caddr(0, 3), 0, caddr(0, 10), R.EXECUTE, 0) == E.NO_RIGHTS
    world.ok(Op.MINT, caddr(0, 4), caddr(0, 11), R.WRITE, 0)
    assert world.refused(Op.MAP, caddr(0, 3), 0, caddr(0, 11), R.WRITE, 0) == E.NO_RIGHTS
    world.ok(Op.MINT, caddr(0, 3), caddr(0, 12), R.READ, 0)          # a read-only page table
    assert world.refused(Op.MAP, caddr(0, 12), 0, caddr(0, 4), R.READ, 0) == E.NO_RIGHTS


def test_map_checks_levels_entries_offsets_and_types():
    world = World()
    world.address_space()
    assert world.refused(Op.MAP, caddr(0, 0), 2, caddr(0, 4), R.READ, 0) == E.NOT_MAPPABLE
    assert world.refused(Op.MAP, caddr(0, 3), 5, caddr(0, 2), R.READ, 0) == E.NOT_MAPPABLE
    assert world.refused(Op.MAP, caddr(0, 3), 5, RAM, R.READ, 0) == E.NOT_MAPPABLE
    assert world.refused(Op.MAP, caddr(0, 4), 5, caddr(0, 5), R.READ, 0) == E.WRONG_TYPE
    assert world.refused(Op.MAP, caddr(0, 3), 512, caddr(0, 4), R.READ, 0) == E.INVALID_ENTRY
    assert world.refused(Op.MAP, caddr(0, 0), 0, caddr(0, 1), R.READ, 0) == E.INVALID_ENTRY
    assert world.refused(Op.MAP, caddr(0, 3), 0, caddr(0, 4), R.READ, 0x1000) == E.OUT_OF_RANGE
    assert world.refused(Op.MAP, caddr(0, 3), 0, caddr(0, 4), R.READ, 8) == E.MISALIGNED
    assert world.refused(Op.MAP, caddr(0, 1), 3, caddr(0, 2), R.READ, 0x1000) == E.OUT_OF_RANGE
    world.ok(Op.MAP, caddr(0, 3), 0, caddr(0, 4), R.READ, 0)
    assert world.refused(Op.MAP, caddr(0, 3), 0, caddr(0, 5), R.READ, 0) == E.ENTRY_IN_USE


def test_a_frame_in_a_pd_is_a_large_page():
    world = World()
    pml4 = world.address_space()
    world.ok(Op.RETYPE, BIG_RAM, 0, T.FRAME, 22, 1, caddr(0, 10))
    world.ok(Op.MAP, caddr(0, 2), 1, caddr(0, 10), R.READ | R.WRITE, 1 << 21)
    pte = world.pte(caddr(0, 2), 1)
    assert pte & rules.PTE_LARGE and pte & paging.ADDRESS_MASK == BIG_RAM_BASE + (1 << 21)
    va = USER_VA + (1 << 21) + 0x12345
    assert paging.translate(world.memory, paging.CR0_PG, pml4, va, write=True,
                            user=True) == BIG_RAM_BASE + (1 << 21) + 0x12345
    world.ok(Op.RETYPE, caddr(0, 10), 1 << 20, T.FRAME, 20, 1, caddr(0, 11))   # 1 MiB
    assert world.refused(Op.MAP, caddr(0, 2), 2, caddr(0, 11), R.READ, 0) == E.MISALIGNED


def test_every_new_pml4_shares_the_kernel_entries():
    world = World()
    world.address_space()
    assert world.pte(caddr(0, 0), 0) == KERNEL_ENTRY
    assert world.refused(Op.UNMAP, caddr(0, 0), 0) == E.INVALID_ENTRY


def test_unmap_clears_the_entry_and_names_the_page_to_flush():
    world = World()
    pml4 = world.address_space()
    world.ok(Op.MAP, caddr(0, 3), 7, caddr(0, 4), R.READ, 0)
    assert world.ok(Op.UNMAP, caddr(0, 3), 7) == [Flush(pml4, USER_VA + 7 * 4096)]
    assert world.pte(caddr(0, 3), 7) == 0
    assert world.refused(Op.UNMAP, caddr(0, 3), 7) == E.ENTRY_EMPTY


def test_unmapping_a_table_flushes_the_whole_address_space():
    world = World()
    pml4 = world.address_space()
    assert world.ok(Op.UNMAP, caddr(0, 2), 0) == [Flush(pml4, None)]


def test_a_page_in_two_address_spaces_is_flushed_in_both():
    world = World()
    pml4 = world.address_space()
    world.ok(Op.RETYPE, RAM, 0x30000, T.VNODE_PML4, 12, 1, caddr(0, 20))
    world.ok(Op.MAP, caddr(0, 20), 300, caddr(0, 1), R.ALL, 0)      # the same PDPT, high half
    world.ok(Op.MAP, caddr(0, 3), 1, caddr(0, 4), R.READ, 0)
    other = world.identify(caddr(0, 20), Field.BASE)
    high = vspace.canonical(300 << 39) + 4096
    assert set(world.ok(Op.DELETE, caddr(0, 4))) == {Flush(pml4, USER_VA + 4096), Flush(other, high)}
    assert high >> 48 == 0xFFFF


def test_deleting_a_frame_unmaps_what_it_mapped():
    world = World()
    pml4 = world.address_space()
    world.ok(Op.COPY, caddr(0, 4), caddr(0, 10))
    world.ok(Op.MAP, caddr(0, 3), 0, caddr(0, 4), R.READ, 0)
    world.ok(Op.MAP, caddr(0, 3), 1, caddr(0, 10), R.READ, 0)
    assert world.ok(Op.DELETE, caddr(0, 4)) == [Flush(pml4, USER_VA)]
    assert world.pte(caddr(0, 3), 0) == 0 and world.pte(caddr(0, 3), 1) != 0


def test_revoking_ram_unmaps_everything_made_from_it():
    world = World()
    pml4 = world.address_space()
    world.ok(Op.MAP, caddr(0, 3), 0, caddr(0, 4), R.READ, 0)
    base = world.identify(caddr(0, 0), Field.BASE)
    flushes = world.ok(Op.REVOKE, RAM)
    assert Flush(pml4, None) in flushes
    assert world.memory.read(base + 8, 4088) == bytes(4088)         # only the kernel's entry


def test_unmapping_under_many_shared_tables_stays_quick():
    world = World()
    pml4 = world.address_space()
    for entry in range(1, 512):         # the same PT under every PD entry ...
        world.ok(Op.MAP, caddr(0, 2), entry, caddr(0, 3), R.ALL, 0)
    for entry in range(1, 512):         # ... and the same PD under every PDPT entry
        world.ok(Op.MAP, caddr(0, 1), entry, caddr(0, 2), R.ALL, 0)
    world.ok(Op.MAP, caddr(0, 3), 0, caddr(0, 4), R.READ, 0)
    assert world.ok(Op.UNMAP, caddr(0, 3), 0) == [Flush(pml4, None)]   # too many to invlpg


# -- the entry point ---------------------------------------------------------------

def test_invoke_refuses_what_is_not_an_invocation():
    world = World()
    assert world.refused(0) == E.INVALID_OPERATION
    assert world.refused(2**64 - 1) == E.INVALID_OPERATION
    assert world.refused(Op.COPY, RAM) == E.INVALID_ARGUMENT
    assert world.refused(Op.COPY, RAM, -1) == E.INVALID_ARGUMENT
    assert world.refused(Op.COPY, RAM, 2**64) == E.INVALID_ARGUMENT
    world.ok(Op.COPY, RAM, root_caddr(3), 99, 98, 97, 96)           # extra registers: ignored


def test_the_guest_gets_the_same_numbers():
    numbers = defines()
    assert numbers["CAP_MAP"] == Op.MAP and numbers["CAPERR_OVERLAP"] == E.OVERLAP
    assert numbers["CAPTYPE_VNODE_PT"] == T.VNODE_PT and numbers["CAPRIGHT_ALL"] == R.ALL
    assert numbers["CAPFIELD_BADGE"] == Field.BADGE and numbers["CADDR_ROOT"] == root_caddr(0)


def test_the_documented_rules_are_the_enforced_ones():
    text = doc.DOC.read_text()
    assert doc.generated_part(text) == doc.render(), \
        "docs/capabilities.md is out of date: run python3 -m kernel.caps.doc --write"


# -- the property: no sequence of invocations breaks an invariant --------------------------
#
# Each step draws one invocation: mostly a plausible one (its addresses often
# slots that hold something right now, its other arguments values that could
# work), sometimes any operation number with any arguments at all.

ANY = st.integers(0, 2**64 - 1)


def sometimes_any(strategy):
    """Mostly plausible values, one time in ten any 64-bit value at all."""
    return st.integers(0, 9).flatmap(lambda dice: ANY if dice == 9 else strategy)


def slots_now(world):
    """{type: addresses of slots holding one}, and some empty slots' addresses."""
    by_type, empty = {}, []
    root = world.cspace.root.obj.slots
    for l1, cap in enumerate(root):
        if cap is None:
            empty.append(root_caddr(l1))
            continue
        by_type.setdefault(cap.type, []).append(root_caddr(l1))
        if cap.type == T.CNODE:
            for l2, inner in enumerate(cap.obj.slots[:32]):
                if inner is None:
                    empty.append(caddr(l1, l2))
                else:
                    by_type.setdefault(inner.type, []).append(caddr(l1, l2))
    return by_type, empty


def an_address(by_type, empty, types=None, want_empty=False):
    """Often a slot holding one of `types` (any type if None), or an empty one."""
    pool = empty if want_empty else [a for t, found in by_type.items()
                                     if types is None or t in types for a in found]
    return st.integers(0, 9).flatmap(lambda dice: (
        st.sampled_from(pool) if dice < 6 and pool
        else st.builds(caddr, st.just(0), st.integers(0, 12)) if dice < 7
        else st.builds(root_caddr, st.integers(0, 6)) if dice < 8
        else st.builds(caddr, st.integers(1, 4), st.integers(0, 3)) if dice < 9
        else ANY))


OFFSET = sometimes_any(st.sampled_from([i * 0x1000 for i in range(48)] + [0x80, 0x400, 1 << 21]))
TYPE_AND_SIZE = st.integers(0, 9).flatmap(lambda dice: (   # pairs that make sense, some not
    st.tuples(ANY, ANY) if dice == 9 else
    st.sampled_from([(T.FRAME, 12), (T.FRAME, 13), (T.FRAME, 21), (T.RAM, 12), (T.RAM, 16),
                     (T.CNODE, 7), (T.CNODE, 14), (T.DISPATCHER, 10), (T.ENDPOINT, 0),
                     (T.KERNEL, 0)] + [(vnode, 12) for vnode in VNODE_TYPES])))
RIGHTS = sometimes_any(st.integers(0, 15))
ENTRY = sometimes_any(st.sampled_from([0, 1, 2, 3, 5, 300, 511]))


def plausible(op, by_type, empty):
    def slot(*types):
        return an_address(by_type, empty, types or None)
    dest = an_address(by_type, empty, want_empty=True)
    args = {
        Op.RETYPE: st.tuples(slot(T.RAM, T.FRAME, T.DISPATCHER), OFFSET, TYPE_AND_SIZE,
                             sometimes_any(st.integers(1, 4)), dest)
        .map(lambda a: [a[0], a[1], *a[2], a[3], a[4]]),
        Op.COPY: st.tuples(slot(), dest),
        Op.MINT: st.tuples(slot(), dest, RIGHTS, sometimes_any(st.sampled_from([0, 1, 7]))),
        Op.DELETE: st.tuples(slot()),
        Op.REVOKE: st.tuples(slot()),
        Op.IDENTIFY: st.tuples(slot(), sometimes_any(st.integers(0, 5))),
        Op.MAP: st.tuples(slot(*VNODE_TYPES), ENTRY, slot(T.FRAME, *VNODE_TYPES), RIGHTS,
                          st.one_of(st.just(0), OFFSET)),
        Op.UNMAP: st.tuples(slot(*VNODE_TYPES), ENTRY),
    }[op]
    return st.tuples(st.just(int(op)), args.map(list))


OFTEN = [Op.RETYPE] * 3 + [Op.MAP] * 4 + [Op.COPY, Op.MINT, Op.UNMAP] * 2 + [
    Op.DELETE, Op.REVOKE, Op.IDENTIFY]


def an_invocation(world):
    by_type, empty = slots_now(world)
    return st.integers(0, 19).flatmap(lambda dice: (
        st.sampled_from(OFTEN).flatmap(lambda op: plausible(op, by_type, empty)) if dice < 18
        else st.tuples(st.sampled_from([int(op) for op in Op]), st.lists(ANY, max_size=7))
        if dice == 18 else st.tuples(ANY, st.lists(ANY, max_size=7))))


def test_invariants_hold_for_the_starting_state():
    world = World()
    world.address_space()
    check_invariants(world)


@settings(max_examples=120, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_sequence_of_invocations_breaks_an_invariant(data):
    world = World(boot_l2=True)
    world.address_space()
    world.ok(Op.MAP, caddr(0, 3), 0, caddr(0, 4), R.READ | R.WRITE, 0)
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        operation, args = data.draw(an_invocation(world))
        result, flushes = world.call(operation, *args)      # anything but CapError fails here
        assert result >= 0 or -result in ErrorCode._value2member_map_
        assert all(isinstance(flush, Flush) for flush in flushes)
        check_invariants(world)


def check_invariants(world):
    objects = world.system.objects()
    held = world.system.held(world.cspace)
    check_every_capability_is_held(objects, held)
    check_no_overlap_outside_derivation(objects)
    check_no_mapping_without_a_capability(world, objects, held)


def check_every_capability_is_held(objects, held):
    """Every live capability can be reached from the CSpace (none leaked, none dangling)."""
    live = {id(cap) for obj in objects for cap in obj.caps}
    assert live == {id(cap) for cap in held}, "a capability is unreachable or dangling"
    assert all(cap.obj.live and cap.live for cap in held)


def check_no_overlap_outside_derivation(objects):
    regions = sorted((o for o in objects if o.owns_memory), key=lambda o: o.base)
    for i, a in enumerate(regions):
        for b in regions[i + 1:]:
            if b.base >= a.end:
                break
            assert a.derives_from(b) or b.derives_from(a), \
                f"{a.type.name} at {a.base:#x} overlaps {b.type.name} at {b.base:#x}"


def check_no_mapping_without_a_capability(world, objects, held):
    """Every present entry in every page table maps a held Frame or the next live table."""
    held_objects = {id(cap.obj) for cap in held}
    frames = [o for o in objects if o.type == T.FRAME and id(o) in held_objects]
    tables = {(o.type, o.base): o for o in objects if o.type in VNODE_TYPES}
    for vnode in (o for o in objects if o.type in VNODE_TYPES):
        level = VNODE_TYPES.index(vnode.type)
        for entry, pte in enumerate(vspace.read_entries(world.memory, vnode)):
            if vnode.type == T.VNODE_PML4 and entry in rules.KERNEL_PML4_ENTRIES:
                continue
            assert bool(pte & rules.PTE_PRESENT) == (entry in vnode.entries), "model and memory differ"
            if not pte & rules.PTE_PRESENT:
                continue
            assert pte & rules.PTE_USER and vnode.entries[entry].cap in held
            address = pte & paging.ADDRESS_MASK
            if vnode.type == T.VNODE_PT or pte & rules.PTE_LARGE:
                page = 1 << VNODE_SHIFT[vnode.type]
                assert any(f.base <= address and address + page <= f.end for f in frames), \
                    f"{vnode.type.name} entry {entry} maps {address:#x} without a Frame capability"
                assert not pte & rules.PTE_WRITABLE or vnode.entries[entry].cap.rights & R.WRITE
            else:
                assert (VNODE_TYPES[level + 1], address) in tables, \
                    f"{vnode.type.name} entry {entry} points to no live table"


def test_the_invariant_checker_catches_a_forged_entry():
    world = World()
    world.address_space()
    table = world.identify(caddr(0, 3), Field.BASE)
    world.memory.write_u64(table + 9 * 8, 0x5000 | rules.PTE_PRESENT | rules.PTE_USER)
    with pytest.raises(AssertionError):
        check_invariants(world)

