"""Privileged instructions and trap delivery cost what the topology says.

Each guest is a tiny ring-0 program (paging off, as a core starts) that
runs one privileged instruction LOOPS times and switches the machine off.
It runs on a one-core machine once with the instruction's cost in [instructions] and
once without: the difference in modeled cycles must be LOOPS times what
the instruction costs beyond the one cycle every instruction counts (a
delivery, which is no instruction, is charged whole), and so must each
cost a preset cites, beside the rest of its table. The costs must be the
same on the C and the pure Python cost-model paths, and the same run twice
gives the same cycles.
"""

import dataclasses
import struct

import pytest
from unicorn import UC_HOOK_CODE

from emulator import hitpath
from emulator.assembler import assemble_text
from emulator.instcost import classify, find_instruction_sites
from emulator.interconnect.topology import generic, list_presets, load_topology
from emulator.machine import Machine
from tests.test_machine import COMMON, GDT, IDT, PRELUDE

CODE = 0x10000
LOOPS = 10
MSR_EFER, MSR_STAR, MSR_LSTAR = 0xC000_0080, 0xC000_0081, 0xC000_0082

# What runs LOOPS times (edi counts), with what it needs set up before.
GUESTS = {
    "invlpg": ("", "invlpg [rsp]"),
    "mov_cr3": ("mov rax, cr3", "mov cr3, rax"),
    "wrmsr": ("", "mov ecx, 0xC0000102\n    xor eax, eax\n    xor edx, edx\n    wrmsr"),
    "swapgs": ("", "swapgs"),
    "iretq": ("", "mov rax, rsp\n    push 0\n    push rax\n    pushfq\n    push 8\n"
                  "    lea rax, [rip + back]\n    push rax\n    iretq\nback:"),
    "interrupt": ("", "int 0x40"),
    # to ring 3 by sysret and back by syscall: both run once a loop
    "sysret": (f"""mov ecx, {MSR_EFER}
    rdmsr
    or eax, 1                           # EFER.SCE: syscall and sysret on
    wrmsr
    mov ecx, {MSR_STAR}
    xor eax, eax
    mov edx, 0x00130008                 # sysret: CS 0x23, SS 0x1b; syscall: CS 8
    wrmsr
    mov ecx, {MSR_LSTAR}
    lea rax, [rip + entry]
    xor edx, edx
    wrmsr""", """lea rcx, [rip + user]
    mov r11, 2
    sysret
user:
    syscall
entry:"""),
}
GUESTS["syscall"] = GUESTS["sysret"]


def guest(kind: str) -> str:
    setup, body = GUESTS[kind]
    return f"""
start:
    mov rsp, 0x7000
    PRELUDE
    {setup}
    mov edi, {LOOPS}
again:
    {body}
    dec edi
    jnz again
    xor eax, eax
    out 0xF4, al
"""


def run(kind: str, costs: tuple, setup=None, quantum=None) -> int:
    """Modeled cycles beyond its instruction count of core 0 running the
    `kind` guest with these costs (the last instruction, the one that
    switches the machine off, is not always counted)."""
    topology = dataclasses.replace(generic(1), instruction_costs=costs)
    options = {} if quantum is None else {"quantum": quantum}
    machine = Machine(topology.n_cores(), topology=topology, **options)
    source = guest(kind).replace("PRELUDE", PRELUDE.format(n=0))
    program = assemble_text(source + COMMON, CODE)
    memory = machine.memory
    memory.write(CODE, program.code)
    memory.write(GDT, struct.pack("<QQ", 0, 0x00AF9A000000FFFF))
    handler = program.symbols["handler"]
    memory.write(IDT + 0x40 * 16, struct.pack("<HHBBHII", handler & 0xFFFF, 8, 0, 0x8E,
                                              (handler >> 16) & 0xFFFF, handler >> 32, 0))
    machine.cost.instructions.add_sites(find_instruction_sites(program))
    if setup:
        setup(machine, program)
    machine.power_on(CODE)
    result = machine.run(max_cycles=10**6)
    assert result.clean, f"the {kind} guest failed: {result.reason}"
    core = machine.cores[0]
    return core.cycles - core.stats.instructions


@pytest.mark.parametrize("kind", sorted(GUESTS))
def test_each_privileged_instruction_costs_what_the_table_says(kind):
    cost = 300
    charged = cost if kind == "interrupt" else cost - 1
    free, costly = run(kind, ()), run(kind, ((kind, cost),))
    assert costly - free == LOOPS * charged, (
        f"{LOOPS} x {kind} at {cost} cycles each added {costly - free} cycles, "
        f"expected {LOOPS * charged}")


@pytest.mark.parametrize("preset", list_presets())
def test_each_cost_a_preset_cites_shows_in_the_machines_cycles(preset):
    # The preset's whole table, against the same table without the one
    # kind: the other kinds a guest runs (syscall beside sysret) cancel out.
    costs = load_topology(preset).instruction_costs
    for kind, cost in costs:
        charged = cost if kind == "interrupt" else cost - 1
        others = tuple((name, cycles) for name, cycles in costs if name != kind)
        added = run(kind, costs) - run(kind, others)
        assert added == LOOPS * charged, (
            f"{preset}: {LOOPS} x {kind} at the cited {cost} cycles each added {added} "
            f"cycles, expected {LOOPS * charged}")


# J. Stecklina's round trip through an interrupt gate, `int` and the
# `iretq` back (x86.lol, 2019), which each preset splits between the
# delivery and the iretq.
MEASURED_INT_ROUND_TRIP = 614


@pytest.mark.parametrize("preset", list_presets())
def test_an_int_and_its_iretq_cost_the_measured_round_trip_on_every_preset(preset):
    # The delivery and the handler's `iretq` cost the measured round trip
    # together; the run without a table already counts the iretq's one
    # cycle (and the int's, which is no part of the delivery's charge).
    costs = load_topology(preset).instruction_costs
    added = run("interrupt", costs) - run("interrupt", ())
    assert added == LOOPS * (MEASURED_INT_ROUND_TRIP - 1), (
        f"{preset}: {LOOPS} int/iretq round trips added {added} cycles, expected "
        f"{LOOPS * (MEASURED_INT_ROUND_TRIP - 1)} (the measured {MEASURED_INT_ROUND_TRIP} "
        "each, less the cycle the iretq counts anyway)")


@pytest.mark.parametrize("kind", ["sysret", "invlpg", "interrupt"])
def test_instruction_costs_are_the_same_on_the_c_and_the_pure_path(kind, monkeypatch):
    if hitpath.why_pure() is not None:
        pytest.skip(f"the C hit path is not in use: {hitpath.why_pure()}")
    costs = (("syscall", 27), ("sysret", 35), ("invlpg", 250), ("interrupt", 90),
             ("iretq", 40))
    monkeypatch.delenv(hitpath.PURE_ENV, raising=False)
    c = run(kind, costs)
    monkeypatch.setenv(hitpath.PURE_ENV, "1")
    assert run(kind, costs) == c, f"{kind}: the pure Python path charged other cycles"


def test_an_instruction_stopped_before_is_charged_once_when_it_runs():
    # A debugger's breakpoint is a later code hook on the same address: it
    # stops the core before the instruction our hook just charged.
    stops = []

    def breakpoint_on_the_site(machine, program):
        core = machine.cores[0]
        site = program.symbols["again"]           # the loop's invlpg

        def stop_there(_uc, _address, _size, _data):
            if len(stops) < 3:
                stops.append(core.now())
                core.stop_before_this_instruction()
        core.uc.hook_add(UC_HOOK_CODE, stop_there, begin=site, end=site)
    free = run("invlpg", ())
    stopped = run("invlpg", (("invlpg", 300),), setup=breakpoint_on_the_site)
    assert len(stops) == 3, "the breakpoint should have stopped the core three times"
    assert stopped - free == LOOPS * 299, (
        f"with the core stopped before invlpg three times, {LOOPS} invlpg cost "
        f"{stopped - free} cycles, expected {LOOPS * 299}")


@pytest.mark.parametrize("quantum", [1, 2, 3, 5])
def test_a_quantum_that_ends_before_an_instruction_in_its_block_charges_it_once(quantum):
    # The iretq guest's loop is eight instructions in one block, iretq its
    # last: a hook charges it as the block starts, and must not when the
    # quantum will end first, nor twice when the next quantum runs on.
    costs = (("iretq", 300),)
    added = run("iretq", costs, quantum=quantum) - run("iretq", (), quantum=quantum)
    assert added == LOOPS * 299, (
        f"at a quantum of {quantum} instructions, {LOOPS} iretq at 300 cycles added "
        f"{added} cycles, expected {LOOPS * 299}")


def test_the_same_run_twice_charges_the_same_cycles():
    costs = (("syscall", 27), ("sysret", 35))
    assert run("sysret", costs) == run("sysret", costs)


@pytest.mark.parametrize("source, kind", [
    ("syscall", "syscall"), ("sysret", "sysret"), ("iretq", "iretq"), ("swapgs", "swapgs"),
    ("wrmsr", "wrmsr"), ("invlpg [rsp]", "invlpg"), ("invlpg [r8]", "invlpg"),
    ("mov cr3, rax", "mov_cr3"), ("mov cr3, r9", "mov_cr3"),
    ("mov cr4, rax", None), ("mov rax, cr3", None), ("lgdt [rax]", None), ("nop", None),
])
def test_the_loader_tells_privileged_instructions_apart(source, kind):
    code = assemble_text(source + "\n", CODE).code
    assert classify(code) == kind, f"{source!r} ({code.hex()}) read as {classify(code)}"


def test_the_cpu_driver_has_its_traps_and_switches_hooked():
    from cpudriver import layout
    from emulator.assembler import assemble_file
    from tests.conftest import ROOT
    kernel = assemble_file(ROOT / "cpudriver" / "cpudriver.S", layout.KERNEL_BASE,
                           defines=layout.defines())
    kinds = {site.kind for site in find_instruction_sites(kernel).values()}
    assert {"sysret", "iretq", "mov_cr3", "invlpg", "swapgs"} <= kinds, (
        f"the CPU driver's sites found: {sorted(kinds)}")
