"""The TLB is real: a removed mapping lives on until invlpg, even across system calls."""

from tests.conftest import ROOT, boot_and_run

STALE = """
start:
    mov rdi, 7
    call urpc_channel
    mov r12, rax
    mov qword ptr [r12], 0x1234       # touch the page: its TLB entry now exists
    mov eax, SYS_CHANNEL_UNMAP
    mov edi, 7
    syscall
    mov rax, qword ptr [r12]          # the PTE is gone, the TLB entry is not
    cmp rax, 0x1234
    jne wrong
    lea rdi, [rip + stale]
    call print_cstr
    mov eax, SYS_INVLPG
    mov edi, 7
    syscall
after_invlpg:
    mov rax, qword ptr [r12]          # now the walk finds no page: #PF
wrong:
    mov edi, 1
    call exit
stale: .asciz "stale TLB entry still works\\n"
"""


def test_unmapped_page_is_reachable_until_invlpg_then_faults(tmp_path):
    (tmp_path / "stale.S").write_text(
        STALE + f'.include "{ROOT}/userland/lib/urpc.S"\n.include "{ROOT}/userland/lib/sprat.S"\n')
    image = tmp_path / "stale.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\nmodule stale.S channels=7\n")
    run = boot_and_run(image, cores=1)
    assert run.output(0)[0] == "stale TLB entry still works"
    fault = run.output(0)[1]
    after = run.system.modules[0].program.symbols["after_invlpg"]
    assert f"#PF page fault at rip {after:#x}" in fault and "error 0x4" in fault
    assert run.result.clean
