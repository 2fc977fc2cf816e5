# libsprat: what every user program links with (include it at the end).
#
# System calls: number in rax, arguments in rdi, rsi, rdx, r10; `syscall`;
# the result in rax (negative: -errno). A system call preserves every
# register but rax, rcx and r11 (and lmp_recv's results). The routines
# below follow the System V convention: arguments rdi, rsi, rdx, rcx;
# result rax; rbx rbp r12-r15 kept.
#
# A program runs in a dispatcher (cpudriver/dispatch.S). It starts at its
# first byte with rdi = core id, rsi = number of cores, rdx = its dispatcher
# number on that core, r8 = the argument its spawner gave (0 at boot), and
# a 12 KiB stack. Its image is read-only: keep data on the stack.

# The system call numbers (SYS_EXIT, SYS_PRINT, ...), the error numbers
# they return (EAGAIN, EPERM, ...), the capability constants (CAP_*,
# CAPTYPE_*, CAPRIGHT_*, CADDR_ROOT, SLOT_*) and the address-space constants
# (USER_BASE, USER_CHANNELS, ..., and the program's own PROGRAM_BASE, where
# it is linked, and USER_STACK_TOP) are given to every program by the loader,
# from cpudriver/layout.py, kernel/caps/ and kernel/capservice.py, so that
# they are written down once.

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

# yield(): let the next dispatcher on this core run.
yield:
    mov eax, SYS_YIELD
    syscall
    ret

# dispatcher_id() -> this dispatcher's number on its core
dispatcher_id:
    mov eax, SYS_DISPATCHER_ID
    syscall
    ret

# lmp_send(to, w0, w1, w2) -> 0 or -errno: three words to dispatcher `to`
# on this core. If it is not waiting for a message yet, yield and try again.
lmp_send:
    mov r10, rcx                      # the kernel takes the 4th argument in r10
lmp_send_again:
    mov eax, SYS_LMP_SEND
    syscall
    cmp rax, -EAGAIN
    jne lmp_send_done
    mov eax, SYS_YIELD
    syscall
    jmp lmp_send_again
lmp_send_done:
    ret

# lmp_call(to, w0, w1, w2) -> like lmp_recv: the answer. Send and wait for
# the reply in one system call (yield and retry until `to` is waiting).
lmp_call:
    mov r10, rcx
lmp_call_again:
    mov eax, SYS_LMP_CALL
    syscall
    cmp rax, -EAGAIN
    jne lmp_call_done
    mov eax, SYS_YIELD
    syscall
    jmp lmp_call_again
lmp_call_done:
    ret

# lmp_send_ep(endpoint, w0, w1, cap) -> 0 or -error: LMP through an EndPoint
# capability (root slot SLOT_PEERS + j names dispatcher j of this core),
# giving a copy of capability `cap` too (0: none; it arrives in the
# receiver's slot SLOT_RECEIVE and its lmp_recv sees rdx = 1).
lmp_send_ep:
    mov r10, rcx
lmp_send_ep_again:
    mov eax, SYS_LMP_SEND_EP
    syscall
    cmp rax, -EAGAIN
    jne lmp_send_ep_done
    mov eax, SYS_YIELD
    syscall
    jmp lmp_send_ep_again
lmp_send_ep_done:
    ret

# lmp_recv() -> rax = the sender's dispatcher number; rdi, rsi, rdx = the words
lmp_recv:
    mov eax, SYS_LMP_RECV
    syscall
    ret

# spawn(module, core, argument, channels) -> its dispatcher number (on
# this core), 0 (asked of another core), or -errno. `module` counts the
# image's module lines from 0; `argument` arrives in the new program's r8;
# `channels` = count << 32 | first hands the child those channel pages,
# which we must hold (-EPERM if not; 0: none).
spawn:
    mov r10, rcx
    mov eax, SYS_SPAWN
    syscall
    ret

# start_core(core) -> 0 or -errno: boot another core (INIT and STARTUP
# IPIs from this core's CPU driver). Only a monitor may (its image line says
# `monitor`; others get -EPERM); -EINVAL for no such core or our own, -EBUSY
# if it was started already.
start_core:
    mov eax, SYS_START_CORE
    syscall
    ret

# Capability invocations (docs/capabilities.md): each returns 0 (or what
# was asked) or -error. Capabilities are named by address: root slot k is
# CADDR_ROOT | k. System call SYS_INVOKE + operation, arguments as for any
# call (the 4th in r10), up to six.
cap_retype:                           # (src, offset, type, size_bits, count, dest)
    mov eax, SYS_INVOKE + CAP_RETYPE
    jmp cap_invoke
cap_copy:                             # (src, dest)
    mov eax, SYS_INVOKE + CAP_COPY
    jmp cap_invoke
cap_mint:                             # (src, dest, rights, badge)
    mov eax, SYS_INVOKE + CAP_MINT
    jmp cap_invoke
cap_delete:                           # (cap)
    mov eax, SYS_INVOKE + CAP_DELETE
    jmp cap_invoke
cap_revoke:                           # (cap)
    mov eax, SYS_INVOKE + CAP_REVOKE
    jmp cap_invoke
cap_identify:                         # (cap, field) -> the field's value
    mov eax, SYS_INVOKE + CAP_IDENTIFY
    jmp cap_invoke
cap_map:                              # (vnode, entry, src, rights, offset)
    mov eax, SYS_INVOKE + CAP_MAP
    jmp cap_invoke
cap_unmap:                            # (vnode, entry)
    mov eax, SYS_INVOKE + CAP_UNMAP
    jmp cap_invoke
cap_lock:                             # (cap): the monitors' two-phase commit
    mov eax, SYS_INVOKE + CAP_LOCK
    jmp cap_invoke
cap_unlock:                           # (cap, retyped_elsewhere)
    mov eax, SYS_INVOKE + CAP_UNLOCK
    jmp cap_invoke
cap_take:                             # (kernel, dispatcher, src, dest): monitors
    mov eax, SYS_INVOKE + CAP_TAKE
    jmp cap_invoke
cap_give:                             # (kernel, src, dispatcher, dest): monitors
    mov eax, SYS_INVOKE + CAP_GIVE
    jmp cap_invoke
cap_import:                           # (kernel, type, base, size_bits, rights, dest): monitors
    mov eax, SYS_INVOKE + CAP_IMPORT
cap_invoke:
    mov r10, rcx
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

# fail(message, value): print the message, the value (signed) and a
# newline, and exit with status 1. Never returns.
fail:
    push rsi
    call print_cstr
    pop rdi
    call print_i64
    lea rdi, [rip + fail_newline]
    call print_cstr
    mov edi, 1
    call exit
fail_newline: .asciz "\n"

# print_i64(value): print a signed number in decimal (an error: -16).
print_i64:
    test rdi, rdi
    jns print_u64
    push rdi
    lea rdi, [rip + print_i64_minus]
    mov esi, 1
    call print
    pop rdi
    neg rdi
    jmp print_u64
print_i64_minus: .ascii "-"
