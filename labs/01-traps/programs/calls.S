# calls.S: system calls that must come back as they went, for lab 1.
#
# CALLS null system calls (SYS_CORE_ID) with a value in every register a
# system call keeps (all but rax, rcx and r11) and a copy of each on the
# stack; after each, checks them, checks that interrupts are on again and
# that RSP is where it was. Exits 0, or 3 if something came back wrong.
#
# Image arguments: calls=N

CALLS = 20

start:
    mov rbx, 0x1111
    mov rdx, 0x2222
    mov rsi, 0x3333
    mov rdi, 0x4444
    mov rbp, 0x5555
    mov r8, 0x6666
    mov r9, 0x7777
    mov r10, 0x8888
    mov r13, 0x9999
    mov r14, 0xAAAA
    mov r12, CALLS
    mov r15, rsp                      # where RSP must be after each call
again:
    mov eax, SYS_CORE_ID
    syscall
after_syscall:
    cmp rsp, r15
    jne wrong
    cmp rbx, 0x1111
    jne wrong
    cmp rdx, 0x2222
    jne wrong
    cmp rsi, 0x3333
    jne wrong
    cmp rdi, 0x4444
    jne wrong
    cmp rbp, 0x5555
    jne wrong
    cmp r8, 0x6666
    jne wrong
    cmp r9, 0x7777
    jne wrong
    cmp r10, 0x8888
    jne wrong
    cmp r13, 0x9999
    jne wrong
    cmp r14, 0xAAAA
    jne wrong
    pushfq
    pop rax
    test rax, 0x200                   # IF: sysret restored our RFLAGS
    jz wrong
    dec r12
    jnz again
    xor edi, edi
    call exit
wrong:
    mov edi, 3
    call exit

.include "../../../userland/lib/sprat.S"
