# hello.S: the smallest sprat program. Every core says who it is.
#
#   [core 2] hello from core 2 of 4
#
# in: rdi = core id, rsi = number of cores (see lib/sprat.S)

start:
    mov r12, rdi                      # keep the arguments across calls
    mov r13, rsi
    lea rdi, [rip + greeting]
    call print_cstr
    mov rdi, r12
    call print_u64
    lea rdi, [rip + of]
    call print_cstr
    mov rdi, r13
    call print_u64
    lea rdi, [rip + newline]
    call print_cstr
    xor edi, edi
    call exit

greeting: .asciz "hello from core "
of:       .asciz " of "
newline:  .asciz "\n"

.include "lib/sprat.S"
