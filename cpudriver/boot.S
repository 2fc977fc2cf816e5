# boot.S: the first instructions of every core.
#
# The boot loader starts the BSP (core 0) at kernel_entry, the first byte of
# the image, in 64-bit mode with paging off and RDI pointing at the boot
# information. An AP starts when a running core sends it INIT and STARTUP
# IPIs (start_core), at the trampoline page in the same state; the
# trampoline jumps to ap_entry. From there both run core_init with their
# own core id, which ends by entering the core's first dispatcher
# (dispatch.S).
#
# Who starts the APs. In Barrelfish the BSP's CPU driver brings up only its
# own core: the monitor on the BSP boots the other cores, because which
# cores run, when, and with what is policy, and policy lives in user space.
# So here: if one of the BSP's dispatchers is a monitor (its image line
# says `monitor`), the BSP's CPU driver leaves the APs off and monitor 0
# starts them, first thing, with SYS_START_CORE (userland/monitor_boot.S).
# An image without a monitor on core 0 has nobody to do that, and the BSP's
# CPU driver starts every AP itself at boot (start_aps), as a plain
# multiprocessor kernel does. Either way a core is started in one place:
# start_core.

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

    mov rdi, r12
    call create_dispatchers
    test r12, r12
    jnz core_init_run                 # an AP: the others are not ours to start
    call install_trampoline
    call runs_a_monitor
    test rax, rax
    jnz core_init_run                 # monitor 0 starts the APs (see the top)
    call start_aps
core_init_run:
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

# install_trampoline: copy the APs' first instructions to the page a
# STARTUP IPI can name (BSP only, before any core is started).
#   clobbers: rcx rsi rdi
install_trampoline:
    lea rsi, [rip + ap_trampoline]
    mov rdi, TRAMPOLINE
    mov rcx, ap_trampoline_end - ap_trampoline
    rep movsb
    ret

# runs_a_monitor: is one of this core's dispatchers a monitor?
#   out: rax = 1 or 0.  clobbers: rcx rdi
runs_a_monitor:
    mov rax, qword ptr gs:[PCV_N_DISPATCHERS]   # (only rax has an absolute gs: form)
    mov rcx, rax
runs_a_monitor_next:
    test rcx, rcx
    jz runs_a_monitor_done            # (rax = 0)
    dec rcx
    mov rdi, rcx
    call dispatcher_slot
    test qword ptr [rax + DCB_FLAGS], DCB_FLAG_MONITOR
    jz runs_a_monitor_next
    mov eax, 1
    ret
runs_a_monitor_done:
    xor eax, eax
    ret

# start_aps: start every other core, when no monitor will (BSP only).
#   clobbers: rax rcx rdx rdi
start_aps:
    mov rax, BOOT_INFO
    mov rcx, qword ptr [rax + BI_N_CORES]
    mov edi, 1
start_aps_next:
    cmp rdi, rcx
    jae start_aps_done
    call start_core                   # (each core once: it cannot be busy)
    inc rdi
    jmp start_aps_next
start_aps_done:
    ret

# start_core: wake core rdi with an INIT and a STARTUP IPI, at most once.
# The one place a core is started: at boot by start_aps, later by
# sys_start_core (syscall.S) for a monitor.
#
# Which cores have been started is one bit per core (MAX_CORES = 64) in
# the boot information, BI_CORES_STARTED; the loader sets bit 0, since the
# machine starts the BSP. The CPU driver that sends the IPIs sets the bit,
# with one `lock bts` before it sends them, rather than the AP when it
# comes up:
#   - an INIT to a running core resets it (real x86), so a second request
#     must be refused from the moment the first is granted, not from the
#     moment the AP has run far enough to say it is up;
#   - any monitor may ask, on any core, so the record is the machine's,
#     not one CPU driver's. (It is the one word of state CPU drivers share
#     outside their inboxes: it stands for what the hardware knows, which
#     cores are out of their wait for INIT.)
#   - `lock bts` tests and sets in one step: of two CPU drivers asking
#     for the same core at once, exactly one sends the IPIs.
#   in: rdi = the core (the caller has checked it is another one, < cores)
#   out: rax = 0, or -EBUSY if it was started already.  clobbers: rdx
start_core:
    mov rax, BOOT_INFO
    lock bts qword ptr [rax + BI_CORES_STARTED], rdi
    jc start_core_busy
    mov rdx, APIC_BASE
    mov eax, edi
    shl eax, 24
    mov dword ptr [rdx + 0x310], eax          # ICR high: destination
    mov dword ptr [rdx + 0x300], 0x00004500   # ICR low: INIT
    mov dword ptr [rdx + 0x310], eax
    mov eax, TRAMPOLINE / 4096
    or eax, 0x00004600                        # STARTUP, vector = trampoline page
    mov dword ptr [rdx + 0x300], eax
    xor eax, eax
    ret
start_core_busy:
    mov rax, -EBUSY
    ret
