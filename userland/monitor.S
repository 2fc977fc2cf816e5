# monitor.S: one per core, in user mode: the keeper of this core's share
# of the replicated OS state, and its link to the other cores' monitors.
#
# In Barrelfish every core runs a monitor: a user-level process that holds
# the core's replica of the global state and keeps it consistent with the
# other monitors by messages (DESIGN.md section 4, issue 6). Here:
#
#   monitor_boot.S       monitor 0 boots the other cores
#   monitor_measure.S    at boot, every pair of monitors measures its message
#                        latency; the SKB (kernel/skb.py) computes routes
#   monitor_shootdown.S  TLB shootdown: a one-phase protocol down those routes
#   monitor_agree.S      the replicated records of the shared regions, kept
#                        by two-phase commit
#   monitor_bind.S       services, binding a client to a server on another
#                        core (a channel set up through the monitors), and a
#                        capability moved to the other core on the way
#   monitor_domains.S    the domain table; spanning a domain to more cores
#                        (a one-phase update of every replica)
#
# This file holds what they share: the channels, the main loop, and how a
# request travels. Programs ask their own core's monitor on the core's
# client rings (lib/monitor_client.S). A monitor that is not monitor 0
# forwards its client's request to monitor 0, which runs it (monitor 0 is
# the one initiator of every protocol, so every replica sees the changes
# in the same order: each pair ring is FIFO) and sends the answer back to
# the asking core's monitor, which hands it to its client.
#
# The main loop (serve) takes one message at a time from, in order:
# requests kept back while waiting for a reply (recv_reply), the broadcast
# ring, the pair ring from every other monitor, and our client's ring.
# With nothing to do it yields the core (the program on it may be waiting
# for us), looks once more, and parks with `pause` until a line it polled
# is written (the machine parks a core only on lines read since it last
# entered its kernel, and not at the pause that ends a round an interrupt
# cut short: it runs, and the next round, whole, parks: emulator/cost.py).
#
# Channels (all in the channel frames, so every access is charged by the
# coherence model):
#   pair ring a -> b     ring number a * PAIR_STRIDE + b, RINGS_PER_PAGE to a
#                        page from page PAIR_PAGES: a channel for every
#                        ordered pair of cores, so any tree can be built
#                        (64 x 64 rings: 1366 pages, most of the window)
#   broadcast ring       page BROADCAST_PAGE: core 0 writes, all others read
#   SKB page             SKB_PAGE: the boot counter and the ready flag
#   latency table        LATENCY_PAGE (eight pages): round trip a <-> b in
#                        cycles at qword a * PAIR_STRIDE + b
#   routing tables       ROUTE_PAGE (64 pages): for protocol p and n
#                        cores, ROUTE_BYTES at (p * PAIR_STRIDE + n - 1):
#                        qword count, then (child, subtree mask) pairs
#   client rings         MONITOR_CLIENT_PAGE (lib/monitor_client.S)
#   bound channels       BIND_PAGE: two pages per binding (monitor_bind.S)
# kernel/skb.py has the same numbers.
#
# Image arguments: probe=1 to check stale TLB entries (tests); show=1 to
# print the replica when the monitors stop (the two-phase commit demo).

MAX_MONITOR_CORES = 64                # every core the machine may have (MAX_CORES)
PAIR_STRIDE = 64
PAIR_SHIFT = 6                        # log2(PAIR_STRIDE)
RINGS_PER_PAGE = 3
RING_BYTES = 1088                     # a URPC ring (1024) and its ack line (64)
PAIR_PAGES = 0                        # 64 x 64 rings, 3 to a page: 1366 pages
BROADCAST_PAGE = 1366
SKB_PAGE = 1367
SKB_MEASURED = 0                      # the boot barrier: monitors done measuring
SKB_READY = 64                        # 1 once the SKB has written the routes
LATENCY_PAGE = 1368
ROUTE_PAGE = 1376
ROUTE_BYTES = 1024                    # room for 63 routes: count, 0, (child, mask)
SKB_QUERY = 0x534B42                  # "SKB" in rax at skb_query: the host answers
PROBE = 0
SHOW = 0                              # 1: print the replica when stopping
MONITORS = 0                          # 0: monitors on every core; N: on cores 0 .. N-1
                                      #   only, the others' exit at once (a smaller
                                      #   system on the same machine)

# What a message is (word 0 of every message between monitors). Requests
# from programs use the same numbers (lib/monitor_client.S, MONITOR_*).
OP_PREPARE = MONITOR_MAP_PAGE         # shootdown: map the page and read it
OP_INVALIDATE = MONITOR_SHOOTDOWN     # shootdown: unmap it and invlpg
OP_TOUCH = MONITOR_TOUCH_PAGE         # read it (faults if invalidated); no reply
OP_STOP = MONITOR_STOP                # every monitor exits
OP_RETYPE = MONITOR_RETYPE            # retype a shared region (2PC)
OP_PREPARE_RETYPE = 6                 # 2PC phase 1: lock your copy and vote
OP_COMMIT = 7                         # 2PC phase 2: the retype happened
OP_ABORT = 8                          # 2PC phase 2: it did not; unlock
OP_EXPORT = MONITOR_EXPORT            # offer a service
OP_BIND = MONITOR_BIND                # bind to a service
OP_ANSWER = 11                        # monitor 0 to the asking monitor: w1..w3
OP_BOUND = 12                         # monitor 0 to the server's monitor
OP_REPLY = 13                         # an acknowledgement or a vote
OP_SPAN = MONITOR_SPAN                # start a domain's dispatcher on a core
OP_DOMAIN = 15                        # monitor 0 to all: a domain's cores now
MSG_OP = 0
ACK_COUNT = 8                         # a reply: cores that did it, in the subtree
ACK_STALE = 16                        # of them, how many saw the stale page
VOTE_RESULT = 8                       # a vote: 0 yes, else the refusal's error code
VOTE_CORE = 16                        # who votes

# Our frame, at r15 for the whole run
SEND_ENDS = 0                         # URPC send end to each core
RECV_ENDS = 1536                      # URPC receive end from each core
BCAST_END = 3072                      # the broadcast ring (send on 0, receive elsewhere)
CLIENT_ASKS = 3096                    # our receive end of the client's request ring
CLIENT_ANSWERS = 3120                 # our send end of the client's answer ring
MSG = 3200                            # the message being handled
OUT = 3264                            # a message being sent
ACK = 3328                            # our reply (word 0: OP_REPLY)
ACK_IN = 3392                         # a reply coming in
NEWS = 3456                           # a message to our client
EXPECTED = 3520                       # root: what it last wrote into the page
ORIGIN = 3536                         # the core whose program asked what we run
T0 = 3544                             # a clock reading
REQUEST = 3552                        # root: op, w1, w2 >> 8, w2 & 255, w3,
                                      #   dispatcher, capability base, description
TXN = 3616                            # root: the last transaction's number
VERDICT = 3624                        # root: 0, or the first refusal's error code
REFUSER = 3632                        # root: the core that refused, or -1
DEFERRED_MASK = 3640                  # cores whose request waits in DEFERRED
MOVING = 3648                         # a capability on its way out: its record slot
MOVING_FROM = 3656                    # and where it was in our client's CSpace
MOVES = 3664                          # record slots used
NEXT_BINDING = 3672                   # root: bindings made
CLIENT_DISPATCHER = 3680              # our client's dispatcher number
SERVICES = 3688                       # root: MAX_SERVICES words (monitor_bind.S)
CLIENT_OP = 3816                      # what our client asked last (w0)
FRAME = 3840
REPLICA = USER_STACK_TOP - 4096       # our replica's page (monitor_agree.S), the
DEFERRED = 512                        #   stack's top; and in it a message per core
DEFERRED_BYTES = 56                   #   (its 7 words: 64 of them fill the page)

start:
    mov rbx, rdi                      # rbx = our core, for the whole run
    mov rbp, rsi                      # rbp = how many cores the machine has
    call boot_other_cores
    mov rax, MONITORS                 # rbp = the cores that run monitors, 0 .. rbp-1:
    test rax, rax                     #   every core, or the first MONITORS (a
    jz monitors_counted               #   smaller system on the same board)
    cmp rax, rbp
    cmovb rbp, rax
monitors_counted:
    cmp rbx, rbp
    jae no_monitor_here
    mov rsp, REPLICA                  # the stack goes below the replica
    call init_replica
    sub rsp, FRAME
    mov r15, rsp                      # r15 = our frame
    call init_frame
    cmp rbp, MAX_MONITOR_CORES
    ja too_many_cores
    call open_channels
    call measure_latencies
    call meet_the_skb
    jmp serve

no_monitor_here:                      # a core beyond MONITORS: it switches off, idle
    xor edi, edi
    call exit

too_many_cores:
    lea rdi, [rip + text_too_many]
    call print_cstr
    mov edi, 1
    call exit

# init_frame: zero our frame's scalars; our replies say they are replies.
#   clobbers: rax rcx rdi
init_frame:
    lea rdi, [r15 + EXPECTED]
    xor eax, eax
    mov ecx, (FRAME - EXPECTED) / 8
    rep stosq
    mov qword ptr [r15 + ACK + MSG_OP], OP_REPLY
    ret

# --- channels ----------------------------------------------------------------

# pair_ring(from, to) -> rax = the ring carrying messages from core `from` to `to`
#   clobbers: rcx rdx rdi
pair_ring:
    shl rdi, PAIR_SHIFT               # from * PAIR_STRIDE
    lea rax, [rdi + rsi]
    xor edx, edx
    mov ecx, RINGS_PER_PAGE
    div rcx                           # rax = page, rdx = which ring in it
    imul rdx, rdx, RING_BYTES
    shl rax, 12
    add rax, rdx
    mov rdx, USER_CHANNELS + PAIR_PAGES * 4096
    add rax, rdx
    ret

# send_end(core) / recv_end(core) -> rax = our URPC end towards / from `core`
#   clobbers: nothing else
send_end:
    imul rax, rdi, URPC_END_SIZE
    lea rax, [r15 + rax + SEND_ENDS]
    ret
recv_end:
    imul rax, rdi, URPC_END_SIZE
    lea rax, [r15 + rax + RECV_ENDS]
    ret

# open_channels: start both our ends of every pair ring, and the broadcast ring.
#   in: rbx = our core, rbp = cores, r15 = frame.  clobbers: rax rcx rdx rsi rdi r8
open_channels:
    push r12
    xor r12d, r12d                    # r12 = the other core
open_channels_next:
    mov rdi, rbx
    mov rsi, r12
    call pair_ring                    # us -> them
    mov rsi, rax
    mov rdi, r12
    call send_end
    mov rdi, rax
    call urpc_init
    mov rdi, r12
    mov rsi, rbx
    call pair_ring                    # them -> us
    mov rsi, rax
    mov rdi, r12
    call recv_end
    mov rdi, rax
    call urpc_init
    inc r12
    cmp r12, rbp
    jb open_channels_next
    mov rsi, USER_CHANNELS + BROADCAST_PAGE * 4096
    lea rdi, [r15 + BCAST_END]
    call urpc_init
    pop r12
    jmp open_client_rings

# open_client_rings: our ends of this core's client rings.
#   clobbers: rax rcx rdx rsi rdi
open_client_rings:
    lea rdi, [rbx * 2]                # ring 2 * core: its requests to us
    call client_ring
    mov rsi, rax
    lea rdi, [r15 + CLIENT_ASKS]
    call urpc_init
    lea rdi, [rbx * 2 + 1]            # ring 2 * core + 1: our answers
    call client_ring
    mov rsi, rax
    lea rdi, [r15 + CLIENT_ANSWERS]
    jmp urpc_init

# --- the main loop -----------------------------------------------------------------

serve:
    call take_one
    test eax, eax
    jnz serve
    mov eax, SYS_YIELD                # nothing: the program on our core may run
    syscall
    call take_one                     # (it may have asked us something)
    test eax, eax
    jnz serve
    pause                             # park until a line we polled is written
    jmp serve

# take_one -> eax = 1 if a message was there (and is handled), 0 if none.
#   clobbers: everything but rbx rbp r15
take_one:
    mov rax, qword ptr [r15 + DEFERRED_MASK]
    test rax, rax
    jnz take_deferred
    test rbx, rbx
    jz take_pairs                     # monitor 0 writes the broadcast ring
    lea rdi, [r15 + BCAST_END]
    lea rsi, [r15 + MSG]
    call broadcast_poll
    test eax, eax
    jz take_pairs
    mov qword ptr [r15 + ORIGIN], 0
    jmp take_handle
take_pairs:
    xor r12d, r12d                    # r12 = the core whose ring we poll
take_pairs_next:
    cmp r12, rbp
    jae take_client
    cmp r12, rbx
    je take_pairs_skip
    mov rdi, r12
    call recv_end
    mov rdi, rax
    lea rsi, [r15 + MSG]
    call urpc_poll
    test eax, eax
    jnz take_pair_got
take_pairs_skip:
    inc r12
    jmp take_pairs_next
take_pair_got:
    mov qword ptr [r15 + ORIGIN], r12
    jmp take_handle
take_client:
    lea rdi, [r15 + CLIENT_ASKS]
    lea rsi, [r15 + MSG]
    call urpc_poll
    test eax, eax
    jz take_none
    call client_request
    mov eax, 1
    ret
take_none:
    xor eax, eax
    ret
take_deferred:
    bsf rdi, rax                      # the lowest core first
    btr qword ptr [r15 + DEFERRED_MASK], rdi
    mov qword ptr [r15 + ORIGIN], rdi
    call deferred_slot
    mov rsi, rax
    lea rdi, [r15 + MSG]
    mov ecx, URPC_PAYLOAD_WORDS
    rep movsq
take_handle:
    call handle
    mov eax, 1
    ret

# handle: the message in MSG came from monitor ORIGIN. Monitor 0 gets
# only requests its peers forward from their programs; the others get the
# protocols' steps, and answers and news for their programs.
#   clobbers: everything but rbx rbp r15
handle:
    test rbx, rbx
    jz root_request
    mov rax, qword ptr [r15 + MSG + MSG_OP]
    cmp rax, OP_PREPARE
    je shootdown_step
    cmp rax, OP_INVALIDATE
    je shootdown_step
    cmp rax, OP_TOUCH
    je touch_page
    cmp rax, OP_PREPARE_RETYPE
    je prepare_retype
    cmp rax, OP_COMMIT
    je commit_retype
    cmp rax, OP_ABORT
    je abort_retype
    cmp rax, OP_ANSWER
    je relay_answer
    cmp rax, OP_BOUND
    je bound_here
    cmp rax, OP_DOMAIN
    je domain_here
    cmp rax, OP_STOP
    je stop
    ret                               # nothing we know: drop it

# client_request: our program asked (MSG: op, w1..w3, its dispatcher).
# Monitor 0 runs it; the others forward it to monitor 0.
#   clobbers: everything but rbx rbp r15
client_request:
    mov rax, qword ptr [r15 + MSG + 32]
    mov qword ptr [r15 + CLIENT_DISPATCHER], rax
    mov rax, qword ptr [r15 + MSG + MSG_OP]
    mov qword ptr [r15 + CLIENT_OP], rax
    mov qword ptr [r15 + ORIGIN], rbx
    mov qword ptr [r15 + MSG + 40], 0     # no capability travels with it ...
    mov qword ptr [r15 + MSG + 48], 0
    cmp qword ptr [r15 + MSG + MSG_OP], OP_BIND
    jne client_request_go
    call take_moving_cap              # ... unless a bind takes one along
    test rax, rax
    jnz client_request_done           # refused: answered already
client_request_go:
    test rbx, rbx
    jz root_request
    xor edi, edi
    call send_end
    mov rdi, rax
    lea rsi, [r15 + MSG]
    jmp urpc_send
client_request_done:
    ret

# root_request: run the request in MSG for the program on core ORIGIN.
# REQUEST keeps its words apart: a protocol may reuse MSG.
#   clobbers: everything but rbx rbp r15
root_request:
    lea rsi, [r15 + MSG]
    lea rdi, [r15 + REQUEST]
    movsq                             # op
    movsq                             # w1
    mov rax, qword ptr [rsi]          # w2: protocol or type << 8 | cores
    movzx ecx, al
    shr rax, 8
    mov qword ptr [rdi], rax
    mov qword ptr [rdi + 8], rcx
    add rsi, 8
    add rdi, 16
    movsq                             # w3
    movsq                             # the program's dispatcher
    movsq                             # a capability's base
    movsq                             #   and description
    mov rax, qword ptr [r15 + REQUEST]
    cmp rax, OP_PREPARE
    je root_shootdown
    cmp rax, OP_INVALIDATE
    je root_shootdown
    cmp rax, OP_TOUCH
    je root_touch
    cmp rax, OP_RETYPE
    je root_retype
    cmp rax, OP_EXPORT
    je root_export
    cmp rax, OP_BIND
    je root_bind
    cmp rax, OP_SPAN
    je root_span
    cmp rax, OP_STOP
    je root_stop
    mov rsi, -1                       # no such request
    xor edx, edx
    xor ecx, ecx
    jmp answer

# answer(w1, w2, w3): the answer to the program on core ORIGIN: ours, or
# through that core's monitor.
#   clobbers: rax rcx rdx rsi rdi r8
answer:
    mov qword ptr [r15 + NEWS + 8], rsi
    mov qword ptr [r15 + NEWS + 16], rdx
    mov qword ptr [r15 + NEWS + 24], rcx
    mov rdi, qword ptr [r15 + ORIGIN]
    cmp rdi, rbx
    je answer_here
    mov qword ptr [r15 + NEWS + MSG_OP], OP_ANSWER
    call send_end
    mov rdi, rax
    lea rsi, [r15 + NEWS]
    jmp urpc_send
answer_here:
    call finish_move                  # a bind that took a capability along
    mov qword ptr [r15 + NEWS + MSG_OP], MONITOR_ANSWER
tell_client:
    lea rdi, [r15 + CLIENT_ANSWERS]
    lea rsi, [r15 + NEWS]
    jmp urpc_send

# relay_answer: monitor 0's answer to our program's request (MSG: w1..w3).
relay_answer:
    mov rax, qword ptr [r15 + MSG + 8]
    mov qword ptr [r15 + NEWS + 8], rax
    mov rax, qword ptr [r15 + MSG + 16]
    mov qword ptr [r15 + NEWS + 16], rax
    mov rax, qword ptr [r15 + MSG + 24]
    mov qword ptr [r15 + NEWS + 24], rax
    jmp answer_here

# reply(result): our reply to monitor 0's request: ACK with the result
# (a vote: 0 yes, else why not; an acknowledgement: 0) and who we are.
#   clobbers: rax rcx rdx rsi rdi r8
reply:
    mov qword ptr [r15 + ACK + VOTE_RESULT], rdi
    mov qword ptr [r15 + ACK + VOTE_CORE], rbx
    xor edi, edi
    call send_end
    mov rdi, rax
    lea rsi, [r15 + ACK]
    jmp urpc_send

# recv_reply(core): wait for the next reply from `core` into ACK_IN. A
# request that its monitor forwarded before the reply is kept in DEFERRED
# for the main loop (one per core at most: a program waits for its answer
# before it asks again).
#   clobbers: rax rcx rdx rsi rdi
recv_reply:
    push r12
    mov r12, rdi
recv_reply_next:
    mov rdi, r12
    call recv_end
    mov rdi, rax
    lea rsi, [r15 + ACK_IN]
    call urpc_recv
    cmp qword ptr [r15 + ACK_IN + MSG_OP], OP_REPLY
    je recv_reply_done
    mov rdi, r12
    call deferred_slot
    mov rdi, rax
    lea rsi, [r15 + ACK_IN]
    mov ecx, URPC_PAYLOAD_WORDS
    rep movsq
    bts qword ptr [r15 + DEFERRED_MASK], r12
    jmp recv_reply_next
recv_reply_done:
    pop r12
    ret

# deferred_slot(core) -> rax: where a request from `core` waits in DEFERRED
#   clobbers: nothing else
deferred_slot:
    imul rax, rdi, DEFERRED_BYTES
    push rcx
    mov rcx, REPLICA + DEFERRED
    add rax, rcx
    pop rcx
    ret

# root_stop: answer, then every monitor exits, and so do we.
root_stop:
    xor esi, esi
    xor edx, edx
    xor ecx, ecx
    call answer
    mov qword ptr [r15 + OUT + MSG_OP], OP_STOP
    mov rdi, rbp
    call send_to_all
stop:
    call show_replica
    xor edi, edi
    call exit

text_too_many:     .asciz "monitor: more cores than the pair channels serve (64)\n"

.include "monitor_measure.S"
.include "monitor_shootdown.S"
.include "monitor_agree.S"
.include "monitor_bind.S"
.include "monitor_domains.S"
.include "lib/monitor_client.S"
.include "monitor_boot.S"
.include "lib/urpc.S"
.include "lib/measure.S"
.include "lib/sprat.S"
