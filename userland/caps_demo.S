# caps_demo.S: memory from capabilities. A dispatcher starts with RAM (root
# slot 0) and its user PDPT (root slot 1); from them it makes a page
# directory, a page table and a frame, maps the frame at USER_BASE + 1 GiB,
# uses it, learns what it is, and unmaps it again.
#
#   [core 0] retype: PD, PT and frame made
#   [core 0] overlap refused: error 111
#   [core 0] frame mapped, it holds 4660
#   [core 0] the frame is at physical 33595392
#   [core 0] unmapped; touching it again must fault:
#   [core 0] cpu driver: user fault: #PF page fault ...

RAM = CADDR_ROOT | 0
PDPT = CADDR_ROOT | 1
PD = CADDR_ROOT | 2
PT = CADDR_ROOT | 3
FRAME = CADDR_ROOT | 4
NEW_PAGE = USER_BASE + 0x40000000     # PDPT entry 1, PD entry 0, PT entry 0
READ_WRITE = CAPRIGHT_READ | CAPRIGHT_WRITE

start:
    # three 4 KiB objects out of our RAM, at offsets 0, 4K and 8K
    mov rdi, RAM
    xor esi, esi
    mov edx, CAPTYPE_VNODE_PD
    mov ecx, 12
    mov r8d, 1
    mov r9, PD
    call cap_retype
    test rax, rax
    jnz failed
    mov rdi, RAM
    mov esi, 0x1000
    mov edx, CAPTYPE_VNODE_PT
    mov ecx, 12
    mov r8d, 1
    mov r9, PT
    call cap_retype
    test rax, rax
    jnz failed
    mov rdi, RAM
    mov esi, 0x2000
    mov edx, CAPTYPE_FRAME
    mov ecx, 12
    mov r8d, 1
    mov r9, FRAME
    call cap_retype
    test rax, rax
    jnz failed
    lea rdi, [rip + text_made]
    call print_cstr
    # the same memory again: refused, the frame is there already
    mov rdi, RAM
    mov esi, 0x2000
    mov edx, CAPTYPE_FRAME
    mov ecx, 12
    mov r8d, 1
    mov r9, CADDR_ROOT | 5
    call cap_retype
    neg rax
    mov r12, rax
    lea rdi, [rip + text_overlap]
    call print_cstr
    mov rdi, r12
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    # PDPT[1] -> PD, PD[0] -> PT, PT[0] -> frame
    mov rdi, PDPT
    mov esi, 1
    mov rdx, PD
    mov ecx, READ_WRITE
    xor r8d, r8d
    call cap_map
    test rax, rax
    jnz failed
    mov rdi, PD
    xor esi, esi
    mov rdx, PT
    mov ecx, READ_WRITE
    xor r8d, r8d
    call cap_map
    test rax, rax
    jnz failed
    mov rdi, PT
    xor esi, esi
    mov rdx, FRAME
    mov ecx, READ_WRITE
    xor r8d, r8d
    call cap_map
    test rax, rax
    jnz failed
    mov rbx, NEW_PAGE
    mov qword ptr [rbx], 0x1234
    lea rdi, [rip + text_mapped]
    call print_cstr
    mov rdi, qword ptr [rbx]
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    mov rdi, FRAME
    mov esi, CAPFIELD_BASE
    call cap_identify
    mov r12, rax
    lea rdi, [rip + text_physical]
    call print_cstr
    mov rdi, r12
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    mov rdi, PT
    xor esi, esi
    call cap_unmap                    # the CPU driver invlpg's the page
    test rax, rax
    jnz failed
    lea rdi, [rip + text_unmapped]
    call print_cstr
touch_again:
    mov rax, qword ptr [rbx]          # no mapping, no stale TLB entry: #PF
    jmp failed
failed:
    mov edi, 1
    call exit

text_made:      .asciz "retype: PD, PT and frame made\n"
text_overlap:   .asciz "overlap refused: error "
text_mapped:    .asciz "frame mapped, it holds "
text_physical:  .asciz "the frame is at physical "
text_unmapped:  .asciz "unmapped; touching it again must fault:\n"
text_newline:   .asciz "\n"

.include "lib/sprat.S"
