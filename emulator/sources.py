"""Where sources come from: the sprat tree, shadowed by a lab workspace.

Every file the machine is built from (the CPU driver, the programs, what
they `.include`) is named by its place in the sprat tree: `/userland/lib/
urpc.S` in an image, `lib/urpc.S` included from `userland/urpc_stream.S`.
A lab workspace (sprat/lab/) holds a student's copies of a few of those
files at the same places. While a workspace is set, `locate` answers with
the student's copy where there is one, and with the tree's file otherwise:
one more folder on the search path, ahead of the tree. The tree itself is
never modified and nothing is copied.

    set_workspace(Path("work-3"))
    locate(TREE / "userland/lib/urpc.S")      # -> work-3/userland/lib/urpc.S
    locate(TREE / "userland/hello.S")         # -> the tree's own hello.S

Python modules a lab swaps are shadowed the same way, by the finder that
sprat/lab/workspace.py installs; this module only knows paths.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

__all__ = ["TREE", "locate", "set_workspace", "workspace", "tree_relative", "without_workspace"]

# The top of the sprat tree: the folder holding emulator/, cpudriver/, userland/.
TREE = Path(__file__).resolve().parents[1]

_workspace: Path | None = None
_shadowed: frozenset[str] | None = None     # tree-relative names the workspace may shadow


def set_workspace(folder: Path | None, files=None) -> None:
    """Shadow the tree with `folder` (None: the tree alone).

    `files` (tree-relative names) limits what the workspace may shadow;
    None lets any file in it do so.
    """
    global _workspace, _shadowed
    _workspace = Path(folder).resolve() if folder is not None else None
    _shadowed = frozenset(files) if files is not None else None


def workspace() -> Path | None:
    return _workspace


@contextlib.contextmanager
def without_workspace():
    """The tree alone while the block runs (to build the reference beside a student's)."""
    saved = (_workspace, _shadowed)
    set_workspace(None)
    try:
        yield
    finally:
        set_workspace(saved[0], saved[1])


def tree_relative(path: Path) -> str | None:
    """`path`'s name inside the tree (or the workspace), or None if it is in neither."""
    path = Path(path)
    for root in (_workspace, TREE):
        if root is None:
            continue
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return None


def innermost_own_frame(frames):
    """The innermost of a traceback's frames (traceback.extract_tb) that runs
    code of the tree or of the workspace, not of Python or an installed
    package: where a person looks first. None if there is none."""
    for frame in reversed(frames):
        name = tree_relative(Path(frame.filename))
        if name is not None and not name.startswith((".venv", "venv", ".tox")):
            return frame
    return None


def locate(path: Path) -> Path:
    """The file to read for `path`: the workspace's copy if it has one."""
    path = Path(path)
    name = tree_relative(path)
    if name is None:
        return path
    if _workspace is not None and (_shadowed is None or name in _shadowed):
        candidate = _workspace / name
        if candidate.is_file():
            return candidate
    # A file of the workspace's own (a lab's image beside its programs) has
    # no counterpart in the tree: it is itself.
    return TREE / name if (TREE / name).exists() or not path.exists() else path
