# urpc_pingpong.S: one core sends, the other echoes, ROUNDS times.
#
# The pinger (ROLE=0) measures the round trip with rdtsc (the core's modeled
# clock) after WARMUP rounds that bring the channel lines and the code into
# the caches, and prints:   pingpong rounds 1000 cycles 123456
# The ponger (ROLE=1) echoes every message back.
#
# Image arguments: role=0|1 send=CHANNEL recv=CHANNEL rounds=N warmup=N

ROLE = 0
SEND = 0
RECV = 1
ROUNDS = 100
WARMUP = 16

start:
    sub rsp, 128                      # [rsp]: send end, [rsp+32]: recv end, [rsp+64]: message
    mov rdi, SEND
    call urpc_channel
    mov rsi, rax
    mov rdi, rsp
    call urpc_init
    mov rdi, RECV
    call urpc_channel
    mov rsi, rax
    lea rdi, [rsp + 32]
    call urpc_init
    mov rax, ROLE
    test rax, rax
    jnz pong

ping:
    mov r12, WARMUP
ping_warmup:
    call round_trip
    dec r12
    jnz ping_warmup
    call clock
    mov r13, rax                      # r13 = start of the measured rounds
    mov r12, ROUNDS
ping_measured:
    call round_trip
    dec r12
    jnz ping_measured
    call clock
    sub rax, r13
    lea rdi, [rip + text_label]
    mov rsi, ROUNDS
    mov rdx, rax
    call report
    xor edi, edi
    call exit

# round_trip: send the message, wait for its echo.
round_trip:
    lea rdi, [rsp + 8]                # our caller's frame: skip the return address
    lea rsi, [rsp + 8 + 64]
    mov qword ptr [rsi], r12
    call urpc_send
    lea rdi, [rsp + 8 + 32]
    lea rsi, [rsp + 8 + 64]
    call urpc_recv
    ret

pong:
    mov r12, WARMUP + ROUNDS
pong_next:
    lea rdi, [rsp + 32]
    lea rsi, [rsp + 64]
    call urpc_recv
    mov rdi, rsp
    lea rsi, [rsp + 64]
    call urpc_send
    dec r12
    jnz pong_next
    xor edi, edi
    call exit

text_label: .asciz "pingpong rounds"

.include "lib/urpc.S"
.include "lib/measure.S"
.include "lib/sprat.S"
