# syscall.S: how user code asks the kernel for something.
#
# User code puts the call number in rax and arguments in rdi, rsi, rdx and
# executes `syscall`. The processor (emulator/traps.py) saves the user's
# rip in rcx and rflags in r11, masks interrupts and jumps here, still on
# the user's stack: the first job is to switch to this core's kernel stack,
# which is found through GS. The result comes back in rax (negative: an
# error); every register but rax, rcx and r11 is preserved.

ENOSYS = 38
EFAULT = 14
EINVAL = 22

syscall_entry:
    swapgs
    mov qword ptr gs:[PCV_SCRATCH], rax      # only rax has an absolute form
    mov rax, rsp
    mov qword ptr gs:[PCV_USER_RSP], rax
    mov rax, qword ptr gs:[PCV_KERNEL_RSP]
    mov rsp, rax
    mov rax, qword ptr gs:[PCV_SCRATCH]
    push rcx                          # user rip
    push r11                          # user rflags
    push rdi
    push rsi
    push rdx
    push r8
    push r9
    push r10
    cmp rax, N_SYSCALLS
    jae syscall_unknown
    lea r10, [rip + syscall_table]
    call qword ptr [r10 + rax * 8]
syscall_return:
    pop r10
    pop r9
    pop r8
    pop rdx
    pop rsi
    pop rdi
    pop r11
    pop rcx
    mov qword ptr gs:[PCV_SCRATCH], rax
    mov rax, qword ptr gs:[PCV_USER_RSP]
    mov rsp, rax
    mov rax, qword ptr gs:[PCV_SCRATCH]
    swapgs
    sysret
syscall_unknown:
    mov rax, -ENOSYS
    jmp syscall_return

syscall_table:
    .quad sys_exit                    # SYS_EXIT
    .quad sys_print                   # SYS_PRINT
    .quad sys_core_id                 # SYS_CORE_ID

# sys_exit(status): the program is finished.
sys_exit:
    test rdi, rdi
    jz program_finished
    push rdi
    lea rdi, [rip + str_exit_status]
    call print_str
    pop rdi
    call print_dec
    call print_newline
    jmp program_finished

# sys_core_id() -> the id of the core the caller runs on
sys_core_id:
    mov rax, qword ptr gs:[PCV_CORE_ID]
    ret

# sys_print(buffer, length) -> 0, or -EFAULT / -EINVAL
# The buffer must lie inside the user half; a page that is not mapped there
# faults inside user_access_begin..end and trap.S returns -EFAULT.
sys_print:
    cmp rsi, MAX_PRINT
    ja sys_print_invalid
    test rsi, rsi
    jz sys_print_done
    mov rax, USER_BASE
    cmp rdi, rax
    jb sys_print_bad_address
    mov rax, rdi
    add rax, rsi
    jc sys_print_bad_address
    mov rcx, USER_STACK_TOP
    cmp rax, rcx
    ja sys_print_bad_address
user_access_begin:
    movzx eax, byte ptr [rdi]
    out CONSOLE_PORT, al
    inc rdi
    dec rsi
    jnz user_access_begin
user_access_end:
sys_print_done:
    xor eax, eax
    ret
user_access_fault:
sys_print_bad_address:
    mov rax, -EFAULT
    ret
sys_print_invalid:
    mov rax, -EINVAL
    ret
