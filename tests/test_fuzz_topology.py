"""Fuzz: topology files, generated and mutated, never break sprat.

A topology file is TOML a person writes (emulator/interconnect/topofile.py
reads it). Whatever it holds (fields of the wrong type, numbers huge,
negative, nan or infinite, lists empty or nested, cores missing or twice,
packages no link reaches, bytes changed at random), `sprat topology show`
ends in one line and exit 2 or shows the machine, and a machine that loads
boots the default image to a clean end or a one-line reason.
"""

import json
import math

import pytest
from hypothesis import event, given, settings, strategies as st

from emulator.interconnect.topology import PRESET_DIR, load_topology
from tests.fuzzing import assert_one_line_or_success, examples, run_cli

BOOT_CYCLES = "400000"          # the default image ends after ~86,000 cycles
BOOT_LARGEST = 8                # cores: larger machines are shown, not booted, here

ODD_VALUES = st.sampled_from([
    0, -1, 1, 2, 3, 2**31, 2**63 - 1, -2**63, 10**6, 10**6 + 1, math.nan, math.inf, -math.inf,
    0.5, 1e-300, 1e300, True, False, "", "3", "²", "ünïcode ✓", [], [[]], [0], [[0, 0]], [[-1]],
    [[0, 1], [1, 2]], [[2**63]], {}, {"L2": [[0]]}, [[0.5]], ["x"], [[True]], [[0, 1], [0, 1]]])


def toml_value(value) -> str:
    """A Python value as TOML (enough for what the fuzz makes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)                 # TOML's basic strings escape as JSON's do
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_text(doc: dict) -> str:
    lines, tables = [], []
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            tables.append((key, value))
        else:
            lines.append(f"{json.dumps(key)} = {toml_value(value)}")
    for name, table in tables:
        lines.append(f"[{json.dumps(name)}]")
        lines += [f"{json.dumps(key)} = {toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


@st.composite
def machines(draw):
    """A plausible machine (packages, caches, links, latencies), then a few
    of its fields replaced, removed or added."""
    n_packages = draw(st.integers(1, 4))
    per_package = draw(st.integers(1, 4))
    packages = [list(range(p * per_package, (p + 1) * per_package)) for p in range(n_packages)]
    doc = {"name": draw(st.sampled_from(["fuzzed", "ünï ✓", " "])), "description": "fuzzed",
           "freq_ghz": draw(st.sampled_from([2.0, 3, 0.001, 100.0])), "packages": packages,
           "caches": {"L3": packages} if draw(st.booleans()) else {},
           "links": {"pairs": [[p, p + 1] for p in range(n_packages - 1)]},
           "latency": {"l1_hit": 3, "l2_hit": 12, "l3_hit": 40},
           "protocol": draw(st.sampled_from([
               {"family": "amd-probe-broadcast", "northbridge_ghz": 2.0, "on_chip_nb": 112,
                "ht_hop_nb": 24, "line_on_link_ns": 16, "dram_ns": 60},
               {"family": "intel-fsb", "bus_ghz": 0.333, "l2_miss_cycles": 14,
                "on_die_snoop_bus": 5.5, "bus_transaction_bus": 5.5, "snoop_forward_bus": 5.5,
                "hitm_supply_cycles": 14, "line_through_mch_bus": 2, "memory_ns": 114.9}]))}
    for _ in range(draw(st.integers(0, 3))):
        section = draw(st.sampled_from([None, "caches", "links", "latency", "protocol"]))
        table = doc if section is None else doc.setdefault(section, {})
        if not isinstance(table, dict):
            continue
        key = draw(st.sampled_from(sorted(table) + ["L2", "L4", "pairs", "extra", "", "é", "family",
                                                "hop_transfer"]))
        if draw(st.booleans()) and key in table:
            del table[key]
        else:
            table[key] = draw(ODD_VALUES)
    return toml_text(doc)


def mutated_presets():
    """A preset's text with a few characters changed, deleted or inserted."""
    texts = [path.read_text() for path in sorted(PRESET_DIR.glob("*.toml"))]
    edit = st.tuples(st.sampled_from(["change", "delete", "insert"]), st.floats(0, 1),
                     st.sampled_from(list("[]{}=,.\"'#\n 0123456789-+eE_xnaé²\x00\x7f\\")))
    return st.builds(_edit, st.sampled_from(texts), st.lists(edit, min_size=1, max_size=4))


def _edit(text, edits):
    for kind, where, char in edits:
        at = min(int(where * len(text)), len(text) - 1)
        if kind == "change":
            text = text[:at] + char + text[at + 1:]
        elif kind == "delete":
            text = text[:at] + text[at + 1:]
        else:
            text = text[:at] + char + text[at:]
    return text


def show_then_boot(capsys, path):
    argv = ["topology", "show", str(path)]
    status, out, err = run_cli(capsys, argv)
    assert_one_line_or_success(argv, status, err, allowed=(0, 2))
    event("shown" if status == 0 else "refused")
    if status != 0:
        return
    if load_topology(path).n_cores() > BOOT_LARGEST:
        return
    argv = ["boot", "--topology", str(path), "--max-cycles", BOOT_CYCLES]
    status, _, err = run_cli(capsys, argv)
    assert_one_line_or_success(argv, status, err)
    event(f"booted: exit {status}")


@pytest.fixture
def topology_file(tmp_path):
    return tmp_path / "fuzzed.toml"


@settings(max_examples=examples(60))
@given(text=machines())
def test_generated_topologies_are_shown_or_refused_in_one_line(capsys, topology_file, text):
    topology_file.write_text(text)
    show_then_boot(capsys, topology_file)


@settings(max_examples=examples(60))
@given(text=mutated_presets())
def test_mutated_presets_are_shown_or_refused_in_one_line(capsys, topology_file, text):
    topology_file.write_bytes(text.encode("utf-8", "surrogatepass"))
    show_then_boot(capsys, topology_file)
