"""docs/writing-programs.md is true: its files boot, its claims hold.

The guide's own commands run in tests/test_documented_commands.py; this
file builds what the guide shows as files (`mine/nothing.S` and its image,
outside the tree) exactly as written there, and checks what the guide says
the token ring prints.
"""

import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

GUIDE = ROOT / "docs" / "writing-programs.md"
TIMEOUT = 300


def guide_files() -> dict[str, str]:
    """Every fenced block the guide introduces with a line `` `PATH`: ``."""
    text = GUIDE.read_text(encoding="utf-8")
    return dict(re.findall(r"^`([\w./-]+)`:\n\n```\n(.*?)```", text, re.MULTILINE | re.DOTALL))


def sprat(*args, cwd):
    bin_dir = Path(sys.executable).parent
    return subprocess.run([str(bin_dir / "sprat"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT)


def test_the_guides_program_outside_the_tree_boots_cleanly(tmp_path):
    files = guide_files()
    assert set(files) == {"mine/nothing.S", "mine/nothing.lst"}, files.keys()
    (tmp_path / "sprat").symlink_to(ROOT)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    done = sprat("boot", "mine/nothing.lst", cwd=tmp_path)
    assert done.returncode == 0 and "every core halted cleanly" in done.stdout, \
        f"the guide's first program should boot cleanly from outside the tree: {done.stderr}"


def test_a_semicolon_comment_is_the_error_the_guide_quotes(tmp_path):
    files = guide_files()
    (tmp_path / "sprat").symlink_to(ROOT)
    (tmp_path / "mine").mkdir()
    source = files["mine/nothing.S"].replace("start:\n", "start:\n    mov rax, 1 ; the answer\n")
    (tmp_path / "mine/nothing.S").write_text(source)
    (tmp_path / "mine/nothing.lst").write_text(files["mine/nothing.lst"])
    done = sprat("boot", "mine/nothing.lst", cwd=tmp_path)
    quoted = re.search(r"is an\s+error \(`([^`]+)`\)", GUIDE.read_text()).group(1)
    assert done.returncode == 2 and quoted in done.stderr, \
        f"the guide says `;` starts no comment and quotes {quoted!r}; sprat said {done.stderr!r}"


def test_the_token_ring_comes_back_as_the_guide_says(tmp_path):
    done = sprat("boot", str(ROOT / "images" / "token_ring.lst"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "[core 0] token_ring: 3 laps of 4 cores, the token came back as 11" in done.stdout
    assert "token_ring: 3 laps of 4 cores, the token came back as 11" in GUIDE.read_text()


def test_the_free_channel_numbers_are_the_machines():
    from cpudriver import layout
    text = " ".join(GUIDE.read_text(encoding="utf-8").split())
    last = int(re.search(r"channels 0 to (\d+) are the programs'", text).group(1))
    taken = int(re.search(r"monitors take channels 0 to (\d+)", text).group(1))
    left = re.search(r"only (\d+) to (\d+) are left", text).groups()
    client = (ROOT / "userland" / "lib" / "monitor_client.S").read_text()
    first = int(re.search(r"^MONITOR_FIRST_PAGE = (\d+)", client, re.MULTILINE).group(1))
    assert last == layout.N_USER_CHANNELS - 1, "the guide's last program channel is wrong"
    assert (taken + 1, int(left[0]), int(left[1])) == (first, first, last), \
        f"the guide's channels beside monitors are wrong: the window starts at {first}"
