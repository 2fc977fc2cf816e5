# caps_lab.S: lab 2's guest program. It builds an address space and a pool
# of memory out of its RAM, tries the retypes and mints the rules must
# refuse, maps two frames of the pool, revokes the pool (which must unmap
# them) and touches the first again: that touch must fault.
#
# Every invocation is made whatever the one before returned, and each
# result is printed ("retype pool: 4K frame at 0x1000 again: -111"); the
# grader reads the answers the kernel gave, the capabilities left at the
# end and the page table.
#
# Its RAM (root slot 0, 32 KiB) is cut up as:
#   0x0000 PD    0x1000 PT    0x2000 a frame it keeps (NOTES)
#   0x4000..0x8000 POOL, 16 KiB of RAM, cut into frames

RAM = CADDR_ROOT | 0
PDPT = CADDR_ROOT | 1
PD = CADDR_ROOT | 2
PT = CADDR_ROOT | 3
NOTES = CADDR_ROOT | 4
POOL = CADDR_ROOT | 5
FRAME_A = CADDR_ROOT | 6              # pool + 0x0000
FRAME_B = CADDR_ROOT | 7              # pool + 0x1000
FRAME_END = CADDR_ROOT | 8            # pool + 0x3000: the pool's last page
READ_ONLY = CADDR_ROOT | 9            # a mint of FRAME_A with READ only
MORE = CADDR_ROOT | 10                # (must stay empty: mint may not add WRITE)
POOL_COPY = CADDR_ROOT | 11
B_COPY = CADDR_ROOT | 12
WHOLE = CADDR_ROOT | 13               # after the revoke: the whole pool as one frame
BAD = CADDR_ROOT | 14                 # every refused retype aims here
PAGES = USER_BASE + 0x40000000        # PDPT entry 1, PD entry 0, PT entries 0..
READ_WRITE = CAPRIGHT_READ | CAPRIGHT_WRITE

# retype and map: one invocation each, its result reported.
.macro retype src, offset, type, bits, count, dest, text
    mov rdi, \src
    mov esi, \offset
    mov edx, \type
    mov ecx, \bits
    mov r8d, \count
    mov r9, \dest
    call cap_retype
    lea rdi, [rip + \text]
    call report
.endm

.macro map vnode, entry, src, text
    mov rdi, \vnode
    mov esi, \entry
    mov rdx, \src
    mov ecx, READ_WRITE
    xor r8d, r8d
    call cap_map
    lea rdi, [rip + \text]
    call report
.endm

start:
    # the address space: PDPT[1] -> PD, PD[0] -> PT, PT[2] -> NOTES
    retype RAM, 0, CAPTYPE_VNODE_PD, 12, 1, PD, text_pd
    retype RAM, 0x1000, CAPTYPE_VNODE_PT, 12, 1, PT, text_pt
    retype RAM, 0x2000, CAPTYPE_FRAME, 12, 1, NOTES, text_notes
    map PDPT, 1, PD, text_map_pd
    map PD, 0, PT, text_map_pt
    map PT, 2, NOTES, text_map_notes
    mov rbx, PAGES
    mov qword ptr [rbx + 0x2000], 0x5eed

    # the pool, and frames out of it
    retype RAM, 0x4000, CAPTYPE_RAM, 14, 1, POOL, text_pool
    retype POOL, 0, CAPTYPE_FRAME, 12, 2, FRAME_A, text_two_frames
    retype POOL, 0x1000, CAPTYPE_FRAME, 12, 1, BAD, text_again
    retype POOL, 0, CAPTYPE_FRAME, 14, 1, BAD, text_around
    retype POOL, 0x1000, CAPTYPE_FRAME, 13, 1, BAD, text_misaligned
    retype POOL, 0x4000, CAPTYPE_FRAME, 12, 1, BAD, text_past_end
    retype POOL, 0x3000, CAPTYPE_FRAME, 12, 2, BAD, text_two_past_end
    retype POOL, 0x3000, CAPTYPE_FRAME, 12, 1, FRAME_END, text_last_page
    retype POOL, 0x2000, CAPTYPE_FRAME, 13, 1, BAD, text_over_end
    retype FRAME_A, 0, CAPTYPE_RAM, 12, 1, BAD, text_frame_to_ram
    retype RAM, 0x5000, CAPTYPE_FRAME, 12, 1, BAD, text_through_ram

    # rights: a READ-only mint cannot grow WRITE back
    mov rdi, FRAME_A
    mov rsi, READ_ONLY
    mov edx, CAPRIGHT_READ
    xor ecx, ecx
    call cap_mint
    lea rdi, [rip + text_mint_read]
    call report
    mov rdi, READ_ONLY
    mov rsi, MORE
    mov edx, READ_WRITE
    xor ecx, ecx
    call cap_mint
    lea rdi, [rip + text_mint_more]
    call report

    # map two frames of the pool and use them
    map PT, 0, FRAME_A, text_map_a
    map PT, 1, FRAME_END, text_map_end
    mov qword ptr [rbx], 0xa
    mov qword ptr [rbx + 0x1000], 0xe

    # copies, then revoke the pool: every frame, copy and mapping goes
    mov rdi, POOL
    mov rsi, POOL_COPY
    call cap_copy
    lea rdi, [rip + text_copy_pool]
    call report
    mov rdi, FRAME_B
    mov rsi, B_COPY
    call cap_copy
    lea rdi, [rip + text_copy_b]
    call report
    mov rdi, POOL
    call cap_revoke
    lea rdi, [rip + text_revoke]
    call report
    retype POOL, 0, CAPTYPE_FRAME, 14, 1, WHOLE, text_whole
    mov qword ptr [rbx + 0x2000], 0xd09e
touch_revoked:
    mov rax, qword ptr [rbx]          # its frame was revoked: #PF
    lea rdi, [rip + text_still_mapped]
    call print_cstr
    mov edi, 1
    call exit

# report(text) with the result in rax: print "text: result".
report:
    push rax
    call print_cstr
    pop rdi
    push rdi
    call print_i64
    lea rdi, [rip + text_newline]
    call print_cstr
    pop rax
    ret

text_pd:            .asciz "retype RAM: page directory at 0x0: "
text_pt:            .asciz "retype RAM: page table at 0x1000: "
text_notes:         .asciz "retype RAM: frame at 0x2000: "
text_map_pd:        .asciz "map PDPT[1] -> page directory: "
text_map_pt:        .asciz "map PD[0] -> page table: "
text_map_notes:     .asciz "map PT[2] -> frame at 0x2000: "
text_pool:          .asciz "retype RAM: 16K pool at 0x4000: "
text_two_frames:    .asciz "retype pool: two 4K frames at 0x0: "
text_again:         .asciz "retype pool: 4K frame at 0x1000 again: "
text_around:        .asciz "retype pool: 16K frame around both: "
text_misaligned:    .asciz "retype pool: 8K frame at 0x1000: "
text_past_end:      .asciz "retype pool: 4K frame at 0x4000 (its end): "
text_two_past_end:  .asciz "retype pool: two 4K frames at 0x3000: "
text_last_page:     .asciz "retype pool: 4K frame at 0x3000 (its last page): "
text_over_end:      .asciz "retype pool: 8K frame at 0x2000 (over its last page): "
text_frame_to_ram:  .asciz "retype frame: back into RAM: "
text_through_ram:   .asciz "retype RAM: 4K frame at 0x5000 (inside the pool): "
text_mint_read:     .asciz "mint frame: READ only: "
text_mint_more:     .asciz "mint the READ-only copy: READ and WRITE: "
text_map_a:         .asciz "map PT[0] -> pool frame at 0x0: "
text_map_end:       .asciz "map PT[1] -> pool frame at 0x3000: "
text_copy_pool:     .asciz "copy pool: "
text_copy_b:        .asciz "copy pool frame at 0x1000: "
text_revoke:        .asciz "revoke pool: "
text_whole:         .asciz "retype pool: one 16K frame: "
text_still_mapped:  .asciz "the revoked frame is still mapped!\n"
text_newline:       .asciz "\n"

.include "../../../userland/lib/sprat.S"
