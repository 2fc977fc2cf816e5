"""`sprat bench syscall`: what entering the kernel costs, in modeled cycles.

Each row runs a guest loop N times and 2N times on an otherwise idle core
and divides the difference by N, so that booting and exiting cancel out:

  null system call   syscall + sysret-equivalent return (SYS_CORE_ID)
  capability invocation  identify a capability: the CPU driver, the
                     hypercall port and the rules in Python (kernel/caps/),
                     whose Python work counts no modeled cycles
  context switch     two dispatchers on one core yielding to each other
  LMP round trip     lmp_call and the reply, between two dispatchers
                     (userland/lmp_pingpong.S reply=1: the callee answers
                     and waits for the next call in one kernel entry, so
                     a round trip enters the kernel twice and hands the
                     core over twice, the shape of an LRPC), beside the
                     Barrelfish paper's Table 1 LRPC figure for the machine

sprat charges an instruction one cycle, and a privileged instruction or a
trap's delivery what the machine's [instructions] table says (its preset
cites each figure: syscall, sysret, iretq, mov cr3, invlpg and a trap's
delivery on the paper's machines; wrmsr and swapgs cost their one cycle,
for want of a source). The privileged column is
the part of the cycles those charges make; the rest is the CPU driver's
instructions. Compare the rows with each other, and with the paper's
column for scale.
"""

import tempfile
from pathlib import Path

from emulator.errors import MachineFailure
from sprat.bench import add_output_options, emit, progress
from sprat.boot import add_timing_option
from sprat.boot import whole_number

ITERATIONS = 200
MAX_ITERATIONS = 1_000_000


def add_parser(benches) -> None:
    import argparse
    parser = benches.add_parser(
        "syscall", help="cost of a system call, a context switch, an LMP round trip",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_options(parser)
    add_timing_option(parser, "detailed")
    parser.add_argument("--topology", default="amd-2x2", metavar="T",
                        help="machine whose clock and paper figures to use (default amd-2x2)")
    parser.add_argument("--iterations", type=whole_number(1, MAX_ITERATIONS),
                        default=ITERATIONS, help=f"N, 1 to {MAX_ITERATIONS:,} (default {ITERATIONS})")
    parser.set_defaults(run=run)


def run(args) -> int:
    from emulator.interconnect import load_topology
    from emulator.interconnect.paper import LRPC
    topology = load_topology(args.topology)
    n = args.iterations
    cases = [
        ("null system call", 1,
         lambda k: [f"/userland/syscall_loop.S core=0 kind=0 iterations={k}"]),
        ("capability invocation", 1,
         lambda k: [f"/userland/syscall_loop.S core=0 kind=2 iterations={k}"]),
        ("context switch (yield)", 2,
         lambda k: [f"/userland/syscall_loop.S core=0 kind=1 iterations={k}"] * 2),
        ("LMP round trip", 1,
         lambda k: [f"/userland/lmp_pingpong.S core=0 role={r} rounds={k} warmup=1 reply=1"
                    for r in (0, 1)]),
    ]
    rows = []
    for name, per_iteration, modules in cases:
        progress(name)
        instructions, cycles, privileged = difference(topology, modules, n, args.timing)
        events = n * per_iteration
        paper = LRPC.get(topology.name, (None,))[0] if name.startswith("LMP") else None
        rows.append([name, round(cycles / events, 1), round(instructions / events, 1),
                     round(privileged / events, 1), round(topology.ns(cycles / events), 1),
                     paper])
    headers = ["operation", "cycles", "instructions", "privileged_cycles", "ns",
               "paper_lrpc_cycles"]
    emit(args, f"kernel entry costs on {topology.name} (core 0, per operation, "
               f"{args.timing} timing)", headers, rows,
         [f"privileged_cycles: charged for traps and privileged instructions "
          f"({costs_text(topology)})",
          "paper_lrpc_cycles: Baumann et al., SOSP 2009, Table 1 (LRPC round trip on one core)",
          "a capability invocation's rules run in Python: only its guest instructions count"])
    return 0


def costs_text(topology) -> str:
    """The machine's [instructions] table in a line: 'syscall 27, sysret 35'."""
    costs = ", ".join(f"{name} {cycles}" for name, cycles in topology.instruction_costs)
    return f"{costs}; the rest 1 cycle" if costs else "none: every instruction 1 cycle"


def difference(topology, modules, n, timing="detailed"):
    """(instructions, cycles, privileged cycles) that N more iterations cost on core 0."""
    totals = [measure(topology, modules(k), timing) for k in (n, 2 * n)]
    return tuple(more - fewer for more, fewer in zip(totals[1], totals[0]))


def measure(topology, modules, timing="detailed"):
    from kernel.boot import boot_image
    with tempfile.TemporaryDirectory() as directory:
        image = Path(directory) / "syscall.lst"
        image.write_text("kernel /cpudriver/cpudriver.S\n" +
                         "".join(f"module {m}\n" for m in modules))
        system = boot_image(image, cores=topology.n_cores(), topology=topology, timing=timing)
    result = system.machine.run(max_cycles=10**9)
    if not result.clean:
        raise MachineFailure(f"bench program failed: {result.reason}")
    core = system.machine.cores[0]
    return core.stats.instructions, core.cycles, core.stats.privileged_cycles
