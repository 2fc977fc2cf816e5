"""Physical memory: one host buffer that every core maps.

The machine has a single block of RAM starting at physical address 0. It is
allocated once (an anonymous mmap) and handed to every core's unicorn with
`mem_map_ptr`, so a store by one core is visible to every other core at
once, exactly as on a shared-memory multiprocessor: nothing is copied. What
a store *costs* is the interconnect's business (emulator/interconnect/), not
this module's.

The host side (the boot loader, the debugger, tests) reads and writes
physical memory through the methods here.
"""

import ctypes
import mmap
import struct

from unicorn import UC_PROT_ALL

from emulator.errors import SpratError

PAGE_SIZE = 4096


class PhysicalMemory:
    """`size` bytes of RAM at physical address 0, shared by all cores."""

    def __init__(self, size: int):
        if size <= 0 or size % PAGE_SIZE:
            raise SpratError(f"memory size must be a positive multiple of {PAGE_SIZE} bytes, got {size}")
        self.size = size
        self._buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._view = memoryview(self._buffer)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self._buffer))   # in the host

    def map_into(self, uc) -> None:
        """Make this RAM the physical memory of one core (no copy)."""
        uc.mem_map_ptr(0, self.size, UC_PROT_ALL, self.address)

    def contains(self, address: int, length: int = 1) -> bool:
        return 0 <= address and address + length <= self.size

    def read(self, address: int, length: int) -> bytes:
        self._check(address, length)
        return bytes(self._view[address:address + length])

    def write(self, address: int, data: bytes) -> None:
        self._check(address, len(data))
        self._view[address:address + len(data)] = data

    def read_u64(self, address: int) -> int:
        self._check(address, 8)
        return struct.unpack_from("<Q", self._buffer, address)[0]

    def write_u64(self, address: int, value: int) -> None:
        self._check(address, 8)
        struct.pack_into("<Q", self._buffer, address, value & 0xFFFF_FFFF_FFFF_FFFF)

    def _check(self, address: int, length: int) -> None:
        if not self.contains(address, length):
            raise IndexError(f"physical access {address:#x}+{length} is outside RAM (0..{self.size:#x})")
