"""A student's workspace: their copies of a lab's files, read ahead of the tree's.

    folder/
      .sprat-lab                 which lab this is (TOML)
      README.md                  the handout
      images/                    the lab's images
      userland/lib/urpc.S        the student's copy, at its place in the tree

`create` makes one from a lab and the text of each file (the skeleton for a
student; the reference or a recorded wrong solution for `sprat lab check`).
`activate` makes this process read the workspace's files first: assembly
through emulator/sources.py (image lines and `.include`), Python modules
through an import finder placed ahead of the normal ones. It must run
before the swapped modules are first imported, so the `sprat` command calls
it before it imports anything else (sprat/cli.py).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import re
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from emulator import sources
from emulator.errors import OutputError, SpratError
from emulator.files import read_text
from sprat.lab.manifest import MANIFEST, Lab, find_lab, load_lab
from sprat.lab.regions import apply_patches, blank, changed_outside, read_wrong_solution

MARKER = ".sprat-lab"
LAST_SCORE = ".sprat-lab-score.json"
ENVIRONMENT = "SPRAT_LAB"          # a workspace for child processes (the grader's tests)


@dataclass(frozen=True)
class Workspace:
    folder: Path
    lab: Lab

    @property
    def files(self) -> tuple[str, ...]:
        return self.lab.files

    def last_score(self) -> dict | None:
        try:
            return json.loads((self.folder / LAST_SCORE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def save_score(self, score: dict) -> None:
        try:
            (self.folder / LAST_SCORE).write_text(json.dumps(score), encoding="utf-8")
        except OSError as error:
            raise OutputError(f"cannot save the score in {self.folder}: {error.strerror}") from None


# --- The files of a lab, three ways ------------------------------------------------------

def reference_files(lab: Lab) -> dict[str, str]:
    """The tree's own files: the reference solution."""
    return {name: read_text(sources.TREE / name, "lab file") for name in lab.files}


def skeleton_files(lab: Lab) -> dict[str, str]:
    """The reference with every region blanked to its stub."""
    stubs = {path.name: read_text(path, "stub") for path in sorted((lab.folder / "stubs").glob("*"))
             if path.is_file()}
    return {name: blank(text, lab.slug, stubs, name)
            for name, text in reference_files(lab).items()}


def wrong_files(lab: Lab, diff: Path):
    """(the recorded mistake, the reference with the mistake's diff applied)."""
    wrong = read_wrong_solution(diff.stem, read_text(diff, "wrong solution"), str(diff))
    reference = reference_files(lab)
    files = dict(reference)
    for name, hunks in wrong.patches.items():
        if name not in files:
            raise SpratError(f"{diff}: patches {name}, which is not one of the lab's files")
        files[name] = apply_patches(files[name], hunks, str(diff))
        # A mistake recorded outside the regions would be caught by the
        # given-code check alone, whatever the test it names looks at.
        change = changed_outside(reference[name], files[name], lab.slug, name)
        if change:
            where = change.split(": ", 1)[0]
            raise SpratError(f"{diff}: changes {where}, outside the regions (a recorded "
                             f"mistake changes only what a student writes)")
    return wrong, files


# --- Making, finding and using a workspace ----------------------------------------------

def create(lab: Lab, folder: Path, files: dict[str, str]) -> Workspace:
    """A new workspace in `folder` (which must not exist, or be empty)."""
    folder = Path(folder)
    # os.path.lexists: a name too long for the system is not there (Path.exists
    # would raise); making it then fails below with the system's reason.
    if os.path.lexists(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise SpratError(f"{folder}: already exists and is not an empty folder "
                         "(choose another name, or remove it)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
        if (lab.folder / "images").is_dir():
            shutil.copytree(lab.folder / "images", folder / "images")
        if (lab.folder / "README.md").is_file():
            handout = read_text(lab.folder / "README.md", "lab handout")
            (folder / "README.md").write_text(workspace_handout(handout, lab.folder, files),
                                              encoding="utf-8")
        (folder / MARKER).write_text(
            f"# a sprat lab workspace: `sprat lab grade` grades it\n"
            f"lab = {lab.number}\nslug = {json.dumps(lab.slug)}\n"
            f"folder = {json.dumps(str(lab.folder))}\n", encoding="utf-8")
    except OSError as error:
        raise OutputError(f"cannot make the workspace {folder}: {error.strerror}") from None
    return Workspace(folder.resolve(), lab)


TREE_FOLDERS = ("docs", "userland", "kernel", "cpudriver", "emulator")


def workspace_handout(text: str, lab_folder: Path, files=()) -> str:
    """The handout as the workspace shows it: its relative links (other labs,
    docs) point into the tree, where they lead, and a note after the title
    says where the tree is, for the paths the handout names in prose (the
    folders it gives as examples are the tree's that the workspace's
    `files` do not start: lab 2's workspace has a `kernel/` of its own)."""
    def absolute(match):
        target = match.group(2)
        if "://" in target or target.startswith(("#", "/")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        where = (lab_folder / path).resolve()
        return f"{match.group(1)}({where}{'#' + anchor if anchor else ''})"
    text = re.sub(r"(\]\s?)\(([^)\s]+)\)", absolute, text)
    own = {Path(name).parts[0] for name in files}
    examples = ", ".join(f"`{name}/`" for name in TREE_FOLDERS if name not in own)
    note = (f"\n> Paths this handout names that are not in this folder ({examples}, "
            f"...) are sprat's own tree: {sources.TREE}/\n")
    title, newline, rest = text.partition("\n")
    return title + newline + note + rest


def open_workspace(folder: Path) -> Workspace:
    """The workspace in `folder`; SpratError if it is not one, or is missing a file."""
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        raise SpratError(f"{folder}: not a lab workspace (no {MARKER}; make one with "
                         "`sprat lab start N`)")
    try:
        data = tomllib.loads(read_text(marker, "workspace marker"))
        recorded = Path(str(data.get("folder", "")))
        which = None if (recorded / MANIFEST).is_file() else str(int(data["lab"]))
    except (SpratError, OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError):
        raise SpratError(f"{marker}: damaged (it should say `lab = N`)") from None
    lab = load_lab(recorded) if which is None else find_lab(which)
    for name in lab.files:
        if not (folder / name).is_file():
            raise SpratError(f"{folder / name}: missing: lab {lab.number} needs your copy of "
                             f"{name} (`sprat lab start {lab.number}` makes one)")
    return Workspace(folder.resolve(), lab)


def find_workspace(start: Path | None = None) -> Path | None:
    """The workspace folder holding `start` (default: the current folder), if any."""
    folder = Path(start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / MARKER).is_file():
            return candidate
    return None


def activate(workspace: Workspace) -> None:
    """Read the workspace's files ahead of the tree's, in this process and its children."""
    sources.set_workspace(workspace.folder, workspace.files)
    os.environ[ENVIRONMENT] = str(workspace.folder)
    python = {name for name in workspace.files if name.endswith(".py")}
    if python:
        sys.meta_path.insert(0, _WorkspaceFinder(workspace.folder, python))


def import_swapped(workspace: Workspace) -> None:
    """Import the workspace's Python modules now: one that does not import
    (a syntax error, an exception or an exit at import) is a SpratError
    naming the student's file and line, not a traceback from wherever a
    command first needed it. Call it right after `activate`."""
    for name in workspace.files:
        if not name.endswith(".py"):
            continue
        module = name[:-3].replace("/", ".")
        try:
            if importlib.util.find_spec(module.rpartition(".")[0] or module) is None:
                continue
        except ImportError:
            continue                 # a file outside sprat's packages (a fixture lab's)
        try:
            importlib.import_module(module)
        except SyntaxError as error:
            line = f":{error.lineno}" if error.lineno else ""
            raise SpratError(f"{name}{line}: your file does not compile: {error.msg}") from None
        except (Exception, SystemExit) as error:   # noqa: BLE001 -- the student's code
            raise SpratError(f"{name}{_line_in(error, workspace.folder / name)}: importing "
                             f"your file raised {type(error).__name__}: {error}") from None


def _line_in(error: BaseException, file: Path) -> str:
    """':LINE' of the innermost frame of `error` in `file`, or ''."""
    import traceback
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if Path(frame.filename).resolve() == file.resolve()]
    return f":{lines[-1]}" if lines else ""


class _WorkspaceFinder(importlib.abc.MetaPathFinder):
    """Import a swapped module (say kernel.caps.rules) from the workspace's copy."""

    def __init__(self, folder: Path, names: set[str]):
        self.modules = {name[:-3].replace("/", "."): folder / name for name in names}

    def find_spec(self, fullname, path=None, target=None):
        file = self.modules.get(fullname)
        if file is None:
            return None
        return importlib.util.spec_from_file_location(fullname, file)

