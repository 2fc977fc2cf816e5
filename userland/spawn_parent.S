# spawn_parent.S: start a program on another core and talk to it.
#
# The parent asks the CPU driver to spawn boot module CHILD on core ON,
# giving it CHANNEL as its argument and handing it the capabilities of
# channels CHANNEL and CHANNEL + 1, which the image gave the parent: no
# other program holds them, so no other program can read or forge what
# the two say. The two then speak URPC: the parent sends a number on
# channel CHANNEL, the child answers on CHANNEL + 1.
#
# Image arguments: child=MODULE on=CORE channel=K channels=K-K+1 (see
# images/spawn.lst)

CHILD = 1
ON = 1
CHANNEL = 20

start:
    mov r12, rdi                      # our core
    sub rsp, 128                      # [rsp]: send end, [rsp+32]: recv end, [rsp+64]: message
    lea rdi, [rip + text_spawning]
    call print_cstr
    mov rdi, ON
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    mov rdi, CHILD
    mov rsi, ON
    mov rdx, CHANNEL
    mov rcx, 2 << 32 | CHANNEL        # hand both channels over
    call spawn
    test rax, rax
    js failed
    mov rdi, CHANNEL                  # our end of each direction
    call urpc_channel
    mov rsi, rax
    mov rdi, rsp
    call urpc_init
    mov rdi, CHANNEL + 1
    call urpc_channel
    mov rsi, rax
    lea rdi, [rsp + 32]
    call urpc_init
    mov qword ptr [rsp + 64], 21      # the question
    mov qword ptr [rsp + 72], r12     # and who asks
    mov rdi, rsp
    lea rsi, [rsp + 64]
    call urpc_send
    lea rdi, [rsp + 32]
    lea rsi, [rsp + 64]
    call urpc_recv
    lea rdi, [rip + text_answer]
    call print_cstr
    mov rdi, qword ptr [rsp + 64]
    call print_u64
    lea rdi, [rip + text_from]
    call print_cstr
    mov rdi, qword ptr [rsp + 72]
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    xor edi, edi
    call exit
failed:
    lea rdi, [rip + text_failed]
    call print_cstr
    mov edi, 1
    call exit

text_spawning: .asciz "parent: spawning the child on core "
text_answer:   .asciz "parent: the child answered "
text_from:     .asciz " from core "
text_failed:   .asciz "parent: spawn failed\n"
text_newline:  .asciz "\n"

.include "lib/urpc.S"
.include "lib/sprat.S"
