"""Shared regions: LOCK and UNLOCK, a core's votes in the monitors' two-phase commit.

Each core's CapabilitySystem is one replica of memory every core holds a
copy of. The Python tests build one such core the way kernel/capservice.py
does (the kernel holds the region's original, each dispatcher a copy) and
speak to it through `invoke`; the last test boots an image and asks the
service where each core's copy of each region stands.
"""

from hypothesis import HealthCheck, given, settings, strategies as st

from emulator.memory import PhysicalMemory
from kernel.capservice import (N_SHARED_REGIONS, SHARED_REGION_BITS, SHARED_REGIONS_BASE,
                               SLOT_REGIONS, region_base)
from kernel.capservice import defines as slot_defines
from kernel.caps import (CapabilitySystem, CapError, CapType, ErrorCode, Op, Rights, caddr,
                         defines, root_caddr)

T, R, E = CapType, Rights, ErrorCode
MEMORY_SIZE = 4 << 20
REGION_BASE = 1 << 20                          # 64 KiB, as a shared region is
CSPACES = {"monitor": 0x1_0000, "program": 0x2_0000}    # each root CNode's memory
OWN_RAM = {"monitor": 0x4_0000, "program": 0x6_0000}    # each one's RAM (root slot 0), 64 KiB
RAM, REGION, L2 = root_caddr(0), root_caddr(SLOT_REGIONS), root_caddr(1)


class Core:
    """One core's replica: the kernel's original of a shared region, and two
    dispatchers (a monitor and a program) each holding a copy of it in root
    slot SLOT_REGIONS, RAM of their own in root slot 0 and a CNode in root
    slot 1."""

    def __init__(self):
        self.memory = PhysicalMemory(MEMORY_SIZE)
        self.system = CapabilitySystem(self.memory)
        self.original = self.system.create(None, None, T.RAM, REGION_BASE, SHARED_REGION_BITS)
        self.cspaces = {}
        for name, base in CSPACES.items():
            cspace = self.system.new_cspace(base, 14)
            self.system.create(cspace, RAM, T.RAM, OWN_RAM[name], 16)
            self.system.give(self.original, cspace, REGION)
            self.cspaces[name] = cspace
            self.ok(name, Op.RETYPE, RAM, 0xC000, T.CNODE, 14, 1, L2)

    def call(self, who, op, *args):
        return self.system.invoke(self.cspaces[who], op, list(args))

    def ok(self, who, op, *args):
        result, _ = self.call(who, op, *args)
        assert result >= 0, f"{who}: {Op(op).name}{args} was refused: {ErrorCode(-result).name}"

    def refused(self, who, op, *args):
        result, flushes = self.call(who, op, *args)
        assert result < 0, f"{who}: {Op(op).name}{args} should have been refused"
        assert flushes == []
        return ErrorCode(-result)

    @property
    def state(self):
        return self.system.lock_state(self.original.obj)


def retype_page(core, who, dest, offset=0):
    return core.call(who, Op.RETYPE, REGION, offset, T.FRAME, 12, 1, dest)[0]


def retype_whole(core, who, dest):
    return core.call(who, Op.RETYPE, REGION, 0, T.FRAME, SHARED_REGION_BITS, 1, dest)[0]


# -- LOCK: a vote -------------------------------------------------------------------

def test_a_free_region_is_locked_and_says_so():
    core = Core()
    assert core.state == "free"
    core.ok("monitor", Op.LOCK, REGION)
    assert core.state == "locked"


def test_lock_is_refused_while_the_region_is_in_use_here():
    core = Core()
    core.ok("program", Op.RETYPE, REGION, 0x3000, T.FRAME, 12, 1, caddr(1, 0))
    assert core.state == "in use"
    assert core.refused("monitor", Op.LOCK, REGION) == E.HAS_DESCENDANTS
    core.ok("program", Op.DELETE, caddr(1, 0))               # the program lets go of it
    assert core.state == "free"
    core.ok("monitor", Op.LOCK, REGION)


def test_descendants_of_descendants_keep_the_region_in_use():
    core = Core()
    core.ok("program", Op.RETYPE, REGION, 0, T.RAM, 14, 1, caddr(1, 0))
    core.ok("program", Op.RETYPE, caddr(1, 0), 0, T.FRAME, 12, 1, caddr(1, 1))
    core.ok("program", Op.DELETE, caddr(1, 0))               # unnamed, but its child lives
    assert core.refused("monitor", Op.LOCK, REGION) == E.HAS_DESCENDANTS
    assert core.state == "in use"


def test_a_region_is_locked_once():
    core = Core()
    core.ok("monitor", Op.LOCK, REGION)
    assert core.refused("monitor", Op.LOCK, REGION) == E.LOCKED
    assert core.refused("program", Op.LOCK, REGION) == E.LOCKED


def test_only_ram_with_write_is_locked():
    core = Core()
    core.ok("program", Op.RETYPE, REGION, 0, T.FRAME, 12, 1, caddr(1, 0))
    assert core.refused("program", Op.LOCK, caddr(1, 0)) == E.WRONG_TYPE
    assert core.refused("program", Op.UNLOCK, caddr(1, 0), 0) == E.WRONG_TYPE
    assert core.refused("program", Op.LOCK, L2) == E.WRONG_TYPE
    core.ok("monitor", Op.MINT, REGION, caddr(1, 0), R.READ | R.GRANT, 0)
    assert core.refused("monitor", Op.LOCK, caddr(1, 0)) == E.NO_RIGHTS
    assert core.refused("monitor", Op.LOCK, caddr(1, 9)) == E.SLOT_EMPTY
    core.ok("program", Op.RETYPE, RAM, 0, T.RAM, 14, 1, caddr(1, 3))
    core.ok("program", Op.LOCK, caddr(1, 3))            # any RAM, not only a shared region


# -- while locked: only the lock's copy retypes ------------------------------------------

def test_a_locked_region_is_retyped_only_through_the_copy_holding_the_lock():
    core = Core()
    core.ok("monitor", Op.LOCK, REGION)
    assert retype_page(core, "program", caddr(1, 0)) == -E.LOCKED
    core.ok("monitor", Op.COPY, REGION, caddr(1, 0))    # the monitor's own other copy: no
    assert core.refused("monitor", Op.RETYPE, caddr(1, 0), 0, T.FRAME, 12, 1,
                        caddr(1, 1)) == E.LOCKED
    assert retype_whole(core, "monitor", caddr(1, 2)) == 0     # the commit, on the initiator
    assert core.state == "locked"
    core.ok("monitor", Op.UNLOCK, REGION, 0)
    assert core.state == "in use"
    assert core.refused("monitor", Op.LOCK, REGION) == E.HAS_DESCENDANTS
    assert retype_page(core, "program", caddr(1, 0)) == -E.OVERLAP


def test_unlock_without_marking_is_an_abort_the_region_is_free_again():
    core = Core()
    core.ok("monitor", Op.LOCK, REGION)
    core.ok("monitor", Op.UNLOCK, REGION, 0)
    assert core.state == "free"
    assert retype_page(core, "program", caddr(1, 0)) == 0


def test_unlock_goes_through_the_copy_holding_the_lock():
    core = Core()
    assert core.refused("monitor", Op.UNLOCK, REGION, 0) == E.NOT_LOCKED
    core.ok("monitor", Op.LOCK, REGION)
    assert core.refused("program", Op.UNLOCK, REGION, 1) == E.LOCKED
    assert core.state == "locked"
    core.ok("monitor", Op.UNLOCK, REGION, 0)
    assert core.refused("monitor", Op.UNLOCK, REGION, 0) == E.NOT_LOCKED


def test_retyped_elsewhere_refuses_every_later_retype_and_lock():
    core = Core()
    core.ok("monitor", Op.LOCK, REGION)
    core.ok("monitor", Op.UNLOCK, REGION, 2**64 - 1)         # any value but 0 marks it
    assert core.state == "retyped elsewhere"
    assert retype_page(core, "program", caddr(1, 0)) == -E.RETYPED_ELSEWHERE
    assert retype_whole(core, "monitor", caddr(1, 0)) == -E.RETYPED_ELSEWHERE
    assert core.refused("monitor", Op.LOCK, REGION) == E.RETYPED_ELSEWHERE
    assert core.refused("program", Op.LOCK, REGION) == E.RETYPED_ELSEWHERE
    assert core.refused("monitor", Op.UNLOCK, REGION, 0) == E.NOT_LOCKED
    core.ok("program", Op.COPY, REGION, caddr(1, 0))         # it can still be named
    assert core.refused("program", Op.RETYPE, caddr(1, 0), 0, T.FRAME, 12, 1,
                        caddr(1, 1)) == E.RETYPED_ELSEWHERE


# -- the lock's copy stays, the kernel's copy stays ------------------------------------------

def test_the_copy_holding_a_lock_is_not_deleted():
    core = Core()
    core.ok("monitor", Op.LOCK, REGION)
    assert core.refused("monitor", Op.DELETE, REGION) == E.LOCKED
    core.ok("program", Op.DELETE, REGION)                    # another copy: it may go
    assert core.state == "locked"


def test_a_locked_region_is_not_revoked():
    core = Core()
    core.ok("monitor", Op.LOCK, REGION)
    assert core.refused("monitor", Op.REVOKE, REGION) == E.LOCKED
    assert core.refused("program", Op.REVOKE, REGION) == E.LOCKED


def test_the_lock_holder_does_not_go_with_its_cnode_or_what_it_was_made_from():
    core = Core()
    core.ok("program", Op.COPY, REGION, caddr(1, 5))         # a copy inside the program's CNode
    core.ok("program", Op.LOCK, caddr(1, 5))
    assert core.refused("program", Op.DELETE, L2) == E.LOCKED
    assert core.refused("program", Op.REVOKE, RAM) == E.LOCKED   # the CNode came from that RAM
    core.ok("program", Op.UNLOCK, caddr(1, 5), 0)
    core.ok("program", Op.DELETE, L2)


def test_a_locked_piece_of_ram_stops_a_revoke_from_above():
    core = Core()
    core.ok("program", Op.RETYPE, RAM, 0, T.RAM, 14, 1, caddr(1, 0))
    core.ok("program", Op.LOCK, caddr(1, 0))
    assert core.refused("program", Op.REVOKE, RAM) == E.LOCKED
    assert core.refused("program", Op.DELETE, caddr(1, 0)) == E.LOCKED


def test_no_dispatcher_revokes_the_kernels_copy_of_a_region():
    core = Core()
    assert core.refused("program", Op.REVOKE, REGION) == E.NO_RIGHTS
    assert core.original.live
    assert core.system.lookup(core.cspaces["monitor"], REGION).live


# -- refused operations change nothing -------------------------------------------------------

def snapshot(core):
    """Everything an operation could change: objects, links, copies, locks."""
    def cap_key(cap):
        return None if cap is None else (id(cap), id(cap.cnode), cap.index, int(cap.rights))
    return [(id(obj), obj.type, obj.base, obj.size, id(obj.parent), obj.live,
             [id(child) for child in obj.children], [cap_key(cap) for cap in obj.caps],
             cap_key(obj.locked_by), obj.retyped_elsewhere,
             None if obj.slots is None else [cap_key(cap) for cap in obj.slots])
            for obj in core.system.objects()]


def test_refused_lock_operations_change_nothing():
    core = Core()
    core.ok("program", Op.RETYPE, RAM, 0, T.RAM, 14, 1, caddr(1, 0))
    core.ok("program", Op.LOCK, caddr(1, 0))
    core.ok("monitor", Op.LOCK, REGION)
    refusals = [("program", Op.RETYPE, REGION, 0, T.FRAME, 12, 1, caddr(1, 1)),
                ("program", Op.LOCK, REGION), ("program", Op.UNLOCK, REGION, 1),
                ("monitor", Op.DELETE, REGION), ("program", Op.REVOKE, REGION),
                ("program", Op.REVOKE, RAM), ("program", Op.DELETE, L2),
                ("program", Op.UNLOCK, RAM, 0), ("program", Op.LOCK, caddr(1, 0))]
    for who, op, *args in refusals:
        before = snapshot(core)
        core.refused(who, op, *args)
        assert snapshot(core) == before, f"{who}: refused {Op(op).name} changed something"


# -- the property: whatever the dispatchers do, the lock means what it says -------------------

WHO = st.sampled_from(["monitor", "program"])
ADDRESS = st.sampled_from([REGION, RAM, L2, caddr(1, 0), caddr(1, 1), caddr(1, 2)])
STEP = st.one_of(
    st.tuples(WHO, st.just(Op.LOCK), ADDRESS),
    st.tuples(WHO, st.just(Op.UNLOCK), ADDRESS, st.sampled_from([0, 1])),
    st.tuples(WHO, st.just(Op.RETYPE), ADDRESS, st.sampled_from([0, 0x1000, 0x8000]),
              st.sampled_from([T.FRAME, T.RAM]), st.sampled_from([12, 14, 16]),
              st.just(1), st.sampled_from([caddr(1, 0), caddr(1, 1), caddr(1, 2)])),
    st.tuples(WHO, st.just(Op.COPY), ADDRESS, st.sampled_from([caddr(1, 1), caddr(1, 2)])),
    st.tuples(WHO, st.sampled_from([Op.DELETE, Op.REVOKE]), ADDRESS))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, min_size=1, max_size=30))
def test_no_sequence_breaks_a_lock(steps):
    core = Core()
    region = core.original.obj
    for who, op, *args in steps:
        before, state, holder = snapshot(core), core.state, region.locked_by
        children_before = list(region.children)
        try:
            source = core.system.lookup(core.cspaces[who], args[0])
        except CapError:
            source = None
        result, _ = core.call(who, op, *args)
        if result < 0:
            assert snapshot(core) == before, f"a refused {Op(op).name} changed something"
            continue
        if op == Op.RETYPE and source.obj is region:
            assert state != "retyped elsewhere", "retyped after a commit elsewhere"
            assert state != "locked" or source is holder, \
                "a locked region was retyped through a copy that does not hold the lock"
        if op == Op.LOCK and source.obj is region:
            assert state == "free", f"LOCK granted on a region that was {state}"
        if state == "retyped elsewhere":
            assert all(child in children_before for child in region.children), \
                "the region got a new descendant after a commit elsewhere"
        for obj in core.system.objects():
            assert obj.locked_by is None or obj.locked_by.live, "a lock outlived its copy"


# -- the numbers user code gets ---------------------------------------------------------------

def test_the_guest_gets_the_lock_numbers_and_the_regions():
    numbers = defines() | slot_defines()
    assert (numbers["CAP_LOCK"], numbers["CAP_UNLOCK"]) == (Op.LOCK, Op.UNLOCK) == (9, 10)
    assert [numbers["CAPERR_" + name] for name in ("LOCKED", "HAS_DESCENDANTS",
                                                   "RETYPED_ELSEWHERE", "NOT_LOCKED")] == [
        119, 120, 121, 122]
    assert numbers["SLOT_REGIONS"] == SLOT_REGIONS == 232
    assert numbers["N_SHARED_REGIONS"] == N_SHARED_REGIONS == 4
    assert numbers["SHARED_REGION_BITS"] == 16
    assert numbers["SHARED_REGIONS_BASE"] == SHARED_REGIONS_BASE == 0x0380_0000
    assert region_base(3) == 0x0383_0000


# -- end to end: programs on two cores, each with its core's copies -----------------------------

USE_REGION_2 = """
# retype one page of region 2 into a frame, then try to lock the region
start:
    mov rdi, CADDR_ROOT | (SLOT_REGIONS + 2)
    mov esi, 0x1000
    mov edx, CAPTYPE_FRAME
    mov ecx, 12
    mov r8d, 1
    mov r9, CADDR_ROOT | 16
    call cap_retype
    mov rdi, rax
    call say
    mov rdi, CADDR_ROOT | (SLOT_REGIONS + 2)
    mov eax, SYS_INVOKE + CAP_LOCK
    syscall
    neg rax
    mov rdi, rax
    call say
    xor edi, edi
    call exit
say:                                  # print rdi, then a newline
    call print_u64
    lea rdi, [rip + newline]
    jmp print_cstr
newline: .asciz "\\n"
"""

LOCK_REGION_3 = """
# lock this core's copy of region 3, and keep the lock
start:
    mov rdi, CADDR_ROOT | (SLOT_REGIONS + 3)
    mov eax, SYS_INVOKE + CAP_LOCK
    syscall
    mov rdi, rax
    call print_u64
    lea rdi, [rip + newline]
    call print_cstr
    xor edi, edi
    call exit
newline: .asciz "\\n"
"""


def test_a_program_using_its_copy_of_a_region_puts_it_in_use_on_its_core_only(run_programs):
    run = run_programs({"user": USE_REGION_2, "locker": LOCK_REGION_3}, cores=3,
                       module_args={"user": "core=1", "locker": "core=0"})
    assert run.result.clean, run.result.reason
    assert run.output(1) == ["0", str(int(E.HAS_DESCENDANTS))], \
        "the program could not retype its region, or could lock it while using it"
    assert run.output(0) == ["0"], "the lock on a free region was refused"
    service = run.machine._hypercall_handler
    states = {core: [service.region_state(core, r) for r in range(N_SHARED_REGIONS)]
              for core in range(3)}
    assert states == {0: ["free", "free", "free", "locked"],
                      1: ["free", "free", "in use", "free"],
                      2: ["free", "free", "free", "free"]}
    frame = service.systems[1].lookup(service.cspaces[(1, 0)], root_caddr(16))
    assert (frame.type, frame.base) == (T.FRAME, region_base(2) + 0x1000)
    assert service.systems[1].identify(service.cspaces[(1, 0)],
                                       root_caddr(SLOT_REGIONS + 2))["base"] == region_base(2)
