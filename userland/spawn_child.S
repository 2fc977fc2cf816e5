# spawn_child.S: started by spawn_parent.S on another core.
#
# r8 holds the channel its parent chose: it receives a number there,
# answers twice that number on the next channel, with its own core id.

start:
    mov r12, rdi                      # our core
    mov r13, r8                       # the channel
    sub rsp, 128
    lea rdi, [rip + text_running]
    call print_cstr
    mov rdi, r12
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    mov rdi, r13                      # receive on the parent's channel ...
    call urpc_channel
    mov rsi, rax
    lea rdi, [rsp + 32]
    call urpc_init
    lea rdi, [r13 + 1]                # ... answer on the next one
    call urpc_channel
    mov rsi, rax
    mov rdi, rsp
    call urpc_init
    lea rdi, [rsp + 32]
    lea rsi, [rsp + 64]
    call urpc_recv
    lea rdi, [rip + text_got]
    call print_cstr
    mov rdi, qword ptr [rsp + 64]
    call print_u64
    lea rdi, [rip + text_from]
    call print_cstr
    mov rdi, qword ptr [rsp + 72]
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    shl qword ptr [rsp + 64], 1       # the answer: twice the question
    mov qword ptr [rsp + 72], r12
    mov rdi, rsp
    lea rsi, [rsp + 64]
    call urpc_send
    xor edi, edi
    call exit

text_running: .asciz "child: running on core "
text_got:     .asciz "child: got "
text_from:    .asciz " from core "
text_newline: .asciz "\n"

.include "lib/urpc.S"
.include "lib/sprat.S"
