"""Monitor 0 boots the other cores (issue 6), as in Barrelfish.

An image module line with the word `monitor` makes that program a monitor
(layout.MODULE_FLAG_MONITOR in the module table, DCB_FLAG_MONITOR in its
dispatcher). If core 0 runs one, the BSP's CPU driver leaves the APs off
and the monitor starts them with SYS_START_CORE (cpudriver/boot.S,
userland/monitor_boot.S); otherwise the CPU driver starts them at boot as
it always did. These tests watch who sends the INIT IPIs and when, and
what SYS_START_CORE answers to monitors and to everyone else.
"""

import re

from unicorn import UC_HOOK_CODE
from unicorn import x86_const as x86

from cpudriver import layout
from emulator.devices.apic import DELIVERY_INIT
from kernel.boot import cores_started
from tests.conftest import ROOT, boot_and_run, write_image

TWOPHASE = ROOT / "images" / "twophase.lst"
SHOOTDOWN = ROOT / "images" / "shootdown.lst"
EPERM, EBUSY, EINVAL = 1, 16, 22

# Tries SYS_START_CORE on core -1, on core `cores` (one past the last), on
# every core in turn and on core 1 again, printing "start_core C: R" each.
START_CORES = """
start:
    mov r13, rsi                      # r13 = how many cores
    mov rdi, -1
    call attempt
    mov rdi, r13
    call attempt
    xor r12d, r12d
every_core:
    cmp r12, r13
    jae once_more
    mov rdi, r12
    call attempt
    inc r12
    jmp every_core
once_more:
    mov edi, 1
    call attempt
    xor edi, edi
    call exit

attempt:
    push rbx
    push r14
    mov rbx, rdi
    call start_core
    mov r14, rax
    lea rdi, [rip + text_attempt]
    call print_cstr
    mov rdi, rbx
    call print_i64
    lea rdi, [rip + text_colon]
    call print_cstr
    mov rdi, r14
    call print_i64
    lea rdi, [rip + text_newline]
    call print_cstr
    pop r14
    pop rbx
    ret

text_attempt: .asciz "start_core "
text_colon:   .asciz ": "
text_newline: .asciz "\\n"
"""

HELLO = (ROOT / "userland" / "hello.S").read_text().replace('.include "lib/sprat.S"', "")


def answers(run, core) -> dict:
    """{core asked for: [answers, in order]} from the START_CORES program on `core`."""
    found = {}
    for line in run.output(core):
        match = re.fullmatch(r"start_core (-?\d+): (-?\d+)", line)
        if match:
            found.setdefault(int(match[1]), []).append(int(match[2]))
    return found


def watch_core_starts(system):
    """Record, in order, every SYS_START_CORE a CPU driver serves ("call", core,
    argument) and every INIT IPI sent ("init", sender, target)."""
    events = []
    entry = system.kernel.symbols["sys_start_core"]
    for core in system.machine.cores:
        def on_call(uc, address, size, _, core=core):
            events.append(("call", core.id, core.regs.read(x86.UC_X86_REG_RDI)))
        core.uc.hook_add(UC_HOOK_CODE, on_call, begin=entry, end=entry)
        core.uc.ctl_remove_cache(entry, entry + 1)

    def on_ipi(event, source, target, mode, **_):
        if event == "ipi" and mode == DELIVERY_INIT:
            events.append(("init", source, target))
    system.machine.observers.append(on_ipi)
    system.core_start_events = events


def without_monitor_flags(image, directory):
    """The same image with the word `monitor` taken off its module lines."""
    text = image.read_text().replace(" monitor ", " ").replace(" monitor\n", "\n")
    copy = directory / image.name       # (paths starting with / are the sprat tree's)
    copy.write_text(text)
    return copy


def test_the_monitor_flag_reaches_the_module_table_and_the_dispatcher():
    run = boot_and_run(TWOPHASE, cores=4, max_cycles=10**8)
    memory = run.machine.memory
    flags = [memory.read_u64(layout.BOOT_INFO + layout.BI_MODULES + index * layout.MODULE_ENTRY_SIZE
                             + layout.MODULE_FLAGS) for index in range(len(run.system.modules))]
    monitor = layout.MODULE_FLAG_MONITOR
    assert flags == [monitor, monitor, 0, monitor, 0, monitor], \
        "module lines: monitor core=0, monitor core=2, region_user, monitor core=3, " \
        "twophase, monitor (all)"
    core3 = layout.PERCORE_BASE + 3 * layout.PERCORE_SIZE + layout.PC_DISPATCHERS
    dcb_flags = [memory.read_u64(core3 + index * layout.DISPATCHER_SIZE + layout.DCB_FLAGS)
                 for index in range(2)]
    assert dcb_flags == [layout.DCB_FLAG_MONITOR, 0], "core 3: its monitor, then the client"


def test_with_a_monitor_on_core_0_the_aps_are_started_by_its_system_calls_not_at_boot():
    run = boot_and_run(TWOPHASE, cores=4, max_cycles=10**8, setup=watch_core_starts)
    assert run.result.clean, run.result.reason
    events = run.system.core_start_events
    assert events[0][0] == "call", f"an AP was sent INIT before monitor 0 asked: {events}"
    assert events == [("call", 0, 1), ("init", 0, 1), ("call", 0, 2), ("init", 0, 2),
                      ("call", 0, 3), ("init", 0, 3)], \
        "monitor 0 should start cores 1, 2, 3 one system call each, and nobody else any"
    assert cores_started(run.system) == [0, 1, 2, 3]
    assert not [line for _, line in run.lines if "could not start" in line]


def test_without_the_monitor_word_the_cpu_drivers_boot_the_cores_and_it_holds_no_channels(
        tmp_path):
    # Without the word `monitor`, monitor.S is a program like any other: the
    # CPU drivers start the cores, and it holds only the channels it was
    # given (kernel/channels.py), none of the monitors' rings: its first
    # touch of one is a page fault that kills it, on every core.
    image = ROOT / "images" / "shootdown.lst"
    run = boot_and_run(without_monitor_flags(image, tmp_path), cores=4, max_cycles=10**7,
                       setup=watch_core_starts)
    assert run.output(0)[0] == "monitor: could not start core 1: error -1"
    assert [event for event in run.system.core_start_events if event[0] == "init"] \
        == [("init", 0, 1), ("init", 0, 2), ("init", 0, 3)]
    channels = layout.USER_CHANNELS
    for core in range(4):
        faults = [line for line in run.output(core) if "#PF" in line]
        assert faults, f"core {core}: the unflagged monitor touched the monitors' rings unharmed"
        address = int(re.search(r"address (0x[0-9a-f]+)", faults[0]).group(1), 16)
        assert channels <= address < channels + layout.N_USER_CHANNELS * 4096, faults[0]


def test_the_shootdown_demo_still_invalidates_every_core():
    lines = []
    run = boot_and_run(SHOOTDOWN, cores=16, max_cycles=10**8)
    assert run.result.clean, run.result.reason
    assert cores_started(run.system) == list(range(16))
    for _, line in run.lines:
        match = re.fullmatch(r"shootdown protocol \d cores (\d+) cycles \d+ acked (\d+) stale (\d+)",
                             line)
        if match:
            cores, acked, stale = map(int, match.groups())
            assert (acked, stale) == (cores, cores - 1), line
            lines.append(line)
    assert len(lines) == 16, "four protocols over 2, 4, 8 and 16 cores"


def test_a_program_that_is_not_a_monitor_is_refused_and_the_cpu_driver_boots_the_cores(tmp_path):
    image = write_image(tmp_path, {"start_cores": START_CORES, "hello": HELLO},
                        {"start_cores": "core=0"})
    run = boot_and_run(image, cores=4, setup=watch_core_starts)
    assert run.result.clean, run.result.reason
    assert answers(run, 0) == {-1: [-EPERM], 4: [-EPERM], 0: [-EPERM], 1: [-EPERM, -EPERM],
                               2: [-EPERM], 3: [-EPERM]}
    assert [run.output(core) for core in (1, 2, 3)] == \
        [[f"hello from core {core} of 4"] for core in (1, 2, 3)]
    inits = [event for event in run.system.core_start_events if event[0] == "init"]
    assert inits == [("init", 0, 1), ("init", 0, 2), ("init", 0, 3)]
    assert run.system.core_start_events.index(("init", 0, 3)) < \
        run.system.core_start_events.index(("call", 0, 2 ** 64 - 1)), \
        "the CPU driver should have started the APs before any program ran"


def test_a_monitor_on_core_0_starts_each_core_once_and_bad_numbers_are_invalid(tmp_path):
    image = write_image(tmp_path, {"start_cores": START_CORES, "hello": HELLO},
                        {"start_cores": "core=0 monitor"})
    run = boot_and_run(image, cores=4)
    assert run.result.clean, run.result.reason
    assert answers(run, 0) == {-1: [-EINVAL], 4: [-EINVAL], 0: [-EINVAL],
                               1: [0, -EBUSY], 2: [0], 3: [0]}, \
        "expected: no such core and our own core invalid, each other core started once"
    assert [run.output(core) for core in (1, 2, 3)] == \
        [[f"hello from core {core} of 4"] for core in (1, 2, 3)]
    assert cores_started(run.system) == [0, 1, 2, 3]


def test_a_monitor_on_another_core_finds_every_core_busy(tmp_path):
    # core 0 runs hello: the monitors are only on cores 1-3, so the BSP's
    # CPU driver starts the APs; each monitor then finds every core started.
    image = write_image(tmp_path, {"hello": HELLO, "start_cores": START_CORES},
                        {"hello": "core=0", "start_cores": "monitor"})
    run = boot_and_run(image, cores=4)
    assert run.result.clean, run.result.reason
    assert run.output(0) == ["hello from core 0 of 4"]
    for core in (1, 2, 3):
        expected = {-1: [-EINVAL], 4: [-EINVAL], 0: [-EBUSY], 1: [-EBUSY, -EBUSY],
                    2: [-EBUSY], 3: [-EBUSY]}
        expected[core] = [-EINVAL] * len(expected[core])
        assert answers(run, core) == expected, f"core {core}"


def test_an_image_without_monitors_boots_as_before():
    run = boot_and_run(ROOT / "images" / "default.lst", cores=4, setup=watch_core_starts)
    assert run.result.clean, run.result.reason
    assert run.system.core_start_events == [("init", 0, 1), ("init", 0, 2), ("init", 0, 3)]
    assert [run.output(core) for core in range(4)] == \
        [[f"hello from core {core} of 4"] for core in range(4)]
    assert cores_started(run.system) == [0, 1, 2, 3]


def test_monitors_on_fewer_cores_make_a_smaller_system_and_refuse_shootdowns_beyond_it(
        tmp_path, capsys):
    # monitors=4 on an 8-core machine: a system of 4 cores on that board
    # (sprat bench tlb boots one per core count). Shootdowns over 2 and 4
    # cores run; one over 8 is refused, and the program says so and fails.
    from sprat.cli import main
    image = tmp_path / "four.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     "module /userland/monitor.S core=0 monitor monitors=4\n"
                     "module /userland/shootdown.S core=0 protocols=1 counts=0x8A "
                     "channels=1536-1537\n"
                     "module /userland/monitor.S monitor monitors=4\n")
    status = main(["boot", str(image), "--cores", "8"])
    out = capsys.readouterr().out
    measured = re.findall(r"shootdown protocol 0 cores (\d+) cycles \d+ acked (\d+)", out)
    assert measured == [("2", "2"), ("4", "4")], out
    assert "monitor 0 refused a shootdown over 8 cores" in out, out
    assert status == 1, "a refused shootdown must fail the boot"
