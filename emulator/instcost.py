"""What privileged instructions and trap delivery cost, in modeled cycles.

A core's clock counts one cycle per instruction (emulator/core.py). That
is about right for `add`, but not for the instructions a kernel lives on:
`syscall` and `sysret` are microcoded and serialize the pipeline, `mov cr3`
throws the TLB away, `wrmsr` waits for the pipeline to drain, and the
delivery of an exception or interrupt reads a gate from the IDT and pushes
a frame before the handler's first instruction. The machine's topology says
what each costs in all (its optional [instructions] table, with a source
beside every number: emulator/interconnect/presets/); this module charges
the difference.

How, without a Python call on every instruction (host speed):

  * `syscall` and delivery: the core already has a hook for each
    (UC_HOOK_INSN for syscall, the interrupt hook for exceptions, and the
    scheduler's interrupt check); it charges `core.syscall_cycles` and
    `core.delivery_cycles`, which InstructionCosts sets.
  * the others (`sysret`, `iretq`, `mov cr3`, `invlpg`, `wrmsr`, `swapgs`):
    the loader tells us where they are (`find_instruction_sites`, like the
    `pause` sites of emulator/cost.py), and each site of a kind the table
    charges gets a block hook over the straight run of instructions that
    leads to it: the engine translates code in blocks that end at a jump, so
    a block that holds the site starts somewhere in that run, and the hook
    runs once as such a block starts, charging the site if the block will
    reach it in this quantum (`Core.charge_ahead`, which takes the charge
    back if the quantum ends or a fault comes first). Not a code hook on the site:
    while the core counts its quantum, the engine checks every instruction
    it runs against every code hook's range, so each one slows all of the
    core's code (measured: four code hooks on addresses never run cost the
    host a tenth of its messages per second; block hooks, nothing). The
    price: the instructions before the site in its block run with its cost
    already on the clock, so a tracked access among them is charged as if
    it came that much later (the CPU driver's blocks that end in sysret,
    iretq or mov cr3 touch no channel; a program's could). Every
    program has a virtual base of its own (cpudriver/layout.py), so an
    address names one instruction machine-wide and the hook charges the
    kind the loader found there.

What an instruction "costs in all" includes the one cycle every instruction
counts, so a core charges the table's figure minus one; `interrupt` is no
instruction and is charged whole.
"""

from bisect import bisect_left, bisect_right
from typing import NamedTuple

from unicorn import UC_HOOK_BLOCK
from unicorn.unicorn_py3.unicorn import HOOK_CODE_CFUNC

from emulator.assembler import is_one_instruction

# Prefixes an instruction may carry before its opcode: operand and address
# size, rep, segment overrides (REX comes after them).
LEGACY_PREFIXES = frozenset(b"\x66\x67\xf2\xf3\x2e\x36\x3e\x26\x64\x65")
MAX_INSTRUCTION = 15        # bytes: the longest x86 instruction

# The instructions charged at their sites (syscall is charged by its own hook).
SITE_KINDS = ("sysret", "iretq", "mov_cr3", "invlpg", "wrmsr", "swapgs")
# The engine makes a block of at most this many instructions (QEMU's
# TCG_MAX_INSNS): a run longer than that may hold several.
MAX_BLOCK = 512


def opcode_at(code: bytes) -> int:
    """Where the opcode of the instruction `code` begins: past its legacy
    prefixes and its REX byte, if any."""
    at = 0
    while at < len(code) and code[at] in LEGACY_PREFIXES:
        at += 1
    if at < len(code) and 0x40 <= code[at] <= 0x4F:        # REX
        at += 1
    return at


def classify(code: bytes) -> str | None:
    """Which privileged instruction `code` begins with, or None.

    Names as in a topology's [instructions]: syscall, sysret, iretq,
    mov_cr3, invlpg, wrmsr, swapgs.
    """
    at = opcode_at(code)
    opcode = code[at:at + 3]
    if opcode[:1] == b"\xcf":
        return "iretq"                                      # (iretd too: same cost)
    if len(opcode) < 2 or opcode[0] != 0x0F:
        return None
    second = opcode[1]
    modrm = opcode[2] if len(opcode) > 2 else None
    if second == 0x05:
        return "syscall"
    if second == 0x07:
        return "sysret"
    if second == 0x30:
        return "wrmsr"
    if second == 0x22 and modrm is not None and (modrm >> 3) & 7 == 3:
        return "mov_cr3"
    if second == 0x01 and modrm is not None:
        if modrm == 0xF8:
            return "swapgs"
        if (modrm >> 3) & 7 == 7 and modrm >> 6 != 3:
            return "invlpg"
    return None


class Site(NamedTuple):
    """A privileged instruction the loader found: its kind, and the straight
    run of instructions that leads to it (their addresses, its own last)."""
    kind: str
    run: tuple[int, ...]


def ends_run(code: bytes) -> bool:
    """Whether `code` begins with a control transfer: the engine ends a
    block after every one, so no block runs on from it into the next
    instruction (jumps, calls, returns, int, iret, syscall, sysret, hlt)."""
    at = opcode_at(code)
    first = code[at] if at < len(code) else None
    second = code[at + 1] if at + 1 < len(code) else None
    if first is None:
        return False
    if 0x70 <= first <= 0x7F or 0xE0 <= first <= 0xE3:    # jcc, loop, jrcxz
        return True
    if first in (0xC2, 0xC3, 0xCA, 0xCB, 0xCC, 0xCD, 0xCF, 0xE8, 0xE9, 0xEB, 0xF4):
        return True                                        # ret, int, iret, call, jmp, hlt
    if first == 0xFF and second is not None and (second >> 3) & 7 in (2, 3, 4, 5):
        return True                                        # indirect call and jmp
    if first == 0x0F and second is not None:               # jcc near, syscall, sysret,
        return 0x80 <= second <= 0x8F or second in (0x05, 0x07, 0x34, 0x35)  # sysenter, sysexit
    return False


def block_starts(program, addresses) -> set[int]:
    """Which of `addresses`, statements of an assembled program, a
    translation block starts at on every way to them: where a block hook
    runs exactly when a code hook on the statement's first instruction
    would.

    The engine ends a block after every control transfer (ends_run) and
    starts one wherever a jump lands or the core resumes. So a statement
    whose statement before is one such instruction, ending where it
    begins, is entered only at a block's start: a poll loop's `pause`
    after its branch, code after a call that returns to it. Any other
    statement (a straight run into it, or the program's first) may be in
    the middle of a block. (The proof assumes what the assembler's code
    does: no jump lands inside the statement before. And a code hook is
    also called on other code at its address, a block hook only where that
    code starts a block; every program is linked at an address of its
    own, cpudriver/layout.py, so no other code is there.) Data, even data
    whose first bytes are a jump, ends no block: the statement before must
    be exactly one instruction (assembler.is_one_instruction, asked only
    of the statements before `addresses`: it costs a disassembly each).
    """
    statements = program.statements()
    before = {address: previous for previous, (address, _) in zip(statements, statements[1:])}

    def ends_a_block(at, statement):
        return ends_run(statement) and is_one_instruction(statement, at)
    return {address for address in addresses
            if address in before and ends_a_block(*before[address])}


def find_instruction_sites(program) -> dict[int, Site]:
    """{address: Site} of the privileged instructions a hook may charge
    (SITE_KINDS) in an assembled program, from the start of each statement
    the assembler placed (programs mix code and data; data read as code
    only lengthens a run, which costs a hook call, not a wrong charge)."""
    code, base = program.code, program.base
    starts = sorted({address for address, _, _ in program.source_lines})

    def at(address):
        return code[address - base:address - base + MAX_INSTRUCTION]

    sites = {}
    for i, address in enumerate(starts):
        kind = classify(at(address))
        if kind not in SITE_KINDS:
            continue
        first = i
        while first > 0 and i - first < MAX_BLOCK and not ends_run(at(starts[first - 1])):
            first -= 1
        sites[address] = Site(kind, tuple(starts[first:i + 1]))
    return sites


class InstructionCosts:
    """One machine's table of privileged costs, and the hooks that charge them."""

    def __init__(self, machine, costs):
        self.machine = machine
        self.costs = dict(costs)             # name -> cycles in all
        self.sites = set()
        self._keep = []                      # callbacks unicorn holds bare pointers to
        for core in machine.cores:
            core.syscall_cycles = self.extra("syscall")
            core.delivery_cycles = self.costs.get("interrupt", 0)

    def extra(self, kind: str) -> int:
        """Cycles an instruction of `kind` costs beyond the one it counts."""
        return max(self.costs.get(kind, 1) - 1, 0)

    def add_sites(self, sites: dict) -> None:
        """Hook these instructions ({virtual address: Site}) on every core,
        only those whose kind costs more than a cycle: a block hook over the
        run that leads to each (see the top of this module)."""
        charged = {address for address, site in sites.items() if self.extra(site.kind)}
        for address in sorted(charged - self.sites):
            self.sites.add(address)
            site = sites[address]
            for core in self.machine.cores:
                callback = HOOK_CODE_CFUNC(self._block_hook(core, address, site.run,
                                                            self.extra(site.kind)))
                self._keep.append(callback)
                # raw, as emulator/cost.py's hooks: the binding's wrapper
                # would cost more than the work
                core.uc._Uc__do_hook_add(UC_HOOK_BLOCK, callback, site.run[0], address)
                # a block translated before the hook would run without it
                core.uc.ctl_remove_cache(site.run[0], address + 1)

    def _block_hook(self, core, address: int, run: tuple, cycles: int):
        def on_block(_uc, start, size, _data):
            if not start <= address < start + size:
                return                  # a block of the run that ends before the site
            try:
                # the site is this many instructions into the block
                ahead = bisect_right(run, address) - bisect_left(run, start)
                core.charge_ahead(ahead, cycles)
            except BaseException as error:     # a bug in sprat: stop this core, say so
                core.fail(f"internal error in the instruction costs: {error!r}")
        return on_block
