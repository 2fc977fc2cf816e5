# libsprat: what every user program links with (include it at the end).
#
# System calls: number in rax, arguments in rdi, rsi, rdx; `syscall`;
# the result in rax (negative: -errno). A system call preserves every
# register but rax, rcx and r11. The routines below follow the System V
# convention: arguments rdi, rsi, rdx; result rax; rbx rbp r12-r15 kept.
#
# A program starts at its first byte with rdi = core id, rsi = number of
# cores, and a 16 KiB stack. Its image is read-only: keep data on the stack.

SYS_EXIT = 0
SYS_PRINT = 1
SYS_CORE_ID = 2

# exit(status): never returns.
exit:
    mov eax, SYS_EXIT
    syscall
exit_hang:
    jmp exit_hang

# print(buffer, length) -> 0 or -errno
print:
    mov eax, SYS_PRINT
    syscall
    ret

# core_id() -> the core this program runs on
core_id:
    mov eax, SYS_CORE_ID
    syscall
    ret

# print_cstr(string): print a NUL-terminated string.
print_cstr:
    mov rsi, rdi
print_cstr_length:
    cmp byte ptr [rsi], 0
    je print_cstr_go
    inc rsi
    jmp print_cstr_length
print_cstr_go:
    sub rsi, rdi
    jmp print

# print_u64(value): print an unsigned number in decimal.
print_u64:
    sub rsp, 40
    lea rsi, [rsp + 32]               # digits go right to left
    mov rax, rdi
    mov ecx, 10
print_u64_divide:
    xor edx, edx
    div rcx
    add dl, '0'
    dec rsi
    mov byte ptr [rsi], dl
    test rax, rax
    jnz print_u64_divide
    mov rdi, rsi
    lea rdx, [rsp + 32]
    sub rdx, rsi
    mov rsi, rdx
    call print
    add rsp, 40
    ret
