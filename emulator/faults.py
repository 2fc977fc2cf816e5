"""Fault injection: a dead core, a slow core, a slow link, on purpose.

    rules = [faults.parse("stop:2@150000"), faults.parse("slow:1*3")]
    faults.apply(machine, rules)          # before the machine runs

A protocol between cores must survive a participant that is slow or never
answers; these rules make one, deterministically (`sprat boot --inject
RULE`, as often as wanted):

  stop:C@T     core C stops for good at modeled cycle T, wherever it is
               (a crash: it fails, and says why); the others run on, and a
               run whose survivors then wait for it ends as stuck, with
               the waiting cores and the stopped one named
  slow:C*R     core C's clock runs R times slower: each instruction costs
               it R cycles instead of one (what the cost model charges for
               memory is unchanged: the caches are as fast as ever)
  link:A-B*F   cache-line transfers between cores A and B take F times as
               long, both ways (a congested or long link between them)

The machine carries them out: the stop is an event in the core's own
timeline (emulator/core.py ends its quantum there, as for an interrupt),
the clock ratio is applied where a quantum's cycles are added up, and the
link factor scales the coherence directory's transfer costs (on the C
hit path too). Nothing else learns of them; a run with the same rules is
the same run.
"""

import re
from dataclasses import dataclass

from emulator.errors import SpratError

MAX_FACTOR = 1000


@dataclass(frozen=True)
class Stop:
    core: int
    cycle: int


@dataclass(frozen=True)
class Slow:
    core: int
    ratio: int


@dataclass(frozen=True)
class Link:
    a: int
    b: int
    factor: int


_FORMS = (
    (re.compile(r"stop:(\d+)@(\d[\d_]*)"), lambda m: Stop(int(m[1]), int(m[2].replace("_", "")))),
    (re.compile(r"slow:(\d+)\*(\d+)"), lambda m: Slow(int(m[1]), int(m[2]))),
    (re.compile(r"link:(\d+)-(\d+)\*(\d+)"), lambda m: Link(int(m[1]), int(m[2]), int(m[3]))),
)
USAGE = "stop:CORE@CYCLE, slow:CORE*RATIO or link:CORE-CORE*FACTOR"


def parse(text: str):
    """One rule from its text (SpratError saying what is wrong)."""
    for pattern, make in _FORMS:
        match = pattern.fullmatch(text.strip())
        if match:
            rule = make(match)
            for name in ("ratio", "factor"):
                value = getattr(rule, name, None)
                if value is not None and not 1 <= value <= MAX_FACTOR:
                    raise SpratError(f"--inject {text!r}: the {name} must be between 1 and "
                                     f"{MAX_FACTOR}, got {value}")
            return rule
    raise SpratError(f"--inject {text!r}: not a rule; rules are {USAGE}")


def apply(machine, rules) -> None:
    """Put the rules into the machine (before it runs)."""
    for rule in rules:
        cores = (rule.a, rule.b) if isinstance(rule, Link) else (rule.core,)
        if isinstance(rule, Link) and rule.a == rule.b:
            raise SpratError(f"--inject link:{rule.a}-{rule.b}: a link joins two different cores")
        for core in cores:
            if not 0 <= core < machine.n_cores:
                raise SpratError(f"--inject: there is no core {core} "
                                 f"(cores are 0 to {machine.n_cores - 1})")
        if isinstance(rule, Stop):
            machine.cores[rule.core].stop_at = rule.cycle
        elif isinstance(rule, Slow):
            machine.cores[rule.core].clock_ratio = rule.ratio
        elif machine.cost is not None:
            _scale_link(machine.cost, rule)


def _scale_link(cost, rule: Link) -> None:
    """Scale what it costs each of the two cores to get a line the other
    holds, both ways and whatever the line's home (and the C hit path's
    copy of the tables)."""
    directory = cost.directory
    shared = cost._shared_directory
    n = directory.topology.n_cores()
    for home, rows in enumerate(directory._fetch_cost):
        for me, other in ((rule.a, rule.b), (rule.b, rule.a)):
            rows[me][other] *= rule.factor
            if shared is not None:
                shared.tables[0][(home * n + me) * (n + 1) + other] = rows[me][other]
