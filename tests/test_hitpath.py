"""The cost model's C hit path (emulator/_hitpath.c) changes how fast, never what.

Each workload runs twice, once on the C hit path and once on the pure
Python path (SPRAT_PURE_COST_MODEL=1), and everything the model computes
must come out the same: program output, every core's cycles and
instructions, the directory's counters for every core and every line, the
MOESI state of every line in every cache. The workloads cover what the C
path touches: streams of hits and misses, lines many cores fight over
(interleaved one instruction at a time), cores parked in poll loops,
accesses that straddle two lines.

Where the C path is not built the comparisons are skipped, except in CI
(CI=true): there it must be built, and a test fails if it is not.
"""

import os
import tempfile
from pathlib import Path

import pytest

from emulator import hitpath
from emulator.core import Core
from emulator.interconnect import load_topology
from emulator.interconnect.coherence import CoherenceDirectory
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


# --- running one workload on either path ------------------------------------------------
ACCESS = CoherenceDirectory.access
STOP_BEFORE = Core.stop_before_this_instruction


def counting(monkeypatch, cls, name, function):
    """Replace cls.name by `function` that counts its calls; the count, in a list."""
    calls = [0]

    def counted(*args):
        calls[0] += 1
        return function(*args)
    monkeypatch.setattr(cls, name, counted)
    return calls


def run(monkeypatch, path, modules, topology, quantum=None, setup=None, programs=None):
    """Boot `modules` on `topology` on the given path ("C" or "pure"), run them
    to the end; everything the model computed, as plain data."""
    from emulator.scheduler import DEFAULT_QUANTUM
    from kernel.boot import boot_image
    if path == "pure":
        monkeypatch.setenv(hitpath.PURE_ENV, "1")
    else:
        monkeypatch.delenv(hitpath.PURE_ENV, raising=False)
    # How many accesses reach the Python directory (the C path serves hits
    # itself), and how many times a core parked in a poll loop.
    directory_calls = counting(monkeypatch, CoherenceDirectory, "access", ACCESS)
    parks = counting(monkeypatch, Core, "stop_before_this_instruction", STOP_BEFORE)
    output = []
    with tempfile.TemporaryDirectory() as directory:
        if programs:
            image = write_image(Path(directory), programs)
        else:
            image = Path(directory) / "hitpath.lst"
            image.write_text("kernel /cpudriver/cpudriver.S\n"
                             + "".join(f"module {module}\n" for module in modules))
        system = boot_image(image, cores=topology.n_cores(), topology=topology,
                            quantum=quantum or DEFAULT_QUANTUM,
                            output=lambda core, line: output.append((core, line)))
        machine = system.machine
        assert machine.cost.hit_path.startswith("C" if path == "C" else "pure Python")
        if setup:
            setup(system)
        directory_calls[0] = 0
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
        "directory_calls": directory_calls[0],
    }


def assert_same_on_both_paths(monkeypatch, **workload):
    c = run(monkeypatch, "C", **workload)
    pure = run(monkeypatch, "pure", **workload)
    assert c["result"][0], f"the workload failed: {c['result'][1]}; output {c['output'][-3:]}"
    for key in ("result", "output", "cores", "core_stats", "parks"):
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
        f"{pure['directory_calls']}: the hits were not served in C")
    return c


# --- the workloads --------------------------------------------------------------------
@needs_c
def test_a_stream_between_two_cores_is_the_same_on_both_paths(monkeypatch):
    count = 300
    c = assert_same_on_both_paths(
        monkeypatch, topology=load_topology("amd-2x2"),
        modules=[f"/userland/urpc_stream.S core=0 role=0 channel=2 count={count}",
                 f"/userland/urpc_stream.S core=2 role=1 channel=2 count={count}"])
    assert any(line.startswith(f"stream messages {count} ") for _, line in c["output"])


@needs_c
def test_a_stream_interleaved_instruction_by_instruction_is_the_same(monkeypatch):
    # A quantum of a few instructions: the clock moves between nearly every
    # access, and a core often stops in the middle of its poll loop.
    assert_same_on_both_paths(
        monkeypatch, topology=load_topology("amd-2x2"), quantum=3,
        modules=["/userland/urpc_stream.S core=0 role=0 channel=1 count=40",
                 "/userland/urpc_stream.S core=1 role=1 channel=1 count=40"])


@needs_c
def test_lines_many_cores_update_in_place_are_the_same_on_both_paths(monkeypatch):
    from sprat.bench.shm_vs_msg import interleave_finely_after_barrier
    assert_same_on_both_paths(
        monkeypatch, topology=load_topology("amd-2x2"), setup=interleave_finely_after_barrier,
        modules=["/userland/shm_update.S clients=4 lines=2 updates=15 warmup=5"])


@needs_c
def test_a_server_parked_on_many_channels_is_the_same_on_both_paths(monkeypatch):
    c = assert_same_on_both_paths(
        monkeypatch, topology=load_topology("amd-2x2"),
        modules=["/userland/msg_server.S core=0 lines=4 clients=3 updates=15 warmup=5",
                 "/userland/msg_client.S clients=3 updates=15 warmup=5"])
    assert c["parks"] > 10, f"only {c['parks']} parks: the workload does not exercise parking"


@needs_c
def test_a_ping_pong_two_hops_apart_is_the_same_on_both_paths(monkeypatch):
    assert_same_on_both_paths(
        monkeypatch, topology=load_topology("amd-4x4"),
        modules=["/userland/urpc_pingpong.S core=0 role=0 send=0 recv=1 rounds=40 warmup=5",
                 "/userland/urpc_pingpong.S core=15 role=1 send=1 recv=0 rounds=40 warmup=5"])


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
                              programs={"straddler": STRADDLER}, quantum=7)


# --- the shared entries -------------------------------------------------------------
def test_directory_entries_in_c_memory_behave_like_python_ones():
    # The same accesses on a directory with Python entries and one with its
    # entries in a SharedLine array give the same cycles, states and counters.
    import ctypes
    topology = load_topology("intel-2x4")
    plain = CoherenceDirectory(topology)
    shared = CoherenceDirectory(topology, hits=(ctypes.c_uint64 * topology.n_cores())())
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
