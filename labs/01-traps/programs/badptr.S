# badptr.S: page faults inside the kernel, one after another, for lab 1.
#
# Each print of a buffer the program does not have makes the CPU driver
# fault in its user-copy loop (ring 0 to ring 0: no stack switch), and the
# fault handler turns that into -EFAULT. FAULTS of them in a row: the
# processor must deliver every one as a #PF (none may become a #DF). Exits
# 0, or 4 if a print did not return -EFAULT.
#
# Image arguments: faults=N

FAULTS = 50
EFAULT = 14

start:
    mov r12, FAULTS
again:
    mov rdi, USER_BASE + 0x100000     # nothing is mapped there
    mov esi, 8
    call print
    cmp rax, -EFAULT
    jne wrong
    dec r12
    jnz again
    xor edi, edi
    call exit
wrong:
    mov edi, 4
    call exit

.include "../../../userland/lib/sprat.S"
