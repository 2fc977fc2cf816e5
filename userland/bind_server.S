# bind_server.S: offer a service; serve the one client that binds to it.
#
# It offers service SERVICE to the monitors (MONITOR_EXPORT), then waits
# for the news of a bind: the channel the monitors set up, the client's
# core, and where the capability the client sent along now is in our
# CSpace (userland/monitor_bind.S). It says what it got:
#
#   service 7: a client on core 0 bound, on channel 1504
#   it sent a frame: 4096 bytes at physical 33587200, now ours
#
# and answers COUNT messages, each with ten times the number asked.
#
# Image arguments: service=S count=N

SERVICE = 7
COUNT = 3
ENDS = USER_STACK_TOP - 256
SEND = 0                              # our ends of the channel (bound_open)
RECV = SEND + BOUND_RECV
MESSAGE = 64
LOCAL = 128

start:
    mov rsp, ENDS
    mov rdi, rsp
    call monitor_open
    sub rsp, LOCAL
    mov rdi, ENDS
    mov esi, MONITOR_EXPORT
    mov edx, SERVICE
    call monitor_call
    test rax, rax
    jnz failed
    mov rdi, ENDS
    call monitor_wait                 # the news: rax channel, rdx client's core, rcx capability
    mov r12, rax
    mov r13, rdx
    mov r14, rcx
    lea rdi, [rip + text_service]
    call print_cstr
    mov edi, SERVICE
    call print_u64
    lea rdi, [rip + text_client]
    call print_cstr
    mov rdi, r13
    call print_u64
    lea rdi, [rip + text_channel]
    call print_cstr
    mov rdi, r12
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    test r14, r14
    jz serve
    call show_capability
serve:
    lea rdi, [rsp + SEND]             # our ends: the client sends on the first page
    mov rsi, r12
    mov edx, 1
    call bound_open
    mov rbx, COUNT
serve_next:
    lea rdi, [rsp + RECV]
    lea rsi, [rsp + MESSAGE]
    call urpc_recv
    mov rax, qword ptr [rsp + MESSAGE]
    imul rax, rax, 10
    mov qword ptr [rsp + MESSAGE], rax
    lea rdi, [rsp + SEND]
    lea rsi, [rsp + MESSAGE]
    call urpc_send
    dec rbx
    jnz serve_next
    xor edi, edi
    call exit
failed:
    mov rsi, rax
    lea rdi, [rip + text_failed]
    jmp fail

# show_capability: what the capability in slot r14 is.
#   clobbers: rax rcx rdx rsi rdi r8-r11 rbx
show_capability:
    mov rdi, r14
    mov esi, CAPFIELD_TYPE
    call cap_identify
    cmp rax, CAPTYPE_FRAME
    jne show_capability_other
    lea rdi, [rip + text_frame]
    call print_cstr
    mov rdi, r14
    mov esi, CAPFIELD_SIZE_BITS
    call cap_identify
    mov ecx, eax
    mov edi, 1
    shl rdi, cl
    call print_u64
    lea rdi, [rip + text_at]
    call print_cstr
    mov rdi, r14
    mov esi, CAPFIELD_BASE
    call cap_identify
    mov rdi, rax
    call print_u64
    lea rdi, [rip + text_ours]
    jmp print_cstr
show_capability_other:
    lea rdi, [rip + text_other]
    jmp print_cstr

text_service:  .asciz "service "
text_client:   .asciz ": a client on core "
text_channel:  .asciz " bound, on channel "
text_frame:    .asciz "it sent a frame: "
text_at:       .asciz " bytes at physical "
text_ours:     .asciz ", now ours\n"
text_other:    .asciz "it sent a capability that is not a frame\n"
text_failed:   .asciz "bind_server: failed: "
text_newline:  .asciz "\n"

.include "lib/monitor_client.S"
.include "lib/urpc.S"
.include "lib/sprat.S"
