# vspace_demo.S: a program builds its own page tables (userland/lib/vspace.S).
# It retypes four frames from its RAM, maps two of them in one 2 MiB range
# (one PD and one PT are made for them) and a third, read-only, in another
# GiB (one more PD and PT), uses them, is refused a second mapping of the
# same page, unmaps the first page and touches it again, which must fault:
#
#   [core 0] mapped 3 pages with 4 tables of our own
#   [core 0] the pages hold 4660 and 22136; the read-only one 0
#   [core 0] mapping a page twice is refused: error 115
#   [core 0] unmapped; touching it again must fault:
#   [core 0] cpu driver: user fault: #PF page fault ...

FRAMES = 4                            # root slots 4..7, from our RAM (root slot 0)
FIRST_FRAME = 4
FIRST_TABLE_SLOT = 16                 # the tables' capabilities: root slots 16..
TABLE_RAM = CADDR_ROOT | SLOT_REGIONS # the tables come from shared region 0's RAM
PAGE_A = USER_BASE + 0x40000000       # PDPT entry 1, PD entry 0, PT entry 0
PAGE_B = USER_BASE + 0x40001000       # the same PT, entry 1
PAGE_C = USER_BASE + 0x80200000       # PDPT entry 2, PD entry 1, PT entry 0
READ_WRITE = CAPRIGHT_READ | CAPRIGHT_WRITE

start:
    sub rsp, VSPACE_SIZE
    mov rbx, rsp                      # rbx = our struct vspace
    mov rdi, CADDR_ROOT | SLOT_RAM
    xor esi, esi
    mov edx, CAPTYPE_FRAME
    mov ecx, 12
    mov r8d, FRAMES
    mov r9, CADDR_ROOT | FIRST_FRAME
    call cap_retype
    test rax, rax
    jnz failed
    mov rdi, rbx
    mov rsi, TABLE_RAM
    mov edx, FIRST_TABLE_SLOT
    call vspace_init
    # three pages: two writable in one PT, one read-only a GiB further
    mov rdi, rbx
    mov rsi, PAGE_A
    mov rdx, CADDR_ROOT | FIRST_FRAME
    mov ecx, READ_WRITE
    call vspace_map
    test rax, rax
    jnz failed
    mov rdi, rbx
    mov rsi, PAGE_B
    mov rdx, CADDR_ROOT | FIRST_FRAME + 1
    mov ecx, READ_WRITE
    call vspace_map
    test rax, rax
    jnz failed
    mov rdi, rbx
    mov rsi, PAGE_C
    mov rdx, CADDR_ROOT | FIRST_FRAME + 2
    mov ecx, CAPRIGHT_READ
    call vspace_map
    test rax, rax
    jnz failed
    lea rdi, [rip + text_mapped]
    call print_cstr
    mov rdi, qword ptr [rbx + VS_COUNT]
    dec rdi                           # the PDPT was ours from the start
    call print_u64
    lea rdi, [rip + text_tables]
    call print_cstr
    # use them
    mov r12, PAGE_A
    mov qword ptr [r12], 0x1234
    mov r13, PAGE_B
    mov qword ptr [r13], 0x5678
    lea rdi, [rip + text_hold]
    call print_cstr
    mov rdi, qword ptr [r12]
    call print_u64
    lea rdi, [rip + text_and]
    call print_cstr
    mov rdi, qword ptr [r13]
    call print_u64
    lea rdi, [rip + text_read_only]
    call print_cstr
    mov rax, PAGE_C
    mov rdi, qword ptr [rax]          # a fresh frame: zero
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    # the same page again, with the fourth frame: the entry is in use
    mov rdi, rbx
    mov rsi, PAGE_A
    mov rdx, CADDR_ROOT | FIRST_FRAME + 3
    mov ecx, READ_WRITE
    call vspace_map
    neg rax
    mov r14, rax
    lea rdi, [rip + text_twice]
    call print_cstr
    mov rdi, r14
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    # unmap page A: the next touch must fault (no stale TLB entry)
    mov rdi, rbx
    mov rsi, PAGE_A
    call vspace_unmap
    test rax, rax
    jnz failed
    lea rdi, [rip + text_unmapped]
    call print_cstr
touch_again:
    mov rax, qword ptr [r12]
failed:
    mov edi, 1
    call exit

text_mapped:     .asciz "mapped 3 pages with "
text_tables:     .asciz " tables of our own\n"
text_hold:       .asciz "the pages hold "
text_and:        .asciz " and "
text_read_only:  .asciz "; the read-only one "
text_twice:      .asciz "mapping a page twice is refused: error "
text_unmapped:   .asciz "unmapped; touching it again must fault:\n"
text_newline:    .asciz "\n"

.include "lib/vspace.S"
.include "lib/sprat.S"
