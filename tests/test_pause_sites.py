"""A `pause` that starts a block has a block hook, and it parks a core
exactly as a code hook on it would.

The cost model hooks every `pause` the loader finds (emulator/cost.py,
find_pause_sites). A code hook slows every instruction of its core, so a
pause that only a block can start with (a poll loop's, after its branch)
gets a block hook instead; Core.as_code_hook runs it as the code hook would
run. These tests hold the two to the same cycles, the same parking, and
the same stops, instruction for instruction, on both of the cost model's
paths and at quanta that end right at a pause.
"""

import pytest

from emulator.assembler import assemble_text
from emulator.cost import PAUSE, find_pause_sites
from tests.site_hooks import (CODE, SERVER, assert_seen_alike, block_and_code_hooked,
                              run_site_hooked, workload_options)
from tests.test_hitpath import needs_c, run


SITES = """
start:
    jmp poll
    pause                     # the program's second statement, after a jmp
poll:
    cmp qword ptr [rbx], 0
    jne seen
    pause                     # a poll loop's: after its conditional branch
    jmp poll
seen:
    xor eax, eax
    pause                     # after an instruction that runs on into it
    call poll
    pause                     # where a call returns
    .byte 0x74, 0x00, 0x90
    pause                     # after data whose first bytes are a jz: no one instruction
    ret
"""


def test_a_pause_after_a_branch_is_a_block_start_and_any_other_is_not():
    program = assemble_text(SITES, CODE)
    pauses = [address for address, _, _ in program.source_lines
              if program.code[address - CODE:address - CODE + 2] == PAUSE]
    after_jmp, poll, after_xor, after_call, after_data = pauses
    assert find_pause_sites(program) == {after_jmp: True, poll: True, after_xor: False,
                                         after_call: True, after_data: False}, (
        "a pause was called a block start (or not) against what comes before it")
    first = assemble_text("start:\n    pause\n    jmp start\n", CODE)
    assert find_pause_sites(first) == {CODE: False}, (
        "the program's first statement was called a block start: code before it in "
        "memory may run on into it")


# --- Core.as_code_hook, one instruction at a time ------------------------------------
LOOP = """
start:
    mov ecx, 12
again:
    dec ecx
    jz done
    pause
    jmp again
done:
    xor eax, eax
    out 0xF4, al
"""


def run_hooked(kind: str, quantum: int) -> list:
    """Run LOOP on one core with a hook of `kind` on its pause ("code", or
    "block" through Core.as_code_hook) that stops the core before every
    third pause; what the core saw at each hook and each quantum's end."""
    def locate(program):
        [site] = find_pause_sites(program)
        return site, len(PAUSE)

    def on_pause(core, seen, address, _size):
        seen.append(("pause", address, core.now()))
        if len(seen) % 3 == 0:
            core.stop_before_this_instruction()
    return run_site_hooked(LOOP, kind, quantum, locate, on_pause)


@pytest.mark.parametrize("quantum", [1, 2, 3, 4, 5, 7, 10_000])
def test_a_block_hook_through_as_code_hook_sees_and_stops_as_a_code_hook(quantum):
    code, block = run_hooked("code", quantum), run_hooked("block", quantum)
    assert sum(kind == "pause" for kind, *_ in code) >= 10, "the loop did not pause"
    assert_seen_alike(code, block, quantum, "pause, address, now")


# --- whole workloads: block hooks against code hooks everywhere -----------------------
def code_hooks_only(monkeypatch):
    """Make the loader give every pause site a code hook, as before block hooks."""
    monkeypatch.setattr("kernel.boot.find_pause_sites",
                        lambda program: dict.fromkeys(find_pause_sites(program), False))


WORKLOADS = {
    "stream": dict(topology="amd-2x2", modules=[
        "/userland/urpc_stream.S core=0 role=0 channel=2 count=60",
        "/userland/urpc_stream.S core=2 role=1 channel=2 count=60"]),
    "server": SERVER,
}


@needs_c
@pytest.mark.parametrize("path", ["C", "pure"])
@pytest.mark.parametrize("quantum", [3, 10_000])
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_block_hooked_pauses_park_as_code_hooked_ones(monkeypatch, workload, quantum, path):
    options = workload_options(WORKLOADS[workload], quantum)
    blocks = block_and_code_hooked(monkeypatch, lambda: run(monkeypatch, path, **options),
                                   code_hooks_only, "pauses")
    assert blocks["parks"] > 0, "no core parked: the workload does not exercise the pauses"


def test_every_pause_of_the_poll_loops_in_userland_is_block_hooked(tmp_path):
    # What the speed-up rests on: the library's poll loops (lib/urpc.S,
    # lib/measure.S), the monitor's and the message server's each pause
    # right after a branch.
    from kernel.boot import assemble_image, parse_image
    image = tmp_path / "pauses.lst"
    programs = ["urpc_stream.S", "monitor.S", "msg_server.S"]
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     + "".join(f"module /userland/{name}\n" for name in programs))
    _, modules = assemble_image(parse_image(image))
    for name, program in zip(programs, modules):
        sites = find_pause_sites(program)
        assert sites and all(sites.values()), (
            f"userland/{name}: the pauses at {[hex(a) for a, block in sites.items() if not block]} "
            f"keep a code hook, which slows every instruction of their core")
