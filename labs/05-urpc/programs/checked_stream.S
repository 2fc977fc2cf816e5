# checked_stream.S: lab 5's test program. One core sends COUNT messages,
# another receives them and checks every word.
#
# Word k of message i is (i + 1) * 0x10000 + k, in both halves of the word:
# every word says which message it belongs to and where in it, so a lost,
# repeated, torn or shifted message cannot pass for a good one, nor a word
# moved 4 bytes at a time (message 5, word 3 = 0x6000300060003).
#
# The sender (ROLE=0) waits SLOW rounds of a loop before each send: with
# slow=, the receiver is always waiting when a message comes, the case
# where the order of the sender's stores shows. The receiver (ROLE=1) waits
# PACE rounds after each message: with pace=, the sender keeps finding the
# ring full, the case where flow control shows. With poll=1 the receiver
# takes messages with urpc_poll in a loop of its own instead of urpc_recv.
#
# The receiver prints   checked messages N   when all were right, or
#     checked: message N word K is X (sent as Y)
# at the first wrong word (or the first register a routine did not keep,
# a routine that wrote past the 7 words at rsi, or an urpc_poll that took
# a message and said so with another rax than 1), and exits with status 1.
#
# Image arguments: role=0|1 channel=K count=N [slow=LOOPS] [pace=LOOPS] [poll=1]

ROLE = 0
CHANNEL = 0
COUNT = 40
SLOW = 0
PACE = 0
POLL = 0
WORD_STEP = 0x100000001               # the next word: one more in each half
GUARD = 0x6472617567              # "guard": the word after the 7 at rsi

start:
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
    mov rdi, SLOW
    call spin
    lea rsi, [rsp + 32]
    lea rax, [r12 + 1]
    shl rax, 16                       # word k of message i = (i + 1) * 0x10000 + k,
    mov rdx, rax
    shl rdx, 32
    or rax, rdx                       # in both halves
    mov rdx, WORD_STEP
    xor ecx, ecx
send_fill:
    mov qword ptr [rsi + rcx * 8], rax
    add rax, rdx
    inc ecx
    cmp ecx, URPC_PAYLOAD_WORDS
    jb send_fill
    mov rdi, rsp
    lea rax, [rip + urpc_send]
    lea rdx, [rip + name_send]
    call kept_call
    inc r12
    cmp r12, COUNT
    jb send_next
    xor edi, edi
    call exit

receive:
    xor r12d, r12d
receive_next:
    call take_one
    lea rdx, [r12 + 1]
    shl rdx, 16                       # what word 0 must be, in both halves
    mov rax, rdx
    shl rax, 32
    or rdx, rax
    mov rax, WORD_STEP
    xor ecx, ecx
receive_word:
    cmp qword ptr [rsp + 32 + rcx * 8], rdx
    jne receive_wrong
    add rdx, rax
    inc ecx
    cmp ecx, URPC_PAYLOAD_WORDS
    jb receive_word
    mov rdi, PACE
    call spin
    inc r12
    cmp r12, COUNT
    jb receive_next
    lea rdi, [rip + text_checked]
    call print_cstr
    mov rdi, COUNT
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    xor edi, edi
    call exit

receive_wrong:                        # rcx = word, rdx = what it should be
    mov r13, rcx
    mov r14, rdx
    lea rdi, [rip + text_wrong]
    call print_cstr
    mov rdi, r12
    call print_u64
    lea rdi, [rip + text_word]
    call print_cstr
    mov rdi, r13
    call print_u64
    lea rdi, [rip + text_is]
    call print_cstr
    mov rdi, qword ptr [rsp + 32 + r13 * 8]
    call print_hex
    lea rdi, [rip + text_sent]
    call print_cstr
    mov rdi, r14
    call print_hex
    lea rdi, [rip + text_close]
    call print_cstr
    mov edi, 1
    call exit

# take_one: the next message into [rsp+32] of our caller, by urpc_recv or
# (poll=1) by urpc_poll until it says there is one.
take_one:
    lea rdi, [rsp + 8]                # our caller's frame: skip the return address
    lea rsi, [rsp + 8 + 32]
    mov rax, POLL
    test rax, rax
    jnz take_one_poll
    lea rax, [rip + urpc_recv]
    lea rdx, [rip + name_recv]
    jmp kept_call
take_one_poll:
    lea rdi, [rsp + 8]
    lea rsi, [rsp + 8 + 32]
    lea rax, [rip + urpc_poll]
    lea rdx, [rip + name_poll]
    call kept_call
    test rax, rax
    jnz take_one_polled
    pause
    jmp take_one_poll
take_one_polled:                      # callers may compare with 1: all of rax says so
    cmp rax, 1
    jne take_one_not_one
take_one_done:
    ret
take_one_not_one:
    mov r13, rax
    lea rdi, [rip + text_poll_said]
    call print_cstr
    mov rdi, r13
    call print_hex
    lea rdi, [rip + text_poll_not_one]
    call print_cstr
    mov edi, 1
    call exit

# kept_call(rax = routine, rdx = its name, rdi, rsi = its arguments) -> its rax.
# Calls it with a marker value in every register it must keep (all but
# rax rcx rdx, and r8 for urpc_send) and checks that each still has it
# afterwards.
KEPT = 0x6b65707400000000             # "kept" in the high half; + 1, + 2 ... per register
kept_call:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdx                          # [rsp + 16]: the routine's name
    push rdi                          # [rsp + 8]
    push rsi                          # [rsp]
    mov rbx, KEPT + 1
    mov rbp, KEPT + 2
    mov r8, KEPT + 8
    mov r9, KEPT + 9
    mov r10, KEPT + 10
    mov r11, KEPT + 11
    mov r12, KEPT + 12
    mov r13, KEPT + 13
    mov r14, KEPT + 14
    mov r15, KEPT + 15
    mov rcx, GUARD
    mov qword ptr [rsi + 56], rcx
    call rax
    lea rcx, [rip + name_send]        # urpc_send may change r8, the others not
    cmp qword ptr [rsp + 16], rcx
    je kept_r8_free
    mov rcx, KEPT + 8
    cmp r8, rcx
    lea r8, [rip + name_r8]
    jne kept_broken
kept_r8_free:
    lea r8, [rip + name_rsi]
    cmp rsi, qword ptr [rsp]
    jne kept_broken
    lea r8, [rip + name_rdi]
    cmp rdi, qword ptr [rsp + 8]
    jne kept_broken
    mov rcx, GUARD
    cmp qword ptr [rsi + 56], rcx
    jne kept_overrun
    lea r8, [rip + name_rbx]
    mov rcx, KEPT + 1
    cmp rbx, rcx
    jne kept_broken
    lea r8, [rip + name_rbp]
    mov rcx, KEPT + 2
    cmp rbp, rcx
    jne kept_broken
    lea r8, [rip + name_r9]
    mov rcx, KEPT + 9
    cmp r9, rcx
    jne kept_broken
    lea r8, [rip + name_r10]
    mov rcx, KEPT + 10
    cmp r10, rcx
    jne kept_broken
    lea r8, [rip + name_r11]
    mov rcx, KEPT + 11
    cmp r11, rcx
    jne kept_broken
    lea r8, [rip + name_r12]
    mov rcx, KEPT + 12
    cmp r12, rcx
    jne kept_broken
    lea r8, [rip + name_r13]
    mov rcx, KEPT + 13
    cmp r13, rcx
    jne kept_broken
    lea r8, [rip + name_r14]
    mov rcx, KEPT + 14
    cmp r14, rcx
    jne kept_broken
    lea r8, [rip + name_r15]
    mov rcx, KEPT + 15
    cmp r15, rcx
    jne kept_broken
    add rsp, 24
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
kept_overrun:
    lea rdi, [rip + text_checked_colon]
    call print_cstr
    mov rdi, qword ptr [rsp + 16]
    call print_cstr
    lea rdi, [rip + text_overrun]
    call print_cstr
    mov edi, 1
    call exit
kept_broken:                          # r8 = the register's name
    lea rdi, [rip + text_checked_colon]
    call print_cstr
    mov rdi, qword ptr [rsp + 16]
    call print_cstr
    lea rdi, [rip + text_changed]
    call print_cstr
    mov rdi, r8
    call print_cstr
    lea rdi, [rip + text_must_keep]
    call print_cstr
    mov edi, 1
    call exit

# spin(rounds): burn time, a loop of `rounds` rounds (none for 0).
spin:
    test rdi, rdi
    jz spin_done
spin_round:
    dec rdi
    jnz spin_round
spin_done:
    ret

# print_hex(value): print a number as 0x and hex digits.
print_hex:
    sub rsp, 40
    mov rax, rdi
    lea rsi, [rsp + 32]               # digits from the right
    mov byte ptr [rsi], 0
print_hex_digit:
    dec rsi
    mov edx, eax
    and edx, 15
    lea rcx, [rip + hex_digits]
    mov dl, byte ptr [rcx + rdx]
    mov byte ptr [rsi], dl
    shr rax, 4
    jnz print_hex_digit
    dec rsi
    mov byte ptr [rsi], 'x'
    dec rsi
    mov byte ptr [rsi], '0'
    mov rdi, rsi
    call print_cstr
    add rsp, 40
    ret

hex_digits:    .ascii "0123456789abcdef"
text_checked:  .asciz "checked messages "
text_checked_colon: .asciz "checked: "
text_changed:  .asciz " changed "
text_must_keep: .asciz ", which it must keep\n"
text_overrun:  .asciz " wrote past the 7 words at rsi (rsi + 56), which it must not touch\n"
text_poll_said: .asciz "checked: urpc_poll took a message and returned rax = "
text_poll_not_one: .asciz ", not 1\n"
name_send:     .asciz "urpc_send"
name_recv:     .asciz "urpc_recv"
name_poll:     .asciz "urpc_poll"
name_rsi:      .asciz "rsi"
name_rdi:      .asciz "rdi"
name_rbx:      .asciz "rbx"
name_rbp:      .asciz "rbp"
name_r8:       .asciz "r8"
name_r9:       .asciz "r9"
name_r10:      .asciz "r10"
name_r11:      .asciz "r11"
name_r12:      .asciz "r12"
name_r13:      .asciz "r13"
name_r14:      .asciz "r14"
name_r15:      .asciz "r15"
text_wrong:    .asciz "checked: message "
text_word:     .asciz " word "
text_is:       .asciz " is "
text_sent:     .asciz " (sent as "
text_close:    .asciz ")\n"
text_newline:  .asciz "\n"

.include "../../../userland/lib/urpc.S"
.include "../../../userland/lib/sprat.S"
