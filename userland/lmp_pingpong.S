# lmp_pingpong.S: two dispatchers on one core pass a message back and forth
# through the CPU driver (LMP), ROUNDS times.
#
# Dispatcher 0 (ROLE=0) times the round trips with rdtsc after WARMUP rounds
# and prints:   lmp rounds 1000 cycles 123456
# Dispatcher 1 (ROLE=1) answers every message to its sender: with REPLY=0
# by lmp_send and then lmp_recv for the next (two kernel entries: the
# pinger's next call may find it not yet waiting, and yields); with REPLY=1
# by lmp_call, which answers and waits for the next in one entry, so every
# call finds it waiting and the core is handed over both ways.
#
# Image arguments: role=0|1 rounds=N warmup=N reply=0|1 (both modules on
# one core)

ROLE = 0
PEER = 1
ROUNDS = 100
WARMUP = 16
REPLY = 0

start:
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

# round_trip: send r12 to the peer and wait for the answer (one call).
round_trip:
    mov rdi, PEER
    mov rsi, r12
    xor edx, edx
    xor ecx, ecx
    call lmp_call
    ret

pong:
    mov r12, WARMUP + ROUNDS
    call lmp_recv                     # rax = who sent it, rdi = its word
pong_next:
    mov rsi, rdi                      # the answer: its word, to its sender
    mov rdi, rax
    xor edx, edx
    xor ecx, ecx
    dec r12
    jz pong_last
    mov eax, REPLY
    test eax, eax
    jz pong_send_then_recv
    call lmp_call                     # answer, and wait for the next: one entry
    jmp pong_next
pong_send_then_recv:
    call lmp_send
    call lmp_recv
    jmp pong_next
pong_last:
    call lmp_send
    xor edi, edi
    call exit

text_label: .asciz "lmp rounds"

.include "lib/measure.S"
.include "lib/sprat.S"
