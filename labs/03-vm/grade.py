"""Lab 3's grader: a program's own page tables, judged on what the machine holds.

Every test boots an image of programs/vm_check.S, which maps five pages
with the student's vspace_map (userland/lib/vspace.S), uses them, and then
asks for refusals (images/layout.lst), unmaps a page the TLB holds and
touches it (images/unmap.lst), deletes a page table under two pages
and touches one (images/table.lst), or fills struct vspace's records and
asks for one table more (images/full.lst). Code hooks on the program's probe_*
labels record, at that instant:
  * rax: what the call before the probe returned;
  * the page tables as the MMU walks them from the core's CR3: every user
    page mapped, with its entry's bits;
  * the capability tables: what each table entry was made with (a VNode of
    which level), and what was retyped from the RAM given for the tables.
The touches that must fault are judged on the program's end: killed for a
#PF at the touched page (CR2), and never past the touch. The student's
sys_invoke flush (cpudriver/syscall.S) is what makes those touches fault:
the kernel clears the entry, the CPU driver must drop the TLB's copy.
A code hook on sys_invoke records, for each invocation, what the kernel
said to forget (rdx after its hypercall) and the TLB instructions the flush
then ran: one page is an invlpg, not a CR3 reload, and nothing is nothing.
The mechanism runs on one core, alone: the schedule does not change it, so
the tests do not sweep quanta.
"""

from cpudriver.layout import USER_BASE, USER_STACK_PAGES, stack_top
from sprat.lab.grading import boot, fail, test

GIB, MIB2, PAGE = 1 << 30, 1 << 21, 1 << 12
PRESENT, WRITABLE, USER, LARGE, NO_EXECUTE = 1, 2, 4, 0x80, 1 << 63
ADDRESS = 0x000F_FFFF_FFFF_F000      # an entry's physical address bits
READ, WRITE, EXECUTE = 1, 2, 4
SLOT_RAM, SLOT_PDPT, SLOT_REGIONS, FIRST_FRAME = 0, 1, 232, 4
STACK_BOTTOM = stack_top(0) - USER_STACK_PAGES * PAGE   # each image's one program: module 0
MAX_CYCLES = 2_000_000               # the images end by ~50,000 cycles
# programs/vm_check.S's `pages`: (vaddr, frame number, rights, word written)
PAGES = [(USER_BASE + GIB, 0, READ | WRITE, 0xA0),
         (USER_BASE + GIB + PAGE, 1, READ, 0),
         (USER_BASE + GIB + MIB2 + 5 * PAGE, 2, READ | WRITE, 0xA2),
         (USER_BASE + 261 * GIB + 263 * MIB2 + 265 * PAGE, 3, READ | EXECUTE, 0),
         (USER_BASE + 261 * GIB + 263 * MIB2 + 266 * PAGE, 4, READ | WRITE, 0xA4)]
TABLES = {"PD": 2, "PT": 3}          # what the five pages need: PDs for GiB 1 and 261, 3 PTs
# programs/vm_check.S's call_kept: the canary each kept register holds across a call
CANARY = 0x5AFE_0000_0000_0000
KEPT = {"rbx": CANARY + 3, "rbp": CANARY + 5, "r12": CANARY + 12, "r13": CANARY + 13,
        "r14": CANARY + 14, "r15": CANARY + 15}
LEVEL_NAMES = {1: "PT", 2: "PD", 3: "PDPT"}
# programs/vm_check.S's refusals: an unaligned address in a GiB with no tables yet, so that
# tables made before the check are seen; unmapping where no PT is
UNALIGNED = USER_BASE + 3 * GIB + 0x3008
BEYOND = (1 << 48) + USER_BASE + GIB + 2 * PAGE   # PML4 index 1 in bits 39..47, and bit 48
NO_TABLE = USER_BASE + 7 * GIB
REFUSALS = (("probe_twice", "a page mapped already"),
            ("probe_rights", "a read-only frame as writable"),
            ("probe_unaligned", f"{UNALIGNED:#x} (not a page's address)"),
            ("probe_outside", "an address outside the user's 512 GiB"),
            ("probe_below", f"{GIB:#x} (the kernel's PML4 entry)"),
            ("probe_beyond", f"{BEYOND:#x} (bit 48 set)"))
# what vm_check.S calls after each probe of layout.lst: where a program stopped after it died
FOLLOWS = {"probe_mapped": "the next page's vspace_map",
           "probe_layout": "the writes into the pages",
           "probe_used": "vspace_map of a page mapped already",
           "probe_twice": "vspace_map of a read-only frame as writable",
           "probe_rights": f"vspace_map of {UNALIGNED:#x} (not a page's address)",
           "probe_unaligned": f"vspace_map of {USER_BASE + 512 * GIB:#x} (outside the user's"
                              f" 512 GiB)",
           "probe_outside": f"vspace_map of {GIB:#x} (in the kernel's PML4 entry)",
           "probe_below": f"vspace_map of {BEYOND:#x} (bits 39..47 say PML4 entry 1, but bit 48"
                          f" is set: outside the user's 512 GiB, to refuse before any walk)",
           "probe_beyond": f"vspace_map of {USER_BASE + 9 * GIB:#x} (its PDPT entry taken)",
           "probe_taken": f"vspace_map of {USER_BASE + GIB + 2 * MIB2:#x} (a new PT)"}
# struct vspace (userland/lib/vspace.S): its header, and the records' layout
VS_USED, VS_SLOT, VS_COUNT, VS_TABLES, VT_SIZE, VSPACE_MAX_TABLES = 8, 16, 24, 32, 32, 16
VSPACE_SIZE = VS_TABLES + VSPACE_MAX_TABLES * VT_SIZE
# programs/vm_check.S's MODE 4 (images/full.lst): what lies past struct vspace's end;
# the pages that fill its records (a new PT each, PD entries 2..11 of GiB 1); a page in
# a PT made already; the page that needs a 16th table
PAST_END, PAST_CANARY = 32, 0x0E0D_0E0D_0E0D_0E0D
FILL_FIRST, FILL_TABLES = 2, 10
FULL_MAPPED = USER_BASE + GIB + 3 * PAGE
FULL_PAGE = USER_BASE + GIB + (FILL_FIRST + FILL_TABLES) * MIB2
# what vm_check.S calls after each probe of full.lst (MODE 4)
FOLLOWS_FULL = {**FOLLOWS,
                "probe_used": f"vspace_map of {USER_BASE + GIB + FILL_FIRST * MIB2:#x} (a new PT)",
                "probe_filled": "the next vspace_map (a new PT; after the tenth, one in a PT"
                                " made already)",
                "probe_full_mapped": f"vspace_map of {FULL_PAGE:#x} (a new PT, and no record"
                                     f" left for it)"}


# --- the tests -----------------------------------------------------------------------------
@test(points=20)
def pages_map_where_asked_with_their_rights():
    """Each page maps its frame at its address, writable and executable exactly as asked; nothing else."""
    run, probes = start("images/layout.lst")
    check_maps_succeeded(run, probes)
    layout = probes.one(run, "probe_layout")
    check_layout(run, layout, PAGES)      # first: a page mapped astray faults in the writes
    reached(run, probes, "probe_used")    # what comes after is the refusals' test
    memory = run.system.machine.memory
    for vaddr, frame, rights, word in PAGES:
        if rights & WRITE and memory.read_u64(frame_base(run, frame)) != word:
            fail(f"the program wrote {word:#x} at {vaddr:#x}, but frame {frame} does not hold it:"
                 f" the address does not lead to that frame", run, stop="probe_used core 0")


@test(points=15)
def tables_are_made_once_and_of_the_right_level():
    """Each PDPT entry holds a PD, each PD entry a PT, one per range, all retyped from the RAM given."""
    run, probes = start("images/layout.lst")
    check_maps_succeeded(run, probes)
    reached(run, probes, "probe_layout")
    layout = probes.one(run, "probe_layout")
    for (level, vaddr), kind in sorted(layout.tables.items()):
        want = LEVEL_NAMES[level]
        if kind != f"VNODE_{want}":
            fail(f"the table under the {LEVEL_NAMES[level + 1]} entry for {vaddr:#x} is a {kind}:"
                 f" it must be a VNODE_{want} (retype the RAM into CAPTYPE_VNODE_{want})",
                 run, stop="probe_layout core 0")
    made = layout.retyped
    wanted = sorted(f"VNODE_{kind}" for kind, count in TABLES.items() for _ in range(count))
    if made != wanted:
        fail(f"the five pages need {TABLES['PD']} PDs and {TABLES['PT']} PTs; the RAM given to"
             f" vspace_init holds {describe(made)}: a table made twice for one range, or one"
             f" never used, is memory lost", run, stop="probe_mapped core 0")


@test(points=15)
def refusals_come_back_and_change_nothing():
    """Mapping a page twice, a read-only frame writable, an unaligned or foreign address: refused."""
    from kernel.caps import ErrorCode as E
    run, probes = start("images/layout.lst")
    check_maps_succeeded(run, probes)
    expect_clean(run, probes)
    for label, what, code in (
            ("probe_twice", f"a second mapping of page {PAGES[0][0]:#x}", E.ENTRY_IN_USE),
            ("probe_rights", "a read-only frame mapped READ|WRITE", E.NO_RIGHTS),
            ("probe_unaligned", f"{UNALIGNED:#x}, not a page's address", E.MISALIGNED),
            ("probe_outside", "an address in PML4 entry 2, outside the user's 512 GiB",
             E.INVALID_ENTRY),
            ("probe_below", f"{GIB:#x}, in PML4 entry 0 (the kernel's)", E.INVALID_ENTRY),
            ("probe_beyond", f"{BEYOND:#x}, whose bits 39..47 say PML4 entry 1 but whose bit"
                             f" 48 is set: above the user's 512 GiB", E.INVALID_ENTRY)):
        got = probes.one(run, label).rax
        if got != -int(code):
            fail(f"vspace_map of {what} returned {error_name(got)}; expected -{int(code)}"
                 f" ({code.name})", run, stop=f"{label} core 0")
    end = probes.one(run, "probe_beyond")
    check_layout(run, end, PAGES)
    before = probes.one(run, "probe_layout")
    for label, what in REFUSALS:
        hit = probes.one(run, label)
        if hit.retyped != before.retyped:
            fail(f"vspace_map of {what} was refused, but it left tables behind: the RAM given"
                 f" to vspace_init now holds {describe(hit.retyped)}, not"
                 f" {describe(before.retyped)}; check the address before you make any table",
                 run, stop=f"{label} core 0")
    check_refused_table_given_back(run, probes, end)
    check_records(run, probes.one(run, "probe_after_taken"))
    check_records_kept(run, end, probes.one(run, "probe_taken"))


@test(points=10)
def a_full_vspace_refuses_a_new_table_with_enomem():
    """With struct vspace's 16 records used, a map that needs a new table is -ENOMEM and changes nothing."""
    from cpudriver.layout import ENOMEM
    run, probes = start("images/full.lst")
    check_maps_succeeded(run, probes)
    for hit in probes.all("probe_filled"):
        if hit.rax != 0:
            record = 7 + hit.r12 - FILL_FIRST
            vaddr = USER_BASE + GIB + hit.r12 * MIB2
            fail(f"vspace_map of {vaddr:#x}, a page in a new PT, returned {error_name(hit.rax)};"
                 f" that PT is struct vspace's record {record} of {VSPACE_MAX_TABLES}: there is"
                 f" room for it", run, stop=f"probe_filled core 0 if $r12 == {hit.r12}")
    before = probes.one(run, "probe_full_mapped")
    if before.rax != 0:
        fail(f"with every record used, vspace_map of {FULL_MAPPED:#x} returned"
             f" {error_name(before.rax)}: its PT is made already, and a map that makes no"
             f" table needs no record", run, stop="probe_full_mapped core 0")
    full = probes.one(run, "probe_full")
    stop = "probe_full core 0"
    what = (f"vspace_map of {FULL_PAGE:#x}, which needs a new PT when struct vspace's"
            f" {VSPACE_MAX_TABLES} records are used (the PDPT and 15 tables)")
    overrun = [at for at in range(0, PAST_END, 8) if full.past_end is not None
               and int.from_bytes(full.past_end[at:at + 8], "little") != PAST_CANARY]
    if overrun:
        fail(f"{what} wrote past the end of struct vspace (at +{VSPACE_SIZE + overrun[0]:#x},"
             f" after its last record): a 17th record; vspace_remember says -ENOMEM instead",
             run, stop=stop)
    if full.rax != -ENOMEM:
        fail(f"{what} returned {error_name(full.rax)}; expected -{ENOMEM} (ENOMEM): look for a"
             f" free record before you make the table (none is free once VS_COUNT is"
             f" VSPACE_MAX_TABLES)", run, stop=stop)
    if full.retyped != before.retyped or full.tables != before.tables:
        fail(f"{what} returned -ENOMEM, but left a table behind: the RAM given to vspace_init"
             f" held {describe(before.retyped)} and now holds {describe(full.retyped)}; look"
             f" for a free record before you retype", run, stop=stop)
    if full.pages != before.pages:
        strays = sorted(set(full.pages) - set(before.pages)) or sorted(before.pages)
        fail(f"{what} returned -ENOMEM, but the page tables changed ({strays[0]:#x}): a refused"
             f" map changes nothing", run, stop=stop)
    if full.records != before.records:
        fail(f"{what} returned -ENOMEM, but struct vspace's records changed", run, stop=stop)
    if full.header != before.header:
        changed = [f"{name} went from {was:#x} to {now:#x}" for name, was, now
                   in zip(("VS_USED", "VS_SLOT"), before.header, full.header) if was != now]
        fail(f"{what} returned -ENOMEM, but struct vspace's {' and '.join(changed)}: the slot"
             f" and RAM of a table never made are lost; look for a free record before you take"
             f" them", run, stop=stop)


def check_refused_table_given_back(run, probes, before):
    """vm_check filled PDPT entry 9 with a PD of its own, then asked for a page
    there: vspace_map's new PD cannot be mapped (ENTRY_IN_USE), and must be
    deleted, its slot and RAM free for the next table, which the next map
    (a page needing a new PT) makes."""
    from kernel.caps import ErrorCode as E
    taken, after = probes.one(run, "probe_taken"), probes.one(run, "probe_after_taken")
    page = USER_BASE + 9 * GIB
    if taken.rax != -int(E.ENTRY_IN_USE):
        fail(f"vspace_map of {page:#x}, whose PDPT entry holds a PD vspace does not know,"
             f" returned {error_name(taken.rax)}; the map of the PD it makes there is refused:"
             f" expected -{int(E.ENTRY_IN_USE)} (ENTRY_IN_USE), as the kernel said it",
             run, stop="probe_taken core 0")
    next_page = USER_BASE + GIB + 2 * MIB2
    if after.rax != 0:
        fail(f"after the refused map of {page:#x}, vspace_map of {next_page:#x} (a new PT)"
             f" returned {error_name(after.rax)}: when a table's map is refused, cap_delete the"
             f" table you retyped for it (its slot and RAM are the next table's), and leave"
             f" VS_USED and VS_SLOT as they were", run, stop="probe_after_taken core 0")
    wanted = sorted(before.retyped + ["VNODE_PD", "VNODE_PT"])    # the program's PD, the new PT
    if after.retyped != wanted:
        fail(f"after the refused map of {page:#x} and one more PT, the RAM given to vspace_init"
             f" holds {describe(after.retyped)}, not {describe(wanted)}: a table whose map is"
             f" refused must be deleted (cap_delete), not kept", run,
             stop="probe_after_taken core 0")


@test(points=20)
def an_unmapped_page_faults():
    """After vspace_unmap the entry is gone, its neighbour stays, and a touch faults (no stale TLB entry)."""
    from kernel.caps import ErrorCode as E
    run, probes = start("images/unmap.lst")
    check_maps_succeeded(run, probes)
    unmapped = probes.one(run, "probe_unmapped")
    page, neighbour = PAGES[4][0], PAGES[3][0]      # PT entries 266 and 265
    if unmapped.rax != 0:
        fail(f"vspace_unmap({page:#x}) returned {error_name(unmapped.rax)}; a mapped page"
             f" unmaps with 0{rax_kept(unmapped.rax)}{unmap_hint(unmapped.rax)}", run,
             stop="probe_unmapped core 0")
    if page in unmapped.pages:
        fail(f"after vspace_unmap({page:#x}) the page tables still map it (entry"
             f" {unmapped.pages[page]:#x}): clear its PT entry", run, stop="probe_unmapped core 0")
    if neighbour not in unmapped.pages:
        fail(f"vspace_unmap({page:#x}) also took {neighbour:#x}, its neighbour in the same PT:"
             f" unmap the PT entry, not the PD's", run, stop="probe_unmapped core 0")
    check_layout(run, unmapped, PAGES[:4])
    again = probes.one(run, "probe_unmapped_again").rax
    if again != -int(E.ENTRY_EMPTY):
        fail(f"vspace_unmap of {page:#x} a second time returned {error_name(again)}; nothing is"
             f" mapped there: expected -{int(E.ENTRY_EMPTY)} (ENTRY_EMPTY)", run,
             stop="probe_unmapped_again core 0")
    nowhere = probes.one(run, "probe_unmapped_nowhere").rax
    if nowhere != -int(E.ENTRY_EMPTY):
        fail(f"vspace_unmap of {NO_TABLE:#x}, where no PT is, returned {error_name(nowhere)};"
             f" expected -{int(E.ENTRY_EMPTY)} (ENTRY_EMPTY): when vspace_find finds no PT,"
             f" there is no table to ask the kernel about", run,
             stop="probe_unmapped_nowhere core 0")
    check_touch_faults(run, probes, "touch_unmapped", "probe_touch_survived", page,
                       f"vspace_unmap({page:#x})", "the one page the kernel names in rdx")
    check_flushes_as_named(run, probes)


def check_flushes_as_named(run, probes):
    """The flush forgets what the kernel named in rdx, no more: one page by
    invlpg (a CR3 reload throws away every user translation the TLB holds,
    and costs every page a walk again), nothing when rdx is 0."""
    for rdx, ran in probes.flushes:
        stop = f"sys_invoke_done core 0 if $rdx == {rdx & (1 << 64) - 1:#x}"
        if rdx == 0 and ran:
            said = " and ".join(dict.fromkeys(TLB_WORDS[kind] for kind in ran))
            fail(f"sys_invoke ran {said} after an invocation that left nothing to"
                 f" forget (rdx = 0): flush only what the kernel names", run, stop=stop)
        if rdx in (0, -1):
            continue
        everything = [kind for kind in ran if kind in FLUSH_ALL]
        if everything:
            fail(f"sys_invoke ran {TLB_WORDS[everything[0]]} when the kernel named one page to"
                 f" forget (rdx = {rdx:#x}): that throws away every user translation; invlpg"
                 f" that page", run, stop=stop)
        if ran.count("invlpg") > 1:
            fail(f"sys_invoke ran invlpg {ran.count('invlpg')} times when the kernel named one"
                 f" page to forget (rdx = {rdx:#x}): invlpg that page, once", run, stop=stop)


@test(points=10)
def a_deleted_table_takes_its_pages_along():
    """Deleting a PT's capability unmaps the whole table: a touch of its pages faults (CR3 reload)."""
    run, probes = start("images/table.lst")
    check_maps_succeeded(run, probes)
    deleted = probes.one(run, "probe_table_deleted")
    if deleted.rax > 0:
        fail(f"deleting the PT of {PAGES[0][0]:#x} returned {error_name(deleted.rax)}, which is"
             f" no error number{rax_kept(deleted.rax)}", run, stop="probe_table_deleted core 0")
    if deleted.rax != 0:
        fail(f"deleting the PT of {PAGES[0][0]:#x} (the capability vspace_find gives) returned"
             f" {error_name(deleted.rax)}: did vspace_map remember its tables with"
             f" vspace_remember?", run, stop="probe_table_deleted core 0")
    for vaddr, *_ in PAGES[:2]:
        if vaddr in deleted.pages:
            fail(f"after its PT was deleted {vaddr:#x} is still mapped", run,
                 stop="probe_table_deleted core 0")
    check_touch_faults(run, probes, "touch_deleted", "probe_touch_survived_delete",
                       PAGES[1][0], "the deletion of its PT",
                       "everything (rdx = -1: reload CR3), not one page")


@test(points=10)
def vspace_map_keeps_the_callers_registers():
    """vspace_map and vspace_unmap give rbx, rbp and r12-r15 back as they found them (System V)."""
    # full.lst too: a path only a full struct vspace takes must keep them as well
    for image in ("images/layout.lst", "images/unmap.lst", "images/full.lst"):
        run, probes = start(image)
        calls = probes.all("probe_kept")
        if not calls:
            fail(f"the program never came back from a vspace_map: {why_ended(run)}", run,
                 stop="vspace_map core 0")
        for hit in calls:
            changed = [name for name, canary in KEPT.items() if hit.kept[name] != canary]
            if changed:
                first = changed[0]
                fail(f"{hit.routine} changed {', '.join(changed)} in {image} ({first} went in"
                     f" as {KEPT[first]:#x}, came back {hit.kept[first]:#x}): System V says a routine"
                     f" keeps rbx, rbp and r12-r15 for its caller: push the ones you use on"
                     f" entry and pop them before every ret", run,
                     stop=f"probe_kept core 0 if ${first} != {KEPT[first]:#x}")


# --- running the program and reading what happened ----------------------------------------
class Probe:
    """What the machine held when the program passed a probe_* label."""

    def __init__(self, label, rax, r12, pages, tables, retyped, kept=None, routine=None,
                 records=None, past_end=None, header=None):
        self.label, self.rax, self.r12 = label, rax, r12
        self.header = header        # struct vspace's (VS_USED, VS_SLOT)
        self.records = records      # struct vspace's records: [(base, level, cap, what cap holds)]
        self.past_end = past_end    # the PAST_END bytes after struct vspace
        self.kept, self.routine = kept, routine   # probe_kept: rbx rbp r12-r15, whose call
        self.pages = pages          # {vaddr: pte} of every user page the MMU would find
        self.tables = tables        # {(level, vaddr): type name} of each table entry's object
        self.retyped = retyped      # sorted type names of what lives in the tables' RAM


class Probes:
    def __init__(self):
        self.hits = []
        self.flushes = []       # per invocation: [rdx after the hypercall, TLB instructions run]

    def all(self, label):
        return [hit for hit in self.hits if hit.label == label]

    def one(self, run, label):
        found = self.all(label)
        if not found:
            run.expect_clean(stop=f"{label} core 0")
            fail(f"the program never reached {label}: {why_ended(run)}", run)
        return found[0]


def start(image):
    """Boot `image` on one core with hooks on the program's probes; run it to its end."""
    probes = Probes()
    run = boot(image, cores=1, max_cycles=MAX_CYCLES, setup=lambda system: watch(system, probes))
    for core, line in run.console:
        if "not written yet" in line:
            fail(f"core {core}: {line.strip().removeprefix('cpu driver: ')}", run)
    if run.system.failed_programs(0) and any("exited with status 2" in line
                                             for _, line in run.console):
        fail("vm_check could not retype its frames or mint a copy: the capability system"
             " refused (is cpudriver/syscall.S's sys_invoke intact?)", run)
    return run, probes


def watch(system, probes):
    from unicorn import UC_HOOK_CODE
    from unicorn import x86_const as x86
    symbols = system.modules[0].program.symbols
    names = {address: name for name, address in symbols.items()
             if name in ("vspace_map", "vspace_unmap")}
    core = system.machine.cores[0]
    for label, address in symbols.items():
        if not label.startswith("probe_"):
            continue

        def on_probe(uc, at, size, _, label=label):
            regs = core.regs
            rax, r12 = _signed(regs.read(x86.UC_X86_REG_RAX)), regs.read(x86.UC_X86_REG_R12)
            pages = user_pages(system.machine.memory, regs.read(x86.UC_X86_REG_CR3))
            tables, retyped = capability_view(system)
            kept, routine, records, past_end, header = None, None, None, None, None
            if label != "probe_kept":           # rbx is the program's struct vspace
                vs = regs.read(x86.UC_X86_REG_RBX)
                records = vspace_records(system, core, vs)
                header = vspace_header(core, vs)
                past_end = bytes_at(core, vs + VSPACE_SIZE, PAST_END)
            if label == "probe_kept":
                kept = {name: regs.read(getattr(x86, f"UC_X86_REG_{name.upper()}"))
                        for name in KEPT}
                called = int.from_bytes(core.read_virtual(regs.read(x86.UC_X86_REG_RSP), 8),
                                        "little")
                routine = names.get(called, f"the routine at {called:#x}")
            probes.hits.append(Probe(label, rax, r12, pages, tables, retyped, kept, routine,
                                     records, past_end, header))
        core.uc.hook_add(UC_HOOK_CODE, on_probe, begin=address, end=address)
        core.uc.ctl_remove_cache(address, address + 1)
    watch_flushes(system, core, probes)


OUT_IMM8 = 0xE6             # `out imm8, al`: sys_invoke's hypercall
TLB_WORDS = {"mov_cr3": "a CR3 reload (mov cr3)", "invlpg": "invlpg",
             "mov_cr4": "a CR4 write (toggling PGE flushes every entry)"}
FLUSH_ALL = ("mov_cr3", "mov_cr4")


def tlb_kind(code):
    """mov_cr3, mov_cr4 or invlpg, if `code` begins with one of them, else None."""
    from emulator.instcost import classify, opcode_at
    kind = classify(code)
    at = opcode_at(code)
    if code[at:at + 2] == b"\x0f\x22" and len(code) > at + 2 and (code[at + 2] >> 3) & 7 == 4:
        return "mov_cr4"
    return kind if kind in ("mov_cr3", "invlpg") else None


def watch_flushes(system, core, probes):
    """Record each sys_invoke's flush: rdx as the kernel answered, then every
    mov cr3, mov cr4 and invlpg up to sys_invoke_done."""
    from unicorn import UC_HOOK_CODE
    from unicorn import x86_const as x86

    kernel = system.kernel.symbols
    begin, end = kernel["sys_invoke"], kernel["sys_invoke_done"]
    after_out = [False]

    def on_instruction(uc, at, size, _):
        code = core.read_virtual(at, size)
        if after_out[0]:
            after_out[0] = False
            probes.flushes.append([_signed(core.regs.read(x86.UC_X86_REG_RDX)), []])
        if code[:1] == bytes([OUT_IMM8]):
            after_out[0] = True
        kind = tlb_kind(code)
        if kind and probes.flushes:
            probes.flushes[-1][1].append(kind)
    core.uc.hook_add(UC_HOOK_CODE, on_instruction, begin=begin, end=end)
    core.uc.ctl_remove_cache(begin, end + 1)


def bytes_at(core, address, length):
    """`length` bytes at a virtual address, or None where rbx is not the struct."""
    try:
        return core.read_virtual(address, length)
    except Exception:                  # an address the program does not map
        return None


def user_pages(memory, cr3):
    """{vaddr: pte} of every 4 KiB page the user's PML4 entry leads to, through
    PDPT entries 1..511 (entry 0 is the CPU driver's), as the MMU walks them."""
    found = {}
    pml4 = cr3 & ADDRESS
    pdpt_entry = memory.read_u64(pml4 + (USER_BASE >> 39) * 8)
    if not pdpt_entry & PRESENT:
        return found
    for i in range(1, 512):
        pd_entry = memory.read_u64((pdpt_entry & ADDRESS) + i * 8)
        if not pd_entry & PRESENT:
            continue
        for j in range(512):
            pt_entry = memory.read_u64((pd_entry & ADDRESS) + j * 8)
            if not pt_entry & PRESENT:
                continue
            if pt_entry & LARGE:
                found[USER_BASE + i * GIB + j * MIB2] = pt_entry
                continue
            for k in range(512):
                pte = memory.read_u64((pt_entry & ADDRESS) + k * 8)
                if pte & PRESENT:
                    found[USER_BASE + i * GIB + j * MIB2 + k * PAGE] = pte
    return found


def capability_view(system):
    """The program's tables as the capability system knows them: each table entry
    under its PDPT with the type of what it was mapped with, and the types
    of the live objects retyped from shared region 0's RAM (the tables' RAM)."""
    from kernel.caps import root_caddr
    service = system.machine._hypercall_handler
    cspace = service.cspaces.get((0, 0))
    if cspace is None:
        return {}, []
    caps = service.systems[0]
    tables = {}

    def visit(vnode, level, base):
        for entry, mapping in sorted(vnode.entries.items()):
            vaddr = base + (entry << (12 + 9 * (level - 1)))
            if level > 1 and mapping.cap.type.name.startswith("VNODE"):
                tables[(level - 1, vaddr)] = mapping.cap.type.name
                visit(mapping.cap.obj, level - 1, vaddr)
            elif level > 1:
                tables[(level - 1, vaddr)] = mapping.cap.type.name
    try:
        visit(caps.lookup(cspace, root_caddr(SLOT_PDPT)).obj, 3, USER_BASE)
        ram = caps.lookup(cspace, root_caddr(SLOT_REGIONS)).obj
        retyped = sorted(child.type.name for child in ram.children if child.caps)
    except Exception:                  # the program deleted what we look for: nothing to show
        return tables, []
    return tables, retyped


def vspace_header(core, vs):
    """struct vspace's (VS_USED, VS_SLOT) at `vs`: the next table's RAM and slot."""
    raw = bytes_at(core, vs + VS_USED, 16)
    if raw is None:
        return None
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


def vspace_records(system, core, vs):
    """The tables struct vspace at `vs` remembers, each with the type of what its
    capability names now (None: an empty slot)."""
    service = system.machine._hypercall_handler
    cspace = service.cspaces.get((0, 0))
    try:
        count = int.from_bytes(core.read_virtual(vs + VS_COUNT, 8), "little")
        raw = core.read_virtual(vs + VS_TABLES, min(count, VSPACE_MAX_TABLES) * VT_SIZE)
    except Exception:                  # rbx is not the struct: nothing to show
        return None
    records = []
    for at in range(0, len(raw), VT_SIZE):
        base, level, cap = (int.from_bytes(raw[at + i:at + i + 8], "little") for i in (0, 8, 16))
        try:
            held = service.systems[0].lookup(cspace, cap).type.name
        except Exception:
            held = None
        records.append((base, level, cap, held))
    return records


def check_records(run, probe):
    """Every table struct vspace remembers is there, of its level, under the
    capability it was remembered by: a record of a table whose map was
    refused names an empty slot, or the next table made in it."""
    for base, level, cap, held in probe.records or []:
        want = f"VNODE_{LEVEL_NAMES.get(level, '?')}"
        if held != want:
            fail(f"struct vspace remembers a {LEVEL_NAMES.get(level, f'level-{level}')} for"
                 f" {base:#x} under capability {cap:#x}, which holds"
                 f" {held or 'nothing'}: remember a table (vspace_remember) only once its map"
                 f" worked", run, stop=f"{probe.label} core 0")


def check_records_kept(run, before, after):
    """A refused map forgets no table that is there: every record struct
    vspace held before it still names its table after it."""
    lost = [record for record in before.records or [] if record not in (after.records or [])]
    if lost:
        base, level, cap, _ = lost[0]
        fail(f"vspace_map of {USER_BASE + 9 * GIB:#x} was refused, and struct vspace no longer"
             f" remembers the {LEVEL_NAMES.get(level, f'level-{level}')} for {base:#x}"
             f" (capability {cap:#x}), which is still there: the next map in its range would"
             f" make a second one; forget only what you remembered (a table whose map is"
             f" refused was never remembered)", run, stop=f"{after.label} core 0")


def expect_clean(run, probes):
    """The program ran to its end; if it was killed, say why and after which
    probe (the call after that probe is where to look)."""
    passed = [hit.label for hit in probes.hits if hit.label != "probe_kept"]
    if run.system.failed_programs(0) and passed:
        follows = (FOLLOWS_FULL if run.image.name == "full.lst" else FOLLOWS).get(
            passed[-1], "the call that follows it")
        fail(f"the program was stopped after {passed[-1]}, in {follows}: {why_ended(run)}",
             run, stop=f"{passed[-1]} core 0")
    run.expect_clean(stop=f"{passed[-1] if passed else 'probe_layout'} core 0")


def reached(run, probes, label):
    """The program got as far as `label`; what it did after is another test's."""
    if not probes.all(label):
        expect_clean(run, probes)
        fail(f"the program never reached {label}: {why_ended(run)}", run)


def check_maps_succeeded(run, probes):
    mapped = probes.all("probe_mapped")
    for hit in mapped:
        if hit.rax != 0 and hit.r12 < len(PAGES):
            vaddr, frame, rights, _ = PAGES[hit.r12]
            fail(f"vspace_map({vaddr:#x}, frame {frame}, {rights_name(rights)}) returned"
                 f" {error_name(hit.rax)}{hint(hit)}", run, stop="probe_mapped core 0")
    if len(mapped) < len(PAGES):
        fail(f"the program made {len(mapped)} of {len(PAGES)} vspace_map calls: "
             f"{why_ended(run)}", run, stop="vspace_map core 0")


def check_layout(run, probe, pages):
    """Exactly `pages` are mapped, each to its frame, with its rights."""
    stop = f"{probe.label} core 0"
    for vaddr, frame, rights, _ in pages:
        pte = probe.pages.get(vaddr)
        what = f"{vaddr:#x} ({rights_name(rights)})"
        if pte is None:
            elsewhere = [v for v, p in probe.pages.items()
                         if p & ADDRESS == frame_base(run, frame)]
            fail(f"{what} is not mapped{where_else(elsewhere)}", run, stop=stop)
        if pte & ADDRESS != frame_base(run, frame):
            fail(f"{what} maps physical {pte & ADDRESS:#x}, not frame {frame} at"
                 f" {frame_base(run, frame):#x}", run, stop=stop)
        if bool(pte & WRITABLE) != bool(rights & WRITE):
            fail(f"{what} is mapped {'writable' if pte & WRITABLE else 'read-only'}: pass the"
                 f" rights asked for on to the kernel", run, stop=stop)
        if bool(pte & NO_EXECUTE) == bool(rights & EXECUTE):
            fail(f"{what} is mapped {'no-execute' if pte & NO_EXECUTE else 'executable'}: pass"
                 f" the rights asked for on to the kernel", run, stop=stop)
    wanted = {vaddr for vaddr, *_ in pages}
    strays = sorted(set(probe.pages) - wanted)
    if strays:
        fail(f"{strays[0]:#x} is mapped, and no program asked for it: is each level's index"
             f" taken from its own 9 bits of the address (PT 12..20, PD 21..29, PDPT 30..38)?",
             run, stop=stop)


def check_touch_faults(run, probes, touch, survived, vaddr, what, flush):
    """The program died of a #PF at `vaddr`, on the touch, and never went past it."""
    from unicorn.x86_const import UC_X86_REG_CR2
    if probes.all(survived):
        fail(f"after {what} the program still read {vaddr:#x}: the page tables no longer map"
             f" it, but the TLB kept its entry; sys_invoke (cpudriver/syscall.S) must forget"
             f" {flush}", run, stop=f"{touch} core 0")
    symbols = run.system.modules[0].program.symbols
    faulted = [line for _, line in run.console if f"at rip {symbols[touch]:#x}" in line]
    cr2 = run.system.machine.cores[0].regs.read(UC_X86_REG_CR2)
    if not faulted or cr2 != vaddr:
        run.expect_clean(stop=f"{touch} core 0", failed=1)
        fail(f"the touch of {vaddr:#x} after {what} did not fault there (last fault address"
             f" {cr2:#x})", run, stop=f"{touch} core 0")
    run.expect_clean(stop=f"{touch} core 0", failed=1)   # killed by that fault, as it must be


# --- words for the student ------------------------------------------------------------------
def frame_base(run, frame):
    from kernel.caps import root_caddr
    service = run.system.machine._hypercall_handler
    cap = service.systems[0].lookup(service.cspaces[(0, 0)], root_caddr(FIRST_FRAME + frame))
    return cap.base


def error_name(value):
    from cpudriver.layout import ENOMEM
    from kernel.caps import ErrorCode
    if value >= 0:
        return str(value)
    if value == -ENOMEM:
        return f"{value} (ENOMEM)"
    try:
        return f"{value} ({ErrorCode(-value).name})"
    except ValueError:
        return str(value)


def hint(hit):
    """What a refused map of one of the five pages usually means."""
    from kernel.caps import ErrorCode as E
    hints = {-int(E.ENTRY_IN_USE): ": an entry on the way was in use; is a table already made"
                                   " for this range found (vspace_find) before a new one is?",
             -int(E.NOT_MAPPABLE): ": a table of the wrong kind for its place; level L's"
                                   " table is CAPTYPE_VNODE_PT + 1 - L",
             -int(E.MISALIGNED): ": was a Frame mapped where a table belongs (retype the RAM"
                                 " into a VNode)? Or is the frame's offset wrong: cap_map's"
                                 " 5th argument (r8) is the offset into the frame, 0 for a"
                                 " whole 4 KiB frame. Or was a table retyped at an offset"
                                 " that is not a page's: VS_USED advances by 4096 a table",
             -int(E.OUT_OF_RANGE): ": cap_map's 5th argument (r8), the offset into the frame,"
                                   " must be 0 (a table is mapped whole, a 4 KiB frame from"
                                   " its start)",
             -int(E.SLOT_IN_USE): ": the new table's root slot holds a capability already;"
                                  " advance VS_SLOT by one for every table made (and delete"
                                  " the new table if its map is refused)",
             -int(E.WRONG_TYPE): ": was a Frame used as a table?",
             -int(E.NO_RIGHTS): ": the page asked for no more than its frame allows",
             -int(E.INVALID_ENTRY): ": that entry is the CPU driver's (PDPT entry 0); is each"
                                    " table's entry taken from its own 9 bits of the address?",
             -int(E.OVERLAP): ": each new table needs a page of the RAM that no other table"
                              " has (VS_USED)"}
    return hints.get(hit.rax, "")


def rax_kept(rax):
    """A system call that worked but returned a positive number: the flush wrote rax."""
    if rax <= 0:
        return ""
    return (": the kernel answers 0 or -error; does sys_invoke's flush (cpudriver/syscall.S)"
            " keep rax, the program's result, and rbx, the trap frame syscall_result writes it"
            " into, when it reloads CR3 or invlpgs?")


def unmap_hint(rax):
    """A mapped page's unmap found its entry empty: the wrong entry was asked for."""
    from kernel.caps import ErrorCode as E
    if rax != -int(E.ENTRY_EMPTY):
        return ""
    return (f": the page is mapped at entry {(PAGES[4][0] >> 12) & 511} of its PT; is the entry"
            f" taken from the address's 9 bits 12..20?")


def rights_name(rights):
    return "|".join(name for bit, name in ((READ, "READ"), (WRITE, "WRITE"),
                                           (EXECUTE, "EXECUTE")) if rights & bit)


def where_else(elsewhere):
    if not elsewhere:
        return ""
    return (f"; its frame is mapped at {elsewhere[0]:#x} instead: is each level's index taken"
            f" from its own 9 bits of the address (PT 12..20, PD 21..29, PDPT 30..38)?")


def describe(types):
    if not types:
        return "nothing"
    counts = {name: types.count(name) for name in sorted(set(types))}
    return ", ".join(f"{count} {name.removeprefix('VNODE_')}" for name, count in counts.items())


def why_ended(run):
    from unicorn.x86_const import UC_X86_REG_CR2
    failed = [line for _, line in run.console if "killed" in line or "exited" in line]
    cr2 = run.system.machine.cores[0].regs.read(UC_X86_REG_CR2)
    if failed and "killed" in failed[0] and STACK_BOTTOM - PAGE <= cr2 < STACK_BOTTOM:
        return (f"the program was killed for a fault at {cr2:#x}, just below its stack:"
                f" the stack overflowed (a recursion that never ends?)")
    if failed and "killed" in failed[0]:
        return run.killed()         # named by label and source line
    if failed:
        return failed[0].removeprefix("cpu driver: ")
    return run.why_unfinished()


def _signed(value):
    return value - (1 << 64) if value >> 63 else value
