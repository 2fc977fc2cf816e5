"""Where things live: the physical and virtual memory map of a sprat system.

This is the one place that says where the CPU driver is loaded, where each
core's private area is, where modules go and where user programs run. The
boot loader (kernel/boot.py) reads it from Python; the CPU driver's
assembly gets the same numbers as assembler constants (`defines()`), so the
two can never disagree.

Physical memory
  0x0000_8000  AP trampoline page (a STARTUP IPI's vector 0x08 points here)
  0x0000_9000  boot information, written by the loader (see kernel/boot.py)
  0x0020_0000  the CPU driver image: one 2 MiB page, mapped read-only + exec
  0x0040_0000  per-core areas, 64 KiB each (page tables, stacks, GDT, TSS, IDT)
  0x0080_0000  modules from the boot image, each page aligned
  0x0100_0000  URPC channel frames (2 MiB): shared by all cores, and the
               only memory the cost model tracks (emulator/cost.py)
  0xFEE0_0000  the local APIC (each core sees its own)

Each core's page tables map physical RAM 1:1 for the kernel (supervisor
only, 2 MiB pages, no-execute except the CPU driver's page) and its user
program at USER_BASE (PML4 slot 1): the module's pages read-only and
executable, then a private stack just below USER_STACK_TOP; and the channel
frames at USER_CHANNELS, read-write and no-execute, the same frames on
every core.
"""

from emulator.devices.console import CONSOLE_PORT  # noqa: F401 (for the assembler)
from emulator.devices.power import POWER_PORT  # noqa: F401

KERNEL_BASE = 0x0020_0000
KERNEL_MAX_SIZE = 0x0020_0000
TRAMPOLINE = 0x0000_8000
BOOT_INFO = 0x0000_9000
PERCORE_BASE = 0x0040_0000
PERCORE_SIZE = 0x0001_0000
MODULES_BASE = 0x0080_0000
MODULES_END = 0x0100_0000
CHANNELS_PHYS = 0x0100_0000
CHANNELS_SIZE = 0x0020_0000
CHANNEL_SIZE = 0x1000                  # one URPC channel (one direction) per page
N_CHANNELS = CHANNELS_SIZE // CHANNEL_SIZE
APIC_BASE = 0xFEE0_0000
APIC_PD_INDEX = (APIC_BASE >> 21) & 511     # its 2 MiB slot in the 4th GiB

USER_BASE = 0x0000_0080_0000_0000
USER_STACK_PAGES = 4
USER_STACK_TOP = USER_BASE + 0x0020_0000
USER_MAX_IMAGE = 0x0020_0000 - USER_STACK_PAGES * 4096
USER_CHANNELS = USER_BASE + 0x0020_0000  # the second 2 MiB of the user half

# Inside a core's private area (offsets from its base).
PC_DATA = 0x0000       # per-core variables (below)
PC_GDT = 0x0100
PC_TSS = 0x0200
PC_IDT = 0x1000
PC_PML4 = 0x2000
PC_PDPT_KERNEL = 0x3000
PC_PD_LOW = 0x4000     # 0-1 GiB, 2 MiB pages
PC_PD_APIC = 0x5000    # 3-4 GiB, for the APIC page
PC_PDPT_USER = 0x6000
PC_PD_USER = 0x7000
PC_PT_USER = 0x8000
PC_PT_USER_STACK = PC_PT_USER + (512 - USER_STACK_PAGES) * 8   # the stack's PTEs
PC_PT_CHANNELS = 0x9000                # maps the channel frames at USER_CHANNELS
PC_KSTACK_TOP = 0xC000                 # the kernel stack: 0xA000 up to here
PC_USTACK = 0xC000     # USER_STACK_PAGES pages

# Per-core variables, reached through GS once the CPU driver is up.
PCV_SELF = 0x00
PCV_CORE_ID = 0x08
PCV_KERNEL_RSP = 0x10
PCV_USER_RSP = 0x18
PCV_SCRATCH = 0x20
PCV_N_CORES = 0x28
PCV_SYSCALLS = 0x30

# Boot information block (written by the loader, read by every core).
BOOT_MAGIC = 0x3149_4254_4152_5053       # "SPRATBI1", little endian
BI_MAGIC = 0x00
BI_N_CORES = 0x08
BI_MEMORY_SIZE = 0x10
BI_N_MODULES = 0x18
BI_MODULES = 0x20
MODULE_ENTRY_SIZE = 0x20                 # physical base, size, core (-1: all), reserved
MAX_MODULES = 64
ALL_CORES = 0xFFFF_FFFF_FFFF_FFFF

# Segment selectors (the GDT the CPU driver builds).
KERNEL_CS = 0x08
KERNEL_SS = 0x10
USER_SS = 0x18 | 3
USER_CS = 0x20 | 3
TSS_SELECTOR = 0x28

# System call numbers (userland/lib/sprat.S has the stubs).
SYS_EXIT = 0
SYS_PRINT = 1
SYS_CORE_ID = 2
N_SYSCALLS = 3
MAX_PRINT = 4096


def defines() -> dict[str, int]:
    """Every constant above, for the assembler."""
    return {name: value for name, value in globals().items()
            if name.isupper() and isinstance(value, int)}
