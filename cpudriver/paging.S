# paging.S: this core's page tables, and turning paging on.
#
# Every core builds its own tables in its private area (no sharing):
#   PML4[0] -> kernel PDPT: physical RAM mapped 1:1 with 2 MiB pages,
#              supervisor only, no-execute except the CPU driver's page;
#              and the local APIC page (uncached) at 0xFEE00000.
# and a page table that maps the shared channel frames, which every
# dispatcher's user half will point to (dispatch.S builds the user halves,
# one per dispatcher: PML4[1] -> PDPT -> PD -> PT).

PTE_P = 1
PTE_W = 2
PTE_U = 4
PTE_PWT = 8
PTE_PCD = 16
PTE_PS = 0x80
PTE_NX_HIGH = 0x80000000          # bit 63, in the upper dword

# build_page_tables
#   in: rdi = private area, rsi = core id
#   clobbers: rax rcx rdx r8
build_page_tables:
    # the boot PML4: the kernel half only
    lea rax, [rdi + PC_PDPT_KERNEL]
    or rax, PTE_P | PTE_W
    mov qword ptr [rdi + PC_PML4], rax
    # kernel PDPT: GiB 0 (RAM) and GiB 3 (the APIC)
    lea rax, [rdi + PC_PD_LOW]
    or rax, PTE_P | PTE_W
    mov qword ptr [rdi + PC_PDPT_KERNEL], rax
    lea rax, [rdi + PC_PD_APIC]
    or rax, PTE_P | PTE_W
    mov qword ptr [rdi + PC_PDPT_KERNEL + 3 * 8], rax
    # RAM, 2 MiB at a time, as much as the machine has (at most 1 GiB)
    mov rcx, BOOT_INFO
    mov rcx, qword ptr [rcx + BI_MEMORY_SIZE]
    shr rcx, 21
    xor edx, edx                      # rdx = page number
build_page_tables_ram:
    cmp rdx, rcx
    jae build_page_tables_apic
    cmp rdx, 512
    jae build_page_tables_apic
    mov rax, rdx
    shl rax, 21
    or rax, PTE_P | PTE_W | PTE_PS
    bts rax, 63                       # data: no-execute
    mov r8, rdx
    shl r8, 21
    cmp r8, KERNEL_BASE
    jne build_page_tables_store
    mov rax, KERNEL_BASE | PTE_P | PTE_PS   # the CPU driver: read-only, executable
build_page_tables_store:
    mov qword ptr [rdi + PC_PD_LOW + rdx * 8], rax
    inc rdx
    jmp build_page_tables_ram
build_page_tables_apic:
    mov rax, APIC_BASE | PTE_P | PTE_W | PTE_PS | PTE_PCD | PTE_PWT
    bts rax, 63
    mov qword ptr [rdi + PC_PD_APIC + APIC_PD_INDEX * 8], rax
    # the channel frames: the same physical pages on every core, read-write
    xor edx, edx
build_page_tables_channel:
    mov rax, rdx
    shl rax, 12
    add rax, CHANNELS_PHYS
    or rax, PTE_P | PTE_W | PTE_U
    bts rax, 63
    mov qword ptr [rdi + PC_PT_CHANNELS + rdx * 8], rax
    inc rdx
    cmp rdx, N_USER_CHANNELS          # not the CPU drivers' inboxes after them
    jb build_page_tables_channel
    ret

# enable_paging: PAE + long mode + no-execute + syscall, then CR3 and CR0.PG.
#   in: rdi = private area
#   clobbers: rax rcx rdx
enable_paging:
    mov rax, cr4
    or rax, 0x20 | 0x200              # PAE, OSFXSR
    mov cr4, rax
    mov ecx, 0xC0000080               # IA32_EFER
    rdmsr
    or eax, 0x1 | 0x100 | 0x800       # SCE (syscall), LME, NXE
    wrmsr
    lea rax, [rdi + PC_PML4]
    mov cr3, rax
    mov rax, cr0
    or rax, 0x10000                   # WP: the kernel honours read-only pages too
    bts rax, 31                       # PG
    mov cr0, rax
    ret
