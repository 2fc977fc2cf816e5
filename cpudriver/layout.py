"""Where things live: the physical and virtual memory map of a sprat system.

This is the one place that says where the CPU driver is loaded, where each
core's private area is, where modules go and where user programs run. The
boot loader (kernel/boot.py) reads it from Python; the CPU driver's
assembly gets the same numbers as assembler constants (`defines()`), so the
two can never disagree.

Physical memory
  0x0000_8000  AP trampoline page (a STARTUP IPI's vector 0x08 points here)
  0x0000_9000  boot information, written by the loader (see kernel/boot.py);
               the CPU drivers write one word of it: which cores were started
  0x0020_0000  the CPU driver image: one 2 MiB page, mapped read-only + exec
  0x0040_0000  modules from the boot image, each page aligned (4 MiB)
  0x0080_0000  URPC channel frames (8 MiB): shared by all cores, and the
               only memory the cost model tracks (emulator/cost.py); the
               last MAX_CORES pages are the CPU drivers' inboxes, where one
               core's CPU driver asks another's for something (spawn). 8
               MiB because the monitors need a ring for every ordered pair
               of 64 cores (userland/monitor.S: 1366 pages)
  0x0100_0000  per-core areas, 256 KiB each: the core's page tables, GDT,
               TSS, IDT, kernel stack, and its dispatchers
  0x0200_0000  the dispatchers' capability areas, then the shared regions
               (kernel/capservice.py)
  0x0390_0000  each dispatcher's channel page tables (CHANNEL_TABLES pages
               each, MAX_DISPATCHERS per core): its own view of the window
  0xFEE0_0000  the local APIC (each core sees its own)

Virtual memory, user half (PML4 entry 1: USER_BASE .. USER_END, 512 GiB)
  0x80_0000_0000  USER_BASE: 2 MiB never mapped (a pointer just past
                  USER_BASE faults)
  0x80_0020_0000  USER_CHANNELS: the channel window, one page per channel
  0x80_0100_0000  PROGRAMS_BASE: program k of the boot image at
                  program_base(k) = PROGRAMS_BASE + k * PROGRAM_SPAN, each
                  in a 2 MiB window of its own: its image from the bottom,
                  its stack just below the top (stack_top(k))
  0x80_4000_0000  USER_BASE + 1 GiB and up: the program's own to map
                  (kernel/capservice.py, userland/lib/vspace.S)

A program is a distinct image among the boot image's module lines: lines
that name the same file with the same numeric options (the ones that
become its constants) are one program, loaded once, whatever else they
say (`core=N`, `nospawn`, `monitor`, `channels=`); program k is the k-th
such, in the order of the lines (kernel/boot.py). Every program is linked at its own base, so that an address names
one instruction machine-wide: a backtrace, a fault report or gdb (which
has one address space for all its threads) can name user code by the
address alone, whatever core it was on. Every dispatcher of one program
(run on several cores, spawned twice) runs the same code at the same
address, each with a stack of its own behind the same addresses.

A dispatcher runs one program on one core. Each has its own page tables:
the kernel half (physical RAM 1:1, supervisor only, 2 MiB pages,
no-execute except the CPU driver's page) is the core's and the same for
all its dispatchers; the user half maps its program's window (one page
table, at PD entry PROGRAMS_PD_INDEX + k): the module's pages read-only
and executable, a private stack just below the window's top, and the
channel window at USER_CHANNELS (PD entries 1 .. CHANNEL_TABLES). A
channel page is mapped there, read-write and no-execute, only while the
program holds its capability
(docs/capabilities.md, "Channels"): a program's window has page tables of
its own (CHANNEL_TABLES_BASE), empty until the kernel maps what it was
given (kernel/channels.py). A monitor holds every channel: its window is
the core's CHANNEL_TABLES page tables (PC_PT_CHANNELS), which map them all.
"""

from emulator.devices.console import CONSOLE_PORT  # noqa: F401 (for the assembler)
from emulator.devices.hypercall import HYPERCALL_PORT  # noqa: F401

HYPERCALL_LMP = 64          # the hypercall that resolves an LMP endpoint (kernel/capservice.py)
# The hypercalls of channel capabilities (kernel/channels.py): rax = one of
# these, arguments in rdi rsi rdx r10; rax = 0 or -errno.
HYPERCALL_NEW_DISPATCHER = 65   # (index, module, first, count): its CSpace, its channels
HYPERCALL_CHANNEL_MAP = 66      # (page): map it, if the caller holds it
HYPERCALL_CHANNEL_UNMAP = 67    # (page): clear its PTE (no TLB flush)
HYPERCALL_CHANNEL_HOLDS = 68    # (first, count): does the caller hold them all
HYPERCALL_CHANNEL_GRANT = 69    # (dispatcher, first, count): a monitor gives them
from emulator.devices.power import POWER_PORT  # noqa: F401

KERNEL_BASE = 0x0020_0000
KERNEL_MAX_SIZE = 0x0020_0000
TRAMPOLINE = 0x0000_8000
BOOT_INFO = 0x0000_9000
MODULES_BASE = 0x0040_0000
MODULES_END = 0x0080_0000
CHANNELS_PHYS = 0x0080_0000
CHANNELS_SIZE = 0x0080_0000
CHANNEL_SIZE = 0x1000                  # one URPC channel (one direction) per page
N_CHANNELS = CHANNELS_SIZE // CHANNEL_SIZE
MAX_CORES = 64
N_USER_CHANNELS = N_CHANNELS - MAX_CORES   # the rest are the CPU drivers' inboxes
CHANNEL_TABLES = CHANNELS_SIZE >> 21       # page tables (2 MiB each) that map them
KERNEL_INBOXES = CHANNELS_PHYS + N_USER_CHANNELS * CHANNEL_SIZE   # core k's: + k pages
MONITOR_CHANNELS = 1440                # + core: that core's channel to its monitor,
                                       # which every program there holds
                                       # (userland/lib/monitor_client.S)
CHANNEL_TABLES_BASE = 0x0390_0000      # dispatcher d of core c: + (c * MAX_DISPATCHERS
                                       # + d) * CHANNEL_TABLES pages
PERCORE_BASE = 0x0100_0000
PERCORE_SIZE = 0x0004_0000
APIC_BASE = 0xFEE0_0000
APIC_PD_INDEX = (APIC_BASE >> 21) & 511     # its 2 MiB slot in the 4th GiB

USER_BASE = 0x0000_0080_0000_0000     # the user half: PML4 entry 1
USER_END = USER_BASE + (1 << 39)
USER_CHANNELS = USER_BASE + 0x0020_0000  # from the second 2 MiB of the user half
PROGRAMS_BASE = USER_BASE + 0x0100_0000  # program k's window: + k * PROGRAM_SPAN
PROGRAM_SPAN = 0x0020_0000               # one page table: the image, then its stack
PROGRAMS_PD_INDEX = (PROGRAMS_BASE >> 21) & 511   # program k's page table: PD entry + k
USER_STACK_PAGES = 3
USER_MAX_IMAGE = PROGRAM_SPAN - USER_STACK_PAGES * 4096

# Inside a core's private area (offsets from its base).
PC_DATA = 0x0000       # per-core variables (below)
PC_GDT = 0x0100
PC_TSS = 0x0200
PC_IDT = 0x1000
PC_PML4 = 0x2000       # the boot page tables: the kernel half only
PC_PDPT_KERNEL = 0x3000
PC_PD_LOW = 0x4000     # 0-1 GiB, 2 MiB pages
PC_PD_APIC = 0x5000    # 3-4 GiB, for the APIC page
PC_PT_CHANNELS = 0x6000                # CHANNEL_TABLES page tables, one after the
                                       # other: the channel frames at USER_CHANNELS
PC_KSTACK_TOP = 0xC000                 # the kernel stack: 0xA000 up to here
PC_DISPATCHERS = 0x10000               # MAX_DISPATCHERS slots of DISPATCHER_SIZE
MAX_DISPATCHERS = 6
DISPATCHER_SIZE = 0x8000
DISPATCHER_SHIFT = 15                  # log2(DISPATCHER_SIZE)

# Inside a dispatcher's slot.
D_DCB = 0x0000         # the dispatcher control block (below)
D_PML4 = 0x1000
D_PDPT_USER = 0x2000
D_PD_USER = 0x3000
D_PT_USER = 0x4000
D_USTACK = 0x5000      # USER_STACK_PAGES pages
D_PT_USER_STACK = D_PT_USER + (512 - USER_STACK_PAGES) * 8   # the stack's PTEs

# The dispatcher control block.
DCB_STATE = 0x00       # one of the DISPATCHER_* states
DCB_CR3 = 0x08
DCB_FLAGS = 0x10       # from its boot module's line: DCB_FLAG_MONITOR
DCB_FLAG_MONITOR = 1   # this dispatcher is its core's monitor (privileged calls)
DCB_FRAME = 0x40       # its registers while it is not running: a trap frame
DISPATCHER_EMPTY = 0
DISPATCHER_RUNNABLE = 1
DISPATCHER_WAITING = 2  # in lmp_recv, until a message comes
DISPATCHER_EXITED = 3
TRAP_FRAME_SIZE = 22 * 8

# Interrupt vectors the CPU driver uses, and the time slice.
TIMER_VECTOR = 32
INBOX_VECTOR = 33      # "look in your inbox": the IPI that goes with a request
SYSCALL_VECTOR = 256   # marks a trap frame built by syscall_entry
TIME_SLICE_CYCLES = 100_000

# Per-core variables, reached through GS once the CPU driver is up.
PCV_SELF = 0x00
PCV_CORE_ID = 0x08
PCV_KERNEL_RSP = 0x10
PCV_USER_RSP = 0x18
PCV_SCRATCH = 0x20
PCV_N_CORES = 0x28
PCV_CURRENT = 0x30         # the running dispatcher's slot address
PCV_N_DISPATCHERS = 0x38
PCV_RESCHEDULE = 0x40      # set: switch dispatchers before returning to user mode
PCV_NEXT = 0x48            # the slot of a dispatcher to switch to first (LMP hands over), or 0
PCV_INBOX_SEEN = 0x50      # requests taken from this core's inbox so far
PCV_FAILED = 0x58          # programs that exited with a non-zero status or were killed

# Boot information block (written by the loader, read by every core).
BOOT_MAGIC = 0x3149_4254_4152_5053       # "SPRATBI1", little endian
BI_MAGIC = 0x00
BI_N_CORES = 0x08
BI_MEMORY_SIZE = 0x10
BI_N_MODULES = 0x18
BI_CORES_STARTED = 0x20                  # bit k: core k was sent its STARTUP (boot.S start_core)
BI_MODULES = 0x40                        # the module table, MAX_MODULES entries:
MODULE_ENTRY_SIZE = 0x28
MODULE_PHYSICAL = 0x00                   #   where the loader put it
MODULE_SIZE = 0x08                       #   its size in bytes
MODULE_CORE = 0x10                       #   the core it runs on, ALL_CORES, or none (-2)
MODULE_FLAGS = 0x18                      #   MODULE_FLAG_* from its image line
MODULE_VIRTUAL = 0x20                    #   where it is linked: program_base(its program)
MODULE_FLAG_MONITOR = 1                  # `monitor`: it may boot cores (-> DCB_FLAG_MONITOR)
MAX_MODULES = 64
ALL_CORES = 0xFFFF_FFFF_FFFF_FFFF
# The CPU driver copies a module's flags into its dispatcher's DCB_FLAGS as
# they are: the bits must mean the same in both.
assert MODULE_FLAG_MONITOR == DCB_FLAG_MONITOR

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
SYS_YIELD = 3
SYS_DISPATCHER_ID = 4
SYS_LMP_SEND = 5
SYS_LMP_RECV = 6
SYS_LMP_CALL = 7
SYS_SPAWN = 8
SYS_CHANNEL_UNMAP = 10
SYS_CHANNEL_MAP = 11
SYS_INVLPG = 12
SYS_LMP_SEND_EP = 13
SYS_START_CORE = 14      # monitors only: boot another core (boot.S start_core)
SYS_CHANNEL_GRANT = 15   # monitors only: give channels to a dispatcher of the core
N_SYSCALLS = 16
SYS_INVOKE = 32          # SYS_INVOKE + op: a capability invocation (kernel/caps/invoke.py)
MAX_INVOCATION = 31

# What a system call returns when it fails, negated (Linux's numbers). Here,
# not in syscall.S, because keystone mis-assembles `mov rax, -EBUSY` in a file
# included before the definition (a load from address 16, no error), and
# because user programs get them too (kernel/boot.py user_defines).
EPERM = 1                # not allowed to this caller (not a monitor; a channel not held)
EAGAIN = 11
ENOMEM = 12
EFAULT = 14
EBUSY = 16               # SYS_START_CORE: that core was started already
EINVAL = 22
ENOSYS = 38

# A CPU driver's inbox (one page): a ring of requests from other cores.
INBOX_TICKET = 0x00     # next free ticket: senders take one with `lock xadd`
INBOX_TAKEN = 0x40      # how many requests the owner has taken (its own line)
INBOX_SLOTS_OFFSET = 0x80
INBOX_SLOTS = 16
REQUEST_SPAWN = 1        # words: module, argument, who asks, the channels handed over
MAX_PRINT = 4096


def program_base(program: int) -> int:
    """Where program `program` of a boot image is linked and entered."""
    return PROGRAMS_BASE + program * PROGRAM_SPAN


def stack_top(program: int) -> int:
    """The top of the stack of every dispatcher that runs program `program`
    (each its own pages, at the same addresses): its USER_STACK_TOP."""
    return program_base(program) + PROGRAM_SPAN


def program_index(address: int) -> int | None:
    """The program whose window holds the user `address`, or None."""
    program = (address - PROGRAMS_BASE) // PROGRAM_SPAN
    return program if address >= PROGRAMS_BASE and program < MAX_MODULES else None


CHANNEL_TABLES_END = CHANNEL_TABLES_BASE + MAX_CORES * MAX_DISPATCHERS * CHANNEL_TABLES * 4096
assert MONITOR_CHANNELS + MAX_CORES <= N_USER_CHANNELS
assert USER_CHANNELS + CHANNELS_SIZE <= PROGRAMS_BASE       # the window, then the programs
assert PROGRAMS_PD_INDEX + MAX_MODULES <= 512               # all in the user half's first GiB
assert BI_MODULES + MAX_MODULES * MODULE_ENTRY_SIZE <= 4096  # the boot information is one page


def defines() -> dict[str, int]:
    """Every constant above, for the assembler."""
    return {name: value for name, value in globals().items()
            if name.isupper() and isinstance(value, int)}
