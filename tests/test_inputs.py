"""Bad input of every kind: one line, the right exit status, never a traceback or a hang.

Each test here is a case a fuzzer found (issue 14): a file that is not
text, not a regular file, too big or badly named; an output that cannot
be written; a number out of range; a mutated trace; and the timer ticks
that piled up on a core running two yielding dispatchers.
"""

import dataclasses
import json
import os
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from emulator.interconnect import generic
from kernel.boot import boot_image
from sprat.cli import main
from tests.conftest import ROOT

LONG_NAME = "x" * 5000                   # longer than any file name a system allows
UTF16 = "kernel /cpudriver/cpudriver.S\n".encode("utf-16")
TOPOLOGY = """name = "pair"
description = "two cores"
freq_ghz = 2.0
packages = [[0, 1]]
[latency]
l1_hit = 3
l2_hit = 12
[protocol]
family = "amd-probe-broadcast"
northbridge_ghz = 2.0
on_chip_nb = 70
ht_hop_nb = 50
line_on_link_ns = 16
dram_ns = 60
"""


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of `sprat argv...`, usage errors included."""
    try:
        status = main([str(arg) for arg in argv])
    except SystemExit as exit_info:
        status = exit_info.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line(status, err, expected_status, *words):
    assert "Traceback" not in err, f"a traceback instead of one line: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert status == expected_status, f"exit status {status}, expected {expected_status}: {err!r}"
    for word in words:
        assert word in lines[0], f"{word!r} missing from {lines[0]!r}"


def small_trace(tmp_path) -> Path:
    path = tmp_path / "run.trace"
    assert main(["boot", "images/twophase.lst", "--trace", str(path)]) == 0
    return path


# --- Files sprat reads ----------------------------------------------------------------------
def commands_reading(path):
    """Every command line that reads a user's file, with `path` as that file."""
    return {"image": ["boot", path], "topology": ["boot", "--topology", path],
            "script": ["debug", "--script", path], "trace": ["trace", path]}


READERS = ("image", "topology", "script", "trace")


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("content", [UTF16, b"\x7fELF\x02\x01\x01\x00" + bytes(range(256))],
                         ids=["utf16", "binary"])
def test_a_file_that_is_not_text_is_one_line_naming_it(capsys, tmp_path, reader, content):
    path = tmp_path / f"given.{reader}"
    path.write_bytes(content)
    status, _, err = run_cli(capsys, *commands_reading(path)[reader])
    assert_one_line(status, err, 2, str(path), "not a text file")


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("device", ["/dev/full", "/dev/zero"])
def test_a_device_is_refused_rather_than_read_without_end(capsys, reader, device):
    status, _, err = run_cli(capsys, *commands_reading(device)[reader])
    assert_one_line(status, err, 2, device, "is a device")


@pytest.mark.parametrize("reader", READERS)
def test_a_fifo_is_refused_without_waiting_for_a_writer(capsys, tmp_path, reader):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    status, _, err = run_cli(capsys, *commands_reading(fifo)[reader])
    assert_one_line(status, err, 2, str(fifo), "is a fifo")


@pytest.mark.parametrize("reader", ["image", "script", "trace"])
def test_a_name_too_long_for_the_system_is_one_line(capsys, reader):
    status, _, err = run_cli(capsys, *commands_reading(LONG_NAME)[reader])
    assert_one_line(status, err, 2, "the name is too long")


def test_a_topology_name_too_long_is_one_line(capsys):
    status, _, err = run_cli(capsys, "boot", "--topology", LONG_NAME)
    assert_one_line(status, err, 2, "unknown topology")


def test_an_image_bigger_than_any_image_is_refused(capsys, tmp_path):
    image = tmp_path / "huge.lst"
    image.write_text("# padding\n" * 200_000)
    status, _, err = run_cli(capsys, "boot", image)
    assert_one_line(status, err, 2, str(image), "too big for an image")


def test_a_module_that_names_a_device_is_refused(capsys, tmp_path):
    image = tmp_path / "dev.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     f"module {os.path.relpath('/dev/zero', tmp_path)}\n")
    status, _, err = run_cli(capsys, "boot", image)
    assert_one_line(status, err, 2, f"{image}:2: module", "is a device")


def test_a_unicode_digit_is_not_a_core_number(capsys, tmp_path):
    image = tmp_path / "sup.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule /userland/hello.S core=\u00b2\n",
                     encoding="utf-8")
    status, _, err = run_cli(capsys, "boot", image)
    assert_one_line(status, err, 2, f"{image}:2", "core=\u00b2 is not a core number")


def test_a_module_number_wider_than_64_bits_is_refused(capsys, tmp_path):
    image = tmp_path / "wide.lst"
    image.write_text(f"kernel /cpudriver/cpudriver.S\nmodule /userland/hello.S count={1 << 70}\n")
    status, _, err = run_cli(capsys, "boot", image)
    assert_one_line(status, err, 2, f"{image}:2", "does not fit in 64 bits")


# --- Outputs sprat writes -----------------------------------------------------------------------
def test_a_full_disk_under_trace_is_one_line_and_exit_1(capsys):
    status, _, err = run_cli(capsys, "boot", "--trace", "/dev/full")
    assert_one_line(status, err, 1, "cannot write the trace /dev/full", "No space left")


def test_a_trace_in_a_missing_directory_is_refused_before_the_run(capsys, tmp_path):
    """Known before anything runs, so the user's mistake (exit 2), not found
    at the end of a bench that ran for minutes (the fuzz found `bench tlb
    --plot` with a missing folder or a name too long doing that)."""
    status, out, err = run_cli(capsys, "boot", "--trace", tmp_path / "no" / "run.trace")
    assert_one_line(status, err, 2, "--trace", "no such folder")
    assert out == "", "nothing may run before the output's folder is known to be there"


@pytest.mark.parametrize("argv", [["bench", "tlb", "--plot"], ["bench", "shm-vs-msg", "--plot"],
                                  ["trace", "run.trace", "--plot"], ["boot", "--trace"]],
                         ids=" ".join)
@pytest.mark.parametrize("name", ["no/such/folder/out.png", LONG_NAME + ".png"],
                         ids=["missing folder", "name too long"])
def test_an_output_that_cannot_be_made_is_refused_before_the_bench_runs(capsys, argv, name):
    status, out, err = run_cli(capsys, *argv, name)
    assert_one_line(status, err, 2, argv[-1])
    assert out == "", f"sprat {' '.join(argv)} ran before finding its output could not be made"


def test_a_chart_on_a_full_disk_is_one_line_and_exit_1(capsys, tmp_path):
    trace = small_trace(tmp_path)
    chart = tmp_path / "chart.png"
    chart.symlink_to("/dev/full")
    status, _, err = run_cli(capsys, "trace", trace, "--plot", chart)
    assert_one_line(status, err, 1, "cannot write the chart", "No space left")


def test_a_lab_workspace_that_cannot_be_written_is_one_line_and_exit_1(capsys):
    status, _, err = run_cli(capsys, "lab", "start", "2", "/dev/full/lab2")
    assert_one_line(status, err, 1, "cannot make the workspace /dev/full/lab2")


def test_plot_writes_exactly_the_name_given(capsys, tmp_path):
    trace = small_trace(tmp_path)
    status, _, err = run_cli(capsys, "trace", trace, "--plot", tmp_path / "chart.png")
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart.png", "run.trace"]


@pytest.mark.parametrize("argv, option", [
    (["trace", "run.trace", "--plot", "chart"], "--plot"),
    (["trace", "run.trace", "--plot", ""], "--plot"),
    (["boot", "--trace", ""], "--trace"),
    (["debug", "--trace", ""], "--trace"),
    (["bench", "tlb", "--plot", "curves"], "--plot"),
    (["bench", "shm-vs-msg", "--plot", ""], "--plot"),
])
def test_an_output_name_that_cannot_be_honoured_is_refused(capsys, argv, option):
    status, _, err = run_cli(capsys, *argv)
    assert_one_line(status, err, 2, option)


@pytest.mark.parametrize("argv", [["boot"], ["topology", "list"]], ids=" ".join)
def test_standard_output_on_a_full_disk_is_one_line_and_exit_1(argv):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "sprat", *argv], cwd=ROOT, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert done.returncode == 1, f"exit {done.returncode}: {done.stderr}"
    assert done.stderr.strip() == "sprat: error: cannot write the output: No space left on device"


def test_an_empty_script_name_is_refused_not_taken_for_the_terminal(capsys):
    status, out, err = run_cli(capsys, "debug", "--script", "")
    assert_one_line(status, err, 2, "--script")
    assert "(sprat)" not in out, "an empty --script must not start the prompt"


# --- Numbers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["bench", "boot", "--iterations", "0"], ["bench", "boot", "--iterations", "-5"],
    ["bench", "boot", "--quantum", "0"], ["bench", "syscall", "--iterations", "0"],
    ["bench", "urpc", "--messages", "0"], ["bench", "urpc", "--messages", "-1"],
    ["bench", "urpc", "--host-messages", "-1"], ["bench", "urpc", "--rounds", "0"],
    ["bench", "shm-vs-msg", "--updates", "0"], ["bench", "shm-vs-msg", "--warmup", "-1"],
    ["boot", "--python-limit", "0"], ["debug", "--python-limit", "nan"],
    ["boot", "--quantum", str(1 << 63)], ["boot", "--max-cycles", str(1 << 63)],
    ["debug", "--max-cycles", str(1 << 63)], ["boot", "--quantum", "9" * 5000],
], ids=" ".join)
def test_a_number_out_of_range_is_refused_before_anything_runs(capsys, argv):
    status, out, err = run_cli(capsys, *argv)
    assert_one_line(status, err, 2, argv[-2])
    assert out == "", "nothing may run with a number out of range"


def test_the_largest_cycle_counts_accepted_print_no_negative_number(capsys):
    status, out, err = run_cli(capsys, "boot", "--quantum", 1 << 48, "--max-cycles", 1 << 48)
    assert status == 0, err
    assert "-" not in "".join(line for line in out.splitlines()
                              if line[:1].isdigit() or line.startswith("sprat:"))


@pytest.mark.parametrize("field, value", [
    ("freq_ghz", "nan"), ("freq_ghz", "inf"), ("freq_ghz", "1e300"),
    ("dram_ns", str((1 << 63) - 1)), ("dram_ns", "nan"), ("northbridge_ghz", "inf"),
    ("l2_hit", str(1 << 62)),
])
def test_topology_numbers_must_be_finite_and_bounded(capsys, tmp_path, field, value):
    text = "\n".join(f"{field} = {value}" if line.startswith(f"{field} =") else line
                     for line in TOPOLOGY.splitlines())
    path = tmp_path / "machine.toml"
    path.write_text(text)
    status, _, err = run_cli(capsys, "boot", "--topology", path)
    assert_one_line(status, err, 2, str(path), field)


def test_a_topology_of_more_cores_than_a_machine_has_is_refused(capsys, tmp_path):
    path = tmp_path / "machine.toml"
    path.write_text(TOPOLOGY.replace("[[0, 1]]", str([list(range(100))])))
    status, _, err = run_cli(capsys, "boot", "--topology", path)
    assert_one_line(status, err, 2, f"{path}:4: packages: 100 cores")


def test_a_hop_latency_near_the_64_bit_limit_is_refused(capsys, tmp_path):
    path = tmp_path / "machine.toml"
    path.write_text(TOPOLOGY.replace("packages = [[0, 1]]", "packages = [[0], [1]]")
                    .replace("[latency]", "[links]\npairs = [[0, 1]]\n[latency]")
                    .replace("ht_hop_nb = 50", f"ht_hop_nb = {(1 << 63) - 1000}"))
    status, _, err = run_cli(capsys, "boot", "--topology", path)
    assert_one_line(status, err, 2, "protocol.ht_hop_nb")


# --- Exit statuses ---------------------------------------------------------------------------
def test_sprat_without_a_command_says_so_on_stderr(capsys):
    status, out, err = run_cli(capsys)
    assert out == "", "the help goes nowhere when no command was given"
    assert_one_line(status, err, 2, "a command is needed")


def test_gdb_going_away_without_detaching_leaves_sprat_waiting_for_the_next():
    process = subprocess.Popen([sys.executable, "-m", "sprat", "debug", "--gdb", "0"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, process.kill)     # a sprat that says nothing: no hang
    watchdog.start()
    try:
        waiting = process.stdout.readline()
        port = int(waiting.split("127.0.0.1:")[1].split()[0])
        with socket.create_connection(("127.0.0.1", port)) as connection:
            connection.sendall(b"$qSupported#37")
        lines = [process.stdout.readline() for _ in range(2)]   # the script, then this
        assert "sprat: gdb disconnected; waiting for gdb again" in lines[-1], \
            f"sprat should say it waits for another gdb: {lines!r}"
        with socket.create_connection(("127.0.0.1", port)) as connection:
            connection.sendall(b"$D#44")
            connection.recv(64)                 # the ack and OK: then the session is over
        _, err = process.communicate(timeout=60)
    finally:
        watchdog.cancel()
        process.kill()
    assert "Traceback" not in err and err == "", f"nothing went wrong: {err!r}"
    assert process.returncode == 0, "a gdb that came back and detached ends the run well"


# --- Traces ---------------------------------------------------------------------------------
ODD_VALUES = [None, True, -1, 1 << 64, 1 << 70, "x", [], {}, [[1]], {"a": 1}, 1.5, 64, "9" * 5000]


def mutated(lines, rng) -> str:
    """A trace with a few of its lines broken the ways a fuzzer breaks them."""
    lines = list(lines[:rng.randint(1, len(lines))])
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        kind = rng.randrange(5)
        if kind == 0:                                   # one character changed
            j = rng.randrange(len(lines[i]))
            lines[i] = lines[i][:j] + chr(rng.randrange(32, 127)) + lines[i][j + 1:]
        elif kind == 1:                                 # a field given an odd value
            try:
                record = json.loads(lines[i])
            except ValueError:
                continue
            if isinstance(record, dict):
                key = rng.choice([*record, "time", "core", "channel"])
                if rng.random() < 0.2:
                    record.pop(key, None)               # ... or taken away
                else:
                    record[key] = rng.choice(ODD_VALUES)
                lines[i] = json.dumps(record)
        elif kind == 2:                                 # arrays nested deeper than Python recurses
            lines[i] = "[" * rng.choice([10, 5000, 100_000]) + "]"
        elif kind == 3:                                 # a line cut short
            lines[i] = lines[i][:rng.randrange(len(lines[i]))]
        else:                                           # a line repeated
            lines.insert(i, lines[rng.randrange(len(lines))])
    return "\n".join(lines) + "\n"


def test_sprat_trace_answers_any_mutated_trace_in_one_line(capsys, tmp_path):
    lines = small_trace(tmp_path).read_text().splitlines()
    capsys.readouterr()
    broken = tmp_path / "broken.trace"
    statuses = {}
    for seed in range(300):
        broken.write_text(mutated(lines, random.Random(seed)))
        argv = ["trace", broken] + (["--plot", tmp_path / "chart.png"] if seed % 10 == 0 else [])
        status, _, err = run_cli(capsys, *argv)
        assert "Traceback" not in err, f"seed {seed}: {err}"
        assert status in (0, 2) and len(err.strip().splitlines()) == (status != 0), \
            f"seed {seed}: exit {status}, stderr {err!r}"
        statuses[status] = statuses.get(status, 0) + 1
    assert statuses.get(2, 0) > 50, f"the mutations should break many traces: {statuses}"


# --- The timer ------------------------------------------------------------------------------
def test_two_yielding_dispatchers_keep_the_interrupt_queue_bounded(tmp_path):
    # Every system call runs with interrupts off, so a timer tick often finds
    # the core unable to take it. Ticks used to queue up without bound (384
    # after 40M cycles); the APIC merges them, as the IRR's one bit does.
    # Without privileged-instruction costs: how many ticks find the core in
    # user mode depends on what a yield costs, and this is about the queue.
    image = tmp_path / "yield.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n" +
                     "module /userland/syscall_loop.S core=0 kind=1 iterations=1000000000\n" * 2)
    system = boot_image(image, cores=1,
                        topology=dataclasses.replace(generic(1), instruction_costs=()))
    result = system.machine.run(max_cycles=30_000_000)
    core = system.machine.cores[0]
    assert not result.clean and core.cycles >= 30_000_000, result.reason
    assert core.stats.interrupts > 50, "the time slices should still end by the timer"
    assert len(core._pending) <= 2, \
        f"{len(core._pending)} interrupts wait on core 0: timer ticks are piling up"
