# measure.S: helpers for programs that measure themselves (the benches).
#
# A measuring program lines its cores up with `barrier`, reads the core's
# modeled clock with `clock` around the work it measures, and prints one
# line the host parses with `report`. Counters that cores share live in a
# channel frame: that is the only memory every core sees (and the cost
# model charges every access to it, so keep them off the measured path).
#
# Include it before lib/sprat.S (report prints through it).

# clock() -> rax = the core's modeled cycle count
#   rdtsc returns it in edx:eax; the machine keeps it deterministic.
#   clobbers: rdx
clock:
    rdtsc
    shl rdx, 32
    or rax, rdx
    ret

# arrive(counter): count this core in, atomically.
#   in: rdi = a counter word in a channel frame (zero at boot)
#   clobbers: nothing
arrive:
    lock inc qword ptr [rdi]
    ret

# barrier(counter, n): count this core in, then wait until n cores have.
#   in: rdi = a counter word in a channel frame (zero at boot), rsi = n
#   clobbers: nothing
#   The wait is `pause` in a loop: the machine parks the core until another
#   core writes the counter's line, so waiting costs the host nothing.
barrier:
    lock inc qword ptr [rdi]
barrier_wait:
    cmp qword ptr [rdi], rsi
    jae barrier_done
    pause
    jmp barrier_wait
barrier_done:
    ret

# report(label, updates, cycles): print "LABEL updates N cycles C\n".
#   in: rdi = a NUL-terminated label, rsi = updates, rdx = cycles
#   clobbers: rax rcx rdx rsi rdi r8-r11
report:
    push rbx
    push r12
    mov rbx, rsi
    mov r12, rdx
    call print_cstr
    lea rdi, [rip + report_space]
    call print_cstr
    mov rdi, rbx
    call print_u64
    lea rdi, [rip + report_cycles]
    call print_cstr
    mov rdi, r12
    call print_u64
    lea rdi, [rip + report_newline]
    call print_cstr
    pop r12
    pop rbx
    ret

report_space:   .asciz " "
report_cycles:  .asciz " cycles "
report_newline: .asciz "\n"
