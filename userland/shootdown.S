# shootdown.S: ask the monitor for TLB shootdowns, and time them.
#
# Runs on core 0 beside monitor 0 (userland/monitor.S, dispatcher MONITOR
# of this core), and talks to it over LMP. For every protocol p in the
# mask PROTOCOLS (bit 0 unicast, 1 broadcast, 2 multicast, 3 NUMA-aware
# multicast) and every core count n in the mask COUNTS (bit n-1: n cores,
# cores 0 .. n-1 sharing the page, a spanning domain's cores) it does,
# twice (the first run warms the caches, the second is reported):
#
#   prepare    the monitors map the page PAGE on cores 0 .. n-1 and read
#              it, so that every TLB holds it;
#   MODE 0     "shoot it down": the monitor times one shootdown itself and
#              we print     shootdown protocol P cores N cycles C acked A stale S
#   MODE 1     end to end: our own unmap (a system call), then the request
#              to the monitor, which runs the NUMA-aware multicast; timed
#              here:        unmap cores N cycles C acked A stale S
#   MODE 2     like MODE 0 once, then every other core touches the page,
#              which must fault now (the tests)
#
# acked: cores that invalidated (must be n); stale: cores that could still
# read the page after their PTE was gone, before their invlpg (monitors
# built with probe=1; otherwise 0). At the end we stop the monitors.
#
# Image arguments: protocols=MASK counts=MASK mode=0|1|2 page=P

MONITOR = 0                           # monitor 0's dispatcher on this core
PROTOCOLS = 15
COUNTS = 0x8080808A                    # 2, 4, 8, 16, 24, 32 cores
MODE = 0
PAGE = 362
NUMA_MULTICAST = 3
OP_PREPARE = 1                        # as in userland/monitor.S
OP_INVALIDATE = 2
OP_TOUCH = 3
OP_STOP = 4
MAX_PROTOCOLS = 4
RUNS = 2                              # a warm-up run, then the reported one

start:
    mov rbp, rsi                      # rbp = how many cores the machine has
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
    mov rdi, MONITOR
    mov esi, OP_STOP
    xor edx, edx
    xor ecx, ecx
    call lmp_call
    xor edi, edi
    call exit

# measure: RUNS shootdowns of protocol r12 over r13 cores; print the last.
#   clobbers: rax rcx rdx rsi rdi r8-r11 r14
measure:
    push rbx
    push r15
    push rbp
    mov r14, RUNS
measure_run:
    mov rdi, OP_PREPARE
    call ask
    mov rax, MODE
    cmp rax, 1
    je measure_end_to_end
    mov rdi, OP_INVALIDATE
    call ask                          # rdi = cycles, as the monitor timed them
    mov rbx, rdi
    jmp measure_ran
measure_end_to_end:
    call clock
    mov rbx, rax
    mov eax, SYS_CHANNEL_UNMAP        # our own PTE ...
    mov edi, PAGE
    syscall
    mov rdi, OP_INVALIDATE            # ... and the monitor does the rest
    call ask
    call clock
    sub rax, rbx
    mov rbx, rax
measure_ran:
    mov r15, rsi                      # r15 = cores that acknowledged
    mov rbp, rdx                      # rbp = stale reads seen
    dec r14
    jnz measure_run
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
    mov rdi, OP_TOUCH
    call ask
measure_done:
    pop rbp
    pop r15
    pop rbx
    ret

# ask(op) -> rdi, rsi, rdx = the monitor's answer: op on PAGE, protocol
# r12, cores r13.
#   clobbers: rax rcx rdx rsi rdi r8-r11
ask:
    mov rsi, rdi                      # w0 = the op
    mov rcx, r12                      # w2 = protocol << 8 | cores
    shl rcx, 8
    or rcx, r13
    mov edx, PAGE                     # w1 = the page
    mov edi, MONITOR
    jmp lmp_call                      # its ret returns to our caller

text_shootdown: .asciz "shootdown protocol "
text_unmap:     .asciz "unmap cores "
text_cores:     .asciz " cores "
text_cycles:    .asciz " cycles "
text_acked:     .asciz " acked "
text_stale:     .asciz " stale "
text_newline:   .asciz "\n"

.include "lib/measure.S"
.include "lib/sprat.S"
