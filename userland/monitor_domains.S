# monitor_domains.S: the domain table, and spanning a domain to more cores.
#
# Included by monitor.S. A domain is a program that may run on several
# cores at once, one dispatcher per core, all sharing the window of
# channel frames (one page table per core, which every dispatcher on that
# core uses: a page mapped or unmapped there is mapped or unmapped for all
# of them, and monitor_shootdown.S carries an unmap to every core). Every
# monitor's replica holds the domain table: for each domain, the mask of
# cores it has a dispatcher on (REPLICA_DOMAINS, MAX_DOMAINS words).
#
# A program spans its domain to another core by asking MONITOR_SPAN
# (domain, module << 8 | core, argument): monitor 0 has that core's CPU
# driver start boot module `module` there (SYS_SPAWN), then tells every
# monitor the domain's new mask (OP_DOMAIN). This is the one-phase kind of
# agreement: every replica must apply it and none may refuse, so there is
# no vote, only acknowledgements, and the program hears the answer
# (0 or an error, the mask) once every replica has applied it.

REPLICA_DOMAINS = 256                 # in the replica: a core mask per domain
MAX_DOMAINS = 8
SPAN_BAD_DOMAIN = 5                   # errors of a span (beside -errno of the spawn)
SPAN_BAD_CORE = 6
DOMAIN_NUMBER = 8                     # OP_DOMAIN's words after MSG_OP
DOMAIN_MASK = 16

# root_span: start REQUEST's module on its core for the domain; record it everywhere.
root_span:
    mov esi, SPAN_BAD_DOMAIN
    cmp qword ptr [r15 + REQUEST + 8], MAX_DOMAINS
    jae root_span_refused
    mov esi, SPAN_BAD_CORE
    cmp qword ptr [r15 + REQUEST + 24], rbp
    jae root_span_refused
    mov rdi, qword ptr [r15 + REQUEST + 16]   # the module,
    mov rsi, qword ptr [r15 + REQUEST + 24]   #   on that core,
    mov rdx, qword ptr [r15 + REQUEST + 32]   #   with its argument
    call span_channel                 # r10 = the channel page it is handed
    mov eax, SYS_SPAWN
    syscall
    test rax, rax
    js root_span_failed
    mov rdi, qword ptr [r15 + REQUEST + 8]
    call domain_record
    mov rdx, qword ptr [rax]
    mov rcx, qword ptr [r15 + REQUEST + 24]
    bts rdx, rcx                      # the new core
    mov rcx, qword ptr [r15 + ORIGIN]
    bts rdx, rcx                      # and the asker's: it is in the domain too
    mov qword ptr [rax], rdx
    mov qword ptr [r15 + OUT + MSG_OP], OP_DOMAIN
    mov rax, qword ptr [r15 + REQUEST + 8]
    mov qword ptr [r15 + OUT + DOMAIN_NUMBER], rax
    mov qword ptr [r15 + OUT + DOMAIN_MASK], rdx
    mov rdi, rbp
    call send_to_all
    call gather_votes                 # acknowledgements: every vote is 0
    xor esi, esi
    mov rdx, qword ptr [r15 + OUT + DOMAIN_MASK]
    xor ecx, ecx
    jmp answer
root_span_failed:
    mov rsi, rax                      # -errno from the spawn
root_span_refused:
    xor edx, edx
    xor ecx, ecx
    jmp answer

# span_channel: the channel a span hands the new dispatcher: page
# argument >> 8, the domain's shared page (userland/span_member.S), if it
# is one of the programs' pages (MONITOR_FIRST_PAGE and up; below are the
# monitors' own channels, which no program may be handed); else none.
#   in: rdx = the argument.  out: r10 = 1 << 32 | page, or 0.  clobbers: rax
span_channel:
    xor r10d, r10d
    mov rax, rdx
    shr rax, 8
    cmp rax, MONITOR_FIRST_PAGE
    jb span_channel_done
    cmp rax, N_USER_CHANNELS
    jae span_channel_done
    mov r10, 1 << 32
    or r10, rax
span_channel_done:
    ret

# domain_here: monitor 0 says what a domain's cores are now; acknowledge.
domain_here:
    mov rdi, qword ptr [r15 + MSG + DOMAIN_NUMBER]
    cmp rdi, MAX_DOMAINS
    jae domain_here_ack
    call domain_record
    mov rcx, qword ptr [r15 + MSG + DOMAIN_MASK]
    mov qword ptr [rax], rcx
domain_here_ack:
    xor edi, edi
    jmp reply

# domain_record(domain) -> rax = the address of its mask in our replica
#   clobbers: nothing else
domain_record:
    lea rax, [rdi * 8 + REPLICA_DOMAINS]
    push rcx
    mov rcx, REPLICA
    add rax, rcx
    pop rcx
    ret
