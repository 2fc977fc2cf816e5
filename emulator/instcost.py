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
    charges gets a code hook on that one address (only those: a code hook
    slows its core everywhere). Every program has a virtual base of its own
    (cpudriver/layout.py), so an address names one instruction machine-wide
    and the hook charges the kind the loader found there
    (`Core.charge_this_instruction`, which takes the charge back if the
    quantum stops before the instruction after all).

What an instruction "costs in all" includes the one cycle every instruction
counts, so a core charges the table's figure minus one; `interrupt` is no
instruction and is charged whole.
"""

from unicorn import UC_HOOK_CODE
from unicorn.unicorn_py3.unicorn import HOOK_CODE_CFUNC

# Prefixes an instruction may carry before its opcode: operand and address
# size, rep, segment overrides (REX comes after them).
LEGACY_PREFIXES = frozenset(b"\x66\x67\xf2\xf3\x2e\x36\x3e\x26\x64\x65")
MAX_INSTRUCTION = 15        # bytes: the longest x86 instruction

# The instructions charged at their sites (syscall is charged by its own hook).
SITE_KINDS = ("sysret", "iretq", "mov_cr3", "invlpg", "wrmsr", "swapgs")


def classify(code: bytes) -> str | None:
    """Which privileged instruction `code` begins with, or None.

    Names as in a topology's [instructions]: syscall, sysret, iretq,
    mov_cr3, invlpg, wrmsr, swapgs.
    """
    at = 0
    while at < len(code) and code[at] in LEGACY_PREFIXES:
        at += 1
    if at < len(code) and 0x40 <= code[at] <= 0x4F:        # REX
        at += 1
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


def find_instruction_sites(program) -> dict[int, str]:
    """{address: kind} of the privileged instructions a code hook may charge
    (SITE_KINDS) in an assembled program, from the start of each statement
    the assembler placed (programs mix code and data)."""
    code, base = program.code, program.base
    sites = {}
    for address, _, _ in program.source_lines:
        kind = classify(code[address - base:address - base + MAX_INSTRUCTION])
        if kind in SITE_KINDS:
            sites[address] = kind
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
        """Hook these instructions ({virtual address: kind}) on every core,
        only those whose kind costs more than a cycle: every code hook a
        core has slows all of its code, not just the hooked address (the
        engine checks each instruction against every hook's range).
        Measured on amd-2x2's URPC stream, medians of 6 interleaved runs:
        hooking all 20-odd sites of a boot image halved the host's messages
        per second; the CPU driver's sysret and invlpg sites cost about 5%,
        and its one iretq and three mov cr3 sites about 12% more."""
        charged = {address for address, kind in sites.items() if self.extra(kind)}
        for address in sorted(charged - self.sites):
            self.sites.add(address)
            for core in self.machine.cores:
                callback = HOOK_CODE_CFUNC(self._site_hook(core, self.extra(sites[address])))
                self._keep.append(callback)
                # raw, as emulator/cost.py's pause hooks: the binding's
                # wrapper would cost more than the work
                core.uc._Uc__do_hook_add(UC_HOOK_CODE, callback, address, address)
                # a block translated before the hook would run without it
                core.uc.ctl_remove_cache(address, address + 1)

    def _site_hook(self, core, cycles: int):
        def on_site(_uc, _address, _size, _data):
            try:
                core.charge_this_instruction(cycles)
            except BaseException as error:     # a bug in sprat: stop this core, say so
                core.fail(f"internal error in the instruction costs: {error!r}")
        return on_site
