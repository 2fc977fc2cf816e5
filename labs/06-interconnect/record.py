"""Record the access streams lab 6 replays (instructors: run it again after
emulator/interconnect/coherence.py or protocol.py changes what an access
costs; tests/test_lab_interconnect.py says when).

    python labs/06-interconnect/record.py            # every stream of STREAMS
    python labs/06-interconnect/record.py NAME ...   # some of them

Each stream is every load and store the cores made on tracked memory (the
message channels) in one run of a lab image on one machine, as the
coherence directory received them, in the order it received them:

    # image images/pingpong.lst, topology intel-2x4, quantum 7
    topology intel-2x4
    memory 0x4000000
    core op address size now cycles
    0 W 0x801000 8 57911 306

`now` is the core's modeled clock when the access began, `cycles` what the
machine charged for it. The cost model's observe() hook tells a listener
of each access after the access is charged (emulator/cost.py adds its own
hook first, and unicorn runs a range's hooks in the order they were
added), so the listener reads the core's clock then and takes back what
this access was charged: the growth of `core.clock.charged` since the
core's previous access in the same quantum (only the cost model charges
it, and a new quantum starts it at 0).

A stream is written only if it is exact: replayed through the tree's
directory, every access must cost what the machine charged, and every
line's state and every core's counters must end as the machine's
directory has them.
"""

import sys
from pathlib import Path

LAB = Path(__file__).resolve().parent
sys.path.insert(0, str(LAB.parents[1]))
sys.path.insert(0, str(LAB / "images"))

# name: (image, topology, quantum)
STREAMS = {
    "pingpong-intel-2x4": ("images/pingpong.lst", "intel-2x4", 7),
    "pingpong-amd-4x4": ("images/pingpong.lst", "amd-4x4", 100),
    "contended-amd-2x2": ("images/contended.lst", "amd-2x2", 7),
    "contended-intel-2x4": ("images/contended.lst", "intel-2x4", 1),
    "shootdown-amd-2x2": ("images/shootdown.lst", "amd-2x2", 13),
}


def record(image: str, topology_name: str, quantum: int):
    """Boot `image` on `topology_name`, run it; (accesses, the machine's directory)."""
    from emulator.interconnect import load_topology
    from kernel.boot import boot_image
    topology = load_topology(topology_name)
    system = boot_image(LAB / image, cores=topology.n_cores(), topology=topology,
                        quantum=quantum, output=lambda core, line: None)
    accesses = []
    last = {}                       # core id -> (quantum's start, instructions, charged)

    def listener(core, write, address, size, _value):
        clock = core.clock
        quantum_began = (clock.start, core.stats.instructions)
        began, charged = last.get(core.id, (None, 0))
        if began != quantum_began:
            charged = 0             # a new quantum: clock.charged started again at 0
        cycles = clock.charged - charged
        last[core.id] = (quantum_began, clock.charged)
        accesses.append((core.id, write, address, size, core.now() - cycles, cycles))

    system.machine.cost.observe(listener)
    result = system.machine.run(max_cycles=10**8)
    if not result.cycles:
        raise SystemExit(f"{image} on {topology_name}: the run did nothing: {result.reason}")
    return accesses, system.machine.cost.directory


def check(accesses, machine_directory, topology_name):
    """Replay through the tree's directory: the same cycles, the same end."""
    import replay
    directory = replay.new_directory(replay.reference_module(), topology_name,
                                     machine_directory.memory_size)
    for index, (core, write, address, size, now, cycles) in enumerate(accesses):
        got = replay.apply(directory, core, write, address, size, now)
        if got != cycles:
            raise SystemExit(f"access {index}: the replay costs {got} cycles, the machine "
                             f"charged {cycles}: the recording is not exact")
    if replay.snapshot(directory) != replay.snapshot(machine_directory):
        raise SystemExit("the replay ends in other states or counters than the machine")


def main(names):
    for name in names or STREAMS:
        image, topology_name, quantum = STREAMS[name]
        accesses, machine_directory = record(image, topology_name, quantum)
        check(accesses, machine_directory, topology_name)
        lines = [f"# image {image}, topology {topology_name}, quantum {quantum} "
                 f"(labs/06-interconnect/record.py)",
                 f"topology {topology_name}", f"memory {machine_directory.memory_size:#x}",
                 "core op address size now cycles"]
        lines += [f"{core} {'W' if write else 'R'} {address:#x} {size} {now} {cycles}"
                  for core, write, address, size, now, cycles in accesses]
        path = LAB / "images" / "streams" / f"{name}.stream"
        path.write_text("\n".join(lines) + "\n")
        print(f"{path.relative_to(LAB)}: {len(accesses)} accesses")


if __name__ == "__main__":
    main(sys.argv[1:])
