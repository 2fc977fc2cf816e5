# user.S: finding this core's program, mapping it, and dropping to ring 3.
#
# The loader left the modules of the boot image in physical memory and a
# table of them in the boot information. A core runs the first module meant
# for it (core=N in the image, or every core). The module's pages are mapped
# read-only and executable at USER_BASE, a private stack below
# USER_STACK_TOP, and `sysret` enters the program at its first byte with
#   rdi = core id, rsi = number of cores.

# run_user_program: never returns (the program ends in program_finished).
#   in: rdi = core id
run_user_program:
    mov r12, rdi
    call find_module
    test rax, rax
    jz run_user_program_none
    mov rdi, rax
    call map_user_program
    # the user's registers: arguments, and nothing of the kernel's
    mov rdi, r12
    mov rax, qword ptr gs:[PCV_N_CORES]   # (only rax has an absolute gs: form)
    mov rsi, rax
    mov rcx, USER_BASE                # where sysret goes
    mov r11, 0x202                    # user rflags: IF set
    xor eax, eax
    xor ebx, ebx
    xor edx, edx
    xor ebp, ebp
    xor r8, r8
    xor r9, r9
    xor r10, r10
    xor r12, r12
    xor r13, r13
    xor r14, r14
    xor r15, r15
    mov rsp, USER_STACK_TOP
    swapgs
    sysret
run_user_program_none:
    lea rdi, [rip + str_no_program]
    call print_str
    jmp program_finished

# program_finished: the program has exited or was killed; this core has
# nothing else to run, so it switches itself off (exit code 0: clean).
program_finished:
    mov rax, qword ptr gs:[PCV_KERNEL_RSP]
    mov rsp, rax
    xor eax, eax
    out POWER_PORT, al
program_finished_hang:
    jmp program_finished_hang

# find_module: the boot module for this core: the first one named for it
# (core=N in the image), else the first one for every core.
#   in: rdi = core id
#   out: rax = the module's entry in the boot information, or 0
find_module:
    call find_module_for
    test rax, rax
    jnz find_module_done
    mov rdi, ALL_CORES
    call find_module_for
find_module_done:
    ret

# find_module_for: the first module whose core field equals rdi (or 0).
find_module_for:
    mov rdx, BOOT_INFO
    mov rcx, qword ptr [rdx + BI_N_MODULES]
    lea rax, [rdx + BI_MODULES]
find_module_for_next:
    test rcx, rcx
    jz find_module_for_none
    cmp qword ptr [rax + 16], rdi     # the core it is for, or ALL_CORES
    je find_module_for_found
    add rax, MODULE_ENTRY_SIZE
    dec rcx
    jmp find_module_for_next
find_module_for_none:
    xor eax, eax
find_module_for_found:
    ret

# map_user_program: fill this core's user page table.
#   in: rdi = module entry (physical base, size, core)
#   clobbers: rax rcx rdx rsi r8
map_user_program:
    mov rax, qword ptr gs:[PCV_SELF]
    mov r8, rax
    lea rdx, [r8 + PC_PT_USER]
    mov rsi, qword ptr [rdi]          # physical base
    mov rcx, qword ptr [rdi + 8]      # size in bytes -> pages
    add rcx, 4095
    shr rcx, 12
map_user_program_page:
    test rcx, rcx
    jz map_user_program_stack
    mov rax, rsi
    or rax, PTE_P | PTE_U             # read-only, executable
    mov qword ptr [rdx], rax
    add rdx, 8
    add rsi, 4096
    dec rcx
    jmp map_user_program_page
map_user_program_stack:
    lea rdx, [r8 + PC_PT_USER_STACK]
    lea rsi, [r8 + PC_USTACK]
    mov rcx, USER_STACK_PAGES
map_user_program_stack_page:
    mov rax, rsi
    or rax, PTE_P | PTE_W | PTE_U
    bts rax, 63                       # a stack is data: no-execute
    mov qword ptr [rdx], rax
    add rdx, 8
    add rsi, 4096
    dec rcx
    jnz map_user_program_stack_page
    ret
