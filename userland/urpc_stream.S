# urpc_stream.S: one core sends COUNT messages back to back, the other
# receives them and checks every one.
#
# The sender (ROLE=0) fills all seven words of message i with i, i+1, ...
# i+6. The receiver (ROLE=1) checks each message it gets is the next one,
# whole: a lost, duplicated or torn message makes it print what it saw and
# exit with status 1. It measures the pipelined throughput with rdtsc from
# the arrival of message WARMUP (0: the first) to the last one's, and prints:
#     stream messages 1000 cycles 123456
# Both clock reads are taken as a message arrives, so the cycles are
# COUNT - 1 - WARMUP whole messages, each received and checked, and not the
# first message's check besides. The warm-up lets the stream settle first:
# while the sender is filling an empty ring, messages come faster than they
# can go on coming.
#
# Image arguments: role=0|1 channel=K count=N [warmup=W untimed messages]
#                  [delay=LOOPS before starting]

ROLE = 0
CHANNEL = 0
COUNT = 1000
WARMUP = 0
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
    xor r12d, r12d                    # r12 = message number
    mov rbx, COUNT
    dec rbx                           # rbx = the last message's number
    mov r15, WARMUP                   # r15 = the next message whose arrival is timed
    xor r13d, r13d                    # (none timed, warmup >= count: 0 cycles)
    xor r14d, r14d
receive_next:
    mov rdi, rsp
    lea rsi, [rsp + 32]
    call urpc_recv
    cmp r12, r15
    je receive_timed
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
    lea rdi, [rip + text_label]
    mov rsi, COUNT
    mov rdx, r14
    sub rdx, r13
    call report
    xor edi, edi
    call exit
receive_timed:
    call clock
    mov r14, rax                      # the clock stops at the last timed arrival,
    mov r15, rbx                      # the last message's,
    cmp r12, WARMUP
    jne receive_check
    mov r13, rax                      # and starts at message WARMUP's
    jmp receive_check
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
