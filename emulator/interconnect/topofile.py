"""Reading a machine description from a TOML file, with errors a person can act on.

A topology file (and every preset in `presets/`) looks like this:

    name = "amd-2x2"
    description = "2 x 2-core AMD Opteron 2220"
    freq_ghz = 2.8
    packages = [[0, 1], [2, 3]]          # core ids, one list per package

    [caches]                             # optional: who shares which cache
    L3 = [[0, 1], [2, 3]]                # groups of cores, per level (L2, L3)

    [links]                              # the package interconnect
    pairs = [[0, 1]]                     # each pair is one hop, both ways

    [latency]                            # cache hits, in core cycles
    l1_hit = 3
    l2_hit = 12
    l3_hit = 40                          # only if some cores share an L3

    [protocol]                           # how a line moves (protocol.py)
    family = "amd-probe-broadcast"       # or "intel-fsb"
    merge_reads = false                  # optional: concurrent reads of a line
                                         #   ride along (coherence.py, "Ordering")
    northbridge_ghz = 2.8                # the clock of the *_nb legs
    on_chip_nb = 70                      # legs: *_nb northbridge clocks,
    ht_hop_nb = 49                       #   *_bus bus clocks, *_ns nanoseconds,
    line_on_link_ns = 16                 #   *_cycles core clocks
    dram_ns = 60

Each family needs its own legs (FAMILY_KEYS below; intel-fsb: bus_ghz,
l2_miss_cycles, on_die_snoop_bus, bus_transaction_bus, snoop_forward_bus,
hitm_supply_cycles, line_through_mch_bus, memory_ns).

    [instructions]                       # optional: cycles of privileged work
    syscall = 27                         # what the instruction costs in all
    sysret = 35                          # (unlisted ones cost their one cycle)
    interrupt = 100                      # delivering an exception or interrupt

`read_topology_fields(path)` checks every field and returns the keyword
arguments of `Topology`. Any problem raises SpratError as
`path:line: field: what is wrong`. tomllib reports the line of a syntax
error; for everything else we find the line of the key by a plain scan of
the text (good enough for files written by hand, and it never hides an
error: at worst it points at line 1).

What does not live here: the Topology class and its queries (topology.py).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections import deque
from pathlib import Path

from emulator.errors import SpratError
from emulator.files import read_text

TOP_KEYS = ("name", "description", "freq_ghz", "packages", "caches", "links", "latency",
            "protocol", "instructions")
CACHE_LEVELS = ("L2", "L3")
LATENCY_KEYS = ("l1_hit", "l2_hit", "l3_hit")
# The [protocol] table: each family's clock and legs (emulator/interconnect/protocol.py).
FAMILY_KEYS = {
    "amd-probe-broadcast": ("northbridge_ghz", "on_chip_nb", "ht_hop_nb", "line_on_link_ns",
                            "dram_ns"),
    "intel-fsb": ("bus_ghz", "l2_miss_cycles", "on_die_snoop_bus", "bus_transaction_bus",
                  "snoop_forward_bus", "hitm_supply_cycles", "line_through_mch_bus",
                  "memory_ns"),
}
# Keys of the first format, whose transfers were one number per relation.
OLD_LATENCY_KEYS = ("shared_cache_transfer", "same_package_transfer", "hop_transfer", "memory")
# [instructions]: what privileged work costs in all, in cycles of the core
# clock (emulator/instcost.py charges them). "interrupt" is no instruction:
# the delivery of an exception or interrupt through the IDT.
INSTRUCTION_KEYS = ("syscall", "sysret", "iretq", "mov_cr3", "invlpg", "wrmsr", "swapgs",
                    "interrupt")
# Bounds that keep every sum of latencies far from a 64-bit wrap. The
# slowest access on the paper's machines is a few hundred cycles; a
# million is a machine no one would build, yet still a number we can add.
MAX_LATENCY = 1_000_000
MAX_FREQ_GHZ = 100.0
MAX_CORES = 64              # what the machine builds (emulator/machine.py)


# -- the package graph (also used by Topology, which is built from these fields) --

def package_hops(n_packages: int, links) -> list[list[int | None]]:
    """Hop counts between packages by breadth-first search; None if unreachable."""
    neighbours = [[] for _ in range(n_packages)]
    for a, b in links:
        neighbours[a].append(b)
        neighbours[b].append(a)
    table = []
    for start in range(n_packages):
        dist = [None] * n_packages
        dist[start] = 0
        queue = deque([start])
        while queue:
            here = queue.popleft()
            for there in neighbours[here]:
                if dist[there] is None:
                    dist[there] = dist[here] + 1
                    queue.append(there)
        table.append(dist)
    return table


# -- finding the line a field is on --

_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]")


def _line_of(text: str, section: str | None, key: str | None) -> int:
    """Line number (1-based) of `key` inside table `section` (None: top level).

    With key None, the line of the `[section]` header. A plain scan: it
    knows table headers and `key =` lines, which is all a topology uses.
    """
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
            if key is None and current == section:
                return number
            continue
        if key is not None and current == section:
            if re.match(r'^\s*"?%s"?\s*=' % re.escape(key), line):
                return number
    return 1


class _Where:
    """Builds `path:line: field:` prefixes for one file's errors."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.text = text

    def fail(self, section: str | None, key: str | None, message: str):
        line = _line_of(self.text, section, key)
        field = ".".join(part for part in (section, key) if part)
        raise SpratError(f"{self.path}:{line}: {field + ': ' if field else ''}{message}")


# -- reading the file --

def read_topology_fields(path: Path) -> dict:
    """Parse and check a topology file; return Topology keyword arguments."""
    path = Path(path)
    text = read_text(path, "topology file")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpratError(_syntax_message(path, error))
    where = _Where(path, text)
    _check_known_keys(doc, where)
    fields = {
        "name": _string(doc, "name", where),
        "description": _string(doc, "description", where),
        "freq_ghz": _frequency(doc, where),
    }
    packages = _packages(doc, where)
    fields["packages"] = packages
    fields["shared_caches"] = _caches(doc, packages, where)
    fields["links"] = _links(doc, len(packages), where)
    fields.update(_latencies(doc, fields, where))
    fields.update(_protocol(doc, where))
    fields["instruction_costs"] = _instruction_costs(doc, where)
    return fields


def _syntax_message(path: Path, error: tomllib.TOMLDecodeError) -> str:
    # tomllib ends its message with "(at line L, column C)": move L to the front.
    message = str(error)
    found = re.search(r"\(at line (\d+), column \d+\)", message)
    line = found.group(1) if found else "1"
    message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
    message = re.sub(r"\s*\(at end of document\)", "", message)
    return f"{path}:{line}: TOML syntax error: {message}"


def _check_known_keys(doc: dict, where: _Where):
    for key in doc:
        if key not in TOP_KEYS:
            where.fail(None, key, f"unknown field (expected one of: {', '.join(TOP_KEYS)})")
    for required in ("name", "description", "freq_ghz", "packages", "latency", "protocol"):
        if required not in doc:
            where.fail(None, None, f"missing field '{required}'"
                       + (" (a table: family and its legs)" if required == "protocol" else ""))
    for section in ("caches", "links", "latency", "protocol", "instructions"):
        if section in doc and not isinstance(doc[section], dict):
            where.fail(None, section, "must be a table ([%s])" % section)


def _string(doc: dict, key: str, where: _Where) -> str:
    value = doc[key]
    if not isinstance(value, str) or (key == "name" and not value.strip()):
        where.fail(None, key, "must be a non-empty string")
    return value


def _frequency(doc: dict, where: _Where) -> float:
    value = doc["freq_ghz"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or not 0 < value <= MAX_FREQ_GHZ:
        where.fail(None, "freq_ghz", f"must be a positive number of GHz, at most {MAX_FREQ_GHZ:g}")
    return float(value)


def _int_list(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value)


def _packages(doc: dict, where: _Where) -> tuple:
    raw = doc["packages"]
    if not isinstance(raw, list) or not raw or not all(_int_list(p) and p for p in raw):
        where.fail(None, "packages", "must be a list of non-empty lists of core ids")
    seen = {}
    for index, cores in enumerate(raw):
        for core in cores:
            if core < 0:
                where.fail(None, "packages", f"core id {core} is negative")
            if core in seen:
                where.fail(None, "packages",
                           f"core {core} is listed twice (packages {seen[core]} and {index})")
            seen[core] = index
    if len(seen) > MAX_CORES:
        where.fail(None, "packages", f"{len(seen)} cores, but a machine has at most {MAX_CORES}")
    for core in range(len(seen)):
        if core not in seen:
            where.fail(None, "packages",
                       f"core {core} is missing: core ids must be 0..{len(seen) - 1}")
    return tuple(tuple(cores) for cores in raw)


def _caches(doc: dict, packages: tuple, where: _Where) -> tuple:
    raw = doc.get("caches", {})
    package_of = {core: index for index, cores in enumerate(packages) for core in cores}
    levels = []
    for level, groups in raw.items():
        if level not in CACHE_LEVELS:
            where.fail("caches", level,
                       f"unknown cache level (expected {' or '.join(CACHE_LEVELS)})")
        if not isinstance(groups, list) or not all(_int_list(g) and g for g in groups):
            where.fail("caches", level, "must be a list of non-empty lists of core ids")
        in_group = set()
        for group in groups:
            for core in group:
                if core not in package_of:
                    where.fail("caches", level, f"core {core} is not in any package")
                if core in in_group:
                    where.fail("caches", level, f"core {core} is in two {level} groups")
                in_group.add(core)
            if len({package_of[core] for core in group}) > 1:
                where.fail("caches", level,
                           f"group {group} spans packages: a cache is inside one package")
        levels.append((level, tuple(tuple(group) for group in groups)))
    return tuple(sorted(levels))


def _links(doc: dict, n_packages: int, where: _Where) -> tuple:
    raw = doc.get("links", {})
    for key in raw:
        if key != "pairs":
            where.fail("links", key, "unknown field (expected 'pairs')")
    pairs = raw.get("pairs", [])
    if not isinstance(pairs, list) or not all(_int_list(p) and len(p) == 2 for p in pairs):
        where.fail("links", "pairs", "must be a list of [package, package] pairs")
    seen = set()
    for a, b in pairs:
        for package in (a, b):
            if not 0 <= package < n_packages:
                where.fail("links", "pairs",
                           f"link [{a}, {b}] names package {package}, "
                           f"but packages are 0..{n_packages - 1}")
        if a == b:
            where.fail("links", "pairs", f"link [{a}, {b}] joins a package to itself")
        if (min(a, b), max(a, b)) in seen:
            where.fail("links", "pairs", f"link [{a}, {b}] is listed twice")
        seen.add((min(a, b), max(a, b)))
    hops = package_hops(n_packages, pairs)
    for package in range(n_packages):
        if hops[0][package] is None:
            section, key = ("links", "pairs") if "links" in doc else (None, "packages")
            where.fail(section, key, f"package {package} cannot be reached from package 0")
    return tuple((a, b) for a, b in pairs)


def _latencies(doc: dict, fields: dict, where: _Where) -> dict:
    raw = doc["latency"]
    for key in raw:
        if key in OLD_LATENCY_KEYS:
            where.fail("latency", key, "transfers are no longer one number per relation: "
                       "give the [protocol] table's family and legs instead")
        if key not in LATENCY_KEYS:
            where.fail("latency", key,
                       f"unknown latency (expected one of: {', '.join(LATENCY_KEYS)})")
    levels = dict(fields["shared_caches"])
    needs = {"l1_hit": "every machine has an L1", "l2_hit": "every machine has an L2",
             "l3_hit": "caches.L3 is set" if "L3" in levels else ""}
    out = {}
    for key in LATENCY_KEYS:
        if key not in raw:
            if needs[key]:
                where.fail("latency", None, f"missing latency '{key}' ({needs[key]})")
            out[key] = None
            continue
        value = raw[key]
        if not _cycles(value):
            where.fail("latency", key, f"must be a positive whole number of cycles, at most {MAX_LATENCY:,}")
        out[key] = value
    return out


def _instruction_costs(doc: dict, where: _Where) -> tuple:
    """[instructions]: (name, cycles) pairs in INSTRUCTION_KEYS order; () if absent."""
    raw = doc.get("instructions", {})
    for key in raw:
        if key not in INSTRUCTION_KEYS:
            where.fail("instructions", key,
                       f"unknown instruction (expected one of: {', '.join(INSTRUCTION_KEYS)})")
        if not _cycles(raw[key]):
            where.fail("instructions", key,
                       f"must be a positive whole number of cycles, at most {MAX_LATENCY:,}")
    return tuple((key, raw[key]) for key in INSTRUCTION_KEYS if key in raw)


def _cycles(value) -> bool:
    """A latency: a whole number of cycles within bounds (TOML's true is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_LATENCY


def _protocol(doc: dict, where: _Where) -> dict:
    """The family, its legs and whether reads merge:
    {"family": ..., "protocol": ((key, value), ...), "merge_reads": ...}."""
    raw = doc["protocol"]
    family = raw.get("family")
    if family is None:
        where.fail("protocol", None, f"missing 'family' (one of: {', '.join(FAMILY_KEYS)})")
    if family not in FAMILY_KEYS:
        where.fail("protocol", "family", f"unknown family {family!r} "
                                         f"(expected one of: {', '.join(FAMILY_KEYS)})")
    wanted = FAMILY_KEYS[family]
    merge_reads = raw.get("merge_reads", False)
    if not isinstance(merge_reads, bool):
        where.fail("protocol", "merge_reads", "must be true or false")
    for key in raw:
        if key not in ("family", "merge_reads") and key not in wanted:
            where.fail("protocol", key, f"not a leg of {family} (its legs: {', '.join(wanted)})")
    legs = []
    for key in wanted:
        if key not in raw:
            where.fail("protocol", None, f"missing '{key}' (a leg of {family})")
        value = raw[key]
        limit = MAX_FREQ_GHZ if key.endswith("_ghz") else MAX_LATENCY
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or not 0 < value <= limit:
            where.fail("protocol", key, f"must be a positive number, at most {limit:,g}")
        legs.append((key, float(value)))
    return {"family": family, "protocol": tuple(legs), "merge_reads": merge_reads}
