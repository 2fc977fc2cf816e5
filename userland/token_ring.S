# token_ring.S: a token goes round a ring of cores, ROUNDS times.
#
# Every core runs this program. Core k takes the token from channel
# FIRST + k and passes it on, one larger, on channel FIRST + (k + 1) mod n.
# Core 0 puts the token (0) in first, and after ROUNDS laps keeps it and
# prints what came back: ROUNDS * n - 1, every core having added one on
# every lap but core 0 on its last.
#
#   [core 0] token_ring: 3 laps of 4 cores, the token came back as 11
#
# Image arguments: rounds=N first=CHANNEL (docs/writing-programs.md)
# in: rdi = core id, rsi = number of cores (lib/sprat.S)

ROUNDS = 3
FIRST = 40

start:
    mov r12, rdi                      # r12 = our core
    mov r13, rsi                      # r13 = cores in the ring
    mov r14, ROUNDS                   # r14 = laps still to go
    sub rsp, 128                      # [rsp]: out end, [rsp+32]: in end, [rsp+64]: message
    lea rdi, [r12 + FIRST]            # we take the token on FIRST + k ...
    call urpc_channel
    mov rsi, rax
    lea rdi, [rsp + 32]
    call urpc_init
    lea rax, [r12 + 1]                # ... and pass it on FIRST + (k + 1) mod n
    xor edx, edx
    div r13
    lea rdi, [rdx + FIRST]
    call urpc_channel
    mov rsi, rax
    mov rdi, rsp
    call urpc_init
    test r12, r12
    jnz lap
    mov qword ptr [rsp + 64], 0       # core 0 starts the token on its way
    mov rdi, rsp ; lea rsi, [rsp + 64] ; call urpc_send

lap:
    lea rdi, [rsp + 32]
    lea rsi, [rsp + 64]
    call urpc_recv                    # wait for the token
    dec r14
    test r12, r12
    jnz pass_on                       # the others always pass it on
    test r14, r14
    jz came_back                      # core 0, last lap: keep it
pass_on:
    inc qword ptr [rsp + 64]
    mov rdi, rsp ; lea rsi, [rsp + 64] ; call urpc_send
    test r14, r14
    jnz lap
    jmp leave

came_back:
    lea rdi, [rip + text_laps]
    call print_cstr
    mov rdi, ROUNDS
    call print_u64
    lea rdi, [rip + text_of]
    call print_cstr
    mov rdi, r13
    call print_u64
    lea rdi, [rip + text_came_back]
    call print_cstr
    mov rdi, qword ptr [rsp + 64]
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
leave:
    xor edi, edi
    call exit

text_laps:      .asciz "token_ring: "
text_of:        .asciz " laps of "
text_came_back: .asciz " cores, the token came back as "
text_newline:   .asciz "\n"

.include "lib/urpc.S"
.include "lib/sprat.S"
