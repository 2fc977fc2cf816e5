"""Channels by capability: a channel page is mapped only in the programs that hold it.

A program's channel window starts empty; the kernel maps a channel page
there while the program holds its Frame capability (kernel/channels.py):
given by its image line (`channels=`), handed over at spawn, granted by
its monitor at a bind. These tests try what a third program would: read
or forge another pair's messages, map a page it was not given, hand on a
page it does not hold.
"""

from cpudriver import layout
from kernel.channels import parse_channels, window_tables
from tests.conftest import ROOT, USER_LIBRARY, boot_and_run

URPC = ROOT / "userland" / "lib" / "urpc.S"

# On core 1 while the spawn image's parent (core 0) and child (core 2) talk
# on channels 20 and 21: write a well-formed answer, 1337 "from core 7",
# into the child's answer channel, as the forger did.
FORGER = """
start:
    mov rax, USER_CHANNELS + 21 * 4096
    mov qword ptr [rax], 1337         # the payload ...
    mov qword ptr [rax + 8], 7
    mov qword ptr [rax + 56], 1       # ... and the control word of message 0
    xor edi, edi
    call exit
"""

# Reads the parent's question on channel 20 instead.
EAVESDROPPER = """
start:
    mov rax, USER_CHANNELS + 20 * 4096
    mov rdi, qword ptr [rax]
    call print_u64
    xor edi, edi
    call exit
"""


def spawn_image(tmp_path, third: str):
    (tmp_path / "third.S").write_text(third + f'\n.include "{USER_LIBRARY}"\n')
    image = tmp_path / "forge.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     "module /userland/spawn_parent.S core=0 child=1 on=2 channel=20 channels=20-21\n"
                     "module /userland/spawn_child.S nospawn\n"
                     "module third.S core=1\n")
    return image


def test_a_third_program_that_forges_a_spawned_childs_answer_is_killed(tmp_path):
    run = boot_and_run(spawn_image(tmp_path, FORGER), cores=4, max_cycles=10**8)
    assert "parent: the child answered 42 from core 2" in run.output(0), \
        f"the parent did not get the child's own answer: {run.output(0)}"
    assert run.system.failed_programs(1) == 1, \
        f"the forger on core 1 was not stopped: {run.output(1)}"
    assert any("#PF" in line or "page fault" in line for line in run.output(1)), run.output(1)
    assert run.system.failed_programs(0) == run.system.failed_programs(2) == 0


def test_a_third_program_cannot_read_a_channel_it_was_not_given(tmp_path):
    run = boot_and_run(spawn_image(tmp_path, EAVESDROPPER), cores=4, max_cycles=10**8)
    assert run.system.failed_programs(1) == 1, f"the eavesdropper read channel 20: {run.output(1)}"
    assert "parent: the child answered 42 from core 2" in run.output(0)


# Maps a page it holds (0), one it does not (-EPERM), hands one it does not
# hold to a spawned child (-EPERM), and one it holds (accepted).
MAPPER = """
start:
    mov eax, SYS_CHANNEL_UNMAP
    mov edi, 5
    syscall
    mov eax, SYS_CHANNEL_MAP          # given by the image line: fine
    mov edi, 5
    syscall
    mov rdi, rax
    call print_i64
    call newline
    mov eax, SYS_CHANNEL_MAP          # never given: refused
    mov edi, 6
    syscall
    mov rdi, rax
    call print_i64
    call newline
    mov edi, 1                        # spawn the child, handing it page 6
    mov esi, 1
    xor edx, edx
    mov rcx, 1 << 32 | 6
    call spawn
    mov rdi, rax
    call print_i64
    call newline
    mov edi, 1                        # and now handing it page 5, ours
    mov esi, 1
    xor edx, edx
    mov rcx, 1 << 32 | 5
    call spawn
    mov rdi, rax
    call print_i64
    call newline
    mov rax, USER_CHANNELS + 5 * 4096
    mov qword ptr [rax], 55           # mapped again: writable
    xor edi, edi
    call exit
newline:
    lea rdi, [rip + text_newline]
    jmp print_cstr
text_newline: .asciz "\\n"
"""

# The spawned child: reads the page it was handed (5) and says what it found.
HOLDER = """
start:
    mov rax, USER_CHANNELS + 5 * 4096
wait:
    cmp qword ptr [rax], 55
    je seen
    pause
    jmp wait
seen:
    mov rdi, qword ptr [rax]
    call print_u64
    xor edi, edi
    call exit
"""


def test_mapping_or_handing_on_a_channel_not_held_is_refused(tmp_path):
    for name, source in (("mapper", MAPPER), ("holder", HOLDER)):
        (tmp_path / f"{name}.S").write_text(source + f'\n.include "{USER_LIBRARY}"\n')
    image = tmp_path / "map.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     "module mapper.S core=0 channels=5\n"
                     "module holder.S nospawn\n")
    run = boot_and_run(image, cores=2, max_cycles=10**8)
    assert run.result.clean, run.result.reason
    eperm = str(-layout.EPERM)
    assert run.output(0)[:4] == ["0", eperm, eperm, "0"], \
        f"map of a held page, map of a page not held, spawn handing on a page not held, " \
        f"spawn handing on a held page: {run.output(0)}"
    assert run.output(1) == ["55"], f"the child did not get page 5: {run.output(1)}"


def window(system, core, dispatcher) -> set[int]:
    """The channel pages mapped in a program's window (its own page tables)."""
    memory = system.machine.memory
    base = window_tables(core, dispatcher)
    return {page for page in range(layout.N_USER_CHANNELS)
            if memory.read_u64(base + page * 8) & 1}


def test_spawn_hands_the_child_exactly_the_parents_channels():
    run = boot_and_run(ROOT / "images" / "spawn.lst", cores=4, max_cycles=10**8)
    assert run.result.clean, run.result.reason
    client_rings = {core: layout.MONITOR_CHANNELS + core for core in range(4)}
    assert window(run.system, 0, 0) == {20, 21, client_rings[0]}
    assert window(run.system, 2, 0) == {20, 21, client_rings[2]}, \
        "the child on core 2 should hold the two channels its parent handed it, no others"


def test_a_bind_gives_both_ends_the_channel_and_no_one_else():
    lines = ["kernel /cpudriver/cpudriver.S",
             "module /userland/monitor.S core=0 monitor",
             "module /userland/bind_client.S core=0 service=7",
             "module /userland/monitor.S core=2 monitor",
             "module /userland/bind_server.S core=2 service=7",
             "module /userland/monitor.S monitor"]
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as directory:
        image = Path(directory) / "bind.lst"
        image.write_text("\n".join(lines) + "\n")
        run = boot_and_run(image, cores=4, max_cycles=10**8)
    assert run.result.clean, run.result.reason
    bound = {1504, 1505}
    assert bound <= window(run.system, 0, 1), "the client was not given the bound channel"
    assert bound <= window(run.system, 2, 1), "the server was not given the bound channel"
    # a monitor's window is its core's page tables: every channel; a program's
    # holds only its own
    assert window(run.system, 0, 1) == bound | {layout.MONITOR_CHANNELS}


def test_a_module_line_names_channels_as_pages_and_ranges():
    assert parse_channels("20-21,40") == [20, 21, 40]
    for bad in ("x", "5-2", str(layout.N_USER_CHANNELS), "-1"):
        try:
            parse_channels(bad)
        except ValueError as error:
            assert bad in str(error) or "channel pages" in str(error)
        else:
            raise AssertionError(f"channels={bad} was accepted")


def test_a_bad_channels_option_is_one_line_naming_the_image_line(tmp_path):
    import subprocess
    import sys
    image = tmp_path / "bad.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule /userland/hello.S channels=9999\n")
    done = subprocess.run([sys.executable, "-m", "sprat", "boot", str(image)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert f"{image}:2" in done.stderr and "channels=9999" in done.stderr
    assert "Traceback" not in done.stderr
