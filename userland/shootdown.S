# shootdown.S: ask the monitor for TLB shootdowns, and time them.
#
# Runs on core 0 beside monitor 0 (userland/monitor.S), and asks it on
# this core's client rings (lib/monitor_client.S). For every protocol p in the
# mask PROTOCOLS (bit 0 unicast, 1 broadcast, 2 multicast, 3 NUMA-aware
# multicast) and every core count n in the mask COUNTS (bit n-1: n cores,
# cores 0 .. n-1 sharing the page, a spanning domain's cores) it does
# WARMUPS + RUNS runs (the first warm the caches; of the other RUNS it
# reports the median, so that a run that a time-slice interrupt of the
# initiator's core fell into does not stand for the protocol):
#
#   prepare    the monitors map the page PAGE on cores 0 .. n-1 and read
#              it, so that every TLB holds it;
#   MODE 0     "shoot it down": the monitor times one shootdown itself and
#              we print     shootdown protocol P cores N cycles C acked A stale S
#   MODE 1     end to end, in a spanning domain: first our domain spans
#              cores 0 .. n-1 (MONITOR_SPAN starts boot module MEMBER,
#              userland/span_member.S, on each core it lacks, and every
#              monitor records the domain's cores; the members stay until
#              we set the done word in DOMAIN_PAGE); then our own unmap (a
#              system call), then the request to the monitor, which runs
#              the NUMA-aware multicast; timed here:
#                           unmap cores N cycles C acked A stale S
#   MODE 2     like MODE 0 once, then every other core touches the page,
#              which must fault now (the tests)
#
# acked: cores that invalidated (must be n; the fewest of the reported
# runs); stale: cores that could still read the page after their PTE was
# gone, before their invlpg (monitors built with probe=1; otherwise 0; the
# most of the reported runs). At the end we stop the monitors.
#
# Image arguments: protocols=MASK counts=MASK mode=0|1|2 page=P member=MODULE
# runs=1..13 (sprat bench tlb and unmap ask for 5)

PROTOCOLS = 15
COUNTS = 0x8080808A                    # 2, 4, 8, 16, 24, 32 cores
MODE = 0
PAGE = MONITOR_FIRST_PAGE             # the page shot down: the programs' first
NUMA_MULTICAST = 3
MAX_PROTOCOLS = 4
WARMUPS = 1                           # runs that warm the caches, not reported
RUNS = 1                              # runs reported: their median
MAX_RUNS = 13                         # room in TIMES
ENDS = USER_STACK_TOP - 256           # our ends of the client rings
SPANNED = ENDS + 128                  # how many cores our domain spans so far
TIMES = ENDS + 136                    # the reported runs' cycles (MAX_RUNS words)
ACKED_LEAST = ENDS + 240              # the fewest cores that acknowledged a run
STALE_MOST = ENDS + 248               # the most stale reads a run saw
MEMBER = 0                            # the image's span_member.S module (mode 1)
DOMAIN = 1                            # our domain's number
DOMAIN_PAGE = MONITOR_FIRST_PAGE + 1  # its done word: our members leave when it is set

start:
    mov rbp, rsi                      # rbp = how many cores the machine has
    mov rsp, ENDS                     # our ends of the client rings, above the stack
    mov rdi, rsp
    call monitor_open
    mov rax, RUNS
    dec rax
    cmp rax, MAX_RUNS
    jb runs_fit
    lea rdi, [rip + text_bad_runs]
    call print_cstr
    mov rdi, ENDS
    jmp stop_monitors_and_fail
runs_fit:
    xor r12d, r12d                    # r12 = the protocol
    mov rax, MODE
    cmp rax, 1
    jne next_protocol
    mov r12, NUMA_MULTICAST           # end to end: the monitor's best protocol
    jmp protocol_chosen
next_protocol:
    cmp r12, MAX_PROTOCOLS
    jae finished
    mov rax, PROTOCOLS
    bt rax, r12
    jnc protocol_done
protocol_chosen:
    mov r13d, 1                       # r13 = the core count
next_count:
    cmp r13, rbp
    ja protocol_done
    mov rax, COUNTS
    lea rcx, [r13 - 1]
    bt rax, rcx
    jnc count_done
    call measure
count_done:
    inc r13
    jmp next_count
protocol_done:
    inc r12
    mov rax, MODE
    cmp rax, 1
    jne next_protocol                 # end to end uses one protocol only
finished:
    mov rax, USER_CHANNELS + DOMAIN_PAGE * 4096
    mov qword ptr [rax], 1            # our domain is done: its members leave
    mov rdi, ENDS
    jmp stop_monitors_and_exit

# measure: WARMUPS + RUNS shootdowns of protocol r12 over r13 cores;
# print the median of the last RUNS.
#   clobbers: rax rcx rdx rsi rdi r8-r11 r14
measure:
    push rbx
    push r15
    push rbp
    mov rax, MODE
    cmp rax, 1
    jne measure_spanned
    call span_domain
measure_spanned:
    mov rax, ACKED_LEAST
    mov qword ptr [rax], -1
    mov rax, STALE_MOST
    mov qword ptr [rax], 0
    mov r14, WARMUPS + RUNS
measure_run:
    mov rdi, MONITOR_MAP_PAGE
    call ask
    mov rax, MODE
    cmp rax, 1
    je measure_end_to_end
    mov rdi, MONITOR_SHOOTDOWN
    call ask                          # rdi = cycles, as the monitor timed them
    cmp rdi, -1
    je refused
    mov rbx, rdi
    jmp measure_ran
measure_end_to_end:
    call clock
    mov rbx, rax
    mov eax, SYS_CHANNEL_UNMAP        # our own PTE ...
    mov edi, PAGE
    syscall
    mov rdi, MONITOR_SHOOTDOWN        # ... and the monitor does the rest
    call ask
    cmp rdi, -1
    je refused
    push rdx                          # the stale reads (clock clobbers rdx)
    call clock
    pop rdx
    sub rax, rbx
    mov rbx, rax
measure_ran:
    cmp r14, RUNS
    ja measure_next                   # a warm-up run
    call keep_run
measure_next:
    dec r14
    jnz measure_run
    call median_time
    mov rbx, rax                      # rbx = the median cycles
    mov rax, ACKED_LEAST
    mov r15, qword ptr [rax]          # r15 = cores that acknowledged
    mov rax, STALE_MOST
    mov rbp, qword ptr [rax]          # rbp = stale reads seen
    mov rax, MODE
    cmp rax, 1
    je measure_print_unmap
    lea rdi, [rip + text_shootdown]
    call print_cstr
    mov rdi, r12
    call print_u64
    lea rdi, [rip + text_cores]
    call print_cstr
    jmp measure_print_rest
measure_print_unmap:
    lea rdi, [rip + text_unmap]
    call print_cstr
measure_print_rest:
    mov rdi, r13
    call print_u64
    lea rdi, [rip + text_cycles]
    call print_cstr
    mov rdi, rbx
    call print_u64
    lea rdi, [rip + text_acked]
    call print_cstr
    mov rdi, r15
    call print_u64
    lea rdi, [rip + text_stale]
    call print_cstr
    mov rdi, rbp
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    mov rax, MODE
    cmp rax, 2
    jne measure_done
    mov rdi, MONITOR_TOUCH_PAGE
    call ask
measure_done:
    pop rbp
    pop r15
    pop rbx
    ret

# refused: monitor 0 said no to a shootdown over r13 cores (more cores
# than there are monitors: monitor.S monitors=N). Say so, and fail.
refused:
    lea rdi, [rip + text_refused]
    call print_cstr
    mov rdi, r13
    call print_u64
    lea rdi, [rip + text_refused_why]
    call print_cstr
    mov rdi, ENDS
    jmp stop_monitors_and_fail

# keep_run: record a reported run: its cycles (rbx) in TIMES, as run
# RUNS - r14; the fewest acknowledgements (rsi) and the most stale reads
# (rdx) so far.
#   clobbers: rax rcx
keep_run:
    mov rcx, RUNS
    sub rcx, r14
    mov rax, TIMES
    mov qword ptr [rax + rcx * 8], rbx
    mov rax, ACKED_LEAST
    cmp rsi, qword ptr [rax]
    jae keep_run_stale
    mov qword ptr [rax], rsi
keep_run_stale:
    mov rax, STALE_MOST
    cmp rdx, qword ptr [rax]
    jbe keep_run_done
    mov qword ptr [rax], rdx
keep_run_done:
    ret

# median_time() -> rax: the median of the RUNS times in TIMES (the upper
# of the middle two if RUNS is even), sorting them in place (insertion
# sort: there are at most MAX_RUNS).
#   clobbers: rcx rdx rsi rdi r8
median_time:
    mov rdi, TIMES
    mov ecx, 1                        # rcx = the next time to insert
median_insert:
    cmp rcx, RUNS
    jae median_pick
    mov r8, qword ptr [rdi + rcx * 8] # r8 = it; the ones before are sorted
    mov rdx, rcx                      # rdx = where it goes
median_shift:
    test rdx, rdx
    jz median_place
    mov rsi, qword ptr [rdi + rdx * 8 - 8]
    cmp rsi, r8
    jbe median_place
    mov qword ptr [rdi + rdx * 8], rsi
    dec rdx
    jmp median_shift
median_place:
    mov qword ptr [rdi + rdx * 8], r8
    inc rcx
    jmp median_insert
median_pick:
    mov eax, RUNS / 2
    mov rax, qword ptr [rdi + rax * 8]
    ret

# span_domain: have our domain span cores 0 .. r13-1: a dispatcher of
# module MEMBER on each core it does not have one on yet.
#   clobbers: rax rcx rdx rsi rdi r8-r11
span_domain:
    mov rax, SPANNED
    mov rcx, qword ptr [rax]
    test rcx, rcx
    jnz span_next
    inc rcx                           # core 0 is ours already
span_next:
    cmp rcx, r13
    jae span_done
    push rcx
    mov rdx, MEMBER << 8              # w2 = module << 8 | core
    or rdx, rcx
    mov r8, DOMAIN | DOMAIN_PAGE << 8   # w3: its argument
    mov rcx, rdx
    mov edx, DOMAIN                   # w1 = the domain
    mov esi, MONITOR_SPAN
    mov rdi, ENDS
    call monitor_call
    pop rcx
    inc rcx
    jmp span_next
span_done:
    mov rax, SPANNED
    mov qword ptr [rax], rcx
    ret

# ask(op) -> rdi, rsi, rdx = the monitor's answer: op on PAGE, protocol
# r12, cores r13.
#   clobbers: rax rcx rdx rsi rdi r8-r11
ask:
    mov rsi, rdi                      # the op
    mov rcx, r12                      # w2 = protocol << 8 | cores
    shl rcx, 8
    or rcx, r13
    mov edx, PAGE                     # w1 = the page
    mov rdi, ENDS
    call monitor_call
    mov rdi, rax
    mov rsi, rdx
    mov rdx, rcx
    ret

text_shootdown: .asciz "shootdown protocol "
text_unmap:     .asciz "unmap cores "
text_cores:     .asciz " cores "
text_cycles:    .asciz " cycles "
text_acked:     .asciz " acked "
text_stale:     .asciz " stale "
text_newline:   .asciz "\n"
text_bad_runs:  .asciz "shootdown.S: runs must be 1 to 13\n"
text_refused:   .asciz "shootdown.S: monitor 0 refused a shootdown over "
text_refused_why: .asciz " cores (are there fewer monitors?)\n"

.include "lib/monitor_client.S"
.include "lib/urpc.S"
.include "lib/measure.S"
.include "lib/sprat.S"
