"""Channels by capability: which program holds which channel page, and its window.

A URPC channel is a page of the channel frames (cpudriver/layout.py). A
program may read or write one only while it holds a Frame capability to
that page, as in Barrelfish, where a channel's frame is a capability held
by its two ends. The kernel of each core holds the originals (one Frame
per page, made the first time the page is handed out on that core), and
hands copies out in four ways:

  at boot        the image's module line names them: `channels=20-21,40`
                 (kernel/boot.py); and every program holds its core's
                 channel to its monitor (MONITOR_CHANNELS + core)
  at spawn       SYS_SPAWN's fourth argument hands pages the spawner
                 holds to the child (on another core, through that core's
                 CPU driver's inbox: the kernels trust each other)
  by a monitor   SYS_CHANNEL_GRANT: a monitor gives pages to a program on
                 its core (a bind: both ends get the new channel)
  a monitor      holds every channel (the monitors are the OS): its window
                 is the core's page tables, which map them all, and the
                 CPU driver never asks here for it

A holder's copies sit in a CNode of their own, in root slot SLOT_CHANNELS,
and each is mapped (read-write, no-execute) into the holder's channel
window at USER_CHANNELS + page * 4096, in page tables of its own (the CPU
driver made them empty: dispatch.S channel_tables). The mapping is the
capability's (kernel/caps/vspace.py): deleting the copy clears the PTE and
flushes the TLB, like any Frame's. A page nobody gave a program is not
mapped in its window: touching it is a page fault that kills only that
program, and SYS_CHANNEL_MAP of it is -EPERM.

What does not live here: the capability rules (kernel/caps/), the
hypercall port's registers (kernel/capservice.py).
"""

from __future__ import annotations

from cpudriver import layout
from kernel.caps import CapType, Rights, vspace
from kernel.caps.cspace import caddr, root_caddr
from kernel.caps.rules import pte_for

SLOT_CHANNELS = 243                        # root slot: the CNode of a program's channels
CHANNEL_CNODE_OFFSET = 0x4000              # in its capability area (kernel/capservice.py)
CHANNEL_CNODE_BITS = 14                    # 256 channels
PAGE = 4096
ENTRIES = 512                              # a page table's entries: 2 MiB of window
EPERM, ENOMEM, EINVAL = layout.EPERM, layout.ENOMEM, layout.EINVAL
CHANNEL_RIGHTS = Rights.READ | Rights.WRITE | Rights.GRANT


def channel_address(page: int) -> int:
    """Physical address of channel page `page`."""
    return layout.CHANNELS_PHYS + page * layout.CHANNEL_SIZE


def window_tables(core: int, dispatcher: int) -> int:
    """Physical address of a dispatcher's channel page tables (dispatch.S channel_tables)."""
    return layout.CHANNEL_TABLES_BASE + (core * layout.MAX_DISPATCHERS + dispatcher) \
        * layout.CHANNEL_TABLES * PAGE


def parse_channels(text: str) -> list[int]:
    """`20-21,40` -> [20, 21, 40]; ValueError saying what is wrong."""
    pages = []
    for part in text.split(","):
        first, dash, last = part.partition("-")
        try:
            low = int(first, 0)
            high = int(last, 0) if dash else low
        except ValueError:
            raise ValueError(f"'{part}' is not a channel page or a range A-B") from None
        if not 0 <= low <= high < layout.N_USER_CHANNELS:
            raise ValueError(f"'{part}': channel pages are 0 to {layout.N_USER_CHANNELS - 1}")
        pages.extend(range(low, high + 1))
    return pages


class Channels:
    """Every core's channel originals, and each dispatcher's window tables."""

    def __init__(self, memory, module_channels: list[list[int]]):
        self.memory = memory
        self.module_channels = module_channels     # module index -> pages its line grants
        self.originals = {}                        # (core, page) -> the kernel's Frame
        self.windows = {}                          # (core, dispatcher) -> its page tables

    # -- the CPU driver's hypercalls ------------------------------------------------
    def new_dispatcher(self, system, core: int, index: int, cspace, slots_base: int,
                       pml4: int, monitor: bool, module: int, handed: list[int]) -> int:
        """A new dispatcher's channel CNode and window; give it what it holds."""
        system.create(cspace, root_caddr(SLOT_CHANNELS), CapType.CNODE,
                      slots_base, CHANNEL_CNODE_BITS)
        if monitor:
            return 0                               # its window maps every channel already
        tables = window_tables(core, index)
        self.windows[(core, index)] = [
            system.create(None, None, CapType.VNODE_PT, tables + t * PAGE, 12,
                          adopt=(pml4, layout.USER_CHANNELS + t * ENTRIES * PAGE)).obj
            for t in range(layout.CHANNEL_TABLES)]
        granted = self.module_channels[module] if module < len(self.module_channels) else []
        pages = [layout.MONITOR_CHANNELS + core] + list(granted) + handed
        return self.grant(system, core, index, cspace, pages)

    def grant(self, system, core: int, index: int, cspace, pages: list[int]) -> int:
        """Give dispatcher `index` of `core` a copy of each page's Frame and map it."""
        for page in pages:
            if not 0 <= page < layout.N_USER_CHANNELS:
                return -EINVAL
            if self.held(cspace, page) is None:
                free = self._free_slot(cspace)
                if free is None:
                    return -ENOMEM
                system.give(self._original(system, core, page), cspace,
                            caddr(SLOT_CHANNELS, free))
            if (core, index) in self.windows:
                self.map(core, index, cspace, page)
        return 0

    def map(self, core: int, index: int, cspace, page: int) -> int:
        """Map channel `page` into the caller's window, if it holds the page."""
        if not 0 <= page < layout.N_USER_CHANNELS:
            return -EINVAL
        cap = self.held(cspace, page)
        if cap is None:
            return -EPERM
        table, entry = self._entry(core, index, page)
        if entry not in table.entries:
            vspace.install(self.memory, table, entry, cap,
                           pte_for(channel_address(page), table=False, large=False,
                                   rights=Rights.READ | Rights.WRITE))
        return 0

    def unmap(self, core: int, index: int, page: int) -> int:
        """Clear the PTE of channel `page` in the caller's window. The TLB is left
        alone on purpose (SYS_INVLPG is the other half: the shootdown study)."""
        if not 0 <= page < layout.N_USER_CHANNELS:
            return -EINVAL
        table, entry = self._entry(core, index, page)
        mapping = table.entries.get(entry)
        if mapping is not None:
            vspace.remove(self.memory, mapping)
        return 0

    def holds_all(self, cspace, pages) -> int:
        """0 if the caller holds every page (a spawn hands them on), else -EPERM."""
        for page in pages:
            if not 0 <= page < layout.N_USER_CHANNELS:
                return -EINVAL
            if self.held(cspace, page) is None:
                return -EPERM
        return 0

    # -- looking things up ---------------------------------------------------------
    @staticmethod
    def held(cspace, page: int):
        """The caller's Frame capability to channel `page` (in its root CNode or its
        channel CNode) that allows reading and writing, or None."""
        address = channel_address(page)
        nodes = [cspace.root.obj.slots]
        channel_cnode = cspace.root.obj.slots[SLOT_CHANNELS]
        if channel_cnode is not None and channel_cnode.type == CapType.CNODE:
            nodes.append(channel_cnode.obj.slots)
        for slots in nodes:
            for cap in slots:
                if (cap is not None and cap.type == CapType.FRAME
                        and cap.obj.base <= address < cap.obj.end
                        and Rights.READ | Rights.WRITE in cap.rights):
                    return cap
        return None

    def _entry(self, core: int, index: int, page: int):
        tables = self.windows[(core, index)]
        return tables[page // ENTRIES], page % ENTRIES

    @staticmethod
    def _free_slot(cspace) -> int | None:
        cnode = cspace.root.obj.slots[SLOT_CHANNELS]
        if cnode is None or cnode.type != CapType.CNODE:
            return None
        for index, cap in enumerate(cnode.obj.slots):
            if cap is None:
                return index
        return None

    def _original(self, system, core: int, page: int):
        key = (core, page)
        if key not in self.originals:
            self.originals[key] = system.create(None, None, CapType.FRAME,
                                                channel_address(page), 12, CHANNEL_RIGHTS)
        return self.originals[key]
