# monitor_boot.S: monitor 0 boots the other cores (included by monitor.S).
#
# In Barrelfish the BSP's CPU driver brings up only its own core; the
# monitor there boots the others, one system call per core. Here the same:
# when monitor 0's image line says `monitor`, the CPU driver has left the
# APs off (cpudriver/boot.S), and the first thing monitor 0 does is ask it
# to start cores 1 .. n-1 with SYS_START_CORE. It does not wait for them:
# each new core's CPU driver sets itself up and runs its own monitor, and
# all the monitors meet at the boot barrier (meet_the_skb) before they
# serve.
#
# A refusal is reported on the console, one line, and boot goes on: the
# usual ones mean the core runs anyway (-EBUSY: started already; -EPERM:
# this monitor's image line lacks the word `monitor`, so the CPU driver
# started every core at boot and every other call would be refused too,
# hence we stop asking).

# boot_other_cores: on core 0, start every other core; elsewhere nothing.
#   in: rbx = our core, rbp = how many cores the machine has
#   clobbers: rax rcx rdx rsi rdi r8-r11
boot_other_cores:
    test rbx, rbx
    jnz boot_other_cores_not_ours
    push r12
    push r13
    mov r12d, 1                       # r12 = the core to start
boot_other_cores_next:
    cmp r12, rbp
    jae boot_other_cores_done
    mov rdi, r12
    call start_core
    test rax, rax
    jz boot_other_cores_started
    mov r13, rax                      # r13 = why not
    lea rdi, [rip + text_boot_refused]
    call print_cstr
    mov rdi, r12
    call print_u64
    lea rdi, [rip + text_boot_error]
    call print_cstr
    mov rdi, r13
    call print_i64
    lea rdi, [rip + text_boot_newline]
    call print_cstr
    cmp r13, -EPERM
    je boot_other_cores_done          # not a monitor: the rest would be refused too
boot_other_cores_started:
    inc r12
    jmp boot_other_cores_next
boot_other_cores_done:
    pop r13
    pop r12
boot_other_cores_not_ours:
    ret

text_boot_refused: .asciz "monitor: could not start core "
text_boot_error:   .asciz ": error "
text_boot_newline: .asciz "\n"
