"""`sprat bench boot`: how long booting takes, and how fast guests run.

Two tables:
  boot        host seconds from loading the default image to every core
              halted, and host memory (RSS) per core, for 1 to 64 cores.
              Each size boots in a fresh child process, so memory numbers
              are not polluted by the sizes before it.
  throughput  guest instructions per host second for a compute-bound
              program (userland/spin.S) on 1 and 4 cores, next to the same
              machine code run on bare unicorn instances in this process,
              at the same quantum: the ratio is what sprat's machinery
              (scheduler, hooks, devices) costs over the raw engine.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from emulator.errors import MachineFailure
from sprat.bench import add_output_options, emit, progress
from sprat.boot import positive_argument, whole_number

ROOT = Path(__file__).resolve().parents[2]
BOOT_SIZES = (1, 4, 16, 32, 64)
THROUGHPUT_SIZES = (1, 4)
DEFAULT_ITERATIONS = 2_000_000      # x4 instructions per core
MAX_ITERATIONS = 1_000_000_000      # hours on the host
# Decimal places of the columns that are not counts (sprat/table.py).
DECIMALS = {"boot_s": 3, "rss_mb_per_core": 1, "mips_sprat": 2, "mips_unicorn": 2, "ratio": 2}


def add_parser(benches) -> None:
    parser = benches.add_parser(
        "boot", help="boot time, memory per core, guest speed vs bare unicorn",
        description=__doc__.split("\n\n", 1)[1], formatter_class=_raw())
    add_output_options(parser)
    parser.add_argument("--iterations", type=whole_number(1, MAX_ITERATIONS),
                        default=DEFAULT_ITERATIONS,
                        help=f"loop iterations of the compute-bound program, 1 to "
                             f"{MAX_ITERATIONS:,} (default {DEFAULT_ITERATIONS:,})")
    parser.add_argument("--quantum", type=positive_argument, default=None,
                        help="scheduler quantum for the throughput rows (default: sprat's)")
    parser.set_defaults(run=run)


def _raw():
    import argparse
    return argparse.RawDescriptionHelpFormatter


def run(args) -> int:
    from emulator.scheduler import DEFAULT_QUANTUM
    quantum = args.quantum or DEFAULT_QUANTUM
    boot_rows = []
    for cores in BOOT_SIZES:
        progress(f"booting {cores} cores in a child process")
        child = measure_boot_in_child(cores)
        boot_rows.append([cores, child["boot_s"], child["rss_mb_per_core"]])
    throughput_rows = []
    for cores in THROUGHPUT_SIZES:
        progress(f"compute-bound program on {cores} cores, sprat and bare unicorn")
        sprat_mips = measure_sprat_mips(cores, args.iterations, quantum)
        unicorn_mips = measure_unicorn_mips(cores, args.iterations, quantum)
        throughput_rows.append([cores, sprat_mips, unicorn_mips, sprat_mips / unicorn_mips])
    if args.json:
        rows = [dict(zip(["cores", "boot_s", "rss_mb_per_core"], r)) for r in boot_rows]
        rows += [dict(zip(["cores", "mips_sprat", "mips_unicorn", "ratio"], r))
                 for r in throughput_rows]
        print(json.dumps(rows, indent=1))
        return 0
    emit(args, "boot: default image, host time and memory", ["cores", "boot_s", "rss_mb_per_core"],
         boot_rows, ["goal: 64 cores boot in under 2 s of host time"], DECIMALS)
    emit(args, f"throughput: userland/spin.S, quantum {quantum:,} instructions",
         ["cores", "mips_sprat", "mips_unicorn", "ratio"], throughput_rows,
         ["mips = million guest instructions per host second; ratio = sprat / bare unicorn "
          "(goal: at least 0.8)"], DECIMALS)
    return 0


# --- boot time and memory, one child process per size -------------------------
def measure_boot_in_child(cores: int) -> dict:
    code = f"import sprat.bench.boot as b, json; print(json.dumps(b.child_boot({cores})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child_boot(cores: int) -> dict:
    from kernel.boot import boot_image
    import emulator.machine  # noqa: F401  (imports are not part of the boot)
    # warm the assembler cache so that the first size is not charged for it
    boot_image(ROOT / "images" / "default.lst", cores=1)
    before = resident_mb()
    start = time.perf_counter()
    system = boot_image(ROOT / "images" / "default.lst", cores=cores)
    result = system.machine.run(max_cycles=10**8)
    elapsed = time.perf_counter() - start
    if not result.clean:
        raise MachineFailure(f"boot on {cores} cores failed: {result.reason}")
    return {"boot_s": elapsed, "rss_mb_per_core": (resident_mb() - before) / cores}


# --- guest speed ----------------------------------------------------------------
def spin_image(iterations: int, directory: Path) -> Path:
    image = directory / "spin.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     f"module /userland/spin.S iterations={iterations}\n")
    return image


def measure_sprat_mips(cores: int, iterations: int, quantum: int) -> float:
    import tempfile
    from kernel.boot import boot_image
    with tempfile.TemporaryDirectory() as directory:
        system = boot_image(spin_image(iterations, Path(directory)), cores=cores, quantum=quantum)
    start = time.perf_counter()
    result = system.machine.run(max_cycles=10**12)
    elapsed = time.perf_counter() - start
    if not result.clean:
        raise SystemExit(f"spin on {cores} cores failed: {result.reason}")
    instructions = sum(core.stats.instructions for core in system.machine.cores)
    return instructions / elapsed / 1e6


def measure_unicorn_mips(cores: int, iterations: int, quantum: int) -> float:
    """The same spin code on `cores` bare unicorn instances, round robin."""
    from unicorn import Uc, UC_ARCH_X86, UC_MODE_64, UC_HOOK_INSN, UC_PROT_ALL
    from unicorn import x86_const as x86
    from cpudriver import layout
    from emulator.assembler import assemble_file
    from emulator.cpustate import retired_instructions
    from kernel.boot import user_defines
    base = layout.program_base(0)           # where a one-module image runs it
    program = assemble_file(ROOT / "userland" / "spin.S", base,
                            defines=user_defines() | {"ITERATIONS": iterations})
    engines = []
    for _ in range(cores):
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.mem_map(base, layout.PROGRAM_SPAN, UC_PROT_ALL)
        uc.mem_write(base, program.code)
        uc.reg_write(x86.UC_X86_REG_RSP, layout.stack_top(0) - 8)
        uc.reg_write(x86.UC_X86_REG_RIP, base)
        finished = []
        uc.hook_add(UC_HOOK_INSN, _stop_on_syscall, finished, aux1=x86.UC_X86_INS_SYSCALL)
        engines.append((uc, finished))
    total = 0
    start = time.perf_counter()
    running = list(engines)
    while running:
        for uc, finished in list(running):
            uc.emu_start(uc.reg_read(x86.UC_X86_REG_RIP), 0, count=quantum)
            total += retired_instructions(uc, quantum)
            if finished:
                running.remove((uc, finished))
    elapsed = time.perf_counter() - start
    return total / elapsed / 1e6


def _stop_on_syscall(uc, finished):
    """The program's exit system call ends its run on bare unicorn."""
    finished.append(True)
    uc.emu_stop()
