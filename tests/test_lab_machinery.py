"""`sprat lab`: workspaces, grading, replay commands and `check`, on fixture labs.

tests/fixtures/labs/ holds two labs that exist only for these tests
(SPRAT_LABS points `sprat lab` at them): 97-hello asks for a greeting
(one region, one recorded wrong solution), 98-hostile has tests that hang,
crash, eat memory and never finish, which the grader must survive.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_LABS = ROOT / "tests" / "fixtures" / "labs"
GREET = "tests/fixtures/labs/97-hello/greet.S"


def sprat(*args, cwd, labs=FIXTURE_LABS, timeout=120):
    env = dict(os.environ, SPRAT_LABS=str(labs))
    return subprocess.run([sys.executable, "-m", "sprat", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def workspace(tmp_path):
    done = sprat("lab", "start", "97", "work", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path / "work"


def one_line_error(done):
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sprat: error:"), done.stderr
    return lines[0]


def test_start_copies_the_file_with_the_region_blanked_and_the_markers_kept(workspace):
    text = (workspace / GREET).read_text()
    assert "# LAB hello BEGIN greeting" in text and "# LAB hello END greeting" in text
    assert "not_written" in text.split("BEGIN greeting")[1].split("END greeting")[0]
    assert "call print_u64" not in text.split("BEGIN greeting")[1].split("END greeting")[0]
    assert (workspace / "images" / "hello.lst").is_file()
    assert (ROOT / GREET).read_text().count("call print_u64") == 2, "the tree was modified"


def test_start_refuses_a_folder_that_is_not_empty(workspace):
    assert "already exists" in one_line_error(sprat("lab", "start", "97", str(workspace),
                                                    cwd=workspace.parent))


def test_skeleton_scores_below_full_with_a_reason_per_failed_test(workspace):
    done = sprat("lab", "grade", cwd=workspace)
    assert done.returncode == 1
    assert "every_core_says_hello: FAIL (0/5)" in done.stdout
    assert "greeting: not written yet" in done.stdout
    assert "Score: 0/8" in done.stdout


def test_the_reference_in_the_workspace_scores_full(workspace):
    shutil.copyfile(ROOT / GREET, workspace / GREET)
    done = sprat("lab", "grade", "97", str(workspace), cwd=workspace.parent)
    assert done.returncode == 0, done.stdout
    assert "Score: 8/8" in done.stdout
    listing = sprat("lab", "list", cwd=workspace)
    assert "lab 97 (hello): last grade 8/8" in listing.stdout


def test_a_failure_prints_a_replay_command_that_stops_where_the_test_looks(workspace):
    done = sprat("lab", "grade", "--json", cwd=workspace)
    failed = {t["name"]: t for t in json.loads(done.stdout)["tests"]}["every_core_says_hello"]
    command = shlex.split(failed["replay"])
    assert command[:2] == ["sprat", "debug"] and "--break" in command
    replay = sprat(*command[1:], "--script", os.devnull, cwd=workspace)
    assert replay.returncode == 0, replay.stderr
    assert "core 1 hit breakpoint 1" in replay.stdout
    assert "<start>" in replay.stdout and "greet.S" in replay.stdout


def test_inside_a_workspace_boot_runs_the_students_file(workspace):
    done = sprat("boot", "images/hello.lst", "--cores", "2", cwd=workspace)
    assert "greeting: not written yet" in done.stdout
    assert "lab 97 workspace" in done.stderr
    outside = sprat("boot", str(workspace / "images" / "hello.lst"), "--cores", "2",
                    cwd=workspace.parent)
    assert "hello from core 1 of 2" in outside.stdout, "outside a workspace: the tree's file"


def test_extra_tests_are_graded_too(workspace, tmp_path):
    extra = tmp_path / "private.py"
    extra.write_text("from sprat.lab.grading import test, fail\n\n"
                     "@test(points=2)\ndef held_back():\n    fail('the instructor says no')\n")
    done = sprat("lab", "grade", "--extra-tests", str(extra), cwd=workspace)
    assert "held_back: FAIL (0/2)" in done.stdout and "the instructor says no" in done.stdout
    assert "Score: 0/10" in done.stdout


def test_a_file_that_does_not_assemble_is_one_line_naming_the_students_line(workspace):
    with open(workspace / GREET, "a") as source:
        source.write("    movx rax, 1\n")
    line = one_line_error(sprat("lab", "grade", cwd=workspace))
    assert "does not build" in line and "greet.S:" in line and "movx" in line


def test_bad_workspaces_are_one_line_errors(workspace, tmp_path):
    assert "not a lab workspace" in one_line_error(sprat("lab", "grade", str(tmp_path),
                                                         cwd=tmp_path))
    assert "not of lab 98" in one_line_error(sprat("lab", "grade", "98", str(workspace),
                                                   cwd=tmp_path))
    # inside a workspace, one word that is neither a folder nor a lab: a
    # mistyped folder, most likely (it said only "no lab 'wokr'")
    assert "wokr: no such folder, and no lab of that name" in one_line_error(
        sprat("lab", "grade", "wokr", cwd=workspace))
    (workspace / GREET).unlink()
    assert "missing" in one_line_error(sprat("lab", "grade", cwd=workspace))
    (workspace / ".sprat-lab").write_bytes(b"\xff\xfe garbage")
    assert "damaged" in one_line_error(sprat("lab", "grade", cwd=workspace))


def test_hostile_tests_fail_with_reasons_and_the_grader_goes_on(tmp_path):
    assert sprat("lab", "start", "98", "w", cwd=tmp_path).returncode == 0
    done = sprat("lab", "grade", "--json", cwd=tmp_path / "w")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    reasons = {t["name"]: t["reason"] for t in json.loads(done.stdout)["tests"]}
    assert "took longer than 4 s" in reasons["hangs"]
    assert "SIGSEGV" in reasons["crashes"]
    assert "memory" in reasons["eats_memory"]
    assert "cycle budget" in reasons["never_finishes"]
    assert "still running in spin_loop" in reasons["never_finishes"]


def test_a_killed_programs_reason_names_its_label_and_source_line(tmp_path):
    """expect_clean, every lab's "the program ran clean": a program the kernel
    killed is named where it faulted (faulty.S's write_kernel), not by its rip."""
    assert sprat("lab", "start", "98", "w", cwd=tmp_path).returncode == 0
    done = sprat("lab", "grade", "--json", "-k", "a_program_is_killed", cwd=tmp_path / "w")
    reason = json.loads(done.stdout)["tests"][0]["reason"]
    source = (ROOT / "userland" / "faulty.S").read_text().splitlines()
    line = next(n for n, text in enumerate(source, 1)
                if "mov qword ptr [rax], 0" in text and n > source.index("write_kernel:"))
    assert f"core 0's program was killed: user fault: #PF page fault (in write_kernel+" \
           in reason and f"userland/faulty.S:{line})" in reason, reason


def test_check_proves_the_fixture_lab(tmp_path):
    done = sprat("lab", "check", "97", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reference" in done.stdout and "full" in done.stdout
    assert "caught by greeting_names_the_core_count" in done.stdout


def test_check_scores_shows_the_score_a_recorded_mistake_gets(tmp_path):
    """With --scores, the score the grader gives the mistake (every test
    run), not a bound: no-count.diff fails the 3-point test and passes the
    5-point one."""
    done = sprat("lab", "check", "97", "--scores", "--json", cwd=tmp_path)
    rows = {row["solution"]: row for row in json.loads(done.stdout)["rows"]}
    assert rows["wrong/no-count"]["score"] == "5/8", rows["wrong/no-count"]
    assert rows["wrong/no-count"]["verdict"] == "caught by greeting_names_the_core_count"
    assert rows["skeleton"]["score"] == "0/8", rows["skeleton"]


def test_check_without_scores_stops_at_the_catch_and_shows_no_score(tmp_path):
    """The default check runs a mistake's named tests only: it shows - for
    a score it did not measure, never a bound that reads like a score."""
    done = sprat("lab", "check", "97", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["solution"]: row for row in json.loads(done.stdout)["rows"]}
    assert rows["wrong/no-count"]["score"] == "-", rows["wrong/no-count"]
    assert rows["wrong/no-count"]["verdict"] == "caught by greeting_names_the_core_count"
    assert rows["reference"]["score"] == "8/8", rows["reference"]


def fixture_labs_with_mistake(tmp_path, name: str, diff: str) -> Path:
    """A copy of the fixture labs whose lab 97 records one more mistake."""
    labs = tmp_path / "labs"
    shutil.copytree(FIXTURE_LABS / "97-hello", labs / "97-hello")
    (labs / "97-hello" / "wrong" / name).write_text(diff)
    return labs


def test_check_fails_when_a_recorded_mistake_is_not_caught(tmp_path):
    labs = fixture_labs_with_mistake(tmp_path, "harmless.diff",
        "Changes only a comment.\n"
        f"--- a/{GREET}\n+++ b/{GREET}\n@@ -1,2 +1,2 @@\n"
        "-# greet.S: the fixture lab's program (tests/test_lab_machinery.py).\n"
        "+# greet.S: a comment changed.\n"
        " # in: rdi = core id, rsi = number of cores\n")
    done = sprat("lab", "check", cwd=tmp_path, labs=labs)
    assert done.returncode == 1
    assert "NOT CAUGHT" in done.stdout
    assert "Changes only a comment.: passes every test" in done.stderr


def test_given_code_changed_outside_the_region_fails_every_test(workspace):
    """Every lab's tests run the given code around the student's: the
    runner checks it is the tree's before each test, and says which line
    is not."""
    greet = workspace / GREET
    greet.write_text(greet.read_text().replace('of:       .asciz " of "', 'of: .asciz " / "'))
    done = sprat("lab", "grade", "--json", cwd=workspace)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    tests = json.loads(done.stdout)["tests"]
    assert tests and not any(test["passed"] for test in tests), tests
    for test in tests:
        assert f"{GREET}:" in test["reason"] and '`of: .asciz " / "` is not the given code' \
            in test["reason"], test["reason"]


def test_check_refuses_a_recorded_mistake_outside_the_regions(tmp_path):
    """A recorded mistake in the given code would be caught by that check
    alone, whatever the test it names looks at: check says so."""
    labs = fixture_labs_with_mistake(tmp_path, "exits-1.diff",
        "Exits with status 1.\n"
        f"--- a/{GREET}\n+++ b/{GREET}\n@@ -18,3 +18,3 @@\n"
        " # LAB hello END greeting\n"
        "-    xor edi, edi\n"
        "+    mov edi, 1\n"
        "     call exit\n")
    done = sprat("lab", "check", cwd=tmp_path, labs=labs)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert f"exits-1.diff: changes {GREET}:19, outside the regions" in done.stdout + done.stderr, \
        done.stdout + done.stderr


def test_a_workspace_shadows_a_python_module_in_its_process_and_children(tmp_path):
    from sprat.lab.manifest import Lab
    folder = tmp_path / "ws"
    (folder / "kernel").mkdir(parents=True)
    (folder / "kernel" / "diagnosis.py").write_text("WHO = 'the student'\n")
    script = ("import sys; from pathlib import Path; from sprat.lab.manifest import Lab\n"
              "from sprat.lab.workspace import Workspace, activate\n"
              f"lab = Lab(1, 'x', 'x', 'x', 1, (), ('kernel/diagnosis.py',), Path('.'))\n"
              f"activate(Workspace(Path({str(folder)!r}), lab))\n"
              "import kernel.diagnosis; print(kernel.diagnosis.WHO)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.stdout.strip() == "the student", done.stderr
    import kernel.diagnosis                     # the tree's module is untouched
    assert not hasattr(kernel.diagnosis, "WHO")


def test_regions_blank_to_their_stub_with_python_indentation():
    from sprat.lab.regions import blank
    text = "def f():\n    # LAB x BEGIN body\n    return 1\n    # LAB x END body\n"
    assert blank(text, "x", {"body": "raise NotImplementedError('f')\n"}, "f.py") == \
        "def f():\n    # LAB x BEGIN body\n    raise NotImplementedError('f')\n    # LAB x END body\n"


GIVEN = "def f():\n    x = 1\n    # LAB x BEGIN body\n    return x\n    # LAB x END body\n"


@pytest.mark.parametrize("student, said", [
    (GIVEN.replace("return x", "import os\n    return os.getpid()"), None),   # inside: theirs
    ("# my notes\n\n" + GIVEN.replace("    x = 1\n", "    x = 1\n\n    # one\n"), None),
    (GIVEN.replace("x = 1", "x = 2"), "f.py:2: `x = 2` is not the given code"),
    (GIVEN + "f = print\n", "f.py:6: `f = print` is added to the given code"),
    (GIVEN.replace("    x = 1\n", ""), "the tree's there is `x = 1`"),
    (GIVEN.replace("    # LAB x END body\n", ""), "the given code `# LAB x END body` is missing"),
])
def test_a_change_outside_the_regions_is_named_by_its_line(student, said):
    from sprat.lab.regions import changed_outside
    change = changed_outside(GIVEN, student, "x", "f.py")
    assert (change is None) if said is None else (change and said in change), change


@pytest.mark.parametrize("text, message", [
    ("# LAB x BEGIN a\n", "region a has no END line"),
    ("# LAB x END a\n", "END a without its BEGIN"),
    ("# LAB x BEGIN a\n# LAB x BEGIN b\n", "region b begins inside region a"),
])
def test_unbalanced_regions_are_one_line_errors(text, message):
    from emulator.errors import SpratError
    from sprat.lab.regions import find_regions
    with pytest.raises(SpratError, match=message):
        find_regions(text, "x", "f.S")


def test_a_wrong_solution_that_no_longer_applies_says_so():
    from emulator.errors import SpratError
    from sprat.lab.regions import apply_patches, read_wrong_solution
    wrong = read_wrong_solution("w", "A mistake.\nexpect: t1, t2\n--- a/f.S\n+++ b/f.S\n"
                                "@@ -1 +1 @@\n-old line\n+new line\n", "w.diff")
    assert wrong.summary == "A mistake." and wrong.expect == ("t1", "t2")
    assert apply_patches("a\nold line\n", wrong.patches["f.S"], "w.diff") == "a\nnew line\n"
    with pytest.raises(SpratError, match="no longer applies"):
        apply_patches("something else\n", wrong.patches["f.S"], "w.diff")


def test_inside_a_workspace_an_image_it_lacks_is_the_trees(workspace):
    """The docs name images by their place in the tree (images/spawn.lst)."""
    done = sprat("boot", "images/spawn.lst", cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert "parent:" in done.stdout


def test_every_link_of_every_handout_leads_somewhere_inside_its_workspace(tmp_path):
    """A handout copied into a workspace keeps working links: `../01-traps/README.md`
    next to the lab is not next to the student's folder, so the copy points
    into the tree, and a note says where the tree is for paths named in prose."""
    import re

    from sprat.lab.manifest import all_labs
    from sprat.lab.workspace import skeleton_files, workspace_handout
    for lab in all_labs():
        files = skeleton_files(lab)
        handout = workspace_handout((lab.folder / "README.md").read_text(), lab.folder, files)
        note = handout.splitlines()[2]
        assert str(ROOT) in note, f"lab {lab.number}: no note on the tree"
        # The folders it names as the tree's are not ones the workspace has.
        own = {f"`{Path(name).parts[0]}/`" for name in files}
        sent = sorted(folder for folder in own if folder in note)
        assert not sent, f"lab {lab.number}: the note sends the student to the tree for {sent}: {note}"
        for target in re.findall(r"\]\s?\(([^)\s]+)\)", handout):
            if "://" in target:
                continue
            path = Path(target.partition("#")[0])
            assert path.is_absolute() and path.exists(), f"lab {lab.number}: {target} leads nowhere"


def test_an_exception_raised_inside_python_names_the_line_of_ours_that_called():
    """A student's `CapType(255)` raises inside enum.py; the reason must name
    the student's line (here: this test's), then where Python raised it."""
    from kernel.caps import CapType
    from sprat.lab.grading import where as where_raised
    try:
        CapType(255)
    except ValueError as error:
        where = where_raised(error)
    assert where.startswith("tests/test_lab_machinery.py:"), where
    assert "in test_an_exception_raised_inside_python" in where and "raised in enum.py" in where
