# strings.S: the CPU driver's messages (read-only, in the image).

str_user_fault:   .asciz "cpu driver: user fault: "
str_killed:       .asciz ": program killed\n"
str_kernel_panic: .asciz "cpu driver: KERNEL PANIC: "
str_at_rip:       .asciz " at rip "
str_address:      .asciz ", address "
str_error:        .asciz ", error "
str_exit_status:  .asciz "cpu driver: program exited with status "
str_deadlock:     .asciz "cpu driver: every dispatcher left waits for a message that cannot come\n"

str_exc_0:  .asciz "#DE divide error"
str_exc_1:  .asciz "#DB debug"
str_exc_2:  .asciz "NMI"
str_exc_3:  .asciz "#BP breakpoint"
str_exc_4:  .asciz "#OF overflow"
str_exc_5:  .asciz "#BR bound range exceeded"
str_exc_6:  .asciz "#UD invalid opcode"
str_exc_7:  .asciz "#NM device not available"
str_exc_8:  .asciz "#DF double fault"
str_exc_9:  .asciz "coprocessor segment overrun"
str_exc_10: .asciz "#TS invalid TSS"
str_exc_11: .asciz "#NP segment not present"
str_exc_12: .asciz "#SS stack fault"
str_exc_13: .asciz "#GP general protection"
str_exc_14: .asciz "#PF page fault"
str_exc_15: .asciz "reserved exception 15"
str_exc_16: .asciz "#MF x87 floating point"
str_exc_17: .asciz "#AC alignment check"
str_exc_18: .asciz "#MC machine check"
str_exc_19: .asciz "#XM SIMD floating point"
str_exc_rsv: .asciz "reserved exception"

.align 8
exception_names:
    .quad str_exc_0, str_exc_1, str_exc_2, str_exc_3
    .quad str_exc_4, str_exc_5, str_exc_6, str_exc_7
    .quad str_exc_8, str_exc_9, str_exc_10, str_exc_11
    .quad str_exc_12, str_exc_13, str_exc_14, str_exc_15
    .quad str_exc_16, str_exc_17, str_exc_18, str_exc_19
    .quad str_exc_rsv, str_exc_rsv, str_exc_rsv, str_exc_rsv
    .quad str_exc_rsv, str_exc_rsv, str_exc_rsv, str_exc_rsv
    .quad str_exc_rsv, str_exc_rsv, str_exc_rsv, str_exc_rsv
