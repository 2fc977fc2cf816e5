# lmp_ep.S: lmp_send_ep's refusals, and a message through an endpoint with
# no capability along (lab 4; share.lst sends one with a capability).
#
# The prober (ROLE=0) sends through a capability that is no endpoint (its
# RAM) and must get the capability system's error back as it is (-106,
# wrong type: not -EAGAIN, not -EINVAL); through the endpoint of a
# dispatcher that never receives (BUSY), and must get -EAGAIN; then, with
# no capability (0), to the taker (ROLE=1, its peer PEER), which must find
# the words in rdi and rsi and rdx = 0: no capability came. A program that
# finds something wrong says so in a line starting "lmp_check:" and exits
# with 1.
#
# Image arguments: role=0|1 peer=N busy=N

ROLE = 0
PEER = 1
BUSY = 2
WRONG_TYPE = -106                     # kernel/capservice.py's _lmp: not an endpoint
WORD_0 = 0xE0
WORD_1 = 0xE1

start:
    mov rax, ROLE
    test rax, rax
    jnz take

probe:
    mov rdi, CADDR_ROOT | SLOT_RAM    # a capability, but no endpoint
    mov esi, WORD_0
    mov edx, WORD_1
    xor r10d, r10d
    mov eax, SYS_LMP_SEND_EP
    syscall
    cmp rax, WRONG_TYPE
    lea rdi, [rip + text_not_endpoint]
    jne failed
    mov rdi, CADDR_ROOT | SLOT_PEERS + BUSY
    mov esi, WORD_0
    mov edx, WORD_1
    xor r10d, r10d
    mov eax, SYS_LMP_SEND_EP
    syscall
    cmp rax, -EAGAIN
    lea rdi, [rip + text_busy]
    jne failed
    mov rdi, CADDR_ROOT | SLOT_PEERS + PEER
    mov esi, WORD_0
    mov edx, WORD_1
    xor ecx, ecx                      # no capability along
    call lmp_send_ep
    test rax, rax
    lea rdi, [rip + text_refused]
    jnz failed
    lea rdi, [rip + text_probed]
    call print_cstr
    xor edi, edi
    call exit

take:
    call lmp_recv
    cmp rdi, WORD_0
    jne take_wrong
    cmp rsi, WORD_1
    jne take_wrong
    test rdx, rdx                     # rdx = 0: no capability came
    lea rdi, [rip + text_no_cap]
    jnz failed
    lea rdi, [rip + text_took]
    call print_cstr
    xor edi, edi
    call exit
take_wrong:
    lea rdi, [rip + text_words]

# failed: say what (rdi) and exit with 1.
failed:
    call print_cstr
    mov edi, 1
    call exit

text_not_endpoint: .asciz "lmp_check: lmp_send_ep through a capability that is no endpoint did not return the capability system's error (-106) as it is\n"
text_busy:         .asciz "lmp_check: lmp_send_ep to a dispatcher that is not waiting did not return -EAGAIN\n"
text_refused:      .asciz "lmp_check: lmp_send_ep without a capability to a waiting dispatcher was refused\n"
text_no_cap:       .asciz "lmp_check: a message through an endpoint with no capability along came with rdx != 0 (rdx = 1 says a capability came)\n"
text_words:        .asciz "lmp_check: a message through an endpoint came with the wrong words in rdi, rsi\n"
text_probed:       .asciz "ep prober: refused twice as it should be, then sent\n"
text_took:         .asciz "ep taker: the words, and no capability\n"

.include "../../../userland/lib/sprat.S"
