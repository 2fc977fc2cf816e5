"""`sprat lab`: list the labs, start one, grade it, check the graders.

    $ sprat lab list
    $ sprat lab start 3 work-3          # your copies, with the mechanism blanked out
    $ cd work-3 && sprat boot images/stream.lst     # your files, not the tree's
    $ sprat lab grade                   # inside the workspace (or: grade 3 work-3)
    $ sprat lab check                   # instructors: graders catch every recorded mistake

`grade` prints a line per test, as `make grade` does, a reason and a
replay command for each failure, and the score; it exits 0 only at full
score. `check` proves each lab's grader: the reference scores full, the
skeleton does not, and every recorded wrong solution fails a test.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from emulator.errors import SpratError
from sprat.lab import manifest, runner
from sprat.lab import workspace as workspaces

EXIT_OK, EXIT_BELOW_FULL, EXIT_USAGE = 0, 1, 2


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "lab", help="coursework labs: list, start, grade, check",
        description="Coursework labs: each asks you to write one mechanism of sprat, "
                    "and grades it on what the machine did. Start with `sprat lab list`.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=type(parser))
    verbs.required = True

    listing = verbs.add_parser("list", help="the labs, their goals and points")
    listing.set_defaults(run=run_list)

    start = verbs.add_parser("start", help="make a workspace for lab N",
                             description="Copy lab N's files into DIR with the mechanism "
                                         "blanked out, with the handout and the lab's images.")
    start.add_argument("lab", metavar="N", help="the lab: number or name (see `sprat lab list`)")
    start.add_argument("folder", metavar="DIR", nargs="?",
                       help="where to make it (default: ./lab-NN-slug)")
    start.set_defaults(run=run_start)

    grade = verbs.add_parser("grade", help="grade a workspace",
                             description="Run the lab's tests on your files and print the "
                                         "score; exit 0 only at full score.")
    grade.add_argument("words", metavar="[N] [DIR]", nargs="*",
                       help="the lab and the workspace (default: the workspace you are in)")
    grade.add_argument("--json", action="store_true", help="print the results as JSON")
    grade.add_argument("--extra-tests", metavar="PATH", action="append", default=[],
                       help="a grader file of a course's own tests, run as well (repeatable)")
    grade.add_argument("-k", dest="only", metavar="NAME", action="append", default=[],
                       help="run only the tests whose name contains NAME (repeatable)")
    grade.set_defaults(run=run_grade)

    check = verbs.add_parser("check", help="instructors: prove every lab's grader",
                             description="For each lab: the reference scores full, the "
                                         "skeleton does not, and every recorded wrong "
                                         "solution (wrong/*.diff) fails at least one test.")
    check.add_argument("labs", metavar="N", nargs="*", help="only these labs (default: all)")
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    check.add_argument("--scores", action="store_true",
                       help="run every test on the skeleton and each wrong solution, to show "
                            "the score the grader gives it (several times slower; by default "
                            "the check stops at the tests that catch a mistake)")
    check.set_defaults(run=run_check)


# --- list --------------------------------------------------------------------------------

def run_list(args) -> int:
    from sprat.table import format_table
    rows = []
    for lab in manifest.all_labs():
        points = sum(test.points for test in runner.load_tests([lab.grader]))
        rows.append([lab.number, lab.slug, points, _hours(lab.hours), lab.goal])
    print(format_table(["lab", "name", "points", "hours", "goal"], rows))
    here = workspaces.find_workspace()
    if here is not None:
        space = workspaces.open_workspace(here)
        score = space.last_score()
        last = f"last grade {score['score']}/{score['total']}" if score else "not graded yet"
        print(f"\nyou are in a workspace of lab {space.lab.number} ({space.lab.slug}): {last}")
    else:
        print("\nstart one with `sprat lab start N`; its handout is README.md in the workspace")
    return EXIT_OK


def _hours(hours: float) -> str:
    return f"{hours:g}"


# --- start -------------------------------------------------------------------------------

def run_start(args) -> int:
    lab = manifest.find_lab(args.lab)
    folder = Path(args.folder or f"lab-{lab.name}")
    workspaces.create(lab, folder, workspaces.skeleton_files(lab))
    print(f"sprat: lab {lab.number} ({lab.title}) is in {folder}/")
    for name in lab.files:
        print(f"  {folder / name}   <- you write this")
    if (folder / "README.md").is_file():
        print(f"  {folder / 'README.md'}   <- the handout: start here")
    print(f"grade it with: cd {folder} && sprat lab grade")
    return EXIT_OK


# --- grade -------------------------------------------------------------------------------

def run_grade(args) -> int:
    space, shown = _workspace_from_words(args.words)
    lab = space.lab
    graders = [lab.grader] + [_extra_grader(path) for path in args.extra_tests]
    tests = _selected(runner.load_tests(graders), args.only)
    problem = runner.build_problem(lab, space.folder)
    if problem is not None:
        raise SpratError(f"your code does not build: {problem}")
    started = time.monotonic()
    results = runner.run_tests(lab, space.folder, tests, shown=shown, graders=graders,
                               progress=_progress_line(f"grading lab {lab.number}"))
    score = {"lab": lab.number, "slug": lab.slug, "workspace": shown,
             "score": sum(r.earned for r in results), "total": sum(r.points for r in results),
             "seconds": round(time.monotonic() - started, 1),
             "tests": [_result_json(r) for r in results]}
    if args.json:
        print(json.dumps(score, indent=2))
    else:
        print(_grade_report(lab, shown, results))
    if not args.only:
        space.save_score({key: score[key] for key in ("score", "total")})
    return EXIT_OK if score["score"] == score["total"] else EXIT_BELOW_FULL


def _workspace_from_words(words: list[str]):
    """`grade`, `grade N`, `grade DIR`, `grade N DIR`: the workspace and how to name it."""
    if len(words) > 2:
        raise SpratError("lab grade takes at most a lab and a folder: sprat lab grade [N] [DIR]")
    # os.path.isdir and isfile below, not Path's: they answer False for a
    # name too long for the system, where Path's raise OSError.
    number = words[0] if words and not os.path.isdir(words[0]) else None
    folder = words[-1] if words and (len(words) == 2 or number is None) else None
    if number is not None and folder is None and not _names_a_lab(number):
        raise SpratError(f"{number}: no such folder, and no lab of that name (the labs: "
                         f"`sprat lab list`)")
    if folder is None:
        found = workspaces.find_workspace()
        if found is None:
            raise SpratError("not inside a lab workspace: give its folder "
                             "(sprat lab grade N DIR), or make one with `sprat lab start N`")
        folder = str(found)
    if not os.path.isdir(folder):
        raise SpratError(f"{folder}: no such folder")
    space = workspaces.open_workspace(Path(folder))
    if number is not None and manifest.find_lab(number).number != space.lab.number:
        raise SpratError(f"{folder} is a workspace of lab {space.lab.number} "
                         f"({space.lab.slug}), not of lab {number}")
    return space, _shown(Path(folder))


def _names_a_lab(word: str) -> bool:
    try:
        manifest.find_lab(word)
    except SpratError:
        return False
    return True


def _shown(folder: Path) -> str:
    """The folder as the student can type it from here."""
    try:
        text = str(folder.resolve().relative_to(Path.cwd().resolve()))
        return text if text != "." else "."
    except ValueError:
        return str(folder)


def _extra_grader(path: str) -> Path:
    file = Path(path)
    if not os.path.isfile(file):
        raise SpratError(f"--extra-tests {path}: no such file")
    return file.resolve()


def _selected(tests, only):
    if not only:
        return tests
    chosen = [t for t in tests if any(word in t.name for word in only)]
    if not chosen:
        raise SpratError(f"no test matches {' or '.join(only)}")
    return chosen


def _grade_report(lab, shown, results) -> str:
    lines = [f"== lab {lab.number}: {lab.title} ({shown}) =="]
    for r in results:
        verdict = "OK" if r.passed else "FAIL"
        lines.append(f"{r.name}: {verdict} ({r.earned}/{r.points})")
        if not r.passed:
            lines.append(f"    {r.reason}")
            if r.replay:
                lines.append(f"    replay: {r.replay}")
    total = sum(r.points for r in results)
    lines.append(f"Score: {sum(r.earned for r in results)}/{total}")
    return "\n".join(lines)


def _result_json(result) -> dict:
    return {"name": result.name, "points": result.points, "earned": result.earned,
            "passed": result.passed, "reason": result.reason, "replay": result.replay,
            "seconds": round(result.seconds, 2)}


def _progress_line(what: str):
    """A progress line on stderr, when it is a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(done, total):
        end = "\n" if done == total else ""
        sys.stderr.write(f"\r{what}: {done}/{total} tests done{end}")
        sys.stderr.flush()
    return show


# --- check -------------------------------------------------------------------------------

def run_check(args) -> int:
    from sprat.table import format_table
    labs = [manifest.find_lab(word) for word in args.labs] or manifest.all_labs()
    rows, problems, started = [], [], time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sprat-lab-check-") as scratch:
        for lab in labs:
            for row, problem, reasons in _check_lab(lab, Path(scratch), args.scores):
                rows.append((row, reasons))
                if problem:
                    problems.append(f"lab {lab.number} {row[1]}: {problem}")
    seconds = time.monotonic() - started
    if args.json:
        print(json.dumps({"rows": [dict(zip(["lab", "solution", "score", "verdict"], row),
                                        reasons=reasons)
                                   for row, reasons in rows], "problems": problems,
                          "seconds": round(seconds, 1)}, indent=2))
    else:
        print(format_table(["lab", "solution", "score", "verdict"], [row for row, _ in rows]))
        for problem in problems:
            print(f"sprat: {problem}", file=sys.stderr)
        if not args.scores:
            print("(score -: the check stopped at the tests that catch the mistake; "
                  "--scores runs them all)")
        print(f"sprat: {len(labs)} labs checked in {seconds:.0f} s: "
              f"{'all graders hold' if not problems else f'{len(problems)} problems'}")
    return EXIT_OK if not problems else EXIT_BELOW_FULL


def _check_lab(lab, scratch: Path, scores: bool):
    """Rows (lab, solution, score, verdict), each with its problem, if any,
    and the reasons of the tests it failed ({test: reason}: what a student
    with that solution would read). Without `scores`, the skeleton and each
    wrong solution run only until they are caught (the tests a mistake
    names, else until one fails), and their score is shown as -."""
    tests = runner.load_tests([lab.grader])
    progress = _progress_line(f"checking lab {lab.number}")

    def grade(label, files, order=tests):
        folder = scratch / f"{lab.name}-{label}"
        space = workspaces.create(lab, folder, files)
        stop = not scores and order is tests
        return runner.run_tests(lab, space.folder, order, shown=str(folder),
                                stop_at_first_failure=stop, progress=progress)

    results = grade("reference", workspaces.reference_files(lab))
    failing = _reasons(results)
    first = next(iter(failing), None)
    yield ([lab.number, "reference", _score(results, tests), "NOT FULL" if first else "full"],
           f"the reference fails {first}: {failing[first]}" if first else None, failing)

    results = grade("skeleton", workspaces.skeleton_files(lab))
    caught = _reasons(results)
    yield ([lab.number, "skeleton", _score(results, tests),
            "fails " + next(iter(caught)) if caught else "PASSES"],
           None if caught else "the skeleton passes every test", caught)

    for diff in lab.wrong_solutions():
        wrong, files = workspaces.wrong_files(lab, diff)
        unknown = set(wrong.expect) - {t.name for t in tests}
        # The tests it names must all catch it, or else any one test. With
        # --scores every test runs, so that the score is the one a student
        # with this mistake would get.
        named = [t for t in tests if t.name in wrong.expect]
        results = grade(diff.stem, files, order=tests if scores or not named else named)
        caught = _reasons(results)
        missed = [name for name in wrong.expect if name not in caught]
        problem = None
        if unknown:
            problem = f"expects unknown tests {', '.join(sorted(unknown))}"
        elif missed:
            problem = f"{wrong.summary}: not caught by {', '.join(missed)}"
        elif not caught:
            problem = f"{wrong.summary}: passes every test"
        shown = [name for name in wrong.expect if name in caught] or list(caught)
        verdict = f"caught by {', '.join(shown[:2])}" if caught else "NOT CAUGHT"
        yield [lab.number, f"wrong/{diff.stem}", _score(results, tests), verdict], problem, caught


def _reasons(results) -> dict[str, str]:
    """{test: reason} of the tests that ran and failed, in the order they ran."""
    return {r.name: r.reason for r in results if not r.passed and r.reason != runner.NOT_RUN}


def _score(results, tests) -> str:
    """The score the grader gave: points earned of the lab's total; - where
    not every test ran."""
    if len(results) < len(tests) or any(r.reason == runner.NOT_RUN for r in results):
        return "-"
    return f"{sum(r.earned for r in results)}/{sum(r.points for r in results)}"
