"""One core running a loop whose one site (a `pause`, a fence) has a code
hook, or a block hook through Core.as_code_hook: what the core saw at each
call of the hook and at each quantum's end. tests/test_pause_sites.py and
tests/test_fence_sites.py hold the two kinds of hook alike with it.
"""

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE

from emulator.assembler import assemble_text
from emulator.interconnect.topology import generic
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
