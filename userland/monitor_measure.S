# monitor_measure.S: at boot the monitors measure the machine for the SKB.
#
# Included by monitor.S. Each monitor measures the URPC round trip to
# every other monitor, one pair at a time per core, the pairs scheduled as
# the rounds of a round-robin tournament (circle method: every round pairs
# every core with a different one, so all cores are busy and boot stays
# short). The lower core of a pair pings, keeps the fastest of
# SAMPLE_TRIPS timed round trips (a timer interrupt inflates one, never
# all) and writes it into the latency table in the SKB's pages. When all
# monitors have measured, monitor 0 asks the SKB (the system knowledge
# base, kernel/skb.py, which runs on the host) at the label `skb_query`:
# the SKB reads the table, computes the routing trees and writes them
# back; monitor 0 then raises SKB_READY and every monitor starts serving.

WARMUP_TRIPS = 2
SAMPLE_TRIPS = 4

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
    shl rax, PAIR_SHIFT
    add rax, r12
    mov qword ptr [rcx + rax * 8], r14    # [us][partner]
    mov rax, r12
    shl rax, PAIR_SHIFT
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
# SKB for the routes and says they are ready.
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
    ret
meet_wait:
    cmp qword ptr [rcx + SKB_READY], 1
    je meet_done
    pause
    jmp meet_wait
meet_done:
    ret
