# lmp_share.S: two dispatchers on one core share memory by passing a
# capability over LMP: the Barrelfish way to share a frame.
#
# The giver (ROLE=0) makes a frame out of its RAM, maps it, writes a word
# into it, and sends the frame's capability to dispatcher 1 through the
# endpoint in its slot SLOT_PEERS + 1. The taker (ROLE=1) receives it in
# slot SLOT_RECEIVE, maps it into its own address space and reads the word.
#
# Image arguments: role=0|1 (both modules on one core)

ROLE = 0
FRAME = CADDR_ROOT | 4
PD = CADDR_ROOT | 2
PT = CADDR_ROOT | 3
PAGE = USER_BASE + 0x40000000         # PDPT entry 1, PD entry 0, PT entry 0
READ_WRITE = CAPRIGHT_READ | CAPRIGHT_WRITE

start:
    call make_page_tables             # both map a page at PAGE
    mov rax, ROLE
    test rax, rax
    jnz take

give:
    mov rdi, CADDR_ROOT | SLOT_RAM
    mov esi, 0x2000
    mov edx, CAPTYPE_FRAME
    mov ecx, 12
    mov r8d, 1
    mov r9, FRAME
    call cap_retype
    test rax, rax
    jnz failed
    mov rdi, FRAME
    call map_at_page
    mov rbx, PAGE
    mov qword ptr [rbx], 0x5A17       # the word the other one will read
    mov rdi, CADDR_ROOT | SLOT_PEERS + 1
    mov esi, 1
    xor edx, edx
    mov rcx, FRAME                    # and the frame goes along
    call lmp_send_ep
    test rax, rax
    jnz failed
    lea rdi, [rip + text_gave]
    call print_cstr
    xor edi, edi
    call exit

take:
    call lmp_recv                     # rdx = 1: a capability came
    cmp rdx, 1
    jne failed
    mov rdi, CADDR_ROOT | SLOT_RECEIVE
    call map_at_page
    lea rdi, [rip + text_took]
    call print_cstr
    mov rbx, PAGE
    mov rdi, qword ptr [rbx]
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    xor edi, edi
    call exit

failed:
    mov rdi, rax
    neg rdi
    mov edi, 1
    call exit

# make_page_tables: a PD and a PT from our RAM, linked under our PDPT entry 1.
make_page_tables:
    mov rdi, CADDR_ROOT | SLOT_RAM
    xor esi, esi
    mov edx, CAPTYPE_VNODE_PD
    mov ecx, 12
    mov r8d, 1
    mov r9, PD
    call cap_retype
    mov rdi, CADDR_ROOT | SLOT_RAM
    mov esi, 0x1000
    mov edx, CAPTYPE_VNODE_PT
    mov ecx, 12
    mov r8d, 1
    mov r9, PT
    call cap_retype
    mov rdi, CADDR_ROOT | SLOT_PDPT
    mov esi, 1
    mov rdx, PD
    mov ecx, READ_WRITE
    xor r8d, r8d
    call cap_map
    mov rdi, PD
    xor esi, esi
    mov rdx, PT
    mov ecx, READ_WRITE
    xor r8d, r8d
    call cap_map
    ret

# map_at_page(frame): map a frame capability at PAGE.
map_at_page:
    mov rdx, rdi
    mov rdi, PT
    xor esi, esi
    mov ecx, READ_WRITE
    xor r8d, r8d
    call cap_map
    ret

text_gave:    .asciz "giver: sent my frame's capability over LMP\n"
text_took:    .asciz "taker: mapped the frame I was given; it holds "
text_newline: .asciz "\n"

.include "lib/sprat.S"
