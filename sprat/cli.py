"""The `sprat` command: the tools a person runs.

    sprat boot [IMAGE] [--cores N] [--quantum Q] [--max-cycles C] [--gdb PORT] [--trace FILE]
    sprat debug [IMAGE] [--cores N] [--script FILE] [--gdb PORT]
    sprat trace FILE [--plot OUT.png]
    sprat explore IMAGE --seeds N [--jobs J] [--expect-line TEXT]
    sprat bench boot [--json]
    sprat topology list | show NAME

Every subcommand lives in its own module under sprat/ and registers itself
here with `add_parser(subparsers)` and a `run(args) -> exit status`.

Errors a person can cause (a bad image, a bad option, a bad file) are
SpratErrors: one line on stderr, exit status 2, never a traceback; an
output sprat cannot write (a full disk) is one line too, exit status 1. A run
that fails inside the machine (a kernel panic, the cycle budget spent)
exits with status 1 and a one-line reason.
"""

import argparse
import errno
import os
import sys

from emulator.errors import SpratError

EXIT_OK = 0
EXIT_MACHINE_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Errors that only a failing write can raise: the disk (or the quota) is
# full, the device failed, the file system is read-only.
_OUTPUT_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit status 2)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from sprat import bench, boot, debug, explore, topology, trace
    from sprat.lab import command as lab

    parser = OneLineParser(
        prog="sprat",
        description="A teaching multikernel: boot a Barrelfish-style OS on many emulated "
                    "x86-64 cores, watch its messages, measure what they cost.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND",
                                       parser_class=OneLineParser)
    for module in (boot, debug, trace, explore, bench, topology, lab):
        module.add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        # Before any module a lab swaps is imported (sprat/lab/workspace.py).
        space = use_lab_workspace(argv)
    except SpratError as error:
        print(f"sprat: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if space is None:
        return _run(argv)
    from sprat.lab.watchdog import limit_in, watching
    from sprat.lab.workspace import import_swapped
    # A call into the workspace's Python that never returns, from its import
    # on, ends the run with a line that names where it is stuck.
    with watching(space.folder, space.files, limit_in(argv)) as watchdog:
        try:
            import_swapped(space)
        except SpratError as error:
            print(f"sprat: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        return _run(argv, watchdog)


def _run(argv: list[str], watchdog=None) -> int:
    """Parse the command line and run the command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        print("sprat: error: a command is needed, e.g. sprat boot (see sprat --help)",
              file=sys.stderr)
        return EXIT_USAGE
    if watchdog is not None and hasattr(args, "python_limit"):
        watchdog.limit = args.python_limit
    try:
        return args.run(args)
    except SpratError as error:
        print(f"sprat: error: {error}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        print("sprat: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except OSError as error:
        if error.errno not in _OUTPUT_FAILURES:
            raise
        # Standard output on a full disk (`sprat boot > file`), or a
        # temporary file: the run cannot go on, and it is nobody's mistake.
        print(f"sprat: error: cannot write the output: {error.strerror}", file=sys.stderr)
        _discard_stdout()
        return EXIT_MACHINE_FAILURE


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so Python's flush at exit fails no more."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):       # no real file behind it (a test's capture)
        pass


def use_lab_workspace(argv: list[str]):
    """`--lab DIR`, or a lab workspace around the current folder: read its files
    first. The workspace, or None; its Python files are not imported yet
    (workspace.import_swapped).

    `sprat lab` itself is left alone: its grader activates each workspace in
    the child process that tests it."""
    folder = None
    for index, word in enumerate(argv):
        if word == "--lab" and index + 1 < len(argv):
            folder = argv[index + 1]
        elif word.startswith("--lab="):
            folder = word[len("--lab="):]
    if "lab" in argv[:1]:
        return None
    from pathlib import Path
    from sprat.lab import workspace
    if folder is None:
        found = workspace.find_workspace()
        if found is None:
            return None
        folder = found
    # os.path.isdir, not Path.is_dir: a name too long for the system is
    # no folder, where Path.is_dir raises OSError.
    if not os.path.isdir(folder):
        raise SpratError(f"--lab {folder}: no such folder")
    space = workspace.open_workspace(Path(folder))
    workspace.activate(space)
    print(f"sprat: lab {space.lab.number} workspace {folder}: your "
          f"{', '.join(space.files)} instead of the tree's", file=sys.stderr)
    return space


if __name__ == "__main__":
    sys.exit(main())
