"""Capability invocations: the numbers user code uses, and the one entry point.

The CPU driver hands every capability invocation from user mode to
`invoke(system, cspace, operation, args)`: the operation number and the
argument registers exactly as user code left them. Everything here is
hostile input: an argument is any 64-bit value, and the operation number
may be anything. The answer is `(result, flushes)`: result >= 0 on success
(0, or what IDENTIFY asked for), `-code` for a CapError (errors.py); flushes
are the TLB invalidations the CPU driver must do before returning to user
mode (vspace.Flush).

At most six arguments, so that with the operation number in rax they fit
the registers a system call has (rdi, rsi, rdx, r10, r8, r9). Extra
arguments are ignored: the CPU driver may pass all six registers always.
"""

from dataclasses import dataclass
from enum import IntEnum

from kernel.caps.errors import CapError, ErrorCode

U64 = 1 << 64


class Op(IntEnum):
    """Invocation numbers (ABI: userland/lib uses the same)."""
    RETYPE = 1
    COPY = 2
    MINT = 3
    DELETE = 4
    REVOKE = 5
    IDENTIFY = 6
    MAP = 7
    UNMAP = 8
    LOCK = 9
    UNLOCK = 10
    TAKE = 11
    GIVE = 12
    IMPORT = 13


class Field(IntEnum):
    """What IDENTIFY returns: one word per call."""
    TYPE = 0
    BASE = 1
    SIZE_BITS = 2
    RIGHTS = 3
    BADGE = 4


@dataclass(frozen=True)
class Operation:
    method: str                 # the CapabilitySystem method that does it (rules.NEEDS and
                                # rules.RULES name the operation: Op's name, in lower case)
    args: tuple[str, ...]
    effect: str                 # for docs/capabilities.md


OPERATIONS = {
    Op.RETYPE: Operation("retype", ("src", "offset", "type", "size_bits", "count", "dest"),
                         "count new objects of 2**size_bits bytes from src's memory at offset, "
                         "into slots dest, dest+1, ...; each is zeroed"),
    Op.COPY: Operation("copy", ("src", "dest"), "a copy: same object, rights and badge"),
    Op.MINT: Operation("mint", ("src", "dest", "rights", "badge"),
                       "a copy with the given rights (a subset) and badge (0: keep)"),
    Op.DELETE: Operation("delete", ("cap",),
                         "empty the slot, unmap what this copy mapped; the object goes with "
                         "its last copy once it has no descendants"),
    Op.REVOKE: Operation("revoke", ("cap",),
                         "delete every other copy and every descendant (and their mappings); "
                         "the invoked copy stays"),
    Op.IDENTIFY: Operation("identify", ("cap", "field"), "one field of the capability (Field)"),
    Op.MAP: Operation("map", ("vnode", "entry", "src", "rights", "offset"),
                      "entry of the page table maps src: a Frame page at offset, or a table"),
    Op.UNMAP: Operation("unmap", ("vnode", "entry"), "clear the entry; returns the flushes"),
    Op.LOCK: Operation("lock", ("cap",),
                       "lock the object through this copy: this core's yes vote in a "
                       "two-phase commit"),
    Op.UNLOCK: Operation("unlock", ("cap", "retyped_elsewhere"),
                         "release the lock; if retyped_elsewhere != 0, the object is another "
                         "core's from now on: never retyped or locked here again"),
    Op.TAKE: Operation("take", ("kernel", "dispatcher", "src", "dest"),
                       "move the capability in slot src of this core's dispatcher number "
                       "dispatcher into the caller's slot dest: src is empty after"),
    Op.GIVE: Operation("give_away", ("kernel", "src", "dispatcher", "dest"),
                       "move the caller's capability in slot src into slot dest of this "
                       "core's dispatcher number dispatcher: src is empty after"),
    Op.IMPORT: Operation("import_foreign",
                         ("kernel", "type", "base", "size_bits", "rights", "dest"),
                         "a foreign copy in slot dest: a capability to memory another core "
                         "owns, with these rights; never retyped or locked here"),
}


def invoke(system, cspace, operation: int, args: list[int]) -> tuple[int, list]:
    """Run one invocation from user code: (result or -code, flushes)."""
    try:
        op = _operation(operation)
        spec = OPERATIONS[op]
        values = _arguments(args, len(spec.args))
        if op == Op.IDENTIFY:
            return _identify(system, cspace, *values), []
        return 0, getattr(system, spec.method)(cspace, *values)
    except CapError as error:
        return -error.code, []


def _operation(operation: int) -> Op:
    if not isinstance(operation, int) or operation not in Op._value2member_map_:
        raise CapError(ErrorCode.INVALID_OPERATION, f"no operation {operation!r}")
    return Op(operation)


def _arguments(args: list[int], needed: int) -> list[int]:
    if len(args) < needed:
        raise CapError(ErrorCode.INVALID_ARGUMENT, f"{needed} arguments needed, {len(args)} given")
    values = list(args[:needed])
    for value in values:
        if not isinstance(value, int) or not 0 <= value < U64:
            raise CapError(ErrorCode.INVALID_ARGUMENT, f"{value!r} is not a 64-bit value")
    return values


def _identify(system, cspace, address: int, field: int) -> int:
    if field not in Field._value2member_map_:
        raise CapError(ErrorCode.INVALID_ARGUMENT, f"no field {field}")
    facts = system.identify(cspace, address)
    return int(facts[Field(field).name.lower()])


def defines() -> dict[str, int]:
    """The numbers as assembler constants, for the guest library: CAP_MAP,
    CAPERR_OVERLAP, CAPTYPE_FRAME, CAPRIGHT_WRITE, CAPFIELD_BASE, CADDR_ROOT."""
    from kernel.caps.cspace import CADDR_ROOT, L2_BITS
    from kernel.caps.types import CapType, Rights
    found = {"CADDR_ROOT": CADDR_ROOT, "CADDR_L2_BITS": L2_BITS}
    for prefix, enum in (("CAP_", Op), ("CAPERR_", ErrorCode), ("CAPTYPE_", CapType),
                         ("CAPFIELD_", Field)):
        found |= {prefix + member.name: int(member) for member in enum}
    found |= {"CAPRIGHT_" + right.name: int(right) for right in Rights}
    found["CAPRIGHT_ALL"] = int(Rights.ALL)
    return found
