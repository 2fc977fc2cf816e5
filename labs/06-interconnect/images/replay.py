"""Replay a recorded access stream through your coherence directory and the reference.

    python images/replay.py pingpong-intel-2x4              # to the first difference
    python images/replay.py pingpong-intel-2x4 --to 120     # accesses up to #120

Run it inside your lab 6 workspace (or give --lab DIR): it imports your
emulator/interconnect/coherence.py, and the tree's own as the reference;
both price a transaction by the tree's protocol paths (protocol.py), so
what differs is your transitions.
It feeds both directories the same accesses, in the order the machine made
them (images/streams/NAME.stream: core, read or write, physical address,
size, the core's clock), and after each one compares what the grader
compares: the cycles it cost, the MOESI state of the line in every core,
every core's counters and the line's. It prints the last accesses before
the stop, with the line's states before and after in both directories, and
the first difference.

The grader (grade.py) uses the same functions.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
STREAMS = HERE / "streams"
REFERENCE = "lab6_reference_coherence"      # the tree's coherence.py, under this name
REFERENCE_PROTOCOL = "lab6_reference_protocol"   # and its protocol.py
LINE_SHIFT = 6
CHECK_EVERY_LINE = 64                        # every so many accesses, compare all lines


# --- the two directories ---------------------------------------------------------------

def _tree_module(name: str, file: str):
    """The tree's emulator/interconnect/FILE, loaded as `name` beside the student's."""
    if name not in sys.modules:
        from emulator import sources
        path = sources.TREE / "emulator" / "interconnect" / file
        if not path.is_file():
            return None
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module               # so that the cost model knows it is the tree's
        spec.loader.exec_module(module)
    return sys.modules[name]


def reference_module():
    """The tree's emulator/interconnect/coherence.py, loaded beside the student's."""
    return _tree_module(REFERENCE, "coherence.py")


def reference_protocol():
    """The tree's emulator/interconnect/protocol.py (what a transaction costs), or None."""
    return _tree_module(REFERENCE_PROTOCOL, "protocol.py")


def with_reference_costs(topology):
    """`topology`, its transaction costs made by the tree's protocol paths (a
    topology's `costs` come from the protocol.py `import` gives: the student's)."""
    protocol = reference_protocol()
    if protocol is not None:
        topology.__dict__["costs"] = protocol.CostTables(topology)
    return topology


def student_module():
    """The coherence.py `import` gives: the workspace's, once it is active."""
    from emulator.interconnect import coherence
    return coherence


def new_directory(module, topology_name: str, memory_size: int | None = None):
    """A directory as the machine's cost model makes one (emulator/cost.py).
    Both directories price transactions by the tree's protocol paths: a
    stream tests the transitions, the grader tests the paths apart."""
    from emulator.interconnect import load_topology
    topology = with_reference_costs(load_topology(topology_name))
    return module.CoherenceDirectory(topology, merge_reads=True, memory_size=memory_size)


class WrongType(Exception):
    """A directory gave something that is not Python's own number, string or container."""


PLAIN = (int, float, str, bool, type(None))


def plain(value, what: str):
    """`value`, if it is made of Python's own types only (numbers, strings,
    None, and lists, tuples and dicts of them); else WrongType. Everything
    a directory returns goes through here before it is compared: a subclass
    of int whose == always says yes would agree with every figure."""
    kind = type(value)
    if kind in (list, tuple):
        return kind(plain(item, what) for item in value)
    if kind is dict:
        return {plain(key, what): plain(item, what) for key, item in value.items()}
    if kind in PLAIN:
        return value
    raise WrongType(f"{what} is a {kind.__name__}, not a plain int, string or container")


def apply(directory, core: int, write: bool, address: int, size: int, now: int) -> int:
    """One load or store, line by line as the cost model charges it; its cycles."""
    line = address >> LINE_SHIFT
    last = (address + size - 1) >> LINE_SHIFT
    total = 0
    while True:
        cycles = plain(directory.access(core, line << LINE_SHIFT, write, now),
                       "the cycles access() returned")
        total += cycles
        if line == last:
            return total
        line, now = line + 1, now + cycles


def states(directory, line: int, n_cores: int) -> str:
    """The line's MOESI state in each core's cache, as "0:M 3:S" (cores in I left out)."""
    held = [f"{core}:{directory.state(core, line << LINE_SHIFT)}" for core in range(n_cores)]
    held = [entry for entry in held if not entry.endswith(":I")]
    return " ".join(held) or "no copies"


def snapshot(directory) -> dict:
    """Everything the grader compares at the end: every line, every core."""
    n = directory.topology.n_cores()
    lines = {}
    for address in directory.tracked_lines():
        lines[address] = (states(directory, address >> LINE_SHIFT, n),
                          directory.line_stats(address), directory.writes(address >> LINE_SHIFT))
    return {"lines": lines, "cores": [directory.core_stats(core) for core in range(n)]}


# --- streams ---------------------------------------------------------------------------

@dataclass
class Stream:
    name: str
    topology: str
    memory_size: int | None
    accesses: list             # (core, write, address, size, now)


def read_stream(name: str) -> Stream:
    path = STREAMS / f"{name}.stream"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in STREAMS.glob("*.stream")))
        raise SystemExit(f"replay: no stream {name!r} (the streams are {known})")
    topology, memory_size, accesses = None, None, []
    for line in path.read_text().splitlines():
        words = line.split()
        if not words or words[0] in ("#", "core"):
            continue
        if words[0] == "topology":
            topology = words[1]
        elif words[0] == "memory":
            memory_size = int(words[1], 0)
        else:
            accesses.append((int(words[0]), words[1] == "W", int(words[2], 16), int(words[3]),
                             int(words[4])))
    return Stream(name, topology, memory_size, accesses)


def describe(access) -> str:
    core, write, address, size, now = access
    return (f"core {core} {'writes' if write else 'reads'} line {address >> LINE_SHIFT << LINE_SHIFT:#x}"
            f"{'' if size == 8 else f' ({size} bytes at {address:#x})'} at cycle {now}")


# --- the comparison --------------------------------------------------------------------

@dataclass
class Step:
    index: int
    access: tuple
    before: str                # the line's states before, in the reference
    expected: str              # after, in the reference
    got: str                   # after, in the student's
    difference: str | None     # None: the two agree
    cycles: tuple = (0, 0)     # what it cost: in the reference, in the student's


def replay(stream: Stream, student, reference, until: int | None = None):
    """Yield a Step per access, up to `until` or the first difference."""
    n = reference.topology.n_cores()
    for index, access in enumerate(stream.accesses):
        if until is not None and index > until:
            return
        core, write, address, size, now = access
        touched = range(address >> LINE_SHIFT, ((address + size - 1) >> LINE_SHIFT) + 1)
        before = "; ".join(states(reference, line, n) for line in touched)
        # The student's access first: the reference's answer is not yet on the
        # stack (in this frame) for code that reads its callers' frames.
        try:
            got_cycles = apply(student, core, write, address, size, now)
        except (NotImplementedError, WrongType) as error:
            failed = f"{error}"
        except Exception as error:                  # a bug in the student's directory
            failed = raised(error)
        else:
            failed = None
        expected_cycles = apply(reference, core, write, address, size, now)
        if failed is not None:
            yield Step(index, access, before, "", "", failed, (expected_cycles, None))
            return
        got = "; ".join(states(student, line, n) for line in touched)
        expected = "; ".join(states(reference, line, n) for line in touched)
        difference = None
        if got != expected:
            difference = f"the line's states after it should be [{expected}], yours are [{got}]"
        elif got_cycles != expected_cycles:
            difference = f"it should cost {expected_cycles} cycles, yours costs {got_cycles}"
        else:
            try:
                difference = (_counters(student, reference, n, touched)
                              or (_every_line(student, reference)
                                  if index % CHECK_EVERY_LINE == 0 else None))
            except WrongType as error:
                difference = str(error)
        yield Step(index, access, before, expected, got, difference,
                   (expected_cycles, got_cycles))
        if difference:
            return
    if until is None:
        try:
            difference = _every_line(student, reference)
        except WrongType as error:
            difference = str(error)
        if difference:
            yield Step(len(stream.accesses), None, "", "", "", f"at the end: {difference}")


# What each counter counts, for a difference's reason.
COUNTS = {"hits": "accesses its own copy served", "transfers": "lines from another core's cache",
          "memory_fills": "lines from memory", "invalidations": "copies its writes destroyed",
          "waits": "cycles waited for a line's turn, a write or the bus"}


def raised(error: Exception) -> str:
    """An exception from the student's directory in one line, with the line of
    their file it came from (or the innermost one, if it was not theirs)."""
    import traceback
    frames = traceback.extract_tb(error.__traceback__)
    theirs = [frame for frame in frames
              if Path(frame.filename).parts[-3:] in (("emulator", "interconnect", "coherence.py"),
                                                     ("emulator", "interconnect", "protocol.py"))]
    frame = (theirs or frames)[-1]
    shown = "/".join(Path(frame.filename).parts[-3:] if theirs else Path(frame.filename).parts[-1:])
    return (f"your directory raised {type(error).__name__}: {error} "
            f"(at {shown}:{frame.lineno} in {frame.name})")


def _counters(student, reference, n, touched) -> str | None:
    for core in range(n):
        have = plain(student.core_stats(core), "core_stats")      # yours first, as in replay()
        want = reference.core_stats(core)
        source = _wrong_source(core, want, have)
        if source:
            return source
        for name, value in want.items():
            if have.get(name) != value:
                return (f"core {core}'s {name} ({COUNTS.get(name, name)}) should be {value}, "
                        f"yours is {have.get(name)}")
    for line in touched:
        have = plain(student.line_stats(line << LINE_SHIFT), "line_stats")
        want = reference.line_stats(line << LINE_SHIFT)
        for name, value in want.items():
            if have.get(name) != value:
                return (f"line {line << LINE_SHIFT:#x}'s {name} should be {value}, yours is "
                        f"{have.get(name)}")
    return None


def _wrong_source(core, want, have) -> str | None:
    """The line came from memory where another cache should supply it, or
    the other way round: say so in those words."""
    fewer = want["transfers"] - have.get("transfers", 0)
    if fewer and fewer == have.get("memory_fills", 0) - want["memory_fills"]:
        where = (("another core's cache", "memory") if fewer > 0 else
                 ("memory", "another core's cache"))
        return (f"core {core} should get the line from {where[0]} (transfers {want['transfers']}, "
                f"memory_fills {want['memory_fills']}), yours got it from {where[1]} (transfers "
                f"{have.get('transfers')}, memory_fills {have.get('memory_fills')})")
    return None


def _every_line(student, reference) -> str | None:
    have = plain(snapshot(student), "the directory's state")
    want = snapshot(reference)
    for address, (expected, _, _) in want["lines"].items():
        got = have["lines"].get(address, ("no copies",))[0]
        if got != expected:
            return (f"line {address:#x}, which this access did not touch, should be held "
                    f"[{expected}], yours [{got}]")
    if want != have:
        return "the lines' counters differ from the reference's"
    return None


def first_difference(name: str):
    """(the Step where the student's directory first differs, the stream), or (None, stream)."""
    stream = read_stream(name)
    student = new_directory(student_module(), stream.topology, stream.memory_size)
    reference = new_directory(reference_module(), stream.topology, stream.memory_size)
    for step in replay(stream, student, reference):
        if step.difference:
            return step, stream
    return None, stream


# --- the command -----------------------------------------------------------------------

def _activate(lab: str | None) -> None:
    from sprat.lab.workspace import activate, find_workspace, open_workspace
    folder = Path(lab) if lab else find_workspace(Path.cwd()) or find_workspace(HERE)
    if folder is None:
        raise SystemExit("replay: not in a lab workspace: run it inside yours, or give --lab DIR")
    activate(open_workspace(folder))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stream", help="a stream of images/streams/ (its name, without .stream)")
    parser.add_argument("--to", type=int, default=None, metavar="N",
                        help="replay accesses 0 to N (default: to the first difference)")
    parser.add_argument("--show", type=int, default=12, metavar="K",
                        help="how many accesses to print before the stop (default 12)")
    parser.add_argument("--lab", metavar="DIR", help="your workspace (default: the one you are in)")
    args = parser.parse_args(argv)
    _activate(args.lab)
    from emulator.errors import SpratError
    try:
        stream = read_stream(args.stream)
        student = new_directory(student_module(), stream.topology, stream.memory_size)
        reference = new_directory(reference_module(), stream.topology, stream.memory_size)
        steps = list(replay(stream, student, reference, args.to))
    except SpratError as error:
        raise SystemExit(f"replay: {error}") from None
    print(f"{stream.name}: {len(stream.accesses)} accesses on {stream.topology}; "
          f"yours: {student_module().__file__}")
    for step in steps[-args.show:]:
        if step.access is None:
            print(f"  {step.difference}")
            continue
        mark = "!!" if step.difference else "  "
        expected_cycles, got_cycles = step.cycles
        yours = [f"[{step.got}]"] if step.got != step.expected else []
        yours += [f"{got_cycles} cycles"] if got_cycles != expected_cycles else []
        print(f"{mark} #{step.index}: {describe(step.access)}: [{step.before}] -> "
              f"[{step.expected}], {expected_cycles} cycles"
              f"{'; yours ' + ', '.join(yours) if yours else ''}")
        if step.difference:
            print(f"   first difference at #{step.index}: {step.difference}")
            return 1
    print("no difference" + (f" up to #{args.to}" if args.to is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
