# monitor_bind.S: services, binding through the monitors, and moving a
# capability to another core.
#
# Included by monitor.S. A server offers a service by number (its program
# asks MONITOR_EXPORT); monitor 0 keeps the table of services (SERVICES:
# the core + 1 and the dispatcher offering each). A client on any core
# binds to it (MONITOR_BIND), as in Barrelfish, through the two monitors:
#
#   client's monitor   takes the capability the client sends along (if
#                      any) out of the client's CSpace and describes it:
#                      a capability cannot travel in shared memory, only
#                      its description can. It keeps the capability in a
#                      record slot of its own: the source core's record
#                      that the memory is in use elsewhere.
#   monitor 0          finds the service, picks the next free pair of
#                      channel pages, and tells the server's monitor
#                      (OP_BOUND); waits for its reply; answers the client
#                      (result, channel, server's core).
#   server's monitor   makes the capability again on its core from the
#                      description (CAP_IMPORT: a foreign copy, never
#                      retyped here), gives it to the server (CAP_GIVE),
#                      and tells the server: (channel, client's core, where
#                      the capability is). Both ends then talk on the
#                      channel: the client sends on page `channel` and
#                      receives on `channel + 1`.
#   the channel        is the two ends' alone: the server's monitor gives
#                      the server its two pages' capabilities, the client's
#                      monitor gives them to the client with the answer
#                      (SYS_CHANNEL_GRANT, kernel/channels.py); no other
#                      program can map them.
#
# If the bind fails the client's monitor gives the capability back.

MAX_SERVICES = 16
MAX_BINDINGS = 16
BIND_PAGE = 1504                      # MAX_BINDINGS pairs of pages from here (to 1535)
MAX_RECORDS = 32
SLOT_RECORDS = 160                    # + n: capabilities moved away from our core
SLOT_IMPORTED = 200                   # a capability on its way in, briefly
SLOT_BOUND = 208                      # + binding: where a server gets it
KERNEL = CADDR_ROOT | SLOT_KERNEL
MOVED = 1 << 24                       # in a description: a capability travels
BOUND_CHANNEL = 8                     # OP_BOUND's words after MSG_OP
BOUND_CLIENT = 16
BOUND_SERVER = 24                     # the server's dispatcher
BOUND_NUMBER = 32                     # the binding's number
CAP_BASE = 40                         # a request's words 5 and 6: the capability
CAP_DESCRIPTION = 48                  #   type | size_bits << 8 | rights << 16 | MOVED

# take_moving_cap -> rax = 0, or nonzero if refused (the client is answered):
# the client's bind (MSG: service, capability address or 0) takes that
# capability along. Move it into our next record slot; describe it in
# MSG's words 5 and 6.
#   clobbers: everything but rbx rbp r15
take_moving_cap:
    mov rdx, qword ptr [r15 + MSG + 16]
    test rdx, rdx
    jz take_moving_none
    mov rcx, qword ptr [r15 + MOVES]
    cmp rcx, MAX_RECORDS
    jae take_moving_full
    add rcx, SLOT_RECORDS
    or rcx, CADDR_ROOT
    mov qword ptr [r15 + MOVING], rcx
    mov qword ptr [r15 + MOVING_FROM], rdx
    mov rdi, KERNEL
    mov rsi, qword ptr [r15 + CLIENT_DISPATCHER]
    call cap_take                     # (kernel, dispatcher, src, dest)
    test rax, rax
    jnz take_moving_refused
    mov esi, CAPFIELD_BASE
    call describe
    mov qword ptr [r15 + MSG + CAP_BASE], rax
    mov esi, CAPFIELD_RIGHTS
    call describe
    shl rax, 8
    mov r12, rax
    mov esi, CAPFIELD_SIZE_BITS
    call describe
    or r12, rax
    shl r12, 8
    mov esi, CAPFIELD_TYPE
    call describe
    or r12, rax
    or r12, MOVED
    mov qword ptr [r15 + MSG + CAP_DESCRIPTION], r12
take_moving_none:
    xor eax, eax
    ret
take_moving_full:
    mov rsi, BIND_NO_RECORD
    jmp take_moving_answer
take_moving_refused:
    mov qword ptr [r15 + MOVING], 0
    neg rax
    mov rsi, rax                      # the capability error, as the answer
take_moving_answer:
    xor edx, edx
    xor ecx, ecx
    call answer
    mov eax, 1
    ret

# describe(field) -> rax: one field of the capability in slot MOVING.
#   clobbers: rcx rdx rdi rsi r8-r11
describe:
    mov rdi, qword ptr [r15 + MOVING]
    jmp cap_identify

# finish_move: the answer to a bind is going to our client (NEWS w1 = the
# result). Failed: the capability goes back where it was. Bound: it stays
# in its record slot, the next move takes the next one.
#   clobbers: rax rcx rdx rsi rdi r8-r11
finish_move:
    call grant_bound_channel
    mov rsi, qword ptr [r15 + MOVING]
    test rsi, rsi
    jz finish_move_done
    mov qword ptr [r15 + MOVING], 0
    cmp qword ptr [r15 + NEWS + 8], 0
    jne finish_move_back
    inc qword ptr [r15 + MOVES]
    ret
finish_move_back:
    mov rdi, KERNEL
    mov rdx, qword ptr [r15 + CLIENT_DISPATCHER]
    mov rcx, qword ptr [r15 + MOVING_FROM]
    call cap_give                     # (kernel, src, dispatcher, dest)
finish_move_done:
    ret

# grant_bound_channel: if the answer going to our client (NEWS w1 = the
# result, w2 = the channel) says its bind succeeded, give it the channel's
# two pages (SYS_CHANNEL_GRANT): from now on it may map them.
#   clobbers: rax rcx rdx rsi rdi r11
grant_bound_channel:
    cmp qword ptr [r15 + CLIENT_OP], OP_BIND
    jne grant_bound_done
    cmp qword ptr [r15 + NEWS + 8], 0
    jne grant_bound_done
    mov eax, SYS_CHANNEL_GRANT
    mov rdi, qword ptr [r15 + CLIENT_DISPATCHER]
    mov rsi, qword ptr [r15 + NEWS + 16]
    mov edx, 2
    syscall
    test rax, rax
    jz grant_bound_done
    mov qword ptr [r15 + NEWS + 8], BIND_NO_CHANNEL   # (the pages could not be given)
grant_bound_done:
    ret

# root_export: the program on core ORIGIN offers service REQUEST w1.
root_export:
    mov rax, qword ptr [r15 + REQUEST + 8]
    mov esi, BIND_BAD_SERVICE
    cmp rax, MAX_SERVICES
    jae root_export_answer
    mov rcx, qword ptr [r15 + REQUEST + 40]   # its dispatcher
    shl rcx, 8
    mov rdx, qword ptr [r15 + ORIGIN]
    lea rcx, [rcx + rdx + 1]          # core + 1: 0 means no one
    mov qword ptr [r15 + SERVICES + rax * 8], rcx
    xor esi, esi
root_export_answer:
    xor edx, edx
    xor ecx, ecx
    jmp answer

# root_bind: bind the program on core ORIGIN to service REQUEST w1.
#   answers (0 or error, channel, server's core)
root_bind:
    mov rax, qword ptr [r15 + REQUEST + 8]
    mov esi, BIND_BAD_SERVICE
    cmp rax, MAX_SERVICES
    jae root_bind_refused
    mov r12, qword ptr [r15 + SERVICES + rax * 8]
    mov esi, BIND_NO_SERVICE
    test r12, r12
    jz root_bind_refused
    mov rax, qword ptr [r15 + NEXT_BINDING]
    mov esi, BIND_NO_CHANNEL
    cmp rax, MAX_BINDINGS
    jae root_bind_refused
    inc qword ptr [r15 + NEXT_BINDING]
    mov qword ptr [r15 + OUT + BOUND_NUMBER], rax
    lea rax, [rax * 2 + BIND_PAGE]
    mov qword ptr [r15 + OUT + BOUND_CHANNEL], rax
    mov qword ptr [r15 + OUT + MSG_OP], OP_BOUND
    mov rax, qword ptr [r15 + ORIGIN]
    mov qword ptr [r15 + OUT + BOUND_CLIENT], rax
    mov rax, r12
    shr rax, 8
    mov qword ptr [r15 + OUT + BOUND_SERVER], rax
    mov rax, qword ptr [r15 + REQUEST + 48]
    mov qword ptr [r15 + OUT + CAP_BASE], rax
    mov rax, qword ptr [r15 + REQUEST + 56]
    mov qword ptr [r15 + OUT + CAP_DESCRIPTION], rax
    movzx r12d, r12b
    dec r12                           # r12 = the server's core
    jnz root_bind_remote
    lea rdi, [r15 + OUT]              # the server is on our core
    call deliver_binding
    mov rsi, rax
    jmp root_bind_answer
root_bind_remote:
    mov rdi, r12
    call send_end
    mov rdi, rax
    lea rsi, [r15 + OUT]
    call urpc_send
    mov rdi, r12
    call recv_reply
    mov rsi, qword ptr [r15 + ACK_IN + VOTE_RESULT]
root_bind_answer:
    mov rdx, qword ptr [r15 + OUT + BOUND_CHANNEL]
    mov rcx, r12
    jmp answer
root_bind_refused:
    xor edx, edx
    xor ecx, ecx
    jmp answer

# bound_here: monitor 0 says a client bound to our server (MSG: OP_BOUND).
bound_here:
    lea rdi, [r15 + MSG]
    call deliver_binding
    mov rdi, rax
    jmp reply

# deliver_binding(message) -> rax = 0 or a capability error: make the
# capability that travels with an OP_BOUND message (if any) on our core,
# give it to the server, and tell the server.
#   clobbers: everything but rbx rbp r15
deliver_binding:
    push r13
    push r14
    mov r13, rdi                      # r13 = the message
    xor r14d, r14d                    # r14 = where the server finds it, or 0
    mov rax, qword ptr [r13 + CAP_DESCRIPTION]
    test rax, MOVED
    jz deliver_tell
    mov rdi, KERNEL                   # (kernel, type, base, size_bits, rights, dest)
    movzx esi, al
    mov rdx, qword ptr [r13 + CAP_BASE]
    movzx ecx, ah
    shr rax, 16
    movzx r8d, al
    mov r9, CADDR_ROOT | SLOT_IMPORTED
    call cap_import
    test rax, rax
    jnz deliver_failed
    mov r14, qword ptr [r13 + BOUND_NUMBER]
    add r14, SLOT_BOUND
    or r14, CADDR_ROOT
    mov rdi, KERNEL                   # (kernel, src, dispatcher, dest)
    mov rsi, CADDR_ROOT | SLOT_IMPORTED
    mov rdx, qword ptr [r13 + BOUND_SERVER]
    mov rcx, r14
    call cap_give
    test rax, rax
    jz deliver_tell
    push rax
    mov rdi, CADDR_ROOT | SLOT_IMPORTED
    call cap_delete                   # the server's slot was taken: undo the import
    pop rax
    jmp deliver_failed
deliver_tell:
    mov eax, SYS_CHANNEL_GRANT        # the server's ends of the new channel
    mov rdi, qword ptr [r13 + BOUND_SERVER]
    mov rsi, qword ptr [r13 + BOUND_CHANNEL]
    mov edx, 2
    syscall
    test rax, rax
    jnz deliver_failed
    mov qword ptr [r15 + NEWS + MSG_OP], MONITOR_NEWS
    mov rax, qword ptr [r13 + BOUND_CHANNEL]
    mov qword ptr [r15 + NEWS + 8], rax
    mov rax, qword ptr [r13 + BOUND_CLIENT]
    mov qword ptr [r15 + NEWS + 16], rax
    mov qword ptr [r15 + NEWS + 24], r14
    call tell_client
    xor eax, eax
    pop r14
    pop r13
    ret
deliver_failed:
    neg rax
    pop r14
    pop r13
    ret
