# monitor_agree.S: the replicated records of the shared regions, kept by
# two-phase commit.
#
# Included by monitor.S. Each monitor keeps its replica (below) in the top
# page of its own stack, REPLICA, where no other core can see it; the host
# reads it there too (kernel/replica.py):
#   REPLICA_MAGIC  "MONITOR1"           REPLICA_COMMITS   retypes committed
#   REPLICA_CORE   this core            REPLICA_ABORTS    retypes rolled back
#   and per shared region r, REGION_RECORD bytes at REPLICA_REGIONS + r * 32:
#   REGION_STATE   0 free, 1 retyped    REGION_VERSION    commits applied to it
#   REGION_OWNER   who retyped it       REGION_PENDING    the transaction we
#                                                         voted yes to, or 0
#   and at REPLICA_DOMAINS the domain table (monitor_domains.S).
#
REPLICA_MAGIC = 0
REPLICA_CORE = 8
REPLICA_COMMITS = 16
REPLICA_ABORTS = 24
REPLICA_REGIONS = 64
REGION_RECORD = 32
REGION_STATE = 0
REGION_OWNER = 8
REGION_VERSION = 16
REGION_PENDING = 24
MAGIC_WORD = 0x31524F54494E4F4D        # "MONITOR1", little endian
RETYPED = 1
NO_OWNER = -1
SLOT_RETYPED = 236                    # + region: where monitor 0 keeps what it made
MSG_REGION = 8                        # a 2PC message's words after MSG_OP
MSG_TXN = 16                          # the transaction's number
MSG_INITIATOR = 24                    # the core that retypes the region

# Every core's capability system has its own copy of each shared region's
# RAM capability (kernel/capservice.py, slot SLOT_REGIONS + r), and every
# monitor a record of each region in its replica. A retype of the whole
# region must happen on one core only, and only if the region is in use
# nowhere: a program on some core may have retyped part of its copy
# (its own frames there), and only that core knows. So monitor 0 runs a
# two-phase commit:
#
#   phase 1   it locks its own copy (CAP_LOCK: refused if the copy has
#             descendants here), then asks every other monitor to do the
#             same (OP_PREPARE_RETYPE); each answers with its vote: 0, or
#             the error its lock got. A yes holds the lock: from now on
#             nothing on that core can retype its copy.
#   decide    all yes: monitor 0 retypes its copy (if that fails, it is a
#             no after all). Any no: abort.
#   phase 2   OP_COMMIT: each unlocks its copy marking it retyped elsewhere
#             (CAP_UNLOCK, 1), and records the region as retyped by monitor
#             0. OP_ABORT: each that voted yes unlocks, and nothing else
#             changes: every replica is as it was. Both are acknowledged, so
#             when the client hears the answer every replica has applied it.
#
# Monitor 0 is the only initiator, so replicas apply the same decisions in
# the same order (each pair ring is FIFO).

# init_replica: an empty replica at REPLICA: every region free.
#   in: rbx = our core.  clobbers: rax rcx rdi
init_replica:
    mov rdi, REPLICA
    mov rax, MAGIC_WORD
    mov qword ptr [rdi + REPLICA_MAGIC], rax
    mov qword ptr [rdi + REPLICA_CORE], rbx
    xor eax, eax
    mov qword ptr [rdi + REPLICA_COMMITS], rax
    mov qword ptr [rdi + REPLICA_ABORTS], rax
    xor ecx, ecx
init_replica_region:
    mov qword ptr [rdi + REPLICA_REGIONS + REGION_STATE], 0
    mov qword ptr [rdi + REPLICA_REGIONS + REGION_OWNER], NO_OWNER
    mov qword ptr [rdi + REPLICA_REGIONS + REGION_VERSION], 0
    mov qword ptr [rdi + REPLICA_REGIONS + REGION_PENDING], 0
    add rdi, REGION_RECORD
    inc ecx
    cmp ecx, N_SHARED_REGIONS
    jb init_replica_region
    mov rdi, REPLICA + REPLICA_DOMAINS    # no domain spans any core yet
    xor eax, eax
    mov ecx, MAX_DOMAINS
    rep stosq
    ret

# region_record(region) -> rax = its record in our replica
#   clobbers: nothing else
region_record:
    push rdi
    shl rdi, 5                        # * REGION_RECORD
    mov rax, REPLICA + REPLICA_REGIONS
    add rax, rdi
    pop rdi
    ret

# region_copy(region) -> rdi = the address of our copy of its capability
#   clobbers: nothing else
region_copy:
    add rdi, SLOT_REGIONS
    or rdi, CADDR_ROOT
    ret

# prepare_retype: phase 1 on this core: lock our copy, vote.
prepare_retype:
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_copy
    call cap_lock
    neg rax                           # 0 (yes) or the error code (no)
    mov rdi, rax
    test rax, rax
    jnz reply                         # no: nothing is locked, nothing to record
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_record
    mov rcx, qword ptr [r15 + MSG + MSG_TXN]
    mov qword ptr [rax + REGION_PENDING], rcx
    xor edi, edi
    jmp reply

# commit_retype: phase 2, the region was retyped by the initiator: our
# copy may never be retyped again, and the record says whose it is.
commit_retype:
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_copy
    mov esi, 1                        # retyped elsewhere
    call cap_unlock
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    mov rsi, qword ptr [r15 + MSG + MSG_INITIATOR]
    call record_commit
    jmp acknowledge_decision

# abort_retype: phase 2, no retype: undo our lock if we voted yes.
abort_retype:
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_record
    mov rcx, qword ptr [r15 + MSG + MSG_TXN]
    cmp qword ptr [rax + REGION_PENDING], rcx
    jne abort_recorded                # we voted no: nothing was locked
    mov qword ptr [rax + REGION_PENDING], 0
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_copy
    xor esi, esi
    call cap_unlock
abort_recorded:
    call count_abort
acknowledge_decision:
    xor edi, edi
    jmp reply

# record_commit(region, owner): the region is retyped, by `owner`.
#   clobbers: rax
record_commit:
    call region_record
    mov qword ptr [rax + REGION_STATE], RETYPED
    mov qword ptr [rax + REGION_OWNER], rsi
    inc qword ptr [rax + REGION_VERSION]
    mov qword ptr [rax + REGION_PENDING], 0
    mov rax, REPLICA
    inc qword ptr [rax + REPLICA_COMMITS]
    ret

# count_abort: one more transaction rolled back, in our replica.
#   clobbers: rax
count_abort:
    mov rax, REPLICA
    inc qword ptr [rax + REPLICA_ABORTS]
    ret

# root_retype: the client asked (w1 = region, w2 = type << 8) for the region
# to become one object of that type (its whole size). Two-phase commit;
# the answer is (0 or the refusal's error code, the core that refused or
# -1, the transaction's number).
root_retype:
    mov qword ptr [r15 + VERDICT], 0
    mov qword ptr [r15 + REFUSER], -1
    inc qword ptr [r15 + TXN]
    mov rdi, qword ptr [r15 + REQUEST + 8]
    cmp rdi, N_SHARED_REGIONS
    jae root_retype_invalid
    call region_copy
    call cap_lock                     # our own vote comes first
    test rax, rax
    jnz root_retype_refused_here
    mov rdi, qword ptr [r15 + REQUEST + 8]
    call region_record
    mov rcx, qword ptr [r15 + TXN]
    mov qword ptr [rax + REGION_PENDING], rcx
    mov edi, OP_PREPARE_RETYPE        # phase 1
    call root_decision_message
    mov rdi, rbp
    call send_to_all
    call gather_votes
    cmp qword ptr [r15 + VERDICT], 0
    jne root_retype_abort
    mov rdi, qword ptr [r15 + REQUEST + 8]   # everyone said yes: do it
    mov rsi, 0
    mov rdx, qword ptr [r15 + REQUEST + 16]   # the type
    mov ecx, SHARED_REGION_BITS
    mov r8d, 1
    lea r9, [rdi + SLOT_RETYPED]
    or r9, CADDR_ROOT
    call region_copy
    call cap_retype
    test rax, rax
    jz root_retype_commit
    neg rax                           # it failed here after all: abort
    mov qword ptr [r15 + VERDICT], rax
    mov qword ptr [r15 + REFUSER], 0
root_retype_abort:
    mov rdi, qword ptr [r15 + REQUEST + 8]
    call region_copy
    xor esi, esi
    call cap_unlock
    mov rdi, qword ptr [r15 + REQUEST + 8]
    call region_record
    mov qword ptr [rax + REGION_PENDING], 0
    call count_abort
    mov edi, OP_ABORT
    jmp root_retype_phase2
root_retype_commit:
    mov rdi, qword ptr [r15 + REQUEST + 8]
    call region_copy
    xor esi, esi                      # ours has the new object under it
    call cap_unlock
    mov rdi, qword ptr [r15 + REQUEST + 8]
    xor esi, esi                      # owner: core 0
    call record_commit
    mov edi, OP_COMMIT
root_retype_phase2:
    call root_decision_message
    mov rdi, rbp
    call send_to_all
    call gather_votes                 # the acknowledgements (all say 0)
root_retype_answer:
    mov rsi, qword ptr [r15 + VERDICT]
    mov rdx, qword ptr [r15 + REFUSER]
    mov rcx, qword ptr [r15 + TXN]
    jmp answer
root_retype_refused_here:
    neg rax
    mov qword ptr [r15 + VERDICT], rax
    mov qword ptr [r15 + REFUSER], 0
    jmp root_retype_answer            # nobody else was asked: nothing to undo
root_retype_invalid:
    mov qword ptr [r15 + VERDICT], CAPERR_INVALID_ARGUMENT
    mov qword ptr [r15 + REFUSER], 0
    jmp root_retype_answer

# root_decision_message(op): OUT = op on REQUEST's region, this transaction.
#   clobbers: rax
root_decision_message:
    mov qword ptr [r15 + OUT + MSG_OP], rdi
    mov rax, qword ptr [r15 + REQUEST + 8]
    mov qword ptr [r15 + OUT + MSG_REGION], rax
    mov rax, qword ptr [r15 + TXN]
    mov qword ptr [r15 + OUT + MSG_TXN], rax
    mov qword ptr [r15 + OUT + MSG_INITIATOR], 0
    ret

# gather_votes: one answer from each of cores 1 .. rbp-1, in order; the
# first refusal goes into VERDICT and REFUSER.
#   clobbers: rax rcx rdx rsi rdi r8
gather_votes:
    push r12
    mov r12d, 1
gather_next:
    cmp r12, rbp
    jae gather_done
    mov rdi, r12
    call recv_reply
    mov rax, qword ptr [r15 + ACK_IN + VOTE_RESULT]
    test rax, rax
    jz gather_yes
    cmp qword ptr [r15 + VERDICT], 0
    jne gather_yes                    # keep the first refusal
    mov qword ptr [r15 + VERDICT], rax
    mov rax, qword ptr [r15 + ACK_IN + VOTE_CORE]
    mov qword ptr [r15 + REFUSER], rax
gather_yes:
    inc r12
    jmp gather_next
gather_done:
    pop r12
    ret

# show_replica: with SHOW=1, one line: our replica's records.
#   "monitor 2: region 0 retyped by 0 v1, region 1 free v0, ... (1 committed, 1 rolled back)"
#   clobbers: rax rcx rdx rsi rdi r8
show_replica:
    mov rax, SHOW
    test rax, rax
    jz show_done
    push r12
    push r13
    lea rdi, [rip + text_monitor]
    call print_cstr
    mov rdi, rbx
    call print_u64
    lea rdi, [rip + text_colon]
    call print_cstr
    xor r12d, r12d
show_region:
    lea rdi, [rip + text_region]
    call print_cstr
    mov rdi, r12
    call print_u64
    mov rdi, r12
    call region_record
    mov r13, rax                      # r13 = its record
    lea rdi, [rip + text_free]
    cmp qword ptr [r13 + REGION_STATE], RETYPED
    jne show_state
    lea rdi, [rip + text_retyped_by]
    call print_cstr
    mov rdi, qword ptr [r13 + REGION_OWNER]
    call print_u64
    jmp show_version
show_state:
    call print_cstr
show_version:
    lea rdi, [rip + text_version]
    call print_cstr
    mov rdi, qword ptr [r13 + REGION_VERSION]
    call print_u64
    inc r12
    cmp r12, N_SHARED_REGIONS
    jae show_counts
    lea rdi, [rip + text_comma]
    call print_cstr
    jmp show_region
show_counts:
    lea rdi, [rip + text_open]
    call print_cstr
    mov rax, REPLICA
    mov rdi, qword ptr [rax + REPLICA_COMMITS]
    call print_u64
    lea rdi, [rip + text_committed]
    call print_cstr
    mov rax, REPLICA
    mov rdi, qword ptr [rax + REPLICA_ABORTS]
    call print_u64
    lea rdi, [rip + text_rolled_back]
    call print_cstr
    pop r13
    pop r12
show_done:
    ret

text_monitor:      .asciz "monitor "
text_colon:        .asciz ":"
text_region:       .asciz " region "
text_free:         .asciz " free"
text_retyped_by:   .asciz " retyped by "
text_version:      .asciz " v"
text_comma:        .asciz ","
text_open:         .asciz " ("
text_committed:    .asciz " committed, "
text_rolled_back:  .asciz " rolled back)\n"
