# urpc_stream.S: one core sends COUNT messages back to back, the other
# receives them and checks every one.
#
# The sender (ROLE=0) fills all seven words of message i with i, i+1, ...
# i+6. The receiver (ROLE=1) checks each message it gets is the next one,
# whole: a lost, duplicated or torn message makes it print what it saw and
# exit with status 1. It measures the pipelined throughput with rdtsc from
# the first message to the last and prints:
#     stream messages 1000 cycles 123456
#
# Image arguments: role=0|1 channel=K count=N [delay=LOOPS before starting]

ROLE = 0
CHANNEL = 0
COUNT = 1000
DELAY = 0

start:
    mov rcx, DELAY                    # an optional late start: a loop of DELAY rounds
    test rcx, rcx
    jz start_now
start_delay:
    dec rcx
    jnz start_delay
start_now:
    sub rsp, 96                       # [rsp]: our end, [rsp+32]: message
    mov rdi, CHANNEL
    call urpc_channel
    mov rsi, rax
    mov rdi, rsp
    call urpc_init
    mov rax, ROLE
    test rax, rax
    jnz receive

send:
    xor r12d, r12d                    # r12 = message number
send_next:
    lea rsi, [rsp + 32]
    xor ecx, ecx
send_fill:                            # word k of message i is i + k
    lea rax, [r12 + rcx]
    mov qword ptr [rsi + rcx * 8], rax
    inc ecx
    cmp ecx, URPC_PAYLOAD_WORDS
    jb send_fill
    mov rdi, rsp
    call urpc_send
    inc r12
    cmp r12, COUNT
    jb send_next
    xor edi, edi
    call exit

receive:
    xor r12d, r12d
receive_next:
    mov rdi, rsp
    lea rsi, [rsp + 32]
    call urpc_recv
    test r12, r12
    jnz receive_check
    call clock                        # the clock starts at the first message
    mov r13, rax
receive_check:
    xor ecx, ecx
receive_word:
    lea rax, [r12 + rcx]
    cmp qword ptr [rsp + 32 + rcx * 8], rax
    jne receive_wrong
    inc ecx
    cmp ecx, URPC_PAYLOAD_WORDS
    jb receive_word
    inc r12
    cmp r12, COUNT
    jb receive_next
    call clock
    sub rax, r13
    lea rdi, [rip + text_label]
    mov rsi, COUNT
    mov rdx, rax
    call report
    xor edi, edi
    call exit
receive_wrong:
    lea rdi, [rip + text_wrong]
    call print_cstr
    mov rdi, r12
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    mov edi, 1
    call exit

text_label:    .asciz "stream messages"
text_wrong:    .asciz "stream: wrong message at "
text_newline:  .asciz "\n"

.include "lib/urpc.S"
.include "lib/measure.S"
.include "lib/sprat.S"
