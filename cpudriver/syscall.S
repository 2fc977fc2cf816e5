# syscall.S: how user code asks the kernel for something.
#
# User code puts the call number in rax and arguments in rdi, rsi, rdx, r10
# and executes `syscall`. The processor (emulator/traps.py) saves the user's
# rip in rcx and rflags in r11, masks interrupts and jumps here, still on
# the user's stack: the first job is to switch to this core's kernel stack,
# found through GS, and to lay out the same trap frame an interrupt would
# (trap.S), so that every way back to user mode, and every switch between
# dispatchers, is the same. The result comes back in rax (negative: an
# error); every register but rax, rcx and r11 is preserved.
#
# Calls (userland/lib/sprat.S has the stubs):
#   SYS_EXIT(status)                 this dispatcher is finished
#   SYS_PRINT(buffer, length)        write to the console
#   SYS_CORE_ID()                    -> the core's number
#   SYS_YIELD()                      let the next dispatcher on this core run
#   SYS_DISPATCHER_ID()              -> this dispatcher's number on its core
#   SYS_LMP_SEND(to, w0, w1, w2)     an LMP message to dispatcher `to` on this
#                                    core, which runs next; -EAGAIN if it is
#                                    not waiting in SYS_LMP_RECV
#   SYS_LMP_RECV()                   wait for an LMP message: rax = the sender,
#                                    rdi, rsi, rdx = its three words
#   SYS_LMP_CALL(to, w0, w1, w2)     send, then wait for the answer, in one
#                                    call (an RPC: the reply comes as from
#                                    SYS_LMP_RECV)
#   SYS_INVOKE + op (a .. f)         capability invocation `op` with up to
#                                    six arguments (kernel/caps/invoke.py),
#                                    served in Python through the hypercall
#                                    port; -error if refused
#   SYS_CHANNEL_UNMAP(page)          remove channel page `page` from the
#                                    caller's window, WITHOUT flushing
#                                    the TLB (a stale entry may live on)
#   SYS_CHANNEL_MAP(page)            put it back (read-write): only if the
#                                    caller holds the page's capability
#                                    (-EPERM; kernel/channels.py)
#   SYS_INVLPG(page)                 forget the TLB entry for that page
#                                    (these three serve the TLB shootdown
#                                    study; a monitor's window is the
#                                    core's page tables, which map every
#                                    channel, a program's is its own)
#   SYS_LMP_SEND_EP(ep, w0, w1, cap) LMP through an EndPoint capability, and
#                                    optionally a capability along (copied
#                                    into the receiver's slot 255): the
#                                    receiver gets rdi rsi = w0 w1, rdx = 1
#                                    if a capability came
#   SYS_SPAWN(module, core, arg, channels)
#                                    start boot module `module` in a new
#                                    dispatcher on `core` (which gets `arg`
#                                    in r8), handing it `channels` (count
#                                    << 32 | first page, 0: none), which
#                                    the caller must hold (-EPERM): here ->
#                                    its number; on another core -> 0,
#                                    asked of that core's CPU driver
#                                    through its inbox (inbox.S)
#   SYS_START_CORE(core)             boot another core (INIT and STARTUP
#                                    IPIs, boot.S start_core): only a
#                                    monitor may (-EPERM); -EINVAL for no
#                                    such core or the caller's own; -EBUSY
#                                    if it was started already
#   SYS_CHANNEL_GRANT(d, first, n)   give dispatcher d of this core the
#                                    channel pages first .. first+n-1, and
#                                    map them: only a monitor may (-EPERM)
#
# The error numbers (EINVAL, ...) come from cpudriver/layout.py, like the
# call numbers, so that user programs get the same ones.

syscall_entry:
    swapgs
    mov qword ptr gs:[PCV_SCRATCH], rax      # only rax has an absolute gs: form
    mov rax, rsp
    mov qword ptr gs:[PCV_USER_RSP], rax
    mov rax, qword ptr gs:[PCV_KERNEL_RSP]
    mov rsp, rax
    mov rax, qword ptr gs:[PCV_SCRATCH]
    # what an interrupt from ring 3 would have pushed ...
    push USER_SS
    push rax                          # (a slot for the user's rsp)
    mov rax, qword ptr gs:[PCV_USER_RSP]
    xchg qword ptr [rsp], rax
    push r11                          # user rflags
    push USER_CS
    push rcx                          # user rip
    # ... and what a vector stub would have
    push 0
    push SYSCALL_VECTOR
    jmp trap_save

# syscall_dispatch: run the handler for frame.rax; its result goes to frame.rax.
#   in: rdi = trap frame
syscall_dispatch:
    push rbx
    mov rbx, rdi
    mov rax, qword ptr [rbx + TF_RAX]
    cmp rax, SYS_INVOKE
    jae syscall_invoke
    cmp rax, N_SYSCALLS
    jae syscall_unknown
    lea r8, [rip + syscall_table]
    mov r8, qword ptr [r8 + rax * 8]
    mov rdi, qword ptr [rbx + TF_RDI]
    mov rsi, qword ptr [rbx + TF_RSI]
    mov rdx, qword ptr [rbx + TF_RDX]
    mov rcx, qword ptr [rbx + TF_R10]
    call r8
syscall_result:
    mov qword ptr [rbx + TF_RAX], rax
    pop rbx
    ret
syscall_unknown:
    mov rax, -ENOSYS
    jmp syscall_result
syscall_invoke:
    cmp rax, SYS_INVOKE + MAX_INVOCATION
    ja syscall_unknown
    call sys_invoke
    jmp syscall_result

syscall_table:
    .quad sys_exit                    # SYS_EXIT
    .quad sys_print                   # SYS_PRINT
    .quad sys_core_id                 # SYS_CORE_ID
    .quad sys_yield                   # SYS_YIELD
    .quad sys_dispatcher_id           # SYS_DISPATCHER_ID
    .quad sys_lmp_send                # SYS_LMP_SEND
    .quad sys_lmp_recv                # SYS_LMP_RECV
    .quad sys_lmp_call                # SYS_LMP_CALL
    .quad sys_spawn                   # SYS_SPAWN
    .quad sys_unknown                 # 9: unused
    .quad sys_channel_unmap           # SYS_CHANNEL_UNMAP
    .quad sys_channel_map             # SYS_CHANNEL_MAP
    .quad sys_invlpg                  # SYS_INVLPG
    .quad sys_lmp_send_ep             # SYS_LMP_SEND_EP
    .quad sys_start_core              # SYS_START_CORE
    .quad sys_channel_grant           # SYS_CHANNEL_GRANT

# sys_exit(status): this dispatcher is finished (a word if it failed).
sys_exit:
    test rdi, rdi
    jz exit_current_dispatcher
    call count_failed_program
    push rdi
    lea rdi, [rip + str_exit_status]
    call print_str
    pop rdi
    call print_dec
    call print_newline
    jmp exit_current_dispatcher

# exit_current_dispatcher: it will never run again; switch away.
exit_current_dispatcher:
    mov rax, qword ptr gs:[PCV_CURRENT]
    mov qword ptr [rax + DCB_STATE], DISPATCHER_EXITED
    call request_reschedule
    xor eax, eax
    ret

# count_failed_program: one more program failed on this core (PCV_FAILED),
# which the boot loader reads when the run is over (kernel/boot.py).
#   clobbers: nothing
count_failed_program:
    push rax
    mov rax, qword ptr gs:[PCV_SELF]
    inc qword ptr [rax + PCV_FAILED]
    pop rax
    ret

# sys_core_id() -> the id of the core the caller runs on
sys_core_id:
    mov rax, qword ptr gs:[PCV_CORE_ID]
    ret

# sys_dispatcher_id() -> the caller's index among this core's dispatchers
sys_dispatcher_id:
    jmp current_index

# sys_yield(): give the core to the next runnable dispatcher (if any).
sys_yield:
    call request_reschedule
    xor eax, eax
    ret

# sys_invoke: capability invocation frame.rax - SYS_INVOKE, its arguments
# in the caller's rdi rsi rdx r10 r8 r9. The rules live in Python
# (kernel/caps/), reached through the hypercall port: rax = the operation,
# the six arguments in the same registers. If the operation changed this
# dispatcher's page tables, rdx comes back saying what the TLB must forget:
# 0 nothing, -1 everything (reload CR3), else the one virtual page to invlpg.
#   in: rbx = the trap frame (syscall_dispatch's)
sys_invoke:
    mov rax, qword ptr [rbx + TF_RAX]
    sub rax, SYS_INVOKE
    mov rdi, qword ptr [rbx + TF_RDI]
    mov rsi, qword ptr [rbx + TF_RSI]
    mov rdx, qword ptr [rbx + TF_RDX]
    mov r10, qword ptr [rbx + TF_R10]
    mov r8, qword ptr [rbx + TF_R8]
    mov r9, qword ptr [rbx + TF_R9]
    out HYPERCALL_PORT, al
# LAB vm BEGIN flush
    test rdx, rdx
    jz sys_invoke_done
    cmp rdx, -1
    je sys_invoke_flush_all
    invlpg [rdx]
    ret
sys_invoke_flush_all:
    mov rcx, cr3                      # a CR3 load forgets every user entry
    mov cr3, rcx
# LAB vm END flush
sys_invoke_done:
    ret

# sys_unknown: a system call number nobody has.
sys_unknown:
    mov rax, -ENOSYS
    ret

# caller_is_monitor -> ZF clear if the running dispatcher is its core's
# monitor (DCB_FLAG_MONITOR), set if not.  clobbers: rax
caller_is_monitor:
    mov rax, qword ptr gs:[PCV_CURRENT]
    test qword ptr [rax + DCB_FLAGS], DCB_FLAG_MONITOR
    ret

# channel_pte: the address of channel page rdi's entry in the core's page
# tables (a monitor's window), or 0 if there is no such user channel page.
#   out: rax
channel_pte:
    xor eax, eax
    cmp rdi, N_USER_CHANNELS
    jae channel_pte_done
    mov rax, qword ptr gs:[PCV_SELF]
    lea rax, [rax + PC_PT_CHANNELS + rdi * 8]
channel_pte_done:
    ret

# sys_channel_unmap(page) -> 0 or -EINVAL. The TLB is left alone on purpose:
# until sys_invlpg, this core may still reach the page through a stale entry.
# A program's window is the capability system's (kernel/channels.py).
sys_channel_unmap:
    call caller_is_monitor
    jnz sys_channel_unmap_core
    mov rax, HYPERCALL_CHANNEL_UNMAP
    out HYPERCALL_PORT, al
    ret
sys_channel_unmap_core:
    call channel_pte
    test rax, rax
    jz sys_channel_invalid
    mov qword ptr [rax], 0
    xor eax, eax
    ret

# sys_channel_map(page) -> 0 or -EINVAL / -EPERM: map it again, read-write,
# no-execute. A monitor holds every channel; a program, the ones it was
# given (kernel/channels.py checks its capabilities and writes the entry).
sys_channel_map:
    call caller_is_monitor
    jnz sys_channel_map_core
    mov rax, HYPERCALL_CHANNEL_MAP
    out HYPERCALL_PORT, al
    ret
sys_channel_map_core:
    call channel_pte
    test rax, rax
    jz sys_channel_invalid
    mov rcx, rdi
    shl rcx, 12
    add rcx, CHANNELS_PHYS
    or rcx, PTE_P | PTE_W | PTE_U
    bts rcx, 63
    mov qword ptr [rax], rcx
    xor eax, eax
    ret

# sys_channel_grant(dispatcher, first, count) -> 0 or -EPERM / -EINVAL /
# -ENOMEM: a monitor gives a program of its core channel pages (a bind).
sys_channel_grant:
    call caller_is_monitor
    jz sys_channel_refused
    mov rax, HYPERCALL_CHANNEL_GRANT
    out HYPERCALL_PORT, al
    ret
sys_channel_refused:
    mov rax, -EPERM
    ret

# sys_invlpg(page) -> 0 or -EINVAL: drop this core's TLB entry for the page.
sys_invlpg:
    cmp rdi, N_USER_CHANNELS
    jae sys_channel_invalid
    shl rdi, 12
    mov rax, USER_CHANNELS
    add rdi, rax
    invlpg [rdi]
    xor eax, eax
    ret
sys_channel_invalid:
    mov rax, -EINVAL
    ret

# sys_spawn(module, core, argument, channels) -> dispatcher number, 0, or
# -errno (-EAGAIN: that core's inbox is full; try again later; -EPERM: the
# caller does not hold every channel it hands over)
sys_spawn:
    mov rax, qword ptr gs:[PCV_N_CORES]
    cmp rsi, rax
    jae sys_spawn_invalid
    mov rax, BOOT_INFO
    cmp rdi, qword ptr [rax + BI_N_MODULES]
    jae sys_spawn_invalid
    test rcx, rcx
    jz sys_spawn_held
    push rdi                          # only channels we hold go to the child
    push rsi
    push rdx
    push rcx
    mov edi, ecx                      # (first, count)
    mov rsi, rcx
    shr rsi, 32
    mov rax, HYPERCALL_CHANNEL_HOLDS
    out HYPERCALL_PORT, al
    pop rcx
    pop rdx
    pop rsi
    pop rdi
    test rax, rax
    jnz sys_spawn_done
sys_spawn_held:
    mov rax, qword ptr gs:[PCV_CORE_ID]
    cmp rsi, rax
    jne sys_spawn_remote
    mov rsi, rdx
    mov rdx, rcx
    jmp spawn_here
sys_spawn_remote:
    mov r11, rcx                      # word 3: the channels
    mov rcx, rdx                      # word 2: the argument
    mov rdx, rdi                      # word 1: the module
    mov rdi, rsi                      # to that core
    mov rsi, REQUEST_SPAWN
    jmp post_request                  # 0: asked, the other core does it; or -EAGAIN
sys_spawn_done:
    ret
sys_spawn_invalid:
    mov rax, -EINVAL
    ret

# sys_start_core(core) -> 0, or -EPERM / -EINVAL / -EBUSY
# Booting a core is the monitor's decision (boot.S says why), so only a
# dispatcher whose boot module is flagged `monitor` may ask.
sys_start_core:
    mov rax, qword ptr gs:[PCV_CURRENT]
    test qword ptr [rax + DCB_FLAGS], DCB_FLAG_MONITOR
    jz sys_start_core_refused
    mov rax, qword ptr gs:[PCV_N_CORES]
    cmp rdi, rax
    jae sys_start_core_invalid
    mov rax, qword ptr gs:[PCV_CORE_ID]
    cmp rdi, rax
    je sys_start_core_invalid         # we are running already
    jmp start_core
sys_start_core_refused:
    mov rax, -EPERM
    ret
sys_start_core_invalid:
    mov rax, -EINVAL
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
    mov rcx, USER_END
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
