"""A program's requests to its monitor are hostile input: bad ones are refused.

Every word of a request (lib/monitor_client.S) is whatever the program put
there. A bad request gets an error answer; the monitors stay up and serve
the next one (here: the final MONITOR_STOP, which every monitor obeys).
"""

from conftest import ROOT, boot_and_run

LIBRARY = ROOT / "userland" / "lib"
PAGE = 1536                               # MONITOR_FIRST_PAGE (lib/monitor_client.S)

# (op, w1, w2, w3): each must be refused
BAD_REQUESTS = [
    (99, 0, 0, 0),                        # no such request
    (2, 0, (0 << 8) | 4, 0),              # shoot down page 0: the monitors' own rings
    (1, 5000, (0 << 8) | 4, 0),           # no such page
    (2, PAGE - 1, (0 << 8) | 4, 0),       # the monitors' last page (their bindings)
    (1, PAGE, (9 << 8) | 4, 0),           # no such protocol
    (1, PAGE, (0 << 8) | 0, 0),           # no cores
    (1, PAGE, (0 << 8) | 99, 0),          # more cores than there are
    (5, 99, 0, 0),                        # retype a region that does not exist
    (10, 12345, 0, 0),                    # bind to a service that does not exist
    (10, 7, 0xDEAD_BEEF, 0),              # ... sending a capability we do not have
    (14, 99, 1, 0),                       # span a domain that does not exist
    (14, 1, (999 << 8) | 1, 0),           # span with a module that does not exist
]


def program(requests) -> str:
    table = "\n".join(f"    .quad {op}, {w1}, {w2}, {w3}" for op, w1, w2, w3 in requests)
    return f"""
ENDS = USER_STACK_TOP - 256
start:
    mov rsp, ENDS
    mov rdi, rsp
    call monitor_open
    lea rbx, [rip + requests]
    mov r12d, {len(requests)}
next:
    mov rdi, ENDS
    mov rsi, qword ptr [rbx]
    mov rdx, qword ptr [rbx + 8]
    mov rcx, qword ptr [rbx + 16]
    mov r8, qword ptr [rbx + 24]
    call monitor_call
    mov rdi, rax
    call print_i64
    lea rdi, [rip + newline]
    call print_cstr
    add rbx, 32
    dec r12
    jnz next
    mov rdi, ENDS
    jmp stop_monitors_and_exit
newline: .asciz "\\n"
requests:
{table}
.include "{LIBRARY}/monitor_client.S"
.include "{LIBRARY}/urpc.S"
.include "{LIBRARY}/sprat.S"
"""


def test_bad_requests_are_refused_and_the_monitors_serve_on(tmp_path):
    (tmp_path / "asker.S").write_text(program(BAD_REQUESTS))
    image = tmp_path / "bad.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     "module /userland/monitor.S core=0 monitor\n"
                     "module /userland/monitor.S core=1 monitor\n"
                     "module asker.S core=1\n"
                     "module /userland/monitor.S monitor\n")
    run = boot_and_run(image, cores=4, max_cycles=10**8)
    assert run.result.clean, run.result.reason
    answers = [int(line) for line in run.output(1)]
    assert len(answers) == len(BAD_REQUESTS)
    assert all(answer != 0 for answer in answers), answers
