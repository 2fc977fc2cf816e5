"""Page tables made of VNode capabilities: writing entries, and what to flush.

A VNode object is one 4 KiB page of guest physical memory holding 512
x86-64 entries, real ones: the cores' MMUs walk them. This module writes
and clears those entries and keeps, for each, a `Mapping` record tying it
to the capability it was made with, so that deleting that capability (or
revoking anything above it) can find and clear every entry it made.

Clearing an entry is not enough on x86: the TLB may still hold what it
mapped. Which virtual address that was cannot be read off the entry alone;
it depends on where the table hangs in each address space. So every removal
here returns `Flush` records, one per (address space, virtual address),
computed from the mapping records up to every PML4 the table is reachable
from. The CPU driver does `invlpg address` if that address space is loaded
on its core, reloads CR3 for `address=None` (a whole table went, or too
many pages to name), and nothing otherwise (a CR3 load flushes the rest).
Whether another core has the address space loaded is the shootdown
protocol's business, not this module's.
"""

from dataclasses import dataclass
from typing import NamedTuple

from kernel.caps.mdb import Capability, KernelObject, Mapping
from kernel.caps.types import ENTRIES_PER_VNODE, VNODE_SHIFT, CapType

FLUSH_LIMIT = 16         # more pages than this in one address space: reload CR3 instead
ENTRY_SIZE = 8


class Flush(NamedTuple):
    address_space: int          # physical address of its PML4: the CR3 value
    address: int | None         # virtual address to invlpg; None: reload CR3


def share_kernel_entries(memory, pml4: KernelObject, kernel_pml4: int, kernel_entries) -> None:
    """A new (zeroed) PML4 gets the kernel's entries, copied from the kernel's own PML4:
    the CPU driver must stay mapped in every address space it runs."""
    for entry in sorted(kernel_entries):
        value = memory.read_u64(kernel_pml4 + entry * ENTRY_SIZE)
        memory.write_u64(pml4.base + entry * ENTRY_SIZE, value)


def install(memory, vnode: KernelObject, entry: int, cap: Capability, pte: int) -> None:
    """Write the entry and remember which capability made it."""
    mapping = Mapping(vnode, entry, cap, pte)
    vnode.entries[entry] = mapping
    cap.mappings.append(mapping)
    memory.write_u64(vnode.base + entry * ENTRY_SIZE, pte)


def remove(memory, mapping: Mapping) -> list[Flush]:
    """Clear one entry; the flushes it needs (computed while the tables still link)."""
    flushes = flushes_for(mapping.vnode, mapping.entry, leaf=mapping.cap.type == CapType.FRAME)
    memory.write_u64(mapping.vnode.base + mapping.entry * ENTRY_SIZE, 0)
    del mapping.vnode.entries[mapping.entry]
    mapping.cap.mappings.remove(mapping)
    return flushes


def clear(memory, vnode: KernelObject) -> list[Flush]:
    """A page table is going: clear what it maps. Nothing links to it any more
    (its capabilities' mappings went with them), so only a PML4 needs a flush:
    its address space itself is gone."""
    for mapping in list(vnode.entries.values()):
        remove(memory, mapping)
    if vnode.type == CapType.VNODE_PML4:
        return [Flush(vnode.base, None)]
    return []


def flushes_for(vnode: KernelObject, entry: int, leaf: bool) -> list[Flush]:
    """What to flush when entry `entry` of `vnode` changes, in every address space."""
    shift = VNODE_SHIFT[vnode.type]
    flushes = []
    for pml4, prefixes in address_spaces(vnode, {}).items():
        if not leaf or prefixes is None:
            flushes.append(Flush(pml4.base, None))      # a whole table: too much for invlpg
        else:
            flushes.extend(Flush(pml4.base, canonical(prefix | entry << shift))
                           for prefix in sorted(prefixes))
    return flushes


def address_spaces(vnode: KernelObject, memo: dict) -> dict:
    """{PML4 object: the virtual addresses where `vnode`'s range starts there}.

    A set of addresses becomes None when it grows past FLUSH_LIMIT. `memo`
    keeps one walk linear however many times tables are shared.
    """
    if vnode.type == CapType.VNODE_PML4:
        return {vnode: {0}}
    if "boot_address_space" in vnode.info:        # a table the CPU driver built (adopted)
        pml4, prefix = vnode.info["boot_address_space"]
        return {BootPml4(pml4): {prefix}}
    if id(vnode) in memo:
        return memo[id(vnode)]
    found = {}
    for cap in vnode.caps:
        for mapping in cap.mappings:
            shift = VNODE_SHIFT[mapping.vnode.type]
            for pml4, prefixes in address_spaces(mapping.vnode, memo).items():
                found[pml4] = _merge(found.get(pml4, set()), prefixes, mapping.entry << shift)
    memo[id(vnode)] = found
    return found


def _merge(known, prefixes, offset):
    if known is None or prefixes is None:
        return None
    merged = known | {prefix | offset for prefix in prefixes}
    return merged if len(merged) <= FLUSH_LIMIT else None


def canonical(address: int) -> int:
    """Sign-extend bit 47, as x86-64 virtual addresses must be."""
    return address | 0xFFFF_0000_0000_0000 if address & (1 << 47) else address


@dataclass(frozen=True)
class BootPml4:
    """A PML4 the CPU driver built at boot, known only by its address."""
    base: int


def present_entries(memory, vnode: KernelObject) -> frozenset:
    """The entries of a table that are in use (present) right now."""
    return frozenset(i for i, pte in enumerate(read_entries(memory, vnode)) if pte & 1)


def read_entries(memory, vnode: KernelObject) -> list[int]:
    """The 512 entries as the MMU sees them (for tests and the debugger)."""
    return [memory.read_u64(vnode.base + i * ENTRY_SIZE) for i in range(ENTRIES_PER_VNODE)]

