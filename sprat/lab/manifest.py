"""The labs there are: one folder per lab under labs/, each with a lab.toml.

    labs = all_labs()                 # in course order
    lab = find_lab("3")               # by number, slug or folder name
    lab.files                         # the tree files the student edits

A manifest that is wrong is a SpratError naming the file and the field.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from emulator.errors import SpratError
from emulator.files import read_text
from emulator.sources import TREE

LABS = TREE / "labs"
ENVIRONMENT = "SPRAT_LABS"       # a course's own folder of labs, instead of the tree's
MANIFEST = "lab.toml"
DEFAULT_TIMEOUT = 120            # seconds one test may take


@dataclass(frozen=True)
class Lab:
    number: int
    slug: str
    title: str
    goal: str
    hours: float
    builds_on: tuple[int, ...]
    files: tuple[str, ...]        # tree-relative, e.g. "userland/lib/urpc.S"
    folder: Path
    timeout: int = DEFAULT_TIMEOUT

    @property
    def name(self) -> str:
        """The folder's name, e.g. 03-urpc."""
        return self.folder.name

    @property
    def grader(self) -> Path:
        return self.folder / "grade.py"

    def wrong_solutions(self) -> list[Path]:
        return sorted((self.folder / "wrong").glob("*.diff"))


def all_labs() -> list[Lab]:
    """Every lab under labs/, in course order (by number)."""
    folder = Path(os.environ.get(ENVIRONMENT) or LABS)
    labs = [load_lab(path.parent) for path in sorted(folder.glob(f"*/{MANIFEST}"))]
    return sorted(labs, key=lambda lab: lab.number)


def find_lab(which: str) -> Lab:
    """A lab by number (3 or 03), slug (urpc) or folder name (03-urpc)."""
    for lab in all_labs():
        if which in (lab.slug, lab.name) or (which.isdecimal() and int(which) == lab.number):
            return lab
    known = ", ".join(f"{lab.number} ({lab.slug})" for lab in all_labs())
    raise SpratError(f"no lab {which!r}: the labs are {known} (see `sprat lab list`)")


def load_lab(folder: Path) -> Lab:
    path = folder / MANIFEST
    try:
        data = tomllib.loads(read_text(path, "lab manifest"))
    except tomllib.TOMLDecodeError as error:
        raise SpratError(f"{path}: cannot read the lab's manifest: {error}") from None
    field = _Fields(path, data)
    lab = Lab(number=field.get("number", int), slug=field.get("slug", str),
              title=field.get("title", str), goal=field.get("goal", str),
              hours=float(field.get("hours", (int, float))),
              builds_on=tuple(field.get("builds_on", list, [])),
              files=tuple(field.get("files", list)), folder=folder,
              timeout=field.get("timeout", int, DEFAULT_TIMEOUT))
    for name in lab.files:
        if name.startswith("/") or ".." in Path(name).parts or not (TREE / name).is_file():
            raise SpratError(f"{path}: files: {name!r} is not a file of the sprat tree")
    return lab


class _Fields:
    """Typed access to a manifest's fields, each mistake one line."""

    def __init__(self, path, data):
        self.path, self.data = path, data

    def get(self, name, kind, default=...):
        if name not in self.data:
            if default is ...:
                raise SpratError(f"{self.path}: the field '{name}' is missing")
            return default
        value = self.data[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SpratError(f"{self.path}: the field '{name}' has the wrong type "
                             f"({type(value).__name__})")
        return value
