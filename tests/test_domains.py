"""Spanning domains: the domain table every monitor holds, kept by one phase.

A program asks its monitor to span its domain to more cores
(MONITOR_SPAN, userland/monitor_domains.S): monitor 0 starts the domain's
module there and every monitor records the domain's cores. These tests
check that the dispatchers really start, that every replica holds the same
table, that bad requests are refused, and that an unmap in the spanning
domain reaches every core's page table.
"""

from conftest import ROOT, boot_and_run
from kernel.replica import read_replicas

CORES = 4
LIBRARY = ROOT / "userland" / "lib"

SPANNER = """
ENDS = USER_STACK_TOP - 256
DONE_PAGE = MONITOR_FIRST_PAGE + 1
start:
    mov rsp, ENDS
    mov rdi, rsp
    call monitor_open
    mov r12d, 1                       # span domain 2 to cores 1 .. 3
next:
    mov rdi, ENDS
    mov esi, MONITOR_SPAN
    mov edx, 2
    lea rcx, [r12 + (MEMBER << 8)]
    mov r8, 2 | DONE_PAGE << 8
    call monitor_call
    mov rbx, rdx                      # the mask
    mov rdi, rax
    call print_u64                    # 0: spanned
    lea rdi, [rip + space]
    call print_cstr
    mov rdi, rbx
    call print_u64
    lea rdi, [rip + newline]
    call print_cstr
    inc r12
    cmp r12, BAD_CORE_TOO
    jbe next
    mov rdi, ENDS                     # a domain that cannot be
    mov esi, MONITOR_SPAN
    mov edx, 99
    mov ecx, (MEMBER << 8) | 1
    xor r8d, r8d
    call monitor_call
    mov rdi, rax
    call print_u64
    lea rdi, [rip + newline]
    call print_cstr
    mov rax, USER_CHANNELS + DONE_PAGE * 4096
    mov qword ptr [rax], 1            # the members may leave
    mov rdi, ENDS
    jmp stop_monitors_and_exit
space: .asciz " "
newline: .asciz "\\n"
""" + f"""
.include "{LIBRARY}/monitor_client.S"
.include "{LIBRARY}/urpc.S"
"""


def test_a_domain_spans_cores_and_every_replica_records_it(tmp_path):
    (tmp_path / "spanner.S").write_text(SPANNER + f'.include "{LIBRARY}/sprat.S"\n')
    image = tmp_path / "span.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     "module /userland/monitor.S core=0 monitor\n"
                     "module spanner.S core=0 member=3 bad_core_too=4 channels=1537\n"
                     "module /userland/monitor.S monitor\n"
                     "module /userland/span_member.S nospawn\n")
    run = boot_and_run(image, cores=CORES, max_cycles=10**8)
    assert run.result.clean, run.result.reason
    answers = run.output(0)
    # cores 1, 2, 3 join one after another (the asker, core 0, is in it too);
    # core 4 does not exist (error 6); domain 99 does not either (error 5)
    assert answers[:5] == ["0 3", "0 7", "0 15", "6 0", "5"]
    for core in (1, 2, 3):
        assert f"domain 2: a dispatcher on core {core}" in run.output(core)
    replicas = read_replicas(run.system)
    assert sorted(replicas) == list(range(CORES))
    assert {replica.domains for replica in replicas.values()} == {(0, 0, 0b1111, 0, 0, 0, 0, 0)}
    assert all(run.system.dispatchers(core) == 2 for core in (1, 2, 3))


def test_an_unmap_in_a_spanning_domain_reaches_every_core_it_spans():
    from emulator.interconnect import load_topology
    from sprat.bench.tlb import MODE_UNMAP, run_shootdowns
    lines, booted = [], []
    # (no stale-entry probe here: the domain's dispatchers share the cores
    # with the monitors, and switching to one empties the TLB anyway)
    rows = run_shootdowns(load_topology("amd-2x2"), MODE_UNMAP, [2, 4], ["numa-multicast"],
                          lines=lines, booted_system=booted.append, runs=1,
                          whole_machine=True)
    assert [(r["cores"], r["acked"]) for r in rows] == [(2, 2), (4, 4)]
    assert sorted(core for core, line in lines if line.startswith("domain 1: a dispatcher")) \
        == [1, 2, 3]
    replicas = read_replicas(booted[0])
    assert {replica.domains[1] for replica in replicas.values()} == {0b1111}
