# dispatch.S: dispatchers, and switching between them.
#
# A dispatcher runs one program on this core: the CPU driver's record of it
# is a dispatcher control block (DCB) holding its state, its page tables
# (CR3) and, while it is not running, its registers as a trap frame. The
# boot image says which programs run where: a core gets a dispatcher for
# every module named for it (core=N), or, if there is none, for every
# module meant for all cores.
#
# Switching is done on the trap frame at the top of the kernel stack: every
# way into the kernel from user mode (an interrupt, an exception, a system
# call) leaves the interrupted dispatcher's registers there, and every way
# out returns through trap_return's `iretq`. So `schedule` copies that frame
# into the current DCB, picks the next dispatcher, copies its saved frame
# onto the stack and loads its CR3: the `iretq` then resumes the other one.
#
# The choice is round robin, except that a dispatcher that has just handed
# a message over (LMP, lmp.S) lets the receiver run first. A periodic
# APIC timer forces a switch every TIME_SLICE_CYCLES when a core has more
# than one dispatcher. A core with nothing to run idles in `hlt` until a
# request from another core (inbox.S) gives it a new dispatcher.

# create_dispatchers: a dispatcher for each of this core's modules.
#   in: rdi = core id.  out: rax = how many.  clobbers: everything but r12-r15
create_dispatchers:
    push r12
    push r13
    push r14
    mov r12, rdi
    call create_dispatchers_for       # the modules named for this core
    test rax, rax
    jnz create_dispatchers_done
    mov rdi, ALL_CORES
    call create_dispatchers_for       # else the ones for every core
create_dispatchers_done:
    mov qword ptr gs:[PCV_N_DISPATCHERS], rax
    pop r14
    pop r13
    pop r12
    ret

# create_dispatchers_for: one dispatcher per module whose core field is rdi.
#   in: rdi = the core field to match, r12 = core id.  out: rax = how many
create_dispatchers_for:
    mov r13, BOOT_INFO
    mov rcx, qword ptr [r13 + BI_N_MODULES]
    lea r13, [r13 + BI_MODULES]       # r13 = the module entry being looked at
    xor r14d, r14d                    # r14 = dispatchers made
create_dispatchers_for_next:
    test rcx, rcx
    jz create_dispatchers_for_done
    cmp qword ptr [r13 + MODULE_CORE], rdi   # the core it is for, or ALL_CORES
    jne create_dispatchers_for_skip
    cmp r14, MAX_DISPATCHERS
    jae create_dispatchers_for_done
    push rcx
    push rdi
    mov rdi, r14
    mov rsi, r13
    xor edx, edx                      # no spawner: the image line says what it holds
    call make_dispatcher
    pop rdi
    pop rcx
    inc r14
create_dispatchers_for_skip:
    add r13, MODULE_ENTRY_SIZE
    dec rcx
    jmp create_dispatchers_for_next
create_dispatchers_for_done:
    mov rax, r14
    ret

# dispatcher_slot: the address of dispatcher `index` on this core.
#   in: rdi = index.  out: rax.  clobbers: nothing else
dispatcher_slot:
    mov rax, qword ptr gs:[PCV_SELF]
    push rdi
    imul rdi, rdi, DISPATCHER_SIZE
    add rax, rdi
    add rax, PC_DISPATCHERS
    pop rdi
    ret

# make_dispatcher: build dispatcher `index`'s page tables and first frame,
# and have the capability system give it its channels.
#   in: rdi = index, rsi = module entry (MODULE_* in cpudriver/layout.py),
#       rdx = the channels its spawner hands over (count << 32 | first; 0: none)
#   clobbers: rax rcx rdx rsi rdi r8 r9 r10 r11
make_dispatcher:
    push rdx
    push rsi
    mov r9, rdi                       # r9 = index
    call dispatcher_slot
    mov r8, rax                       # r8 = the slot
    # what its image line said it is (DCB_FLAG_MONITOR: it may boot cores)
    mov rax, qword ptr [rsi + MODULE_FLAGS]
    mov qword ptr [r8 + DCB_FLAGS], rax
    # page tables: the core's kernel half, and a user half of its own
    mov rax, qword ptr gs:[PCV_SELF]
    lea rax, [rax + PC_PDPT_KERNEL]
    or rax, PTE_P | PTE_W
    mov qword ptr [r8 + D_PML4], rax
    lea rax, [r8 + D_PDPT_USER]
    or rax, PTE_P | PTE_W | PTE_U
    mov qword ptr [r8 + D_PML4 + 8], rax
    lea rax, [r8 + D_PD_USER]
    or rax, PTE_P | PTE_W | PTE_U
    mov qword ptr [r8 + D_PDPT_USER], rax
    # the program's window (cpudriver/layout.py): its page table in the PD
    # entry of the virtual base the loader linked its image at
    mov rax, qword ptr [rsi + MODULE_VIRTUAL]
    shr rax, 21
    and eax, 511
    lea rcx, [r8 + D_PT_USER]
    or rcx, PTE_P | PTE_W | PTE_U
    mov qword ptr [r8 + D_PD_USER + rax * 8], rcx
    # the channel window, in PD entries 1 and on: a monitor's is the core's
    # page tables, which map every channel; any other program's starts empty
    call channel_tables
    or rax, PTE_P | PTE_W | PTE_U
    xor ecx, ecx
make_dispatcher_channels:
    mov qword ptr [r8 + D_PD_USER + 8 + rcx * 8], rax
    add rax, 4096
    inc ecx
    cmp ecx, CHANNEL_TABLES
    jb make_dispatcher_channels
    mov rdi, r8
    call map_program
    # its capabilities: the channels it holds are mapped now (kernel/channels.py)
    pop rsi
    push qword ptr [rsi + MODULE_VIRTUAL]
    mov rax, rsi
    sub rax, BOOT_INFO + BI_MODULES
    xor edx, edx
    mov ecx, MODULE_ENTRY_SIZE
    div rcx
    mov rsi, rax                      # the module's index
    pop r11                           # r11 = where its image is linked
    pop rdx
    mov r10, rdx
    shr r10, 32                       # how many channels it is handed
    mov edx, edx                      #   from this one
    mov rdi, r9
    mov rax, HYPERCALL_NEW_DISPATCHER
    out HYPERCALL_PORT, al
    # the registers it starts with: at its image's first byte, in ring 3,
    # interrupts on, its stack at the top of its window, rdi = core id,
    # rsi = number of cores, rdx = its index on this core
    lea rax, [r8 + D_PML4]
    mov qword ptr [r8 + DCB_CR3], rax
    lea rdi, [r8 + DCB_FRAME]
    mov rax, qword ptr gs:[PCV_CORE_ID]
    mov qword ptr [rdi + TF_RDI], rax
    mov rax, qword ptr gs:[PCV_N_CORES]
    mov qword ptr [rdi + TF_RSI], rax
    mov qword ptr [rdi + TF_RDX], r9
    mov qword ptr [rdi + TF_RIP], r11
    mov qword ptr [rdi + TF_CS], USER_CS
    mov qword ptr [rdi + TF_RFLAGS], 0x202
    lea rax, [r11 + PROGRAM_SPAN]
    mov qword ptr [rdi + TF_RSP], rax
    mov qword ptr [rdi + TF_SS], USER_SS
    mov qword ptr [r8 + DCB_STATE], DISPATCHER_RUNNABLE
    ret

# channel_tables: the page tables of a new dispatcher's channel window: the
# core's (every channel mapped) for a monitor, else its own, cleared.
#   in: r8 = its slot, r9 = its index.  out: rax.  clobbers: rcx rdi
channel_tables:
    mov rax, qword ptr gs:[PCV_SELF]
    lea rax, [rax + PC_PT_CHANNELS]
    test qword ptr [r8 + DCB_FLAGS], DCB_FLAG_MONITOR
    jnz channel_tables_done
    mov rax, qword ptr gs:[PCV_CORE_ID]
    imul rax, rax, MAX_DISPATCHERS
    add rax, r9
    imul rax, rax, CHANNEL_TABLES * 4096
    add rax, CHANNEL_TABLES_BASE
    push rax
    mov rdi, rax
    mov ecx, CHANNEL_TABLES * 512
    xor eax, eax
    rep stosq
    pop rax
channel_tables_done:
    ret

# map_program: fill a dispatcher's user page table (its program's window):
# the module's pages read-only and executable from the bottom, its stack at
# the top.
#   in: rdi = dispatcher slot, rsi = module entry.  clobbers: rax rcx rdx rsi r10
map_program:
    lea rdx, [rdi + D_PT_USER]
    mov rcx, qword ptr [rsi + MODULE_SIZE]      # size in bytes -> pages
    mov rsi, qword ptr [rsi + MODULE_PHYSICAL]  # physical base
    add rcx, 4095
    shr rcx, 12
map_program_page:
    test rcx, rcx
    jz map_program_stack
    mov rax, rsi
    or rax, PTE_P | PTE_U             # read-only, executable
    mov qword ptr [rdx], rax
    add rdx, 8
    add rsi, 4096
    dec rcx
    jmp map_program_page
map_program_stack:
    lea rdx, [rdi + D_PT_USER_STACK]
    lea rsi, [rdi + D_USTACK]
    mov rcx, USER_STACK_PAGES
map_program_stack_page:
    mov rax, rsi
    or rax, PTE_P | PTE_W | PTE_U
    bts rax, 63                       # a stack is data: no-execute
    mov qword ptr [rdx], rax
    add rdx, 8
    add rsi, 4096
    dec rcx
    jnz map_program_stack_page
    ret

# run_first_dispatcher: enter user mode in dispatcher 0 (or idle if this
# core has none yet). Never returns.
run_first_dispatcher:
    xor edi, edi
    call dispatcher_slot
    mov qword ptr gs:[PCV_CURRENT], rax
    mov rax, qword ptr gs:[PCV_N_DISPATCHERS]
    test rax, rax
    jz idle
    cmp rax, 1
    jbe run_first_dispatcher_go
    call start_time_slices            # several dispatchers share this core
run_first_dispatcher_go:
    mov rax, qword ptr gs:[PCV_CURRENT]
    jmp run_dispatcher

# run_dispatcher: leave the kernel into dispatcher `slot`, on a fresh stack.
#   in: rax = its slot.  Never returns.
run_dispatcher:
    mov qword ptr gs:[PCV_CURRENT], rax
    mov rcx, rax
    mov rax, qword ptr gs:[PCV_KERNEL_RSP]
    lea rsp, [rax - TRAP_FRAME_SIZE]  # the frame trap_return will pop
    mov rax, rcx
    mov rdi, rsp
    call load_dispatcher
    jmp trap_return

# idle: nothing to run; sleep until an interrupt brings work (a spawn
# request in the inbox). `sti; hlt` cannot miss it: an interrupt is taken
# only after the instruction that follows sti, so it wakes the hlt.
idle:
    mov rax, qword ptr gs:[PCV_KERNEL_RSP]
    mov rsp, rax
    mov rax, APIC_BASE
    mov dword ptr [rax + 0x380], 0    # no time slices while there is nothing to slice
idle_wait:
    call pick_next
    test rax, rax
    jz idle_sleep
    mov rcx, rax
    mov rax, qword ptr gs:[PCV_N_DISPATCHERS]
    cmp rax, 1
    mov rax, rcx
    jbe run_dispatcher
    call start_time_slices            # (clobbers rax only)
    mov rax, rcx
    jmp run_dispatcher
idle_sleep:
    sti
    hlt
    cli
    jmp idle_wait

# spawn_here: a new dispatcher on this core for boot module `module`.
#   in: rdi = module index, rsi = the argument it gets in r8, rdx = the
#       channels it is handed (count << 32 | first, 0: none)
#   out: rax = its dispatcher number, or -EINVAL / -ENOMEM
#   clobbers: rcx rdx rsi rdi r8-r11
spawn_here:
    mov rax, BOOT_INFO
    cmp rdi, qword ptr [rax + BI_N_MODULES]
    jae spawn_here_invalid
    mov rax, qword ptr gs:[PCV_N_DISPATCHERS]
    cmp rax, MAX_DISPATCHERS
    jae spawn_here_full
    push rsi
    push rax
    imul rsi, rdi, MODULE_ENTRY_SIZE
    mov rdi, BOOT_INFO + BI_MODULES
    add rsi, rdi
    mov rdi, rax
    call make_dispatcher
    pop rdi                           # its number
    pop rsi                           # its argument
    call dispatcher_slot
    mov qword ptr [rax + DCB_FRAME + TF_R8], rsi
    lea rax, [rdi + 1]
    mov qword ptr gs:[PCV_N_DISPATCHERS], rax
    cmp rax, 2
    jb spawn_here_done
    call start_time_slices            # now the core is shared
spawn_here_done:
    mov rax, rdi
    ret
spawn_here_invalid:
    mov rax, -EINVAL
    ret
spawn_here_full:
    mov rax, -ENOMEM
    ret

# start_time_slices: a periodic APIC timer interrupt every time slice.
#   clobbers: rax
start_time_slices:
    mov rax, APIC_BASE
    mov dword ptr [rax + 0x3E0], 0xB                      # divide by 1
    mov dword ptr [rax + 0x320], TIMER_VECTOR | 0x20000   # periodic
    mov dword ptr [rax + 0x380], TIME_SLICE_CYCLES
    ret

# LAB lmp BEGIN switch
# schedule: switch to the next dispatcher that can run.
#   in: rdi = the trap frame of the current dispatcher (top of kernel stack)
#   out: the frame and CR3 are the next dispatcher's
#   clobbers: rax rcx rdx rsi rdi r8
schedule:
    push rbx
    mov rbx, rdi
    xor eax, eax
    mov qword ptr gs:[PCV_RESCHEDULE], rax
    # save the current dispatcher's registers in its DCB
    mov rax, qword ptr gs:[PCV_CURRENT]
    mov rsi, rbx
    lea rdi, [rax + DCB_FRAME]
    mov rcx, TRAP_FRAME_SIZE / 8
    rep movsq
    call pick_next
    test rax, rax
    jz nothing_to_run
    mov qword ptr gs:[PCV_CURRENT], rax
    mov rdi, rbx
    call load_dispatcher
    pop rbx
    ret

# load_dispatcher: load `slot`'s frame and CR3 (schedule sets PCV_CURRENT).
#   in: rax = its slot, rdi = the trap frame to fill.  clobbers: rcx rdx rsi rdi
load_dispatcher:
    lea rsi, [rax + DCB_FRAME]
    mov rcx, TRAP_FRAME_SIZE / 8
    rep movsq
    mov rdx, qword ptr [rax + DCB_CR3]
    mov rcx, cr3
    cmp rcx, rdx
    je load_dispatcher_done           # the same address space: keep the TLB
    mov cr3, rdx
load_dispatcher_done:
    ret

# pick_next: the dispatcher to run next: PCV_NEXT (a slot) if it was set (an
# LMP hand-over) and can run, else the round robin's; PCV_NEXT ends 0.
#   out: rax = its slot, or 0 if none can run (then rdx = 1 if one waits)
#   clobbers: rcx rdx rsi rdi r8
pick_next:
    mov rax, qword ptr gs:[PCV_NEXT]  # take PCV_NEXT, leaving it 0
    mov rcx, rax
    xor eax, eax
    mov qword ptr gs:[PCV_NEXT], rax
    mov rax, rcx
    test rax, rax
    jz pick_round_robin
    cmp qword ptr [rax + DCB_STATE], DISPATCHER_RUNNABLE
    jne pick_round_robin
    ret
# LAB lmp END switch

# nothing_to_run: schedule found no dispatcher that can run (pick_next
# returned 0). Idle until a request brings one, unless some dispatcher
# still waits for a message that can never come: then say so and stop.
#   in: rdx = 1 if a dispatcher waits (as pick_next left it).  Never returns.
nothing_to_run:
    test rdx, rdx
    jz idle                           # everything ran to its end: wait for work
    lea rdi, [rip + str_deadlock]
    call print_str
nothing_to_run_stop:
    mov al, 3
    out POWER_PORT, al
    jmp nothing_to_run_stop

# pick_round_robin: the first runnable dispatcher after the current one,
# round robin (the current one last).
#   out: rax = its slot, or 0 if none can run (then rdx = 1 if one waits)
#   clobbers: rcx rdx rsi rdi r8
pick_round_robin:
    mov rax, qword ptr gs:[PCV_N_DISPATCHERS]
    mov r8, rax                       # r8 = n
    call current_index
    mov rsi, rax                      # rsi = the current index
    xor ecx, ecx                      # rcx = how many looked at
    xor edx, edx                      # rdx = 1 once a waiting one is seen
pick_round_robin_look:
    cmp rcx, r8
    jae pick_round_robin_none
    inc rcx
    inc rsi                           # the next index, wrapping around
    cmp rsi, r8
    jb pick_round_robin_in_range
    xor esi, esi
pick_round_robin_in_range:
    mov rdi, rsi
    call dispatcher_slot
    cmp qword ptr [rax + DCB_STATE], DISPATCHER_RUNNABLE
    je pick_round_robin_done
    cmp qword ptr [rax + DCB_STATE], DISPATCHER_WAITING
    jne pick_round_robin_look
    mov edx, 1
    jmp pick_round_robin_look
pick_round_robin_none:
    xor eax, eax
pick_round_robin_done:
    ret

# current_index: the running dispatcher's index on this core.
#   out: rax.  clobbers: rcx
current_index:
    mov rax, qword ptr gs:[PCV_SELF]
    mov rcx, rax
    mov rax, qword ptr gs:[PCV_CURRENT]
    sub rax, rcx
    sub rax, PC_DISPATCHERS
    shr rax, DISPATCHER_SHIFT         # DISPATCHER_SIZE is a power of two
    ret

# request_reschedule: switch dispatchers before going back to user mode.
#   clobbers: rax
request_reschedule:
    mov eax, 1
    mov qword ptr gs:[PCV_RESCHEDULE], rax
    ret
