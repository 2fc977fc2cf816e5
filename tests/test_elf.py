"""The ELF files gdb loads (emulator/debug/elf.py), read back by pyelftools.

gdb is one reader of these files; pyelftools, written apart from gdb and
from us, is a second: what both accept is ELF and DWARF, not just what one
program happens to tolerate.
"""

import io
from pathlib import Path

import pytest

from cpudriver import layout
from emulator.assembler import assemble_file, assemble_text
from emulator.debug.elf import program_elf, sleb128, uleb128
from sprat.gdb import KERNEL_ENTRY

elftools = pytest.importorskip('elftools', reason='pyelftools is in the test extra')
from elftools.elf.elffile import ELFFile  # noqa: E402

SOURCE = """\
start:
    mov rdi, 1
    call helper
    hlt
helper:
    add rdi, 2
helper_loop:
    dec rdi
    jnz helper_loop
    ret
"""
BASE = 0x80_0000_0000
TREE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def program():
    return assemble_text(SOURCE, BASE, filename='userland/example.S')


@pytest.fixture(scope='module')
def elf(program):
    return ELFFile(io.BytesIO(program_elf(program, 'example', '/src/sprat',
                                          outermost=('start',))))


def test_labels_are_function_symbols_sized_to_the_next_label(program, elf):
    symbols = {s.name: s for s in elf.get_section_by_name('.symtab').iter_symbols() if s.name}
    for name in ('start', 'helper', 'helper_loop'):
        assert symbols[name]['st_value'] == program.symbols[name], f'{name} is misplaced'
        assert symbols[name]['st_info']['type'] == 'STT_FUNC'
    assert symbols['start']['st_size'] == program.symbols['helper'] - program.symbols['start']
    assert symbols['helper_loop']['st_value'] + symbols['helper_loop']['st_size'] == program.end


def test_the_code_section_is_named_for_the_program_at_its_base(program, elf):
    text = elf.get_section_by_name('.text.example')
    assert text is not None and text['sh_addr'] == BASE and text.data() == program.code


def test_the_line_table_holds_every_statement_with_its_file_and_line(program, elf):
    dwarf = elf.get_dwarf_info()
    unit = next(dwarf.iter_CUs())
    lines = dwarf.line_program_for_CU(unit)
    files = {i + 1: entry.name.decode() for i, entry in enumerate(lines['file_entry'])}
    rows = [(e.state.address, files[e.state.file], e.state.line)
            for e in lines.get_entries() if e.state is not None and not e.state.end_sequence]
    assert rows == list(program.source_lines), 'the line table is not the assembler\'s'
    end = [e.state.address for e in lines.get_entries() if e.state and e.state.end_sequence]
    assert end == [program.end], 'the sequence must end where the code ends'


def test_the_compile_unit_covers_the_code_and_names_each_label(program, elf):
    unit = next(elf.get_dwarf_info().iter_CUs())
    top = unit.get_top_DIE()
    assert top.attributes['DW_AT_name'].value == b'userland/example.S'
    assert top.attributes['DW_AT_comp_dir'].value == b'/src/sprat'
    assert top.attributes['DW_AT_low_pc'].value == BASE
    assert top.attributes['DW_AT_high_pc'].value == len(program.code)
    names = {d.attributes['DW_AT_name'].value.decode(): d.attributes['DW_AT_low_pc'].value
             for d in top.iter_children() if d.tag == 'DW_TAG_subprogram'}
    assert names == {name: program.symbols[name] for name in ('start', 'helper', 'helper_loop')}


def test_the_outermost_label_has_an_undefined_return_address(program, elf):
    entries = elf.get_dwarf_info().CFI_entries()
    fdes = [e for e in entries if 'initial_location' in e.header]
    assert [(f.header['initial_location'], f.header['address_range']) for f in fdes] == \
        [(BASE, program.symbols['helper'] - BASE), (program.symbols['helper'],
                                                    program.end - program.symbols['helper'])], \
        'an FDE for start up to the routine it calls, and one for that routine'
    row = fdes[0].get_decoded().table[0]
    assert row['pc'] == BASE and row[16].type == 'UNDEFINED', \
        'the return address (rip, column 16) must be undefined so that bt stops there'


PUSHING = """\
start:
    call saver
    hlt
saver:
    push rbx
    push r12
    sub rsp, 16
    call leaf
    add rsp, 16
    pop r12
    pop rbx
    ret
leaf:
    ret
data:
    .asciz "call me"
"""


def test_a_routine_that_pushes_has_its_return_address_where_the_pushes_put_it():
    program = assemble_text(PUSHING, BASE)
    elf = ELFFile(io.BytesIO(program_elf(program, 'pushing', '/src', outermost=('start',))))
    cfi = elf.get_dwarf_info().CFI_entries()
    saver = next(e for e in cfi if e.header.get('initial_location') == program.symbols['saver'])
    rows = saver.get_decoded().table
    offsets = [(row['pc'] - program.symbols['saver'], row['cfa'].reg, row['cfa'].offset)
               for row in rows]
    assert offsets == [(0, 7, 8), (1, 7, 16), (3, 7, 24), (7, 7, 40), (16, 7, 24), (18, 7, 16),
                       (19, 7, 8)], \
        f'the CFA should be rsp + 8, + 16 and + 24 after each push, + 40 after sub rsp, 16, ' \
        f'and back again as they are undone: {offsets}'
    assert all(row[16].type == 'OFFSET' and row[16].arg == -8 for row in rows), \
        'the return address is just below the CFA throughout'
    covered = [(e.header['initial_location'], e.header['address_range']) for e in cfi
               if 'initial_location' in e.header]
    assert all(start + size <= program.symbols['data'] for start, size in covered), \
        f'data is not code, and gets no rule: {covered}'


def test_an_outermost_label_sharing_its_address_with_another_still_ends_the_backtrace():
    # cpudriver/boot.S: `ap_trampoline_end:` then `ap_entry:`, one address; the
    # first names the function, the second is the one nothing called.
    program = assemble_text('before:\n    nop\nmarker:\nentry:\n    hlt\n', BASE)
    elf = ELFFile(io.BytesIO(program_elf(program, 'shared', '/src', outermost=('entry',))))
    fdes = [e for e in elf.get_dwarf_info().CFI_entries() if 'initial_location' in e.header]
    assert [f.header['initial_location'] for f in fdes] == [program.symbols['entry']], \
        'entry, named second at its address, should still get its FDE'


def test_the_cpu_drivers_outermost_labels_are_all_its_labels():
    kernel = assemble_file(TREE / 'cpudriver' / 'cpudriver.S', layout.KERNEL_BASE,
                           defines=layout.defines())
    missing = [name for name in KERNEL_ENTRY if name not in kernel.symbols]
    assert not missing, f'sprat/gdb.py names CPU driver labels that are gone: {missing}'


@pytest.mark.parametrize('value, encoded', [(0, b'\x00'), (127, b'\x7f'), (128, b'\x80\x01'),
                                            (624485, b'\xe5\x8e\x26')])
def test_uleb128_matches_the_dwarf_examples(value, encoded):
    assert uleb128(value) == encoded


@pytest.mark.parametrize('value, encoded', [(2, b'\x02'), (-2, b'\x7e'), (127, b'\xff\x00'),
                                            (-127, b'\x81\x7f'), (-128, b'\x80\x7f')])
def test_sleb128_matches_the_dwarf_examples(value, encoded):
    assert sleb128(value) == encoded
