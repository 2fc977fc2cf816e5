"""Why a capability operation was refused: stable error codes.

Every refusal is a `CapError(code, message)` and nothing else: bad input
from user code (a slot out of range, a wrong type, a size that makes no
sense) must never surface as any other exception. The codes are ABI: the
CPU driver returns `-code` to user code, and the guest library names the
same numbers. They start at 100 so that they never collide with the
errno-style codes the CPU driver returns for its own system calls
(EINVAL = 22, ENOSYS = 38, ...).
"""

from enum import IntEnum


class ErrorCode(IntEnum):
    INVALID_OPERATION = 100
    INVALID_ARGUMENT = 101
    INVALID_ADDRESS = 102
    NOT_A_CNODE = 103
    SLOT_EMPTY = 104
    SLOT_IN_USE = 105
    WRONG_TYPE = 106
    RETYPE_NOT_ALLOWED = 107
    INVALID_SIZE = 108
    MISALIGNED = 109
    OUT_OF_RANGE = 110
    OVERLAP = 111
    NO_RIGHTS = 112
    BADGE = 113
    INVALID_ENTRY = 114
    ENTRY_IN_USE = 115
    ENTRY_EMPTY = 116
    NOT_MAPPABLE = 117
    CNODE_CYCLE = 118
    LOCKED = 119
    HAS_DESCENDANTS = 120
    RETYPED_ELSEWHERE = 121
    NOT_LOCKED = 122
    FOREIGN = 123
    MAPPED = 124


MEANINGS = {
    ErrorCode.INVALID_OPERATION: "no such operation number",
    ErrorCode.INVALID_ARGUMENT: ("an argument is missing, is not a 64-bit value, or is not one "
                                 "the operation takes (rights bits, a field, a dispatcher)"),
    ErrorCode.INVALID_ADDRESS: "the capability address names no slot",
    ErrorCode.NOT_A_CNODE: "the address goes through a slot that holds no CNode",
    ErrorCode.SLOT_EMPTY: "the slot holds no capability",
    ErrorCode.SLOT_IN_USE: "a destination slot is not empty",
    ErrorCode.WRONG_TYPE: "the capability's type does not support this operation",
    ErrorCode.RETYPE_NOT_ALLOWED: "this type cannot be retyped into that one",
    ErrorCode.INVALID_SIZE: "a size or count this type cannot have",
    ErrorCode.MISALIGNED: "an object or page would not be aligned to its size",
    ErrorCode.OUT_OF_RANGE: "the new objects or the page do not fit inside the source",
    ErrorCode.OVERLAP: "the new objects overlap a live descendant of the source",
    ErrorCode.NO_RIGHTS: "the capability lacks a right the operation needs",
    ErrorCode.BADGE: "a badge on a non-endpoint, a second badge, or one too big",
    ErrorCode.INVALID_ENTRY: "no such page-table entry, or one the kernel keeps",
    ErrorCode.ENTRY_IN_USE: "the page-table entry already maps something",
    ErrorCode.ENTRY_EMPTY: "the page-table entry maps nothing",
    ErrorCode.NOT_MAPPABLE: "that capability cannot be mapped into that level",
    ErrorCode.CNODE_CYCLE: "a CNode would end up inside itself",
    ErrorCode.LOCKED: ("the object is locked: only the copy holding the lock may retype "
                      "or unlock it, nothing may revoke it, and that copy stays"),
    ErrorCode.HAS_DESCENDANTS: "the object has live descendants on this core: it is in use here",
    ErrorCode.RETYPED_ELSEWHERE: "the object was retyped on another core: never again here",
    ErrorCode.NOT_LOCKED: "the object is not locked",
    ErrorCode.FOREIGN: ("the object lives on another core (IMPORT made this copy): it is never "
                        "retyped or locked here"),
    ErrorCode.MAPPED: "the capability still maps pages: unmap them before it moves",
}


class CapError(Exception):
    """A capability operation refused, with a stable code and a message for people."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
