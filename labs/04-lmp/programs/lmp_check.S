# lmp_check.S: dispatchers on one core that talk over LMP, for lab 4.
#
# One program, five roles (image argument role=N):
#   0 sender     sends COUNT messages to dispatcher PEER with SYS_LMP_SEND;
#                on -EAGAIN (PEER is not waiting yet) it yields and tries
#                again. Prints "sent N".
#   1 receiver   takes COUNT messages with SYS_LMP_RECV and checks each:
#                from PEER, in order, the three words as the sender made
#                them. Prints "received N".
#   2 bystander  computes ROUNDS rounds and never talks: it only shares
#                the core, so the timer must preempt it and resume it.
#                Prints "bystander rounds N".
#   3 client     COUNT remote calls to PEER with SYS_LMP_CALL; checks each
#                answer (from PEER, the sum of its three words, its number).
#                Prints "calls N".
#   4 server     answers COUNT calls, from whoever calls, with SYS_LMP_SEND.
#                Prints "answered N".
#   5 prober     sends where nothing may be delivered: to a dispatcher
#                number that does not exist (-EINVAL), to itself (a send
#                and a call) and to dispatcher PEER, which never receives
#                (-EAGAIN). Prints "probed N" (N sends to PEER).
#
# Word j (0, 1, 2) of message k from dispatcher d is
#   d << 56 | (j + 1) << 48 | k
# so the grader and the receiver know what each message must hold.
#
# Between messages every role but the bystander works for a while (PACE):
# message k is followed by (k * PACE) mod 4096 rounds of a loop, so over a
# run the timer ends time slices at many different points of the protocol.
# Each dispatcher keeps a different number of words on its stack and its
# own values in rbx, rbp, r8, r9, r12-r14: a register or stack pointer
# that comes back from the kernel wrong is a register that changed.
# A receiver or client that finds a message wrong counts it and goes on;
# at its end it prints "lmp_check: messages wrong (sender or words): N"
# and which was the first, and exits with 1. A system call that returns what
# it must not ends the program at once (status 1).
#
# Image arguments: role=N peer=N count=N pace=N rounds=N absent=N

ROLE = 0
PEER = 1
COUNT = 20
PACE = 0
ROUNDS = 400000
NO_SUCH_DISPATCHER = 9                # more than a core ever has (MAX_DISPATCHERS, layout.py)
ABSENT = 9                            # the first number no dispatcher has on this core

start:
    mov r15, rdx                      # r15 = our dispatcher number, all along
    lea rcx, [rdx + 1]                # (r15 + 1) * 3 words on the stack
    imul rcx, rcx, 3
start_push:
    push rcx
    dec rcx
    jnz start_push
    mov rax, r15
    shl rax, 8
    lea rbx, [rax + 0xB1]             # values of our own in the kept registers
    lea rbp, [rax + 0xB2]
    lea r8, [rax + 0x81]
    lea r9, [rax + 0x91]
    lea r13, [rax + 0xD1]
    lea r14, [rax + 0xE1]
    xor r12d, r12d                    # r12 = k, the message number
    mov rax, ROLE
    cmp rax, 1
    je receiver
    cmp rax, 2
    je bystander
    cmp rax, 3
    je client
    cmp rax, 4
    je server
    cmp rax, 5
    je prober

# --- 0: sender -------------------------------------------------------------------
sender:
    mov rdi, r15
    call words                        # rsi rdx r10 = message r12's words
    mov rdi, PEER
sender_again:
    mov eax, SYS_LMP_SEND
    syscall
    test rax, rax
    jz sender_sent
    cmp rax, -EAGAIN
    jne wrong_result
    mov eax, SYS_YIELD                # not waiting yet: let it run
    syscall
    jmp sender_again
sender_sent:
    call pace
    inc r12
    cmp r12, COUNT
    jb sender
    lea rdi, [rip + text_sent]
    jmp finish

# --- 1: receiver -----------------------------------------------------------------
receiver:
    mov eax, SYS_LMP_RECV
    syscall
    cmp rax, PEER
    jne receiver_wrong
    push rdi
    push rsi
    push rdx
    mov rdi, PEER
    call words
    cmp r10, qword ptr [rsp]
    jne receiver_wrong_words
    cmp rdx, qword ptr [rsp + 8]
    jne receiver_wrong_words
    cmp rsi, qword ptr [rsp + 16]
    jne receiver_wrong_words
    add rsp, 24
    jmp receiver_next
receiver_wrong_words:
    add rsp, 24
receiver_wrong:
    call count_wrong
receiver_next:
    call pace
    inc r12
    cmp r12, COUNT
    jb receiver
    lea rdi, [rip + text_received]
    jmp finish

# --- 2: bystander ----------------------------------------------------------------
bystander:
    mov r12, ROUNDS
    mov r10, r15
bystander_round:
    lea rax, [r10 + r12]              # some work with every register
    imul rax, rax, 3
    mov rcx, rax
    xor rcx, r12
    mov rdx, rcx
    add rdx, rax
    mov rsi, rdx
    mov rdi, rsi
    dec r12
    jnz bystander_round
    mov r12, ROUNDS
    lea rdi, [rip + text_bystander]
    jmp finish

# --- 3: client -------------------------------------------------------------------
client:
    mov rdi, r15
    call words
    mov rdi, PEER
client_again:
    mov eax, SYS_LMP_CALL
    syscall
    cmp rax, -EAGAIN
    jne client_answered
    mov eax, SYS_YIELD
    syscall
    jmp client_again
client_answered:
    cmp rax, PEER
    jne client_wrong
    cmp rsi, r12                      # the answer: sum of our words, our k, 0
    jne client_wrong
    test rdx, rdx
    jnz client_wrong
    push rdi
    mov rdi, r15
    call words
    add rsi, rdx
    add rsi, r10
    pop rdi
    cmp rdi, rsi
    je client_next
client_wrong:
    call count_wrong
client_next:
    call pace
    inc r12
    cmp r12, COUNT
    jb client
    lea rdi, [rip + text_calls]
    jmp finish

# --- 4: server -------------------------------------------------------------------
server:
    mov eax, SYS_LMP_RECV
    syscall
    test rax, rax
    js wrong_result
    lea rcx, [rdi + rsi]              # the answer: w0 + w1 + w2, the caller's k, 0
    add rcx, rdx
    mov rdx, rdi
    and edx, 0xFFFF
    mov rdi, rax                      # to the caller
    mov rsi, rcx
    xor r10d, r10d
server_again:
    mov eax, SYS_LMP_SEND
    syscall
    test rax, rax
    jz server_answered
    cmp rax, -EAGAIN
    jne wrong_result
    mov eax, SYS_YIELD
    syscall
    jmp server_again
server_answered:
    call pace
    inc r12
    cmp r12, COUNT
    jb server
    lea rdi, [rip + text_answered]
    jmp finish

# --- 5: prober -------------------------------------------------------------------
prober:
    mov rdi, r15
    call words
    mov rdi, NO_SUCH_DISPATCHER
    mov eax, SYS_LMP_SEND
    syscall
    cmp rax, -EINVAL
    jne wrong_result
    mov rdi, ABSENT                   # one past the last: an off-by-one bound takes it
    mov eax, SYS_LMP_SEND
    syscall
    cmp rax, -EINVAL
    jne wrong_result
    mov rdi, -1                       # negative: a signed bound takes it
    mov eax, SYS_LMP_SEND
    syscall
    cmp rax, -EINVAL
    jne wrong_result
    mov rdi, r15                      # ourselves: running, so not waiting
    mov eax, SYS_LMP_SEND
    syscall
    cmp rax, -EAGAIN
    jne wrong_result
    mov rdi, r15                      # a call to ourselves: refused as the send is,
    mov eax, SYS_LMP_CALL             # though a call that marks its caller waiting
    syscall                           # before it sends finds us waiting
    cmp rax, -EAGAIN
    jne wrong_result
    mov rdi, 0x100000000 + PEER       # no such dispatcher, though its low 32 bits
    mov eax, SYS_LMP_SEND             # name one: a bound checked in 32 bits takes it
    syscall
    cmp rax, -EINVAL
    jne wrong_result
    mov r12, COUNT
prober_peer:
    mov rdi, PEER                     # it computes and never receives
    mov eax, SYS_LMP_SEND
    syscall
    cmp rax, -EAGAIN
    jne wrong_result
    call pace
    mov eax, SYS_YIELD
    syscall
    dec r12
    jnz prober_peer
    mov r12, COUNT
    lea rdi, [rip + text_probed]
    jmp finish

# --- helpers ---------------------------------------------------------------------

# words: message r12's three words from dispatcher rdi.
#   out: rsi rdx r10.  clobbers: rcx
words:
    mov rsi, rdi
    shl rsi, 56
    or rsi, r12
    mov rcx, 1
    shl rcx, 48
    add rsi, rcx                      # word 0: (0 + 1) << 48
    lea rdx, [rsi + rcx]              # word 1: 2 << 48
    lea r10, [rdx + rcx]              # word 2: 3 << 48 (no two alike: a swap shows)
    ret

# pace: (r12 * PACE) mod 4096 rounds of nothing.  clobbers: rax rcx
pace:
    imul rax, r12, PACE
    and eax, 4095
    mov rcx, rax
    test rcx, rcx
    jz pace_done
pace_round:
    dec rcx
    jnz pace_round
pace_done:
    ret

# count_wrong: one more wrong message (message r12). The count lives in
# r13's upper half, the first wrong message's number in r14's (both
# registers keep their own values below: the kernel must give them back).
#   clobbers: rax
count_wrong:
    mov rax, 1
    shl rax, 32
    add r13, rax
    mov rax, r13
    shr rax, 32
    cmp rax, 1
    jne count_wrong_done
    mov rax, r12
    shl rax, 32
    or r14, rax
count_wrong_done:
    ret

# finish: say the line at rdi with our count, then exit: 0, or 1 after
# saying how many messages were wrong and which was the first.
finish:
    mov rsi, r12
    call say
    mov rsi, r13
    shr rsi, 32
    test rsi, rsi
    jnz finish_wrong
    xor edi, edi
    call exit
finish_wrong:
    lea rdi, [rip + text_wrong]
    call say
    lea rdi, [rip + text_first]
    mov rsi, r14
    shr rsi, 32
    call say
    mov edi, 1
    call exit

wrong_result:
    lea rdi, [rip + text_wrong_result]
    mov rsi, r12
    call say
    mov edi, 1
    call exit

# say(text, n): print "TEXT N" and a newline in one system call, so that
# no other dispatcher's output lands inside the line (a time slice may end
# between two calls).
#   in: rdi = a NUL-terminated text (at most 100 bytes), rsi = n
#   clobbers: rax rcx rdx rsi rdi r8 r10 r11
say:
    sub rsp, 128                      # the line is built at rsp, digits at the top
    mov r8, rsp                       # r8 = where the next byte goes
say_text:
    mov al, byte ptr [rdi]
    test al, al
    jz say_number
    mov byte ptr [r8], al
    inc rdi
    inc r8
    jmp say_text
say_number:
    lea rcx, [rsp + 127]              # digits, last first, down from rsp + 127
    mov rax, rsi
    mov r10, 10
say_digit:
    xor edx, edx
    div r10
    add dl, 0x30
    mov byte ptr [rcx], dl
    dec rcx
    test rax, rax
    jnz say_digit
    lea r10, [rsp + 127]
say_digit_copy:
    inc rcx
    mov al, byte ptr [rcx]
    mov byte ptr [r8], al
    inc r8
    cmp rcx, r10
    jb say_digit_copy
    mov byte ptr [r8], 10
    inc r8
    mov rdi, rsp
    mov rsi, r8
    sub rsi, rsp
    mov eax, SYS_PRINT
    syscall
    add rsp, 128
    ret

text_sent:         .asciz "sent "
text_received:     .asciz "received "
text_bystander:    .asciz "bystander rounds "
text_calls:        .asciz "calls "
text_answered:     .asciz "answered "
text_probed:       .asciz "probed "
text_wrong_result: .asciz "lmp_check: a system call returned what it must not, at message "
text_wrong:        .asciz "lmp_check: messages wrong (sender or words): "
text_first:        .asciz "lmp_check: the first wrong one was message "

.include "../../../userland/lib/sprat.S"
