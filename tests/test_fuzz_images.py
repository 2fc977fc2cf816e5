"""Fuzz: boot images, random and mutated, never break `sprat boot`.

An image is the first file a newcomer edits. Whatever it holds (lines in
any order, unknown directives, no kernel line or two, paths to devices,
folders and files that are not there, options with huge, negative,
Unicode or empty numbers), `sprat boot` ends in one line and exit 2, a
run that fails with its reason (exit 1), or a clean run; never a
traceback, never a hang (tests/fuzzing.py says how that is checked).
"""

import os
import re

import pytest
from hypothesis import event, given, settings, strategies as st

from tests.conftest import ROOT, USER_LIBRARY
from tests.fuzzing import assert_one_line_or_success, examples, hostile_files, run_cli

# A boot may run this long before the budget ends it (exit 1): enough for
# the small programs below to finish, short enough for a fuzz case.
MAX_CYCLES = "1500000"
SHIPPED = sorted(path.name for path in (ROOT / "images").glob("*.lst")
                 if path.name != "shootdown.lst")    # 32 cores: too slow for a fuzz case

NUMBERS = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70).map(str),
    st.sampled_from(["0", "1", "3", "4", "63", "64", "-1", str(2**63), str(2**63 - 1), str(2**64),
                     str(2**64 - 1), "0x10", "0b11", "0o7", "1_000", "1e3", "nan", "inf", "-0",
                     "", "²", "٣", "１２", "⑦", "0x", "--1", "all", " "]))
KEYS = st.sampled_from(["core", "kind", "iterations", "target", "rounds", "role", "count",
                        "child", "on", "channel", "service", "CORE", "Core", "", "ß", "x.y",
                        "rax", "start", "SYS_EXIT", "é", "a-b", "1"])
WORDS = st.sampled_from(["nospawn", "monitor", "probe", "=", "==", "core==1", "#", "x", "é",
                         "\u200b", "kernel", "module"])
OPTIONS = st.lists(st.one_of(st.builds("{}={}".format, KEYS, NUMBERS), WORDS), max_size=4)


def programs(tmp_path):
    """Paths an image line may name: the tree's programs, a Unicode name
    beside the image, and files that are not programs at all."""
    unicode_program = tmp_path / "héllo_ünïcode.S"
    if not unicode_program.exists():
        unicode_program.write_text(f"start:\n    xor edi, edi\n    call exit\n"
                                   f'.include "{USER_LIBRARY}"\n')
    good = ["/userland/hello.S", "/userland/faulty.S", "/userland/spin.S",
            "/userland/lmp_pingpong.S", "/userland/spawn_child.S", "héllo_ünïcode.S",
            "../" + tmp_path.name + "/héllo_ünïcode.S"]
    odd = ["/cpudriver/cpudriver.S", "/userland/lib/sprat.S", "/userland/", "/images/default.lst",
           "/", "//", "/../../../../etc/passwd", "missing.S", "/userland/hello.s", "/userland/HELLO.S"]
    # Relative to the image (a path with a leading / is inside the tree).
    hostile = [os.path.relpath(path, tmp_path) if path.startswith("/") else path
               for path in hostile_files(tmp_path / "files").values()]
    return good, odd + hostile


def entries(paths, directive=st.sampled_from(["module"] * 6 + ["MODULE", "Module"])):
    """`module PATH OPTIONS...` lines, mostly with programs that exist."""
    good, odd = paths
    path = st.one_of(*[st.sampled_from(good)] * 4, st.sampled_from(odd))
    options = st.one_of(st.just([]), st.just([]), OPTIONS)
    return st.builds(lambda directive, path, options: " ".join([directive, path, *options]),
                     directive, path, options)


ODD_LINES = st.one_of(
    st.sampled_from(["title fuzzed", "title", "title é\u0301 ünïcode ✓", "timeout 5", "root (hd0)",
                     "# a comment", "", "   ", "\t", "module", "kernel", "modul /userland/hello.S",
                     "title a\x0bb", "module\u00a0/userland/hello.S", "\ufeffkernel x",
                     "title second", "kernel /cpudriver/cpudriver.S"]),
    st.text(max_size=30).map(lambda text: text.replace("\n", " ")))


def images(tmp_path):
    """Image texts: mostly one kernel line and a few modules, sometimes
    none or two kernel lines, odd lines and options, in any order."""
    paths = programs(tmp_path)
    usual = st.just(["kernel /cpudriver/cpudriver.S"])
    kernels = st.one_of(usual, usual, usual, st.lists(entries(paths, st.just("kernel")), max_size=2))
    odd = st.one_of(st.just([]), st.lists(ODD_LINES, max_size=3))
    return st.builds(lambda kernels, modules, odd, rng: _shuffle(kernels + modules + odd, rng),
                     kernels, st.lists(entries(paths), min_size=1, max_size=4), odd,
                     st.randoms(use_true_random=False))


def _shuffle(lines, rng):
    lines = list(lines)
    rng.shuffle(lines)
    return "\n".join(lines) + "\n"


def boot(capsys, image, cores="2"):
    argv = ["boot", str(image), "--cores", cores, "--max-cycles", MAX_CYCLES]
    status, _, err = run_cli(capsys, argv)
    assert_one_line_or_success(argv, status, err)
    event(f"exit {status}: {err.strip()[-90:] if status else 'ran'}")
    return status, err


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@settings(max_examples=examples(40))
@given(data=st.data())
def test_random_images_end_in_one_line_or_a_run(capsys, cwd, data):
    text = data.draw(images(cwd), label="image")
    image = cwd / "fuzzed.lst"
    image.write_text(text)
    boot(capsys, image)


# Mutations of the shipped images: one or two edits of a real image.
TOKENS = st.sampled_from(["", "core=9", "core=-1", "core=²", "core=٣", f"core={2**64}", "nospawn",
                          "monitor", "kernel", "module", "#", "x=", "=1", "ünï", str(2**63),
                          "/dev/zero", "/dev/full", "/", "/userland", "../x.S", "core=all"])


def mutate(text: str, edits, rng) -> str:
    lines = text.splitlines()
    for kind, token in edits:
        at = rng.randrange(len(lines) + 1)
        if kind == "delete" and lines:
            del lines[min(at, len(lines) - 1)]
        elif kind == "duplicate" and lines:
            lines.insert(at, lines[min(at, len(lines) - 1)])
        elif kind == "insert":
            lines.insert(at, token)
        elif kind == "word" and lines:
            index = min(at, len(lines) - 1)
            words = lines[index].split() or [""]
            words[rng.randrange(len(words))] = token
            lines[index] = " ".join(words)
        elif kind == "append" and lines:
            index = min(at, len(lines) - 1)
            lines[index] += " " + token
        elif kind == "number":
            index = min(at, len(lines) - 1) if lines else 0
            if lines:
                lines[index] = re.sub(r"\d+", token or "0", lines[index], count=1)
    return "\n".join(lines) + "\n"


EDITS = st.lists(st.tuples(st.sampled_from(["delete", "duplicate", "insert", "word", "append",
                                            "number"]), TOKENS), min_size=1, max_size=3)


@settings(max_examples=examples(25))
@given(name=st.sampled_from(SHIPPED), edits=EDITS, rng=st.randoms(use_true_random=False))
def test_mutated_shipped_images_end_in_one_line_or_a_run(capsys, cwd, name, edits, rng):
    # The copy sits in the tree's images/ folder's place, so that its
    # relative paths (none today) and /-paths resolve as the original's.
    image = cwd / name
    image.write_text(mutate((ROOT / "images" / name).read_text(), edits, rng))
    boot(capsys, image, cores="4")



def test_the_long_profile_the_readme_names_runs_more_cases_afresh():
    """README: `pytest tests/test_fuzz_*.py --hypothesis-profile=long`."""
    ci, long = settings.get_profile("ci"), settings.get_profile("long")
    assert ci.derandomize and not long.derandomize
    assert long.max_examples >= 10 * ci.max_examples
    assert "--hypothesis-profile=long" in (ROOT / "README.md").read_text()
