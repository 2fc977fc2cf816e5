"""Boot images: the menu.lst-style manifest that says what a machine boots.

A sprat boot image is a text file in the style of GRUB's menu.lst, as
Barrelfish uses them: one CPU driver (`kernel`) and the programs to load
with it (`module`), each with a command line.

    title   sprat default
    # comments are whole lines starting with #
    kernel  /cpudriver/cpudriver.S loglevel=2
    module  /userland/hello.S
    module  /userland/counter.S core=1 count=10

Use:

    image = parse_image("images/default.lst")
    image.kernel.path                   # Path to cpudriver.S, resolved
    for module in image.modules:
        module.args                     # ("/userland/counter.S", "core=1", "count=10")
        module.options                  # {"core": "1", "count": "10"}

An entry's `args` is its command line as written, split at whitespace;
`args[0]` is the file as written (argv[0], as in Barrelfish), the rest are
its arguments. A path starting with `/` is relative to the sprat source
tree (the directory holding images/, cpudriver/ and userland/); any other
path is relative to the image file's own directory.

Directives: `title` (one), `kernel` (exactly one), `module` (any number);
`timeout` and `root` are accepted and ignored, so GRUB-style files load.
Everything wrong is a SpratError saying `image:line: what`.

What this module does not do: assemble or load anything (kernel/boot.py
does that), or give meaning to the arguments (the boot loader and the
programs do).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emulator import sources
from emulator.errors import SpratError
from emulator.files import check_file, read_text

__all__ = ["BootImage", "Entry", "SPRAT_ROOT", "parse_image"]

# Where `/cpudriver/...` in an image points: the top of the sprat tree.
SPRAT_ROOT = Path(__file__).resolve().parents[1]

_IGNORED = {"timeout", "root"}          # GRUB directives that mean nothing here
_DIRECTIVES = ("title", "timeout", "root", "kernel", "module")


@dataclass(frozen=True)
class Entry:
    """A `kernel` or `module` line: the file, its command line, where it was."""
    path: Path                          # the file, resolved to an absolute path
    args: tuple[str, ...]               # the command line as written; args[0] is the file
    line: int                           # line number in the image

    @property
    def name(self) -> str:
        """The file as the image wrote it (argv[0])."""
        return self.args[0]

    @property
    def options(self) -> dict[str, str]:
        """The `key=value` arguments, as a dict (other arguments are left out)."""
        pairs = (arg.split("=", 1) for arg in self.args[1:] if "=" in arg)
        return {key: value for key, value in pairs}


@dataclass(frozen=True)
class BootImage:
    """A parsed boot image: what the boot loader needs to start a machine."""
    path: Path                          # the image file, as it was given
    title: str
    kernel: Entry
    modules: tuple[Entry, ...]


def parse_image(path) -> BootImage:
    """Read and check a boot image; raise SpratError (one line) if it is wrong."""
    path = _in_workspace_or_tree(Path(path))
    text = _read(path)
    title, kernel, modules = None, None, []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        directive, rest = words[0].lower(), words[1:]
        where = f"{path}:{number}"
        if directive == "title":
            if title is not None:
                raise SpratError(f"{where}: a second title: a sprat image holds one boot entry")
            title = " ".join(rest)
        elif directive in _IGNORED:
            continue
        elif directive == "kernel":
            if kernel is not None:
                raise SpratError(f"{where}: a second kernel line (the first is on line "
                                 f"{kernel.line}): an image boots one CPU driver")
            kernel = _entry(path, number, directive, rest)
        elif directive == "module":
            modules.append(_entry(path, number, directive, rest))
        else:
            raise SpratError(f"{where}: unknown directive '{words[0]}' "
                             f"(expected {', '.join(_DIRECTIVES[:-1])} or {_DIRECTIVES[-1]})")
    if kernel is None:
        raise SpratError(f"{path}: no kernel line: an image needs one, "
                         "e.g. 'kernel /cpudriver/cpudriver.S'")
    return BootImage(path, title if title is not None else path.stem, kernel, tuple(modules))


def _in_workspace_or_tree(path: Path) -> Path:
    """Inside a lab workspace, `images/twophase.lst` that the workspace lacks
    is the tree's: the docs name images by their place in the tree."""
    if sources.workspace() is None or path.is_absolute() or path.exists():
        return path
    in_tree = sources.TREE / path
    return in_tree if in_tree.is_file() else path


def _read(path: Path) -> str:
    """The image's text, or a one-line error saying why there is none."""
    return read_text(path, "image")


def _entry(image: Path, number: int, directive: str, words: list[str]) -> Entry:
    """A kernel or module line: check its file exists and its options are unique."""
    where = f"{image}:{number}"
    if not words:
        raise SpratError(f"{where}: {directive} needs a file, e.g. "
                         f"'{directive} /userland/hello.S'")
    written = words[0]
    resolved = _resolve(image, written)
    check_file(resolved, "file", shown=f"{where}: {directive} {written}")
    seen = set()
    for arg in words[1:]:
        key = arg.split("=", 1)[0]
        if "=" in arg and key in seen:
            raise SpratError(f"{where}: option '{key}' given twice")
        seen.add(key)
    return Entry(resolved, tuple(words), number)


def _resolve(image: Path, written: str) -> Path:
    # "/x" is inside the sprat tree (as "/" is the root of a GRUB disk);
    # anything else sits next to the image.
    # A lab workspace's copy of a tree file comes first (emulator/sources.py).
    if written.startswith("/"):
        return sources.locate((SPRAT_ROOT / written.lstrip("/")).resolve())
    return sources.locate((image.parent / written).resolve())
