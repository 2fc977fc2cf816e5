# vspace.S: a program's own page tables, built from its capabilities, the
# way Barrelfish's libbarrelfish (pmap) and seL4's user-level VSpace code do.
#
# The kernel keeps no record of which page tables a program has: it only
# checks each MAP and UNMAP (kernel/caps/rules.py) and writes the entry.
# Which table hangs where, and which capability names it, is user code's
# business, kept here in a struct vspace in the program's own memory.
#
# x86-64 translates a virtual address through four tables; 9 bits of the
# address choose the entry at each level, 12 bits the byte in the page:
#
#   47      39 38      30 29      21 20      12 11         0
#   | PML4    | PDPT     | PD       | PT       | offset     |
#     level 4   level 3    level 2    level 1
#
# So the entry of `vaddr` in a table of level L is bits 3 + 9L .. 11 + 9L:
# (vaddr >> (3 + 9 * L)) & 511, and a table of level L covers 2^(12 + 9L)
# bytes: a PT 2 MiB, a PD 1 GiB, a PDPT 512 GiB. A table's range starts at
# an address with those low bits clear: its *base*.
#
# A program cannot reach its PML4 (the kernel's entries live there, and
# entry 1 is the user's: USER_BASE .. USER_BASE + 512 GiB), so the walk
# starts one level down, at the PDPT root slot SLOT_PDPT names. Its entry 0
# is the CPU driver's (the program, its stack, the channels); entries
# 1 .. 511 are ours. Every missing PD or PT is retyped from the RAM given to
# vspace_init, one 4 KiB page each, into the next free root slot, mapped
# into the table above it, and remembered.
#
# struct vspace (VSPACE_SIZE bytes, anywhere the program can write):
#   +0  VS_RAM     capability address of the RAM the tables come from
#   +8  VS_USED    bytes of that RAM used so far: the next table's offset
#   +16 VS_SLOT    the next free root slot, for the next table's capability
#   +24 VS_COUNT   tables known, in the records below
#   +32 VS_TABLES  VSPACE_MAX_TABLES records of VT_SIZE bytes:
#                    +0  VT_BASE   the table's base (where its range starts)
#                    +8  VT_LEVEL  1 (PT), 2 (PD) or 3 (PDPT)
#                    +16 VT_CAP    the capability address that names it
#
# Errors are the kernel's (-CAPERR_*: a refused retype or map comes back as
# it is) and two of the library's own: -CAPERR_INVALID_ENTRY for an address
# outside the user's 512 GiB, -ENOMEM when the records are full.

VS_RAM = 0
VS_USED = 8
VS_SLOT = 16
VS_COUNT = 24
VS_TABLES = 32
VT_BASE = 0
VT_LEVEL = 8
VT_CAP = 16
VT_SIZE = 32                          # a power of two: records are indexed by shifting
VT_SHIFT = 5
VSPACE_MAX_TABLES = 16
VSPACE_SIZE = VS_TABLES + VSPACE_MAX_TABLES * VT_SIZE
VSPACE_TOP = 3                        # the PDPT: the highest level a program holds
PAGE_BITS = 12
TABLE_RIGHTS = CAPRIGHT_READ | CAPRIGHT_WRITE

# vspace_init(vs, ram, first_slot): an address space that knows only its PDPT.
#   in: rdi = the struct vspace, rsi = a RAM capability for the tables (each
#       takes 4 KiB of it), rdx = the first free root slot (a slot number:
#       CADDR_ROOT is added here) for the tables' capabilities
#   clobbers: rax
vspace_init:
    mov qword ptr [rdi + VS_RAM], rsi
    mov qword ptr [rdi + VS_USED], 0
    mov qword ptr [rdi + VS_SLOT], rdx
    mov qword ptr [rdi + VS_COUNT], 1
    mov rax, USER_BASE
    mov qword ptr [rdi + VS_TABLES + VT_BASE], rax
    mov qword ptr [rdi + VS_TABLES + VT_LEVEL], VSPACE_TOP
    mov qword ptr [rdi + VS_TABLES + VT_CAP], CADDR_ROOT | SLOT_PDPT
    ret

# vspace_find(vs, vaddr, level) -> the capability of the level-`level` table
# whose range holds vaddr, or 0 if there is none yet.
#   in: rdi = the struct vspace, rsi = a virtual address, rdx = the level (1..3)
#   clobbers: rax rcx r8 r9
vspace_find:
    lea ecx, [rdx + rdx * 8]          # the table's base: vaddr with its low
    add ecx, PAGE_BITS                # 12 + 9 * level bits clear
    mov r8, rsi
    shr r8, cl
    shl r8, cl
    mov r9, qword ptr [rdi + VS_COUNT]
    lea rax, [rdi + VS_TABLES]
vspace_find_next:
    test r9, r9
    jz vspace_find_none
    cmp qword ptr [rax + VT_BASE], r8
    jne vspace_find_skip
    cmp qword ptr [rax + VT_LEVEL], rdx
    jne vspace_find_skip
    mov rax, qword ptr [rax + VT_CAP]
    ret
vspace_find_skip:
    add rax, VT_SIZE
    dec r9
    jmp vspace_find_next
vspace_find_none:
    xor eax, eax
    ret

# vspace_remember(vs, vaddr, level, cap) -> 0, or -ENOMEM if the records are
# full: the level-`level` table covering vaddr is named by `cap`.
#   in: rdi = the struct vspace, rsi = a virtual address in the table's
#       range, rdx = its level, rcx = its capability address
#   clobbers: rax rcx r8
vspace_remember:
    mov rax, qword ptr [rdi + VS_COUNT]
    cmp rax, VSPACE_MAX_TABLES
    jae vspace_remember_full
    mov r8, rax
    shl r8, VT_SHIFT
    lea r8, [rdi + VS_TABLES + r8]
    mov qword ptr [r8 + VT_LEVEL], rdx
    mov qword ptr [r8 + VT_CAP], rcx
    lea ecx, [rdx + rdx * 8]
    add ecx, PAGE_BITS
    mov rax, rsi
    shr rax, cl
    shl rax, cl
    mov qword ptr [r8 + VT_BASE], rax
    inc qword ptr [rdi + VS_COUNT]
    xor eax, eax
    ret
vspace_remember_full:
    mov rax, -ENOMEM
    ret

# vspace_map(vs, vaddr, frame, rights) -> 0 or -error: map the 4 KiB Frame
# `frame` at vaddr with `rights` (CAPRIGHT_READ, | CAPRIGHT_WRITE for a
# writable page, | CAPRIGHT_EXECUTE for an executable one), making the PD
# and PT on the way if they are missing.
#   in: rdi = the struct vspace, rsi = the page's virtual address,
#       rdx = the Frame's capability address, rcx = the rights
#   out: rax = 0, or -CAPERR_* / -ENOMEM
#   clobbers: rcx rdx rsi rdi r8 r9 r10 r11 (rbx rbp r12-r15 are kept)
vspace_map:
# LAB vm BEGIN map
    push rbx
    push r12
    push r13
    push r14
    mov rbx, rdi
    mov r12, rsi
    mov r13, rdx
    mov r14, rcx
    # Only the user's PML4 entry is ours: USER_BASE's 512 GiB, whole pages.
    mov rax, rsi
    shr rax, 39
    cmp rax, USER_BASE >> 39
    jne vspace_map_outside
    test esi, 0xFFF
    jnz vspace_map_misaligned
    # The PT that covers vaddr, found or made; then its entry: bits 12..20.
    mov edx, 1
    call vspace_table
    test rax, rax
    js vspace_map_done
    mov rdi, rax
    mov rsi, r12
    shr rsi, PAGE_BITS
    and esi, 511
    mov rdx, r13
    mov rcx, r14
    xor r8d, r8d
    call cap_map
    jmp vspace_map_done
vspace_map_outside:
    mov rax, -CAPERR_INVALID_ENTRY
    jmp vspace_map_done
vspace_map_misaligned:
    mov rax, -CAPERR_MISALIGNED
vspace_map_done:
    pop r14
    pop r13
    pop r12
    pop rbx
    ret

# vspace_table(vs, vaddr, level) -> the capability of the level-`level`
# table whose range holds vaddr, or -error. A missing one is made: the
# table above it first (recursively; the PDPT is always there), then a page
# of the RAM retyped into a table of this level, mapped into the entry of
# vaddr in the table above, and remembered. A table that is there already
# is used as it is: a second table for the same range could not be mapped
# (the entry above is in use), and would leave the first one's pages behind.
#   in: rdi = the struct vspace, rsi = a virtual address, rdx = the level
#   clobbers: rcx rdx rsi rdi r8 r9 r10 r11
vspace_table:
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov rbx, rdi                      # rbx = vs
    mov r12, rsi                      # r12 = vaddr
    mov r13, rdx                      # r13 = level
    call vspace_find
    test rax, rax
    jnz vspace_table_done             # there already
    # the table above, the one to hang the new table in
    mov rdi, rbx
    mov rsi, r12
    lea rdx, [r13 + 1]
    call vspace_table
    test rax, rax
    js vspace_table_done
    mov r14, rax                      # r14 = the table above
    mov rax, -ENOMEM
    cmp qword ptr [rbx + VS_COUNT], VSPACE_MAX_TABLES
    jae vspace_table_done             # no record left to remember it by
    # a page of our RAM becomes a table of this level: CAPTYPE_VNODE_PT for
    # level 1, CAPTYPE_VNODE_PD for 2 (the types count down as levels go up)
    mov r15, qword ptr [rbx + VS_SLOT]
    or r15, CADDR_ROOT                # r15 = the new table's capability
    mov rdi, qword ptr [rbx + VS_RAM]
    mov rsi, qword ptr [rbx + VS_USED]
    mov edx, CAPTYPE_VNODE_PT + 1
    sub rdx, r13
    mov ecx, PAGE_BITS
    mov r8d, 1
    mov r9, r15
    call cap_retype
    test rax, rax
    jnz vspace_table_done
    # its entry in the table above: bits 3 + 9 * (level + 1) and up
    lea ecx, [r13 + r13 * 8 + 12]
    mov rsi, r12
    shr rsi, cl
    and esi, 511
    mov rdi, r14
    mov rdx, r15
    mov ecx, TABLE_RIGHTS
    xor r8d, r8d
    call cap_map
    test rax, rax
    jnz vspace_table_unmade
    mov rdi, rbx
    mov rsi, r12
    mov rdx, r13
    mov rcx, r15
    call vspace_remember              # (there is room: checked above)
    add qword ptr [rbx + VS_USED], 1 << PAGE_BITS
    inc qword ptr [rbx + VS_SLOT]
    mov rax, r15
    jmp vspace_table_done
vspace_table_unmade:
    # the map was refused: give the page back, say why
    mov r14, rax
    mov rdi, r15
    call cap_delete
    mov rax, r14
vspace_table_done:
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    ret
# LAB vm END map

# vspace_unmap(vs, vaddr) -> 0 or -error: unmap the page at vaddr. The
# kernel clears the PT's entry and the CPU driver forgets the TLB's copy of
# it (cpudriver/syscall.S, sys_invoke): the next touch faults. The tables
# stay, for the next map in their range.
#   in: rdi = the struct vspace, rsi = the page's virtual address
#   out: rax = 0, or -CAPERR_ENTRY_EMPTY if no page is mapped there
#   clobbers: rcx rdx rsi rdi r8 r9 r10 r11
vspace_unmap:
# LAB vm BEGIN unmap
    push r12
    mov r12, rsi
    mov edx, 1                        # the PT whose range holds vaddr
    call vspace_find
    test rax, rax
    jz vspace_unmap_nothing
    mov rdi, rax
    mov rsi, r12
    shr rsi, PAGE_BITS                # the PT's entry: bits 12..20
    and esi, 511
    call cap_unmap
    pop r12
    ret
vspace_unmap_nothing:
    mov rax, -CAPERR_ENTRY_EMPTY
    pop r12
    ret
# LAB vm END unmap
