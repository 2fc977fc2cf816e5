"""Dispatchers: several programs on one core, time slices, LMP between them."""

from tests.conftest import ROOT, USER_LIBRARY, boot_and_run


def image_of(tmp_path, modules):
    """modules: list of (source text or /path, args)."""
    lines = ["kernel /cpudriver/cpudriver.S"]
    for index, (source, args) in enumerate(modules):
        if source.startswith("/"):
            lines.append(f"module {source} {args}")
        else:
            (tmp_path / f"m{index}.S").write_text(f'{source}\n.include "{USER_LIBRARY}"\n')
            lines.append(f"module m{index}.S {args}")
    image = tmp_path / "dispatchers.lst"
    image.write_text("\n".join(lines) + "\n")
    return image


SAY = """
start:
    lea rdi, [rip + text]
    call print_cstr
    xor edi, edi
    call exit
text: .asciz "{text}\\n"
"""


def test_every_module_named_for_a_core_gets_a_dispatcher(tmp_path):
    image = image_of(tmp_path, [(SAY.format(text="first"), "core=0"),
                                (SAY.format(text="second"), "core=0"),
                                (SAY.format(text="elsewhere"), "core=1")])
    run = boot_and_run(image, cores=2)
    assert run.result.clean, run.result.reason
    assert run.output(0) == ["first", "second"]
    assert run.output(1) == ["elsewhere"]


def test_lmp_pingpong_between_two_dispatchers_on_one_core(tmp_path):
    image = image_of(tmp_path, [("/userland/lmp_pingpong.S", "core=0 role=0 rounds=50"),
                                ("/userland/lmp_pingpong.S", "core=0 role=1 rounds=50")])
    run = boot_and_run(image, cores=1)
    assert run.result.clean, run.result.reason
    words = run.output(0)[0].split()
    assert words[:3] == ["lmp", "rounds", "50"] and int(words[-1]) > 0


def test_lmp_carries_three_words_and_names_the_sender(tmp_path):
    client = """
start:
    mov rdi, 1
    mov rsi, 0x1111
    mov rdx, 0x2222
    mov rcx, 0x3333
    call lmp_call                     # the server answers with the sum
    cmp rdi, 0x6666
    jne wrong
    lea rdi, [rip + good]
    call print_cstr
    xor edi, edi
    call exit
wrong:
    mov edi, 1
    call exit
good: .asciz "sum ok"
"""
    server = """
start:
    call lmp_recv                     # rax = sender; rdi, rsi, rdx = words
    add rdi, rsi
    add rdi, rdx
    mov rsi, rdi
    mov rdi, rax
    xor edx, edx
    xor ecx, ecx
    call lmp_send
    xor edi, edi
    call exit
"""
    run = boot_and_run(image_of(tmp_path, [(client, "core=0"), (server, "core=0")]), cores=1)
    assert run.result.clean, run.result.reason
    assert run.output(0) == ["sum ok"]


def test_time_slices_let_a_second_dispatcher_run_beside_a_spinning_one(tmp_path):
    spinner = "start:\n    jmp start\n"
    image = image_of(tmp_path, [(spinner, "core=0"), (SAY.format(text="I ran"), "core=0")])
    run = boot_and_run(image, cores=1, max_cycles=2_000_000)
    assert "cycle budget" in run.result.reason      # the spinner never ends
    assert run.output(0) == ["I ran"], "the timer never took the core from the spinner"
    assert run.machine.cores[0].stats.interrupts >= 1


def test_registers_survive_preemption(tmp_path):
    checker = """
start:
    mov r15, 20000                    # iterations, each checking every register
    mov rax, 0xA0A0 + TAG
    mov rbx, 0xB0B0 + TAG
    mov rcx, 0xC0C0 + TAG
    mov rdx, 0xD0D0 + TAG
    mov rsi, 0x5151 + TAG
    mov rdi, 0xD1D1 + TAG
    mov rbp, 0xBEBE + TAG
    mov r8, 0x8888 + TAG
    mov r9, 0x9999 + TAG
    mov r10, 0x1010 + TAG
    mov r11, 0x1111 + TAG
    mov r12, 0x1212 + TAG
    mov r13, 0x1313 + TAG
    mov r14, 0x1414 + TAG
again:
    cmp rax, 0xA0A0 + TAG
    jne broken
    cmp rbx, 0xB0B0 + TAG
    jne broken
    cmp rcx, 0xC0C0 + TAG
    jne broken
    cmp rdx, 0xD0D0 + TAG
    jne broken
    cmp rsi, 0x5151 + TAG
    jne broken
    cmp rdi, 0xD1D1 + TAG
    jne broken
    cmp rbp, 0xBEBE + TAG
    jne broken
    cmp r8, 0x8888 + TAG
    jne broken
    cmp r9, 0x9999 + TAG
    jne broken
    cmp r10, 0x1010 + TAG
    jne broken
    cmp r11, 0x1111 + TAG
    jne broken
    cmp r12, 0x1212 + TAG
    jne broken
    cmp r13, 0x1313 + TAG
    jne broken
    cmp r14, 0x1414 + TAG
    jne broken
    dec r15
    jnz again
    lea rdi, [rip + good]
    call print_cstr
    xor edi, edi
    call exit
broken:
    lea rdi, [rip + bad]
    call print_cstr
    mov edi, 1
    call exit
good: .asciz "intact\\n"
bad:  .asciz "clobbered\\n"
"""
    image = image_of(tmp_path, [(checker, "core=0 tag=1"), (checker, "core=0 tag=2"),
                                (checker, "core=0 tag=3")])
    run = boot_and_run(image, cores=1, max_cycles=10**8)
    assert run.result.clean, run.result.reason
    assert run.output(0) == ["intact"] * 3
    assert run.machine.cores[0].stats.interrupts >= 6, "the dispatchers were never preempted"


def test_a_dispatcher_waiting_for_a_message_that_cannot_come_is_reported(tmp_path):
    lonely = "start:\n    call lmp_recv\n    xor edi, edi\n    call exit\n"
    run = boot_and_run(image_of(tmp_path, [(lonely, "core=0")]), cores=1)
    assert not run.result.clean
    assert run.output(0) == ["cpu driver: every dispatcher left waits for a message that cannot come"]
    assert run.machine.cores[0].exit_code == 3


def test_a_faulting_dispatcher_leaves_its_neighbour_running(tmp_path):
    crash = "start:\n    xor eax, eax\n    mov qword ptr [rax], 1\n"
    image = image_of(tmp_path, [(crash, "core=0"), (SAY.format(text="still here"), "core=0")])
    run = boot_and_run(image, cores=1)
    assert run.result.clean, run.result.reason
    assert "#PF page fault" in run.output(0)[0] and run.output(0)[1] == "still here"


POLLER = """
start:
    mov rbx, USER_CHANNELS + 40 * 4096
poll:
    cmp qword ptr [rbx], 0            # parks the core: nobody writes it ...
    jne seen
    pause
    jmp poll
seen:
    lea rdi, [rip + text]
    call print_cstr
    xor edi, edi
    call exit
text: .asciz "the poller saw it\\n"
"""

SETTER = """
start:
    mov ecx, 300000                   # ... until its neighbour has worked a while
work:
    dec ecx
    jnz work
    mov rbx, USER_CHANNELS + 40 * 4096
    mov qword ptr [rbx], 1
    lea rdi, [rip + text]
    call print_cstr
    xor edi, edi
    call exit
text: .asciz "the setter set it\\n"
"""


def test_a_dispatcher_parked_in_a_poll_loop_lets_its_neighbour_run_when_its_slice_ends(tmp_path):
    # A core parked on a line gives it up at its next timer interrupt, as a
    # spinning core would: its neighbour runs, writes the line, and the
    # poller sees it. (Before, the poller's core slept for good.)
    image = image_of(tmp_path, [(POLLER, "core=0 channels=40"), (SETTER, "core=0 channels=40")])
    run = boot_and_run(image, cores=1)
    assert run.result.clean, run.result.reason
    assert run.output(0) == ["the setter set it", "the poller saw it"]
    assert run.machine.cores[0].cycles > 300000      # the setter's loop ran in slices


# Waits with `pause` for channel page PAGE's first word to be set, as a
# client waits for its server's answer.
WAIT_FOR_ANSWER = """
start:
    mov rax, USER_CHANNELS + PAGE * 4096
poll:
    cmp qword ptr [rax], 0
    jne answered
    pause
    jmp poll
answered:
    xor edi, edi
    call exit
"""


def test_a_run_whose_server_died_ends_early_saying_who_waits(tmp_path):
    # Two clients on core 0 (so its timer keeps waking it) wait for answers
    # that core 1's server never writes: it dies at once.
    died = "start:\n    mov edi, 1\n    call exit\n"
    image = image_of(tmp_path, [(WAIT_FOR_ANSWER, "core=0 page=500 channels=500"),
                                (WAIT_FOR_ANSWER, "core=0 page=501 channels=501"), (died, "core=1")])
    run = boot_and_run(image, cores=2, max_cycles=10**8)
    assert run.result.reason.startswith("stuck: "), run.result.reason
    assert "waiting on lines that no core writes: core 0;" in run.result.reason
    assert "halted: core 1" in run.result.reason, run.result.reason
    assert run.result.cycles < 3 * 10**7, "the machine went on long after nothing could happen"


# Polls two lines of channel page 40 in one round with a stretch of work
# between them (line A, the flag, first; line B, never written, last), as
# a monitor polls a ring from every other core before it parks.
POLL_ROUND = """
WORK = 5000                           # iterations of two instructions: a round is
start:                                # some 10,000 cycles
    mov rbx, USER_CHANNELS + 40 * 4096
poll:
    cmp qword ptr [rbx], 0            # line A: the flag
    jne seen
    mov ecx, WORK
work:
    dec ecx
    jnz work
    cmp qword ptr [rbx + 64], 0       # line B
    pause
    jmp poll
seen:
    rdtsc
    shl rdx, 32
    lea rdi, [rax + rdx]
    call print_u64
    lea rdi, [rip + text]
    call print_cstr
    xor edi, edi
    call exit
text: .asciz " the poller saw the flag\\n"
"""

# On core 1: asks for a dispatcher on core 0 (its CPU driver takes the
# request in an interrupt, in the middle of the poller's first round),
# then sets the flag once the poller has finished that round.
SPAWN_THEN_SET = """
start:
    mov ecx, 2500
early:
    dec ecx
    jnz early
    mov eax, SYS_SPAWN
    mov edi, 2                        # the third module: says hello and exits
    xor esi, esi                      # on core 0
    xor edx, edx
    xor r10d, r10d
    syscall
    mov ecx, 15000                    # 30,000 cycles: the poller is parked by now
late:
    dec ecx
    jnz late
    rdtsc
    shl rdx, 32
    lea rbx, [rax + rdx]
    mov rax, USER_CHANNELS + 40 * 4096
    mov qword ptr [rax], 1
    mov rdi, rbx
    call print_u64
    lea rdi, [rip + text]
    call print_cstr
    xor edi, edi
    call exit
text: .asciz " the flag was set\\n"
"""


def test_a_poll_round_cut_by_an_interrupt_still_wakes_on_its_first_line(tmp_path):
    # An interrupt in the middle of a poll round (here the inbox's, for a
    # spawn) must not leave the core parked on the lines read after it
    # alone: then a write to the line read before it would go unseen until
    # the next time slice (TIME_SLICE_CYCLES, 100,000), which is how an
    # unmap on amd-8x4 once took 103,602 cycles. A spinning core sees the
    # write within a round or two of its loop.
    image = image_of(tmp_path, [(POLL_ROUND, "core=0 channels=40"),
                                (SPAWN_THEN_SET, "core=1 channels=40"),
                                (SAY.format(text="hello from the spawned one"), "nospawn")])
    run = boot_and_run(image, cores=2)
    assert run.result.clean, run.result.reason
    assert "hello from the spawned one" in run.output(0), run.output(0)
    set_at = int(run.output(1)[-1].split()[0])
    seen_at = int(next(line for line in run.output(0) if "saw the flag" in line).split()[0])
    rounds = 3 * 10_000
    assert 0 < seen_at - set_at < rounds, (
        f"the poller saw the flag {seen_at - set_at:,} cycles after it was set, more than three "
        f"rounds of its loop ({rounds:,}): it slept through the write till its time slice ended")
