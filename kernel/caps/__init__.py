"""Capabilities: typed physical memory in the Barrelfish style.

Every kernel object (RAM, a Frame, a CNode, a page table, a dispatcher, an
endpoint) is a capability's, and user code holds capabilities only as slot
numbers in its CSpace: it can use them, learn what they are (identify), but
never forge, read or alter one. Read the files in this order:

    types.py    the vocabulary: types, rights, object sizes
    errors.py   why an operation is refused: stable codes
    rules.py    THE rules (what retypes into what, rights, overlap, mapping)
    mdb.py      objects, capabilities, the derivation tree
    cspace.py   how a slot number finds a capability
    vspace.py   page tables: writing entries, what to flush
    system.py   the operations, each: resolve, check the rules, act
    invoke.py   the entry point from user code, and its numbers

The hypercall layer needs only what is exported here: `CapabilitySystem`
(one per core), `invoke` (or `CapabilitySystem.invoke`), `Op` and `Field`,
`CapError` and `ErrorCode`, and `Flush`; `defines()` gives the numbers as
assembler constants for the guest library. docs/capabilities.md has the rules
as tables (generated from rules.py by `python3 -m kernel.caps.doc`).

Memory every core holds a capability to (kernel/capservice.py's shared
regions) is retyped by agreement between the monitors: LOCK and UNLOCK are
each core's votes, and `CapabilitySystem.lock_state` says where a core's
copy stands. Capabilities move between cores through the monitors, which
alone hold the KERNEL capability: TAKE and GIVE move one between CSpaces of
a core, and IMPORT makes a foreign copy of what another core's monitor
described (docs/capabilities.md, "Moving a capability to another core").
"""

from kernel.caps.cspace import CADDR_ROOT, CSpace, caddr, root_caddr
from kernel.caps.errors import CapError, ErrorCode
from kernel.caps.invoke import Field, Op, defines, invoke
from kernel.caps.system import CapabilitySystem
from kernel.caps.types import CapType, Rights
from kernel.caps.vspace import Flush

__all__ = ["CADDR_ROOT", "CSpace", "caddr", "root_caddr", "CapError", "ErrorCode", "Field", "Op",
           "defines", "invoke", "CapabilitySystem", "CapType", "Rights", "Flush"]
