# slices.S: a busy loop the timer must interrupt and resume, for lab 1.
#
# Two or more of these share a core, so the CPU driver's timer ends each
# time slice with an interrupt from ring 3 (vector 32, no error code), and
# the dispatcher resumes later through iretq. The loop keeps a value in
# every general register and a copy of each on its stack, and checks them
# all on every round: if an interrupt's frame was wrong, a register, the
# stack or the flags come back different, and the program exits with
# status 2. It exits 0 after ROUNDS rounds. RSP does not move in the loop,
# so every frame the timer pushes must carry the same user RSP.
#
# Image arguments: rounds=N

ROUNDS = 5000
N_WORDS = 13                          # rax rbx rcx rdx rsi rdi rbp r8-r11 r13 r14

start:
    mov r15, rdx                      # our dispatcher number: the values differ per program
    shl r15, 8
    lea rax, [r15 + 0x11]
    lea rbx, [r15 + 0x22]
    lea rcx, [r15 + 0x33]
    lea rdx, [r15 + 0x44]
    lea rsi, [r15 + 0x55]
    lea rdi, [r15 + 0x66]
    lea rbp, [r15 + 0x77]
    lea r8, [r15 + 0x88]
    lea r9, [r15 + 0x99]
    lea r10, [r15 + 0xAA]
    lea r11, [r15 + 0xBB]
    lea r13, [r15 + 0xCC]
    lea r14, [r15 + 0xDD]
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r13
    push r14
    mov r12, ROUNDS
spin:
    cmp r14, qword ptr [rsp]
    jne broken
    cmp r13, qword ptr [rsp + 8]
    jne broken
    cmp r11, qword ptr [rsp + 16]
    jne broken
    cmp r10, qword ptr [rsp + 24]
    jne broken
    cmp r9, qword ptr [rsp + 32]
    jne broken
    cmp r8, qword ptr [rsp + 40]
    jne broken
    cmp rbp, qword ptr [rsp + 48]
    jne broken
    cmp rdi, qword ptr [rsp + 56]
    jne broken
    cmp rsi, qword ptr [rsp + 64]
    jne broken
    cmp rdx, qword ptr [rsp + 72]
    jne broken
    cmp rcx, qword ptr [rsp + 80]
    jne broken
    cmp rbx, qword ptr [rsp + 88]
    jne broken
    cmp rax, qword ptr [rsp + 96]
    jne broken
    pushfq                            # interrupts must still be on
    pop r15
    test r15, 0x200
    jz broken
    dec r12
    jnz spin
spin_end:
    add rsp, 8 * N_WORDS
    xor edi, edi
    call exit
broken:
    add rsp, 8 * N_WORDS
    mov edi, 2
    call exit

.include "../../../userland/lib/sprat.S"
