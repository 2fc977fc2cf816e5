# vm_check.S: lab 3's test program. It maps five pages with your
# vspace_map, uses them, and then, as MODE (the image's mode=N) says:
#
#   MODE 1  asks for six mappings the kernel or the library must refuse:
#           a page mapped twice, a read-only frame mapped writable, an
#           unaligned address (in a GiB with no tables yet), addresses
#           above and below the user's 512 GiB, and one whose bits 39..47
#           say PML4 entry 1 but with bit 48 set; then
#           fills PDPT entry 9 with a PD of its own and asks for a page
#           there (vspace_map's new PD cannot be mapped: it must give it
#           back), and then for a page that needs a new table
#   MODE 2  unmaps page 4 (PT entry 266) with vspace_unmap (after reading
#           it, so the TLB holds it), reads page 3 (same PT), unmaps page 4
#           again (nothing is there), unmaps a page no PT covers, and touches
#           page 4,
#           which must fault
#   MODE 3  deletes the capability of page 0's PT (the kernel unmaps the
#           whole table: the CPU driver must forget every entry) and touches
#           page 1, which must fault
#   MODE 4  maps a page in each of the next FILL_TABLES 2 MiB ranges of
#           GiB 1 (a new PT each), which fills struct vspace's records (the
#           PDPT and 15 tables); maps a page in a PT made already (no table
#           needed: it works), then one that needs a 16th table, which
#           vspace_map must refuse with -ENOMEM, changing nothing
#
# Past the end of struct vspace lie PAST_END bytes of PAST_CANARY: a record
# written past the last one lands there, and the grader sees it.
#
# The grader watches the labels probe_*: rax there is what the call before
# returned, and at probe_mapped r12 is the page's number in `pages`. A probe
# is a nop: the program does not judge itself, the grader does.
#
# Every vspace_map and vspace_unmap goes through call_kept, which puts a
# canary in each register a System V routine keeps for its caller (rbx rbp
# r12-r15) and, after the call, gives the program its own values back: the
# grader reads the canaries at probe_kept, and a routine that changes one
# is caught there, by name, however little the program would notice.

FRAMES = 8                            # root slots 4..11, from our RAM (root slot 0)
FIRST_FRAME = 4
READ_ONLY_FRAME = 12                  # a copy of frame 5 minted READ only
FIRST_TABLE_SLOT = 16                 # for vspace_init: the tables' capabilities
OWN_PD = 13                           # a PD of the program's own, in PDPT entry 9,
OWN_PD_OFFSET = 0xF000                # from the last page of the tables' RAM
TABLE_RAM = CADDR_ROOT | SLOT_REGIONS # the tables come from shared region 0's RAM
N_PAGES = 5
GIB = 0x40000000
R = CAPRIGHT_READ
RW = CAPRIGHT_READ | CAPRIGHT_WRITE
RX = CAPRIGHT_READ | CAPRIGHT_EXECUTE
PAGE_0 = USER_BASE + GIB              # PDPT entry 1, PD entry 0, PT entry 0
PAGE_1 = USER_BASE + GIB + 0x1000     # the same PT, entry 1
BEYOND = (1 << 48) + PAGE_0 + 0x2000  # bits 39..47 say PML4 entry 1; not canonical
PAGE_3 = USER_BASE + 261 * GIB + 263 * 0x200000 + 265 * 0x1000   # past entry 255 at every
PAGE_4 = PAGE_3 + 0x1000              # level (PDPT 261, PD 263, PT 265 and 266)
CANARY = 0x5AFE000000000000           # + the register's number: rbx 3, rbp 5, r12..r15
PAST_END = 32
PAST_CANARY = 0x0E0D0E0D0E0D0E0D
FILL_TABLES = 10                      # 6 records after the five pages: 10 more fill all 16
MIB2 = 0x200000

start:
    sub rsp, VSPACE_SIZE + PAST_END
    mov rbx, rsp                      # rbx = our struct vspace
    mov rax, PAST_CANARY
    mov qword ptr [rbx + VSPACE_SIZE], rax
    mov qword ptr [rbx + VSPACE_SIZE + 8], rax
    mov qword ptr [rbx + VSPACE_SIZE + 16], rax
    mov qword ptr [rbx + VSPACE_SIZE + 24], rax
    mov rdi, CADDR_ROOT | SLOT_RAM
    xor esi, esi
    mov edx, CAPTYPE_FRAME
    mov ecx, 12
    mov r8d, FRAMES
    mov r9, CADDR_ROOT | FIRST_FRAME
    call cap_retype
    test rax, rax
    jnz broken
    mov rdi, CADDR_ROOT | FIRST_FRAME + 5
    mov esi, CADDR_ROOT | READ_ONLY_FRAME
    mov edx, R
    xor ecx, ecx
    call cap_mint
    test rax, rax
    jnz broken
    mov rdi, rbx
    mov rsi, TABLE_RAM
    mov edx, FIRST_TABLE_SLOT
    call vspace_init
    # the five pages of `pages`, in order
    xor r12d, r12d
map_next:
    lea r13, [rip + pages]
    mov rax, r12
    shl rax, 5
    add r13, rax                      # r13 = pages[r12]
    mov rdi, rbx
    mov rsi, qword ptr [r13]
    mov rdx, qword ptr [r13 + 8]
    mov rcx, qword ptr [r13 + 16]
    lea rax, [rip + vspace_map]
    call call_kept
probe_mapped:
    nop
    inc r12
    cmp r12, N_PAGES
    jb map_next
probe_layout:
    nop
    # use them: a word into each writable page, a read of each other
    lea r13, [rip + pages]
    xor r12d, r12d
use_next:
    mov rsi, qword ptr [r13]
    test qword ptr [r13 + 16], CAPRIGHT_WRITE
    jz use_read
    mov rax, qword ptr [r13 + 24]
    mov qword ptr [rsi], rax
    jmp use_done
use_read:
    mov rax, qword ptr [rsi]
use_done:
    add r13, 32
    inc r12
    cmp r12, N_PAGES
    jb use_next
probe_used:
    nop
    mov eax, MODE
    cmp eax, 2
    je unmap_and_touch
    cmp eax, 3
    je delete_table_and_touch
    cmp eax, 4
    je fill_records

refusals:
    mov rdi, rbx                      # page 0 again, with another frame
    mov rsi, PAGE_0
    mov rdx, CADDR_ROOT | FIRST_FRAME + 6
    mov ecx, RW
    lea rax, [rip + vspace_map]
    call call_kept
probe_twice:
    nop
    mov rdi, rbx                      # a read-only frame, asked writable
    mov rsi, USER_BASE + GIB + 0x2000
    mov rdx, CADDR_ROOT | READ_ONLY_FRAME
    mov ecx, RW
    lea rax, [rip + vspace_map]
    call call_kept
probe_rights:
    nop
    mov rdi, rbx                      # not a page's address, where no table is
    mov rsi, USER_BASE + 3 * GIB + 0x3008
    mov rdx, CADDR_ROOT | FIRST_FRAME + 7
    mov ecx, RW
    lea rax, [rip + vspace_map]
    call call_kept
probe_unaligned:
    nop
    mov rdi, rbx                      # PML4 entry 2: not the user's
    mov rsi, USER_BASE + 512 * GIB
    mov rdx, CADDR_ROOT | FIRST_FRAME + 7
    mov ecx, RW
    lea rax, [rip + vspace_map]
    call call_kept
probe_outside:
    nop
    mov rdi, rbx                      # PML4 entry 0: the kernel's
    mov rsi, GIB
    mov rdx, CADDR_ROOT | FIRST_FRAME + 7
    mov ecx, RW
    lea rax, [rip + vspace_map]
    call call_kept
probe_below:
    nop
    mov rdi, rbx                      # PML4 index 1, but bit 48 set: no address at all
    mov rsi, BEYOND
    mov rdx, CADDR_ROOT | FIRST_FRAME + 7
    mov ecx, RW
    lea rax, [rip + vspace_map]
    call call_kept
probe_beyond:
    nop
    mov rdi, TABLE_RAM                # PDPT entry 9 taken behind vspace's back
    mov esi, OWN_PD_OFFSET
    mov edx, CAPTYPE_VNODE_PD
    mov ecx, 12
    mov r8d, 1
    mov r9, CADDR_ROOT | OWN_PD
    call cap_retype
    test rax, rax
    jnz broken
    mov rdi, CADDR_ROOT | SLOT_PDPT
    mov esi, 9
    mov rdx, CADDR_ROOT | OWN_PD
    mov ecx, RW
    xor r8d, r8d
    call cap_map
    test rax, rax
    jnz broken
    mov rdi, rbx                      # a page there: the new PD's map is refused
    mov rsi, USER_BASE + 9 * GIB
    mov rdx, CADDR_ROOT | FIRST_FRAME + 7
    mov ecx, RW
    lea rax, [rip + vspace_map]
    call call_kept
probe_taken:
    nop
    mov rdi, rbx                      # a page that needs a new PT: the next table
    mov rsi, USER_BASE + GIB + 2 * 0x200000
    mov rdx, CADDR_ROOT | FIRST_FRAME + 7
    mov ecx, RW
    lea rax, [rip + vspace_map]
    call call_kept
probe_after_taken:
    nop
    xor edi, edi
    call exit

unmap_and_touch:
    mov rax, PAGE_4                   # both pages in the TLB
    mov rax, qword ptr [rax]
    mov rax, PAGE_3
    mov rax, qword ptr [rax]
    mov rdi, rbx
    mov rsi, PAGE_4
    lea rax, [rip + vspace_unmap]
    call call_kept
probe_unmapped:
    nop
    mov rax, PAGE_3                   # the neighbour stays
    mov rax, qword ptr [rax]
    mov rdi, rbx
    mov rsi, PAGE_4
    lea rax, [rip + vspace_unmap]
    call call_kept
probe_unmapped_again:
    nop
    mov rdi, rbx                      # where no PT is: nothing to unmap
    mov rsi, USER_BASE + 7 * GIB
    lea rax, [rip + vspace_unmap]
    call call_kept
probe_unmapped_nowhere:
    nop
    mov rax, PAGE_4
touch_unmapped:
    mov rax, qword ptr [rax]          # must fault: the program ends here
probe_touch_survived:
    nop
    mov edi, 3
    call exit

delete_table_and_touch:
    mov rax, PAGE_0
    mov rax, qword ptr [rax]
    mov rax, PAGE_1
    mov rax, qword ptr [rax]
    mov rdi, rbx                      # page 0's PT, as vspace_init's records know it
    mov rsi, PAGE_0
    mov edx, 1
    call vspace_find
    mov rdi, rax
    call cap_delete
probe_table_deleted:
    nop
    mov rax, PAGE_1
touch_deleted:
    mov rax, qword ptr [rax]          # must fault: the program ends here
probe_touch_survived_delete:
    nop
    mov edi, 3
    call exit

fill_records:
    mov r12d, 2                       # PD entries 0 and 1 of GiB 1 have their PTs
fill_next:
    mov rdi, rbx                      # a page in the 2 MiB of PD entry r12: a new PT
    mov rsi, r12
    shl rsi, 21
    mov rax, PAGE_0
    add rsi, rax
    mov rdx, CADDR_ROOT | FIRST_FRAME + 7
    mov ecx, RW
    lea rax, [rip + vspace_map]
    call call_kept
probe_filled:
    nop
    inc r12
    cmp r12, 2 + FILL_TABLES
    jb fill_next
    mov rdi, rbx                      # in page 0's PT: no new table, no record needed
    mov rsi, PAGE_0 + 0x3000
    mov rdx, CADDR_ROOT | FIRST_FRAME + 7
    mov ecx, RW
    lea rax, [rip + vspace_map]
    call call_kept
probe_full_mapped:
    nop
    mov rdi, rbx                      # a new PT, and no record left for it
    mov rsi, PAGE_0 + (2 + FILL_TABLES) * MIB2
    mov rdx, CADDR_ROOT | FIRST_FRAME + 7
    mov ecx, RW
    lea rax, [rip + vspace_map]
    call call_kept
probe_full:
    nop
    xor edi, edi
    call exit

# call_kept(routine in rax; its arguments in rdi rsi rdx rcx): call it with
# canaries in rbx rbp r12-r15 (probe_kept: the grader reads them, and the
# routine's address at [rsp]); give back our own values, and its rax.
call_kept:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rax                          # the routine, at [rsp] (and rsp stays 16-aligned)
    mov rbx, CANARY + 3
    mov rbp, CANARY + 5
    mov r12, CANARY + 12
    mov r13, CANARY + 13
    mov r14, CANARY + 14
    mov r15, CANARY + 15
    call qword ptr [rsp]
probe_kept:
    nop
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

broken:                               # our own setup failed: not the lab's code
    mov edi, 2
    call exit

# vaddr, frame, rights, the word a writable page gets (32 bytes each). The
# last two sit past entry 255 at every level: an index that keeps 8 bits of
# the address, not 9, misses them.
pages:
    .quad PAGE_0, CADDR_ROOT | FIRST_FRAME + 0, RW, 0xA0
    .quad PAGE_1, CADDR_ROOT | FIRST_FRAME + 1, R, 0
    .quad USER_BASE + GIB + 0x200000 + 0x5000, CADDR_ROOT | FIRST_FRAME + 2, RW, 0xA2
    .quad PAGE_3, CADDR_ROOT | FIRST_FRAME + 3, RX, 0
    .quad PAGE_4, CADDR_ROOT | FIRST_FRAME + 4, RW, 0xA4

.include "../../../userland/lib/vspace.S"
.include "../../../userland/lib/sprat.S"
