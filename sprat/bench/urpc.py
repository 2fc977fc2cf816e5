"""`sprat bench urpc`: what a message costs, per pair of cores, per machine.

For each topology (default: the four machines of the Barrelfish paper) and
each kind of pair the machine has, named as the paper's Table 2 names it
(shared cache, same die, then one-hop, two-hop, ... on the Opterons'
links, other die and other socket on the Xeons' front-side bus), the guest
measures itself with rdtsc, as the paper's benchmarks did:

  latency     one-way: half the round trip of userland/urpc_pingpong.S,
              after warm-up rounds, over at least one lap of the ring
              (--rounds: a message's share of the flow control is one
              read of the receiver's acknowledgement per lap)
  throughput  messages per thousand cycles, pipelined: userland/urpc_stream.S
              sends back to back and the receiver times the stream from one
              arrival to another, after two laps of the ring that let it
              settle, over at least one lap (--messages: the receiver
              acknowledges every half lap, the sender reads that once a lap)
  footprint   distinct instruction-cache and data-cache lines that one send
              (on the sender) and one receive (on the receiver) touch

The paper's Table 2 figures are printed beside sprat's where they are
known (emulator/interconnect/PAPER.md says which are, and what the model
predicts for the others). None of the model's latencies was fitted to
them: a transfer costs what its machine family's protocol path costs
(emulator/interconnect/protocol.py), from the sourced legs of the presets.

Beside it, LMP: two dispatchers on one core passing a message through the
CPU driver (userland/lmp_pingpong.S), one-way latency as half a round trip
whose reply is an lmp_call (one kernel entry each way, as in an LRPC),
next to the paper's Table 1 LRPC figure for the same machine, and the part
of it charged for traps and privileged instructions (the machine's
[instructions] table: see `sprat bench syscall`).

A last table measures the host: one-way messages per host second on two
cores, and guest instructions per host second with the cost model on and off,
with the cost model's hit path that ran: "C" (emulator/_hitpath.c) or "pure
Python" (emulator/hitpath.py says when, and why).
"""

import tempfile
import time
from pathlib import Path

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE
from unicorn import x86_const as x86

from emulator.errors import MachineFailure
from kernel.urpc import URPC_SLOTS
from sprat.bench import add_output_options, emit, progress
from sprat.boot import add_timing_option, whole_number

RELATIONS = ("shared-cache", "same-package", "1-hop", "2-hop", "3-hop")
ROUNDS = 200
# The sender reads the receiver's acknowledgement count once a lap of the
# ring (userland/lib/urpc.S, "Flow control"), a transfer it waits for: a
# run of fewer rounds can leave it out and measure less than a message
# costs (amd-2x2 same die: 395 cycles at 10 rounds, 406 at 16 and at 200).
MIN_ROUNDS = URPC_SLOTS
WARMUP = 20
STREAM = 2000
# The stream's first messages go into an empty ring and come faster than the
# ring can go on passing them: the receiver times none of the first two laps
# (amd-8x4 one hop, fast timing: 7.9% low at 16 messages without them).
STREAM_WARMUP = 2 * URPC_SLOTS
# The receiver acknowledges every half ring, and the sender waits on that
# acknowledgement once a lap: a stream of fewer messages can leave that out
# and read fast (fast timing: up to 11% at 4 messages, 7% at 15; 0.4% at
# 16), as --rounds does below MIN_ROUNDS.
MIN_MESSAGES = URPC_SLOTS
HOST_STREAM = 20000
MAX_ROUNDS = 1_000_000         # about an hour of host time
MAX_MESSAGES = 100_000_000
# Decimal places of the columns that are not counts (sprat/table.py): cycles
# and nanoseconds print whole, as the paper's Table 2 does.
DECIMALS = {"throughput_msgs_per_kcycle": 2, "paper_msgs_per_kcycle": 2,
            "mips_model_on": 2, "mips_model_off": 2}


def add_parser(benches) -> None:
    import argparse
    parser = benches.add_parser(
        "urpc", help="URPC latency, throughput and cache footprint per core pair",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_options(parser)
    add_timing_option(parser, "detailed")
    parser.add_argument("--topology", metavar="T", action="append",
                        help="a preset or TOML file (repeatable; default: the four presets)")
    parser.add_argument("--rounds", type=rounds_argument, default=ROUNDS,
                        help=f"ping-pong rounds, {MIN_ROUNDS} (one lap of the ring) to "
                             f"{MAX_ROUNDS:,} ({ROUNDS}); a whole number of laps "
                             f"({MIN_ROUNDS}, {2 * MIN_ROUNDS}, ...) holds each message's "
                             f"share of the flow control exactly")
    parser.add_argument("--messages", type=messages_argument, default=STREAM,
                        help=f"messages timed in the throughput stream, after "
                             f"{STREAM_WARMUP} that let it settle: {MIN_MESSAGES} (one lap of "
                             f"the ring) to {MAX_MESSAGES:,} ({STREAM}); a whole number of laps "
                             f"holds each message's share of the flow control exactly")
    parser.add_argument("--host-messages", type=whole_number(2, MAX_MESSAGES),
                        default=HOST_STREAM, help=f"messages in the host-speed stream, 2 to "
                                                  f"{MAX_MESSAGES:,} ({HOST_STREAM})")
    parser.set_defaults(run=run)


def rounds_argument(text: str) -> int:
    """An argparse type: ping-pong rounds, at least one lap of the ring."""
    return at_least_a_lap(text, MIN_ROUNDS, MAX_ROUNDS, "the sender reads the receiver's "
                          "acknowledgement once (fewer rounds can leave that transfer out")


def messages_argument(text: str) -> int:
    """An argparse type: messages timed in the stream, at least one lap of the ring."""
    return at_least_a_lap(text, MIN_MESSAGES, MAX_MESSAGES, "the receiver writes its "
                          "acknowledgement count twice and the sender reads it (fewer messages "
                          "can leave those transfers out")


def at_least_a_lap(text: str, least: int, largest: int, why: str) -> int:
    """A whole number from `least` (one lap of the ring) to `largest`; below
    it, an error that says the least and why."""
    import argparse
    try:
        return whole_number(least, largest)(text)
    except argparse.ArgumentTypeError as error:
        if "between" not in str(error) or int(text.replace("_", "")) > largest:
            raise
        raise argparse.ArgumentTypeError(
            f"{error}: at least one lap of the {URPC_SLOTS}-slot ring, in which {why}, "
            f"and measure less than a message costs)") from None


def run(args) -> int:
    from emulator.interconnect import list_presets, load_topology
    names = args.topology or list_presets()
    rows, lmp_rows, families = [], [], []
    for name in names:
        topology = load_topology(name)
        families.append(f"{topology.name}: {topology.family}")
        for _, peer in core_pairs(topology):
            progress(f"{topology.name}: cores 0 and {peer} ({topology.pair_label(0, peer)})")
            rows.append(measure_case(topology, peer, args.rounds, args.messages, args.timing))
        progress(f"{topology.name}: LMP on core 0")
        lmp_rows.append(measure_lmp(topology, args.rounds, args.timing))
    host = measure_host(args.host_messages)
    if args.json:
        import json
        print(json.dumps(rows + lmp_rows + [host], indent=1))
        return 0
    headers = ["case", "latency_cycles", "latency_ns", "throughput_msgs_per_kcycle",
               "icache_lines", "dcache_lines", "paper_cycles", "paper_msgs_per_kcycle"]
    emit(args, f"URPC: one-way latency, pipelined throughput, cache lines of send + receive "
               f"({args.timing} timing)",
         headers, [[row[h] for h in headers] for row in rows],
         ["paper: Baumann et al., SOSP 2009, Table 2 ('-' where the value is not on record, "
          "see emulator/interconnect/PAPER.md)",
          "a transfer is charged by its machine's protocol path "
          f"(emulator/interconnect/protocol.py): {', '.join(families)}"], DECIMALS)
    lmp_headers = ["case", "latency_cycles", "privileged_cycles", "latency_ns",
                   "paper_lrpc_cycles"]
    emit(args, "LMP: two dispatchers on one core, through the CPU driver",
         lmp_headers, [[row[h] for h in lmp_headers] for row in lmp_rows],
         ["paper_lrpc_cycles: the paper's Table 1 (LRPC on one core), for scale",
          "privileged_cycles: the part charged for traps and privileged instructions, from "
          "each preset's [instructions] table (`sprat topology show T` lists it)"])
    host_headers = ["host_msgs_per_s", "host_msgs_per_s_detailed", "mips_model_on",
                    "mips_model_off"]
    emit(args, "host speed: urpc_stream.S on two cores",
         host_headers, [[host[h] for h in host_headers]],
         [f"cost model hit path: {host['hit_path']}; host_msgs_per_s and mips_model_on in "
          "fast timing (sprat boot's default), host_msgs_per_s_detailed in detailed timing "
          "(the benches' default: --timing)",
          "goal: at least 100,000 one-way messages per host second (fast timing)"], DECIMALS)
    return 0


def core_pairs(topology):
    """(relation, core) for the first core at each distance from core 0
    (Topology.relation: the model's names, which lab 6's answers use)."""
    found = {}
    for core in range(1, topology.n_cores()):
        found.setdefault(topology.relation(0, core), core)
    return [(relation, found[relation]) for relation in RELATIONS if relation in found]


def measure_case(topology, peer, rounds, messages, timing="detailed") -> dict:
    from emulator.interconnect.paper import URPC, paper_case
    round_trip, footprint = pingpong(topology, peer, rounds, timing)
    latency = round_trip / (2 * rounds)
    stream_cycles = stream(topology, peer, messages, timing)
    label = topology.pair_label(0, peer)
    paper = URPC.get(topology.name, {}).get(paper_case(topology.name, label) or "", None)
    return {
        "case": f"{topology.name} {label} (0->{peer})",
        "topology": topology.name, "relation": label, "cores": [0, peer],
        "latency_cycles": round(latency, 1),
        "latency_ns": round(topology.ns(latency), 1),
        "throughput_msgs_per_kcycle": round(1000 * messages / stream_cycles, 2),
        "icache_lines": footprint[0], "dcache_lines": footprint[1],
        "paper_cycles": paper.cycles if paper else None,
        "paper_msgs_per_kcycle": paper.msgs_per_kcycle if paper else None,
    }


def measure_lmp(topology, rounds, timing="detailed") -> dict:
    from emulator.interconnect.paper import LRPC
    latency, privileged = lmp_pingpong(topology, rounds, timing)
    # The guest times its rounds itself; the privileged part is what N more
    # rounds add to core 0's charges, so that booting cancels out.
    privileged = (lmp_pingpong(topology, 2 * rounds, timing)[1] - privileged) / (2 * rounds)
    paper = LRPC.get(topology.name)
    return {"case": f"{topology.name} lmp (core 0)", "topology": topology.name,
            "relation": "same core", "cores": [0, 0],
            "latency_cycles": round(latency, 1), "latency_ns": round(topology.ns(latency), 1),
            "privileged_cycles": round(privileged, 1),
            "paper_lrpc_cycles": paper[0] if paper else None}


def lmp_pingpong(topology, rounds, timing="detailed") -> tuple[float, int]:
    """(one-way latency the guest measured, core 0's privileged cycles in all)."""
    system, output = boot(topology, timing, [
        f"/userland/lmp_pingpong.S core=0 role=0 rounds={rounds} warmup={WARMUP} reply=1",
        f"/userland/lmp_pingpong.S core=0 role=1 rounds={rounds} warmup={WARMUP} reply=1"])
    run_to_end(system, output)
    return (reported_cycles(output, "lmp") / (2 * rounds),
            system.machine.cores[0].stats.privileged_cycles)


# --- running the guest programs ------------------------------------------------------
def boot(topology, timing, lines, cost_model=True):
    from kernel.boot import boot_image
    with tempfile.TemporaryDirectory() as directory:
        image = Path(directory) / "bench.lst"
        image.write_text("kernel /cpudriver/cpudriver.S\n" + "".join(f"module {l}\n" for l in lines))
        output = []
        system = boot_image(image, cores=topology.n_cores(), topology=topology,
                            output=lambda core, line: output.append(line), cost_model=cost_model,
                            timing=timing)
    return system, output


def run_to_end(system, output):
    result = system.machine.run(max_cycles=10**10)
    if not result.clean:
        raise MachineFailure(f"bench program failed: {result.reason}; output: {output[-3:]}")


def reported_cycles(output, prefix) -> int:
    for line in output:
        if line.startswith(prefix):
            return int(line.split()[-1])
    raise SystemExit(f"the bench program did not report '{prefix}': {output[-3:]}")


def pingpong(topology, peer, rounds, timing="detailed"):
    system, output = boot(topology, timing, [
        f"/userland/urpc_pingpong.S core=0 role=0 send=0 recv=1 channels=0-1 rounds={rounds} "
        f"warmup={WARMUP}",
        f"/userland/urpc_pingpong.S core={peer} role=1 send=1 recv=0 channels=0-1 rounds={rounds} "
        f"warmup={WARMUP}"])
    sender = Footprint(system, 0, "urpc_send", "urpc_send_end")
    receiver = Footprint(system, peer, "urpc_recv", "urpc_recv_end")
    run_to_end(system, output)
    instruction_lines = sender.instruction_lines | receiver.instruction_lines
    data_lines = sender.data_lines | receiver.data_lines
    return reported_cycles(output, "pingpong"), (len(instruction_lines), len(data_lines))


def stream(topology, peer, messages, timing="detailed") -> int:
    """Cycles for `messages` whole messages of a stream, after STREAM_WARMUP."""
    count = STREAM_WARMUP + messages + 1      # the clock runs from message STREAM_WARMUP's arrival
    system, output = boot(topology, timing, [
        f"/userland/urpc_stream.S core=0 role=0 channel=2 channels=2 count={count}",
        f"/userland/urpc_stream.S core={peer} role=1 channel=2 channels=2 count={count} "
        f"warmup={STREAM_WARMUP}"])
    run_to_end(system, output)
    return reported_cycles(output, "stream")


class Footprint:
    """Cache lines one call of a routine touches on one core (the Nth call, warmed up)."""

    def __init__(self, system, core_id, entry, exit_label, call=WARMUP + 2):
        self.core = system.machine.cores[core_id]
        program = system.module_for_core(core_id).program
        self.start, self.end = program.symbols[entry], program.symbols[exit_label]
        self.call, self.calls, self.armed = call, 0, False
        self.instruction_lines, self.data_lines = set(), set()
        uc = self.core.uc
        uc.hook_add(UC_HOOK_CODE, self._on_code, begin=self.start, end=self.end)
        uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, self._on_data)

    def _on_code(self, uc, address, size, _):
        if address == self.start:
            self.calls += 1
            self.armed = self.calls == self.call
        if self.armed:
            self.instruction_lines.update(range(address >> 6, (address + size - 1 >> 6) + 1))
            if address == self.end:
                self.armed = False

    def _on_data(self, uc, access, address, size, value, _):
        if self.armed:
            self.data_lines.update(range(address >> 6, (address + size - 1 >> 6) + 1))


# --- the host's speed ---------------------------------------------------------------------
def measure_host(messages) -> dict:
    """Messages and guest instructions per host second, streaming on two
    cores: the cost model in fast timing (the default: host_msgs_per_s,
    mips_model_on), in detailed timing (host_msgs_per_s_detailed), and off."""
    from emulator.interconnect import generic
    topology = generic(2)
    progress(f"host speed: {messages:,} messages, cost model fast, detailed and off")
    lines = [f"/userland/urpc_stream.S core=0 role=0 channel=1 channels=1 count={messages}",
             f"/userland/urpc_stream.S core=1 role=1 channel=1 channels=1 count={messages}"]
    speeds = {}
    for timing, cost_model in (("fast", True), ("detailed", True), ("off", False)):
        system, output = boot(topology, "fast" if timing == "off" else timing, lines,
                              cost_model=cost_model)
        if cost_model:
            hit_path = system.machine.cost.hit_path
        start = time.perf_counter()
        run_to_end(system, output)
        elapsed = time.perf_counter() - start
        instructions = sum(core.stats.instructions for core in system.machine.cores)
        speeds[timing] = (messages / elapsed, instructions / elapsed / 1e6)
    return {"host_msgs_per_s": round(speeds["fast"][0]),
            "host_msgs_per_s_detailed": round(speeds["detailed"][0]),
            "mips_model_on": round(speeds["fast"][1], 2),
            "mips_model_off": round(speeds["off"][1], 2), "hit_path": hit_path}
