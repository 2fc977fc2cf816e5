# boot.S: the first instructions of every core.
#
# The boot loader starts the BSP (core 0) at kernel_entry, the first byte of
# the image, in 64-bit mode with paging off and RDI pointing at the boot
# information. The APs start, when the BSP sends them INIT and STARTUP IPIs,
# at the trampoline page in the same state; the trampoline jumps to
# ap_entry. From there both run core_init with their own core id, which
# ends by entering the core's first dispatcher (dispatch.S).

# kernel_entry: the BSP's entry point.
#   in: rdi = boot information (BOOT_INFO)
kernel_entry:
    cli
    xor r12, r12                      # the BSP is core 0
    jmp core_init

# ap_trampoline: copied to TRAMPOLINE by the BSP; position independent.
ap_trampoline:
    movabs rax, ap_entry
    jmp rax
ap_trampoline_end:

# ap_entry: an AP's entry; it learns who it is from its local APIC.
ap_entry:
    cli
    mov rbx, APIC_BASE
    mov r12d, dword ptr [rbx + 0x20]  # APIC ID register: id in bits 24-31
    shr r12, 24
    jmp core_init

# core_init: set up this core and run its dispatchers. Never returns.
#   in: r12 = core id
core_init:
    # r13 = this core's private area
    mov rax, r12
    imul rax, rax, PERCORE_SIZE
    mov r13, PERCORE_BASE
    add r13, rax
    # clear the private area (page tables must start empty)
    mov rdi, r13
    mov rcx, PERCORE_SIZE / 8
    xor eax, eax
    rep stosq
    # a stack, so that we can call
    lea rsp, [r13 + PC_KSTACK_TOP]

    mov rdi, r13
    mov rsi, r12
    call build_page_tables
    mov rdi, r13
    call enable_paging
    mov rdi, r13
    call load_descriptors
    mov rdi, r13
    call build_idt
    mov rdi, r13
    mov rsi, r12
    call init_percpu_variables
    call init_syscall_msrs

    test r12, r12
    jnz core_init_dispatchers
    call start_aps
core_init_dispatchers:
    mov rdi, r12
    call create_dispatchers
    jmp run_first_dispatcher          # does not return

# init_percpu_variables: fill the variables reached through GS.
#   in: rdi = private area, rsi = core id
init_percpu_variables:
    mov qword ptr [rdi + PCV_SELF], rdi
    mov qword ptr [rdi + PCV_CORE_ID], rsi
    lea rax, [rdi + PC_KSTACK_TOP]
    mov qword ptr [rdi + PCV_KERNEL_RSP], rax
    mov rax, BOOT_INFO
    mov rax, qword ptr [rax + BI_N_CORES]
    mov qword ptr [rdi + PCV_N_CORES], rax
    # GS points at the variables while in the kernel; user code gets GS=0
    # and swapgs exchanges the two on every kernel entry and exit.
    mov rax, rdi
    mov rdx, rdi
    shr rdx, 32
    mov ecx, 0xC0000101               # IA32_GS_BASE
    wrmsr
    xor eax, eax
    xor edx, edx
    mov ecx, 0xC0000102               # IA32_KERNEL_GS_BASE: the user's GS
    wrmsr
    ret

# start_aps: wake every other core with INIT and STARTUP IPIs (BSP only).
#   clobbers: rax rbx rcx rdx rsi rdi
start_aps:
    # copy the trampoline to the page a STARTUP IPI can name
    lea rsi, [rip + ap_trampoline]
    mov rdi, TRAMPOLINE
    mov rcx, ap_trampoline_end - ap_trampoline
    rep movsb
    mov rbx, APIC_BASE
    mov rax, BOOT_INFO
    mov rcx, qword ptr [rax + BI_N_CORES]
    mov rsi, 1
start_aps_next:
    cmp rsi, rcx
    jae start_aps_done
    mov eax, esi
    shl eax, 24
    mov dword ptr [rbx + 0x310], eax          # ICR high: destination
    mov dword ptr [rbx + 0x300], 0x00004500   # ICR low: INIT
    mov dword ptr [rbx + 0x310], eax
    mov eax, TRAMPOLINE / 4096
    or eax, 0x00004600                        # STARTUP, vector = trampoline page
    mov dword ptr [rbx + 0x300], eax
    inc rsi
    jmp start_aps_next
start_aps_done:
    ret
