# span_member.S: a spanning domain's dispatcher on one more core.
#
# Started by monitor 0 when a program spans its domain (MONITOR_SPAN,
# userland/monitor_domains.S). Its argument says which domain, and which
# page of the shared window holds the domain's "done" word:
# domain | page << 8. Monitor 0 handed it that page's capability when it
# spawned it (monitor_domains.S span_channel), so the page is mapped in its
# channel window; it says where it is, and stays until the domain is done,
# yielding the core to its monitor meanwhile:
#
#   domain 1: a dispatcher on core 5
#
# Image line: module /userland/span_member.S nospawn (started on request).

DONE = 0                              # the done word's offset in its page

start:
    movzx ebx, r8b                    # rbx = the domain
    mov r12, r8
    shr r12, 8                        # r12 = the page with the done word
    lea rdi, [rip + text_domain]
    call print_cstr
    mov rdi, rbx
    call print_u64
    lea rdi, [rip + text_on_core]
    call print_cstr
    mov eax, SYS_CORE_ID
    syscall
    mov rdi, rax
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    shl r12, 12
    mov rax, USER_CHANNELS
    add r12, rax                      # r12 = the page's address
wait:
    cmp qword ptr [r12 + DONE], 0
    jne done
    mov eax, SYS_YIELD
    syscall
    jmp wait
done:
    xor edi, edi
    call exit

text_domain:   .asciz "domain "
text_on_core:  .asciz ": a dispatcher on core "
text_newline:  .asciz "\n"

.include "lib/sprat.S"
