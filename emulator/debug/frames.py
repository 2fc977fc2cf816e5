"""Call frames of assembly: where each instruction's caller is, read from the code.

    rules = frame_rules(program, outermost=("start",))
    rules[0x8001000146]     # -> 24: the return address is at rsp + 24 - 8
    rules[0x8001000003]     # -> Outermost(0x8001000000): nothing called this code

Assembly carries no frame information, and gdb, without it, guesses a
routine's frame from its first instructions (prologue analysis, made for
compilers' code): past a `push rbx`, its `bt` reads a saved register as a
return address and prints frames that are not there. So the ELF files
gdb reads (emulator/debug/elf.py) get call-frame information, made here.

The stack moves only by instructions that say by how much: `push` and
`pop`, `sub rsp, N` and `add rsp, N`, `lea rsp, [rsp + N]`; a `call`
comes back to where it was. So, from each routine's entry (a label some
`call` names, or whose address the code takes, `lea rax, [rip + label]`,
for a `call rax`, or a table holds, `.quad label`), where the return
address is at [rsp] and the frame's CFA is rsp + 8, the code is followed
along every path (both ways at a conditional jump, over calls, to the end
at `ret` or a jump nobody can follow) adding up how far rsp has moved: the
rule at each instruction is "the CFA is rsp + depth". From a label nothing called (`outermost`: a
program's `start`, the CPU driver's entry points) the code it reaches is
one outermost frame: its rule is that there is no caller.

Only what is sure gets a rule. Programs mix code and data, so only
statements that are exactly one instruction are followed
(assembler.is_one_instruction); a path ends where rsp moves in a way not
counted (`mov rsp, ...`, `leave`, `and rsp, -16`); an instruction two
paths reach with two depths gets no rule, nor does what it leads to; a
path never walks into another entry, which has its own. Code no entry
reaches (trap handlers, which an interrupt enters) gets no rule, and gdb
guesses there as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import capstone
from capstone import x86_const as cx

from emulator.assembler import is_one_instruction

RETURN_ADDRESS = 8          # bytes a `call` pushes: the CFA is rsp + 8 at an entry
ENDS_PATH = {"ret", "retf", "iret", "iretd", "iretq", "sysret", "sysretq", "ud2"}
RSP_MOVES = {"push": 1, "pushfq": 1, "pushf": 1, "pop": -1, "popfq": -1, "popf": -1}


@dataclass(frozen=True)
class Outermost:
    """The rule of code an outermost label reaches: no caller (`entry` gives
    the frame its identity, as gdb wants one that holds while it runs)."""
    entry: int


def frame_rules(program, outermost=()) -> dict[int, object]:
    """address -> its rule: an int, the CFA's distance above rsp, or Outermost."""
    code = _instructions(program)
    entries = {program.symbols[name]: Outermost(program.symbols[name])
               for name in outermost if program.symbols.get(name) in code}
    for address in _called(code) + _tabled(program, code):
        entries.setdefault(address, RETURN_ADDRESS)
    rules, unsure = {}, set()
    for entry, rule in entries.items():
        _follow(code, entries, entry, rule, rules, unsure)
    for address in _reached_from(code, entries, unsure):
        rules.pop(address, None)
    return rules


def _instructions(program) -> dict[int, object]:
    """address -> the decoded instruction, for statements that are exactly one."""
    decoder = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    decoder.detail = True
    found = {}
    for address, statement in program.statements():
        if statement and is_one_instruction(statement, address):
            found[address] = next(decoder.disasm(statement, address, count=1))
    return found


def _called(code) -> list[int]:
    """The routines' entries: what a `call` names, and code whose address is taken."""
    entries = []
    for instruction in code.values():
        if instruction.mnemonic == "call":
            target = _immediate_target(instruction)
        elif instruction.mnemonic == "lea":
            target = _rip_relative(instruction)
        else:
            continue
        if target in code:
            entries.append(target)
    return entries


def _tabled(program, code) -> list[int]:
    """Routines a table of addresses holds (`.quad label`, the CPU driver's
    system call table), called through a register loaded from it. Only a
    label's address counts, where that label begins an instruction."""
    labels = set(program.symbols.values())
    found = []
    for address, statement in program.statements():
        if address in code or len(statement) % 8:
            continue
        for word in range(0, len(statement), 8):
            target = int.from_bytes(statement[word:word + 8], "little")
            if target in labels and target in code:
                found.append(target)
    return found


def _follow(code, entries, entry: int, rule, rules: dict, unsure: set) -> None:
    """Walk every path from `entry`, giving each instruction its rule."""
    waiting = [(entry, rule)]
    while waiting:
        address, rule = waiting.pop()
        if address in rules:
            if rules[address] != rule:
                unsure.add(address)
            continue
        rules[address] = rule
        instruction = code[address]
        after = rule if isinstance(rule, Outermost) else _depth_after(instruction, rule)
        for successor in _successors(instruction):
            if successor in code and successor not in entries and after is not None:
                waiting.append((successor, after))


def _depth_after(instruction, depth: int) -> int | None:
    """How far the CFA is above rsp after `instruction`; None if not known
    (or below the return address: no routine pops its caller's words)."""
    depth = _moved(instruction, depth)
    return depth if depth is not None and depth >= RETURN_ADDRESS else None


def _moved(instruction, depth: int) -> int | None:
    mnemonic = instruction.mnemonic
    if mnemonic in RSP_MOVES:
        return depth + 8 * RSP_MOVES[mnemonic]
    if mnemonic in ("call", "syscall") or not _writes_rsp(instruction):
        return depth
    operands = instruction.operands
    if len(operands) == 2 and operands[0].type == cx.X86_OP_REG \
            and operands[0].reg == cx.X86_REG_RSP:
        source = operands[1]
        if mnemonic in ("sub", "add") and source.type == cx.X86_OP_IMM:
            return depth + source.imm if mnemonic == "sub" else depth - source.imm
        if mnemonic == "lea" and source.mem.base == cx.X86_REG_RSP \
                and source.mem.index == 0:
            return depth - source.mem.disp
    return None


def _writes_rsp(instruction) -> bool:
    try:
        return cx.X86_REG_RSP in instruction.regs_access()[1]
    except capstone.CsError:        # capstone cannot say: take it that it does
        return True


def _successors(instruction) -> list[int]:
    """Where the code goes on after `instruction`, as far as can be followed."""
    mnemonic, following = instruction.mnemonic, instruction.address + instruction.size
    target = _immediate_target(instruction)
    if mnemonic == "jmp":
        return [target] if target is not None else []
    if mnemonic in ENDS_PATH:
        return []
    if mnemonic.startswith(("j", "loop")) and target is not None:
        return [target, following]
    return [following]


def _immediate_target(instruction) -> int | None:
    """The address a direct jump or call goes to."""
    if not (instruction.mnemonic.startswith(("j", "loop")) or instruction.mnemonic == "call"):
        return None
    operands = instruction.operands
    if len(operands) == 1 and operands[0].type == cx.X86_OP_IMM:
        return operands[0].imm
    return None


def _rip_relative(instruction) -> int | None:
    """What `lea reg, [rip + d]` computes."""
    source = instruction.operands[1]
    if source.type == cx.X86_OP_MEM and source.mem.base == cx.X86_REG_RIP:
        return instruction.address + instruction.size + source.mem.disp
    return None


def _reached_from(code, entries, starts) -> set[int]:
    """Every instruction a path from `starts` reaches (no entry's own code)."""
    seen, waiting = set(), list(starts)
    while waiting:
        address = waiting.pop()
        if address in seen:
            continue
        seen.add(address)
        waiting += [s for s in _successors(code[address]) if s in code and s not in entries]
    return seen
