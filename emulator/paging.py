"""The x86-64 four-level page walk, done by the host.

The cores' own MMU is unicorn's (with a real, stale-able TLB). This module is
for the host when it must act like the hardware or look at a core's memory:
the trap path pushes an interrupt frame onto a virtual stack, the debugger
reads `x ADDR` as the selected core sees it. It always reads the page tables
afresh from RAM; it does not model the TLB. (The cost model's C pause hook
has its own copy of `translate`, for speed: emulator/_hitpath.c.)
"""

from dataclasses import dataclass

from emulator.memory import PhysicalMemory

PTE_PRESENT = 1 << 0
PTE_WRITABLE = 1 << 1
PTE_USER = 1 << 2
PTE_LARGE = 1 << 7            # in a PDPT or PD entry: a 1 GiB or 2 MiB page
PTE_NO_EXECUTE = 1 << 63
ADDRESS_MASK = 0x000F_FFFF_FFFF_F000

CR0_PG = 1 << 31


@dataclass
class PageFault(Exception):
    """The walk failed: what the silicon would report as #PF."""
    address: int
    present: bool     # the final entry was present (a protection fault)
    write: bool
    user: bool

    @property
    def error_code(self) -> int:
        """The #PF error code the hardware pushes for this fault."""
        return (1 if self.present else 0) | (2 if self.write else 0) | (4 if self.user else 0)

    def __str__(self) -> str:
        # Said in a reason when the host's own walk fails (lab 1's delivery
        # writing a frame to an unmapped stack, say).
        access = "write" if self.write else "read"
        why = "not allowed" if self.present else "not mapped"
        return f"a {'user' if self.user else 'kernel'} {access} of {self.address:#x}: {why}"


def translate(memory: PhysicalMemory, cr0: int, cr3: int, address: int,
              write: bool = False, user: bool = False) -> int:
    """Return the physical address for `address`, or raise PageFault."""
    if not cr0 & CR0_PG:
        return address
    table = cr3 & ADDRESS_MASK
    allowed_write, allowed_user = True, True
    for level, shift in enumerate((39, 30, 21, 12)):
        index = (address >> shift) & 0x1FF
        entry_address = table + index * 8
        if not memory.contains(entry_address, 8):
            raise PageFault(address, False, write, user)
        entry = memory.read_u64(entry_address)
        if not entry & PTE_PRESENT:
            raise PageFault(address, False, write, user)
        allowed_write &= bool(entry & PTE_WRITABLE)
        allowed_user &= bool(entry & PTE_USER)
        is_leaf = shift == 12 or (level in (1, 2) and entry & PTE_LARGE)
        if is_leaf:
            if (write and not allowed_write) or (user and not allowed_user):
                raise PageFault(address, True, write, user)
            page_mask = (1 << shift) - 1
            return (entry & ADDRESS_MASK & ~page_mask) | (address & page_mask)
        table = entry & ADDRESS_MASK
    raise AssertionError("unreachable: the last level is always a leaf")


def read_virtual(memory: PhysicalMemory, cr0: int, cr3: int, address: int, length: int,
                 user: bool = False) -> bytes:
    """Read `length` bytes at a virtual address, page by page."""
    out = bytearray()
    while length > 0:
        chunk = min(length, 4096 - (address & 0xFFF))
        physical = translate(memory, cr0, cr3, address, user=user)
        out += memory.read(physical, chunk)
        address += chunk
        length -= chunk
    return bytes(out)


def write_virtual(memory: PhysicalMemory, cr0: int, cr3: int, address: int, data: bytes,
                  user: bool = False) -> None:
    """Write bytes at a virtual address, page by page (all pages checked first)."""
    pieces = []
    offset = 0
    while offset < len(data):
        chunk = min(len(data) - offset, 4096 - ((address + offset) & 0xFFF))
        physical = translate(memory, cr0, cr3, address + offset, write=True, user=user)
        pieces.append((physical, data[offset:offset + chunk]))
        offset += chunk
    for physical, piece in pieces:
        memory.write(physical, piece)
