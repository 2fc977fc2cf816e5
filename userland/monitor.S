# monitor.S: one per core; measures the machine at boot, shoots down TLBs,
# and keeps its replica of the shared regions' records by two-phase commit.
#
# In Barrelfish every core runs a monitor: a user-level process that holds
# the core's share of the replicated OS state and keeps it consistent with
# the other monitors by messages. This one does three of those jobs
# (DESIGN.md section 4, issue 6):
#
#  1. At boot it measures the URPC round trip to every other monitor, one
#     pair at a time per core, the pairs scheduled as the rounds of a
#     round-robin tournament (circle method: every round pairs every core
#     with a different one, so all cores are busy and boot stays short).
#     The lower core of a pair pings, keeps the fastest of SAMPLE_TRIPS
#     timed round trips (a timer interrupt inflates one, never all) and
#     writes it into the latency table in the SKB's pages.
#     When all monitors have measured, monitor 0 asks the SKB (the system
#     knowledge base, kernel/skb.py, which runs on the host) at the label
#     `skb_query`: the SKB reads the table, computes the routing trees and
#     writes them back; monitor 0 then raises SKB_READY and every monitor
#     starts serving.
#
#  2. Then it serves TLB shootdowns. Monitor 0 is the initiator: a program
#     on core 0 asks it over LMP (userland/shootdown.S); it sends the
#     request down the routing tree of the protocol asked for and answers
#     when every core has acknowledged. The others wait for requests from
#     the cores that may be their parent (core 0 and their package mates,
#     as the SKB says) and on the broadcast ring. A request is handled the
#     same way at every level of the tree: forward it to our subtree first
#     (so the children start while we work), do our own part, collect the
#     subtree's acknowledgements, acknowledge to our parent with the sum.
#
#     "Our own part" of an invalidation is SYS_CHANNEL_UNMAP then
#     SYS_INVLPG of the page: until the invlpg this core still reaches the
#     page through its stale TLB entry even though the PTE is gone. With
#     PROBE=1 the monitor reads the page in between and counts in its
#     acknowledgement whether it saw the initiator's value there (the
#     test that the stale entry is real).
#
#  3. It keeps its replica of the shared regions' records (below) and
#     agrees with the others on every change by two-phase commit (see
#     "3. agreement"): a retype of a shared region happens only if no core
#     refuses, and a refusal or a failure anywhere leaves every replica as
#     it was. Retypes are asked of monitor 0 over LMP, like shootdowns.
#     The unmap of a page in the shared window is the one-phase kind: every
#     core must apply it and none may refuse (the shootdown above).
#
# The replica lives in the top page of this monitor's stack, REPLICA (the
# host reads it there too: kernel/replica.py):
#   REPLICA_MAGIC  "MONITOR1"           REPLICA_COMMITS   retypes committed
#   REPLICA_CORE   this core            REPLICA_ABORTS    retypes rolled back
#   and per shared region r, REGION_RECORD bytes at REPLICA_REGIONS + r * 32:
#   REGION_STATE   0 free, 1 retyped    REGION_VERSION    commits applied to it
#   REGION_OWNER   who retyped it       REGION_PENDING    the transaction we
#                                                         voted yes to, or 0
#
# Channels (all in the channel frames, so every access is charged by the
# coherence model):
#   pair ring a -> b     ring number a * PAIR_STRIDE + b, RINGS_PER_PAGE to a
#                        page from page PAIR_PAGES: a channel for every
#                        ordered pair of cores, so any tree can be built
#   broadcast ring       page BROADCAST_PAGE: core 0 writes, all others read
#   SKB page             SKB_PAGE: the boot counter, the ready flag, and
#                        per core the mask of cores it takes requests from
#   latency table        LATENCY_PAGE (two pages): round trip a <-> b in
#                        cycles at qword a * PAIR_STRIDE + b
#   routing tables       ROUTE_PAGE (sixteen pages): for protocol p and n
#                        cores, ROUTE_BYTES at (p * PAIR_STRIDE + n - 1):
#                        qword count, then (child, subtree mask) pairs
# kernel/skb.py has the same numbers.
#
# Image arguments: probe=1 to check stale TLB entries (tests); show=1 to
# print the replica when the monitors stop (the two-phase commit demo).

MAX_MONITOR_CORES = 32                # pair rings for 32 x 32 fill 342 pages
PAIR_STRIDE = 32
RINGS_PER_PAGE = 3
RING_BYTES = 1088                     # a URPC ring (1024) and its ack line (64)
PAIR_PAGES = 0
BROADCAST_PAGE = 342
SKB_PAGE = 343
SKB_MEASURED = 0                      # the boot barrier: monitors done measuring
SKB_READY = 64                        # 1 once the SKB has written the routes
SKB_INBOUND = 1024                    # per core: a mask of cores that send it requests
LATENCY_PAGE = 344
ROUTE_PAGE = 346
ROUTE_BYTES = 512
SKB_QUERY = 0x534B42                  # "SKB" in rax at skb_query: the host answers
WARMUP_TRIPS = 2
SAMPLE_TRIPS = 4
PROBE = 0
SHOW = 0                              # 1: print the replica when stopping

BROADCAST = 1                         # protocol numbers, as in kernel/skb.py
OP_PREPARE = 1                        # map the page and touch it: a TLB entry
OP_INVALIDATE = 2                     # unmap it and invlpg: the shootdown
OP_TOUCH = 3                          # read it (faults if invalidated); no ack
OP_STOP = 4                           # exit
OP_RETYPE = 5                         # a client asks monitor 0: retype a region
OP_PREPARE_RETYPE = 6                 # 2PC phase 1: lock your copy and vote
OP_COMMIT = 7                         # 2PC phase 2: the retype happened
OP_ABORT = 8                          # 2PC phase 2: it did not; unlock
FIRST_VALUE = 0x7A6E0000              # what the initiator writes into the page

# A request and an acknowledgement, as URPC payload words
MSG_OP = 0
MSG_PAGE = 8
MSG_SUBTREE = 16                      # the cores the receiver forwards it to
MSG_PARTICIPANTS = 24                 # the cores taking part (broadcast: who acts)
MSG_EXPECTED = 32                     # the value the page holds
MSG_PARENT = 40                       # whom to acknowledge
ACK_COUNT = 0                         # cores that invalidated, in the subtree
ACK_STALE = 8                         # of them, how many saw the stale page
MSG_REGION = 8                        # 2PC: the shared region
MSG_TXN = 16                          # 2PC: the transaction's number
MSG_INITIATOR = 24                    # 2PC: the core that retypes it
VOTE_RESULT = 0                       # 0 yes, else the error code of the refusal
VOTE_CORE = 8                         # who votes

# The replica (see the top of this file)
REPLICA = USER_STACK_TOP - 4096
REPLICA_MAGIC = 0
REPLICA_CORE = 8
REPLICA_COMMITS = 16
REPLICA_ABORTS = 24
REPLICA_REGIONS = 64
REGION_RECORD = 32
REGION_STATE = 0
REGION_OWNER = 8
REGION_VERSION = 16
REGION_PENDING = 24
MAGIC_WORD = 0x31524F54494E4F4D        # "MONITOR1", little endian
RETYPED = 1
NO_OWNER = -1
SLOT_RETYPED = 236                    # + region: where monitor 0 keeps what it made

# Our frame, at r15 for the whole run
SEND_ENDS = 0                         # URPC send end to each core
RECV_ENDS = 768                       # URPC receive end from each core
BCAST_END = 1536                      # the broadcast ring (send on 0, receive elsewhere)
MSG = 1600                            # the request being handled
OUT = 1664                            # the request being sent
ACK = 1728                            # our acknowledgement
ACK_IN = 1792                         # a child's acknowledgement
EXPECTED = 1856                       # root: what it last wrote into the page
INBOUND = 1864                        # the cores we take requests from (a mask)
CLIENT = 1872                         # root: the LMP client's dispatcher
T0 = 1880                             # a clock reading
REQUEST = 1888                        # root: op, page, protocol, cores
TXN = 1920                            # root: the last transaction's number
VERDICT = 1928                        # root: 0, or the first refusal's error code
REFUSER = 1936                        # root: the core that refused, or -1
FRAME = 2048

start:
    mov rbx, rdi                      # rbx = our core, for the whole run
    mov rbp, rsi                      # rbp = how many cores the machine has
    call boot_other_cores
    mov rsp, REPLICA                  # the stack goes below the replica
    call init_replica
    sub rsp, FRAME
    mov r15, rsp                      # r15 = our frame
    mov qword ptr [r15 + EXPECTED], 0
    mov qword ptr [r15 + TXN], 0
    cmp rbp, MAX_MONITOR_CORES
    ja too_many_cores
    call open_channels
    call measure_latencies
    call meet_the_skb
    test rbx, rbx
    jz root_serve
    jmp serve

too_many_cores:
    lea rdi, [rip + text_too_many]
    call print_cstr
    mov edi, 1
    call exit

# --- channels ----------------------------------------------------------------

# pair_ring(from, to) -> rax = the ring carrying messages from core `from` to `to`
#   clobbers: rcx rdx rdi
pair_ring:
    shl rdi, 5                        # from * PAIR_STRIDE
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
    ret

# --- 1. boot: measure, then ask the SKB --------------------------------------------

# measure_latencies: a ping-pong with every other core, one partner per round.
#   in: rbx, rbp, r15.  clobbers: rax rcx rdx rsi rdi r8
measure_latencies:
    push r12
    push r13
    push r14
    mov r13, rbp                      # r13 = players: the cores, made even
    test r13, 1                       # (an odd machine adds a dummy: a bye)
    jz measure_even
    inc r13
measure_even:
    xor r12d, r12d                    # r12 = the round
measure_round:
    lea rax, [r13 - 1]
    cmp r12, rax
    jae measure_done
    mov rdi, r12
    mov rsi, r13
    call partner
    cmp rax, rbp
    jae measure_next                  # the dummy: nobody to measure this round
    mov r14, rax
    mov rdi, rax
    cmp rbx, r14
    ja measure_pong
    call ping_partner                 # the lower core of the pair measures
    jmp measure_next
measure_pong:
    call pong_partner
measure_next:
    inc r12
    jmp measure_round
measure_done:
    pop r14
    pop r13
    pop r12
    ret

# partner(round, players) -> rax = our partner in this round (circle method:
# player players-1 stays put and meets player `round`; the others pair up
# as mirror images around `round`, modulo players-1).
#   in: rbx = us.  clobbers: rcx rdx
partner:
    lea rcx, [rsi - 1]                # rcx = the fixed player
    cmp rbx, rcx
    jne partner_not_fixed
    mov rax, rdi
    ret
partner_not_fixed:
    cmp rbx, rdi
    jne partner_mirror
    mov rax, rcx
    ret
partner_mirror:
    lea rax, [rdi * 2 + rcx]          # (2 * round - us) mod (players - 1)
    sub rax, rbx
    xor edx, edx
    div rcx
    mov rax, rdx
    ret

# ping_partner(core): time round trips to it; the fastest goes into the
# latency table, both ways (the pair is measured once).
#   in: rdi = the partner.  clobbers: rax rcx rdx rsi rdi r8
ping_partner:
    push r12
    push r13
    push r14
    mov r12, rdi                      # r12 = partner
    mov r13, WARMUP_TRIPS             # the first trips bring the lines in
ping_warm:
    call round_trip
    dec r13
    jnz ping_warm
    mov r14, -1                       # r14 = the fastest trip so far
    mov r13, SAMPLE_TRIPS
ping_sample:
    call clock
    mov qword ptr [r15 + T0], rax
    call round_trip
    call clock
    sub rax, qword ptr [r15 + T0]
    cmp rax, r14
    cmovb r14, rax
    dec r13
    jnz ping_sample
    mov rcx, USER_CHANNELS + LATENCY_PAGE * 4096
    mov rax, rbx
    shl rax, 5
    add rax, r12
    mov qword ptr [rcx + rax * 8], r14    # [us][partner]
    mov rax, r12
    shl rax, 5
    add rax, rbx
    mov qword ptr [rcx + rax * 8], r14    # [partner][us]
    pop r14
    pop r13
    pop r12
    ret

# round_trip: send OUT to core r12, wait for its echo into MSG.
#   clobbers: rax rcx rdx rsi rdi r8
round_trip:
    mov rdi, r12
    call send_end
    mov rdi, rax
    lea rsi, [r15 + OUT]
    call urpc_send
    mov rdi, r12
    call recv_end
    mov rdi, rax
    lea rsi, [r15 + MSG]
    call urpc_recv
    ret

# pong_partner(core): echo every ping of its measurement back.
#   in: rdi = the partner.  clobbers: rax rcx rdx rsi rdi r8
pong_partner:
    push r12
    push r13
    mov r12, rdi
    mov r13, WARMUP_TRIPS + SAMPLE_TRIPS
pong_next:
    mov rdi, r12
    call recv_end
    mov rdi, rax
    lea rsi, [r15 + MSG]
    call urpc_recv
    mov rdi, r12
    call send_end
    mov rdi, rax
    lea rsi, [r15 + MSG]
    call urpc_send
    dec r13
    jnz pong_next
    pop r13
    pop r12
    ret

# meet_the_skb: wait until every monitor has measured; monitor 0 asks the
# SKB for the routes and says they are ready; everyone learns whom to
# listen to.
#   clobbers: rax rcx rdx rsi rdi
meet_the_skb:
    mov rdi, USER_CHANNELS + SKB_PAGE * 4096 + SKB_MEASURED
    mov rsi, rbp
    call barrier
    mov rcx, USER_CHANNELS + SKB_PAGE * 4096
    test rbx, rbx
    jnz meet_wait
    mov rax, SKB_QUERY
    mov rdi, rbp
skb_query:
    nop                               # kernel/skb.py answers here (a host hook)
    mov qword ptr [rcx + SKB_READY], 1
    jmp meet_inbound
meet_wait:
    cmp qword ptr [rcx + SKB_READY], 1
    je meet_inbound
    pause
    jmp meet_wait
meet_inbound:
    mov rax, qword ptr [rcx + SKB_INBOUND + rbx * 8]
    mov qword ptr [r15 + INBOUND], rax
    ret

# --- 2. serving requests (every core but 0) --------------------------------------------

# serve: poll the broadcast ring and the rings of our possible parents;
# when none has a message, park (pause) until one is written.
serve:
    lea rdi, [r15 + BCAST_END]
    lea rsi, [r15 + MSG]
    call broadcast_poll
    test eax, eax
    jnz serve_got
    mov r12, qword ptr [r15 + INBOUND]
serve_inbound:
    bsf rdi, r12
    jz serve_idle
    btr r12, rdi
    call recv_end
    mov rdi, rax
    lea rsi, [r15 + MSG]
    call urpc_poll
    test eax, eax
    jnz serve_got
    jmp serve_inbound
serve_idle:
    pause
    jmp serve
serve_got:
    call handle
    jmp serve

# broadcast_poll(end, buffer) -> 1 and the message in buffer, or 0 if none.
# urpc_poll without its acknowledgement: a ring that many cores read cannot
# count for them all on one ack line (they would take turns writing it,
# one line transfer after another). The protocol's own acknowledgements
# say when the ring has room (see root_run).
#   in: rdi = our end of the broadcast ring, rsi = room for 7 words
#   clobbers: rax rcx rdx
broadcast_poll:
    mov rax, qword ptr [rdi + URPC_SEQ]
    mov rdx, rax
    and rdx, URPC_SLOTS - 1
    shl rdx, 6
    add rdx, qword ptr [rdi + URPC_RING]
    inc rax
    cmp qword ptr [rdx + URPC_CONTROL], rax
    jne broadcast_none
    mov qword ptr [rdi + URPC_SEQ], rax
    xor ecx, ecx
broadcast_copy:
    mov rax, qword ptr [rdx + rcx * 8]
    mov qword ptr [rsi + rcx * 8], rax
    inc ecx
    cmp ecx, URPC_PAYLOAD_WORDS
    jb broadcast_copy
    mov eax, 1
    ret
broadcast_none:
    xor eax, eax
    ret

# handle: carry out the request in MSG: forward, our part, acks, ack.
#   clobbers: rax rcx rdx rsi rdi r8 r9
handle:
    mov rax, qword ptr [r15 + MSG + MSG_OP]
    cmp rax, OP_PREPARE_RETYPE
    je prepare_retype
    cmp rax, OP_COMMIT
    je commit_retype
    cmp rax, OP_ABORT
    je abort_retype
    cmp rax, OP_STOP
    je handle_stop
    cmp rax, OP_TOUCH
    je touch_page
    mov rcx, qword ptr [r15 + MSG + MSG_PARTICIPANTS]
    bt rcx, rbx
    jnc handle_done                   # a broadcast not meant for us
    call forward
    call local_part
    mov qword ptr [r15 + ACK + ACK_STALE], rax
    mov qword ptr [r15 + ACK + ACK_COUNT], 1
    mov rdi, qword ptr [r15 + MSG + MSG_SUBTREE]
    call collect_acks
    mov rdi, qword ptr [r15 + MSG + MSG_PARENT]
    call send_end
    mov rdi, rax
    lea rsi, [r15 + ACK]
    call urpc_send
handle_done:
    ret
handle_stop:
    call show_replica
    xor edi, edi
    call exit

# forward: send the request on to every core of our subtree, with us as
# their parent and no subtree of their own (the SKB's trees have two
# levels: the initiator's children, and the cores an aggregator serves).
#   clobbers: rax rcx rdx rsi rdi r8
forward:
    push r12
    lea rsi, [r15 + MSG]
    lea rdi, [r15 + OUT]
    mov ecx, URPC_PAYLOAD_WORDS
    rep movsq
    mov qword ptr [r15 + OUT + MSG_SUBTREE], 0
    mov qword ptr [r15 + OUT + MSG_PARENT], rbx
    mov r12, qword ptr [r15 + MSG + MSG_SUBTREE]
forward_next:
    bsf rdi, r12
    jz forward_done
    btr r12, rdi
    call send_end
    mov rdi, rax
    lea rsi, [r15 + OUT]
    call urpc_send
    jmp forward_next
forward_done:
    pop r12
    ret

# local_part -> rax: this core's share of the request in MSG. Prepare:
# map the page and read it (now the TLB holds it). Invalidate: remove the
# PTE, then (PROBE) read the page through the stale TLB entry, then
# invlpg; rax = 1 if the stale read saw the initiator's value.
#   clobbers: rcx rdx rdi r8 r11
local_part:
    mov rdi, qword ptr [r15 + MSG + MSG_PAGE]
    cmp qword ptr [r15 + MSG + MSG_OP], OP_PREPARE
    je local_map
    mov eax, SYS_CHANNEL_UNMAP
    syscall
    xor r8d, r8d
    mov rax, PROBE
    test rax, rax
    jz local_invlpg
    call page_address
    mov rax, qword ptr [rax]          # the PTE is gone: only the TLB knows the page
    cmp rax, qword ptr [r15 + MSG + MSG_EXPECTED]
    sete r8b
local_invlpg:
    mov eax, SYS_INVLPG
    syscall
    mov rax, r8
    ret
local_map:
    mov eax, SYS_CHANNEL_MAP
    syscall
    call page_address
    mov rax, qword ptr [rax]          # the walk, and a TLB entry
    xor eax, eax
    ret

# page_address(page) -> rax = where channel page `page` is mapped
#   in: rdi = page.  clobbers: rdx
page_address:
    mov rax, rdi
    shl rax, 12
    mov rdx, USER_CHANNELS
    add rax, rdx
    ret

# collect_acks(subtree): wait for the acknowledgement of every core in the
# mask, in core order, adding its counts into ACK.
#   in: rdi = the mask.  clobbers: rax rcx rdx rsi rdi
collect_acks:
    push r12
    mov r12, rdi
collect_next:
    bsf rdi, r12
    jz collect_done
    btr r12, rdi
    call take_ack
    jmp collect_next
collect_done:
    pop r12
    ret

# take_ack(core): wait for the acknowledgement from `core`, add its counts
# into ACK.
#   in: rdi = the core.  clobbers: rax rcx rdx rsi rdi
take_ack:
    call recv_end
    mov rdi, rax
    lea rsi, [r15 + ACK_IN]
    call urpc_recv
    mov rax, qword ptr [r15 + ACK_IN + ACK_COUNT]
    add qword ptr [r15 + ACK + ACK_COUNT], rax
    mov rax, qword ptr [r15 + ACK_IN + ACK_STALE]
    add qword ptr [r15 + ACK + ACK_STALE], rax
    ret

# touch_page: read the page of the request; after a shootdown this faults
# (#PF: the CPU driver reports it and ends us). Still here: say so.
touch_page:
    mov rdi, qword ptr [r15 + MSG + MSG_PAGE]
    call page_address
touch_read:
    mov rax, qword ptr [rax]
    lea rdi, [rip + text_still_mapped]
    call print_cstr
    ret

# --- 2. the initiator (core 0) -----------------------------------------------------

# root_serve: take requests from the program on this core over LMP:
#   w0 = op, w1 = page, w2 = protocol << 8 | cores (they are cores 0 .. cores-1)
# and answer each with (cycles, cores acknowledged, stale reads seen).
root_serve:
    call lmp_recv
    mov qword ptr [r15 + CLIENT], rax
    mov qword ptr [r15 + REQUEST], rdi
    mov qword ptr [r15 + REQUEST + 8], rsi
    movzx eax, dl
    mov qword ptr [r15 + REQUEST + 24], rax
    shr rdx, 8
    mov qword ptr [r15 + REQUEST + 16], rdx
    cmp rdi, OP_TOUCH
    je root_touch
    cmp rdi, OP_STOP
    je root_stop
    cmp rdi, OP_RETYPE
    je root_retype
    call root_run
root_answer:
    mov rdi, qword ptr [r15 + CLIENT]
    mov rsi, rax
    mov rdx, qword ptr [r15 + ACK + ACK_COUNT]
    mov rcx, qword ptr [r15 + ACK + ACK_STALE]
    call lmp_send
    jmp root_serve

# root_touch: have cores 1 .. cores-1 read the page (no acknowledgement).
root_touch:
    mov qword ptr [r15 + OUT + MSG_OP], OP_TOUCH
    mov rax, qword ptr [r15 + REQUEST + 8]
    mov qword ptr [r15 + OUT + MSG_PAGE], rax
    mov rdi, qword ptr [r15 + REQUEST + 24]
    call send_to_all
    xor eax, eax
    mov qword ptr [r15 + ACK + ACK_COUNT], rax
    mov qword ptr [r15 + ACK + ACK_STALE], rax
    jmp root_answer

# root_stop: every monitor exits, we answer and exit too.
root_stop:
    mov qword ptr [r15 + OUT + MSG_OP], OP_STOP
    mov rdi, rbp
    call send_to_all
    call show_replica
    mov rdi, qword ptr [r15 + CLIENT]
    xor esi, esi
    xor edx, edx
    xor ecx, ecx
    call lmp_send
    xor edi, edi
    call exit

# send_to_all(cores): send OUT to cores 1 .. cores-1 on their pair rings.
#   clobbers: rax rcx rdx rsi rdi r8
send_to_all:
    push r12
    push r13
    mov r13, rdi
    mov r12d, 1
send_to_all_next:
    cmp r12, r13
    jae send_to_all_done
    mov rdi, r12
    call send_end
    mov rdi, rax
    lea rsi, [r15 + OUT]
    call urpc_send
    inc r12
    jmp send_to_all_next
send_to_all_done:
    pop r13
    pop r12
    ret

# root_run -> rax = cycles: run the request in REQUEST down the SKB's tree
# for its protocol and core count, and wait for every acknowledgement.
#   clobbers: rax rcx rdx rsi rdi r8 r9 r11
root_run:
    push r12
    push r13
    call clock
    mov qword ptr [r15 + T0], rax
    call route_table
    mov r12, rax                      # r12 = the routing table
    call root_message
    cmp qword ptr [r15 + REQUEST + 16], BROADCAST
    jne root_run_tree
    # Broadcast: one message that every core reads. Its readers do not
    # acknowledge on the ring (broadcast_poll), and need not: every reader
    # that takes part acknowledged the previous request before we got
    # here, so the ring has room. Say so to urpc_send.
    mov rax, qword ptr [r15 + BCAST_END + URPC_SEQ]
    mov qword ptr [r15 + BCAST_END + URPC_ACKED], rax
    lea rdi, [r15 + BCAST_END]
    lea rsi, [r15 + OUT]
    call urpc_send
    jmp root_run_local
root_run_tree:
    mov r13d, 1                       # entry 0 is the count
root_run_send:
    cmp r13, qword ptr [r12]
    ja root_run_local
    mov rdi, r13
    shl rdi, 4
    mov rax, qword ptr [r12 + rdi + 8]
    mov qword ptr [r15 + OUT + MSG_SUBTREE], rax
    mov rdi, qword ptr [r12 + rdi]
    call send_end
    mov rdi, rax
    lea rsi, [r15 + OUT]
    call urpc_send
    inc r13
    jmp root_run_send
root_run_local:
    cmp qword ptr [r15 + REQUEST], OP_INVALIDATE
    jne root_run_acks
    mov rdi, qword ptr [r15 + REQUEST + 8]
    mov eax, SYS_CHANNEL_UNMAP        # our own entry (no stale read here:
    syscall                           # switching to the client emptied our TLB)
    mov eax, SYS_INVLPG
    syscall
root_run_acks:
    mov qword ptr [r15 + ACK + ACK_COUNT], 1
    mov qword ptr [r15 + ACK + ACK_STALE], 0
    mov r13d, 1
root_run_ack:
    cmp r13, qword ptr [r12]
    ja root_run_done
    mov rdi, r13
    shl rdi, 4
    mov rdi, qword ptr [r12 + rdi]
    call take_ack
    inc r13
    jmp root_run_ack
root_run_done:
    call clock
    sub rax, qword ptr [r15 + T0]
    pop r13
    pop r12
    ret

# route_table -> rax = the SKB's table for REQUEST's protocol and core count
#   clobbers: rcx rdx
route_table:
    mov rax, qword ptr [r15 + REQUEST + 16]
    shl rax, 5                        # protocol * PAIR_STRIDE
    add rax, qword ptr [r15 + REQUEST + 24]
    dec rax                           # + cores - 1
    imul rax, rax, ROUTE_BYTES
    mov rcx, USER_CHANNELS + ROUTE_PAGE * 4096
    add rax, rcx
    ret

# root_message: build OUT for REQUEST. A prepare first maps the page here
# and writes a new value into it, which the others will read.
#   clobbers: rax rcx rdx rdi r11
root_message:
    mov rdi, qword ptr [r15 + REQUEST + 8]
    cmp qword ptr [r15 + REQUEST], OP_PREPARE
    jne root_message_fill
    mov eax, SYS_CHANNEL_MAP
    syscall
    mov rax, qword ptr [r15 + EXPECTED]
    test rax, rax
    jnz root_message_next
    mov rax, FIRST_VALUE
root_message_next:
    inc rax
    mov qword ptr [r15 + EXPECTED], rax
    mov rcx, rax
    call page_address
    mov qword ptr [rax], rcx
root_message_fill:
    mov rax, qword ptr [r15 + REQUEST]
    mov qword ptr [r15 + OUT + MSG_OP], rax
    mov qword ptr [r15 + OUT + MSG_PAGE], rdi
    mov qword ptr [r15 + OUT + MSG_SUBTREE], 0
    mov rcx, qword ptr [r15 + REQUEST + 24]
    xor eax, eax
    bts rax, rcx
    dec rax                           # cores 0 .. cores-1 take part
    mov qword ptr [r15 + OUT + MSG_PARTICIPANTS], rax
    mov rax, qword ptr [r15 + EXPECTED]
    mov qword ptr [r15 + OUT + MSG_EXPECTED], rax
    mov qword ptr [r15 + OUT + MSG_PARENT], 0
    ret

# --- 3. agreement: the replicated records of the shared regions ----------------------
#
# Every core's capability system has its own copy of each shared region's
# RAM capability (kernel/capservice.py, slot SLOT_REGIONS + r), and every
# monitor a record of each region in its replica. A retype of the whole
# region must happen on one core only, and only if the region is in use
# nowhere: a program on some core may have retyped part of its copy
# (its own frames there), and only that core knows. So monitor 0 runs a
# two-phase commit:
#
#   phase 1   it locks its own copy (CAP_LOCK: refused if the copy has
#             descendants here), then asks every other monitor to do the
#             same (OP_PREPARE_RETYPE); each answers with its vote: 0, or
#             the error its lock got. A yes holds the lock: from now on
#             nothing on that core can retype its copy.
#   decide    all yes: monitor 0 retypes its copy (if that fails, it is a
#             no after all). Any no: abort.
#   phase 2   OP_COMMIT: each unlocks its copy marking it retyped elsewhere
#             (CAP_UNLOCK, 1), and records the region as retyped by monitor
#             0. OP_ABORT: each that voted yes unlocks, and nothing else
#             changes: every replica is as it was. Both are acknowledged, so
#             when the client hears the answer every replica has applied it.
#
# Monitor 0 is the only initiator, so replicas apply the same decisions in
# the same order (each pair ring is FIFO).

# init_replica: an empty replica at REPLICA: every region free.
#   in: rbx = our core.  clobbers: rax rcx rdi
init_replica:
    mov rdi, REPLICA
    mov rax, MAGIC_WORD
    mov qword ptr [rdi + REPLICA_MAGIC], rax
    mov qword ptr [rdi + REPLICA_CORE], rbx
    xor eax, eax
    mov qword ptr [rdi + REPLICA_COMMITS], rax
    mov qword ptr [rdi + REPLICA_ABORTS], rax
    xor ecx, ecx
init_replica_region:
    mov qword ptr [rdi + REPLICA_REGIONS + REGION_STATE], 0
    mov qword ptr [rdi + REPLICA_REGIONS + REGION_OWNER], NO_OWNER
    mov qword ptr [rdi + REPLICA_REGIONS + REGION_VERSION], 0
    mov qword ptr [rdi + REPLICA_REGIONS + REGION_PENDING], 0
    add rdi, REGION_RECORD
    inc ecx
    cmp ecx, N_SHARED_REGIONS
    jb init_replica_region
    ret

# region_record(region) -> rax = its record in our replica
#   clobbers: nothing else
region_record:
    push rdi
    shl rdi, 5                        # * REGION_RECORD
    mov rax, REPLICA + REPLICA_REGIONS
    add rax, rdi
    pop rdi
    ret

# region_copy(region) -> rdi = the address of our copy of its capability
#   clobbers: nothing else
region_copy:
    add rdi, SLOT_REGIONS
    or rdi, CADDR_ROOT
    ret

# prepare_retype: phase 1 on this core: lock our copy, vote.
prepare_retype:
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_copy
    call cap_lock
    neg rax                           # 0 (yes) or the error code (no)
    mov qword ptr [r15 + ACK + VOTE_RESULT], rax
    mov qword ptr [r15 + ACK + VOTE_CORE], rbx
    test rax, rax
    jnz prepare_vote
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_record
    mov rcx, qword ptr [r15 + MSG + MSG_TXN]
    mov qword ptr [rax + REGION_PENDING], rcx
prepare_vote:
    jmp reply_to_initiator

# commit_retype: phase 2, the region was retyped by the initiator: our
# copy may never be retyped again, and the record says whose it is.
commit_retype:
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_copy
    mov esi, 1                        # retyped elsewhere
    call cap_unlock
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    mov rsi, qword ptr [r15 + MSG + MSG_INITIATOR]
    call record_commit
    jmp acknowledge_decision

# abort_retype: phase 2, no retype: undo our lock if we voted yes.
abort_retype:
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_record
    mov rcx, qword ptr [r15 + MSG + MSG_TXN]
    cmp qword ptr [rax + REGION_PENDING], rcx
    jne abort_recorded                # we voted no: nothing was locked
    mov qword ptr [rax + REGION_PENDING], 0
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_copy
    xor esi, esi
    call cap_unlock
abort_recorded:
    call count_abort
acknowledge_decision:
    mov qword ptr [r15 + ACK + VOTE_RESULT], 0
    mov qword ptr [r15 + ACK + VOTE_CORE], rbx
reply_to_initiator:
    mov rdi, qword ptr [r15 + MSG + MSG_INITIATOR]
    call send_end
    mov rdi, rax
    lea rsi, [r15 + ACK]
    jmp urpc_send                     # its ret returns from handle

# record_commit(region, owner): the region is retyped, by `owner`.
#   clobbers: rax
record_commit:
    call region_record
    mov qword ptr [rax + REGION_STATE], RETYPED
    mov qword ptr [rax + REGION_OWNER], rsi
    inc qword ptr [rax + REGION_VERSION]
    mov qword ptr [rax + REGION_PENDING], 0
    mov rax, REPLICA
    inc qword ptr [rax + REPLICA_COMMITS]
    ret

# count_abort: one more transaction rolled back, in our replica.
#   clobbers: rax
count_abort:
    mov rax, REPLICA
    inc qword ptr [rax + REPLICA_ABORTS]
    ret

# root_retype: the client asked (w1 = region, w2 = type << 8) for the region
# to become one object of that type (its whole size). Two-phase commit;
# the answer is (0 or the refusal's error code, the core that refused or
# -1, the transaction's number).
root_retype:
    mov qword ptr [r15 + VERDICT], 0
    mov qword ptr [r15 + REFUSER], -1
    inc qword ptr [r15 + TXN]
    mov rdi, qword ptr [r15 + REQUEST + 8]
    cmp rdi, N_SHARED_REGIONS
    jae root_retype_invalid
    call region_copy
    call cap_lock                     # our own vote comes first
    test rax, rax
    jnz root_retype_refused_here
    mov rdi, qword ptr [r15 + REQUEST + 8]
    call region_record
    mov rcx, qword ptr [r15 + TXN]
    mov qword ptr [rax + REGION_PENDING], rcx
    mov edi, OP_PREPARE_RETYPE        # phase 1
    call root_decision_message
    mov rdi, rbp
    call send_to_all
    call gather_votes
    cmp qword ptr [r15 + VERDICT], 0
    jne root_retype_abort
    mov rdi, qword ptr [r15 + REQUEST + 8]   # everyone said yes: do it
    mov rsi, 0
    mov rdx, qword ptr [r15 + REQUEST + 16]   # the type
    mov ecx, SHARED_REGION_BITS
    mov r8d, 1
    lea r9, [rdi + SLOT_RETYPED]
    or r9, CADDR_ROOT
    call region_copy
    call cap_retype
    test rax, rax
    jz root_retype_commit
    neg rax                           # it failed here after all: abort
    mov qword ptr [r15 + VERDICT], rax
    mov qword ptr [r15 + REFUSER], 0
root_retype_abort:
    mov rdi, qword ptr [r15 + REQUEST + 8]
    call region_copy
    xor esi, esi
    call cap_unlock
    mov rdi, qword ptr [r15 + REQUEST + 8]
    call region_record
    mov qword ptr [rax + REGION_PENDING], 0
    call count_abort
    mov edi, OP_ABORT
    jmp root_retype_phase2
root_retype_commit:
    mov rdi, qword ptr [r15 + REQUEST + 8]
    call region_copy
    xor esi, esi                      # ours has the new object under it
    call cap_unlock
    mov rdi, qword ptr [r15 + REQUEST + 8]
    xor esi, esi                      # owner: core 0
    call record_commit
    mov edi, OP_COMMIT
root_retype_phase2:
    call root_decision_message
    mov rdi, rbp
    call send_to_all
    call gather_votes                 # the acknowledgements (all say 0)
root_retype_answer:
    mov rdi, qword ptr [r15 + CLIENT]
    mov rsi, qword ptr [r15 + VERDICT]
    mov rdx, qword ptr [r15 + REFUSER]
    mov rcx, qword ptr [r15 + TXN]
    call lmp_send
    jmp root_serve
root_retype_refused_here:
    neg rax
    mov qword ptr [r15 + VERDICT], rax
    mov qword ptr [r15 + REFUSER], 0
    jmp root_retype_answer            # nobody else was asked: nothing to undo
root_retype_invalid:
    mov qword ptr [r15 + VERDICT], CAPERR_INVALID_ARGUMENT
    mov qword ptr [r15 + REFUSER], 0
    jmp root_retype_answer

# root_decision_message(op): OUT = op on REQUEST's region, this transaction.
#   clobbers: rax
root_decision_message:
    mov qword ptr [r15 + OUT + MSG_OP], rdi
    mov rax, qword ptr [r15 + REQUEST + 8]
    mov qword ptr [r15 + OUT + MSG_REGION], rax
    mov rax, qword ptr [r15 + TXN]
    mov qword ptr [r15 + OUT + MSG_TXN], rax
    mov qword ptr [r15 + OUT + MSG_INITIATOR], 0
    ret

# gather_votes: one answer from each of cores 1 .. rbp-1, in order; the
# first refusal goes into VERDICT and REFUSER.
#   clobbers: rax rcx rdx rsi rdi r8
gather_votes:
    push r12
    mov r12d, 1
gather_next:
    cmp r12, rbp
    jae gather_done
    mov rdi, r12
    call recv_end
    mov rdi, rax
    lea rsi, [r15 + ACK_IN]
    call urpc_recv
    mov rax, qword ptr [r15 + ACK_IN + VOTE_RESULT]
    test rax, rax
    jz gather_yes
    cmp qword ptr [r15 + VERDICT], 0
    jne gather_yes                    # keep the first refusal
    mov qword ptr [r15 + VERDICT], rax
    mov rax, qword ptr [r15 + ACK_IN + VOTE_CORE]
    mov qword ptr [r15 + REFUSER], rax
gather_yes:
    inc r12
    jmp gather_next
gather_done:
    pop r12
    ret

# show_replica: with SHOW=1, one line: our replica's records.
#   "monitor 2: region 0 retyped by 0 v1, region 1 free v0, ... (1 committed, 1 rolled back)"
#   clobbers: rax rcx rdx rsi rdi r8
show_replica:
    mov rax, SHOW
    test rax, rax
    jz show_done
    push r12
    lea rdi, [rip + text_monitor]
    call print_cstr
    mov rdi, rbx
    call print_u64
    lea rdi, [rip + text_colon]
    call print_cstr
    xor r12d, r12d
show_region:
    lea rdi, [rip + text_region]
    call print_cstr
    mov rdi, r12
    call print_u64
    mov rdi, r12
    call region_record
    cmp qword ptr [rax + REGION_STATE], RETYPED
    je show_retyped
    lea rdi, [rip + text_free]
    call print_cstr
    jmp show_version
show_retyped:
    lea rdi, [rip + text_retyped_by]
    call print_cstr
    mov rdi, r12
    call region_record
    mov rdi, qword ptr [rax + REGION_OWNER]
    call print_u64
show_version:
    lea rdi, [rip + text_version]
    call print_cstr
    mov rdi, r12
    call region_record
    mov rdi, qword ptr [rax + REGION_VERSION]
    call print_u64
    inc r12
    cmp r12, N_SHARED_REGIONS
    jae show_counts
    lea rdi, [rip + text_comma]
    call print_cstr
    jmp show_region
show_counts:
    lea rdi, [rip + text_open]
    call print_cstr
    mov rax, REPLICA
    mov rdi, qword ptr [rax + REPLICA_COMMITS]
    call print_u64
    lea rdi, [rip + text_committed]
    call print_cstr
    mov rax, REPLICA
    mov rdi, qword ptr [rax + REPLICA_ABORTS]
    call print_u64
    lea rdi, [rip + text_rolled_back]
    call print_cstr
    pop r12
show_done:
    ret

text_monitor:      .asciz "monitor "
text_colon:        .asciz ":"
text_region:       .asciz " region "
text_free:         .asciz " free"
text_retyped_by:   .asciz " retyped by "
text_version:      .asciz " v"
text_comma:        .asciz ","
text_open:         .asciz " ("
text_committed:    .asciz " committed, "
text_rolled_back:  .asciz " rolled back)\n"

text_too_many:     .asciz "monitor: more cores than the pair channels serve (32)\n"
text_still_mapped: .asciz "monitor: the page is still mapped after the shootdown\n"

.include "monitor_boot.S"
.include "lib/urpc.S"
.include "lib/measure.S"
.include "lib/sprat.S"
