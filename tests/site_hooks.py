"""One core running a loop whose one site (a `pause`, a fence) has a code
hook, or a block hook through Core.as_code_hook: what the core saw at each
call of the hook and at each quantum's end. tests/test_pause_sites.py and
tests/test_fence_sites.py hold the two kinds of hook alike with it.
"""

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE

from emulator.assembler import assemble_text
from emulator.interconnect.topology import generic, load_topology
from emulator.machine import Machine

CODE = 0x10000
NOWHERE = 0x90000          # no code there


def run_site_hooked(source: str, kind: str, quantum: int, locate, on_site) -> list:
    """Run `source` on one core at `quantum`, its site hooked by a hook of
    `kind` ("code", or "block" through Core.as_code_hook).

    `locate(program)` -> (address, size) of the site; `on_site(core, seen,
    address, size)` is what the hook does (it records into `seen`). The
    result is `seen`, with ("quantum", retired, rip, cycles) after each
    quantum.
    """
    machine = Machine(1, topology=generic(1), quantum=quantum)
    program = assemble_text(source, CODE)
    machine.memory.write(CODE, program.code)
    site, size = locate(program)
    core = machine.cores[0]
    seen = []

    def hook(address, size):
        on_site(core, seen, address, size)

    # A code hook where nothing runs, in both runs, as a booted machine has
    # on its CPU driver's fences: unicorn 2.1.4 counts one instruction more
    # after the port write that switches the machine off when its counting
    # hook is a core's only code hook (verified by experiment).
    core.uc.hook_add(UC_HOOK_CODE, lambda *_: None, begin=NOWHERE, end=NOWHERE)
    if kind == "code":
        core.uc.hook_add(UC_HOOK_CODE, lambda _uc, address, size, _data: hook(address, size),
                         begin=site, end=site)
    else:
        core.uc.hook_add(UC_HOOK_BLOCK, lambda _uc, address, _size, _data:
                         core.as_code_hook(hook, address, size), begin=site, end=site)
    machine.power_on(CODE)
    run_one = core.run

    def run_and_record(*args, **options):
        retired = run_one(*args, **options)
        seen.append(("quantum", retired, core.rip, core.cycles))
        return retired
    core.run = run_and_record
    result = machine.run(max_cycles=10**5)
    assert result.clean, f"the loop failed: {result.reason}"
    return seen



def assert_seen_alike(code: list, block: list, quantum: int, events: str) -> None:
    """run_site_hooked's record with a code hook and with a block hook agree
    event for event (`events`: what a hook's event holds, for the message)."""
    for step, (by_code, by_block) in enumerate(zip(code, block)):
        assert by_code == by_block, (
            f"quantum {quantum}, event {step}: the code hook saw {by_code}, the block hook "
            f"{by_block} (events: {events}; quantum, retired, rip, cycles)")
    assert len(code) == len(block), "one hook ran more often than the other"

# What a whole workload's run gives (tests/test_hitpath.py, run) that must not
# change with how its sites are hooked.
SAME_EITHER_WAY = ("result", "output", "cores", "core_stats", "parks", "deferred", "lines")


def block_and_code_hooked(monkeypatch, observe, code_hooks_only, sites: str, keys=()):
    """`observe()` (a workload's run, a dict) with its `sites` ("pauses",
    "fences") block-hooked where they start a block, then with
    `code_hooks_only(monkeypatch)` in force; assert the two runs agree on
    SAME_EITHER_WAY and `keys`, and return the block-hooked one."""
    blocks = observe()
    code_hooks_only(monkeypatch)
    codes = observe()
    assert blocks["result"][0], f"the workload failed: {blocks['result'][1]}"
    for key in (*SAME_EITHER_WAY, *keys):
        assert blocks[key] == codes[key], (
            f"{key} differ with the {sites} block-hooked and code-hooked: "
            f"{blocks[key]} against {codes[key]}")
    return blocks


# A message server and its clients: every pause and the library's barrier.
SERVER = dict(topology="amd-2x2", modules=[
    "/userland/msg_server.S core=0 lines=4 clients=3 updates=20 warmup=5 channels=0-4",
    "/userland/msg_client.S clients=3 updates=20 warmup=5 channels=0-4"])


def workload_options(workload: dict, quantum: int) -> dict:
    """A workload (its topology named, its modules) as the options of
    tests/test_hitpath.py's run()."""
    return dict(workload, topology=load_topology(workload["topology"]), quantum=quantum)
