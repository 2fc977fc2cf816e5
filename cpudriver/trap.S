# trap.S: the common trap path.
#
# Every interrupt and exception enters through a stub in vectors.S, which
# pushes an error code (0 where the processor pushes none) and the vector
# number, then jumps here; syscall_entry (syscall.S) builds the same frame
# with vector SYSCALL_VECTOR. The stack then holds a trap frame:
#
#   frame + 0   r15 r14 r13 r12 r11 r10 r9 r8 rbp rdi rsi rdx rcx rbx rax
#   frame + 120 vector
#   frame + 128 error code
#   frame + 136 rip, cs, rflags, rsp, ss      (pushed by the processor)
#
# trap_dispatch decides by cause: a system call goes to its handler; the
# timer ends a time slice; a fault in user mode is reported and kills the
# dispatcher (not the core, not the machine); a page fault in the kernel's
# user-copy loop returns an error to the system call; any other kernel
# fault is a panic. Before going back to user mode it switches dispatchers
# if something asked for it (dispatch.S). Everything leaves through
# trap_return: by `sysret` if the frame is a system call's, else `iretq`.

TF_R10 = 40
TF_R9 = 48
TF_R8 = 56
TF_RDI = 72
TF_RSI = 80
TF_RDX = 88
TF_RAX = 112
TF_VECTOR = 120
TF_ERROR = 128
TF_RIP = 136
TF_CS = 144
TF_RFLAGS = 152
TF_RSP = 160
TF_SS = 168

trap_common:
    test qword ptr [rsp + 24], 3      # cs of the interrupted code
    jz trap_save
    swapgs                            # from user: GS becomes the per-core block
trap_save:
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
    push r12
    push r13
    push r14
    push r15
    cld
    mov rdi, rsp
    call trap_dispatch
trap_return:
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    cmp qword ptr [rsp], SYSCALL_VECTOR
    je syscall_return
    add rsp, 16                       # vector and error code
    test qword ptr [rsp + 8], 3
    jz trap_return_to_kernel
    swapgs
trap_return_to_kernel:
    iretq

# syscall_return: the way back for a dispatcher that entered by `syscall`
# (its frame says so): `sysret`, the cheap inverse of `syscall`. It takes
# the user's rip from rcx and rflags from r11 (so those two are lost, as
# the system call convention says) and leaves rsp to us: load it last,
# with interrupts still masked.
syscall_return:
    mov rcx, qword ptr [rsp + 16]     # rip (past vector and error code)
    mov r11, qword ptr [rsp + 32]     # rflags
    mov rsp, qword ptr [rsp + 40]     # the user's stack
    swapgs
    sysret

# trap_dispatch: handle one trap.
#   in: rdi = trap frame
trap_dispatch:
    push rbx
    mov rbx, rdi
    mov rax, qword ptr [rbx + TF_VECTOR]
    cmp rax, SYSCALL_VECTOR
    je trap_syscall
    cmp rax, 32
    jae trap_interrupt
    test qword ptr [rbx + TF_CS], 3
    jnz trap_user_fault
    cmp rax, 14
    jne trap_kernel_panic
    # a page fault inside the user-copy loop: the user passed a bad pointer
    mov rax, qword ptr [rbx + TF_RIP]
    lea rcx, [rip + user_access_begin]
    cmp rax, rcx
    jb trap_kernel_panic
    lea rcx, [rip + user_access_end]
    cmp rax, rcx
    jae trap_kernel_panic
    lea rax, [rip + user_access_fault]
    mov qword ptr [rbx + TF_RIP], rax
    pop rbx
    ret

trap_syscall:
    mov rdi, rbx
    call syscall_dispatch
    jmp trap_done

trap_interrupt:
    mov rcx, APIC_BASE
    mov dword ptr [rcx + 0xB0], 0     # end of interrupt
    cmp rax, INBOX_VECTOR
    je trap_inbox
    cmp rax, TIMER_VECTOR
    jne trap_done
    call request_reschedule           # the time slice is over
    jmp trap_done
trap_inbox:
    call take_requests                # another core asked for something
    jmp trap_done

# Back to user mode, through another dispatcher if one should run now.
trap_done:
    test qword ptr [rbx + TF_CS], 3
    jz trap_done_return
    mov rax, qword ptr gs:[PCV_RESCHEDULE]
    test rax, rax
    jz trap_done_return
    mov rdi, rbx
    call schedule
trap_done_return:
    pop rbx
    ret

# A user program faulted: say what and where; that dispatcher is gone.
trap_user_fault:
    lea rdi, [rip + str_user_fault]
    call print_str
    mov rdi, rbx
    call print_fault
    lea rdi, [rip + str_killed]
    call print_str
    call count_failed_program
    call exit_current_dispatcher
    jmp trap_done

# The kernel itself faulted: nothing sensible is left to do on this core.
trap_kernel_panic:
    lea rdi, [rip + str_kernel_panic]
    call print_str
    mov rdi, rbx
    call print_fault
    call print_newline
    mov al, 1
    out POWER_PORT, al
trap_kernel_panic_hang:
    jmp trap_kernel_panic_hang

# print_fault: "<name> at rip X [address Y] error Z"
#   in: rdi = trap frame
print_fault:
    push rbx
    mov rbx, rdi
    mov rax, qword ptr [rbx + TF_VECTOR]
    lea rcx, [rip + exception_names]
    mov rdi, qword ptr [rcx + rax * 8]
    call print_str
    lea rdi, [rip + str_at_rip]
    call print_str
    mov rdi, qword ptr [rbx + TF_RIP]
    call print_hex
    cmp qword ptr [rbx + TF_VECTOR], 14
    jne print_fault_error
    lea rdi, [rip + str_address]
    call print_str
    mov rdi, cr2
    call print_hex
print_fault_error:
    lea rdi, [rip + str_error]
    call print_str
    mov rdi, qword ptr [rbx + TF_ERROR]
    call print_hex
    pop rbx
    ret
