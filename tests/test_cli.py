"""The `sprat` command: output, exit status, and one-line errors for bad input."""

import re
import subprocess
import sys

import pytest

from sprat.cli import main
from tests.conftest import ROOT


def run_cli(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *words):
    assert status == 2, f"bad input must exit 2, got {status}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], f"{word!r} missing from {lines[0]!r}"


def test_boot_with_no_arguments_runs_the_default_image_on_four_cores(capsys):
    status, out, err = run_cli(capsys, "boot")
    assert status == 0, err
    for core in range(4):
        assert f"[core {core}] hello from core {core} of 4" in out
    assert "every core halted cleanly" in out
    table = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert [row[0] for row in table] == ["0", "1", "2", "3"]
    assert all(row[1] == "halted" for row in table), "every core should end idle"


def test_two_boots_print_identical_bytes(capsys):
    first = run_cli(capsys, "boot", "--cores", "6", "--quantum", "333")
    second = run_cli(capsys, "boot", "--cores", "6", "--quantum", "333")
    assert first == second


@pytest.mark.parametrize("cores", ["0", "1000", "-3", "many"])
def test_bad_core_counts_are_refused(capsys, cores):
    with pytest.raises(SystemExit) as exit_info:
        main(["boot", "--cores", cores])
    _, err = capsys.readouterr()
    assert_one_line_error(exit_info.value.code, err, "--cores")


def test_missing_image(capsys, tmp_path):
    status, _, err = run_cli(capsys, "boot", str(tmp_path / "nope.lst"))
    assert_one_line_error(status, err, "nope.lst", "no such image")


def test_malformed_image_line_names_file_and_line(capsys, tmp_path):
    image = tmp_path / "bad.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodle /userland/hello.S\n")
    status, _, err = run_cli(capsys, "boot", str(image))
    assert_one_line_error(status, err, "bad.lst:2")


def test_module_that_is_not_there(capsys, tmp_path):
    image = tmp_path / "missing.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule /userland/nope.S\n")
    status, _, err = run_cli(capsys, "boot", str(image))
    assert_one_line_error(status, err, "missing.lst:2", "nope.S")


def test_assembly_error_names_source_file_and_line(capsys, tmp_path):
    (tmp_path / "broken.S").write_text("start:\n    mov rax, 1\n    frobnicate rax\n")
    image = tmp_path / "broken.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule broken.S\n")
    status, _, err = run_cli(capsys, "boot", str(image))
    assert_one_line_error(status, err, "broken.S:3")


def test_module_for_a_core_the_machine_lacks(capsys, tmp_path):
    image = tmp_path / "far.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule /userland/hello.S core=9\n")
    status, _, err = run_cli(capsys, "boot", str(image), "--cores", "2")
    assert_one_line_error(status, err, "far.lst:2", "core=9")


def test_cycle_budget_is_a_machine_failure_with_a_reason(capsys, tmp_path):
    image = tmp_path / "long.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule /userland/spin.S iterations=1000000\n")
    status, out, err = run_cli(capsys, "boot", str(image), "--cores", "1", "--max-cycles", "100000")
    assert status == 1
    reason, *diagnosis = err.strip().splitlines()
    assert "cycle budget" in reason
    # (where in the loop depends on how long boot took: a line of spin.S's loop)
    assert len(diagnosis) == 1 and re.fullmatch(
        r"sprat:   core 0 is still running in spin_loop(\+\d+)? \(userland/spin\.S:1[1-4]\)",
        diagnosis[0]), diagnosis


def test_a_failed_program_fails_the_run_unless_failures_are_expected(capsys):
    status, _, err = run_cli(capsys, "boot", "images/faults.lst")
    assert status == 1 and "4 programs failed" in err.splitlines()[0]
    status, out, _ = run_cli(capsys, "boot", "images/faults.lst", "--expect-failures")
    assert status == 0 and "every core halted cleanly" in out


def test_a_failed_run_names_each_user_fault_by_label_source_line_and_cause(capsys):
    # The CPU driver prints raw numbers ("rip 0x..., error 0x7"); the host
    # knows the labels and what the error code's bits mean.
    status, _, err = run_cli(capsys, "boot", "images/faults.lst")
    named = [line for line in err.splitlines() if line.startswith("sprat:   core")]
    assert status == 1 and len(named) == 3, err
    assert re.fullmatch(r"sprat:   core 0: #PF page fault \(in write_kernel\+\d+, "
                        r"userland/faulty\.S:\d+\) touching 0x200000: a write in user mode of a "
                        r"mapped page that forbids it \(kernel-only or read-only\) \(error 0x7\)",
                        named[0]), named[0]
    assert re.match(r"sprat:   core 1: #GP general protection \(in privileged\+\d+, ", named[1])
    assert "an instruction fetch in user mode" in named[2], named[2]


def test_a_seed_chooses_a_schedule_and_the_same_seed_the_same_run(capsys):
    runs = [run_cli(capsys, "boot", "images/spawn.lst", "--seed", seed, "--quantum", "50")
            for seed in ("1", "1", "2")]
    assert runs[0] == runs[1], "the same seed gave two different runs"
    assert all(status == 0 for status, _, _ in runs)


def test_help_explains_every_boot_option(capsys):
    with pytest.raises(SystemExit):
        main(["boot", "--help"])
    out, _ = capsys.readouterr()
    for option in ("--cores", "--quantum", "--max-cycles", "IMAGE"):
        assert option.lower() in out.lower()


def test_the_installed_command_prints_no_traceback_on_bad_input(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sprat", "boot", str(tmp_path / "x.lst")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def boot_broken_cpu_driver(tmp_path, old, new):
    """`sprat boot` of slices.lst with a lab 4 workspace whose dispatch.S has a
    kernel bug (`old` replaced by `new`): (exit status, stderr's last line)."""
    from sprat.lab import workspace
    from sprat.lab.manifest import find_lab
    lab = find_lab("4")
    files = workspace.reference_files(lab)
    assert old in files["cpudriver/dispatch.S"]
    files["cpudriver/dispatch.S"] = files["cpudriver/dispatch.S"].replace(old, new, 1)
    workspace.create(lab, tmp_path / "ws", files)
    done = subprocess.run([sys.executable, "-m", "sprat", "boot", "images/slices.lst",
                           "--cores", "1"], cwd=tmp_path / "ws", capture_output=True, text=True,
                          timeout=600)
    return done.returncode, done.stderr.strip().splitlines()[-1]


def test_a_kernel_panic_names_the_faulting_label_and_source_line(tmp_path):
    # A switch that copies 17 words of the 22-word frame: iretq takes a bad cs.
    status, last = boot_broken_cpu_driver(
        tmp_path, "    mov rcx, TRAP_FRAME_SIZE / 8\n    rep movsq\n    mov rdx",
        "    mov rcx, 17\n    rep movsq\n    mov rdx")
    assert status == 1
    assert re.fullmatch(r"sprat: core 0 stopped with exit code 1: a kernel panic, #GP general"
                        r" protection at 0x[0-9a-f]+ \(in \w+(\+\d+)?, cpudriver/\w+\.S:\d+\)",
                        last), last


def test_a_triple_fault_names_the_label_and_source_line_and_is_said_once(tmp_path):
    status, last = boot_broken_cpu_driver(tmp_path, "load_dispatcher:\n",
                                          "load_dispatcher:\n    xor esp, esp\n    push rax\n")
    assert status == 1
    assert last.startswith("sprat: core 0 failed: triple fault at RIP 0x"), last
    assert re.search(r"\(in load_dispatcher\+2, cpudriver/dispatch\.S:\d+\)$", last), last
    assert last.count("triple fault") == 1, last
