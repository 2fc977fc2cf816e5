"""The cost model's C path (emulator/_hitpath.c) changes how fast, never what.

Each workload runs twice, once on the C path and once on the pure Python
path (SPRAT_PURE_COST_MODEL=1), and everything the model computes must
come out the same: program output, every core's cycles and instructions,
the directory's counters for every core and every line, the MOESI state of
every line in every cache, how often cores park. The workloads cover what
the C path touches: streams of hits and misses, lines many cores fight
over (interleaved one instruction at a time), cores parked in poll loops,
accesses that straddle two lines, code of another dispatcher where one has
its `pause`.

Below the workloads, the C hooks are called directly, access by access:
the memory hook against the Python directory (random accesses by up to 64
cores, every MOESI transition, causality waits, lines with parked cores),
and the pause hook against Python's reading of the code at every address
around a `pause`.

Where the C path is not built the comparisons are skipped, except in CI
(CI=true): there it must be built, and a test fails if it is not.
"""

import ctypes
import dataclasses
import os
import random
import sys
import tempfile
from pathlib import Path

import pytest

from emulator import hitpath
from emulator.core import NO_HORIZON, Core
from emulator.interconnect import load_topology
from emulator.interconnect.coherence import CoherenceDirectory
from emulator.interconnect.storebuffer import (LOCKED, MFENCE, SFENCE, StoreBuffer, Visibility,
                                               spec_for)
from tests.conftest import write_image

needs_c = pytest.mark.skipif(hitpath.why_pure() is not None,
                             reason=f"the C hit path is not in use: {hitpath.why_pure()}")


def test_ci_runs_the_c_hit_path():
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        pytest.skip("only CI insists on the C hit path (CI=true)")
    assert hitpath.why_pure() is None, (
        f"CI must run the C hit path, but the cost model takes the pure Python path: "
        f"{hitpath.why_pure()}")


def test_forcing_the_pure_path_is_reported(monkeypatch):
    monkeypatch.setenv(hitpath.PURE_ENV, "1")
    assert hitpath.describe() == f"pure Python ({hitpath.PURE_ENV}=1)"
    monkeypatch.setenv(hitpath.PURE_ENV, "0")
    assert hitpath.describe() == ("C" if hitpath.why_pure() is None else
                                  f"pure Python ({hitpath.why_pure()})")



def test_a_directory_that_is_not_the_trees_runs_on_the_pure_path(tmp_path, monkeypatch):
    # A lab workspace's copy of coherence.py (lab 6): the C code mirrors the
    # tree's directory and would serve most accesses without calling the copy.
    import importlib.util
    from emulator.interconnect import coherence
    copy = tmp_path / "coherence.py"
    copy.write_text(Path(coherence.__file__).read_text())
    spec = importlib.util.spec_from_file_location("copied_coherence", copy)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    reason = hitpath.why_pure(module.CoherenceDirectory)
    assert reason is not None and str(copy) in reason, (
        f"a copy of the directory would run on the C path, which never calls it: {reason}")
    assert hitpath.why_pure(CoherenceDirectory) == hitpath.why_pure(), (
        "the tree's own directory is treated as someone else's")

# --- running one workload on either path ------------------------------------------------
ACCESS = CoherenceDirectory.access
STOP_BEFORE = Core.stop_before_this_instruction
UNMAKE = Core._unmake_deferred_stores
STALE_CHECK = Visibility.load


def counting(monkeypatch, cls, name, function):
    """Replace cls.name by `function` that counts its calls; the count, in a list."""
    calls = [0]

    def counted(*args):
        calls[0] += 1
        return function(*args)
    monkeypatch.setattr(cls, name, counted)
    return calls


def run(monkeypatch, path, modules, topology, quantum=None, setup=None, programs=None,
        module_args=None, timing="detailed"):
    """Boot `modules` on `topology` on the given path ("C" or "pure"), run them
    to the end; everything the model computed, as plain data. Detailed
    timing by default: it runs every part of both paths."""
    from emulator.scheduler import DEFAULT_QUANTUM
    from kernel.boot import boot_image
    if path == "pure":
        monkeypatch.setenv(hitpath.PURE_ENV, "1")
    else:
        monkeypatch.delenv(hitpath.PURE_ENV, raising=False)
    # How many accesses reach the Python directory (the C path serves most
    # itself), and how many times a core parked in a poll loop.
    directory_calls = counting(monkeypatch, CoherenceDirectory, "access", ACCESS)
    parks = stops_not_deferred(monkeypatch)
    # Loads that may read a stale copy (detailed timing), which C leaves to Python.
    stale_checks = counting(monkeypatch, Visibility, "load", STALE_CHECK)
    deferred = deferrals(monkeypatch)
    output = []
    with tempfile.TemporaryDirectory() as directory:
        if programs:
            image = write_image(Path(directory), programs, module_args)
        else:
            image = Path(directory) / "hitpath.lst"
            image.write_text("kernel /cpudriver/cpudriver.S\n"
                             + "".join(f"module {module}\n" for module in modules))
        system = boot_image(image, cores=topology.n_cores(), topology=topology,
                            quantum=quantum or DEFAULT_QUANTUM, timing=timing,
                            output=lambda core, line: output.append((core, line)))
        machine = system.machine
        assert machine.cost.hit_path.startswith("C" if path == "C" else "pure Python")
        if setup:
            setup(system)
        directory_calls[0] = stale_checks[0] = 0
        result = machine.run(max_cycles=10**9)
    directory = machine.cost.directory
    lines = directory.tracked_lines()
    cores = range(machine.n_cores)
    return {
        "result": (result.clean, result.reason, result.cycles),
        "output": output,
        "cores": [(core.cycles, core.stats.instructions, core.state, core.exit_code)
                  for core in machine.cores],
        "core_stats": [directory.core_stats(core) for core in cores],
        "lines": {line: (directory.line_stats(line), directory.writes(line >> 6),
                         "".join(directory.state(core, line) for core in cores))
                  for line in lines},
        "parks": parks[0],
        "deferred": deferred,
        "directory_calls": directory_calls[0],
        "stale_checks": stale_checks[0],
    }


def stops_not_deferred(monkeypatch) -> list:
    """Count the times a core stopped before an instruction other than to
    keep the directory's order (which the C hook does without Python):
    parking in a poll loop, mostly. The count, in a list."""
    calls = [0]

    def counted(core):
        if not core.clock.deferred:
            calls[0] += 1
        STOP_BEFORE(core)
    monkeypatch.setattr(Core, "stop_before_this_instruction", counted)
    return calls


def deferrals(monkeypatch) -> dict:
    """Count the quanta that stopped before an instruction to keep the
    directory's order (Core.defer_this_instruction, or the C hook's own),
    those with a store to put back and the rest."""
    deferred = {"stores": 0, "others": 0}

    def counted(core):
        deferred["stores" if core._undo or core.clock.undo_size else "others"] += 1
        UNMAKE(core)
    monkeypatch.setattr(Core, "_unmake_deferred_stores", counted)
    return deferred


def assert_same_on_both_paths(monkeypatch, **workload):
    c = run(monkeypatch, "C", **workload)
    pure = run(monkeypatch, "pure", **workload)
    assert c["result"][0], f"the workload failed: {c['result'][1]}; output {c['output'][-3:]}"
    for key in ("result", "output", "cores", "core_stats", "parks", "deferred"):
        assert c[key] == pure[key], f"{key} differ between the C and the pure Python path"
    assert c["lines"].keys() == pure["lines"].keys(), "the paths touched different lines"
    for line, seen in c["lines"].items():
        assert seen == pure["lines"][line], (
            f"line {line:#x}: (stats, writes, MOESI states) {seen} on the C path, "
            f"{pure['lines'][line]} on the pure Python path")
    hits = sum(stats["hits"] for stats in c["core_stats"])
    assert hits > 0, "the workload had no hits: it does not exercise the C path"
    assert c["directory_calls"] < pure["directory_calls"], (
        f"the C path sent {c['directory_calls']} accesses to Python, the pure path "
        f"{pure['directory_calls']}: the accesses were not served in C")
    c["pure_directory_calls"] = pure["directory_calls"]
    return c


# --- the workloads --------------------------------------------------------------------
@needs_c
@pytest.mark.parametrize("timing", ["fast", "detailed"])
def test_a_stream_between_two_cores_is_the_same_on_both_paths(monkeypatch, timing):
    count = 300
    c = assert_same_on_both_paths(
        monkeypatch, topology=load_topology("amd-2x2"), timing=timing,
        modules=[f"/userland/urpc_stream.S core=0 role=0 channel=2 count={count}",
                 f"/userland/urpc_stream.S core=2 role=1 channel=2 count={count}"])
    assert any(line.startswith(f"stream messages {count} ") for _, line in c["output"])
    # Misses are served in C too: what reaches Python is a write that wakes
    # a parked core (one per park), each line's first touch, and in detailed
    # timing a load that may read a stale copy (Visibility.load decides).
    assert c["directory_calls"] <= c["parks"] + len(c["lines"]) + c["stale_checks"], (
        f"{c['directory_calls']} of {c['pure_directory_calls']} accesses reached the Python "
        f"directory for {c['parks']} parks and {c['stale_checks']} loads of lines with "
        f"hidden stores: the C path did not serve the misses")


@needs_c
@pytest.mark.parametrize("timing", ["fast", "detailed"])
def test_a_stream_interleaved_instruction_by_instruction_is_the_same(monkeypatch, timing):
    # A quantum of a few instructions: the clock moves between nearly every
    # access, and a core often stops in the middle of its poll loop.
    assert_same_on_both_paths(
        monkeypatch, topology=load_topology("amd-2x2"), quantum=3, timing=timing,
        modules=["/userland/urpc_stream.S core=0 role=0 channel=1 count=40",
                 "/userland/urpc_stream.S core=1 role=1 channel=1 count=40"])


@needs_c
@pytest.mark.parametrize("timing", ["fast", "detailed"])
def test_lines_many_cores_update_in_place_are_the_same_on_both_paths(monkeypatch, timing):
    from sprat.bench.shm_vs_msg import interleave_finely_after_barrier
    assert_same_on_both_paths(
        monkeypatch, topology=load_topology("amd-2x2"), setup=interleave_finely_after_barrier,
        timing=timing,
        modules=["/userland/shm_update.S clients=4 lines=2 updates=15 warmup=5 channels=0-1"])



@needs_c
def test_contended_lines_at_a_few_instructions_a_quantum_are_the_same_on_both_paths(monkeypatch):
    # Lab 6's contended.lst at quantum 7: loads of stale copies are deferred
    # by the order; the C hook once cleared a core's hidden bit for a load it
    # then deferred, and the two paths ended 238 cycles apart.
    assert_same_on_both_paths(
        monkeypatch, topology=load_topology("amd-2x2"), quantum=7,
        modules=["/userland/shm_update.S clients=4 lines=2 updates=6 warmup=2 channels=0-1"])

@needs_c
def test_a_server_parked_on_many_channels_is_the_same_on_both_paths(monkeypatch):
    c = assert_same_on_both_paths(
        monkeypatch, topology=load_topology("amd-2x2"),
        modules=["/userland/msg_server.S core=0 lines=4 clients=3 updates=30 warmup=5 channels=0-4",
                 "/userland/msg_client.S clients=3 updates=30 warmup=5 channels=0-4"])
    # (10 parks in detailed timing; a stop to keep the order is no park)
    assert c["parks"] > 5, f"only {c['parks']} parks: the workload does not exercise parking"


@needs_c
def test_a_ping_pong_two_hops_apart_is_the_same_on_both_paths(monkeypatch):
    assert_same_on_both_paths(
        monkeypatch, topology=load_topology("amd-4x4"),
        modules=["/userland/urpc_pingpong.S core=0 role=0 send=0 recv=1 rounds=40 warmup=5",
                 "/userland/urpc_pingpong.S core=15 role=1 send=1 recv=0 rounds=40 warmup=5"])


@needs_c
def test_accesses_stopped_before_to_keep_the_order_are_the_same_on_both_paths(monkeypatch):
    # A stream one hop apart: a write wakes the receiver, whose read comes
    # before the sender's next store to the ring, so the sender stops before
    # that store (its bytes put back) and the receiver before reads and
    # pauses that come after the sender's turn, on both paths alike.
    c = assert_same_on_both_paths(
        monkeypatch, topology=load_topology("amd-2x2"),
        modules=["/userland/urpc_stream.S core=0 role=0 channel=2 count=60",
                 "/userland/urpc_stream.S core=2 role=1 channel=2 count=60"])
    assert c["deferred"]["stores"] > 0 and c["deferred"]["others"] > 0, (
        f"deferred {c['deferred']}: the workload does not stop both a store and a load "
        f"before a core ready earlier")


@needs_c
def test_cores_taking_turns_on_the_front_side_bus_are_the_same_on_both_paths(monkeypatch):
    # intel-2x4: eight cores update shared lines; what leaves a die queues
    # for the one bus, whose busy period both paths share.
    from sprat.bench.shm_vs_msg import interleave_finely_after_barrier
    c = assert_same_on_both_paths(
        monkeypatch, topology=load_topology("intel-2x4"), setup=interleave_finely_after_barrier,
        modules=["/userland/shm_update.S clients=8 lines=2 updates=10 warmup=3 channels=0-1"])
    assert sum(stats["waits"] for stats in c["core_stats"]) > 0, "no core ever waited"


@needs_c
@pytest.mark.parametrize("quantum", [1, 50])
def test_stores_hidden_from_stale_copies_are_the_same_on_both_paths(monkeypatch, quantum):
    # The store-buffering litmus test (tests/test_tso.py): each side's load
    # may read a stale copy, rolled back (on both paths, in Python), while
    # the C hook records every store that hides bytes from another core.
    from tests.test_tso import LITMUS, ROUNDS, store_buffering
    side_0, side_1 = store_buffering("")
    source = LITMUS.replace("ROUNDS", str(ROUNDS)).replace("PARTNER", "2") \
                   .replace("SIDE_0", side_0).replace("SIDE_1", side_1)
    c = assert_same_on_both_paths(monkeypatch, topology=load_topology("amd-2x2"), modules=None,
                                  programs={"litmus": source}, quantum=quantum,
                                  module_args={"litmus": "channels=5"})
    both_old = [line for core, line in c["output"] if core == 0 and line.isdigit()]
    assert both_old and int(both_old[0]) > 0, (
        f"no round read a stale copy ({both_old}): the test does not exercise hidden stores")


STRADDLER = """
# Core 0 writes words that straddle two cache lines of channel 3, and one
# word within a line; core 1 reads them back. Both then exit.
start:
    mov r12, rdi
    mov rbx, USER_CHANNELS + 3 * 4096     # channel 3 (userland/lib/urpc.S)
    mov ecx, 60
    test r12, r12
    jnz reader
writer:
    mov qword ptr [rbx + 60], rcx         # bytes 60..67: lines 0 and 1
    mov dword ptr [rbx + 126], ecx        # bytes 126..129: lines 1 and 2
    inc qword ptr [rbx + 192]             # line 3, read then written
    dec ecx
    jnz writer
    jmp done
reader:
    mov rax, qword ptr [rbx + 60]
    add rax, qword ptr [rbx + 192]
    mov edx, dword ptr [rbx + 126]
    dec ecx
    jnz reader
done:
    xor edi, edi
    call exit
"""


@needs_c
def test_accesses_straddling_two_lines_are_the_same_on_both_paths(monkeypatch):
    assert_same_on_both_paths(monkeypatch, topology=load_topology("amd-2x2"), modules=None,
                              programs={"straddler": STRADDLER}, quantum=7,
                              module_args={"straddler": "channels=3"})


POLLER = """
# Polls channel 40, which its neighbour SETTER writes after a while.
start:
    mov ecx, 1
    mov rbx, USER_CHANNELS + 40 * 4096
poll:
    cmp qword ptr [rbx], 0
    jne seen
    pause
    jmp poll
seen:
    lea rdi, [rip + text]
    call print_cstr
    xor edi, edi
    call exit
text: .asciz "the poller saw it\\n"
"""

IMPOSTER = """
# Reads channel 41 in a loop, as a poll loop would, but where POLLER has its
# `pause` (same offset: the code before it is the same length) it has an
# instruction of the same size that is not one: it must never park.
start:
    mov ecx, 1000
    mov rbx, USER_CHANNELS + 41 * 4096
poll:
    cmp qword ptr [rbx], 0
    jne seen
    xor eax, eax
    dec ecx
    jnz poll
seen:
    lea rdi, [rip + text]
    call print_cstr
    xor edi, edi
    call exit
text: .asciz "the imposter never paused\\n"
"""

SETTER = """
start:
    mov ecx, 200000
work:
    dec ecx
    jnz work
    mov rbx, USER_CHANNELS + 40 * 4096
    mov qword ptr [rbx], 1
    xor edi, edi
    call exit
"""


@needs_c
def test_other_code_where_another_dispatcher_pauses_is_the_same_on_both_paths(monkeypatch):
    programs = {"poller": POLLER, "imposter": IMPOSTER, "setter": SETTER}
    c = assert_same_on_both_paths(monkeypatch, topology=load_topology("amd-2x2"), modules=None,
                                  programs=programs,
                                  module_args={name: "core=0 channels=40-41" for name in programs})
    assert [line for _, line in c["output"]] == ["the imposter never paused", "the poller saw it"]
    assert c["parks"] >= 1, "the poller never parked"


def test_the_imposter_has_other_code_where_the_poller_pauses():
    from emulator.assembler import assemble_text
    from emulator.cost import PAUSE, find_pause_sites
    from kernel.boot import user_defines
    from tests.conftest import USER_LIBRARY
    poller, imposter = (assemble_text(f'{source}\n.include "{USER_LIBRARY}"\n', base=0,
                                      defines=user_defines())
                        for source in (POLLER, IMPOSTER))
    [site] = [address for address in find_pause_sites(poller)
              if address < poller.symbols["seen"]]
    assert imposter.code[site:site + 2] != PAUSE and imposter.code[site:site + 2] == b"\x31\xc0", (
        "IMPOSTER's code moved: it no longer has `xor eax, eax` where POLLER has its pause")


# --- the C hooks, access by access -------------------------------------------------
ON_ACCESS = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_int,
                             ctypes.c_int64, ctypes.c_void_p)
ON_PAUSE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32,
                            ctypes.c_void_p)
EMU_STOP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)     # unicorn's uc_emu_stop


class CoreInC:
    """One core's clock, watch and Window, as the cost model sets them up for
    the C memory hook, without a machine: the clock runs at `time`."""

    def __init__(self, core, shared, lines, parked, first, wake, charge, buffer, defer=None):
        self.core = core
        self.buffer = buffer
        self.ran = ctypes.c_uint64(0)             # unicorn's instruction count: none
        # Physical memory to the end of the lines, and unicorn's emu_stop: counted.
        self.memory = (ctypes.c_uint8 * ((first + len(lines)) << 6))()
        self.stops = 0
        self._emu_stop = EMU_STOP(self._stop)
        self.clock = hitpath.SharedClock(quantum=10**12, emu_counter=ctypes.addressof(self.ran),
                                         horizon=NO_HORIZON,
                                         memory=ctypes.addressof(self.memory),
                                         memory_size=len(self.memory),
                                         emu_stop=ctypes.cast(self._emu_stop, ctypes.c_void_p))
        self.watch = hitpath.Watch()
        self.window = hitpath.Window(
            lines=ctypes.addressof(lines), parked=ctypes.addressof(parked), first_line=first,
            n_lines=len(lines), directory=ctypes.addressof(shared),
            clock=ctypes.addressof(self.clock), watch=ctypes.addressof(self.watch),
            buffer=0 if buffer is None else ctypes.addressof(buffer), core=core,
            wake=wake,
            charge=lambda write, address, size, now: charge(self, write, address, size, now),
            defer=defer or (lambda address, size, write: None))

    def access(self, write, address, size, time) -> int:
        """Run the C hook on one access at modeled `time`; the cycles it charged."""
        self.clock.start, self.clock.charged = time, 0
        ON_ACCESS(hitpath._hitpath.on_access)(None, hitpath.UC_MEM_WRITE if write else 16,
                                             address, size, 0, ctypes.addressof(self.window))
        return self.clock.charged

    def watched(self) -> list:
        return list(zip(self.watch.line[:self.watch.count], self.watch.writes[:self.watch.count]))

    def _stop(self, _uc) -> int:
        self.stops += 1
        return 0


@needs_c
@pytest.mark.parametrize("topology_name, merge_reads, buffered", [
    ("amd-4x4", False, True), ("intel-2x4", False, True), ("generic-64", False, True),
    ("amd-4x4", True, True), ("amd-4x4", True, False)])
def test_the_c_memory_hook_follows_the_python_directory_access_by_access(topology_name,
                                                                        merge_reads, buffered):
    # Two directories take the same random accesses: one the Python way
    # (access(), as the pure path's charge() makes it), one through the C
    # hook, with its entries and counters in C memory. After every access:
    # the same cycles, reads watched for parking, states and counters; an
    # access to one known line stayed in C, and a write to a line with
    # parked cores then called Python's wake(). Writes go through each
    # core's store buffer on both sides (a small one, so that it fills),
    # with fences and locked instructions now and then: the same commit
    # times in flight. At the end: every row of coherence.py's table was
    # served in C at least once. Unbuffered (fast timing: merged reads, no
    # store buffer, no fences), a write is the directory's access alone.
    from emulator.interconnect import generic
    topology = generic(64) if topology_name == "generic-64" else load_topology(topology_name)
    n = topology.n_cores()
    first, n_lines = 0x5000 >> 6, 32
    python = CoherenceDirectory(topology, merge_reads=merge_reads)
    shared = CoherenceDirectory(topology, counters=hitpath.counters, merge_reads=merge_reads)
    lines = (hitpath.SharedLine * n_lines)()
    parked = (ctypes.c_int32 * n_lines)()
    shared.keep_lines_in(first, lines)
    shared_in_c = hitpath.share(shared)
    to_python = []

    def wake(line):
        to_python.append(("wake", line))

    def charge(core, write, address, size, now):     # cost.py's charge(), for the C side
        to_python.append(("charge", write, address >> 6))
        line, last = address >> 6, (address + size - 1) >> 6
        stamp = core.clock.start + core.ran.value
        while True:
            if write and buffered:
                cycles = core.buffer.store(line << 6, 8, now, stamp)
            else:
                cycles = shared.access(core.core, line << 6, write, now)
            core.clock.charged += cycles
            if not write:
                core.watch.add(line, shared.writes(line))
            if line == last:
                return
            line, now = line + 1, now + cycles

    def states(address):
        return "".join(python.state(c, address) for c in range(n))

    spec = dataclasses.replace(spec_for(topology), outstanding=3)
    buffers = [StoreBuffer().attach(core, python, spec) for core in range(n)]
    cores = [CoreInC(core, shared_in_c, lines, parked, first, wake, charge,
                     StoreBuffer().attach(core, shared, spec) if buffered else None)
             for core in range(n)]
    clocks = [0] * n
    rng = random.Random(n)
    fences = random.Random(-n)   # fences: its own, so the accesses stay those above
    active = rng.sample(range(n), min(n, 6)) + [n - 1]      # a few cores fight, one is the last
    served_in_c = set()          # (read or write, my state, the others' states) before it
    queued = 0                   # accesses that found their line busy
    stalled = 0                  # accesses after which a store buffer was full
    previous_read = None
    for step in range(6000):
        if previous_read and rng.random() < 0.3:            # read, then write: E -> M
            core, address, size = previous_read
            write = True
        else:
            core, write = rng.choice(active), rng.random() < 0.4
            size = rng.choice((1, 2, 4, 8))
            address = (first << 6) + rng.randrange(n_lines * 64 - size + 1)
        previous_read = None if write else (core, address, size)
        if rng.random() < 0.05:
            parked[rng.randrange(n_lines)] = rng.randrange(2)
        clocks[core] += rng.randrange(0, 400)      # time passes unevenly: causality waits
        if fences.random() < 0.03 and buffered:    # a fence first
            kind = fences.choice((MFENCE, SFENCE, LOCKED))
            waited = buffers[core].fence(clocks[core], kind)
            assert cores[core].buffer.fence(clocks[core], kind) == waited
            clocks[core] += waited
            if kind == LOCKED:                     # the access is the locked instruction's
                buffers[core].locked_at = cores[core].buffer.locked_at = clocks[core]
        del to_python[:]
        line = address >> 6
        known = {address >> 6 for address in python.tracked_lines()}
        before = states(line << 6)
        watched_before = cores[core].watched()
        entry = python._lines.get(line)
        queued += entry is not None and entry.busy_from <= clocks[core] < entry.busy_until
        charged = cores[core].access(write, address, size, clocks[core])
        # The Python way: each line the access touches, one after the other.
        expected, now, reads = 0, clocks[core], []
        for touched in range(line, ((address + size - 1) >> 6) + 1):
            if write and buffered:  # the instruction's stamp: its clock at the start, as in C
                cycles = buffers[core].store(touched << 6, 8, now, clocks[core])
            else:
                cycles = python.access(core, touched << 6, write, now)
            if not write:
                reads.append((touched, python.writes(touched)))
            expected, now = expected + cycles, now + cycles
        where = (f"step {step}: core {core} {'writes' if write else 'reads'} {address:#x}+{size} "
                 f"(states were {before})")
        assert charged == expected, f"{where}: C charged {charged} cycles, Python {expected}"
        if cores[core].watch.overflowed:
            cores[core].watch.clear()
        else:
            assert cores[core].watched() == watched_before + reads, f"{where}: watched reads differ"
        for touched in range(line, ((address + size - 1) >> 6) + 1):
            assert [shared.state(c, touched << 6) for c in range(n)] == list(states(touched << 6)), \
                f"{where}: line {touched:#x}: the MOESI states differ"
            assert shared.line_stats(touched << 6) == python.line_stats(touched << 6), where
            assert shared.writes(touched) == python.writes(touched), where
            assert shared._lines[touched].written_at == python._lines[touched].written_at, \
                f"{where}: line {touched:#x}: the write commits at different times"
        if buffered:
            assert cores[core].buffer.pending() == buffers[core].pending(), \
                f"{where}: the store buffers differ"
            stalled += buffers[core].count == spec.outstanding
        assert shared.core_stats(core) == python.core_stats(core), f"{where}: counters differ"
        if (address + size - 1) >> 6 != line or line not in known:
            assert to_python and to_python[0][0] == "charge", \
                f"{where}: two lines, or a new one, were not left to Python's charge()"
        else:
            wakes = [("wake", line)] if write and parked[line - first] else []
            assert to_python == wakes, (
                f"{where}: called {to_python} in Python, expected {wakes}: the access was not "
                f"served in C, or a write to a line with parked cores did not wake them")
            others = "".join(sorted(set(before[:core] + before[core + 1:]) - {"I"}))
            served_in_c.add(("write" if write else "read", before[core], others))
    for c in range(n):
        assert shared.core_stats(c) == python.core_stats(c), f"core {c}'s counters differ"
    # Every row of coherence.py's table, in C.
    for case in [("read", "I", "M"), ("read", "I", "E"), ("read", "I", "OS"), ("read", "I", "S"),
                 ("read", "S", "O"), ("write", "E", ""), ("write", "M", ""), ("write", "S", "S"),
                 ("write", "O", "S"), ("write", "I", "M"), ("write", "I", "S")]:
        assert case in served_in_c, f"{case}: never served in C by this test"
    assert sum(shared.core_stats(c)["waits"] for c in range(n)) > 0, "no causality waits tested"
    assert list(shared.bus) == list(python.bus), "the bus's busy period differs"
    if topology.family == "intel-fsb":
        assert shared.bus[1] > 0, "no transaction took the bus: the bus was not tested"
    assert queued > 0, "no access found its line busy: the ordering point was not tested"
    assert stalled > 0 or not buffered, \
        "no store buffer was ever full: waiting for room was not tested"


def core_with_a_line_another_core_wrote(defer):
    """A CoreInC for core 0 of amd-2x2 whose one line core 1 took after core 0
    read it (its next read is a transfer), horizon 500; its directory."""
    topology = load_topology("amd-2x2")
    first = 0x5000 >> 6
    shared = CoherenceDirectory(topology, counters=hitpath.counters)
    lines = (hitpath.SharedLine * 4)()
    parked = (ctypes.c_int32 * 4)()
    shared.keep_lines_in(first, lines)

    def charge(core, write, address, size, now):    # a line's first touch: cost.py's charge()
        core.clock.served = core.ran.value
        core.clock.charged += shared.access(core.core, address, write, now)

    core = CoreInC(0, hitpath.share(shared), lines, parked, first, lambda line: None, charge,
                   StoreBuffer().attach(0, shared, spec_for(topology)), defer)
    core.keep = lines, parked
    address = first << 6
    core.access(False, address, 8, 0)      # the line's first touch, in Python
    shared.write(1, address, now=10)       # core 1 takes it
    core.clock.horizon = 500
    return core, shared


@needs_c
@pytest.mark.parametrize("write", [False, True])
def test_the_c_memory_hook_stops_before_an_instruction_begun_past_the_horizon(write):
    # Core.defer_this_instruction, done in C: at the first tracked access of
    # an instruction begun at or past the horizon, with nothing charged
    # ahead, the hook ends the quantum before the instruction, serves
    # nothing of the access, and keeps the bytes a store overwrites (the
    # store is made all the same; Core._run puts them back).
    asked = []
    core, shared = core_with_a_line_another_core_wrote(
        lambda address, size, write: asked.append((address, size, write)))
    address = 0x5000
    core.memory[address + 3] = 0xAB
    core.ran.value, core.clock.quantum = 3, 10**12
    # The instruction began at 499 (now() counts it: 500): before the horizon.
    assert core.access(False, address, 8, 497) > 0 and core.stops == 0, \
        "an instruction begun before the horizon was stopped"
    core.ran.value, core.clock.quantum = 4, 10**12
    shared.write(1, address, now=20)
    before = shared.core_stats(0), shared.line_stats(address), shared.state(0, address)
    charged = core.access(write, address, 8, 497)          # began at 500: at the horizon
    assert (core.stops, core.clock.deferred, core.clock.quantum) == (1, 1, 3), (
        f"{core.stops} stops, deferred {core.clock.deferred}, quantum {core.clock.quantum}: "
        f"the C hook did not end the quantum before the instruction")
    assert asked == [], f"the C hook asked Python {asked} to stop, as if something was charged ahead"
    assert charged == 0 and (shared.core_stats(0), shared.line_stats(address),
                             shared.state(0, address)) == before, \
        "an access the core stopped before was served all the same"
    kept = bytes(core.clock.undo[:core.clock.undo_size])
    assert (core.clock.undo_address, kept) == ((address, bytes([0, 0, 0, 0xAB, 0, 0, 0, 0]))
                                               if write else (0, b"")), \
        f"the C hook kept {kept!r} at {core.clock.undo_address:#x} to put back"


@needs_c
def test_the_c_memory_hook_leaves_the_stop_to_python_when_cycles_were_charged_ahead():
    # What to leave out of the clock (Core.defer_this_instruction) is then
    # Python's to say: the hook asks at the instruction's first tracked
    # access, serves it if Python declines, and does not ask again.
    asked, stop = [], [True]

    def defer(address, size, write):       # Core.defer_this_instruction, as cost.py calls it
        asked.append((address, size, write))
        if stop[0]:
            core.clock.quantum = core.ran.value - 1
    core, shared = core_with_a_line_another_core_wrote(defer)
    address = 0x5000
    core.clock.ahead = 1
    core.ran.value, core.clock.quantum = 4, 10**12
    shared.write(1, address, now=20)
    before = shared.core_stats(0), shared.line_stats(address), shared.state(0, address)
    charged = core.access(False, address, 8, 497)          # began at 500: at the horizon
    assert asked == [(address, 8, 0)], f"the C hook asked {asked} to stop before the instruction"
    assert core.stops == 0 and core.clock.deferred == 0, "the C hook stopped the core itself"
    assert charged == 0 and (shared.core_stats(0), shared.line_stats(address),
                             shared.state(0, address)) == before, \
        "an access the core stopped before was served all the same"
    stop[0] = False                        # defer() declines (the clock was not past it)
    del asked[:]
    core.clock.quantum = 10**12
    assert core.access(True, address, 8, 497) > 0 and asked == [(address, 8, 1)], \
        "an access whose stop was declined was not served"
    assert core.access(True, address + 8, 8, 497) > 0 and len(asked) == 1, \
        "the instruction's second tracked access asked to stop: its first was served"


@needs_c
def test_the_c_pause_hook_reads_the_code_as_python_does(monkeypatch):
    # A machine stopped with a dispatcher in its poll loop. The C pause hook
    # is called at every address around each `pause` site, as if the core
    # were there having read a line: it must call on_checked_pause exactly
    # where Python reads f3 90 at that address, call on_pause (which decides
    # it all) where it cannot tell, and nothing else; and it must leave
    # the pauses Python would let run at once to run.
    from cpudriver.layout import KERNEL_BASE
    from emulator.cost import PAUSE
    from emulator.interconnect import generic
    from sprat.bench.urpc import boot
    monkeypatch.delenv(hitpath.PURE_ENV, raising=False)
    system, _ = boot(generic(2), "fast", ["/userland/urpc_stream.S core=0 role=0 channel=1 count=50",
                                  "/userland/urpc_stream.S core=1 role=1 channel=1 count=50"])
    machine = system.machine
    machine.run(max_cycles=200_000)
    calls = []
    for core in machine.cores:
        watch = hitpath.Watch()
        hook = hitpath.PauseHook(watch=ctypes.addressof(watch), memory=core.memory.address,
                                 memory_size=core.memory.size, reg_read=hitpath.UC_REG_READ,
                                 pause=lambda address, size: calls.append(("pause", address)),
                                 checked_pause=lambda: calls.append(("checked",)))

        def on_pause(address, size=2, reads=1, overflowed=0, woken=0):
            watch.count, watch.overflowed, watch.woken = reads, overflowed, woken
            del calls[:]
            ON_PAUSE(hitpath._hitpath.on_pause)(core.uc._uch.value, address, size,
                                               ctypes.addressof(hook))
            return calls[0] if calls else None

        addresses = set()
        for site in machine.cost.pause_sites:
            addresses.update(range(site - 64, site + 64))
            addresses.add(site | 0xFFF)                    # two bytes on two pages
        addresses.update(range(KERNEL_BASE, KERNEL_BASE + 0x1000))   # on a 2 MiB page
        addresses.add(0x7000_0000_0000)                    # nothing mapped there
        for address in sorted(addresses):
            try:
                code = core.read_virtual(address, 2)
            except Exception:
                code = None
            if code is None or address & 0xFFF == 0xFFF:
                expected = ("pause", address)
            elif code == PAUSE:
                expected = ("checked",)
            else:
                expected = None
            assert on_pause(address) == expected, (
                f"core {core.id} at {address:#x} ({code}): the C pause hook did {on_pause(address)}, "
                f"expected {expected}")
            if expected is None:
                assert watch.count == 0, f"{address:#x}: the reads were not forgotten"
        site = min(machine.cost.pause_sites)
        assert on_pause(site, woken=1) is None and watch.woken == 0 and watch.count == 0, \
            "a woken core's pause did not just run, starting its next round afresh"
        for case in ({"reads": 0}, {"overflowed": 1}, {"size": 3}):
            assert on_pause(site, **case) is None and watch.count == 0, f"{case}: not let run"


@needs_c
def test_the_c_block_hook_on_a_pause_does_nothing_when_the_quantum_ends_first():
    # As a block starts at a pause, unicorn has not counted the pause yet:
    # with the count at the quantum, the pause will not run in it and a
    # code hook on it would not be called, so the block hook must leave the
    # core's reads alone; with room left, it does what the code hook does.
    ran = ctypes.c_uint64(0)
    clock = hitpath.SharedClock(quantum=10, emu_counter=ctypes.addressof(ran),
                                horizon=NO_HORIZON)
    watch, calls = hitpath.Watch(), []
    hook = hitpath.PauseHook(watch=ctypes.addressof(watch), clock=ctypes.addressof(clock),
                             pause=lambda address, size: calls.append(("pause", address, size)),
                             checked_pause=lambda: calls.append(("checked",)))
    # (at the last byte of a page, so that the C hook leaves the reading of
    # the code to Python, here a list, and needs no engine)
    site = 0x1FFF
    for counted, expected in ((10, []), (9, [("pause", site, 2)])):
        ran.value, watch.count, watch.woken = counted, 1, 0
        del calls[:]
        ON_PAUSE(hitpath._hitpath.on_pause_block)(None, site, 40, ctypes.addressof(hook))
        assert calls == expected and watch.count == 1, (
            f"{counted} of 10 instructions counted as the block starts: the hook did {calls} "
            f"and left {watch.count} reads, expected {expected} and 1")
    ran.value, watch.woken = 10, 1
    ON_PAUSE(hitpath._hitpath.on_pause_block)(None, site, 40, ctypes.addressof(hook))
    assert watch.woken == 1, "a pause that will not run in this quantum took the core's wake-up"


# --- the shared entries -------------------------------------------------------------
def test_directory_entries_in_c_memory_behave_like_python_ones():
    # The same accesses on a directory with Python entries and one with its
    # entries in a SharedLine array give the same cycles, states and counters.
    topology = load_topology("intel-2x4")
    plain = CoherenceDirectory(topology)
    shared = CoherenceDirectory(topology, counters=hitpath.counters)
    shared.keep_lines_in(0x5000 >> 6, (hitpath.SharedLine * 4)())
    now = 0
    for step in range(200):
        core, write, addr = step * 5 % 8, step % 3 == 0, 0x5000 + (step * 7 % 5) * 64
        cycles = plain.access(core, addr, write, now)
        assert shared.access(core, addr, write, now) == cycles, f"step {step}"
        now += cycles
    for core in range(8):
        assert shared.core_stats(core) == plain.core_stats(core)
    for line in plain.tracked_lines():
        assert shared.line_stats(line) == plain.line_stats(line)
        assert shared.writes(line >> 6) == plain.writes(line >> 6)
        assert [shared.state(c, line) for c in range(8)] == [plain.state(c, line) for c in range(8)]
