"""A fence that starts a block has a block hook, and it waits for its store
buffer exactly as a code hook on it would.

In detailed timing `mfence`, `sfence` and every locked instruction wait
for their core's store buffer to drain; the cost model hooks each one the
loader finds (emulator/interconnect/storebuffer.py, find_fence_sites). A
code hook slows every instruction of its core, so a fence that only a
block can start with (after a branch, a call or a return) gets a block
hook instead, as a poll loop's pause does (tests/test_pause_sites.py);
Core.as_code_hook runs it as the code hook would run. These tests hold the
two to the same cycles and the same drains, instruction for instruction,
at quanta that end right at a fence, and on the TSO litmus tests.
"""

import pytest
from unicorn import UC_HOOK_CODE

from emulator.assembler import assemble_text
from emulator.interconnect import load_topology
from emulator.interconnect.storebuffer import FenceSite, StoreBuffer, find_fence_sites
from emulator.interconnect.topology import generic
from emulator.machine import Machine
from tests.site_hooks import (CODE, NOWHERE, SERVER, assert_seen_alike,
                              block_and_code_hooked, run_site_hooked, workload_options)
from tests.test_hitpath import needs_c, run
from tests.test_tso import LITMUS, ROUNDS, SCHEDULES, store_buffering

FENCE = StoreBuffer.fence


# --- what the tests compare --------------------------------------------------------------
def code_hooks_only(monkeypatch):
    """Make the loader give every fence site a code hook, as before block hooks."""
    monkeypatch.setattr("kernel.boot.find_fence_sites", lambda program: {
        address: site._replace(starts_block=False)
        for address, site in find_fence_sites(program).items()})


def drains(monkeypatch) -> list:
    """Every fence the store buffers run from now on: (core, when, what, cycles)."""
    log = []

    def logged(buffer, now, kind):
        cycles = FENCE(buffer, now, kind)
        log.append((buffer.core_id, now, kind, cycles))
        return cycles
    monkeypatch.setattr(StoreBuffer, "fence", logged)
    return log


# --- which fences start a block ----------------------------------------------------------
SITES = """
start:
    mfence                    # the program's first statement
    jmp ahead
    sfence                    # after a jmp
ahead:
    test eax, eax
    jz done
    lock inc qword ptr [rbx]  # after a conditional branch
    mov eax, 1
    xchg qword ptr [rbx], rax # after an instruction that runs on into it
    call ahead
    lock or qword ptr [rsp], 0   # where a call returns
    .byte 0x74, 0x00, 0x90
    mfence                    # after data whose first bytes are a jz: no one instruction
done:
    ret
"""


def test_a_fence_after_a_branch_or_a_call_is_a_block_start_and_any_other_is_not():
    program = assemble_text(SITES, CODE)
    sites = find_fence_sites(program)
    first, after_jmp, after_jcc, after_mov, after_call, after_data = sorted(sites)
    assert {address: site.starts_block for address, site in sites.items()} == {
        first: False, after_jmp: True, after_jcc: True, after_mov: False,
        after_call: True, after_data: False}, (
        "a fence was called a block start (or not) against what comes before it")
    assert [sites[address].size for address in sorted(sites)] == [3, 3, 4, 3, 6, 3], (
        "a fence site's size is not its instruction's: the block hook reads that many bytes")


# --- Core.as_code_hook on a fence, one instruction at a time -----------------------------
LOOP = """
start:
    mov ecx, 12
again:
    dec ecx
    jz done
    mfence
    jmp again
done:
    xor eax, eax
    out 0xF4, al
"""
FENCE_WAIT = 40             # what the hook below charges a fence


def run_hooked(kind: str, quantum: int) -> list:
    """Run LOOP on one core with a hook of `kind` on its mfence ("code", or
    "block" through Core.as_code_hook) that charges the fence as the cost
    model's does (Core.charge_this_instruction) and stops the core before
    every third one; what the core saw at each hook and each quantum's end."""
    def locate(program):
        [(site, fence)] = find_fence_sites(program).items()
        assert fence == FenceSite(3, True), "LOOP's mfence is not a block start, as it must be"
        return site, fence.size

    def on_fence(core, seen, address, size):
        seen.append(("fence", address, size, core.now()))
        core.charge_this_instruction(FENCE_WAIT)
        if len(seen) % 3 == 0:
            core.stop_before_this_instruction()
    return run_site_hooked(LOOP, kind, quantum, locate, on_fence)


@pytest.mark.parametrize("quantum", [1, 2, 3, 4, 5, 7, 10_000])
def test_a_block_hooked_fence_is_charged_and_stopped_as_a_code_hooked_one(quantum):
    code, block = run_hooked("code", quantum), run_hooked("block", quantum)
    assert sum(kind == "fence" for kind, *_ in code) >= 10, "the loop ran no fences"
    assert_seen_alike(code, block, quantum, "fence, address, size, now")


# --- a fence whose block holds an instruction charged ahead ------------------------------
CHARGED = """
start:
    mov ecx, 12
again:
    jmp fence
fence:
    mfence                    # a block start; the block's invlpg is charged as it starts
    nop
    invlpg [rax]
    dec ecx
    jnz again
    xor eax, eax
    out 0xF4, al
"""


def run_charged(monkeypatch, kind: str) -> tuple:
    """Run CHARGED on one core in detailed timing, its mfence hooked by a
    hook of `kind`, after the instruction costs, as the loader does; the
    drains and the core's clock."""
    from emulator.instcost import find_instruction_sites
    machine = Machine(1, topology=generic(1), timing="detailed")
    program = assemble_text(CHARGED, CODE)
    machine.memory.write(CODE, program.code)
    machine.cost.instructions.add_sites(find_instruction_sites(program))
    sites = find_fence_sites(program)
    assert all(site.starts_block for site in sites.values()), "CHARGED's mfence starts no block"
    if kind == "code":
        sites = {address: site._replace(starts_block=False) for address, site in sites.items()}
    log = drains(monkeypatch)
    # A code hook where nothing runs, as in run_hooked above.
    machine.cores[0].uc.hook_add(UC_HOOK_CODE, lambda *_: None, begin=NOWHERE, end=NOWHERE)
    machine.cost.add_fence_sites(sites)
    machine.power_on(CODE)
    result = machine.run(max_cycles=10**6)
    assert result.clean, f"the program failed: {result.reason}"
    return log, machine.cores[0].cycles


def test_a_block_hooked_fence_sees_what_its_block_was_charged_ahead(monkeypatch):
    # The instruction costs charge the block's invlpg as the block starts,
    # before any code hook runs: the fence's block hook must run after
    # theirs to wait from the same clock.
    code, block = run_charged(monkeypatch, "code"), run_charged(monkeypatch, "block")
    assert len(code[0]) == 12, f"the mfence drained the buffer {len(code[0])} times, not 12"
    assert block == code, (f"the block-hooked mfence drained at {block[0]}, ending at cycle "
                           f"{block[1]}; the code-hooked one at {code[0]}, ending at {code[1]}")


# --- whole programs: the TSO litmus tests, block hooks against code hooks ----------------
def store_buffering_run(monkeypatch, tmp_path, fence: str, quantum: int, seed) -> dict:
    """The store-buffering litmus test with `fence` between each side's store
    and load (test_tso.py), on cores 0 and 2 of amd-2x2: what it printed, and
    every core's clock, count and drains, and the bytes of every fence
    block-hooked."""
    from kernel import boot
    from tests.conftest import write_image
    side_0, side_1 = store_buffering(fence)
    source = LITMUS.replace("ROUNDS", str(ROUNDS)).replace("PARTNER", "2") \
                   .replace("SIDE_0", side_0).replace("SIDE_1", side_1)
    image = write_image(tmp_path, {"litmus": source}, {"litmus": "channels=5"})
    topology = load_topology("amd-2x2")
    log, output, found = drains(monkeypatch), [], []
    find = boot.find_fence_sites

    def finding(program):
        found.append((program, find(program)))
        return found[-1][1]
    monkeypatch.setattr(boot, "find_fence_sites", finding)
    system = boot.boot_image(image, cores=topology.n_cores(), topology=topology,
                             quantum=quantum, seed=seed, timing="detailed",
                             output=lambda core, line: output.append((core, line)))
    result = system.machine.run(max_cycles=10**8)
    assert result.clean, f"the litmus program failed: {result.reason}"
    return {"output": output, "drains": log, "cycles": result.cycles,
            "cores": [(core.cycles, core.stats.instructions) for core in system.machine.cores],
            "block_hooked": [program.code[address - program.base:][:site.size]
                             for program, sites in found for address, site in sites.items()
                             if site.starts_block]}


# The fence as the litmus test has it, after the store (a code hook), and
# after a jump to it (a block hook).
FENCES = {
    "mfence": "mfence",
    "mfence, a block start": "jmp 1f\n1:\n    mfence",
    "lock or": "lock or qword ptr [rsp - 8], 0",
    "lock or, a block start": "jmp 1f\n1:\n    lock or qword ptr [rsp - 8], 0",
}


@pytest.mark.parametrize("quantum, seed", [SCHEDULES[i] for i in (0, 1, 3, 4, 6)])
@pytest.mark.parametrize("fence", sorted(FENCES))
def test_block_hooked_fences_drain_as_code_hooked_ones(monkeypatch, tmp_path, fence, quantum,
                                                       seed):
    (tmp_path / "block").mkdir()
    (tmp_path / "code").mkdir()
    blocks = store_buffering_run(monkeypatch, tmp_path / "block", FENCES[fence], quantum, seed)
    code_hooks_only(monkeypatch)
    codes = store_buffering_run(monkeypatch, tmp_path / "code", FENCES[fence], quantum, seed)
    instruction = FENCES[fence].split("\n")[-1]
    kind = instruction.split()[0].replace("lock", "locked")
    assert sum(drained == kind for _, _, drained, _ in blocks["drains"]) >= 2 * ROUNDS, (
        f"the litmus test's fences ({fence}) did not drain the store buffers")
    hooked = blocks["block_hooked"].count(assemble_text(instruction, 0).code)
    assert hooked == (2 if "block start" in fence else 0), (
        f"{fence}: {hooked} of the litmus test's two fences are block-hooked")
    for key in ("output", "cycles", "cores", "drains"):
        assert blocks[key] == codes[key], (
            f"quantum {quantum}, seed {seed}, {fence}: {key} differ with the fences "
            f"block-hooked and code-hooked: {blocks[key]} against {codes[key]}")


def test_fast_timing_hooks_no_fence(tmp_path):
    # Fast timing has no store buffers, so nothing for a fence to wait for:
    # a hook there would only slow the core.
    from kernel.boot import boot_image
    from tests.conftest import write_image
    side_0, side_1 = store_buffering(FENCES["mfence, a block start"])
    source = LITMUS.replace("ROUNDS", "1").replace("PARTNER", "2") \
                   .replace("SIDE_0", side_0).replace("SIDE_1", side_1)
    image = write_image(tmp_path, {"litmus": source}, {"litmus": "channels=5"})
    fast = boot_image(image, cores=4, topology=load_topology("amd-2x2"), timing="fast")
    assert fast.machine.cost.fence_sites == set(), (
        "fast timing hooked fences, which have no store buffer to wait for there")
    detailed = boot_image(image, cores=4, topology=load_topology("amd-2x2"), timing="detailed")
    assert detailed.machine.cost.fence_sites, "detailed timing hooked no fence"


def test_the_userland_librarys_fences_are_block_hooked(tmp_path):
    # What the speed-up rests on: measure.S's arrive and barrier (every
    # bench's) each begin a function, after the one before's `ret`.
    from kernel.boot import assemble_image, parse_image
    image = tmp_path / "fences.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule /userland/urpc_stream.S\n")
    _, [program] = assemble_image(parse_image(image))
    sites = find_fence_sites(program)
    assert len(sites) == 2 and all(site.starts_block for site in sites.values()), (
        f"userland/lib: the fences at {[hex(a) for a, s in sites.items() if not s.starts_block]} "
        f"keep a code hook, which slows every instruction of their core ({len(sites)} sites)")


# --- whole workloads: the library's barrier on a tracked line, on both paths -------------
WORKLOADS = {
    "shm": dict(topology="amd-2x2", modules=[
        "/userland/shm_update.S clients=4 lines=2 updates=10 warmup=3 channels=0-1"]),
    "server": SERVER,
}


@needs_c
@pytest.mark.parametrize("path", ["C", "pure"])
@pytest.mark.parametrize("quantum", [3, 10_000])
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_block_hooked_barriers_drain_as_code_hooked_ones(monkeypatch, workload, quantum, path):
    # The library's `barrier` and `arrive` (userland/lib/measure.S) are
    # locked instructions on a channel line: block-hooked, and what the
    # memory hook may stop before, past the horizon.
    options = workload_options(WORKLOADS[workload], quantum)
    def observed():
        log = drains(monkeypatch)
        return dict(run(monkeypatch, path, **options), drains=log)
    blocks = block_and_code_hooked(monkeypatch, observed, code_hooks_only, "fences",
                                   keys=("drains",))
    assert any(kind == "locked" for _, _, kind, _ in blocks["drains"]), "no barrier ran"
