"""Topologies: the four presets, generic machines, user TOML files and their errors."""

import re
import textwrap

import pytest
from hypothesis import given, strategies as st

from emulator.errors import SpratError
from emulator.machine import Machine
from emulator.interconnect.render import render_topology
from emulator.interconnect.topology import PRESET_DIR, generic, list_presets, load_topology

PRESETS = ["amd-2x2", "amd-4x4", "amd-8x4", "intel-2x4"]


# -- the presets --

def test_presets_are_the_four_machines_of_the_paper():
    assert list_presets() == PRESETS


@pytest.mark.parametrize("name, cores, packages, ghz", [
    ("intel-2x4", 8, 2, 2.66),
    ("amd-2x2", 4, 2, 2.8),
    ("amd-4x4", 16, 4, 2.5),
    ("amd-8x4", 32, 8, 2.0),
])
def test_preset_has_the_papers_shape(name, cores, packages, ghz):
    topo = load_topology(name)
    assert topo.name == name
    assert topo.n_cores() == cores
    assert len(topo.packages) == packages
    assert topo.freq_ghz == ghz


def test_intel_cores_share_l2_in_pairs_and_cross_the_bus_otherwise():
    topo = load_topology("intel-2x4")
    assert topo.relation(0, 0) == "same-core"
    assert topo.relation(0, 1) == "shared-cache"
    assert topo.shared_level(0, 1) == "L2"
    assert topo.relation(0, 2) == "same-package"
    assert topo.relation(0, 5) == "1-hop"
    assert topo.hops(0, 3) == 0


def test_amd_2x2_shares_no_cache_and_is_one_hop_apart():
    topo = load_topology("amd-2x2")
    assert topo.relation(0, 1) == "same-package"
    assert topo.relation(1, 2) == "1-hop"
    assert topo.max_hops() == 1


def test_amd_4x4_is_a_square_with_two_hop_diagonals():
    topo = load_topology("amd-4x4")
    assert topo.relation(0, 3) == "shared-cache"
    assert topo.shared_level(0, 3) == "L3"
    hops_from_package_0 = sorted(topo.hops(0, first) for first in (0, 4, 8, 12))
    assert hops_from_package_0 == [0, 1, 1, 2]


def test_amd_8x4_is_wired_as_barrelfish_describes_the_papers_board():
    # Barrelfish's SKB facts for its 8x4 machine (usr/skb/programs/
    # boardlayout.pl, see the preset): 3 HyperTransport links a socket,
    # packages 0 and 7 giving one each to a PCIe root complex.
    topo = load_topology("amd-8x4")
    links = {p: {q for pair in topo.links if p in pair for q in pair if q != p}
             for p in range(8)}
    assert links == {0: {1, 7}, 1: {0, 2, 6}, 2: {1, 3, 4}, 3: {2, 4, 5},
                     4: {2, 3, 5}, 5: {3, 4, 6}, 6: {1, 5, 7}, 7: {0, 6}}, (
        f"amd-8x4's links should be the board's, got {links}")
    three_hops = {(p, q) for p in range(8) for q in range(p + 1, 8)
                  if topo.package_hops(p, q) == 3}
    assert topo.max_hops() == 3
    assert three_hops == {(0, 3), (0, 4), (0, 5), (2, 7), (3, 7), (4, 7)}, (
        f"the farthest packages of amd-8x4 should be 0 and 7 from the far square, "
        f"got {sorted(three_hops)}")
    assert {topo.relation(0, b) for b in range(32)} == {
        "same-core", "shared-cache", "1-hop", "2-hop", "3-hop"}


@pytest.mark.parametrize("name, family", [
    ("amd-2x2", "amd-probe-broadcast"), ("amd-4x4", "amd-probe-broadcast"),
    ("amd-8x4", "amd-probe-broadcast"), ("intel-2x4", "intel-fsb")])
def test_each_preset_says_its_protocol_family(name, family):
    assert load_topology(name).family == family


@pytest.mark.parametrize("name", PRESETS)
def test_a_transfer_never_costs_less_than_an_l2_hit_nor_a_far_one_less_than_a_near_one(name):
    topo = load_topology(name)
    order = ["shared-cache", "same-package", "1-hop", "2-hop"]
    costs = [topo.transfer_cycles(0, b) for relation in order
             for b in [next((c for c in range(topo.n_cores()) if topo.relation(0, c) == relation),
                            None)] if b is not None]
    assert costs == sorted(costs) and costs[0] > topo.l2_hit, (
        f"{name}: transfers by distance should not shrink, got {costs}")


def test_hops_are_symmetric_and_relation_matches_transfer_cost():
    topo = load_topology("amd-8x4")
    for a in range(topo.n_cores()):
        for b in range(topo.n_cores()):
            assert topo.hops(a, b) == topo.hops(b, a)
            assert topo.transfer_cycles(a, b) == topo.transfer_cycles(b, a)


def test_ns_converts_cycles_at_the_machine_clock():
    assert load_topology("amd-8x4").ns(200) == pytest.approx(100.0)
    assert load_topology("intel-2x4").ns(266) == pytest.approx(100.0)


def test_package_of_names_the_package_holding_a_core():
    topo = load_topology("amd-4x4")
    assert [topo.package_of(core) for core in (0, 3, 4, 15)] == [0, 0, 1, 3]


# -- generic machines for `sprat boot --cores N` --

@given(st.integers(min_value=1, max_value=64))
def test_generic_machine_has_every_core_and_a_cost_for_every_pair(n):
    topo = generic(n)
    assert topo.n_cores() == n
    assert sorted(core for cores in topo.packages for core in cores) == list(range(n))
    assert all(len(cores) <= 4 for cores in topo.packages)
    for b in range(n):
        assert topo.transfer_cycles(0, b) > 0


def test_generic_packages_form_a_ring():
    topo = generic(64)
    assert len(topo.packages) == 16
    assert topo.hops(0, 4) == 1          # package 0 to 1
    assert topo.hops(0, 60) == 1         # package 0 to 15: the ring closes
    assert topo.max_hops() == 8


@pytest.mark.parametrize("n", [0, 65, -1])
def test_generic_refuses_core_counts_outside_1_to_64(n):
    with pytest.raises(SpratError, match="between 1 and 64"):
        generic(n)


def test_unknown_topology_name_says_what_exists():
    with pytest.raises(SpratError, match=r"unknown topology 'amd-9x9'.*intel-2x4"):
        load_topology("amd-9x9")


# -- user topology files --

GOOD = """\
name = "tiny"
description = "two packages of two cores"
freq_ghz = 2
packages = [[0, 1], [2, 3]]

[caches]
L2 = [[0, 1], [2, 3]]

[links]
pairs = [[0, 1]]

[latency]
l1_hit = 3
l2_hit = 12

[protocol]
family = "amd-probe-broadcast"
northbridge_ghz = 2
on_chip_nb = 70
ht_hop_nb = 50
line_on_link_ns = 16
dram_ns = 60
"""


def write(tmp_path, text, name="machine.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_user_topology_file_loads_like_a_preset(tmp_path):
    topo = load_topology(write(tmp_path, GOOD))
    assert topo.name == "tiny"
    assert topo.freq_ghz == 2.0
    assert topo.relation(0, 1) == "shared-cache"
    assert topo.family == "amd-probe-broadcast"
    # Core 0 gets a line core 3 holds, homed at core 3's package: on_chip,
    # the request 1 hop to the home, then the later of the probe round (1
    # hop back) and the data (1 hop, and the line on the link: 32 cycles).
    assert topo.transfer_cycles(0, 3) == 70 + 50 + max(50, 50 + 32)


def test_a_user_topology_chooses_whether_reads_of_a_line_merge(tmp_path):
    merging = load_topology(write(tmp_path, GOOD.replace("dram_ns = 60",
                                                         "dram_ns = 60\nmerge_reads = true")))
    assert merging.merge_reads, "merge_reads = true in [protocol] was not read"
    assert not load_topology(write(tmp_path, GOOD, "plain.toml")).merge_reads, (
        "without merge_reads, reads of a line should each wait their turn")
    machine = Machine(cores=4, topology=merging)
    assert machine.cost.directory.merge_reads, "the cost model's directory ignores merge_reads"


@pytest.mark.parametrize("preset", list_presets())
def test_no_preset_merges_the_reads_of_a_line(preset):
    assert not load_topology(preset).merge_reads, (
        f"{preset} merges concurrent reads of a line: its home (AMD) or its bus (Intel) "
        "serves them one at a time")


def test_user_topology_file_sets_instruction_costs(tmp_path):
    topo = load_topology(write(tmp_path, GOOD + "\n[instructions]\nsysret = 35\ninterrupt = 90\n"))
    assert dict(topo.instruction_costs) == {"sysret": 35, "interrupt": 90}
    assert load_topology(write(tmp_path, GOOD, "plain.toml")).instruction_costs == (), (
        "a file without [instructions] should charge privileged instructions nothing extra")


def test_topology_show_lists_the_privileged_instruction_costs():
    text = render_topology(load_topology("amd-2x2"))
    assert "privileged instructions:" in text
    assert "  syscall                     27       9.6" in text, text
    assert "  invlpg                     280     100.0" in text, text


def test_a_user_topology_can_choose_the_front_side_bus(tmp_path):
    text = GOOD[:GOOD.index("[protocol]")] + """[protocol]
family = "intel-fsb"
bus_ghz = 0.5
l2_miss_cycles = 12
on_die_snoop_bus = 5
bus_transaction_bus = 5
snoop_forward_bus = 5
hitm_supply_cycles = 12
line_through_mch_bus = 2
memory_ns = 100
"""
    topo = load_topology(write(tmp_path, text))
    assert topo.family == "intel-fsb"
    assert topo.transfer_cycles(0, 1) == 12 + 20             # on the die: 5 bus clocks
    assert topo.transfer_cycles(0, 3) == 12 + 20 + 20 + 12 + 8
    assert topo.memory == 200


def edit(replace, by):
    assert replace in GOOD, replace
    return GOOD.replace(replace, by)


BAD_FILES = [
    # (what is wrong, file text, field named in the message, text of the line it points at)
    ("syntax error", edit("freq_ghz = 2", "freq_ghz = = 2"),
     "TOML syntax error", "freq_ghz = = 2"),
    ("missing field", edit("l2_hit = 12\n", ""),
     "latency: missing latency 'l2_hit'", "[latency]"),
    ("missing top-level field", edit('description = "two packages of two cores"\n', ""),
     "missing field 'description'", 'name = "tiny"'),
    ("wrong type", edit("freq_ghz = 2", 'freq_ghz = "fast"'),
     "freq_ghz: must be a positive number", 'freq_ghz = "fast"'),
    ("unknown field", edit('name = "tiny"', 'name = "tiny"\ncolour = "blue"'),
     "colour: unknown field", 'colour = "blue"'),
    ("unknown latency", edit("l2_hit = 12", "l2_hit = 12\nl4_hit = 90"),
     "latency.l4_hit: unknown latency", "l4_hit = 90"),
    ("a latency of the first format", edit("l2_hit = 12", "l2_hit = 12\nhop_transfer = 150"),
     "latency.hop_transfer: transfers are no longer one number per relation",
     "hop_transfer = 150"),
    ("core listed twice", edit("[[0, 1], [2, 3]]\n\n[caches]", "[[0, 1], [1, 3]]\n\n[caches]"),
     "packages: core 1 is listed twice (packages 0 and 1)", "packages = [[0, 1], [1, 3]]"),
    ("core missing", edit("[[0, 1], [2, 3]]\n\n[caches]", "[[0, 1], [2, 4]]\n\n[caches]"),
     "packages: core 3 is missing", "packages = [[0, 1], [2, 4]]"),
    ("link to unknown package", edit("pairs = [[0, 1]]", "pairs = [[0, 1], [1, 7]]"),
     "links.pairs: link [1, 7] names package 7", "pairs = [[0, 1], [1, 7]]"),
    ("link to itself", edit("pairs = [[0, 1]]", "pairs = [[0, 1], [1, 1]]"),
     "links.pairs: link [1, 1] joins a package to itself", "pairs = [[0, 1], [1, 1]]"),
    ("link twice", edit("pairs = [[0, 1]]", "pairs = [[0, 1], [1, 0]]"),
     "links.pairs: link [1, 0] is listed twice", "pairs = [[0, 1], [1, 0]]"),
    ("unreachable package", edit("pairs = [[0, 1]]", "pairs = []"),
     "links.pairs: package 1 cannot be reached", "pairs = []"),
    ("cache across packages", edit("L2 = [[0, 1], [2, 3]]", "L2 = [[0, 2]]"),
     "caches.L2: group [0, 2] spans packages", "L2 = [[0, 2]]"),
    ("unknown cache level", edit("L2 = [[0, 1], [2, 3]]", "L4 = [[0, 1]]"),
     "caches.L4: unknown cache level", "L4 = [[0, 1]]"),
    ("cache names unknown core", edit("L2 = [[0, 1], [2, 3]]", "L2 = [[0, 9]]"),
     "caches.L2: core 9 is not in any package", "L2 = [[0, 9]]"),
    ("negative latency", edit("l2_hit = 12", "l2_hit = -12"),
     "latency.l2_hit: must be a positive whole number", "l2_hit = -12"),
    ("latency not a number", edit("l2_hit = 12", "l2_hit = true"),
     "latency.l2_hit: must be a positive whole number", "l2_hit = true"),
    ("packages wrong type", edit("[[0, 1], [2, 3]]\n\n[caches]", '"all"\n\n[caches]'),
     "packages: must be a list of non-empty lists", 'packages = "all"'),
    ("no protocol", GOOD[:GOOD.index("[protocol]")],
     "missing field 'protocol'", 'name = "tiny"'),
    ("unknown family", edit('family = "amd-probe-broadcast"', 'family = "token-ring"'),
     "protocol.family: unknown family 'token-ring'", 'family = "token-ring"'),
    ("missing family", edit('family = "amd-probe-broadcast"\n', ""),
     "protocol: missing 'family'", "[protocol]"),
    ("missing leg", edit("ht_hop_nb = 50\n", ""),
     "protocol: missing 'ht_hop_nb' (a leg of amd-probe-broadcast)", "[protocol]"),
    ("leg of the other family", edit("dram_ns = 60", "dram_ns = 60\nbus_ghz = 0.333"),
     "protocol.bus_ghz: not a leg of amd-probe-broadcast", "bus_ghz = 0.333"),
    ("leg not a number", edit("ht_hop_nb = 50", 'ht_hop_nb = "fast"'),
     "protocol.ht_hop_nb: must be a positive number", 'ht_hop_nb = "fast"'),
    ("leg zero", edit("ht_hop_nb = 50", "ht_hop_nb = 0"),
     "protocol.ht_hop_nb: must be a positive number", "ht_hop_nb = 0"),
    ("merge_reads not a boolean", edit("dram_ns = 60", "dram_ns = 60\nmerge_reads = 1"),
     "protocol.merge_reads: must be true or false", "merge_reads = 1"),
    ("unknown instruction", GOOD + "\n[instructions]\nsyscall = 27\nsysenter = 30\n",
     "instructions.sysenter: unknown instruction", "sysenter = 30"),
    ("instruction cost not cycles", GOOD + "\n[instructions]\nsysret = 0\n",
     "instructions.sysret: must be a positive whole number of cycles", "sysret = 0"),
    ("instruction cost wrong type", GOOD + '\n[instructions]\ninvlpg = "slow"\n',
     "instructions.invlpg: must be a positive whole number of cycles", 'invlpg = "slow"'),
    ("instructions not a table", GOOD.replace('name = "tiny"', 'name = "tiny"\ninstructions = 5'),
     "instructions: must be a table", "instructions = 5"),
]


@pytest.mark.parametrize("problem, text, field, line_text", BAD_FILES,
                         ids=[case[0] for case in BAD_FILES])
def test_bad_topology_file_names_the_field_and_its_line(tmp_path, problem, text, field,
                                                        line_text):
    path = write(tmp_path, text)
    with pytest.raises(SpratError) as caught:
        load_topology(path)
    message = str(caught.value)
    found = re.match(r"^(.+):(\d+): (.*)$", message)
    assert found, f"{problem}: message should be 'path:line: ...', got {message!r}"
    assert found.group(1) == str(path)
    assert field in found.group(3), f"{problem}: {message!r} should mention {field!r}"
    lines = text.splitlines()
    pointed = lines[int(found.group(2)) - 1]
    assert pointed.strip() == line_text, (
        f"{problem}: error points at line {found.group(2)} ({pointed!r}), "
        f"expected the line {line_text!r}")
    assert "\n" not in message


def test_unreadable_file_is_a_user_error(tmp_path):
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(SpratError):
        load_topology(folder)


# -- `sprat topology show` --

def test_render_shows_the_hop_matrix_of_32_cores_compactly():
    text = render_topology(load_topology("amd-8x4"))
    assert "core-to-core distance" in text
    rows = [line for line in text.splitlines() if re.match(r"^ {2,3}\d{1,2} [.sp1-9]", line)]
    assert len(rows) == 32
    assert rows[0].split(None, 1)[1] == ".sss 1111 2222 3333 3333 3333 2222 1111"
    assert max(len(line) for line in text.splitlines()) <= 100


@pytest.mark.parametrize("name", PRESETS)
def test_render_lists_packages_caches_and_latencies_in_cycles_and_ns(name):
    topo = load_topology(name)
    text = render_topology(topo)
    assert topo.description in text
    assert f"{topo.freq_ghz:g} GHz" in text
    assert "package 1: cores" in text
    assert re.search(r"memory\s+%d\s+%.1f" % (topo.memory, topo.ns(topo.memory)), text)
    far = topo.pair_label(0, topo.packages[1][0])
    assert f"{far} transfer" in text, f"no row for the transfer from package 1 ({far})"
    assert f"protocol: {topo.family}" in text


def matrix_of(name):
    """The text of `sprat topology show NAME`, the legend line of its distance
    matrix and the matrix's rows (the last section: one row per core)."""
    text = render_topology(load_topology(name))
    lines = text.splitlines()
    legend = next(line for line in lines if line.startswith("core-to-core distance"))
    return text, legend, lines[-load_topology(name).n_cores():]


def test_intel_matrix_names_the_other_die_and_socket_not_hops():
    text, legend, rows = matrix_of("intel-2x4")
    assert "L2: [0,1]  [2,3]  [4,5]  [6,7]" in text
    assert rows[0] == "  0 .sdd xxxx", (
        f"core 0's row should read shared, other die, other socket: {rows[0]!r}")
    assert not re.search(r"\d", "".join(row.split(None, 1)[1] for row in rows)), (
        "a front-side bus machine has no hops, yet its matrix counts some")
    for words in ("s shared cache", "d the package's other die", "x other socket"):
        assert words in legend, f"the legend does not say what {words[0]!r} means: {legend}"
    assert not re.search(r"\d hops?\b|hops? each", text), (
        f"intel-2x4 is described in hops, but a bus has none:\n{text}")


def test_amd_matrix_counts_hops_up_to_the_farthest_package():
    _, legend, rows = matrix_of("amd-8x4")
    assert "1-3 hops to another package" in legend, legend
    assert "3" in rows[0] and not re.search(r"[4-9+]", "".join(row[5:] for row in rows)), (
        "amd-8x4's farthest pairs should be 3 hops apart")


def test_matrix_legend_lists_only_the_marks_it_uses():
    _, legend, rows = matrix_of("amd-2x2")
    assert rows[0] == "  0 .p 11", rows[0]
    assert legend == ("core-to-core distance (. same core, p same package, "
                      "1 hop to another package):"), legend


# -- every preset number has its source beside it --

# A source named (a document, a year, a measurement), or a value derived
# from another parameter of the file that has one ("the memory latency below").
SOURCE_WORDS = re.compile(r"seen|cited|measured|manual|pub\.|\b(19|20)\d\d\b|\b(see|above|below)\b", re.I)


def parameter_sources(path):
    """(line number, key, the comments that source it) for every latency,
    instruction cost and clock parameter of a topology file: its trailing comment and the
    comment block right above its run of parameter lines."""
    found, block, section = [], [], ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            block = block + [stripped]
        elif not stripped:
            block = []
        elif stripped.startswith("["):
            section, block = stripped, []
        else:
            key = stripped.split("=", 1)[0].strip()
            trailing = stripped.split("#", 1)[1] if "#" in stripped else ""
            if (section in ("[latency]", "[protocol]", "[instructions]") and key != "family"
                    or key == "freq_ghz"):
                found.append((number, key, " ".join(block) + " " + trailing))
    return found


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_parameter_cites_its_source(preset):
    path = PRESET_DIR / f"{preset}.toml"
    for number, key, comments in parameter_sources(path):
        assert SOURCE_WORDS.search(comments), (
            f"{path.name}:{number}: {key} has no source comment above it or beside it "
            "(say which measurement or document the number comes from)")


def comment_paragraphs(path, section):
    """The comment paragraphs (blank-line separated) of one [section] of a topology file."""
    paragraphs, current, inside = [], [], False
    for line in path.read_text().splitlines() + [""]:
        stripped = line.strip()
        if stripped.startswith("["):
            inside = stripped == section
        elif inside and stripped.startswith("#"):
            current.append(stripped.lstrip("# "))
            continue
        if current:
            paragraphs.append(" ".join(current))
            current = []
    return paragraphs


@pytest.mark.parametrize("preset", list_presets())
def test_every_instruction_a_preset_leaves_at_one_cycle_says_no_source_was_found(preset):
    from emulator.interconnect.topofile import INSTRUCTION_KEYS
    path = PRESET_DIR / f"{preset}.toml"
    unset = [key for key in INSTRUCTION_KEYS
             if key not in dict(load_topology(preset).instruction_costs)]
    notes = [p for p in comment_paragraphs(path, "[instructions]") if p.startswith("Not listed")]
    assert notes, f"{path.name}: [instructions] has no 'Not listed ...' note for {unset}"
    for key in unset:
        assert re.search(rf"\b{key}\b", notes[0]) and "found" in notes[0], (
            f"{path.name}: {key} costs one cycle, but the 'Not listed' note does not name it "
            "and say that no source for it was found")
