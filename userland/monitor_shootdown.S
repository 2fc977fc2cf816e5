# monitor_shootdown.S: TLB shootdown, the monitors' one-phase protocol.
#
# Included by monitor.S. A page of the shared window (the channel frames
# at USER_CHANNELS, mapped in every monitor's window through its core's
# page tables, which map every channel; a program's window is its own,
# kernel/channels.py) is unmapped in a domain that spans cores
# 0 .. n-1: every core must drop it from its page table and its TLB, and
# none may refuse, so one phase is enough: monitor 0 sends the request
# down the routing tree of the protocol asked for and the unmap is done
# when every core has acknowledged.
#
# A request is handled the same way at every level of the tree
# (shootdown_step): forward it to our subtree first (so the children
# start while we work), do our own part, collect the subtree's
# acknowledgements, acknowledge to our parent with the sum. The SKB
# (kernel/skb.py) computed the trees at boot from the latencies the
# monitors measured (monitor_measure.S): unicast (core 0 sends to
# everyone), broadcast (one message on a ring all cores read), multicast
# (one per package, an aggregator forwards inside it) and NUMA-aware
# multicast.
#
# "Our own part" of an invalidation is SYS_CHANNEL_UNMAP then SYS_INVLPG
# of the page: until the invlpg this core still reaches the page through
# its stale TLB entry even though the PTE is gone. With PROBE=1 the
# monitor reads the page in between and counts in its acknowledgement
# whether it saw the initiator's value there (the test that the stale
# entry is real). Only where the monitor has its core to itself: a switch
# to another dispatcher reloads CR3, which empties the TLB, and the probe's
# read would fault.
#
# Client requests (userland/shootdown.S): w1 = the page, w2 = protocol << 8
# | cores. OP_PREPARE maps the page on cores 0 .. cores-1 and reads it;
# OP_INVALIDATE shoots it down, answered with (cycles monitor 0 measured,
# cores that acknowledged, stale reads seen); OP_TOUCH has every other
# core read it (which faults once it is gone).

BROADCAST = 1                         # protocol numbers, as in kernel/skb.py
PROTOCOLS = 4
FIRST_VALUE = 0x7A6E0000              # what the initiator writes into the page
MSG_PAGE = 8                          # a request's words after MSG_OP
MSG_SUBTREE = 16                      # the cores the receiver forwards it to
MSG_PARTICIPANTS = 24                 # the cores taking part (broadcast: who acts)
MSG_EXPECTED = 32                     # the value the page holds
MSG_PARENT = 40                       # whom to acknowledge

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

# shootdown_step: carry out the shootdown request in MSG (OP_PREPARE or
# OP_INVALIDATE) at any level of the tree, if it is meant for us (a
# broadcast reaches every core; MSG_PARTICIPANTS says who takes part).
#   clobbers: everything but rbx rbp r15
shootdown_step:
    mov rcx, qword ptr [r15 + MSG + MSG_PARTICIPANTS]
    bt rcx, rbx
    jc shootdown_node
    ret                               # a broadcast not meant for us

# shootdown_node: our part of the request in MSG, which our parent
# (MSG_PARENT) sent us with our subtree (MSG_SUBTREE, a mask of cores):
# forward it to every core of the subtree, with us as their parent and no
# subtree of their own (the SKB's trees have two levels: the initiator's
# children, and the cores an aggregator serves); do our own part (a
# prepare: local_map; an invalidation: unmap_page, then invlpg); wait for
# the subtree's acknowledgements (take_ack adds each into ACK); then
# acknowledge to our parent with ACK: ACK_COUNT = the cores that did it,
# us and our subtree, ACK_STALE = the stale reads among them.
#   in: rbx = our core, r15 = our frame, MSG = the request
#   clobbers: everything but rbx rbp r15
# LAB shootdown BEGIN node
shootdown_node:
    call forward                      # first, so the subtree starts while we work
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
    ret

# forward: send MSG on to every core of our subtree, as OUT, with us as
# their parent and an empty subtree.
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
# map the page and read it (local_map). Invalidate: remove the PTE
# (unmap_page), then invlpg, for until then our TLB still holds the page;
# rax = what unmap_page's probe saw.
#   clobbers: rcx rdx rdi r8 r11
local_part:
    mov rdi, qword ptr [r15 + MSG + MSG_PAGE]
    cmp qword ptr [r15 + MSG + MSG_OP], OP_PREPARE
    je local_map
    call unmap_page
    mov r8, rax
    mov eax, SYS_INVLPG
    syscall
    mov rax, r8
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
# LAB shootdown END node

# local_map(page) -> rax = 0: map the page here and read it (now the TLB
# holds it).
#   in: rdi = the page.  clobbers: rcx rdx r11
local_map:
    mov eax, SYS_CHANNEL_MAP
    syscall
    call page_address
    mov rax, qword ptr [rax]          # the walk, and a TLB entry
    xor eax, eax
    ret

# unmap_page(page) -> rax: remove this core's PTE for the page
# (SYS_CHANNEL_UNMAP); the TLB still holds it until an invlpg. With PROBE=1,
# read the page right after: rax = 1 if that read, through the stale TLB
# entry, saw the initiator's value, else 0. Without PROBE, 0.
# The probe reads the page once more just before the unmap too: since the
# prepare this monitor has polled a ring on every other core's page, and a
# TLB may drop any entry at any time (unicorn's is direct-mapped: on
# amd-8x4 core 8's ring from core 15 took the page's slot, and the probe's
# read faulted).
#   in: rdi = the page (kept).  clobbers: rcx rdx r11
unmap_page:
    mov rdx, PROBE
    test rdx, rdx
    jnz unmap_page_probed
    mov eax, SYS_CHANNEL_UNMAP
    syscall
    xor eax, eax
    ret
unmap_page_probed:
    call page_address
    mov rax, qword ptr [rax]          # now the TLB surely holds the page
    mov eax, SYS_CHANNEL_UNMAP
    syscall
    call page_address
    mov rax, qword ptr [rax]          # the PTE is gone: only the TLB knows the page
    cmp rax, qword ptr [r15 + MSG + MSG_EXPECTED]
    sete al
    movzx eax, al
    ret

# page_address(page) -> rax = where channel page `page` is mapped
#   in: rdi = page.  clobbers: rdx
page_address:
    mov rax, rdi
    shl rax, 12
    mov rdx, USER_CHANNELS
    add rax, rdx
    ret

# take_ack(core): wait for the acknowledgement from `core`, add its counts
# into ACK.
#   in: rdi = the core.  clobbers: rax rcx rdx rsi rdi
take_ack:
    call recv_reply
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

# root_shootdown: map the page on every core of the request, or shoot it
# down; answer (cycles, cores that acknowledged, stale reads seen).
root_shootdown:
    call check_page_request
    jnz refuse_page_request
    call root_run
    mov rsi, rax
    mov rdx, qword ptr [r15 + ACK + ACK_COUNT]
    mov rcx, qword ptr [r15 + ACK + ACK_STALE]
    jmp answer

# root_touch: have cores 1 .. cores-1 read the page (no acknowledgement).
root_touch:
    call check_page_request
    jnz refuse_page_request
    mov qword ptr [r15 + OUT + MSG_OP], OP_TOUCH
    mov rax, qword ptr [r15 + REQUEST + 8]
    mov qword ptr [r15 + OUT + MSG_PAGE], rax
    mov rdi, qword ptr [r15 + REQUEST + 24]
    call send_to_all
    xor esi, esi
    xor edx, edx
    xor ecx, ecx
    jmp answer

# check_page_request -> ZF set if REQUEST is one we may run: a page of the
# programs' part of the window (MONITOR_FIRST_PAGE and up: the pages below
# are the monitors' own channels), a protocol the SKB has routes for, and
# 1 .. (cores we have) cores. Anything else is a program's mistake, or
# worse: it must not make the monitors unmap their own channels.
#   clobbers: rax
check_page_request:
    mov rax, qword ptr [r15 + REQUEST + 8]
    cmp rax, MONITOR_FIRST_PAGE
    jb check_page_request_bad
    cmp rax, N_USER_CHANNELS
    jae check_page_request_bad
    cmp qword ptr [r15 + REQUEST + 16], PROTOCOLS
    jae check_page_request_bad
    mov rax, qword ptr [r15 + REQUEST + 24]
    test rax, rax
    jz check_page_request_bad
    cmp rax, rbp
    ja check_page_request_bad
    xor eax, eax                      # ZF set: fine
    ret
check_page_request_bad:
    or eax, 1                         # ZF clear
    ret

refuse_page_request:
    mov rsi, -1
    xor edx, edx
    xor ecx, ecx
    jmp answer

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
    mov eax, SYS_CHANNEL_UNMAP        # our own entry
    syscall
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
    shl rax, PAIR_SHIFT               # protocol * PAIR_STRIDE
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
    mov ecx, 64
    sub rcx, qword ptr [r15 + REQUEST + 24]
    mov rax, -1
    shr rax, cl                       # cores 0 .. cores-1 take part (all 64 too)
    mov qword ptr [r15 + OUT + MSG_PARTICIPANTS], rax
    mov rax, qword ptr [r15 + EXPECTED]
    mov qword ptr [r15 + OUT + MSG_EXPECTED], rax
    mov qword ptr [r15 + OUT + MSG_PARENT], 0
    ret

text_still_mapped: .asciz "monitor: the page is still mapped after the shootdown\n"
