"""Lab 6's grader: the coherence directory against the reference, access by access.

The student's emulator/interconnect/coherence.py decides, for every load
and store on a message channel, which caches hold the line afterwards and
in what MOESI state, and how many cycles the access cost by the distance
between the cores. The reference is the tree's own coherence.py, loaded
beside the student's (images/replay.py), and both are fed the same
accesses:

  transitions   small scripted cases, one per row of the handout's table,
                on machines where distance matters;
  streams       every access the cores made in real runs of the lab's
                images (images/streams/, recorded by record.py): URPC
                ping-pongs, a TLB shootdown, lines four cores fight over;
  machines      whole runs of those images with the student's directory
                charging every access, under a sweep of quanta and seeds:
                every core's cycles and every message must come out as
                with the reference.

After each access the grader compares the cycles it cost, the line's state
in every core, and every core's counters; the first difference fails the
test with the access, the states before it, what the reference did and
what the student's did, and the command that replays the stream to there.

The written part: labs/06-interconnect/machine.toml must describe the
handout's machine, and answers.toml must predict its one-way URPC latency
within PREDICTION_BAND of what `sprat bench urpc` measures (measured here
with the reference directory), name the legs of a message, and say what
the bench printed.
"""

import contextlib
import shutil
import sys
import tomllib
from pathlib import Path

from sprat.lab.grading import (QUANTA, SEEDS, Failure, boot, context, fail,
                                test, where)

LAB = Path(context.lab_folder or Path(__file__).parent)
sys.path.insert(0, str(LAB / "images"))
import replay  # noqa: E402  (images/replay.py: shared with the student's replay command)

LINE = 0x80_0000                 # a line on the machine's message channels
SPACED = 10_000                  # cycles between scripted accesses: none waits for another
PREDICTION_BAND = 0.10           # the written prediction: within 10% of the measurement
MEASURED_BAND = 0.02             # what the student says the bench printed: within 2%
ROUNDS = 200                     # sprat bench urpc's default ping-pong rounds
MACHINE = "labs/06-interconnect/machine.toml"
ANSWERS = "labs/06-interconnect/answers.toml"


# --- Comparing the student's directory with the reference ---------------------------------

def replay_command(stream: str, index: int | None = None) -> str:
    """The command that replays `stream` on the student's directory, to access `index`."""
    python = "python3" if shutil.which("python3") == sys.executable else sys.executable
    workspace = context.workspace_shown or "."
    words = [python, f"{workspace}/images/replay.py", stream, "--lab", workspace]
    if index is not None:
        words += ["--to", str(index)]
    return " ".join(words)


def check_stream(name: str) -> None:
    """Replay a recorded stream; fail at the first difference from the reference."""
    step, stream = replay.first_difference(name)
    if step is None:
        return
    if step.access is None:
        raise Failure(f"{name}: {step.difference}", replay_command(name))
    raise Failure(f"{name}, access #{step.index} of {len(stream.accesses)} on "
                  f"{stream.topology}: {replay.describe(step.access)}, the line held "
                  f"[{step.before}]: {step.difference}", replay_command(name, step.index))


def check_script(what: str, topology: str, accesses) -> None:
    """A scripted case: (core, "R" or "W", line offset) accesses, far apart in time."""
    student = replay.new_directory(replay.student_module(), topology)
    reference = replay.new_directory(replay.reference_module(), topology)
    stream = replay.Stream(what, topology, None, [
        (core, op == "W", LINE + 64 * offset, 8, SPACED * (index + 1))
        for index, (core, op, offset) in enumerate(accesses)])
    for step in replay.replay(stream, student, reference):
        if step.difference:
            where = ("" if step.access is None else
                     f" access {step.index + 1} of {len(accesses)} ({replay.describe(step.access)},"
                     f" the line held [{step.before}]):")
            fail(f"{what}, on {topology}:{where} {step.difference}")


# --- The transitions, one at a time ------------------------------------------------------

# amd-2x2: cores 0 and 1 share a package, 2 and 3 the other, one hop away.
# intel-2x4: cores 0 and 1 share an L2, 0 and 2 a package, 0 and 4 are a hop apart.
READS = [
    ("a read of a line no cache holds: from memory, the reader's copy E", "amd-2x2",
     [(0, "R", 0)]),
    ("a read hit in E; a second core's read miss; then a read hit in S", "amd-2x2",
     [(0, "R", 0), (0, "R", 0), (1, "R", 0), (1, "R", 0)]),
    ("a second reader of a line in E: E -> S, both copies S", "amd-2x2", [(0, "R", 0), (2, "R", 0)]),
    ("a read of a line another core modified: M -> O, the reader's copy S", "amd-2x2",
     [(0, "W", 0), (2, "R", 0), (1, "R", 0)]),
    ("a read of a line only S copies hold, one on the reader's die (a shared L2): that copy "
     "supplies it", "intel-2x4", [(0, "R", 0), (4, "R", 0), (5, "R", 0), (1, "R", 0)]),
    ("a read of a line only S copies on other dies hold: memory supplies it", "intel-2x4",
     [(2, "R", 0), (4, "R", 0), (0, "R", 0)]),
    ("a read of a line only S copies in another package hold: memory supplies it", "amd-2x2",
     [(0, "R", 0), (1, "R", 0), (2, "R", 0)]),
    ("a read of a line only S copies hold, one on the reader's die, on amd-8x4 (whether "
     "that copy or memory is cheaper decides)", "amd-8x4",
     [(0, "R", 0), (8, "R", 0), (1, "R", 0), (20, "R", 0), (21, "R", 0)]),
    ("reads of an owned line from every distance", "intel-2x4",
     [(0, "W", 0), (1, "R", 0), (2, "R", 0), (4, "R", 0), (6, "R", 0)]),
]
WRITES = [
    ("a write hit in E: E -> M, nobody to tell", "amd-2x2", [(0, "R", 0), (0, "W", 0), (0, "W", 0)]),
    ("a write to a line others share: every other copy invalidated, the writer M", "amd-2x2",
     [(0, "R", 0), (1, "R", 0), (2, "R", 0), (3, "R", 0), (0, "W", 0)]),
    ("a write by a core in S while another holds the line in O", "amd-2x2",
     [(0, "W", 0), (1, "R", 0), (1, "W", 0), (0, "R", 0)]),
    ("a write by the owner in O: the S copies invalidated", "amd-2x2",
     [(0, "W", 0), (2, "R", 0), (0, "W", 0)]),
    ("a write miss on a line modified elsewhere", "amd-2x2", [(0, "W", 0), (2, "W", 0), (1, "W", 0)]),
    ("a write miss on a line in E elsewhere", "intel-2x4", [(4, "R", 0), (0, "W", 0)]),
    ("a write miss on a line in E on the writer's die (a shared L2): an on-die snoop",
     "intel-2x4", [(1, "R", 0), (0, "W", 0)]),
    ("invalidating copies at three distances: the writer waits for the farthest",
     "intel-2x4", [(1, "R", 0), (2, "R", 0), (4, "R", 0), (0, "R", 0), (0, "W", 0)]),
    ("invalidating a far copy and a near one, the near one on the higher-numbered core: "
     "the writer still waits for the far one", "intel-2x4",
     [(0, "R", 0), (5, "R", 0), (4, "R", 0), (4, "W", 0)]),
    ("a write miss on a line shared near and far", "intel-2x4",
     [(1, "R", 0), (6, "R", 0), (0, "W", 0)]),
    ("two lines side by side stay apart", "amd-2x2",
     [(0, "W", 0), (1, "W", 1), (2, "R", 0), (2, "R", 1), (3, "W", 1)]),
]


@test(points=10)
def reads_move_lines_and_downgrade_owners():
    """Each read transition alone (I->E from memory, E->S, M->O, the nearest S copy): states, cycles, counters."""
    for what, topology, accesses in READS:
        check_script(what, topology, accesses)


@test(points=15)
def writes_invalidate_every_other_copy():
    """Each write transition alone (E->M, S and O with sharers, misses on M and E lines): states, cycles, counters."""
    for what, topology, accesses in WRITES:
        check_script(what, topology, accesses)


# --- The AMD path: what a transaction costs ------------------------------------------------

AMD_MACHINES = ("amd-2x2", "amd-4x4", "amd-8x4")
# The machine `sprat boot` runs on without --topology (generic(4),
# topology.py): one AMD package, where the probe round has no link to cross.
DEFAULT_BOOT_CORES = 4


def amd_legs(topology, me, home, source) -> str:
    """The legs of one transaction as the handout names them, for a failure's reason."""
    legs = topology.legs_in_cycles()
    hop, link = legs["ht_hop"], legs["line_on_link"]
    hops, mine = topology.package_hops, topology.package_of(me)
    probe = hop * max(hops(home, node) + hops(node, mine)
                      for node in range(len(topology.packages)))
    if source == "invalidate":
        data = "no data (only the other copies die)"
    elif source == "memory":
        dram = legs["dram"] - legs["on_chip"] + hop * hops(home, mine)
        data = (f"data from DRAM {dram + link:g} cycles (the line crosses a link)"
                if home != mine else
                f"data from DRAM {dram:g} cycles (the home is the requester's package: no link)")
    else:
        owner = topology.package_of(source)
        trip = hop * (hops(home, owner) + hops(owner, mine))
        data = (f"data from the owner {trip + link:g} cycles (the line crosses a link)"
                if owner != mine else
                f"data from the owner {trip:g} cycles (the owner shares the requester's "
                f"package: no link)")
    return (f"on_chip {legs['on_chip']:g} cycles, request to home {hop * hops(mine, home):g} "
            f"cycles, probe round {probe:g} cycles, {data}")


def describe_transaction(topology, me, home, source) -> str:
    what = {"invalidate": "invalidating the other copies of a line",
            "memory": "reading a line from memory"}.get(
        source, f"reading a line from core {source}'s cache (package "
                f"{topology.package_of(source) if isinstance(source, int) else ''})")
    machine = topology.name
    if machine.startswith("generic-"):
        machine += " (`sprat boot`'s machine without --topology: one package)"
    return (f"{machine}: core {me} (package {topology.package_of(me)}) {what}, its home "
            f"package {home}")


def amd_machines():
    """Every machine the AMD path must price: the presets, `sprat boot`'s own
    machine (one package) and the handout's."""
    from emulator.interconnect import load_topology
    from emulator.interconnect.topology import generic
    yield from (load_topology(name) for name in AMD_MACHINES)
    yield generic(DEFAULT_BOOT_CORES)
    yield handouts_machine()


@test(points=15)
def the_amd_path_adds_up_its_legs():
    """amd_probe_broadcast on every AMD preset, `sprat boot`'s one-package machine and the handout's: every requester, home and source costs what the reference's path does."""
    from emulator.errors import SpratError
    from emulator.interconnect import protocol
    reference = replay.reference_protocol()
    for topology in amd_machines():
        cores = range(topology.n_cores())
        for home in range(len(topology.packages)):
            for me in cores:
                # Every other core: in the requester's package (no link) and beyond.
                for source in (*(core for core in cores if core != me), "memory", "invalidate"):
                    # Yours first: the answer is not on the stack while your code runs.
                    try:
                        got = replay.plain(protocol.amd_probe_broadcast(topology, me, home,
                                                                        source), "the cost")
                    except replay.WrongType as error:
                        fail(f"{describe_transaction(topology, me, home, source)}: {error}")
                    except SpratError:
                        raise                    # the stub's own words: not written yet
                    except Exception as error:
                        fail(f"{describe_transaction(topology, me, home, source)}: your "
                             f"amd_probe_broadcast raised {type(error).__name__}: {error} "
                             f"(at {where(error)})")
                    want = reference.amd_probe_broadcast(topology, me, home, source)
                    if got != want:
                        fail(f"{describe_transaction(topology, me, home, source)}: should cost "
                             f"{want} cycles ({amd_legs(topology, me, home, source)}), yours "
                             f"{got!r}")


# --- Recorded streams of real runs ---------------------------------------------------------

@test(points=10)
def urpc_streams_replay_as_the_reference():
    """Every access of two URPC ping-pongs (intel-2x4, amd-4x4): the same states, cycles and counters."""
    for name in ("pingpong-intel-2x4", "pingpong-amd-4x4"):
        check_stream(name)


@test(points=10)
def contended_and_shootdown_streams_replay_as_the_reference():
    """Every access of four cores fighting over two lines (amd-2x2, intel-2x4) and of a TLB shootdown."""
    for name in ("contended-amd-2x2", "contended-intel-2x4", "shootdown-amd-2x2"):
        check_stream(name)


# --- Whole machines ---------------------------------------------------------------------

@contextlib.contextmanager
def reference_directory():
    """Machines made inside use the tree's directory (emulator/cost.py makes it),
    and topologies loaded inside the tree's transaction costs."""
    from emulator import cost
    swapped = [(cost, "CoherenceDirectory", replay.reference_module().CoherenceDirectory)]
    if replay.reference_protocol() is not None:
        from emulator.interconnect import protocol
        swapped.append((protocol, "CostTables", replay.reference_protocol().CostTables))
    saved = [(module, name, getattr(module, name)) for module, name, _ in swapped]
    for module, name, value in swapped:
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def outcome(run) -> dict:
    """What the two machines must agree on."""
    machine = run.system.machine
    messages = [(e["event"], e.get("time"), e.get("core"), e.get("channel"), e.get("seq"))
                for e in run.events if e["event"] in ("send", "recv")]
    return replay.plain({
        "cycles": [core.cycles for core in machine.cores],
        "instructions": [core.stats.instructions for core in machine.cores],
        "messages": messages,
        "counters": [machine.cost.directory.core_stats(core) for core in range(machine.n_cores)]},
        "what the run ended with (its cycles, counters)")


def check_machine(image, topology, *, quantum=None, seed=None, failed=0):
    run = boot(image, topology=topology, quantum=quantum, seed=seed)
    if not run.system.machine.cost.hit_path.startswith("pure Python"):
        fail(f"the machine did not charge accesses through your directory "
             f"({run.system.machine.cost.hit_path})")
    try:                  # yours before the reference's run exists (nothing to copy yet)
        got = outcome(run)
    except Exception as error:                 # noqa: BLE001 -- said below, in its turn
        got = error
    with reference_directory():
        expected = boot(image, topology=topology, quantum=quantum, seed=seed)
    schedule = f"quantum {quantum}" if seed is None else f"seed {seed}"
    what = f"{image} on {topology} at {schedule}"
    if not expected.clean and expected.system.failures() is None:
        fail(f"{what}: the reference's run did not end: {expected.result.reason}")
    for core in run.system.machine.cores:
        if core.failure and "cost model" in core.failure:      # your directory raised
            fail(f"{what}: core {core.id}: {core.failure}", run)
    run.expect_clean(failed=failed)
    if isinstance(got, replay.WrongType):
        fail(f"{what}: {got}", run)
    if isinstance(got, Exception):
        raise got
    want = outcome(expected)
    for core, (have, should) in enumerate(zip(got["cycles"], want["cycles"])):
        if have != should:
            first = next(((g, w) for g, w in zip(got["messages"], want["messages"]) if g != w),
                         None)
            detail = "" if first is None else (
                f"; the first message that differs: {first[1][0]} on channel {first[1][3]} "
                f"(#{first[1][4]}) by core {first[1][2]} at cycle {first[0][1]}, the reference "
                f"at {first[1][1]}")
            fail(f"{what}: core {core} ends at cycle {have:,}, with the reference at "
                 f"{should:,}{detail}", run)
    for key in ("messages", "instructions", "counters"):
        if got[key] != want[key]:
            fail(f"{what}: the {key} differ from the reference's run: "
                 f"{first_difference(key, got[key], want[key])}", run)


def first_difference(key, got: list, want: list) -> str:
    """The first entry of a run's messages, instructions or counters that differs."""
    if len(got) != len(want):
        return f"{len(got)} entries, the reference's {len(want)}"
    index, have, should = next((i, g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w)
    if key == "counters":
        name = next(name for name in should if have.get(name) != should[name])
        return f"core {index} counts {have.get(name)} {name}, the reference {should[name]}"
    if key == "instructions":
        return f"core {index} ran {have:,} instructions, the reference {should:,}"
    return f"message event #{index} is {have}, the reference's {should}"


@test(points=15)
def whole_machines_run_as_with_the_reference():
    """URPC and contended images booted with your directory and path: every core's cycles and every message as the reference's, at every quantum and seed."""
    for seed in SEEDS[:3]:
        check_machine("images/contended.lst", "intel-2x4", seed=seed)
    for quantum in (7, 10_000):
        check_machine("images/pingpong.lst", "intel-2x4", quantum=quantum)
    for quantum in QUANTA:                   # an AMD machine: your path prices it too
        check_machine("images/contended.lst", "amd-2x2", quantum=quantum)


# --- The written part -------------------------------------------------------------------

def students_file(name: str) -> Path:
    from emulator import sources
    return sources.locate(sources.TREE / name)


def students_machine():
    from emulator.errors import SpratError
    from emulator.interconnect import load_topology
    try:
        return load_topology(students_file(MACHINE))
    except SpratError as error:
        fail(f"{MACHINE} does not load: {error}")


def handouts_machine():
    """The handout's machine: the tree's own machine.toml (the reference answer)."""
    from emulator import sources
    from emulator.interconnect import load_topology
    return load_topology(sources.TREE / MACHINE)


# Fields of a Topology that describe the machine (its name is the student's).
NAMED_ELSEWHERE = {"name", "description"}


@test(points=10)
def the_topology_file_describes_the_handouts_machine():
    """machine.toml loads, and its cores, caches, links and latencies are the handout's machine's."""
    import dataclasses
    topology, want = students_machine(), handouts_machine()
    if topology.n_cores() != want.n_cores():
        fail(f"{MACHINE} has {topology.n_cores()} cores; the handout's machine has "
             f"{want.n_cores()}")
    for core in range(1, want.n_cores()):
        if topology.relation(0, core) != want.relation(0, core):
            fail(f"{MACHINE}: cores 0 and {core} are {topology.relation(0, core)} in your file; "
                 f"on the handout's machine they are {want.relation(0, core)}")
    for field in dataclasses.fields(want):
        if field.name in NAMED_ELSEWHERE:
            continue
        have, should = getattr(topology, field.name), getattr(want, field.name)
        if field.name == "links":                  # [1, 0] is the link [0, 1]
            have, should = (sorted(tuple(sorted(pair)) for pair in links)
                            for links in (have, should))
        if have != should and field.name == "protocol":
            yours, theirs = dict(have), dict(should)
            wrong = sorted(key for key in set(yours) | set(theirs)
                           if yours.get(key) != theirs.get(key))
            fail(f"{MACHINE}: [protocol] " + "; ".join(
                f"{key} is {yours.get(key, 'missing')} in your file, the handout's machine "
                f"has {theirs.get(key, 'none')}" for key in wrong))
        if have != should:
            fail(f"{MACHINE}: {field.name} is {have!r} in your file; the handout's machine "
                 f"has {should!r}")


def measured_latencies(topology) -> dict[str, float]:
    """One-way latency per pair, as `sprat bench urpc` measures it, with the reference directory."""
    from sprat.bench import urpc
    latencies = {}
    with reference_directory():
        for relation, peer in urpc.core_pairs(topology):
            round_trip, _ = urpc.pingpong(topology, peer, ROUNDS)
            latencies[relation] = round(round_trip / (2 * ROUNDS), 1)
    return latencies


def read_answers() -> dict:
    path = students_file(ANSWERS)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        fail(f"{ANSWERS} does not read as TOML: {error}")


def bench_labels(topology) -> dict[str, str]:
    """What `sprat bench urpc` prints for each pair (the paper's words), by
    the model's name of the pair, which answers.toml uses."""
    from sprat.bench import urpc
    return {relation: topology.pair_label(0, peer) for relation, peer in urpc.core_pairs(topology)}


def numbers(answers: dict, table: str, relations, labels: dict[str, str]) -> dict[str, float]:
    values = answers.get(table)
    if not isinstance(values, dict):
        fail(f"{ANSWERS}: no [{table}] table (one number per pair: "
             f"{', '.join(relations)})")
    for relation in relations:
        value = values.get(relation)
        if value is None and labels.get(relation) in values:
            fail(f"{ANSWERS}: [{table}] names a pair {labels[relation]!r}, as `sprat bench "
                 f"urpc` prints it; its key is the model's name, {relation} (Topology.relation)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            fail(f"{ANSWERS}: [{table}] has no {relation} = CYCLES (a positive number; "
                 f"got {value!r})")
    return values


# What a message's legs must name: the store that invalidates the receiver's
# copy of the slot line, and the AMD path every transaction takes.
LEG_WORDS = {
    "the sender's store invalidating the receiver's copy": ("invalidat",),
    "the line's home, where every request goes": ("home",),
    "the probe round the home starts": ("probe",),
}


@test(points=15)
def the_prediction_is_within_ten_percent_of_the_measurement():
    """answers.toml: a prediction per pair within 10% of `sprat bench urpc`, the legs of a message named, and what the bench printed."""
    topology = students_machine()
    answers = read_answers()
    legs = answers.get("legs")
    if not isinstance(legs, list) or len(legs) < 2 or not all(isinstance(leg, str) and
                                                              leg.strip() for leg in legs):
        fail(f"{ANSWERS}: `legs` should list the legs of one message, one string per leg "
             f"(at least two: a message makes more than one transaction): what crosses "
             f"between the two caches, and what it costs")
    text = " ".join(legs).lower()
    for leg, words in LEG_WORDS.items():
        if not any(word in text for word in words):
            fail(f"{ANSWERS}: your legs do not name {leg}")
    measured = measured_latencies(topology)
    labels = bench_labels(topology)
    predicted = numbers(answers, "prediction", measured, labels)
    printed = numbers(answers, "measured", measured, labels)
    for relation, cycles in measured.items():
        if abs(printed[relation] - cycles) > MEASURED_BAND * cycles:
            fail(f"{ANSWERS}: [measured] {relation} = {printed[relation]}, but `sprat bench "
                 f"urpc` measures {cycles:g} cycles on your machine.toml in detailed timing, "
                 f"its default (with the reference directory; `--timing fast` and `sprat "
                 f"boot` give about 10% more; if your directory gives another number, it is "
                 f"not yet the reference)")
        error = (predicted[relation] - cycles) / cycles
        if abs(error) > PREDICTION_BAND:
            fail(f"{ANSWERS}: you predict {predicted[relation]:g} cycles for the {relation} "
                 f"pair, {100 * error:+.0f}% from the {cycles:g} measured: more than "
                 f"{100 * PREDICTION_BAND:.0f}% off (count the transfers of one message again)")
