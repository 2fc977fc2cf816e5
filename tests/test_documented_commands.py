"""Every command the README, a docs page or a lab handout shows is run here.

A documented command that fails is the first bug a user meets. Commands are
found two ways: indented lines starting with `$ ` (with the `(sprat) ...`
lines that follow them fed to the debugger's prompt), and inline code spans
that are whole commands (`sprat boot images/bind.lst --topology amd-2x2`;
spans with placeholders such as `[--json]`, `FILE` or `...` are syntax, not
commands). A handout's `$ ` lines run in order in one shell, in a fresh
folder, so `sprat lab start` and `cd` carry over as they would for a
student. A line may end in `# exit N ...` when it is meant to fail (a
skeleton scores below full).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages read as a session at a terminal: the commands run in order, in one shell.
HANDOUTS = [ROOT / "labs" / "README.md", *sorted((ROOT / "labs").glob("[0-9]*/README.md"))]
TIMEOUT = 600

# Shown, but run elsewhere: they wait for a person.
RUN_ELSEWHERE = {
    "sprat debug --gdb 1234": "waits for gdb to connect: tests/test_gdb_real.py drives it",
    "sprat debug images/spawn.lst --gdb 1234":
        "waits for gdb to connect: tests/test_gdb_real.py drives it (and docs/gdb.md's "
        "gdb session)",
    "sprat boot images/spawn.lst --gdb 1234":
        "waits for gdb to connect: tests/test_debug_gdb.py and test_gdb_real.py drive it",
    "sprat lab grade": "grades the workspace it is run in: the handouts' sessions below run it",
    "sprat lab check": "proves every lab's grader (minutes): tests/test_labs.py runs it",
}
_PLACEHOLDER = re.compile(r"\[|\]|\||\.\.\.|\b[A-Z][A-Z0-9_.]*\b")
_EXIT = re.compile(r"\s+#\s*exit\s+(\d+)\b.*$")


def shown_commands(page: Path, spans: bool = True):
    """(command, debugger lines fed to it) for every command `page` shows
    (with `spans`: inline ones too)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found = []
    for index, line in enumerate(lines):
        if line.startswith("    $ "):
            follow = []
            for after in lines[index + 1:]:
                if not after.startswith("    (sprat) "):
                    break
                follow.append(after[len("    (sprat) "):])
            found.append((line[len("    $ "):], follow))
    for span in re.findall(r"`(sprat [^`\n]+)`", "\n".join(lines)) if spans else ():
        if not _PLACEHOLDER.search(span[len("sprat "):]) and span not in RUN_ELSEWHERE:
            found.append((span, []))
    return [(command, follow) for command, follow in found if command not in RUN_ELSEWHERE]


def environment():
    # `sprat` on the PATH is this checkout's, whichever Python runs the tests.
    bin_dir = Path(sys.executable).parent
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


def page_cases():
    seen = set()
    for page in PAGES:
        if page.is_file():
            for command, follow in shown_commands(page):
                if (command, tuple(follow)) in seen:
                    continue
                seen.add((command, tuple(follow)))
                yield pytest.param(command, follow,
                                   id=f"{page.relative_to(ROOT)}: {command}"[:120])


@pytest.mark.parametrize("command, follow", list(page_cases()))
def test_a_documented_command_runs(command, follow, tmp_path):
    # Paths in the pages are relative to the tree (images/...): link them in,
    # and let anything the command writes land in a scratch folder.
    for name in ("images", "userland", "labs"):
        (tmp_path / name).symlink_to(ROOT / name)
    expected = int(_EXIT.search(command).group(1)) if _EXIT.search(command) else 0
    done = subprocess.run(["bash", "-c", _EXIT.sub("", command)], cwd=tmp_path,
                          env=environment(), input="\n".join(follow + ["quit"]) + "\n",
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == expected, \
        f"`{command}` exited {done.returncode}: {done.stderr.strip()[-500:]}"
    for answer in ("*** unknown command", "*** internal error"):
        assert answer not in done.stdout, f"`{command}` prompt said: {done.stdout[-800:]}"


@pytest.mark.parametrize("handout", HANDOUTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_handouts_commands_run_in_order_as_a_student_would(handout, tmp_path):
    script = ["set -u", "out=$(mktemp)"]
    # A handout's session is its `$ ` lines; inline spans there name commands
    # in passing ("`sprat trace` reads your files too").
    for command, follow in shown_commands(handout, spans=False):
        match = _EXIT.search(command)
        expected = int(match.group(1)) if match else 0
        plain = _EXIT.sub("", command)
        feed = _quote("\n".join(follow + ["quit"]) + "\n")
        # in a group, ended on its own line: a `# ...` note after the command
        # ends there too, and cannot swallow the redirections and the check
        script.append(f"{{ {plain}\n}} < <(printf %s {feed}) > $out 2>&1; status=$?")
        script.append(f"if [ $status -ne {expected} ] || grep -q -e Traceback -e '[*][*][*] "
                      f"unknown' -e '[*][*][*] internal' $out; then "
                      f"echo {_quote(plain)} exited $status; tail -5 $out; exit 1; fi")
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=environment(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"{handout.relative_to(ROOT)}: {done.stdout[-1500:]}"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
