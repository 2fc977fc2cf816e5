"""Tests for kernel/image.py: the menu.lst-style boot image parser."""

from pathlib import Path

import pytest

from emulator.errors import SpratError
from kernel.image import SPRAT_ROOT, BootImage, Entry, parse_image


def write(directory: Path, text: str, name: str = "test.lst") -> Path:
    path = directory / name
    path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A scratch directory with two programs next to where images go."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "local.S").write_text("ret\n")
    (tmp_path / "images" / "other.S").write_text("ret\n")
    return tmp_path


def error_of(path) -> str:
    with pytest.raises(SpratError) as caught:
        parse_image(path)
    message = str(caught.value)
    assert "\n" not in message, "an error message must be one line"
    return message


def test_full_image(tree):
    image = parse_image(write(tree / "images", """\
title  sprat default
# comments start with #
timeout 5
root (hd0)

kernel /cpudriver/cpudriver.S loglevel=2
module /userland/hello.S
  module  local.S   core=1 count=10 verbose
"""))
    assert isinstance(image, BootImage)
    assert image.title == "sprat default"
    assert image.kernel == Entry(SPRAT_ROOT / "cpudriver" / "cpudriver.S",
                                 ("/cpudriver/cpudriver.S", "loglevel=2"), 6)
    assert image.kernel.options == {"loglevel": "2"}
    hello, local = image.modules
    assert hello.path == SPRAT_ROOT / "userland" / "hello.S"
    assert hello.args == ("/userland/hello.S",) and hello.name == "/userland/hello.S"
    assert hello.options == {} and hello.line == 7
    assert local.path == (tree / "images" / "local.S").resolve()
    assert local.args == ("local.S", "core=1", "count=10", "verbose")
    assert local.options == {"core": "1", "count": "10"}
    assert local.line == 8


def test_the_shipped_images_parse():
    for path in sorted((SPRAT_ROOT / "images").glob("*.lst")):
        image = parse_image(path)
        assert image.kernel.path.is_file()


def test_sprat_root_is_the_source_tree():
    assert (SPRAT_ROOT / "kernel" / "image.py").is_file()


def test_relative_paths_are_next_to_the_image_not_the_cwd(tree, monkeypatch):
    image = write(tree / "images", "kernel other.S\n")
    monkeypatch.chdir(tree.parent)
    assert parse_image(image).kernel.path == (tree / "images" / "other.S").resolve()


def test_title_defaults_to_the_file_name_and_modules_may_be_absent(tree):
    image = parse_image(write(tree / "images", "kernel local.S\n", name="small.lst"))
    assert image.title == "small"
    assert image.modules == ()


def test_option_values_may_contain_equals(tree):
    image = parse_image(write(tree / "images", "kernel local.S expr=a=b\n"))
    assert image.kernel.options == {"expr": "a=b"}


def test_missing_image():
    assert error_of("images/nope.lst") == "images/nope.lst: no such image"


def test_a_directory_is_not_an_image(tree):
    assert error_of("images") == "images: is a directory, not an image"


def test_unknown_directive(tree):
    path = write(tree / "images", "kernel local.S\nmodul local.S\n")
    assert error_of("images/test.lst") == ("images/test.lst:2: unknown directive 'modul' "
                                           "(expected title, timeout, root, kernel or module)")
    assert path.exists()


def test_kernel_missing(tree):
    write(tree / "images", "title nothing to boot\nmodule local.S\n")
    assert error_of("images/test.lst").startswith("images/test.lst: no kernel line")


def test_kernel_duplicated(tree):
    write(tree / "images", "kernel local.S\n\nkernel other.S\n")
    assert error_of("images/test.lst").startswith(
        "images/test.lst:3: a second kernel line (the first is on line 1)")


def test_second_title(tree):
    write(tree / "images", "title a\nkernel local.S\ntitle b\n")
    assert error_of("images/test.lst").startswith("images/test.lst:3: a second title")


@pytest.mark.parametrize("line", ["kernel", "module", "kernel   "])
def test_entry_without_a_path(tree, line):
    write(tree / "images", f"kernel local.S\n{line}\n" if line.startswith("module")
          else f"{line}\n")
    number = 2 if line.startswith("module") else 1
    directive = line.split()[0]
    assert error_of("images/test.lst").startswith(
        f"images/test.lst:{number}: {directive} needs a file")


def test_module_file_missing(tree):
    write(tree / "images", "kernel local.S\nmodule local.S\nmodule /userland/nope.S\n",
          name="x.lst")
    assert error_of("images/x.lst") == "images/x.lst:3: module /userland/nope.S: no such file"


def test_kernel_file_missing(tree):
    write(tree / "images", "kernel gone.S\n")
    assert error_of("images/test.lst") == "images/test.lst:1: kernel gone.S: no such file"


def test_module_that_is_a_directory(tree):
    (tree / "images" / "adir").mkdir()
    write(tree / "images", "kernel local.S\nmodule adir\n")
    assert error_of("images/test.lst") == "images/test.lst:2: module adir: is a directory, not a file"


def test_option_given_twice(tree):
    write(tree / "images", "kernel local.S\nmodule local.S core=1 core=2\n")
    assert error_of("images/test.lst") == "images/test.lst:2: option 'core' given twice"


@pytest.mark.parametrize("data", [b"\x7fELF\x02\x01\x01\x00\x00", b"kernel \xff\xfe.S\n"])
def test_non_text_file(tree, data):
    (tree / "images" / "bin.lst").write_bytes(data)
    assert error_of("images/bin.lst").startswith("images/bin.lst: not a text file")


def test_windows_line_endings_and_tabs(tree):
    image = parse_image(write(tree / "images", "title\tt\r\nkernel\tlocal.S\ta=1\r\n"))
    assert image.title == "t"
    assert image.kernel.options == {"a": "1"}


def test_a_module_option_cannot_redefine_a_system_constant(tmp_path):
    from emulator.errors import SpratError
    from kernel.boot import boot_image
    image = tmp_path / "redefine.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule /userland/hello.S SYS_EXIT=99\n")
    with pytest.raises(SpratError, match="redefine the system's constant SYS_EXIT"):
        boot_image(image, cores=1)
