# lmp.S: local message passing (LMP) between the dispatchers of one core.
#
# A message is three words and, through an EndPoint capability, one
# capability. It never touches memory: the words go straight into the
# receiver's saved registers, and the core is handed to the receiver at
# once (PCV_NEXT), so the receiver runs next. The system call entry and
# its table are syscall.S's; the switch that makes the receiver run is
# dispatch.S's. (Lab 4, labs/04-lmp, asks for this file's routines.)

# LAB lmp BEGIN lmp
# sys_lmp_send(to, w0, w1, w2) -> 0 or -EINVAL / -EAGAIN
# Local message passing: the three words go straight into the receiver's
# saved registers, and the receiver runs next (the sender stays runnable):
# one kernel entry, no buffer, no copy through memory.
#   in: rdi = to, rsi rdx rcx = the words (as from syscall_dispatch)
#   clobbers: rax rcx rdx rsi rdi r8-r11
sys_lmp_send:
    mov rax, qword ptr gs:[PCV_N_DISPATCHERS]
    cmp rdi, rax
    jae sys_lmp_send_invalid
    call dispatcher_slot              # rax = the receiver's slot
    cmp qword ptr [rax + DCB_STATE], DISPATCHER_WAITING
    jne sys_lmp_send_again
    mov r8, rax
    mov qword ptr [r8 + DCB_FRAME + TF_RDI], rsi
    mov qword ptr [r8 + DCB_FRAME + TF_RSI], rdx
    mov qword ptr [r8 + DCB_FRAME + TF_RDX], rcx
    mov qword ptr [r8 + DCB_STATE], DISPATCHER_RUNNABLE
    mov qword ptr gs:[PCV_NEXT], rax  # hand the core over to the receiver
    call request_reschedule
    call current_index                # the sender's number, for the receiver
    mov qword ptr [r8 + DCB_FRAME + TF_RAX], rax
    xor eax, eax
    ret
sys_lmp_send_invalid:
    mov rax, -EINVAL
    ret
sys_lmp_send_again:
    mov rax, -EAGAIN
    ret

# sys_lmp_recv(): wait until a message comes. sys_lmp_send fills in the
# result (rax = sender, rdi rsi rdx = the words) while we are switched out.
sys_lmp_recv:
    mov rax, qword ptr gs:[PCV_CURRENT]
    mov qword ptr [rax + DCB_STATE], DISPATCHER_WAITING
    call request_reschedule
    mov rax, -EAGAIN                  # (overwritten when a message arrives)
    ret

# sys_lmp_send_ep(endpoint, w0, w1, cap) -> 0 or -error
# Which dispatcher an endpoint names, and the capability transfer, are the
# capability system's (kernel/capservice.py, through the hypercall port);
# the hand-over itself is sys_lmp_send's.
sys_lmp_send_ep:
    push rsi
    push rdx
    mov rsi, rcx                      # the capability to give (0: none)
    mov rax, HYPERCALL_LMP
    out HYPERCALL_PORT, al            # rax = the receiver, rdx = 1 if a cap went
    mov rcx, rdx
    pop rdx
    pop rsi
    test rax, rax
    js sys_lmp_send_ep_refused
    mov rdi, rax
    jmp sys_lmp_send                  # w0, w1, and "a capability came"
sys_lmp_send_ep_refused:
    ret

# sys_lmp_call(to, w0, w1, w2): sys_lmp_send, then wait as sys_lmp_recv.
sys_lmp_call:
    call sys_lmp_send
    test rax, rax
    jnz sys_lmp_call_done             # not sent: say why
    mov rax, qword ptr gs:[PCV_CURRENT]
    mov qword ptr [rax + DCB_STATE], DISPATCHER_WAITING
    xor eax, eax                      # (overwritten by the reply)
sys_lmp_call_done:
    ret
# LAB lmp END lmp
