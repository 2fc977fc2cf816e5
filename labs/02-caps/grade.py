"""Lab 2's grader: the capability rules (kernel/caps/rules.py) and what a
revoke deletes (kernel/caps/system.py), judged on the capability table.

Most tests build one core's capability system in Python and ask it what
user code would (`CapabilitySystem.invoke`, raw 64-bit arguments, the
answer 0 or -code), then read the table it ended with: every object's type,
range and parent, every capability's slot and rights. What a test needs in
place before the operation it judges is made without the student's code
(`create`, as the boot does, or the mapping database directly), so each
test judges its own rule. The last two boot guest programs that invoke
capabilities through system calls, under every schedule. An exception the
student's code raises fails the test with the request it was answering and
the answer the rules want (`answering`), never the grader's own crash.

The grader's own oracle (ALLOWED, expected_retype) decides what each retype
of the random sequences must answer; it is written here, apart from the
tree. kernel.caps is imported inside the tests only: there, the student's
files are what `import` gives.
"""

import random
from contextlib import contextmanager

from sprat.lab.grading import QUANTA, boot, fail, raised, test

# -- one core's capability system, made as the boot makes it ------------------------

MEMORY_SIZE = 4 << 20
ROOT_CNODE = 0x1_0000               # 256 slots
L2_CNODE = 0x1_4000                 # 256 slots, in root slot 0: caddr(0, i)
RAM_BASE, RAM_BITS = 0x10_0000, 16  # root slot 1: 64 KiB of RAM
OTHER_BASE = 0x20_0000              # memory for a test's other originals


class World:
    """A root CNode, a 256-slot CNode in root slot 0 and 64 KiB of RAM in root slot 1."""

    def __init__(self, ram_rights=None):
        from emulator.memory import PhysicalMemory
        from kernel.caps import CapabilitySystem, CapType, Rights, root_caddr
        self.memory = PhysicalMemory(MEMORY_SIZE)
        self.system = CapabilitySystem(self.memory)
        self.cspace = self.system.new_cspace(ROOT_CNODE, 14)
        self.system.create(self.cspace, root_caddr(0), CapType.CNODE, L2_CNODE, 14)
        rights = Rights.ALL if ram_rights is None else ram_rights
        self.ram = self.system.create(self.cspace, root_caddr(1), CapType.RAM, RAM_BASE,
                                      RAM_BITS, rights)

    def create(self, slot, obj_type, base, size_bits, rights=None):
        """An original in root slot `slot` (the boot's way: no rule of the lab)."""
        from kernel.caps import Rights, root_caddr
        return self.system.create(self.cspace, root_caddr(slot), obj_type, base, size_bits,
                                  Rights.ALL if rights is None else rights)

    def invoke(self, op, *args) -> int:
        """What user code gets back: 0 (or a value) or -code."""
        return self.system.invoke(self.cspace, op, list(args))[0]

    def cap(self, address):
        return self.cspace.slot(address).cap

    def table(self) -> list:
        """The capability table: every live object and every capability naming it."""
        return [(obj.type, obj.base, obj.size, id(obj.parent),
                 [(id(cap.cnode), cap.index, int(cap.rights), cap.badge) for cap in obj.caps],
                 dict(obj.entries))
                for obj in self.system.objects()]


def derived(parent, obj_type, offset, size, rights, *addresses, cspace_of=None):
    """An object made straight in the mapping database (no rule asked), with a
    capability in each of `addresses` (slots of `cspace_of`)."""
    from kernel.caps import mdb
    obj = mdb.new_object(obj_type, parent.base + offset, size, parent)
    for address in addresses:
        slot = cspace_of.slot(address)
        mdb.place_cap(obj, rights, 0, slot.cnode_cap.obj, slot.index)
    return obj


def copy_into(obj, rights, cspace, address, badge=0):
    """One more capability to `obj` in a slot (no rule asked)."""
    from kernel.caps import mdb
    slot = cspace.slot(address)
    return mdb.place_cap(obj, rights, badge, slot.cnode_cap.obj, slot.index)


def answer(result: int) -> str:
    from kernel.caps import ErrorCode
    if result >= 0:
        return "accepted"
    code = -result
    name = ErrorCode(code).name if code in ErrorCode._value2member_map_ else f"error {code}"
    return f"refused with {name}"


def type_name(number: int) -> str:
    from kernel.caps import CapType
    return CapType(number).name if number in CapType._value2member_map_ else f"type {number}"


def a_or_an(name: str) -> str:
    """`name` with its article: a FRAME, an ENDPOINT."""
    return f"{'an' if name[:1] in 'AEIOU' else 'a'} {name}"


def rights_text(rights) -> str:
    """Rights as the handout writes them: READ|WRITE, or no rights."""
    from kernel.caps import Rights
    names = [right.name for right in Rights if right & rights]
    return "|".join(names) if names else "no rights"


def wanted(expected) -> str:
    """What the rules want of a request: accepted (None) or refused with a code."""
    return "accepted" if expected is None else f"refused with {expected.name}"


def rules_say(expected: set) -> str:
    """The answers the rules allow (a set of 0 or -codes), in words: accepted, or the codes."""
    if expected == {0}:
        return "accepted"
    return "refused with " + " or ".join(sorted(answer(code).replace("refused with ", "")
                                                for code in expected))


@contextmanager
def answering(request: str, want: str):
    """Run the student's code on `request` (e.g. "RETYPE of ..."): an exception it
    raises fails the test naming the request and what the rules want of it, not
    only the line that raised. A stub's NotImplementedError says enough itself;
    a CapError is a rule's refusal, for the test to judge."""
    from kernel.caps import CapError
    try:
        yield
    except (NotImplementedError, CapError):
        raise
    except Exception as error:                   # noqa: BLE001 -- any submission
        fail(f"{request} raised {raised(error)}; it must be {want}")


def retype_text(src_name, offset, new_type, size_bits, count) -> str:
    return (f"RETYPE of {src_name} into {count} x {type_name(new_type)} of 2**{size_bits} "
            f"bytes at offset {offset:#x}")


# -- the oracle: what the handout's rules say ------------------------------------------

def allowed_table():
    """What each type may be retyped into (the handout's table, written out again)."""
    from kernel.caps import CapType as T
    return {T.RAM: {T.RAM, T.FRAME, T.CNODE, T.VNODE_PML4, T.VNODE_PDPT, T.VNODE_PD,
                    T.VNODE_PT, T.DISPATCHER},
            T.FRAME: {T.FRAME},
            T.DISPATCHER: {T.ENDPOINT}}


def size_range(obj_type):
    """(min_bits, max_bits) of a type, written out again from the handout."""
    from kernel.caps import CapType as T
    return {T.RAM: (12, 48), T.FRAME: (12, 48), T.CNODE: (7, 14), T.VNODE_PML4: (12, 12),
            T.VNODE_PDPT: (12, 12), T.VNODE_PD: (12, 12), T.VNODE_PT: (12, 12),
            T.DISPATCHER: (10, 10), T.ENDPOINT: (0, 0)}[obj_type]


def why_not(src_type, new_type) -> str:
    """Why a retype the table refuses must be refused, in the student's words."""
    from kernel.caps import CapType as T
    if new_type not in T._value2member_map_:
        return (f"{new_type} is no type at all (look it up in the table before turning it "
                f"into a CapType)")
    if src_type == T.FRAME and new_type == T.RAM:
        return ("a Frame may be mapped: made RAM again, it could be retyped into a page table "
                "or a CNode while user code still writes to it")
    if src_type == T.FRAME:
        return "a Frame is memory user code may map and write: it only splits into smaller Frames"
    if src_type == T.RAM and new_type == T.ENDPOINT:
        return "an endpoint is a view of a dispatcher: it is retyped from a DISPATCHER"
    if src_type == T.DISPATCHER:
        return "a dispatcher only gives endpoints (views of it)"
    if src_type == T.KERNEL:
        return "the KERNEL capability is never retyped"
    if src_type in (T.CNODE, T.VNODE_PML4, T.VNODE_PDPT, T.VNODE_PD, T.VNODE_PT, T.ENDPOINT):
        return f"{a_or_an(src_type.name)} is in use as what it is: it is never retyped"
    return "the handout's table does not allow it"


def expected_retype(src, new_type, size_bits, offset, count) -> set:
    """The answers the rules allow for a retype: {0} if it must be accepted, else
    every error code that one of the broken rules gives (any one of them will do)."""
    from kernel.caps import ErrorCode as E, Rights
    codes = set()
    if not src.rights & Rights.WRITE:
        codes.add(-E.NO_RIGHTS)
    if new_type not in allowed_table().get(src.type, ()):
        return codes | {-E.RETYPE_NOT_ALLOWED}
    low, high = size_range(new_type)
    if not low <= size_bits <= high:
        return codes | {-E.INVALID_SIZE}
    if not 1 <= count <= 256:
        codes.add(-E.INVALID_SIZE)
    size = 1 << size_bits if size_bits else 0
    if not size:
        if offset:
            codes.add(-E.OUT_OF_RANGE)
        return codes or {0}
    start, end = src.base + offset, src.base + offset + max(count, 1) * size
    if offset + max(count, 1) * size > src.obj.size:
        codes.add(-E.OUT_OF_RANGE)
    if start % size:
        codes.add(-E.MISALIGNED)
    if any(child.owns_memory and child.base < end and start < child.end
           for child in src.obj.children):
        codes.add(-E.OVERLAP)
    return codes or {0}


# -- 1. what may become what ------------------------------------------------------------

@test(points=10)
def retype_follows_the_type_table():
    """Every type into every type: only RAM -> RAM/FRAME/CNODE/VNODEs/DISPATCHER, FRAME -> FRAME, DISPATCHER -> ENDPOINT."""
    from kernel.caps import CapType as T, ErrorCode as E, Op, caddr, root_caddr, rules
    world = World()
    sources = {1: world.ram,
               2: world.create(2, T.FRAME, OTHER_BASE, 16),
               3: world.create(3, T.CNODE, OTHER_BASE + 0x1_0000, 14),
               4: world.create(4, T.VNODE_PML4, OTHER_BASE + 0x2_0000, 12),
               5: world.create(5, T.VNODE_PDPT, OTHER_BASE + 0x2_1000, 12),
               6: world.create(6, T.VNODE_PD, OTHER_BASE + 0x2_2000, 12),
               7: world.create(7, T.VNODE_PT, OTHER_BASE + 0x2_3000, 12),
               8: world.create(8, T.DISPATCHER, OTHER_BASE + 0x2_4000, 10)}
    kernel = world.system.create(None, None, T.KERNEL, 0, 0)
    sources[9] = world.system.give(kernel, world.cspace, root_caddr(9))
    sources[10] = copy_into(derived(sources[8].obj, T.ENDPOINT, 0, 0, None), sources[8].rights,
                            world.cspace, root_caddr(10))
    targets = [int(t) for t in T] + [11, 0xFF, 2**64 - 1]
    table, dest = allowed_table(), 0
    for slot, src in sources.items():
        for k, new_type in enumerate(targets):
            known = new_type in T._value2member_map_ and T(new_type) in table[T.RAM] | {T.ENDPOINT}
            size_bits = size_range(T(new_type))[0] if known else 12
            offset = k * 0x1000 if src.type == T.RAM and size_bits else 0
            what = f"{a_or_an(src.type.name)} into {a_or_an(type_name(new_type))}"
            allowed = new_type in table.get(src.type, ())
            with answering(f"retyping {what}", "accepted" if allowed else
                           f"refused with RETYPE_NOT_ALLOWED: {why_not(src.type, new_type)}"):
                result = world.invoke(Op.RETYPE, root_caddr(slot), offset, new_type, size_bits,
                                      1, caddr(0, dest))
            if allowed:
                if result == -E.OVERLAP:
                    where = overlap_hint(src, new_type, offset, size_bits)
                    fail(f"retyping {what} was refused with OVERLAP, but nothing that owns "
                         f"memory lies in its range ({where}): check_no_overlap refused it, "
                         f"not the table")
                if result < 0:
                    fail(f"retyping {what} was {answer(result)}, but the table allows it")
                check_new_objects(world, src, new_type, offset, size_bits, 1, dest, what)
                dest += 1
            elif result >= 0:
                fail(f"retyping {what} was accepted: {why_not(src.type, new_type)}")
            elif result != -E.RETYPE_NOT_ALLOWED and students_table_allows(rules, src.type, new_type):
                fail(f"retyping {what} was {answer(result)}, not refused with "
                     f"RETYPE_NOT_ALLOWED: your RETYPE table lets {a_or_an(src.type.name)} "
                     f"become {a_or_an(type_name(new_type))}, and the handout's does not "
                     f"({why_not(src.type, new_type)})")
            elif result != -E.RETYPE_NOT_ALLOWED:
                fail(f"retyping {what} was {answer(result)}, not refused with "
                     f"RETYPE_NOT_ALLOWED (the type table is checked before the size, count "
                     f"and range)")


def check_new_objects(world, src, new_type, offset, size_bits, count, first, what):
    """The new objects are where the retype says, each in its slot, below the source."""
    from kernel.caps import caddr
    size = 1 << size_bits if size_bits else 0
    for i in range(count):
        cap = world.cap(caddr(0, first + i))
        if cap is None:
            fail(f"retyping {what} was accepted, but slot {first + i} of the destination "
                 f"CNode is empty")
        obj = cap.obj
        where = src.base + offset + i * size
        if obj.type != new_type or obj.size != size or obj.base != where:
            fail(f"retyping {what} made {a_or_an(obj.type.name)} of {obj.size:#x} bytes at "
                 f"{obj.base:#x}, not {a_or_an(type_name(new_type))} of {size:#x} bytes at "
                 f"{where:#x} (what check_retype returns places them)")
        if obj.parent is not src.obj:
            fail(f"retyping {what}: the new object's parent is not the source")


def overlap_hint(src, new_type, offset, size_bits) -> str:
    """Where a retype the test made goes, and what lies next to it, in words."""
    if not size_bits:
        return f"{a_or_an(type_name(new_type))} owns no memory"
    start = src.base + offset
    end = start + (1 << size_bits)
    touching = [child for child in src.obj.children
                if child.owns_memory and (child.end == start or child.base == end)]
    if touching:
        return (f"{start:#x}..{end:#x}; the {touching[0].type.name} at "
                f"{touching[0].base:#x}..{touching[0].end:#x} only touches it, end exclusive")
    return f"{start:#x}..{end:#x}"


def students_table_allows(rules, src_type, new_type) -> bool:
    """Whether the student's RETYPE table lets `src_type` become `new_type`."""
    table = getattr(rules, "RETYPE", None)
    return isinstance(table, dict) and new_type in table.get(src_type, ())


# -- 2. sizes, counts, alignment and the source's end -----------------------------------

def size_cases():
    """(what, source, offset, type, size_bits, count, expected error or None: accepted)."""
    from kernel.caps import CapType as T, ErrorCode as E
    return [
        ("a FRAME of 2**11 bytes (less than a page)", "RAM", 0, T.FRAME, 11, 1, E.INVALID_SIZE),
        ("a FRAME of 2**49 bytes", "RAM", 0, T.FRAME, 49, 1, E.INVALID_SIZE),
        ("a CNODE of 2**6 bytes (one slot)", "RAM", 0, T.CNODE, 6, 1, E.INVALID_SIZE),
        ("a CNODE of 2**15 bytes (512 slots)", "RAM", 0, T.CNODE, 15, 1, E.INVALID_SIZE),
        ("a VNODE_PT of 2**13 bytes (a page table is one page)", "RAM", 0, T.VNODE_PT, 13, 1,
         E.INVALID_SIZE),
        ("a DISPATCHER of 2**12 bytes", "RAM", 0, T.DISPATCHER, 12, 1, E.INVALID_SIZE),
        ("no frame at all (count 0)", "RAM", 0, T.FRAME, 12, 0, E.INVALID_SIZE),
        ("257 CNODEs of 2**7 bytes (count over 256)", "RAM", 0, T.CNODE, 7, 257,
         E.INVALID_SIZE),
        ("300 4 KiB FRAMEs (count over 256, and past the RAM's end: the count is checked "
         "first)", "RAM", 0, T.FRAME, 12, 300, E.INVALID_SIZE),
        ("a 4 KiB FRAME at offset 0x800", "RAM", 0x800, T.FRAME, 12, 1, E.MISALIGNED),
        ("an 8 KiB FRAME at offset 0x1000 (aligned to a page, not to its size)", "RAM",
         0x1000, T.FRAME, 13, 1, E.MISALIGNED),
        ("a 1 KiB DISPATCHER at offset 0x200", "RAM", 0x200, T.DISPATCHER, 10, 1,
         E.MISALIGNED),
        ("a 4 KiB FRAME at offset 0x10000 (the RAM's end)", "RAM", 0x10000, T.FRAME, 12, 1,
         E.OUT_OF_RANGE),
        ("an 8 KiB FRAME at offset 0xF000 (past the end and misaligned: the range is "
         "checked first)", "RAM", 0xF000, T.FRAME, 13, 1, E.OUT_OF_RANGE),
        ("a 4 KiB FRAME at offset 0xF001 (misaligned, and its last byte one past the RAM's "
         "end: the range is checked first)", "RAM", 0xF001, T.FRAME, 12, 1, E.OUT_OF_RANGE),
        ("two 4 KiB FRAMEs at offset 0xF000 (the second past the end)", "RAM", 0xF000,
         T.FRAME, 12, 2, E.OUT_OF_RANGE),
        ("a 128 KiB FRAME (bigger than the RAM)", "RAM", 0, T.FRAME, 17, 1, E.OUT_OF_RANGE),
        ("a 4 KiB FRAME at offset 2**64 - 0x1000", "RAM", 2**64 - 0x1000, T.FRAME, 12, 1,
         E.OUT_OF_RANGE),
        ("an ENDPOINT at offset 0x400 of a DISPATCHER (a view has no offset)", "DISPATCHER",
         0x400, T.ENDPOINT, 0, 1, E.OUT_OF_RANGE),
        ("an ENDPOINT of 2**4 bytes (a view owns no memory)", "DISPATCHER", 0, T.ENDPOINT, 4,
         1, E.INVALID_SIZE),
        ("a FRAME from RAM whose capability lacks WRITE", "READ-ONLY RAM", 0, T.FRAME, 12, 1,
         E.NO_RIGHTS),
        ("an ENDPOINT from RAM whose capability lacks WRITE (the table refuses it too, but "
         "the rights are checked first)", "READ-ONLY RAM", 0, T.ENDPOINT, 0, 1, E.NO_RIGHTS),
        ("a 4 KiB FRAME at offset 0xF000 (the last page)", "RAM", 0xF000, T.FRAME, 12, 1,
         None),
        ("a 64 KiB RAM at offset 0 (all of it)", "RAM", 0, T.RAM, 16, 1, None),
        ("sixteen 4 KiB FRAMEs at offset 0 (all of it)", "RAM", 0, T.FRAME, 12, 16, None),
        ("four 1 KiB DISPATCHERs at offset 0x400", "RAM", 0x400, T.DISPATCHER, 10, 4, None),
        ("256 CNODEs of 2**7 bytes (count 256: the most)", "RAM", 0, T.CNODE, 7, 256, None),
        ("a 16-slot CNODE at offset 0x8400", "RAM", 0x8400, T.CNODE, 10, 1, None),
        ("three ENDPOINTs of a DISPATCHER", "DISPATCHER", 0, T.ENDPOINT, 0, 3, None),
    ]


@test(points=15)
def retype_checks_size_count_alignment_and_range():
    """Sizes the type allows, 1..256 objects, aligned to their size, inside the source (its last page too)."""
    from kernel.caps import CapType as T, Op, Rights, caddr, root_caddr
    for what, source, offset, new_type, size_bits, count, expected in size_cases():
        world = World()
        sources = {"RAM": world.ram,
                   "DISPATCHER": world.create(2, T.DISPATCHER, OTHER_BASE, 10),
                   "READ-ONLY RAM": world.create(3, T.RAM, OTHER_BASE + 0x1_0000, 16,
                                                 Rights.READ)}
        src = sources[source]
        slot = {"RAM": 1, "DISPATCHER": 2, "READ-ONLY RAM": 3}[source]
        before = world.table()
        asked = f"a retype into {what}"
        with answering(asked, wanted(expected)):
            result = world.invoke(Op.RETYPE, root_caddr(slot), offset, new_type, size_bits,
                                  count, caddr(0, 0))
        if expected is None:
            if result < 0:
                fail(f"{asked} was {answer(result)}; it lies inside the source and must be "
                     f"accepted")
            check_new_objects(world, src, new_type, offset, size_bits, count, 0, what)
        elif result >= 0:
            fail(f"{asked} was accepted; it must be refused with {expected.name}")
        elif result != -expected:
            fail(f"{asked} was {answer(result)}, not with {expected.name}")
        elif world.table() != before:
            fail(f"{asked} was refused, yet the capability table changed: a refused "
                 f"retype must change nothing")


# -- 3. no overlapping descendants ------------------------------------------------------

@test(points=15)
def retype_never_overlaps_a_live_descendant():
    """The same range twice, a range around or inside a descendant, or through a copy, is refused with OVERLAP; neighbours and freed ranges are not."""
    from kernel.caps import CapType as T, ErrorCode as E, Op, caddr, root_caddr
    world = World()
    ram, copy = root_caddr(1), root_caddr(2)
    dispatcher = world.create(3, T.DISPATCHER, OTHER_BASE, 10)
    steps = [
        # (what, source, offset, type, size_bits, count, destination slot, overlaps?)
        ("a 4 KiB FRAME at 0x2000", ram, 0x2000, T.FRAME, 12, 1, 0, False),
        ("the same FRAME at 0x2000 again", ram, 0x2000, T.FRAME, 12, 1, 1, True),
        ("an 8 KiB FRAME at 0x2000 (over the frame and past it)", ram, 0x2000, T.FRAME, 13,
         1, 1, True),
        ("a 16 KiB RAM at 0x0 (starting below the frame and covering it)", ram, 0, T.RAM, 14,
         1, 1, True),
        ("two 4 KiB FRAMEs at 0x1000 (the second on the frame)", ram, 0x1000, T.FRAME, 12, 2,
         1, True),
        ("the 4 KiB FRAME just below it, at 0x1000", ram, 0x1000, T.FRAME, 12, 1, 1, False),
        ("the 4 KiB FRAME just above it, at 0x3000", ram, 0x3000, T.FRAME, 12, 1, 2, False),
        ("four 4 KiB FRAMEs at 0x4000", ram, 0x4000, T.FRAME, 12, 4, 3, False),
        ("a 4 KiB FRAME at 0x6000 (the third of those four)", ram, 0x6000, T.FRAME, 12, 1, 7,
         True),
        ("a 32 KiB RAM at 0x8000", ram, 0x8000, T.RAM, 15, 1, 7, False),
        ("a 4 KiB FRAME at 0xA000 (inside that RAM)", ram, 0xA000, T.FRAME, 12, 1, 8, True),
        ("COPY of the RAM", None, 0, 0, 0, 0, 0, False),
        ("a 4 KiB FRAME at 0x2000 through a copy of the RAM (descendants belong to the "
         "object, not to the copy that made them)", copy, 0x2000, T.FRAME, 12, 1, 8, True),
        ("DELETE of the FRAME at 0x2000", None, 0, 0, 0, 0, 0, False),
        ("a 4 KiB FRAME at 0x2000 once the frame there is deleted", ram, 0x2000, T.FRAME,
         12, 1, 8, False),
        ("an ENDPOINT of a DISPATCHER", root_caddr(3), 0, T.ENDPOINT, 0, 1, 9, False),
        ("a second ENDPOINT of it (views own no memory: any number)", root_caddr(3), 0,
         T.ENDPOINT, 0, 1, 10, False),
    ]
    assert dispatcher.type == T.DISPATCHER
    for what, src, offset, new_type, size_bits, count, dest, overlaps in steps:
        if what.startswith("COPY"):
            world.invoke(Op.COPY, ram, copy)
            continue
        if what.startswith("DELETE"):
            world.invoke(Op.DELETE, caddr(0, 0))
            continue
        before = world.table()
        with answering(f"a retype into {what}",
                       "refused with OVERLAP" if overlaps else "accepted"):
            result = world.invoke(Op.RETYPE, src, offset, new_type, size_bits, count,
                                  caddr(0, dest))
        if overlaps and result >= 0:
            fail(f"a retype into {what} was accepted: it overlaps a live descendant and "
                 f"must be refused with OVERLAP")
        if overlaps and result != -E.OVERLAP:
            fail(f"a retype into {what} was {answer(result)}, not with OVERLAP")
        if overlaps and world.table() != before:
            fail(f"a retype into {what} was refused, yet the capability table changed")
        if not overlaps and result < 0:
            fail(f"a retype into {what} was {answer(result)}; nothing live is there, it "
                 f"must be accepted")


# -- 4. the rights of what a retype makes -----------------------------------------------

@test(points=5)
def retyped_objects_carry_the_source_rights():
    """New objects get the source capability's rights, never more: not those of another copy."""
    from kernel.caps import CapType as T, Rights as R, caddr, root_caddr
    for rights in (R.ALL, R.READ | R.WRITE | R.GRANT, R.READ | R.WRITE):
        world = World(ram_rights=rights)
        for dest, (offset, new_type, size_bits, count) in enumerate(
                ((0, T.FRAME, 12, 4), (0x8000, T.CNODE, 10, 1), (0x9000, T.VNODE_PT, 12, 1))):
            retyped_with(world, root_caddr(1), "RAM", rights, offset, new_type, size_bits,
                         count, 4 * dest)
    # A weaker copy beside the original: its own rights, not the original's.
    world = World()
    copy_into(world.ram.obj, R.READ | R.WRITE, world.cspace, root_caddr(2))
    retyped_with(world, root_caddr(2), "a copy of RAM (the original has every right)",
                 R.READ | R.WRITE, 0, T.FRAME, 12, 2, 0)


def retyped_with(world, src, what, rights, offset, new_type, size_bits, count, first):
    """Retype through `src` (`what`, holding `rights`); every new capability has `rights`."""
    from kernel.caps import Field, Op, caddr
    with answering(f"a retype into {count} x {new_type.name}", "accepted"):
        result = world.invoke(Op.RETYPE, src, offset, new_type, size_bits, count,
                              caddr(0, first))
    if result < 0:
        fail(f"a retype into {count} x {new_type.name} was {answer(result)}")
    for i in range(count):
        got = world.invoke(Op.IDENTIFY, caddr(0, first + i), Field.RIGHTS)
        if got != rights:
            fail(f"a {new_type.name} retyped from {what} with rights {rights_text(rights)} "
                 f"has rights {rights_text(got) if got >= 0 else answer(got)}: a retype gives "
                 f"exactly the rights of the capability it goes through (never more)")


# -- 5. mint -----------------------------------------------------------------------------

@test(points=10)
def mint_only_removes_rights_and_badges_an_endpoint_once():
    """A minted copy has the rights asked for if the source has them all; a badge goes on an unbadged endpoint, up to 2**32 - 1."""
    from kernel.caps import CapType as T, ErrorCode as E, Op, Rights as R, caddr, root_caddr
    world = World(ram_rights=R.READ | R.WRITE | R.GRANT)
    dispatcher = world.create(2, T.DISPATCHER, OTHER_BASE, 10)
    endpoint = copy_into(derived(dispatcher.obj, T.ENDPOINT, 0, 0, None), R.ALL, world.cspace,
                         root_caddr(3))
    ram, ep = root_caddr(1), root_caddr(3)
    cases = [
        # (what, source, dest, rights, badge, expected error, expected (rights, badge))
        ("READ only from READ|WRITE|GRANT RAM", ram, 0, R.READ, 0, None, (R.READ, 0)),
        ("the same rights as the source", ram, 1, R.READ | R.WRITE | R.GRANT, 0, None,
         (R.READ | R.WRITE | R.GRANT, 0)),
        ("no rights at all", ram, 2, 0, 0, None, (R.NONE, 0)),
        ("READ|WRITE|EXECUTE from READ|WRITE|GRANT RAM (EXECUTE is not the source's)", ram,
         3, R.READ | R.WRITE | R.EXECUTE, 0, E.NO_RIGHTS, None),
        ("READ|WRITE from the READ-only mint (a mint of a mint cannot grow back what the "
         "first took away)", caddr(0, 0), 3, R.READ | R.WRITE, 0, E.NO_RIGHTS, None),
        ("READ|WRITE and badge 5 from the READ-only mint of RAM (two things wrong: the "
         "rights are checked first)", caddr(0, 0), 3, R.READ | R.WRITE, 5, E.NO_RIGHTS, None),
        ("rights 0x10 (a bit that is no right)", ram, 3, 0x10, 0, E.INVALID_ARGUMENT, None),
        ("rights 2**64 - 1", ram, 3, 2**64 - 1, 0, E.INVALID_ARGUMENT, None),
        ("badge 5 on RAM (only an ENDPOINT takes a badge)", ram, 3, R.READ, 5, E.BADGE,
         None),
        ("badge 7 on an unbadged ENDPOINT", ep, 3, R.ALL, 7, None, (R.ALL, 7)),
        ("badge 9 on the ENDPOINT badged 7 (a badge is set once)", caddr(0, 3), 4, R.ALL, 9,
         E.BADGE, None),
        ("badge 0 (keep) from the ENDPOINT badged 7", caddr(0, 3), 4, R.READ, 0, None,
         (R.READ, 7)),
        ("badge 2**32 on an ENDPOINT", ep, 5, R.ALL, 2**32, E.BADGE, None),
        ("badge 2**32 - 1 on an ENDPOINT", ep, 5, R.ALL, 2**32 - 1, None, (R.ALL, 2**32 - 1)),
    ]
    for what, src, dest, rights, badge, error, made in cases:
        source = world.cap(src)
        before = world.table()
        asked = f"MINT with {what}"
        with answering(asked, wanted(error)):
            result = world.invoke(Op.MINT, src, caddr(0, dest), rights, badge)
        if error is not None:
            if result >= 0:
                fail(f"{asked} was accepted; it must be refused with {error.name}")
            if result != -error:
                fail(f"{asked} was {answer(result)}, not with {error.name}")
            if world.table() != before:
                fail(f"{asked} was refused, yet the capability table changed")
            continue
        if result < 0:
            fail(f"{asked} was {answer(result)}; it must be accepted")
        copy = world.cap(caddr(0, dest))
        if copy is None or copy.obj is not source.obj:
            fail(f"{asked} was accepted but left no copy of the same object in its slot")
        if (copy.rights, copy.badge) != made:
            fail(f"{asked} made a copy with {rights_text(copy.rights)} and badge "
                 f"{copy.badge}, not {rights_text(made[0])} and badge {made[1]}")
    assert endpoint.badge == 0, "minting changed the source endpoint's badge"


# -- 6. who may revoke -------------------------------------------------------------------

@test(points=5)
def revoke_is_refused_when_it_would_take_more_than_the_caller_has():
    """check_revoke: a copy lacking a right another copy has, the kernel's own copy, or a locked object: refused; otherwise allowed."""
    from kernel.caps import CapError, CapType as T, ErrorCode as E, Op, Rights as R
    from kernel.caps import caddr, rules
    world = World()
    full = world.ram
    less = copy_into(full.obj, R.READ | R.WRITE, world.cspace, caddr(0, 0))
    kernel_held = world.system.create(None, None, T.RAM, OTHER_BASE, 16)
    given = world.system.give(kernel_held, world.cspace, caddr(0, 1))
    equal = World(ram_rights=R.READ | R.WRITE)
    twin = copy_into(equal.ram.obj, R.READ | R.WRITE, equal.cspace, caddr(0, 0))
    alone = World(ram_rights=R.READ).ram
    # Only the object's own copies count, not its descendants': the FRAME was
    # made through a stronger copy, since deleted.
    last = World(ram_rights=R.READ | R.WRITE)
    derived(last.ram.obj, T.FRAME, 0, 0x1000, R.ALL, caddr(0, 0), cspace_of=last.cspace)
    # Rights are a set, not a number: READ (1) is a right GRANT (8) lacks.
    granter = World(ram_rights=R.GRANT)
    copy_into(granter.ram.obj, R.READ, granter.cspace, caddr(0, 0))
    for cap, what in ((full, "the RAM capability with every right, beside a READ|WRITE copy"),
                      (twin, "a READ|WRITE copy whose other copy is READ|WRITE too"),
                      (alone, "a READ-only RAM capability with no other copy"),
                      (last.ram, "the last READ|WRITE copy of a RAM whose FRAME has every "
                                 "right (only the RAM's own copies count, not its "
                                 "descendants')")):
        try:
            with answering(f"check_revoke of {what}", "allowed"):
                rules.check_revoke(cap)
        except CapError as error:
            fail(f"revoking through {what} was refused ({error}); it takes nothing the "
                 f"caller lacks")
    for cap, what, code in (
            (less, "a READ|WRITE copy while another copy has every right", E.NO_RIGHTS),
            (given, "a copy of memory the kernel holds the original of", E.NO_RIGHTS),
            (granter.ram, "a GRANT-only copy while another copy has READ (a right it lacks, "
                          "though a smaller number)", E.NO_RIGHTS)):
        try:
            with answering(f"check_revoke of {what}", f"refused with {code.name}"):
                rules.check_revoke(cap)
        except CapError as error:
            if error.code != code:
                fail(f"revoking through {what} was refused with {error.code.name}, not "
                     f"{code.name}")
            continue
        fail(f"revoking through {what} was allowed; it must be refused with {code.name}")
    locked = World()
    other = copy_into(locked.ram.obj, R.ALL, locked.cspace, caddr(0, 0))
    weaker = copy_into(locked.ram.obj, R.READ, locked.cspace, caddr(0, 1))
    if locked.invoke(Op.LOCK, caddr(0, 0)) != 0:
        fail("LOCK of a fresh RAM copy was refused (the tree's rule): cannot test locks")
    for cap in (locked.ram, other, weaker):
        try:
            with answering("check_revoke of a locked RAM", "refused with LOCKED"):
                rules.check_revoke(cap)
        except CapError as error:
            if error.code != E.LOCKED:
                fail(f"revoking a locked RAM{' through a READ-only copy' if cap is weaker else ''}"
                     f" was refused with {error.code.name}, not LOCKED (the lock is checked "
                     f"before the copies)")
            continue
        fail("revoking a locked RAM was allowed; it must be refused with LOCKED (the lock "
             "holds it for a two-phase commit)")


# -- 7. what a revoke deletes -----------------------------------------------------------

class Tree:
    """A derivation tree made straight in the mapping database:

        RAM (root 1; copies: root 2, L2 slot 0, and one inside CNODE K)
        +-- RAM C 16 KiB at 0x0 (slots 1, 2)
        |   +-- FRAME F1 4 KiB at 0x0 (slot 3; a copy inside K)
        |   +-- FRAME F2 8 KiB at 0x2000 (slot 4)
        |   |   +-- FRAME F2a 4 KiB at 0x2000 (slot 5)
        |   +-- CNODE K 16 slots at 0x1000 (slot 6)
        +-- FRAME G 4 KiB at 0x8000 (slot 7), mapped in entry 3 of S's page table
        +-- RAM D 4 KiB at 0x9000 (slot 10)
        other RAM S (root 3) +-- VNODE_PT (slot 8), FRAME H (slot 9): never touched
    """

    def __init__(self):
        from kernel.caps import CapType as T, Op, Rights as R, caddr, root_caddr
        self.world = world = World()
        cs, ram = world.cspace, world.ram.obj
        rw = R.READ | R.WRITE
        self.copies = [copy_into(ram, R.ALL, cs, root_caddr(2)),
                       copy_into(ram, rw, cs, caddr(0, 0))]
        self.c = derived(ram, T.RAM, 0, 0x4000, R.ALL, caddr(0, 1), caddr(0, 2), cspace_of=cs)
        self.f1 = derived(self.c, T.FRAME, 0, 0x1000, R.ALL, caddr(0, 3), cspace_of=cs)
        self.f2 = derived(self.c, T.FRAME, 0x2000, 0x2000, R.ALL, caddr(0, 4), cspace_of=cs)
        self.f2a = derived(self.f2, T.FRAME, 0, 0x1000, R.ALL, caddr(0, 5), cspace_of=cs)
        from kernel.caps import mdb
        self.k = derived(self.c, T.CNODE, 0x1000, 0x400, R.ALL, caddr(0, 6), cspace_of=cs)
        mdb.place_cap(self.f1, R.ALL, 0, self.k, 0)
        self.copies.append(mdb.place_cap(ram, R.ALL, 0, self.k, 1))
        self.g = derived(ram, T.FRAME, 0x8000, 0x1000, R.ALL, caddr(0, 7), cspace_of=cs)
        self.d = derived(ram, T.RAM, 0x9000, 0x1000, R.ALL, caddr(0, 10), cspace_of=cs)
        self.s = world.create(3, T.RAM, OTHER_BASE, 16).obj
        self.pt = derived(self.s, T.VNODE_PT, 0, 0x1000, R.ALL, caddr(0, 8), cspace_of=cs)
        self.h = derived(self.s, T.FRAME, 0x1000, 0x1000, R.ALL, caddr(0, 9), cspace_of=cs)
        if world.invoke(Op.MAP, caddr(0, 8), 3, caddr(0, 7), rw, 0) != 0:
            fail("MAP of a frame into a page table was refused (the tree's rule): cannot test")

    def names(self):
        return {id(self.c): "the 16 KiB RAM made from it (a child)",
                id(self.f1): "the FRAME at 0x0 (a grandchild)",
                id(self.f2): "the 8 KiB FRAME at 0x2000 (a grandchild)",
                id(self.f2a): "the FRAME at 0x2000 inside the 8 KiB one (a great-grandchild)",
                id(self.k): "the CNODE made from the 16 KiB RAM (a grandchild)",
                id(self.g): "the FRAME at 0x8000 (a child)",
                id(self.d): "the 4 KiB RAM at 0x9000 (a child)"}


def revoke_in(tree, address, what, want="accepted"):
    """REVOKE through `address` (`what` it is), with the tree's check_revoke (test 6
    judges the student's)."""
    from kernel.caps import Op, rules
    rules.check_revoke = lambda cap: None
    with answering(f"REVOKE through {what}", want):
        return tree.world.invoke(Op.REVOKE, address)


@test(points=10)
def revoke_deletes_every_copy_and_every_descendant():
    """REVOKE leaves the invoked capability alone: every other copy, every descendant at any depth and their copies and mappings go; nothing else does."""
    from kernel.caps import caddr, root_caddr
    tree = Tree()
    world, names = tree.world, tree.names()
    ram = world.ram
    result = revoke_in(tree, root_caddr(1), "the RAM capability")
    if result != 0:
        fail(f"REVOKE through the RAM capability was {answer(result)}")
    if not ram.live or world.cap(root_caddr(1)) is not ram:
        fail("REVOKE deleted the capability it was invoked through: that one stays")
    for copy, where in zip(tree.copies, ("root slot 2", "slot 0 of the CNode in root slot 0",
                                         "a CNode that was itself revoked")):
        if copy.live:
            fail(f"after REVOKE, the copy of the RAM in {where} is still there: revoke "
                 f"deletes every other copy")
    for obj in (tree.c, tree.f1, tree.f2, tree.f2a, tree.k, tree.g, tree.d):
        if obj.live or any(cap.live for cap in obj.caps):
            fail(f"after REVOKE of the RAM, {names[id(obj)]} is still alive: revoke deletes "
                 f"every descendant, at any depth, with all its copies")
    if ram.obj.children:
        fail("after REVOKE, the RAM still has children in the derivation tree")
    if tree.pt.entries or world.memory.read_u64(tree.pt.base + 3 * 8):
        fail("after REVOKE, entry 3 of the page table still maps the revoked FRAME at 0x8000")
    for obj, what in ((tree.s, "the other RAM"), (tree.pt, "the other RAM's page table"),
                      (tree.h, "the other RAM's frame")):
        if not obj.live or not obj.caps:
            fail(f"REVOKE of the RAM deleted {what}, which does not derive from it")
    for slot in list(range(0, 8)) + [10]:
        if world.cap(caddr(0, slot)) is not None:
            fail(f"after REVOKE, slot {slot} of the CNode in root slot 0 is not empty")

    middle = Tree()
    result = revoke_in(middle, caddr(0, 1), "the 16 KiB RAM (a child)")
    if result != 0:
        fail(f"REVOKE through the 16 KiB RAM (a child) was {answer(result)}")
    gone = (middle.f1, middle.f2, middle.f2a, middle.k)
    stays = (middle.c, middle.g, middle.d, middle.world.ram.obj)
    for obj in gone:
        if obj.live:
            fail(f"after REVOKE of the 16 KiB RAM, {middle.names()[id(obj)]} is still alive")
    if middle.c.caps != [middle.world.cap(caddr(0, 1))]:
        fail("after REVOKE of the 16 KiB RAM, its copy in slot 2 is still there")
    for obj in stays:
        if not obj.live or not obj.caps:
            fail("REVOKE of the 16 KiB RAM deleted something above or beside it")
    if not middle.pt.entries:
        fail("REVOKE of the 16 KiB RAM unmapped a frame that is not below it")
    second = Tree()
    invoked = second.copies[0]
    result = revoke_in(second, root_caddr(2), "the RAM's second copy (root slot 2)")
    if result != 0:
        fail(f"REVOKE through the RAM's second copy (root slot 2) was {answer(result)}")
    if not invoked.live:
        fail("REVOKE through the RAM's second copy (root slot 2) deleted that copy: the "
             "invoked copy stays, wherever it is among the object's copies")
    if second.world.ram.live:
        fail("after REVOKE through the RAM's second copy (root slot 2), its first copy (root "
             "slot 1) is still there: revoke deletes every other copy, the first one too")
    revoke_flushes_what_another_copy_mapped()


def revoke_flushes_what_another_copy_mapped():
    """REVOKE through a FRAME whose other copy is mapped in an address space: the
    flush of that page comes back (else the TLB keeps the revoked page)."""
    from kernel.caps import CapType as T, Op, Rights as R, caddr, root_caddr, rules
    world = World()
    tables = [world.create(2 + level, vnode, OTHER_BASE + level * 0x1000, 12)
              for level, vnode in enumerate((T.VNODE_PML4, T.VNODE_PDPT, T.VNODE_PD, T.VNODE_PT))]
    frame = derived(world.ram.obj, T.FRAME, 0, 0x1000, R.ALL, caddr(0, 0), caddr(0, 1),
                    cspace_of=world.cspace)
    rw = R.READ | R.WRITE
    for level, entry, src in ((0, 1, root_caddr(3)), (1, 0, root_caddr(4)),
                              (2, 0, root_caddr(5)), (3, 5, caddr(0, 1))):
        if world.invoke(Op.MAP, root_caddr(2 + level), entry, src, rw, 0) != 0:
            fail("MAP into a page table was refused (the tree's rule): cannot test")
    page = (1 << 39) | (5 << 12)
    rules.check_revoke = lambda cap: None           # test 6 judges the student's
    with answering("REVOKE through a FRAME whose other copy is mapped", "accepted"):
        result, flushes = world.system.invoke(world.cspace, Op.REVOKE, [caddr(0, 0)])
    if result != 0:
        fail(f"REVOKE through a FRAME whose other copy is mapped was {answer(result)}")
    if frame.caps[1:] or tables[3].obj.entries:
        fail("after REVOKE through a FRAME, its other copy or that copy's mapping is still there")
    pml4 = tables[0].obj.base
    if not any(flush.address_space == pml4 and flush.address in (page, None)
               for flush in flushes):
        fail(f"REVOKE through a FRAME unmapped its other copy at {page:#x}, but returned no "
             f"TLB flush of it ({len(flushes)} flushes): return the flushes of every deletion, "
             f"the other copies' too, or the TLB keeps the revoked page")


@test(points=5)
def a_refused_revoke_changes_nothing():
    """REVOKE that would delete the copy holding a lock is refused with LOCKED before anything is deleted: a descendant's copy, or a copy of other memory inside a CNode the revoke deletes."""
    from kernel.caps import CapType as T, Op, Rights as R, caddr, mdb
    tree = Tree()
    if tree.world.invoke(Op.LOCK, caddr(0, 10)) != 0:
        fail("LOCK of a RAM without descendants was refused (the tree's rule): cannot test")
    refused_over_a_lock(tree, "the 4 KiB RAM at 0x9000, a descendant",
                        "every copy of every descendant")
    inside = Tree()
    other = inside.world.create(4, T.RAM, OTHER_BASE + 0x1_0000, 16).obj
    holder = mdb.place_cap(other, R.ALL, 0, inside.k, 2)
    other.locked_by = holder            # what LOCK through it does (system.lock)
    refused_over_a_lock(inside, "a copy of other RAM in slot 2 of the CNODE made from the "
                        "16 KiB RAM", "what goes with a CNode it deletes too: "
                        "mdb.doomed(every capability you will delete)")


def refused_over_a_lock(tree, holder, must_see):
    """REVOKE of the tree's RAM over a copy that holds a lock: LOCKED, table unchanged."""
    from kernel.caps import ErrorCode as E, root_caddr
    world = tree.world
    before = world.table()
    result = revoke_in(tree, root_caddr(1), f"the RAM, over a lock holder ({holder})",
                       "refused with LOCKED")
    if result >= 0:
        fail(f"REVOKE deleted a copy that holds a lock ({holder}): it must be refused with "
             f"LOCKED (rules.check_lock_holders_stay, which must see {must_see})")
    if result != -E.LOCKED:
        fail(f"REVOKE over a lock holder ({holder}) was {answer(result)}, not LOCKED")
    if world.table() != before:
        fail("REVOKE was refused with LOCKED, yet the capability table changed: check every "
             "capability it would delete before deleting any")


# -- 8. random sequences against the oracle ---------------------------------------------

SEEDS = (2, 3, 5)
STEPS = 250


def live_caps(world):
    """(address, capability) of every filled slot the sequences use."""
    from kernel.caps import caddr, root_caddr
    found = [(root_caddr(1), world.cap(root_caddr(1)))]
    found += [(caddr(0, i), world.cap(caddr(0, i))) for i in range(256)]
    return [(address, cap) for address, cap in found if cap is not None]


def free_run(world, rng, count):
    """A slot of the L2 CNode with `count` free slots from it, or None."""
    from kernel.caps import caddr
    start = rng.randrange(0, 256 - count + 1)
    if all(world.cap(caddr(0, start + i)) is None for i in range(count)):
        return caddr(0, start)
    return None


def describe(cap) -> str:
    rights = f"(rights {int(cap.rights):#x})"
    if not cap.obj.size:
        parent = cap.obj.parent
        of = f" of the {parent.type.name} at {parent.base:#x}" if parent is not None else ""
        return f"the {cap.type.name}{of} {rights}"
    return f"the {cap.type.name} of {cap.obj.size:#x} bytes at {cap.base:#x} {rights}"


def random_retype(world, rng, where):
    """A retype that is mostly sensible (an allowed type, a size that fits, an
    aligned offset), so that the table grows and ranges collide; sometimes not."""
    from kernel.caps import CapType as T, Op
    caps = [(a, c) for a, c in live_caps(world) if c.type in (T.RAM, T.FRAME, T.DISPATCHER)
            or rng.random() < 0.1]
    if not caps:
        return None
    address, src = rng.choice(caps)
    allowed = sorted(allowed_table().get(src.type, ()))
    if allowed and rng.random() < 0.75:
        new_type = rng.choice(allowed)
    else:
        new_type = rng.choice((T.RAM, T.FRAME, T.CNODE, T.VNODE_PT, T.DISPATCHER, T.ENDPOINT))
    low, high = size_range(new_type)
    fits = max(low, min(high, src.obj.size_bits))
    size_bits = rng.randint(low, fits) if rng.random() < 0.85 else rng.choice((low - 1, high + 1))
    size_bits = max(size_bits, 0)
    size = 1 << size_bits if size_bits else 0
    if size and rng.random() < 0.8:
        offset = rng.randrange(0, max(src.obj.size, size), size)
    elif size:
        offset = rng.randrange(0, src.obj.size + 0x1000, 0x400)
    else:
        offset = 0 if rng.random() < 0.8 else 0x400
    count = rng.choice((1, 1, 1, 2, 3))
    dest = free_run(world, rng, count)
    if dest is None:
        return None
    expected = expected_retype(src, new_type, size_bits, offset, count)
    text = retype_text(describe(src), offset, new_type, size_bits, count)
    with answering(f"{where}: {text}", rules_say(expected)):
        result = world.invoke(Op.RETYPE, address, offset, new_type, size_bits, count, dest)
    return text, result, expected


def random_mint(world, rng, where):
    from kernel.caps import ErrorCode as E, Op, Rights as R
    if not live_caps(world):
        return None
    address, src = rng.choice(live_caps(world))
    rights = (rng.randrange(0, 16) if rng.random() < 0.3     # WRITE mostly kept: retypes go on
              else int(src.rights) & ~rng.choice((0, 1, 4, 8)))
    dest = free_run(world, rng, 1)
    if dest is None:
        return None
    expected = {-E.NO_RIGHTS} if rights & ~src.rights else {0}
    text = f"MINT of {describe(src)} with rights {rights:#x}"
    with answering(f"{where}: {text}", rules_say(expected)):
        result = world.invoke(Op.MINT, address, dest, rights, 0)
    return text, result, expected


def random_revoke(world, rng, where):
    from kernel.caps import ErrorCode as E, Op, mdb
    from kernel.caps import root_caddr
    caps = [(a, c) for a, c in live_caps(world)       # the RAM itself stays: the sequence
            if a == root_caddr(1) or c.obj is not world.ram.obj]  # goes on with it
    if not caps:
        return None
    address, cap = rng.choice(caps)
    lacks = any(other.rights & ~cap.rights for other in cap.obj.caps)
    expected = {-E.NO_RIGHTS} if lacks else {0}
    doomed = [other for other in cap.obj.caps if other is not cap]
    doomed += [c for below in mdb.descendants(cap.obj) for c in below.caps]
    text = f"REVOKE through {describe(cap)}"
    with answering(f"{where}: {text}", rules_say(expected)):
        result = world.invoke(Op.REVOKE, address)
    if result == 0 and not lacks:
        left = [c for c in doomed if c.live]
        if left:
            kept = ("another copy of it" if left[0].obj is cap.obj
                    else f"{describe(left[0])}, a descendant of it,")
            fail(f"{where}: {text} left {kept} alive: a revoke deletes every other copy and "
                 f"every descendant")
        if not cap.live:      # (no capability here sits in a CNode made from its object)
            fail(f"{where}: {text} deleted that capability too: the one a revoke is invoked "
                 f"through stays")
    return text, result, expected


def random_step(world, rng, where):
    """One random operation: (what, its answer, the answers the rules allow) or None."""
    from kernel.caps import Op, root_caddr
    kind = rng.choices(("retype", "copy", "mint", "delete", "revoke"), (55, 10, 10, 12, 5))[0]
    if kind == "retype":
        return random_retype(world, rng, where)
    if kind == "mint":
        return random_mint(world, rng, where)
    if kind == "revoke":
        return random_revoke(world, rng, where)
    caps = [(a, c) for a, c in live_caps(world) if a != root_caddr(1)]
    if not caps:
        return None
    address, cap = rng.choice(caps)
    if kind == "delete":
        text = f"DELETE of {describe(cap)}"
        with answering(f"{where}: {text}", "accepted"):
            return text, world.invoke(Op.DELETE, address), {0}
    dest = free_run(world, rng, 1)
    if dest is None:
        return None
    text = f"COPY of {describe(cap)}"
    with answering(f"{where}: {text}", "accepted"):
        return text, world.invoke(Op.COPY, address, dest), {0}


def unsound(world) -> str | None:
    """What is wrong with the table, if anything: objects outside their parent,
    misaligned, or overlapping without one deriving from the other."""
    objects = [obj for obj in world.system.objects() if obj.owns_memory]
    for obj in objects:
        if not obj.size:
            return f"the {obj.type.name} at {obj.base:#x} is 0 bytes"
        if obj.base % obj.size:
            return f"the {obj.type.name} at {obj.base:#x} is not aligned to its size {obj.size:#x}"
        parent = obj.parent
        if parent is not None and not (parent.base <= obj.base and obj.end <= parent.end):
            return (f"the {obj.type.name} at {obj.base:#x}..{obj.end:#x} lies outside the "
                    f"{parent.type.name} it was retyped from ({parent.base:#x}..{parent.end:#x})")
        used = sum(child.size for child in obj.children if child.owns_memory)
        if used > obj.size:
            return (f"the {obj.type.name} at {obj.base:#x} has {used:#x} bytes of children in "
                    f"{obj.size:#x} bytes")
    for i, one in enumerate(objects):
        for other in objects[i + 1:]:
            if (one.base < other.end and other.base < one.end
                    and not (one.derives_from(other) or other.derives_from(one))):
                return (f"the {one.type.name} at {one.base:#x}..{one.end:#x} and the "
                        f"{other.type.name} at {other.base:#x}..{other.end:#x} overlap, and "
                        f"neither was made from the other")
    return None


@test(points=10)
def random_sequences_agree_with_the_rules():
    """250 random retypes, copies, mints, deletes and revokes (fixed seeds): every answer as the rules say, and memory stays sound."""
    for seed in SEEDS:
        rng = random.Random(seed)
        world = World()
        for step in range(1, STEPS + 1):
            where = f"seed {seed}, step {step}"
            done = random_step(world, rng, where)
            if done is None:
                continue
            what, result, expected = done
            if result not in expected:
                fail(f"{where}: {what} was {answer(result)}; the rules say it must be "
                     f"{rules_say(expected)}")
            problem = unsound(world)
            if problem:
                fail(f"{where}: after {what}, {problem}")


# -- 9. guest programs, through system calls --------------------------------------------

# What caps_lab.S asks, in order, and what the kernel must answer (0 or -code).
GUEST_STEPS = [
    ("retype RAM: page directory at 0x0", 0), ("retype RAM: page table at 0x1000", 0),
    ("retype RAM: frame at 0x2000", 0), ("map PDPT[1] -> page directory", 0),
    ("map PD[0] -> page table", 0), ("map PT[2] -> frame at 0x2000", 0),
    ("retype RAM: 16K pool at 0x4000", 0), ("retype pool: two 4K frames at 0x0", 0),
    ("retype pool: 4K frame at 0x1000 again", -111),
    ("retype pool: 16K frame around both", -111),
    ("retype pool: 8K frame at 0x1000", -109),
    ("retype pool: 4K frame at 0x4000 (its end)", -110),
    ("retype pool: two 4K frames at 0x3000", -110),
    ("retype pool: 4K frame at 0x3000 (its last page)", 0),
    ("retype pool: 8K frame at 0x2000 (over its last page)", -111),
    ("retype frame: back into RAM", -107),
    ("retype RAM: 4K frame at 0x5000 (inside the pool)", -111),
    ("mint frame: READ only", 0), ("mint the READ-only copy: READ and WRITE", -112),
    ("map PT[0] -> pool frame at 0x0", 0), ("map PT[1] -> pool frame at 0x3000", 0),
    ("copy pool", 0), ("copy pool frame at 0x1000", 0), ("revoke pool", 0),
    ("retype pool: one 16K frame", 0),
]


def record_invocations() -> list:
    """Every capability invocation the guests make, with the kernel's answer:
    (core, operation, answer) in order (the hypercall layer, wrapped)."""
    from unicorn import x86_const as x86
    from cpudriver.layout import MAX_INVOCATION
    from kernel.capservice import CapabilityService
    calls = []
    serve = CapabilityService.__call__

    def recorded(self, core):
        operation = core.regs.read(x86.UC_X86_REG_RAX)
        serve(self, core)
        if operation > MAX_INVOCATION:
            return                    # the port's other calls: LMP, channels
        value = core.regs.read(x86.UC_X86_REG_RAX)
        calls.append((core.id, operation, value - (1 << 64) if value >> 63 else value))
    CapabilityService.__call__ = recorded
    return calls


def user_fault_at(run, core, label) -> bool:
    """Whether the CPU driver reported a user page fault at `label` of the core's program."""
    module = run.system.module_for_core(core)
    address = module.program.symbols[label]
    return any(c == core and "user fault: #PF" in line and f"rip {address:#x}" in line
               for c, line in run.console)


def stopped_because(run) -> str:
    """Why the guest made no more invocations, as `: reason` ('' if nothing
    went wrong that the machine saw): with the skeleton, or a rule that raises,
    the core stops at the kernel's own first retype, before the program runs."""
    if not run.result.clean:
        return f": {run.why_unfinished()}"
    return f": {run.system.failures()}" if run.system.failures() else ""


def expect_only_the_fault(run) -> None:
    """The run ended cleanly, and its one program failed: killed for the fault it
    makes on purpose at its end (user_fault_at says where)."""
    if not run.result.clean:
        fail(f"the run did not end cleanly: {run.why_unfinished()}", run)
    if run.system.failed_programs(0) != 1:
        fail(f"{run.system.failed_programs(0)} programs failed on core 0; only the one "
             f"killed at the end, on purpose, should", run)


@test(points=10)
def guest_retypes_maps_and_revokes_through_system_calls():
    """caps_lab.S (every quantum) and the tree's caps.lst: each invocation answered as the rules say, the capabilities and page table left right, a fault where the revoked frame was."""
    from kernel.caps import CapType as T, root_caddr
    from kernel.capservice import CAPS_BASE, RAM_OFFSET
    calls = record_invocations()
    for quantum in sorted(QUANTA, reverse=True):     # a failure replays at the fastest
        calls.clear()
        run = boot("images/caps_lab.lst", cores=1, quantum=quantum, max_cycles=2_000_000)
        answers = [value for _, _, value in calls]
        for i, (what, expected) in enumerate(GUEST_STEPS):
            if i >= len(answers):
                fail(f"caps_lab.S stopped after {i} invocations, before '{what}'"
                     f"{stopped_because(run)}", run)
            if answers[i] != expected:
                fail(f"caps_lab.S, invocation {i + 1} ('{what}') was {answer(answers[i])}, "
                     f"expected {answer(expected)}", run)
        expect_only_the_fault(run)
        service = run.system.machine._hypercall_handler
        cspace, system = service.cspaces[(0, 0)], service.systems[0]
        if not user_fault_at(run, 0, "touch_revoked"):
            pt = cspace.slot(root_caddr(3)).cap
            unmapped = pt is not None and not system.memory.read_u64(pt.obj.base)
            fail("caps_lab.S touched the pool's frame after REVOKE of the pool without a page "
                 "fault: " + ("its page-table entry is gone, but the TLB still held it (does "
                              "revoke return the flushes its deletions produced?)" if unmapped
                              else "the revoke left it mapped"),
                 run, stop="touch_revoked core 0")
        ram = CAPS_BASE + RAM_OFFSET
        wanted = {2: (T.VNODE_PD, ram, 0x1000), 3: (T.VNODE_PT, ram + 0x1000, 0x1000),
                  4: (T.FRAME, ram + 0x2000, 0x1000), 5: (T.RAM, ram + 0x4000, 0x4000),
                  13: (T.FRAME, ram + 0x4000, 0x4000)}
        for slot in range(2, 15):
            cap = cspace.slot(root_caddr(slot)).cap
            got = None if cap is None else (cap.type, cap.base, cap.obj.size)
            if got != wanted.get(slot):
                fail(f"after caps_lab.S, root slot {slot} holds "
                     f"{'nothing' if got is None else describe(cap)}, expected "
                     f"{'nothing' if slot not in wanted else wanted[slot][0].name}", run)
        pt = cspace.slot(root_caddr(3)).cap.obj
        if sorted(pt.entries) != [2] or any(system.memory.read_u64(pt.base + 8 * e)
                                            for e in (0, 1)):
            fail(f"after caps_lab.S, its page table maps entries {sorted(pt.entries)}; only "
                 f"entry 2 (the frame it kept) should be left", run)
    calls.clear()
    run = boot("images/caps.lst", cores=1, max_cycles=2_000_000)
    expect_only_the_fault(run)
    if [value for _, _, value in calls[:4]] != [0, 0, 0, -111]:
        fail(f"caps.lst: the first four invocations were answered "
             f"{[value for _, _, value in calls[:4]]}, expected [0, 0, 0, -111]"
             f"{stopped_because(run) if len(calls) < 4 else ''}", run)
    if not user_fault_at(run, 0, "touch_again"):
        fail("caps.lst: no page fault at touch_again after the unmap", run,
             stop="touch_again core 0")


# The monitors' protocol is the tree's, swept by its own tests; here it only
# has to work on the student's rules, under two schedules (quantum 1 would
# take most of the grade's time).
MONITOR_QUANTA = (13, 10_000)


@test(points=5)
def monitors_retype_a_shared_region_by_agreement():
    """twophase.lst on amd-2x2 (quanta 13 and 10,000): region 0 becomes one frame on the asker's core and is retyped elsewhere on the others."""
    from kernel.caps import CapType as T
    from kernel.capservice import SHARED_REGION_BITS, region_base
    for quantum in MONITOR_QUANTA:
        run = boot("images/twophase.lst", topology="amd-2x2", quantum=quantum,
                   max_cycles=10**8)
        run.expect_clean()
        service = run.system.machine._hypercall_handler
        states = [[service.region_state(core, region) for core in range(4)]
                  for region in range(3)]
        wanted = [["retyped elsewhere"] * 3 + ["in use"], ["free", "free", "in use", "free"],
                  ["free"] * 4]
        for region in range(3):
            if states[region] != wanted[region]:
                fail(f"twophase.lst at quantum {quantum}: shared region {region} stands "
                     f"{states[region]} on cores 0..3, expected {wanted[region]}", run)
        made = service.regions[3][0].obj.children
        if [(o.type, o.base, o.size) for o in made] != [
                (T.FRAME, region_base(0), 1 << SHARED_REGION_BITS)]:
            fail(f"twophase.lst: region 0 on core 3 was retyped into "
                 f"{[(o.type.name, hex(o.base), o.size) for o in made]}, not one 64 KiB "
                 f"FRAME", run)
