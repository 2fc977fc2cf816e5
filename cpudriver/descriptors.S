# descriptors.S: this core's GDT, TSS and IDT, and the syscall MSRs.
#
# The GDT is the one every x86-64 kernel has: null, kernel code and data,
# user data and code (in the order SYSRET needs), and a TSS whose RSP0 is
# the stack the processor switches to when an interrupt arrives from ring 3.

GDT_KERNEL_CODE = 0x00AF9A000000FFFF  # 64-bit code, DPL 0
GDT_KERNEL_DATA = 0x00CF92000000FFFF
GDT_USER_DATA = 0x00CFF2000000FFFF    # DPL 3
GDT_USER_CODE = 0x00AFFA000000FFFF    # 64-bit code, DPL 3
GDT_LIMIT = 7 * 8 - 1
TSS_LIMIT = 103
BREAKPOINT_GATE_ATTRIBUTES = 3 * 16 + 5   # the attribute byte of gate 3
STAR_SELECTORS = 0x10 * 65536 + KERNEL_CS   # STAR[63:48] = 0x10, STAR[47:32] = KERNEL_CS

# load_descriptors: build and load the GDT and TSS, reload the segments.
#   in: rdi = private area
#   clobbers: rax rcx rdx
load_descriptors:
    lea rdx, [rdi + PC_GDT]
    mov qword ptr [rdx], 0
    mov rax, GDT_KERNEL_CODE
    mov qword ptr [rdx + KERNEL_CS], rax
    mov rax, GDT_KERNEL_DATA
    mov qword ptr [rdx + KERNEL_SS], rax
    mov rax, GDT_USER_DATA
    mov qword ptr [rdx + 0x18], rax
    mov rax, GDT_USER_CODE
    mov qword ptr [rdx + 0x20], rax
    # the TSS descriptor (16 bytes): base split over both halves
    lea rcx, [rdi + PC_TSS]
    mov rax, rcx
    and rax, 0xFFFFFF
    shl rax, 16
    or rax, TSS_LIMIT
    mov r8, 0x89                      # present, 64-bit available TSS
    shl r8, 40
    or rax, r8
    mov r8, rcx
    shr r8, 24
    and r8, 0xFF
    shl r8, 56
    or rax, r8
    mov qword ptr [rdx + TSS_SELECTOR], rax
    mov rax, rcx
    shr rax, 32
    mov qword ptr [rdx + TSS_SELECTOR + 8], rax
    # TSS: the ring-0 stack, and no I/O permission bitmap
    lea rax, [rdi + PC_KSTACK_TOP]
    mov qword ptr [rcx + 4], rax
    mov word ptr [rcx + 0x66], TSS_LIMIT + 1
    # lgdt takes a 10-byte pseudo-descriptor: limit, then base
    sub rsp, 16
    mov word ptr [rsp], GDT_LIMIT
    mov qword ptr [rsp + 2], rdx
    lgdt [rsp]
    add rsp, 16
    # reload CS with a far return, then the data segments
    push KERNEL_CS
    lea rax, [rip + load_descriptors_reloaded]
    push rax
    retfq
load_descriptors_reloaded:
    mov ax, KERNEL_SS
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov ax, TSS_SELECTOR
    ltr ax
    ret

# build_idt: point all 256 vectors at their stubs in vectors.S, and load it.
# Every gate is an interrupt gate (IF cleared on entry) of DPL 0, so a user
# `int n` is a #GP: user code enters the kernel by `syscall` only. The one
# exception, as on every x86 OS, is vector 3: `int3` from user code is a
# breakpoint (#BP), the debugger's way in, so its gate has DPL 3.
#   in: rdi = private area
#   clobbers: rax rcx rdx rsi r8
build_idt:
    lea rsi, [rip + vector_table]
    lea rdx, [rdi + PC_IDT]
    xor ecx, ecx
build_idt_gate:
    mov rax, qword ptr [rsi + rcx * 8]     # the stub's address
    mov r8, rax
    and r8, 0xFFFF
    or r8, KERNEL_CS << 16
    mov dword ptr [rdx], r8d               # offset 15..0, selector
    mov r8, rax
    and r8d, 0xFFFF0000               # (a 32-bit and clears the top half)
    or r8, 0x8E00                          # present, DPL 0, interrupt gate
    mov dword ptr [rdx + 4], r8d           # attributes, offset 31..16
    shr rax, 32
    mov dword ptr [rdx + 8], eax           # offset 63..32
    mov dword ptr [rdx + 12], 0
    add rdx, 16
    inc rcx
    cmp rcx, 256
    jb build_idt_gate
    mov byte ptr [rdi + PC_IDT + BREAKPOINT_GATE_ATTRIBUTES], 0xEE   # present, DPL 3
    sub rsp, 16
    mov word ptr [rsp], 256 * 16 - 1
    lea rax, [rdi + PC_IDT]
    mov qword ptr [rsp + 2], rax
    lidt [rsp]
    add rsp, 16
    ret

# init_syscall_msrs: where `syscall` goes and what it may not keep.
#   clobbers: rax rcx rdx
init_syscall_msrs:
    # STAR[47:32]: kernel CS (SS = +8); STAR[63:48] + 16 / + 8: user CS / SS
    mov ecx, 0xC0000081
    xor eax, eax
    mov edx, STAR_SELECTORS
    wrmsr
    mov ecx, 0xC0000082               # LSTAR: the entry point
    lea rax, [rip + syscall_entry]
    mov rdx, rax
    shr rdx, 32
    wrmsr
    mov ecx, 0xC0000084               # FMASK: clear IF, TF, DF, AC, NT
    mov eax, 0x00047700
    xor edx, edx
    wrmsr
    ret
