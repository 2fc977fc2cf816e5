# bind_client.S: bind to a service on another core through the monitors,
# sending a capability along, then talk to the server on the new channel.
#
# It makes a frame out of its own RAM, binds to service SERVICE (retrying
# while no one offers it yet) and gives the frame to the server with the
# bind: the frame moves to the server's core (userland/monitor_bind.S), so
# our slot is empty afterwards. Then it sends COUNT numbers on the channel
# the monitors set up and prints the server's replies:
#
#   bound to service 7 on core 2: channel 1504; the frame went with it
#   our slot for the frame is empty now: error 104
#   asked 1, the server answered 10
#   ...
#
# and at the end it stops the monitors.
#
# With retry=0 it does not wait for the service: a refused bind prints the
# error and shows the frame came back to us.
#
# Image arguments: service=S count=N retry=0|1

SERVICE = 7
COUNT = 3
RETRY = 1
ENDS = USER_STACK_TOP - 256           # our ends of the client rings
FRAME = CADDR_ROOT | 20               # the frame we send along
SEND = 0                              # in our frame: the channel's ends (bound_open),
RECV = SEND + BOUND_RECV
MESSAGE = 64                          #   a message
LOCAL = 128

start:
    mov rsp, ENDS
    mov rdi, rsp
    call monitor_open
    sub rsp, LOCAL
    mov rdi, CADDR_ROOT | SLOT_RAM    # a frame of our own: 4 KiB of our RAM
    mov esi, 0x4000
    mov edx, CAPTYPE_FRAME
    mov ecx, 12
    mov r8d, 1
    mov r9, FRAME
    call cap_retype
    test rax, rax
    jnz failed
bind:
    mov rdi, ENDS
    mov esi, MONITOR_BIND
    mov edx, SERVICE
    mov rcx, FRAME
    call monitor_call                 # rax = 0 or error, rdx = channel, rcx = core
    cmp rax, BIND_NO_SERVICE
    jne bind_answered
    mov rcx, RETRY
    test rcx, rcx
    jz refused
    mov eax, SYS_YIELD                # nobody offers it yet: try again later
    syscall
    jmp bind
bind_answered:
    test rax, rax
    jnz failed
    mov r12, rdx                      # r12 = the channel
    mov r13, rcx
    lea rdi, [rip + text_bound]
    call print_cstr
    mov edi, SERVICE
    call print_u64
    lea rdi, [rip + text_on_core]
    call print_cstr
    mov rdi, r13
    call print_u64
    lea rdi, [rip + text_channel]
    call print_cstr
    mov rdi, r12
    call print_u64
    lea rdi, [rip + text_went]
    call print_cstr
    mov rdi, FRAME                    # the frame is gone from our CSpace
    mov esi, CAPFIELD_TYPE
    call cap_identify
    neg rax
    mov rbx, rax
    lea rdi, [rip + text_empty]
    call print_cstr
    mov rdi, rbx
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    lea rdi, [rsp + SEND]             # our ends: we send on the channel's first page
    mov rsi, r12
    xor edx, edx
    call bound_open
    mov r14d, 1                       # r14 = the number we send
talk:
    mov qword ptr [rsp + MESSAGE], r14
    lea rdi, [rsp + SEND]
    lea rsi, [rsp + MESSAGE]
    call urpc_send
    lea rdi, [rsp + RECV]
    lea rsi, [rsp + MESSAGE]
    call urpc_recv
    lea rdi, [rip + text_asked]
    call print_cstr
    mov rdi, r14
    call print_u64
    lea rdi, [rip + text_answered]
    call print_cstr
    mov rdi, qword ptr [rsp + MESSAGE]
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    inc r14
    cmp r14, COUNT
    jbe talk
    mov rdi, ENDS
    jmp stop_monitors_and_exit
refused:
    mov rbx, rax
    lea rdi, [rip + text_refused]
    call print_cstr
    mov rdi, rbx
    call print_u64
    mov rdi, FRAME                    # given back: the frame is ours again
    mov esi, CAPFIELD_TYPE
    call cap_identify
    cmp rax, CAPTYPE_FRAME
    jne failed
    lea rdi, [rip + text_back]
    call print_cstr
    mov rdi, ENDS
    jmp stop_monitors_and_exit
failed:
    mov rsi, rax
    lea rdi, [rip + text_failed]
    jmp fail

text_bound:    .asciz "bound to service "
text_on_core:  .asciz " on core "
text_channel:  .asciz ": channel "
text_went:     .asciz "; the frame went with it\n"
text_empty:    .asciz "our slot for the frame is empty now: error "
text_asked:    .asciz "asked "
text_answered: .asciz ", the server answered "
text_refused:  .asciz "bind refused: error "
text_back:     .asciz "; the frame is ours again\n"
text_failed:   .asciz "bind_client: failed: "
text_newline:  .asciz "\n"

.include "lib/monitor_client.S"
.include "lib/urpc.S"
.include "lib/sprat.S"
