# console.S: printing on the debug console (port CONSOLE_PORT).
# The machine tags each line with the core that wrote it.

# print_char: in: dil = the character. clobbers: rax
print_char:
    mov eax, edi
    out CONSOLE_PORT, al
    ret

print_newline:
    mov edi, 10
    jmp print_char

# print_str: in: rdi = NUL-terminated string. clobbers: rax rdi
print_str:
    movzx eax, byte ptr [rdi]
    test al, al
    jz print_str_done
    out CONSOLE_PORT, al
    inc rdi
    jmp print_str
print_str_done:
    ret

# print_hex: "0x" then the value in hex, no leading zeros.
#   in: rdi = value. clobbers: rax rcx rdx rdi
print_hex:
    mov rdx, rdi
    mov al, '0'
    out CONSOLE_PORT, al
    mov al, 'x'
    out CONSOLE_PORT, al
    mov ecx, 60
print_hex_skip_zeros:                 # find the first non-zero digit
    test ecx, ecx
    jz print_hex_digit
    mov rax, rdx
    shr rax, cl
    test al, 0xF
    jnz print_hex_digit
    sub ecx, 4
    jmp print_hex_skip_zeros
print_hex_digit:
    mov rax, rdx
    shr rax, cl
    and eax, 0xF
    cmp eax, 10
    jb print_hex_decimal
    add eax, 'a' - 10 - '0'
print_hex_decimal:
    add eax, '0'
    out CONSOLE_PORT, al
    sub ecx, 4
    jns print_hex_digit
    ret

# print_dec: the value in decimal (signed).
#   in: rdi = value. clobbers: rax rcx rdx rdi rsi
print_dec:
    mov rax, rdi
    test rax, rax
    jns print_dec_positive
    push rax
    mov edi, '-'
    call print_char
    pop rax
    neg rax
print_dec_positive:
    sub rsp, 32
    lea rsi, [rsp + 31]               # digits are produced last-first
    mov ecx, 10
print_dec_divide:
    xor edx, edx
    div rcx
    add dl, '0'
    mov byte ptr [rsi], dl
    dec rsi
    test rax, rax
    jnz print_dec_divide
print_dec_emit:
    inc rsi
    lea rax, [rsp + 32]
    cmp rsi, rax
    jae print_dec_done
    mov al, byte ptr [rsi]
    out CONSOLE_PORT, al
    jmp print_dec_emit
print_dec_done:
    add rsp, 32
    ret
