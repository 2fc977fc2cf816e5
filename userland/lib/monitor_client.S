# monitor_client.S: a program's requests to its core's monitor.
#
# Every core has one pair of client rings between a program and the
# core's monitor (userland/monitor.S), in a page of its own: the core's
# client channel (MONITOR_CHANNELS + core, cpudriver/layout.py), which
# every program on the core holds from its start (kernel/channels.py)
# and no program elsewhere can touch. Requests go up one, answers (and
# news the monitor has for the program, such as "a client bound to your
# service") come down the other. One program per core talks to its
# monitor at a time. The rings are URPC rings like any other, in the
# channel frames, so the cost model charges them as it charges any
# message; but the program and its monitor share a core, so a program that
# waits for its monitor yields the core to it rather than spin.
#
#   sub rsp, MONITOR_ENDS_SIZE        # our ends of the two rings
#   mov rdi, rsp
#   call monitor_open
#   mov rdi, rsp                      # then, as often as needed:
#   mov esi, OP_RETYPE                #   the request: op, three words
#   ...
#   call monitor_call                 # rax, rdx, rcx = the answer's words
#
# A request is: w0 op, w1..w3 arguments, w4 our dispatcher number (the
# monitor needs it to move capabilities in and out of our CSpace). An
# answer is: w0 MONITOR_ANSWER, w1..w3 results. Include after lib/urpc.S.

MONITOR_CLIENT_PAGE = MONITOR_CHANNELS # 64 pages: a core's two rings in a page of its own
MONITOR_FIRST_PAGE = 1536             # the window's pages from here on (its last
                                      # 2 MiB but the CPU drivers' inboxes) are the
                                      # programs' to share, map and shoot down
MONITOR_RING_BYTES = 1088             # a URPC ring (1024) and its ack line (64)
MONITOR_ENDS_SIZE = 2 * URPC_END_SIZE + 64   # the two ends, a message buffer
MONITOR_REQUESTS = 0                  # in the ends: ours to send requests on
MONITOR_ANSWERS = URPC_END_SIZE       # ours to receive answers on
MONITOR_BUFFER = 2 * URPC_END_SIZE
MONITOR_ANSWER = 0x414E53             # "ANS": w0 of an answer
MONITOR_NEWS = 0x4E4557               # "NEW": w0 of news we did not ask for

# What a program may ask (w0), with its words and the answer's:
MONITOR_MAP_PAGE = 1                  # (page, protocol << 8 | cores) -> (cycles, cores, 0)
                                      #   or -1: no such page, protocol or count
MONITOR_SHOOTDOWN = 2                 # (page, protocol << 8 | cores) -> (cycles, cores, stale)
MONITOR_TOUCH_PAGE = 3                # (page, protocol << 8 | cores): others read it
MONITOR_STOP = 4                      # () -> (0, 0, 0): every monitor exits
MONITOR_RETYPE = 5                    # (region, type << 8) -> (0 or error, refuser, txn)
MONITOR_EXPORT = 9                    # (service) -> (0 or error): news comes per bind
MONITOR_BIND = 10                     # (service, capability or 0) -> (0 or error,
                                      #   channel, server's core); the capability moves
MONITOR_SPAN = 14                     # (domain, module << 8 | core, argument) ->
                                      #   (0 or error, the domain's cores as a mask);
                                      #   the new dispatcher is handed channel page
                                      #   argument >> 8 (if MONITOR_FIRST_PAGE or up)
BIND_NO_SERVICE = 1                   # errors of a bind or an export
BIND_NO_CHANNEL = 2
BIND_BAD_SERVICE = 3
BIND_NO_RECORD = 4

# client_ring(index) -> rax = client ring `index`: 2 * core asks, 2 * core + 1 answers
# (ring 2 * core at the start of the core's page, 2 * core + 1 after it)
#   clobbers: rdx
client_ring:
    mov rax, rdi
    shr rax, 1
    shl rax, 12                       # the core's page
    mov rdx, rdi
    and rdx, 1
    imul rdx, rdx, MONITOR_RING_BYTES
    add rax, rdx
    mov rdx, USER_CHANNELS + MONITOR_CLIENT_PAGE * 4096
    add rax, rdx
    ret

# monitor_open(ends): start our ends of this core's client rings.
#   clobbers: rax rcx rdx rsi rdi r11
monitor_open:
    push rbx
    push r12
    mov rbx, rdi
    mov eax, SYS_CORE_ID
    syscall
    lea r12, [rax * 2]                # our core's request ring
    mov rdi, r12
    call client_ring
    mov rsi, rax
    lea rdi, [rbx + MONITOR_REQUESTS]
    call urpc_init
    lea rdi, [r12 + 1]                # and its answer ring
    call client_ring
    mov rsi, rax
    lea rdi, [rbx + MONITOR_ANSWERS]
    call urpc_init
    pop r12
    pop rbx
    ret

# monitor_call(ends, op, w1, w2, w3) -> rax, rdx, rcx: the answer's w1..w3.
#   clobbers: rsi rdi r8-r11
monitor_call:
    push rbx
    mov rbx, rdi
    mov qword ptr [rbx + MONITOR_BUFFER], rsi
    mov qword ptr [rbx + MONITOR_BUFFER + 8], rdx
    mov qword ptr [rbx + MONITOR_BUFFER + 16], rcx
    mov qword ptr [rbx + MONITOR_BUFFER + 24], r8
    mov eax, SYS_DISPATCHER_ID
    syscall
    mov qword ptr [rbx + MONITOR_BUFFER + 32], rax
    lea rdi, [rbx + MONITOR_REQUESTS]
    lea rsi, [rbx + MONITOR_BUFFER]
    call urpc_send
    mov rdi, rbx
    pop rbx
    jmp monitor_wait                  # its ret returns to our caller

# stop_monitors_and_exit(ends), stop_monitors_and_fail(ends): ask every
# monitor to stop (MONITOR_STOP), then exit with status 0, or 1 (the
# program found something wrong: sprat boot fails). Never return.
stop_monitors_and_fail:
    push 1
    jmp stop_monitors_with_status
stop_monitors_and_exit:
    push 0
stop_monitors_with_status:
    mov esi, MONITOR_STOP
    xor edx, edx
    xor ecx, ecx
    xor r8d, r8d
    call monitor_call
    pop rdi                           # the status
    jmp exit

# monitor_wait(ends) -> rax, rdx, rcx: w1..w3 of the next message from our
# monitor (an answer, or news), and r8 = its w0. Yields the core while
# there is none: the monitor runs on this core too.
#   clobbers: rsi rdi r9-r11
monitor_wait:
    push rbx
    mov rbx, rdi
monitor_wait_poll:
    lea rdi, [rbx + MONITOR_ANSWERS]
    lea rsi, [rbx + MONITOR_BUFFER]
    call urpc_poll
    test eax, eax
    jnz monitor_wait_got
    mov eax, SYS_YIELD
    syscall
    jmp monitor_wait_poll
monitor_wait_got:
    mov r8, qword ptr [rbx + MONITOR_BUFFER]
    mov rax, qword ptr [rbx + MONITOR_BUFFER + 8]
    mov rdx, qword ptr [rbx + MONITOR_BUFFER + 16]
    mov rcx, qword ptr [rbx + MONITOR_BUFFER + 24]
    pop rbx
    ret

# bound_open(ends, channel, side): our two ends of a channel the monitors
# set up for a bind (MONITOR_BIND): the client (side 0) sends on page
# `channel` and hears on `channel + 1`, the server (side 1) the other way.
#   in: rdi = room for BOUND_ENDS_SIZE bytes: the send end at BOUND_SEND,
#   the receive end at BOUND_RECV.  clobbers: rax rcx rdx rsi rdi
BOUND_SEND = 0
BOUND_RECV = URPC_END_SIZE
BOUND_ENDS_SIZE = 2 * URPC_END_SIZE
bound_open:
    push rbx
    push r12
    mov rbx, rdi
    lea r12, [rsi + rdx]              # r12 = the page we send on
    xor rdx, 1
    add rsi, rdx                      # rsi = the page we hear on
    mov rdi, rsi
    call urpc_channel
    mov rsi, rax
    lea rdi, [rbx + BOUND_RECV]
    call urpc_init
    mov rdi, r12
    call urpc_channel
    mov rsi, rax
    lea rdi, [rbx + BOUND_SEND]
    call urpc_init
    pop r12
    pop rbx
    ret
