"""userland/lib/vspace.S: a program's own page tables, made from its capabilities.

images/vspace.lst runs userland/vspace_demo.S: three pages mapped through
vspace_map (two in one PT, one read-only a GiB further), a second mapping
of a page refused, one page unmapped and touched again.
"""

from kernel.caps import CapType, root_caddr
from kernel.caps.vspace import read_entries
from tests.conftest import ROOT, boot_and_run

PDPT_SLOT, FIRST_TABLE_SLOT, FIRST_FRAME = 1, 16, 4
PRESENT, WRITABLE, NO_EXECUTE = 1, 2, 1 << 63
ADDRESS = 0x000F_FFFF_FFFF_F000          # an entry's physical address bits


def demo():
    run = boot_and_run(ROOT / "images" / "vspace.lst", cores=1)
    service = run.machine._hypercall_handler
    system, cspace = service.systems[0], service.cspaces[(0, 0)]
    return run, lambda slot: system.lookup(cspace, root_caddr(slot))


def test_vspace_demo_maps_uses_and_unmaps_its_own_pages():
    run, _ = demo()
    assert run.result.clean, run.result.reason
    out = run.output(0)
    assert out[:3] == ["mapped 3 pages with 4 tables of our own",
                       "the pages hold 4660 and 22136; the read-only one 0",
                       "mapping a page twice is refused: error 115"]
    touch = run.system.modules[0].program.symbols["touch_again"]
    assert out[-1].startswith(f"cpu driver: user fault: #PF page fault at rip {touch:#x}"), \
        "the unmapped page was still readable: the TLB kept its entry"
    assert run.system.failed_programs(0) == 1


def test_vspace_makes_one_table_per_range_of_the_right_level_hung_where_it_belongs():
    run, cap = demo()
    memory = run.machine.memory
    tables = [cap(FIRST_TABLE_SLOT + k) for k in range(4)]
    assert [t.type for t in tables] == [CapType.VNODE_PD, CapType.VNODE_PT,
                                        CapType.VNODE_PD, CapType.VNODE_PT]
    pdpt = read_entries(memory, cap(PDPT_SLOT).obj)
    first_pd, first_pt, second_pd, second_pt = (read_entries(memory, t.obj) for t in tables)
    assert pdpt[1] & ADDRESS == tables[0].base and pdpt[2] & ADDRESS == tables[2].base
    assert first_pd[0] & ADDRESS == tables[1].base and second_pd[1] & ADDRESS == tables[3].base
    frame = [cap(FIRST_FRAME + k) for k in range(3)]
    assert first_pt[0] == 0, "page A was unmapped"
    assert first_pt[1] & ADDRESS == frame[1].base and first_pt[1] & WRITABLE
    assert first_pt[1] & NO_EXECUTE, "no page asked for EXECUTE"
    assert second_pt[0] & ADDRESS == frame[2].base
    assert second_pt[0] & PRESENT and not second_pt[0] & WRITABLE, "page C is read-only"
