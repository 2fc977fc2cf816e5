"""The regions of a file that a lab asks the student to write.

The tree's own code is the reference solution. What a lab asks for is
marked in it by two comment lines (`#` starts a comment in sprat's
assembly and in Python alike):

    # LAB urpc BEGIN send
    ...the reference code...
    # LAB urpc END send

`blank` replaces each region's body by the lab's stub (the skeleton a
student starts from); the marker lines stay, so the student sees where to
write. `apply_diff` turns the reference into a recorded wrong solution
(labs/NN-slug/wrong/*.diff, unified diffs against the tree).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from emulator.errors import SpratError

_MARKER = re.compile(r"^(?P<indent>[ \t]*)#\s*LAB\s+(?P<slug>[\w-]+)\s+(?P<end>BEGIN|END)"
                     r"\s+(?P<name>[\w-]+)\s*$")


@dataclass(frozen=True)
class Region:
    name: str
    begin: int          # index of the BEGIN line
    end: int            # index of the END line
    indent: str         # the BEGIN marker's indentation (Python stubs take it)


def find_regions(text: str, slug: str, where: str) -> list[Region]:
    """The regions of lab `slug` in `text`, in order; SpratError if unbalanced."""
    regions, open_region = [], None
    for index, line in enumerate(text.splitlines()):
        match = _MARKER.match(line)
        if not match or match["slug"] != slug:
            continue
        if match["end"] == "BEGIN":
            if open_region is not None:
                raise SpratError(f"{where}:{index + 1}: region {match['name']} begins inside "
                                 f"region {open_region[0]}")
            open_region = (match["name"], index, match["indent"])
        else:
            if open_region is None or open_region[0] != match["name"]:
                raise SpratError(f"{where}:{index + 1}: END {match['name']} without its BEGIN")
            regions.append(Region(open_region[0], open_region[1], index, open_region[2]))
            open_region = None
    if open_region is not None:
        raise SpratError(f"{where}:{open_region[1] + 1}: region {open_region[0]} has no END line")
    return regions


def blank(text: str, slug: str, stubs: dict[str, str], where: str) -> str:
    """`text` with every region's body replaced by its stub."""
    lines = text.splitlines(keepends=True)
    for region in reversed(find_regions(text, slug, where)):
        if region.name not in stubs:
            raise SpratError(f"{where}:{region.begin + 1}: region {region.name} has no stub "
                             f"(the lab needs stubs/{region.name})")
        stub = [region.indent + line if line.strip() else line
                for line in stubs[region.name].splitlines(keepends=True)]
        if stub and not stub[-1].endswith("\n"):
            stub[-1] += "\n"
        lines[region.begin + 1:region.end] = stub
    return "".join(lines)


def changed_outside(reference: str, student: str, slug: str, where: str) -> str | None:
    """Where `student` first differs from `reference` outside the regions, on
    one line, or None. Blank lines and comment lines do not count; the marker
    lines do. A lab's given code is the tree's: a grader that runs it, or
    tests the student's code through it, checks that it still is."""
    theirs, ours = _given_lines(student, slug), _given_lines(reference, slug)
    for (number, line), (_, should) in zip(theirs, ours):
        if line != should:
            return (f"{where}:{number}: `{line.strip()}` is not the given code (the tree's "
                    f"there is `{should.strip()}`): outside your regions the file must stay "
                    f"as it came; write what you add inside a region")
    if len(theirs) > len(ours):
        number, line = theirs[len(ours)]
        return (f"{where}:{number}: `{line.strip()}` is added to the given code: outside your "
                f"regions the file must stay as it came; write what you add inside a region")
    if len(theirs) < len(ours):
        return (f"{where}: the given code `{ours[len(theirs)][1].strip()}` is missing: outside "
                f"your regions the file must stay as it came")
    return None


def _given_lines(text: str, slug: str) -> list[tuple[int, str]]:
    """(line number, line) of everything outside the regions' bodies but
    blank lines and comments; the marker lines included."""
    kept, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        match = _MARKER.match(line)
        if match and match["slug"] == slug:
            inside = match["end"] == "BEGIN"
            kept.append((number, line.strip()))
        elif not inside and line.strip() and not line.lstrip().startswith("#"):
            kept.append((number, line.rstrip()))
    return kept


# --- Recorded wrong solutions -----------------------------------------------------

@dataclass(frozen=True)
class WrongSolution:
    name: str
    summary: str                   # the mistake, in one line
    expect: tuple[str, ...]        # tests that must catch it (may be empty: any one)
    patches: dict                  # tree-relative file -> list of hunks


def read_wrong_solution(name: str, text: str, where: str) -> WrongSolution:
    """Parse a wrong/*.diff: description lines, then a unified diff."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("--- ")), None)
    if start is None:
        raise SpratError(f"{where}: no diff in it (a unified diff starts with '--- a/FILE')")
    description = [line.strip() for line in lines[:start]
                   if line.strip() and not line.startswith(("diff ", "index "))]
    summary = next((line for line in description if not line.startswith("expect:")), name)
    expect = tuple(word for line in description if line.startswith("expect:")
                   for word in line[len("expect:"):].replace(",", " ").split())
    return WrongSolution(name, summary, expect, _parse_hunks(lines[start:], where, start))


def _parse_hunks(lines: list[str], where: str, offset: int) -> dict:
    patches, current, hunk = {}, None, None
    for number, line in enumerate(lines, offset + 1):
        if line.startswith("--- "):
            continue
        if line.startswith("+++ "):
            name = line[4:].split("\t")[0].strip()
            current = patches.setdefault(name[2:] if name.startswith("b/") else name, [])
        elif line.startswith("@@"):
            if current is None:
                raise SpratError(f"{where}:{number}: a hunk before its '+++ b/FILE' line")
            hunk = ([], [])
            current.append(hunk)
        elif line.startswith("diff ") or line.startswith("index "):
            hunk = None
        elif hunk is not None and line[:1] in (" ", "-", "+", ""):
            text = line[1:]
            if line[:1] in (" ", "", "-"):
                hunk[0].append(text)
            if line[:1] in (" ", "", "+"):
                hunk[1].append(text)
        elif hunk is not None and line.startswith("\\"):
            continue            # "\ No newline at end of file"
        else:
            raise SpratError(f"{where}:{number}: not a line of a unified diff")
    return patches


def apply_patches(text: str, hunks: list, where: str) -> str:
    """Apply hunks (old lines, new lines) to text; each old block must be found."""
    lines = text.splitlines()
    trailing_newline = text.endswith("\n")
    position = 0
    for old, new in hunks:
        at = _find(lines, old, position)
        if at is None:
            raise SpratError(f"{where}: the diff no longer applies: cannot find the lines "
                             f"starting {old[0].strip()!r}" if old else f"{where}: empty hunk")
        lines[at:at + len(old)] = new
        position = at + len(new)
    return "\n".join(lines) + ("\n" if trailing_newline else "")


def _find(lines: list[str], block: list[str], start: int) -> int | None:
    for at in list(range(start, len(lines) - len(block) + 1)) + list(range(0, start)):
        if lines[at:at + len(block)] == block:
            return at
    return None
