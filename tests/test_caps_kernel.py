"""The KERNEL capability: TAKE, GIVE and IMPORT, how monitors move capabilities between cores.

The Python tests build one core the way kernel/capservice.py does (the
kernel holds the core's KERNEL capability, its monitor a copy in root slot
SLOT_KERNEL) and speak to it through `invoke`; the last ones run the
service itself over two cores whose dispatcher control blocks say which
dispatcher is the monitor.
"""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from unicorn import x86_const as x86

from cpudriver import layout
from emulator.memory import PhysicalMemory
from kernel.capservice import (CAPS_BASE, DISPATCHER_CAPS, RAM_OFFSET, SHARED_REGIONS_END,
                               SLOT_KERNEL, SLOT_PEERS, SLOT_RAM, SLOT_SELF_ENDPOINT,
                               CapabilityService)
from kernel.capservice import defines as slot_defines
from kernel.caps import (CapabilitySystem, CapError, CapType, ErrorCode, Field, Op, Rights, caddr,
                         defines, root_caddr)

T, R, E = CapType, Rights, ErrorCode
MEMORY_SIZE = 4 << 20
MONITOR, CLIENT = 0, 1                          # the dispatchers' indices on the core
CSPACES = {MONITOR: 0x1_0000, CLIENT: 0x2_0000}     # each root CNode's memory
OWN_RAM = {MONITOR: 0x4_0000, CLIENT: 0x6_0000}     # each one's RAM (root slot 0), 64 KiB
FOREIGN_BASE = 0x20_0000                        # memory no original of this core covers
RAM, L2, KERNEL = root_caddr(0), root_caddr(1), root_caddr(SLOT_KERNEL)


class Core:
    """One core: the kernel's KERNEL capability, a monitor (dispatcher 0) holding
    a copy of it, and a client (dispatcher 1); each has 64 KiB of RAM in root
    slot 0 and a 256-slot CNode, retyped from its end, in root slot 1."""

    def __init__(self):
        self.memory = PhysicalMemory(MEMORY_SIZE)
        self.system = CapabilitySystem(self.memory)
        self.kernel = self.system.create(None, None, T.KERNEL, 0, 0, R.READ | R.WRITE)
        self.cspaces = {}
        for who, base in CSPACES.items():
            cspace = self.system.new_cspace(base, 14, dispatcher=who)
            self.system.create(cspace, RAM, T.RAM, OWN_RAM[who], 16)
            self.cspaces[who] = cspace
            self.ok(who, Op.RETYPE, RAM, 0xC000, T.CNODE, 14, 1, L2)
        self.system.give(self.kernel, self.cspaces[MONITOR], KERNEL)

    def call(self, who, op, *args):
        return self.system.invoke(self.cspaces[who], op, list(args))

    def ok(self, who, op, *args):
        result, _ = self.call(who, op, *args)
        assert result >= 0, f"dispatcher {who}: {Op(op).name}{args} was refused: " \
                            f"{ErrorCode(-result).name}"
        return result

    def refused(self, who, op, *args):
        result, flushes = self.call(who, op, *args)
        assert result < 0, f"dispatcher {who}: {Op(op).name}{args} should have been refused"
        assert flushes == []
        return ErrorCode(-result)

    def cap(self, who, address):
        return self.cspaces[who].slot(address).cap

    def frame(self, who, dest, offset=0):
        """A 4 KiB frame from the dispatcher's own RAM."""
        self.ok(who, Op.RETYPE, RAM, offset, T.FRAME, 12, 1, dest)
        return self.cap(who, dest)

    def page_table(self, who, dest, offset):
        self.ok(who, Op.RETYPE, RAM, offset, T.VNODE_PT, 12, 1, dest)


def snapshot(core):
    """Everything an operation could change: objects, links, copies, slots, locks, marks."""
    def cap_key(cap):
        return None if cap is None else (id(cap), id(cap.cnode), cap.index, int(cap.rights),
                                         len(cap.mappings))
    return [(id(obj), obj.type, obj.base, obj.size, id(obj.parent), obj.live, obj.foreign,
             [id(child) for child in obj.children], [cap_key(cap) for cap in obj.caps],
             cap_key(obj.locked_by), obj.retyped_elsewhere, dict(obj.entries),
             None if obj.slots is None else [cap_key(cap) for cap in obj.slots])
            for obj in core.system.objects()]


# -- TAKE and GIVE: a move ------------------------------------------------------------

def test_take_moves_a_capability_out_of_a_dispatchers_cspace():
    core = Core()
    frame = core.frame(CLIENT, caddr(1, 0))
    core.ok(MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 0), caddr(1, 7))
    assert core.cap(CLIENT, caddr(1, 0)) is None, "the client still holds what was taken"
    assert core.cap(MONITOR, caddr(1, 7)) is frame, "the monitor holds another record, not the same"
    assert frame.obj.caps == [frame], "a move made or lost a copy"
    assert core.ok(MONITOR, Op.IDENTIFY, caddr(1, 7), Field.BASE) == OWN_RAM[CLIENT]


def test_give_moves_a_capability_into_a_dispatchers_cspace():
    core = Core()
    frame = core.frame(MONITOR, root_caddr(5))
    core.ok(MONITOR, Op.GIVE, KERNEL, root_caddr(5), CLIENT, caddr(1, 3))
    assert core.cap(MONITOR, root_caddr(5)) is None
    assert core.cap(CLIENT, caddr(1, 3)) is frame
    core.ok(CLIENT, Op.COPY, caddr(1, 3), caddr(1, 4))      # the client uses it as its own


def test_a_move_keeps_descendants_and_copies_where_they_are():
    core = Core()
    core.ok(CLIENT, Op.RETYPE, RAM, 0, T.RAM, 14, 1, caddr(1, 0))
    core.ok(CLIENT, Op.RETYPE, caddr(1, 0), 0, T.FRAME, 12, 1, caddr(1, 1))
    core.ok(CLIENT, Op.COPY, caddr(1, 0), caddr(1, 2))
    core.ok(MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 0), caddr(1, 0))
    # a retype through the moved RAM still sees what was made of it before
    assert core.refused(MONITOR, Op.RETYPE, caddr(1, 0), 0, T.FRAME, 12, 1,
                        caddr(1, 1)) == E.OVERLAP
    core.ok(MONITOR, Op.RETYPE, caddr(1, 0), 0x1000, T.FRAME, 12, 1, caddr(1, 1))
    assert core.cap(CLIENT, caddr(1, 1)) is not None, "the client's frame went with the move"
    # ... and a revoke through it reaches the client's frame and the copy it kept
    core.ok(MONITOR, Op.REVOKE, caddr(1, 0))
    assert core.cap(CLIENT, caddr(1, 1)) is None and core.cap(CLIENT, caddr(1, 2)) is None


def test_a_dispatcher_may_be_the_monitor_itself():
    core = Core()
    core.frame(MONITOR, caddr(1, 0))
    core.ok(MONITOR, Op.TAKE, KERNEL, MONITOR, caddr(1, 0), caddr(1, 1))
    assert core.cap(MONITOR, caddr(1, 0)) is None and core.cap(MONITOR, caddr(1, 1)) is not None


def test_moves_of_what_must_stay_are_refused():
    core = Core()
    core.frame(CLIENT, caddr(1, 0))
    assert core.refused(MONITOR, Op.TAKE, KERNEL, 2, caddr(1, 0), caddr(1, 0)) == \
        E.INVALID_ARGUMENT                                   # no dispatcher 2
    assert core.refused(MONITOR, Op.TAKE, KERNEL, 2**64 - 1, caddr(1, 0),
                        caddr(1, 0)) == E.INVALID_ARGUMENT
    assert core.refused(MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 9), caddr(1, 0)) == E.SLOT_EMPTY
    core.frame(MONITOR, caddr(1, 0), 0x1000)
    assert core.refused(MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 0),
                        caddr(1, 0)) == E.SLOT_IN_USE
    assert core.refused(MONITOR, Op.GIVE, KERNEL, caddr(1, 0), CLIENT,
                        caddr(1, 0)) == E.SLOT_IN_USE
    assert core.refused(MONITOR, Op.TAKE, KERNEL, CLIENT, L2, caddr(1, 5)) == E.WRONG_TYPE
    assert core.refused(MONITOR, Op.GIVE, KERNEL, KERNEL, CLIENT, caddr(1, 5)) == E.WRONG_TYPE


def test_only_a_capability_with_grant_moves():
    core = Core()
    core.frame(CLIENT, caddr(1, 0))
    core.ok(CLIENT, Op.MINT, caddr(1, 0), caddr(1, 1), R.READ | R.WRITE, 0)
    assert core.refused(MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 1), caddr(1, 1)) == E.NO_RIGHTS
    core.ok(MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 0), caddr(1, 1))


def test_a_capability_that_maps_pages_moves_only_once_unmapped():
    core = Core()
    core.page_table(CLIENT, caddr(1, 0), 0x1000)
    core.frame(CLIENT, caddr(1, 1))
    core.ok(CLIENT, Op.MAP, caddr(1, 0), 5, caddr(1, 1), R.READ, 0)
    assert core.refused(MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 1), caddr(1, 1)) == E.MAPPED
    core.ok(CLIENT, Op.UNMAP, caddr(1, 0), 5)
    core.ok(MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 1), caddr(1, 1))


def test_the_copy_holding_a_lock_stays_where_it_is():
    core = Core()
    core.ok(CLIENT, Op.RETYPE, RAM, 0, T.RAM, 14, 1, caddr(1, 0))
    core.ok(CLIENT, Op.COPY, caddr(1, 0), caddr(1, 1))
    core.ok(CLIENT, Op.LOCK, caddr(1, 0))
    assert core.refused(MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 0), caddr(1, 0)) == E.LOCKED
    core.ok(MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 1), caddr(1, 1))   # another copy may go
    assert core.refused(MONITOR, Op.LOCK, caddr(1, 1)) == E.LOCKED     # the client's vote stands


def test_slots_change_only_through_cnodes_with_write():
    core = Core()
    core.frame(CLIENT, caddr(1, 0))
    core.ok(CLIENT, Op.MINT, L2, root_caddr(2), R.READ | R.GRANT, 0)   # a read-only way in
    assert core.refused(MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(2, 0), caddr(1, 0)) == E.NO_RIGHTS
    core.frame(MONITOR, root_caddr(3))
    assert core.refused(MONITOR, Op.GIVE, KERNEL, root_caddr(3), CLIENT,
                        caddr(2, 5)) == E.NO_RIGHTS


def test_refused_moves_and_imports_change_nothing():
    core = Core()
    core.page_table(CLIENT, caddr(1, 0), 0x1000)
    core.frame(CLIENT, caddr(1, 1))
    core.ok(CLIENT, Op.MAP, caddr(1, 0), 5, caddr(1, 1), R.READ, 0)
    core.ok(CLIENT, Op.RETYPE, RAM, 0x4000, T.RAM, 14, 1, caddr(1, 2))
    core.ok(CLIENT, Op.LOCK, caddr(1, 2))
    core.ok(CLIENT, Op.MINT, caddr(1, 2), caddr(1, 3), R.READ, 0)
    core.frame(MONITOR, caddr(1, 0))
    core.ok(MONITOR, Op.IMPORT, KERNEL, T.RAM, FOREIGN_BASE, 16, R.ALL, caddr(1, 1))
    refusals = [
        (CLIENT, Op.TAKE, RAM, MONITOR, caddr(1, 0), caddr(1, 9)),         # no kernel capability
        (CLIENT, Op.IMPORT, RAM, T.FRAME, FOREIGN_BASE + 0x10000, 12, R.ALL, caddr(1, 9)),
        (MONITOR, Op.TAKE, KERNEL, 7, caddr(1, 1), caddr(1, 9)),
        (MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 1), caddr(1, 9)),      # mapped
        (MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 2), caddr(1, 9)),      # holds a lock
        (MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 3), caddr(1, 9)),      # no GRANT
        (MONITOR, Op.TAKE, KERNEL, CLIENT, L2, caddr(1, 9)),               # a CNode
        (MONITOR, Op.TAKE, KERNEL, CLIENT, caddr(1, 1), caddr(1, 0)),      # dest in use
        (MONITOR, Op.GIVE, KERNEL, caddr(1, 0), CLIENT, caddr(1, 0)),
        (MONITOR, Op.GIVE, KERNEL, KERNEL, CLIENT, caddr(1, 9)),
        (MONITOR, Op.IMPORT, KERNEL, T.FRAME, OWN_RAM[CLIENT], 12, R.ALL, caddr(1, 9)),
        (MONITOR, Op.IMPORT, KERNEL, T.FRAME, FOREIGN_BASE, 12, R.ALL, caddr(1, 9)),
        (MONITOR, Op.IMPORT, KERNEL, T.FRAME, FOREIGN_BASE + 0x10000, 12, R.ALL, caddr(1, 0)),
        (MONITOR, Op.RETYPE, caddr(1, 1), 0, T.FRAME, 12, 1, caddr(1, 9)),
        (MONITOR, Op.LOCK, caddr(1, 1)),
        (MONITOR, Op.COPY, KERNEL, caddr(1, 9)),
        (MONITOR, Op.MINT, KERNEL, caddr(1, 9), R.READ, 0),
        (MONITOR, Op.REVOKE, KERNEL),
    ]
    for who, op, *args in refusals:
        before = snapshot(core)
        core.refused(who, op, *args)
        assert snapshot(core) == before, f"a refused {Op(op).name}{tuple(args)} changed something"


# -- the KERNEL capability: only the monitor's, and it stays there ------------------------

def test_only_the_kernel_capability_allows_take_give_and_import():
    core = Core()
    core.frame(MONITOR, caddr(1, 0))
    core.frame(CLIENT, caddr(1, 0))
    for kernel in (RAM, L2, caddr(1, 0)):               # what the client holds: none is one
        assert core.refused(CLIENT, Op.TAKE, kernel, MONITOR, caddr(1, 0),
                            caddr(1, 0)) == E.WRONG_TYPE
        assert core.refused(CLIENT, Op.GIVE, kernel, RAM, MONITOR, caddr(1, 9)) == E.WRONG_TYPE
        assert core.refused(CLIENT, Op.IMPORT, kernel, T.FRAME, FOREIGN_BASE, 12, R.ALL,
                            caddr(1, 0)) == E.WRONG_TYPE
    assert core.refused(CLIENT, Op.TAKE, KERNEL, MONITOR, caddr(1, 0),
                        caddr(1, 0)) == E.SLOT_EMPTY
    assert core.cap(MONITOR, caddr(1, 0)) is not None


def test_a_kernel_capability_without_write_allows_nothing():
    core = Core()
    weak = core.system.create(None, None, T.KERNEL, 0, 0, R.READ)
    core.system.give(weak, core.cspaces[CLIENT], root_caddr(9))
    core.frame(MONITOR, caddr(1, 0))
    assert core.refused(CLIENT, Op.TAKE, root_caddr(9), MONITOR, caddr(1, 0),
                        caddr(1, 0)) == E.NO_RIGHTS
    assert core.refused(CLIENT, Op.IMPORT, root_caddr(9), T.FRAME, FOREIGN_BASE, 12, R.ALL,
                        caddr(1, 0)) == E.NO_RIGHTS


def test_the_kernel_capability_is_never_copied_minted_handed_on_or_revoked():
    core = Core()
    assert core.refused(MONITOR, Op.COPY, KERNEL, caddr(1, 0)) == E.WRONG_TYPE
    assert core.refused(MONITOR, Op.MINT, KERNEL, caddr(1, 0), R.READ, 0) == E.WRONG_TYPE
    assert core.refused(MONITOR, Op.RETYPE, KERNEL, 0, T.ENDPOINT, 0, 1,
                        caddr(1, 0)) == E.RETYPE_NOT_ALLOWED
    assert core.refused(MONITOR, Op.TAKE, KERNEL, MONITOR, KERNEL, caddr(1, 0)) == E.WRONG_TYPE
    assert core.refused(MONITOR, Op.REVOKE, KERNEL) == E.NO_RIGHTS    # the kernel's own copy
    with pytest.raises(CapError) as refusal:                           # LMP's transfer
        core.system.transfer(core.cspaces[MONITOR], KERNEL, core.cspaces[CLIENT], caddr(1, 0))
    assert refusal.value.code == E.WRONG_TYPE
    facts = core.system.identify(core.cspaces[MONITOR], KERNEL)
    assert (facts["type"], facts["base"], facts["size_bits"]) == (T.KERNEL, 0, 0)
    core.ok(MONITOR, Op.DELETE, KERNEL)                 # a monitor may give up its privilege
    assert core.kernel.live and core.kernel.obj.caps == [core.kernel]


# -- IMPORT: a foreign copy ------------------------------------------------------------------

def test_an_imported_frame_maps_moves_and_copies_but_never_retypes():
    core = Core()
    core.ok(MONITOR, Op.IMPORT, KERNEL, T.FRAME, FOREIGN_BASE, 13, R.ALL, caddr(1, 0))
    foreign = core.cap(MONITOR, caddr(1, 0)).obj
    assert (foreign.type, foreign.base, foreign.size, foreign.parent) == (
        T.FRAME, FOREIGN_BASE, 0x2000, None)
    assert core.system.lock_state(foreign) == "foreign"
    assert core.refused(MONITOR, Op.RETYPE, caddr(1, 0), 0, T.FRAME, 12, 1,
                        caddr(1, 1)) == E.FOREIGN
    core.ok(MONITOR, Op.MINT, caddr(1, 0), caddr(1, 1), R.READ | R.GRANT, 0)
    core.ok(MONITOR, Op.GIVE, KERNEL, caddr(1, 1), CLIENT, caddr(1, 4))
    core.page_table(CLIENT, caddr(1, 0), 0x1000)
    core.ok(CLIENT, Op.MAP, caddr(1, 0), 7, caddr(1, 4), R.READ, 0x1000)
    pte = core.memory.read_u64(OWN_RAM[CLIENT] + 0x1000 + 7 * 8)
    assert pte & ~0xFFF & ((1 << 52) - 1) == FOREIGN_BASE + 0x1000, "the PTE maps another page"
    assert core.refused(CLIENT, Op.MAP, caddr(1, 0), 8, caddr(1, 4), R.WRITE | R.READ,
                        0) == E.NO_RIGHTS
    assert core.refused(CLIENT, Op.RETYPE, caddr(1, 4), 0, T.FRAME, 12, 1,
                        caddr(1, 5)) == E.FOREIGN


def test_imported_ram_is_never_retyped_nor_locked():
    core = Core()
    core.ok(MONITOR, Op.IMPORT, KERNEL, T.RAM, FOREIGN_BASE, 16, R.ALL, caddr(1, 0))
    assert core.refused(MONITOR, Op.RETYPE, caddr(1, 0), 0, T.FRAME, 12, 1,
                        caddr(1, 1)) == E.FOREIGN
    assert core.refused(MONITOR, Op.LOCK, caddr(1, 0)) == E.FOREIGN
    core.ok(MONITOR, Op.COPY, caddr(1, 0), caddr(1, 1))
    core.ok(MONITOR, Op.REVOKE, caddr(1, 0))            # its other copies, here
    assert core.cap(MONITOR, caddr(1, 1)) is None


def test_import_keeps_the_memorys_contents():
    core = Core()
    core.memory.write(FOREIGN_BASE, b"another core's data")
    core.ok(MONITOR, Op.IMPORT, KERNEL, T.FRAME, FOREIGN_BASE, 12, R.ALL, caddr(1, 0))
    assert core.memory.read(FOREIGN_BASE, 19) == b"another core's data"


def test_import_refuses_what_overlaps_this_cores_own_objects():
    core = Core()
    core.frame(CLIENT, caddr(1, 0))
    for base, bits in ((OWN_RAM[CLIENT], 12), (OWN_RAM[MONITOR] + 0x8000, 12),
                       (OWN_RAM[CLIENT] & ~0xFFFFF, 20), (CSPACES[MONITOR], 12)):
        assert core.refused(MONITOR, Op.IMPORT, KERNEL, T.FRAME, base, bits, R.ALL,
                            caddr(1, 0)) == E.OVERLAP, f"imported {base:#x} over this core's own"


def test_import_refuses_misaligned_out_of_ram_and_odd_sizes():
    core = Core()
    imports = [((T.FRAME, FOREIGN_BASE + 0x800, 12), E.MISALIGNED),
               ((T.FRAME, FOREIGN_BASE + 0x1000, 13), E.MISALIGNED),
               ((T.FRAME, MEMORY_SIZE, 12), E.OUT_OF_RANGE),
               ((T.RAM, MEMORY_SIZE - 0x1000, 13), E.MISALIGNED),
               ((T.RAM, 0, 23), E.OUT_OF_RANGE),
               ((T.FRAME, 2**64 - 4096, 12), E.OUT_OF_RANGE),
               ((T.FRAME, FOREIGN_BASE, 11), E.INVALID_SIZE),
               ((T.FRAME, 0, 49), E.INVALID_SIZE),
               ((T.FRAME, FOREIGN_BASE, 2**64 - 1), E.INVALID_SIZE)]
    for (obj_type, base, bits), code in imports:
        assert core.refused(MONITOR, Op.IMPORT, KERNEL, obj_type, base, bits, R.ALL,
                            caddr(1, 0)) == code, f"IMPORT {obj_type.name} {base:#x} 2**{bits}"


def test_import_makes_memory_only():
    core = Core()
    for obj_type in (T.NULL, T.CNODE, T.VNODE_PML4, T.VNODE_PT, T.DISPATCHER, T.ENDPOINT,
                     T.KERNEL, 11, 2**64 - 1):
        bits = {T.CNODE: 14, T.DISPATCHER: 10, T.ENDPOINT: 0, T.KERNEL: 0}.get(obj_type, 12)
        assert core.refused(MONITOR, Op.IMPORT, KERNEL, obj_type, FOREIGN_BASE, bits, R.ALL,
                            caddr(1, 0)) == E.WRONG_TYPE
    assert core.refused(MONITOR, Op.IMPORT, KERNEL, T.FRAME, FOREIGN_BASE, 12, 16,
                        caddr(1, 0)) == E.INVALID_ARGUMENT


def test_the_same_foreign_object_imported_again_is_one_more_copy():
    core = Core()
    core.ok(MONITOR, Op.IMPORT, KERNEL, T.FRAME, FOREIGN_BASE, 12, R.ALL, caddr(1, 0))
    core.ok(MONITOR, Op.IMPORT, KERNEL, T.FRAME, FOREIGN_BASE, 12, R.READ, caddr(1, 1))
    first, second = core.cap(MONITOR, caddr(1, 0)), core.cap(MONITOR, caddr(1, 1))
    assert first.obj is second.obj and second.rights == R.READ
    for obj_type, base, bits in ((T.RAM, FOREIGN_BASE, 12), (T.FRAME, FOREIGN_BASE, 13),
                                 (T.FRAME, FOREIGN_BASE & ~0xFFFF, 16)):
        assert core.refused(MONITOR, Op.IMPORT, KERNEL, obj_type, base, bits, R.ALL,
                            caddr(1, 2)) == E.OVERLAP
    core.ok(MONITOR, Op.DELETE, caddr(1, 0))
    core.ok(MONITOR, Op.DELETE, caddr(1, 1))            # the last copy: the object goes
    assert not first.obj.live and first.obj not in core.system.originals
    core.ok(MONITOR, Op.IMPORT, KERNEL, T.FRAME, FOREIGN_BASE & ~0xFFFF, 16, R.ALL, caddr(1, 2))


def test_nothing_is_made_over_a_foreign_object_at_boot_either():
    core = Core()
    core.ok(MONITOR, Op.IMPORT, KERNEL, T.FRAME, FOREIGN_BASE, 12, R.ALL, caddr(1, 0))
    with pytest.raises(CapError) as refusal:
        core.system.create(None, None, T.RAM, FOREIGN_BASE & ~0xFFFF, 16)
    assert refusal.value.code == E.OVERLAP


# -- hostile arguments ------------------------------------------------------------------------

ANY = st.integers(0, 2**64 - 1)
NEAR = st.sampled_from([KERNEL, RAM, L2, caddr(1, 0), caddr(1, 1), caddr(1, 2), root_caddr(5)])
VALUE = st.one_of(ANY, NEAR, st.sampled_from([0, 1, 2, 12, 16, int(R.ALL), FOREIGN_BASE]))
MOVES = st.sampled_from([Op.TAKE, Op.GIVE, Op.IMPORT])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([MONITOR, CLIENT]), MOVES, st.lists(VALUE, max_size=7))
def test_any_arguments_give_a_result_or_a_caperror(who, op, args):
    core = Core()
    core.frame(CLIENT, caddr(1, 0))
    core.frame(MONITOR, caddr(1, 1), 0x1000)
    before = snapshot(core)
    result, flushes = core.call(who, op, *args)         # anything but CapError fails here
    assert flushes == []
    assert result == 0 or -result in ErrorCode._value2member_map_
    if result < 0:
        assert snapshot(core) == before, f"a refused {op.name}{tuple(args)} changed something"


STEP = st.one_of(
    st.tuples(st.just(MONITOR), st.just(Op.TAKE), st.just(KERNEL), st.sampled_from([0, 1, 1, 5]),
              NEAR, NEAR),
    st.tuples(st.just(MONITOR), st.just(Op.GIVE), st.just(KERNEL), NEAR,
              st.sampled_from([0, 1, 1, 5]), NEAR),
    st.tuples(st.just(MONITOR), st.just(Op.IMPORT), st.just(KERNEL),
              st.sampled_from([T.RAM, T.FRAME]),
              st.sampled_from([FOREIGN_BASE, FOREIGN_BASE + 0x1000, OWN_RAM[CLIENT]]),
              st.sampled_from([12, 13, 16]), st.just(int(R.ALL)), NEAR),
    st.tuples(st.sampled_from([MONITOR, CLIENT]), st.just(Op.RETYPE), NEAR,
              st.sampled_from([0, 0x1000, 0x4000]), st.sampled_from([T.FRAME, T.RAM]),
              st.sampled_from([12, 14]), st.just(1), NEAR),
    st.tuples(st.sampled_from([MONITOR, CLIENT]), st.sampled_from([Op.COPY]), NEAR, NEAR),
    st.tuples(st.sampled_from([MONITOR, CLIENT]), st.sampled_from([Op.DELETE, Op.REVOKE,
                                                                     Op.LOCK]), NEAR))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, min_size=1, max_size=30))
def test_no_sequence_of_moves_and_imports_breaks_the_tree(steps):
    core = Core()
    for who, op, *args in steps:
        before = snapshot(core)
        result, _ = core.call(who, op, *args)
        if result < 0:
            assert snapshot(core) == before, f"a refused {Op(op).name} changed something"
        objects = core.system.objects()
        held = [cap for cspace in core.cspaces.values() for cap in core.system.held(cspace)]
        live = [cap for obj in objects for cap in obj.caps]
        assert sorted(map(id, held + [core.kernel])) == sorted(map(id, live)), \
            "a capability is held twice, by nobody, or by a dead object"
        for cap in held:
            assert cap.cnode is None or cap.cnode.slots[cap.index] is cap, "a slot lost its record"
        regions = sorted((o for o in objects if o.owns_memory), key=lambda o: o.base)
        for i, a in enumerate(regions):
            for b in regions[i + 1:]:
                if b.base >= a.end:
                    break
                assert a.derives_from(b) or b.derives_from(a), \
                    f"{a.type.name} at {a.base:#x} overlaps {b.type.name} at {b.base:#x}"
        assert all(not o.children for o in objects if o.foreign), "a foreign object was retyped"


# -- the numbers user code gets ------------------------------------------------------------

def test_the_guest_gets_the_kernel_capabilitys_numbers():
    numbers = defines() | slot_defines()
    assert [numbers[name] for name in ("CAP_TAKE", "CAP_GIVE", "CAP_IMPORT")] == [11, 12, 13]
    assert numbers["CAPTYPE_KERNEL"] == T.KERNEL == 10
    assert (numbers["CAPERR_FOREIGN"], numbers["CAPERR_MAPPED"]) == (123, 124)
    assert numbers["SLOT_KERNEL"] == SLOT_KERNEL == 242
    assert max(Op) <= layout.MAX_INVOCATION, "an operation number the CPU driver cannot pass"


# -- the service: the monitor of each core, and a capability from core 0 to core 1 -----------

class Registers:
    def __init__(self):
        self.values = {}

    def read(self, register):
        return self.values.get(register, 0)

    def write(self, register, value):
        self.values[register] = value


class FakeCore:
    def __init__(self, core_id):
        self.id = core_id
        self.regs = Registers()


class Machine:
    """What CapabilityService reads: memory with each core's per-core variables and
    dispatcher control blocks as the CPU driver leaves them, two dispatchers a core,
    dispatcher 0 the monitor (its DCB_FLAGS say so)."""

    def __init__(self, n_cores=2, monitors=(0,)):
        self.n_cores = n_cores
        self.memory = PhysicalMemory(SHARED_REGIONS_END)
        for core in range(n_cores):
            area = layout.PERCORE_BASE + core * layout.PERCORE_SIZE
            self.memory.write_u64(area + layout.PCV_N_DISPATCHERS, 2)
            for index in monitors:
                self.memory.write_u64(dispatcher_slot(core, index) + layout.D_DCB
                                      + layout.DCB_FLAGS, layout.DCB_FLAG_MONITOR)


def dispatcher_slot(core, index):
    return (layout.PERCORE_BASE + core * layout.PERCORE_SIZE + layout.PC_DISPATCHERS
            + index * layout.DISPATCHER_SIZE)


def invoke_as(service, core, index, op, *args):
    """Run an invocation as dispatcher `index` of `core`: rax, as the CPU driver would see it."""
    area = layout.PERCORE_BASE + core * layout.PERCORE_SIZE
    service.machine.memory.write_u64(area + layout.PCV_CURRENT, dispatcher_slot(core, index))
    cpu = FakeCore(core)
    cpu.regs.write(x86.UC_X86_REG_RAX, int(op))
    for register, value in zip((x86.UC_X86_REG_RDI, x86.UC_X86_REG_RSI, x86.UC_X86_REG_RDX,
                                x86.UC_X86_REG_R10, x86.UC_X86_REG_R8, x86.UC_X86_REG_R9), args):
        cpu.regs.write(register, value)
    service(cpu)
    return cpu.regs.read(x86.UC_X86_REG_RAX)


def own_ram(core, index):
    return CAPS_BASE + (core * layout.MAX_DISPATCHERS + index) * DISPATCHER_CAPS + RAM_OFFSET


def test_only_each_cores_monitor_gets_the_kernel_capability():
    service = CapabilityService(Machine(n_cores=2))
    for core in range(2):
        assert invoke_as(service, core, MONITOR, Op.IDENTIFY, KERNEL, Field.TYPE) == T.KERNEL
        assert invoke_as(service, core, CLIENT, Op.IDENTIFY, KERNEL, Field.TYPE) == \
            -E.SLOT_EMPTY, f"dispatcher 1 of core {core} is no monitor, yet holds the kernel's"
    kernel_0 = service.systems[0].lookup(service.cspaces[(0, MONITOR)], KERNEL)
    assert kernel_0.obj is service.kernels[0].obj, "the monitor's is not a copy of its core's"
    assert kernel_0.obj is not service.kernels[1].obj


def test_a_frame_moves_from_a_client_on_core_0_to_one_on_core_1():
    service = CapabilityService(Machine(n_cores=2))
    base = own_ram(0, CLIENT)
    # the client on core 0 makes a frame of its RAM; monitor 0 takes it and describes it
    assert invoke_as(service, 0, CLIENT, Op.RETYPE, root_caddr(SLOT_RAM), 0, T.FRAME, 12, 1,
                     root_caddr(20)) == 0
    assert invoke_as(service, 0, MONITOR, Op.TAKE, KERNEL, CLIENT, root_caddr(20),
                     root_caddr(20)) == 0
    assert invoke_as(service, 0, CLIENT, Op.IDENTIFY, root_caddr(20), Field.TYPE) == -E.SLOT_EMPTY
    facts = [invoke_as(service, 0, MONITOR, Op.IDENTIFY, root_caddr(20), field)
             for field in (Field.TYPE, Field.BASE, Field.SIZE_BITS, Field.RIGHTS)]
    assert facts == [T.FRAME, base, 12, R.ALL]
    # monitor 1 makes the same capability on core 1 and gives it to its client
    assert invoke_as(service, 1, MONITOR, Op.IMPORT, KERNEL, *facts, root_caddr(20)) == 0
    assert invoke_as(service, 1, MONITOR, Op.GIVE, KERNEL, root_caddr(20), CLIENT,
                     root_caddr(21)) == 0
    assert invoke_as(service, 1, CLIENT, Op.IDENTIFY, root_caddr(21), Field.BASE) == base
    assert service.slot_state(1, CLIENT, root_caddr(21)) == "foreign"
    assert service.slot_state(0, MONITOR, root_caddr(20)) == "free"
    assert invoke_as(service, 1, CLIENT, Op.RETYPE, root_caddr(21), 0, T.FRAME, 12, 1,
                     root_caddr(22)) == -E.FOREIGN
    # core 0 keeps its record: its client's RAM still cannot be retyped over the frame
    assert invoke_as(service, 0, CLIENT, Op.RETYPE, root_caddr(SLOT_RAM), 0, T.FRAME, 12, 1,
                     root_caddr(20)) == -E.OVERLAP
    # and core 1 cannot import what it owns itself
    assert invoke_as(service, 1, MONITOR, Op.IMPORT, KERNEL, T.FRAME, own_ram(1, CLIENT), 12,
                     R.ALL, root_caddr(23)) == -E.OVERLAP


def test_a_client_whose_endpoint_was_taken_breaks_no_later_invocation():
    service = CapabilityService(Machine(n_cores=1))
    assert invoke_as(service, 0, MONITOR, Op.TAKE, KERNEL, CLIENT, root_caddr(SLOT_SELF_ENDPOINT),
                     root_caddr(20)) == 0
    assert invoke_as(service, 0, MONITOR, Op.DELETE, root_caddr(SLOT_PEERS + CLIENT)) == 0
    assert invoke_as(service, 0, MONITOR, Op.IDENTIFY, root_caddr(20), Field.TYPE) == T.ENDPOINT
    assert invoke_as(service, 0, MONITOR, Op.IDENTIFY, root_caddr(SLOT_PEERS + CLIENT),
                     Field.TYPE) == -E.SLOT_EMPTY, "an endpoint the client gave up came back"


# -- end to end: a module line's `monitor` word gives its dispatcher the KERNEL capability -----

NOT_A_MONITOR = """
# ask what our slot SLOT_KERNEL holds: nothing, we are no monitor
start:
    mov rdi, CADDR_ROOT | SLOT_KERNEL
    mov esi, CAPFIELD_TYPE
    call cap_identify
    mov rdi, rax
    call print_i64
    lea rdi, [rip + newline]
    call print_cstr
    xor edi, edi
    call exit
newline: .asciz "\\n"
"""

A_MONITOR = """
# name our KERNEL capability's type, import a frame of core 0's memory
# (FOREIGN, from the module line), then try to retype it
KERNEL = CADDR_ROOT | SLOT_KERNEL
start:
    mov rdi, KERNEL
    mov esi, CAPFIELD_TYPE
    call cap_identify
    mov rdi, rax
    call say
    mov rdi, KERNEL
    mov esi, CAPTYPE_FRAME
    mov rdx, FOREIGN
    mov r10d, 12
    mov r8d, CAPRIGHT_ALL
    mov r9, CADDR_ROOT | 20
    mov eax, SYS_INVOKE + CAP_IMPORT
    syscall
    mov rdi, rax
    call say
    mov rdi, CADDR_ROOT | 20
    xor esi, esi
    mov edx, CAPTYPE_FRAME
    mov ecx, 12
    mov r8d, 1
    mov r9, CADDR_ROOT | 21
    call cap_retype
    mov rdi, rax
    call say
    xor edi, edi
    call exit
say:                                  # print rdi (signed), then a newline
    call print_i64
    lea rdi, [rip + newline]
    jmp print_cstr
newline: .asciz "\\n"
"""


def test_a_monitor_module_holds_the_kernel_capability_and_imports_with_it(run_programs):
    foreign = own_ram(0, 0)                  # core 0's first dispatcher's RAM
    run = run_programs({"client": NOT_A_MONITOR, "mon": A_MONITOR}, cores=2,
                       module_args={"client": "core=0", "mon": f"core=1 monitor foreign={foreign}"})
    assert run.result.clean, run.result.reason
    assert run.output(0) == [str(-E.SLOT_EMPTY)], "a program that is no monitor holds the kernel's"
    assert run.output(1) == [str(int(T.KERNEL)), "0", str(-E.FOREIGN)], \
        "the monitor has no KERNEL capability, could not import, or retyped a foreign frame"
    service = run.machine._hypercall_handler
    assert service.slot_state(1, 0, root_caddr(20)) == "foreign"
    assert service.systems[1].identify(service.cspaces[(1, 0)], root_caddr(20))["base"] == foreign
