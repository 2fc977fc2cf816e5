"""Fuzz: command lines over every subcommand and option never break `sprat`.

Values are what people and scripts really pass: negative, zero, huge, 2^63
and 2^64, nan and inf, empty, Unicode digits (some Python's int() takes,
some it does not), hex and underscores; and as files, /dev/full,
/dev/zero, a fifo, a folder, a binary or UTF-16 file, a name too long.

Each command line ends in one line and exit 2 (1 for an output that
cannot be written, or a run that fails inside the machine), or in a
clean run; never a traceback or a hang. A command line holding a value
that is wrong must not succeed. Commands that would run for minutes on
good values (the benches, grading) always get at least one wrong value,
so that what is fuzzed there is the checking, not the bench.
"""

import re

import pytest
from hypothesis import event, given, settings, strategies as st

from sprat.cli import main
from tests.conftest import ROOT
from tests.fuzzing import assert_one_line_or_success, examples, hostile_files, run_cli, shown

HUGE = [str(2**63), str(2**63 - 1), str(2**64), str(2**64 - 1), "9" * 40, "-" + str(2**63)]
NOT_NUMBERS = ["", " ", "nan", "inf", "-inf", "1e3", "²", "½", "x", "--", "1.5", "0x", "1,000",
               "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨٩٠"]     # Arabic-Indic digits: a number too big


def pools(files, workdir):
    """kind -> (good values, wrong values, values either may be)."""
    hostile = [path for path in files.values()]
    count = (["1", "2", "1_000"], ["0", "-1", *HUGE, *NOT_NUMBERS], ["٣", "0012"])
    count2 = (["2", "3"], ["1", "0", "-1", *HUGE, *NOT_NUMBERS], ["٣"])
    rounds = (["16", "17"], ["15", "2", "0", "-1", *HUGE, *NOT_NUMBERS], ["٣"])  # and messages
    return {
        "count": count, "count2": count2, "rounds": rounds,
        "quantum": (["1", "100", "10000"], count[1], count[2]),
        "max-cycles": (["1", "1000", "200000"], count[1], count[2]),
        "timing": (["fast", "detailed"], ["", "slow", "FAST", "detailed ", "²", "-1"], []),
        "cores": (["1", "2", "3"], ["0", "65", "-1", *HUGE, *NOT_NUMBERS], ["٢", "4"]),
        "seed": (["0", "1", str(2**64 - 1), "0x10", "1_0"],
                 ["-1", str(2**64), "9" * 40, "nan", "", "²", "0x", "x"], ["٣"]),
        "port": ([], ["-1", "65536", *HUGE, *NOT_NUMBERS, "٣", " 80", "0x50", "+80"], []),
        "topology": (["amd-2x2", str(workdir / "pair.toml")], ["amd-9x9", *hostile], []),
        "image": ([str(ROOT / "images" / "default.lst")], [*hostile, "/dev/null"], []),
        "script": ([str(workdir / "script"), "/dev/null"], hostile, []),
        "break": ([], [], ["start", "syscall_entry core 1", "nosuch", "", "start core 99",
                           "start core -1", "0x200000", "²", "core", "start core ²"]),
        "output": ([str(workdir / "out.trace")],
                   ["/dev/full", "", files["folder"], str(workdir / "no" / "such" / "x"),
                    files["long"]], []),
        "png": ([str(workdir / "chart.png")],
                ["chart.txt", "", "/dev/full", files["folder"] + "/x", files["long"] + ".png",
                 str(workdir / "no" / "such" / "x.png")], []),
        "json": ([str(workdir / "timeline.json")],
                 ["timeline.txt", "", "/dev/full", files["folder"] + "/x", files["long"] + ".json",
                  str(workdir / "no" / "such" / "x.json")], []),
        "trace": ([str(workdir / "run.trace")], hostile, []),
        "lab-dir": ([], [path for path in hostile if path], []),
        "python-limit": (["1", "0.5", "86400"], ["0", "-1", "86401", *HUGE, "", " ", "nan",
                                                 "inf", "-inf", "x", "²"], ["1e3", "1_0", "٣"]),
        "lab": (["1"], ["99", "0", "-1", "", "²", "nosuch"], ["traps", "2", "١"]),
        "lab-folder": ([str(workdir / "ws")], [files["binary"], "/dev/full", files["long"]],
                       [files["folder"], "ünï"]),
        "lab-grade": ([], [files["missing"], files["folder"], "99", "x"], []),
        "lab-check": ([], ["99", "x", "", "-1"], []),
        "extra-tests": ([], hostile, []),
        "k": ([], [], ["", "test", "ünï", "-"]),
        "list": (["1", "1,2"], ["0", "-1", "", ",", "1,,2", "nan", "²", "1,0", "9" * 30], ["٣"]),
        "name": (["amd-2x2", "intel-2x4", str(workdir / "pair.toml")], ["nosuch", *hostile], []),
        "inject": (["slow:0*2", "link:0-1*2"],
                   ["", "stop", "stop:99@1", "slow:0*-1", "link:0-0*2", "nan", "²", "stop:1@-1"],
                   ["stop:1@1000"]),
        "gdb-files": ([], [], [str(workdir / "gdb-files"), "/dev/full", "", files["long"]]),
    }


MACHINE = [("--cores", "cores"), ("--quantum", "quantum"), ("--seed", "seed"),
           ("--lab", "lab-dir"), ("--python-limit", "python-limit"), ("--topology", "topology"),
           ("--timing", "timing")]
BENCH = [("--json", None), ("--lab", "lab-dir"), ("--python-limit", "python-limit")]
TIMED_BENCH = BENCH + [("--timing", "timing")]
# command words -> (positionals, options, expensive on good values?)
COMMANDS = {
    ("boot",): ([("image", "?")], MACHINE + [("--max-cycles", "max-cycles"),
                                             ("--expect-failures", None), ("--gdb", "port"),
                                             ("--gdb-files", "gdb-files"),
                                             ("--trace", "output"), ("--inject", "inject")],
                 False),
    ("debug",): ([("image", "?")], MACHINE + [("--script", "script"), ("--break", "break"),
                                              ("--gdb", "port"), ("--trace", "output"),
                                              ("--gdb-files", "gdb-files"),
                                              ("--expect-failures", None),
                                              ("--max-cycles", "max-cycles")], False),
    ("trace",): ([("trace", "1")], [("--lab", "lab-dir"), ("--python-limit", "python-limit"),
                                    ("--plot", "png"),
                                    ("--perfetto", "json")], False),
    ("bench", "boot"): ([], BENCH + [("--iterations", "count"), ("--quantum", "count")], True),
    ("bench", "urpc"): ([], TIMED_BENCH + [("--topology", "topology"), ("--rounds", "rounds"),
                                     ("--messages", "rounds"), ("--host-messages", "count2")],
                        True),
    ("bench", "shm-vs-msg"): ([], TIMED_BENCH + [("--topology", "topology"), ("--cores", "list"),
                                           ("--lines", "list"), ("--updates", "count"),
                                           ("--warmup", "count"), ("--plot", "png")], True),
    ("bench", "syscall"): ([], TIMED_BENCH + [("--topology", "topology"), ("--iterations", "count")],
                           True),
    ("bench", "tlb"): ([], TIMED_BENCH + [("--topology", "topology"), ("--cores", "list"),
                                    ("--plot", "png")], True),
    ("bench", "unmap"): ([], TIMED_BENCH + [("--topology", "topology"), ("--cores", "list")], True),
    ("topology", "list"): ([], [], False),
    ("topology", "show"): ([("name", "1")], [], False),
    ("lab", "list"): ([], [], False),
    ("lab", "start"): ([("lab", "1"), ("lab-folder", "?")], [], False),
    ("lab", "grade"): ([("lab-grade", "*")], [("--json", None), ("--extra-tests", "extra-tests"),
                                              ("-k", "k")], True),
    ("lab", "check"): ([("lab-check", "*")], [("--json", None), ("--scores", None)], True),
}
# Before the drawn options, so that a drawn value overrides them (argparse
# keeps the last): a boot ends soon, and the debugger reads a script, not
# the terminal.
SAFE_PREFIX = {("boot",): ["--max-cycles", "300000"],
               ("debug",): ["--max-cycles", "300000", "--script", "{script}"]}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    (folder / "pair.toml").write_text(
        'name = "pair"\ndescription = "two cores"\nfreq_ghz = 2.0\npackages = [[0, 1]]\n'
        "[latency]\nl1_hit = 3\nl2_hit = 12\n[protocol]\nfamily = \"intel-fsb\"\nbus_ghz = 0.333\n"
        "l2_miss_cycles = 14\non_die_snoop_bus = 5.5\nbus_transaction_bus = 5.5\n"
        "snoop_forward_bus = 5.5\nhitm_supply_cycles = 14\nline_through_mch_bus = 2\n"
        "memory_ns = 114.9\n")
    (folder / "script").write_text("step 5\nregs\nx 0x200000 4\nbreak exit\ncontinue\nbt\n"
                                   "core 1\ncontinue\nquit\n")
    assert main(["boot", str(ROOT / "images" / "twophase.lst"), "--trace",
                 str(folder / "run.trace")]) == 0
    return folder


@pytest.fixture
def cwd(workdir, monkeypatch):
    # `lab start` without a folder makes one here; never inside the tree.
    monkeypatch.chdir(workdir)
    return workdir


@st.composite
def command_lines(draw, workdir):
    """(command words, argv, wrong): a command line and whether it holds a wrong value."""
    files = hostile_files(workdir / "files")
    values = pools(files, workdir)
    words = draw(st.sampled_from(sorted(COMMANDS)))
    positionals, options, expensive = COMMANDS[words]
    wrong = False

    def value(kind):
        nonlocal wrong
        good, bad, either = values[kind]
        classes = [pool for pool in (good, bad, either) if pool]
        pool = draw(st.sampled_from(classes))
        wrong = wrong or pool is bad
        return draw(st.sampled_from(pool))

    argv = list(words) + [word.format(script=workdir / "script")
                          for word in SAFE_PREFIX.get(words, [])]
    # Each option once: argparse keeps an option's last value, so a wrong value
    # given before a good one for the same option would not make the line wrong.
    chosen = draw(st.lists(st.sampled_from(options), max_size=5, unique=True)) if options else []
    for flag, kind in chosen:
        argv += [flag] if kind is None else [flag, value(kind)]
    for kind, arity in positionals:
        many = {"?": (0, 1), "1": (1, 1), "*": (0, 2)}[arity]
        argv += [value(kind) for _ in range(draw(st.integers(*many)))]
    if expensive and not wrong:
        takes_value = [([flag], kind) for flag, kind in options
                       if kind is not None and values[kind][1]]
        takes_value += [([], kind) for kind, _ in positionals if values[kind][1]]
        flag, kind = draw(st.sampled_from(takes_value))
        argv += flag + [draw(st.sampled_from(values[kind][1]))]
        wrong = True
    return words, argv, wrong


@settings(max_examples=examples(120))
@given(data=st.data())
def test_random_command_lines_end_in_one_line_or_a_run(capsys, cwd, data):
    words, argv, wrong = data.draw(command_lines(cwd), label="argv")
    status, _, err = run_cli(capsys, argv)
    assert_one_line_or_success(argv, status, err, allowed=(1, 2) if wrong else (0, 1, 2))
    event(f"{' '.join(words)}: exit {status}")


# --- A soup of words: every option and value in any order ---------------------------------
def soup_words(workdir):
    values = pools(hostile_files(workdir / "files"), workdir)
    flags = sorted({flag for _, options, _ in COMMANDS.values() for flag, _ in options})
    commands = sorted({word for words in COMMANDS for word in words})
    everything = sorted({v for pools_ in values.values() for pool in pools_ for v in pool})
    return st.lists(st.one_of(st.sampled_from(flags), st.sampled_from(commands),
                              st.sampled_from(everything), st.sampled_from(["-h", "--help", "-"])),
                    max_size=8)


@settings(max_examples=examples(80))
@given(data=st.data())
def test_any_words_with_an_unknown_option_are_refused_in_one_line(capsys, cwd, data):
    """A word sprat does not know stops every command line before it runs."""
    words = data.draw(soup_words(cwd), label="words")
    at = data.draw(st.integers(0, len(words)), label="at")
    argv = words[:at] + ["--no-such-option"] + words[at:]
    status, _, err = run_cli(capsys, argv)
    assert_one_line_or_success(argv, status, err, allowed=(0, 2))


@pytest.mark.parametrize("words", [[], *sorted(COMMANDS)],
                         ids=lambda words: " ".join(words) or "sprat")
def test_every_help_exits_0_and_every_option_it_shows_is_fuzzed(capsys, words):
    """`sprat --help` and each COMMAND --help; the fuzz above passes every option."""
    argv = [*words, "--help"]
    status, out, err = run_cli(capsys, argv)
    assert status == 0 and out.startswith("usage: sprat"), f"sprat {shown(argv)}: {err!r}"
    shown_flags = set(re.findall(r"^  (-[-\w]+)", out, re.M)) - {"-h", "--help"}
    fuzzed = {flag for flag, _ in COMMANDS.get(tuple(words), ([], [], False))[1]}
    assert shown_flags <= fuzzed, \
        f"sprat {shown(argv)} shows options the fuzz never passes: {sorted(shown_flags - fuzzed)}"


# --- Defects the fuzz found --------------------------------------------------------------
LONG = "x" * 5000                       # longer than any file name a system allows


@pytest.mark.parametrize("argv, status", [
    (["boot", "--lab", LONG], 2),
    (["lab", "grade", LONG], 2),
    (["lab", "grade", "1", LONG], 2),
    (["lab", "grade", "--extra-tests", LONG, LONG], 2),
    (["lab", "start", "1", LONG], 1),   # an output that cannot be made (emulator/files.py)
], ids=["--lab", "grade DIR", "grade N DIR", "--extra-tests", "start N DIR"])
def test_a_folder_name_too_long_for_the_system_is_one_line_not_an_oserror(capsys, cwd, argv, status):
    """Path.is_dir() and .exists() raise OSError for a name too long; it was a traceback."""
    got, _, err = run_cli(capsys, argv)
    assert_one_line_or_success(argv, got, err, allowed=(status,))
