"""An assembled Program as an ELF file that gdb reads for names and source lines.

    data = program_elf(program, name='spawn_child', comp_dir='/work/sprat')
    Path('spawn_child.elf').write_bytes(data)     # gdb: add-symbol-file spawn_child.elf

The file holds no code to run (the machine already has it): it is what
`add-symbol-file` needs to turn addresses into names and source lines, and
names and lines into addresses. Its sections:

  .text.NAME    the program's bytes at its base address (a section per
                program, named for it, so `info files` says whose it is)
  .symtab       every label as a function symbol, sized to the next label,
                so that `break urpc_send`, `bt` and `info symbol` name them
  .debug_line   DWARF 4 line table: address -> file:line, from
                Program.source_lines (`list`, `info line`, `step`, `next`)
  .debug_info   one compile unit for the program's main file, covering its
  .debug_abbrev code, with a subprogram per label (`list urpc_send`,
                `break file.S:42`)
  .debug_frame  where each instruction's caller is (emulator/debug/frames.py
                reads it from the code: the pushes and `sub rsp` since the
                routine's entry), so that gdb's `bt` finds the return
                address past a routine's pushes; and, for the code the
                labels named `outermost` reach (a program's `start`, the
                CPU driver's entry points and idle loop: code nothing
                called), "the return address is undefined", so `bt` ends
                there instead of reading on past the stack

Everything is written here by hand, from the ELF-64 and DWARF 4 standards
(the System V gABI, "DWARF Debugging Information Format Version 4" sections
6.2 and 7.5); nothing here knows gdb beyond what those say.
"""

from __future__ import annotations

import struct

from emulator.debug.frames import RETURN_ADDRESS, Outermost, frame_rules

# ELF constants (System V gABI, chapter 4).
ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE = 2, 1, 1, 0
ET_EXEC, EM_X86_64 = 2, 62
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB = 0, 1, 2, 3
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
STB_LOCAL, STB_GLOBAL, STT_FUNC, STT_FILE = 0, 1, 2, 4
SHN_ABS = 0xFFF1
ELF_HEADER_SIZE, SECTION_HEADER_SIZE, SYMBOL_SIZE = 64, 64, 24

# DWARF 4 constants (section 7).
DW_TAG_compile_unit, DW_TAG_subprogram = 0x11, 0x2E
DW_CHILDREN_no, DW_CHILDREN_yes = 0, 1
DW_AT_name, DW_AT_stmt_list, DW_AT_low_pc, DW_AT_high_pc = 0x03, 0x10, 0x11, 0x12
DW_AT_language, DW_AT_comp_dir, DW_AT_producer, DW_AT_external = 0x13, 0x1B, 0x25, 0x3F
DW_FORM_addr, DW_FORM_data2, DW_FORM_data8, DW_FORM_string = 0x01, 0x05, 0x07, 0x08
DW_FORM_sec_offset, DW_FORM_flag_present = 0x17, 0x19
DW_LANG_Mips_Assembler = 0x8001     # "assembly", whatever the CPU
DW_LNS_copy, DW_LNS_advance_pc, DW_LNS_advance_line, DW_LNS_set_file = 1, 2, 3, 4
DW_LNE_end_sequence, DW_LNE_set_address = 1, 2
DW_CFA_def_cfa_expression, DW_CFA_undefined, DW_OP_constu = 0x0F, 0x07, 0x10
DW_CFA_def_cfa, DW_CFA_def_cfa_offset, DW_CFA_offset = 0x0C, 0x0E, 0x80
DW_CFA_advance_loc, DW_CFA_advance_loc1, DW_CFA_advance_loc2, DW_CFA_advance_loc4 = \
    0x40, 0x02, 0x03, 0x04
DWARF_RSP, DWARF_RIP = 7, 16        # register numbers; rip is the return address column
                                    # (x86-64 psABI, 3.6.2)
CIE_ID = 0xFFFF_FFFF                # a .debug_frame CIE, not an FDE (DWARF 4, 6.4.1)
DWARF_VERSION = 4
# The standard opcodes' operand counts (DWARF 4, 6.2.5.2): opcodes 1..12.
STANDARD_OPCODE_LENGTHS = bytes([0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1])
LINE_BASE, LINE_RANGE = -5, 14      # only used by special opcodes, which we never emit

PRODUCER = 'sprat assembler'


# --------------------------------------------------------------------------
# Encodings
# --------------------------------------------------------------------------

def uleb128(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low first, high bit = more follows."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def sleb128(value: int) -> bytes:
    """Signed LEB128: as uleb128, until the rest is all sign."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        done = (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40)
        out.append(byte | (0 if done else 0x80))
        if done:
            return bytes(out)


def cstring(text: str) -> bytes:
    return text.encode() + b'\0'


class StringTable:
    """An ELF string table: offset 0 is the empty name."""

    def __init__(self) -> None:
        self.data = bytearray(b'\0')
        self._offsets: dict[str, int] = {'': 0}

    def add(self, text: str) -> int:
        if text not in self._offsets:
            self._offsets[text] = len(self.data)
            self.data += cstring(text)
        return self._offsets[text]


# --------------------------------------------------------------------------
# What the program's labels are: functions from one label to the next
# --------------------------------------------------------------------------

def functions(program) -> list[tuple[str, int, int]]:
    """(name, start, size) of each label, up to the next label or the end.

    Assembly has no functions, only labels; every label is taken to start
    one, which is what `bt` and `info symbol` then name -- the same answer
    the built-in debugger gives (the nearest label at or below).
    """
    starts = sorted(program.symbols.items(), key=lambda item: item[1])
    found = []
    for i, (name, start) in enumerate(starts):
        if not program.base <= start < program.end:
            continue        # an `.equ` constant or the end label: not code
        if found and found[-1][1] == start:
            continue        # two labels at one address: the first names it
        end = program.end
        for _, later in starts[i + 1:]:
            if later > start:
                end = min(later, program.end)
                break
        found.append((name, start, end - start))
    return found


# --------------------------------------------------------------------------
# DWARF
# --------------------------------------------------------------------------

def line_program(program, main_file: str) -> tuple[bytes, list[str]]:
    """.debug_line for the program: one sequence over all its code."""
    files = [main_file] + sorted({f for _, f, _ in program.source_lines} - {main_file})
    number = {name: i + 1 for i, name in enumerate(files)}     # DWARF 4 files count from 1

    header = bytearray()
    header += bytes([1, 1, 1])           # minimum_instruction_length, max ops, default_is_stmt
    header += struct.pack('<bBB', LINE_BASE, LINE_RANGE, len(STANDARD_OPCODE_LENGTHS) + 1)
    header += STANDARD_OPCODE_LENGTHS
    header += b'\0'                      # no include_directories: names are whole
    for name in files:
        header += cstring(name) + uleb128(0) + uleb128(0) + uleb128(0)
    header += b'\0'

    rows = bytearray()
    rows += b'\0' + uleb128(9) + bytes([DW_LNE_set_address]) + struct.pack('<Q', program.base)
    address, file, line = program.base, 1, 1
    for row_address, row_file, row_line in program.source_lines:
        if number[row_file] != file:
            file = number[row_file]
            rows += bytes([DW_LNS_set_file]) + uleb128(file)
        if row_line != line:
            rows += bytes([DW_LNS_advance_line]) + sleb128(row_line - line)
            line = row_line
        if row_address != address:
            rows += bytes([DW_LNS_advance_pc]) + uleb128(row_address - address)
            address = row_address
        rows.append(DW_LNS_copy)
    if program.end != address:
        rows += bytes([DW_LNS_advance_pc]) + uleb128(program.end - address)
    rows += b'\0' + uleb128(1) + bytes([DW_LNE_end_sequence])

    after_length = struct.pack('<HI', DWARF_VERSION, len(header)) + header + rows
    return struct.pack('<I', len(after_length)) + after_length, files


def abbreviations() -> bytes:
    """.debug_abbrev: code 1 the compile unit, code 2 a subprogram."""
    def entry(code, tag, children, attributes):
        out = uleb128(code) + uleb128(tag) + bytes([children])
        for attribute, form in attributes:
            out += uleb128(attribute) + uleb128(form)
        return out + b'\0\0'

    unit = entry(1, DW_TAG_compile_unit, DW_CHILDREN_yes, [
        (DW_AT_name, DW_FORM_string), (DW_AT_comp_dir, DW_FORM_string),
        (DW_AT_producer, DW_FORM_string), (DW_AT_language, DW_FORM_data2),
        (DW_AT_stmt_list, DW_FORM_sec_offset), (DW_AT_low_pc, DW_FORM_addr),
        (DW_AT_high_pc, DW_FORM_data8)])
    subprogram = entry(2, DW_TAG_subprogram, DW_CHILDREN_no, [
        (DW_AT_name, DW_FORM_string), (DW_AT_external, DW_FORM_flag_present),
        (DW_AT_low_pc, DW_FORM_addr), (DW_AT_high_pc, DW_FORM_data8)])
    return unit + subprogram + b'\0'


def debug_info(program, main_file: str, comp_dir: str) -> bytes:
    """.debug_info: the compile unit (its line table at offset 0) and its labels."""
    dies = bytearray(uleb128(1))
    dies += cstring(main_file) + cstring(comp_dir) + cstring(PRODUCER)
    dies += struct.pack('<HIQQ', DW_LANG_Mips_Assembler, 0, program.base, len(program.code))
    for name, start, size in functions(program):
        dies += uleb128(2) + cstring(name) + struct.pack('<QQ', start, size)
    dies += b'\0'       # end of the unit's children
    after_length = struct.pack('<HIB', DWARF_VERSION, 0, 8) + dies
    return struct.pack('<I', len(after_length)) + after_length


def debug_frame(program, outermost) -> bytes:
    """.debug_frame: one CIE (at an entry, the CFA is rsp + 8 and the return
    address is just below it), and an FDE per run of adjacent instructions
    that emulator/debug/frames.py gives a rule: "the CFA is rsp + depth",
    changing as the run goes; or, for code an outermost label reaches, "the
    return address is undefined" with a constant CFA, the label's address,
    so that the frame keeps one identity while it runs (DWARF 4, 6.4)."""
    def padded(body: bytes) -> bytes:      # entries are a multiple of 8 bytes long
        body += bytes(-(len(body) + 4) % 8)   # DW_CFA_nop is 0
        return struct.pack('<I', len(body)) + body

    at_entry = (bytes([DW_CFA_def_cfa]) + uleb128(DWARF_RSP) + uleb128(RETURN_ADDRESS)
                + bytes([DW_CFA_offset | DWARF_RIP]) + uleb128(1))     # CFA - 8: factor -8
    cie = padded(struct.pack('<IB', CIE_ID, DWARF_VERSION) + b'\0'    # no augmentation
                 + bytes([8, 0]) + uleb128(1) + sleb128(-8) + uleb128(DWARF_RIP) + at_entry)
    out = bytearray(cie)
    for start, end, rules in rule_runs(program, frame_rules(program, outermost)):
        out += padded(struct.pack('<IQQ', 0, start, end - start) + rules)   # CIE at offset 0
    return bytes(out)


def rule_runs(program, rules: dict):
    """(start, end, CFA instructions) of each run of adjacent instructions
    whose rules one FDE says: depths, or one outermost frame."""
    sizes = {address: len(statement) for address, statement in program.statements()}
    runs = []               # [start, end, kind, [(address, rule), ...]]
    for address in sorted(rules):
        rule = rules[address]
        kind = rule if isinstance(rule, Outermost) else "depth"
        if runs and runs[-1][1] == address and runs[-1][2] == kind:
            runs[-1][1] = address + sizes[address]
            runs[-1][3].append((address, rule))
        else:
            runs.append([address, address + sizes[address], kind, [(address, rule)]])
    for start, end, kind, rows in runs:
        yield start, end, cfa_instructions(start, kind, rows)


def cfa_instructions(start: int, kind, rows) -> bytes:
    """An FDE's instructions: for an outermost frame, a constant CFA and no
    return address; else the CFA's offset from rsp, row by row as it changes."""
    if isinstance(kind, Outermost):
        expression = bytes([DW_OP_constu]) + uleb128(kind.entry)
        return (bytes([DW_CFA_def_cfa_expression]) + uleb128(len(expression)) + expression
                + bytes([DW_CFA_undefined]) + uleb128(DWARF_RIP))
    out, at, depth = bytearray(), start, None
    for address, rule in rows:
        if rule == depth:
            continue
        if depth is not None:
            out += advance(address - at)
            at = address
        out += bytes([DW_CFA_def_cfa_offset]) + uleb128(rule)
        depth = rule
    return bytes(out)


def advance(delta: int) -> bytes:
    """DW_CFA_advance_loc in its shortest form (the code alignment factor is 1)."""
    if delta < 0x40:
        return bytes([DW_CFA_advance_loc | delta])
    if delta < 0x100:
        return bytes([DW_CFA_advance_loc1, delta])
    if delta < 0x10000:
        return bytes([DW_CFA_advance_loc2]) + struct.pack('<H', delta)
    return bytes([DW_CFA_advance_loc4]) + struct.pack('<I', delta)


# --------------------------------------------------------------------------
# ELF
# --------------------------------------------------------------------------

def symbol_table(program, text_index: int, main_file: str, names: StringTable) -> bytes:
    """.symtab: the null symbol, the file, then every label as a global function."""
    def symbol(name, info, section, value, size):
        return struct.pack('<IBBHQQ', names.add(name), info, 0, section, value, size)

    out = symbol('', 0, 0, 0, 0)
    out += symbol(main_file, (STB_LOCAL << 4) | STT_FILE, SHN_ABS, 0, 0)
    for name, start, size in functions(program):
        out += symbol(name, (STB_GLOBAL << 4) | STT_FUNC, text_index, start, size)
    return out


def program_elf(program, name: str, comp_dir: str, main_file: str | None = None,
                outermost=()) -> bytes:
    """The ELF-64 bytes of `program`'s symbols and line table (see the module doc).

    main_file: the compile unit's name; by default the file of the first line.
    outermost: labels where a backtrace ends (nothing called them).
    """
    if main_file is None:
        main_file = program.source_lines[0][1] if program.source_lines else name
    debug_line, _ = line_program(program, main_file)
    section_names, symbol_names = StringTable(), StringTable()
    text_index = 1
    symtab = symbol_table(program, text_index, main_file, symbol_names)

    # (name, type, flags, address, data, link, info, entry size, alignment)
    sections = [
        (f'.text.{name}', SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, program.base,
         program.code, 0, 0, 0, 16),
        ('.symtab', SHT_SYMTAB, 0, 0, symtab, 3, 2, SYMBOL_SIZE, 8),   # link: .strtab
        ('.strtab', SHT_STRTAB, 0, 0, bytes(symbol_names.data), 0, 0, 0, 1),
        ('.debug_line', SHT_PROGBITS, 0, 0, debug_line, 0, 0, 0, 1),
        ('.debug_info', SHT_PROGBITS, 0, 0, debug_info(program, main_file, comp_dir),
         0, 0, 0, 1),
        ('.debug_abbrev', SHT_PROGBITS, 0, 0, abbreviations(), 0, 0, 0, 1),
        ('.debug_frame', SHT_PROGBITS, 0, 0, debug_frame(program, outermost), 0, 0, 0, 8),
    ]
    for section in sections:
        section_names.add(section[0])
    section_names.add('.shstrtab')
    sections.append(('.shstrtab', SHT_STRTAB, 0, 0, bytes(section_names.data), 0, 0, 0, 1))

    body = bytearray()
    headers = [bytes(SECTION_HEADER_SIZE)]          # section 0 is the null section
    for sname, stype, flags, address, data, link, info, entsize, align in sections:
        offset = ELF_HEADER_SIZE + len(body)
        offset += -offset % align
        body += bytes(offset - ELF_HEADER_SIZE - len(body)) + data
        headers.append(struct.pack('<IIQQQQIIQQ', section_names.add(sname), stype, flags,
                                   address, offset, len(data), link, info, align, entsize))
    table_offset = ELF_HEADER_SIZE + len(body)
    table_offset += -table_offset % 8
    body += bytes(table_offset - ELF_HEADER_SIZE - len(body))

    ident = b'\x7fELF' + bytes([ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE]) + bytes(8)
    header = ident + struct.pack('<HHIQQQIHHHHHH', ET_EXEC, EM_X86_64, EV_CURRENT,
                                 program.base, 0, table_offset, 0, ELF_HEADER_SIZE, 0, 0,
                                 SECTION_HEADER_SIZE, len(headers), len(headers) - 1)
    return header + bytes(body) + b''.join(headers)
