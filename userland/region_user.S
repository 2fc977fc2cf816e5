# region_user.S: use a shared region on this core.
#
# Every dispatcher holds a copy of each shared region's RAM capability
# (kernel/capservice.py, slot SLOT_REGIONS + r). This program retypes one
# page of its core's copy of region REGION into a frame of its own: the
# region is now in use on this core, and a retype of the whole region
# (two-phase commit, userland/monitor.S) will be refused here. It prints
#
#   region 1: one page in use on this core
#
# or why it could not (the region is locked by a commit in progress, or was
# retyped on another core). It waits DELAY loop rounds first.
#
# Image arguments: region=R delay=LOOPS

REGION = 0
DELAY = 0
FRAME = CADDR_ROOT | 16               # where our frame goes

start:
    mov rcx, DELAY
    test rcx, rcx
    jz now
wait:
    dec rcx
    jnz wait
now:
    mov rdi, CADDR_ROOT | SLOT_REGIONS + REGION
    xor esi, esi                      # at offset 0
    mov edx, CAPTYPE_FRAME
    mov ecx, 12                       # one page
    mov r8d, 1
    mov r9, FRAME
    call cap_retype
    mov rbx, rax
    lea rdi, [rip + text_region]
    call print_cstr
    mov rdi, REGION
    call print_u64
    test rbx, rbx
    jnz refused
    lea rdi, [rip + text_in_use]
    call print_cstr
    xor edi, edi
    call exit
refused:
    lea rdi, [rip + text_refused]
    call print_cstr
    mov rdi, rbx
    neg rdi
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    xor edi, edi
    call exit

text_region:   .asciz "region "
text_in_use:   .asciz ": one page in use on this core\n"
text_refused:  .asciz ": not here, error "
text_newline:  .asciz "\n"

.include "lib/sprat.S"
