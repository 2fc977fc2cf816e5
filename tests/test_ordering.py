"""Tracked accesses reach the directory in modeled-time order, at every quantum.

The scheduler gives the core it runs a horizon (emulator/scheduler.py), and
an instruction begun past it stops before its first access to a tracked
line, to run again once the cores ready earlier have run (emulator/cost.py,
emulator/core.py defer_this_instruction). These tests hold the machine to
what a user relies on: cores polling one line and woken by one write are
served one after another, by their clocks, whatever the quantum; and the
unicorn behaviour the stop rests on (an instruction stopped at a memory
access runs again whole, only the store it stopped at already made).
"""

import pytest
from unicorn import UC_ARCH_X86, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MODE_64, Uc
from unicorn import x86_const as x86

from emulator.assembler import assemble_text
from emulator.interconnect import load_topology
from kernel.boot import boot_image
from tests.conftest import write_image

READERS = 6          # cores 1..6 poll the line; core 0 writes it

POLLER = """
# Polls the first word of channel 40 until core 0 writes it, then prints
# when its read of the written line completed (rdtsc: the modeled clock).
start:
    mov rbx, USER_CHANNELS + 40 * 4096
poll:
    mov rax, qword ptr [rbx]
    test rax, rax
    jnz seen
    pause
    jmp poll
seen:
    rdtsc
    shl rdx, 32
    lea rdi, [rax + rdx]
    call print_u64
    xor edi, edi
    call exit
"""

WRITER = """
# Lets the pollers park, then writes the line they poll once.
start:
    mov ecx, 20000
work:
    dec ecx
    jnz work
    mov rbx, USER_CHANNELS + 40 * 4096
    mov qword ptr [rbx], 1
    xor edi, edi
    call exit
"""


def read_done_times(tmp_path, quantum):
    """{reader core: modeled time its read of the written line completed}."""
    topology = load_topology("amd-4x4")
    programs = {"writer": WRITER, **{f"poller{core}": POLLER for core in range(1, READERS + 1)}}
    args = {"writer": "core=0 channels=40",
            **{f"poller{core}": f"core={core} channels=40" for core in range(1, READERS + 1)}}
    image = write_image(tmp_path, programs, args)
    lines = []
    system = boot_image(image, cores=topology.n_cores(), topology=topology, quantum=quantum,
                        output=lambda core, line: lines.append((core, line)), timing="detailed")
    result = system.machine.run(max_cycles=10**7)
    assert result.clean, f"the pollers did not all see the write: {result.reason}"
    # rdtsc ran 3 instructions after the load: its completion is 3 cycles before.
    return {core: int(line) - 3 for core, line in lines if line.isdigit()}, system


@pytest.fixture(scope="module")
def by_quantum(tmp_path_factory):
    return {quantum: read_done_times(tmp_path_factory.mktemp(f"q{quantum}"), quantum)
            for quantum in (1, 7, 50, 1_000, 10_000)}


def test_readers_woken_by_one_write_finish_one_occupancy_apart(by_quantum):
    done, system = by_quantum[10_000]
    assert sorted(done) == list(range(1, READERS + 1)), f"not every reader printed: {done}"
    directory = system.machine.cost.directory
    [line] = [address for address in directory.tracked_lines()
              if directory.line_stats(address)["transfers"] == READERS]
    order = sorted(done, key=lambda core: (done[core], core))
    for earlier, later in zip(order, order[1:]):
        # The writer keeps the line (M, then O): each read is a transfer from it.
        occupancy = directory.transfer(later, 0, line)
        assert done[later] - done[earlier] == occupancy, (
            f"core {later}'s read finished {done[later] - done[earlier]} cycles after core "
            f"{earlier}'s, not one transfer ({occupancy} cycles) later: reads of one line "
            f"were not served one at a time ({done})")


def test_readers_woken_by_one_write_finish_at_the_same_times_at_every_quantum(by_quantum):
    times = {quantum: done for quantum, (done, _) in by_quantum.items()}
    assert len({tuple(sorted(done.items())) for done in times.values()}) == 1, (
        f"the readers' modeled times differ by quantum: {times}")


# -- the unicorn behaviour the stop rests on --

CODE = 0x1000
DATA = 0x3000


@pytest.mark.parametrize("instruction, nth_access", [
    ("mov qword ptr [rsi], 7", 1),       # a store: made, then undone by the machine
    ("add qword ptr [rsi], 5", 1),       # read-modify-write, stopped at its read
    ("push rax", 1),                         # a store and a register
    ("pop rax", 1),
    ("rep movsq", 3),                        # the second element's read: one element done
    ("lock xadd qword ptr [rsi], rax", 1),
])
def test_an_instruction_stopped_at_a_memory_access_runs_again_whole(instruction, nth_access):
    # Stopped from a memory hook, unicorn leaves the core as a page fault at
    # that access would: RIP on the instruction, its registers as before it
    # (or, for a string instruction, after its last whole element); only the
    # store it stopped at is already in memory. Resumed after that store's
    # bytes are put back, the instruction gives what it gives unstopped.
    code = assemble_text(f"{instruction}\nhlt\n", base=CODE).code

    def run(stop):
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.mem_map(CODE, 0x1000)
        uc.mem_map(DATA, 0x1000)
        uc.mem_write(CODE, code)
        uc.mem_write(DATA, bytes(range(64)))
        for register, value in ((x86.UC_X86_REG_RSP, DATA + 0x40), (x86.UC_X86_REG_RAX, 9),
                                (x86.UC_X86_REG_RSI, DATA), (x86.UC_X86_REG_RDI, DATA + 0x20),
                                (x86.UC_X86_REG_RCX, 2)):
            uc.reg_write(register, value)
        seen, undo = [0], []

        def on_access(uc, kind, address, size, _value, _data):
            seen[0] += 1
            if stop and seen[0] == nth_access:
                undo.append((address, bytes(uc.mem_read(address, size))))
                uc.emu_stop()
        uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, on_access, begin=DATA, end=DATA + 0xFFF)
        uc.emu_start(CODE, 0, count=10)
        if stop:
            assert uc.reg_read(x86.UC_X86_REG_RIP) == CODE, \
                f"{instruction}: stopped at an access, RIP left the instruction"
            for address, data in undo:
                uc.mem_write(address, data)
            stop = False
            uc.emu_start(CODE, 0, count=10)
        registers = [uc.reg_read(r) for r in (x86.UC_X86_REG_RAX, x86.UC_X86_REG_RSP,
                                              x86.UC_X86_REG_RSI, x86.UC_X86_REG_RDI,
                                              x86.UC_X86_REG_RCX, x86.UC_X86_REG_RIP)]
        return registers, bytes(uc.mem_read(DATA, 0x48))

    assert run(stop=True) == run(stop=False), (
        f"{instruction}: stopped at its memory access {nth_access} and run again, it did not "
        f"give what it gives unstopped")


def test_shared_lines_updated_in_place_cost_the_same_at_every_quantum(monkeypatch):
    # Before the horizon, a core updated its lines many times over in one
    # quantum while they stayed in its cache, and the shm bench had to
    # measure at a quantum of 1 instruction.
    import sprat.bench.shm_vs_msg as bench
    topology = load_topology("amd-4x4")
    costs = {}
    for quantum in (1, 10_000):
        monkeypatch.setattr(bench, "FINE_QUANTUM", quantum)
        costs[quantum] = bench.measure_shm(topology, 4, 2, 10, 3)["cycles_per_update"]
    assert costs[1] == costs[10_000], (
        f"an update of shared lines costs {costs[1]} cycles at quantum 1 and {costs[10_000]} "
        f"at 10,000")
