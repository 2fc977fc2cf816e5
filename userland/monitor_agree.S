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
SLOT_RETYPED = 236                    # + region: a new object on its way to the asker
MSG_REGION = 8                        # a 2PC message's words after MSG_OP
MSG_TXN = 16                          # the transaction's number
MSG_INITIATOR = 24                    # the asker's core: the one that retypes
MSG_TYPE = 32                         # what the region becomes
MSG_DISPATCHER = 40                   # the asking program's dispatcher
MSG_DEST = 48                         # where in its CSpace the new object goes

# Every core's capability system has its own copy of each shared region's
# RAM capability (kernel/capservice.py, slot SLOT_REGIONS + r), and every
# monitor a record of each region in its replica. A retype of the whole
# region must happen on one core only, and only if the region is in use
# nowhere: a program on some core may have retyped part of its copy
# (its own frames there), and only that core knows. So a retype, which a
# program on any core may ask for (MONITOR_RETYPE: region, type << 8,
# where the new object goes in its CSpace), is a two-phase commit run by
# monitor 0, in which every monitor, monitor 0 too, plays the same part:
#
#   phase 1   OP_PREPARE_RETYPE. Each monitor locks its copy (CAP_LOCK:
#             refused if the copy has descendants on its core) and votes:
#             0, or the error its lock got. A yes holds the lock: from now
#             on nothing on that core can retype its copy. The asker's
#             monitor also does the retype, tentatively: it retypes its
#             locked copy and gives the new object to the asker. If that
#             fails, its vote is no (a failure in the middle). Monitor 0
#             votes first, and asks no one else if it says no.
#   decide    every vote yes: commit. Any no: abort.
#   phase 2   OP_COMMIT: each unlocks its copy, marking it retyped
#             elsewhere except on the asker's core, and records the region
#             as retyped by the asker's core. OP_ABORT: each that voted yes
#             unlocks, and the asker's monitor takes the new object back
#             and deletes it: every replica is as it was. Both are
#             acknowledged, so when the program hears the answer every
#             replica has applied it.
#
# Monitor 0 is the only one that starts a transaction, so replicas apply
# the same decisions in the same order (each pair ring is FIFO).

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

# new_object_slot(region) -> rax: where the asker's monitor makes its object
#   clobbers: nothing else
new_object_slot:
    lea rax, [rdi + SLOT_RETYPED]
    or rax, CADDR_ROOT
    ret

# LAB agree BEGIN participant
# prepare_retype: phase 1 on this core: lock our copy, vote.
prepare_retype:
    call vote
    mov rdi, rax
    jmp reply

# commit_retype: phase 2 on this core, the region is retyped.
commit_retype:
    call apply_commit
    xor edi, edi
    jmp reply

# abort_retype: phase 2 on this core, it is not: undo what we did.
abort_retype:
    call apply_abort
    xor edi, edi
    jmp reply

# vote -> rax = 0 (yes) or why not: phase 1 of the transaction in MSG.
#   clobbers: everything but rbx rbp r15
vote:
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_copy
    call cap_lock
    test rax, rax
    jnz vote_no                       # nothing is locked, nothing to record
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_record
    mov rcx, qword ptr [r15 + MSG + MSG_TXN]
    mov qword ptr [rax + REGION_PENDING], rcx
    cmp qword ptr [r15 + MSG + MSG_INITIATOR], rbx
    jne vote_yes
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]   # the asker's: retype now
    xor esi, esi                      # (src, offset, type, size_bits, count, dest)
    mov rdx, qword ptr [r15 + MSG + MSG_TYPE]
    mov ecx, SHARED_REGION_BITS
    mov r8d, 1
    call new_object_slot
    mov r9, rax
    call region_copy
    call cap_retype
    test rax, rax
    jnz vote_undo
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]   # and hand it over:
    call new_object_slot
    mov rsi, rax
    mov rdi, KERNEL                   # (kernel, src, dispatcher, dest)
    mov rdx, qword ptr [r15 + MSG + MSG_DISPATCHER]
    mov rcx, qword ptr [r15 + MSG + MSG_DEST]
    call cap_give
    test rax, rax
    jnz vote_undo_retype
vote_yes:
    xor eax, eax
    ret
vote_undo_retype:
    push rax
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call new_object_slot
    mov rdi, rax
    call cap_delete
    pop rax
vote_undo:
    push rax                          # it failed: undo the lock, vote no
    call release_lock
    pop rax
vote_no:
    neg rax
    ret

# apply_commit: phase 2, the transaction in MSG committed.
#   clobbers: everything but rbx rbp r15
apply_commit:
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_copy
    xor esi, esi
    cmp qword ptr [r15 + MSG + MSG_INITIATOR], rbx
    setne sil                         # retyped elsewhere, unless here
    call cap_unlock
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    mov rsi, qword ptr [r15 + MSG + MSG_INITIATOR]
    jmp record_commit

# apply_abort: phase 2, the transaction in MSG did not commit: if we voted
# yes, undo the lock (and, on the asker's core, the tentative retype).
#   clobbers: everything but rbx rbp r15
apply_abort:
    call count_abort
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_record
    mov rcx, qword ptr [r15 + MSG + MSG_TXN]
    cmp qword ptr [rax + REGION_PENDING], rcx
    jne apply_abort_done              # we voted no: nothing to undo
    cmp qword ptr [r15 + MSG + MSG_INITIATOR], rbx
    jne release_lock
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]   # take the new object back ...
    call new_object_slot
    mov rcx, rax                      # (kernel, dispatcher, src, dest)
    mov rdi, KERNEL
    mov rsi, qword ptr [r15 + MSG + MSG_DISPATCHER]
    mov rdx, qword ptr [r15 + MSG + MSG_DEST]
    call cap_take
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]   # ... and delete it
    call new_object_slot
    mov rdi, rax
    call cap_delete
    jmp release_lock
apply_abort_done:
    ret

# release_lock: unlock our copy of MSG's region; nothing pending.
#   clobbers: rax rcx rdx rsi rdi r8-r11
release_lock:
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_record
    mov qword ptr [rax + REGION_PENDING], 0
    mov rdi, qword ptr [r15 + MSG + MSG_REGION]
    call region_copy
    xor esi, esi
    jmp cap_unlock

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

# LAB agree END participant

# root_retype: the program on core ORIGIN asked (w1 = region, w2 = type
# << 8, w3 = where the new object goes in its CSpace) for the region to
# become one object of that type (its whole size). Two-phase commit; the
# answer is (0 or the refusal's error code, the core that refused or -1,
# the transaction's number).
root_retype:
    mov qword ptr [r15 + VERDICT], 0
    mov qword ptr [r15 + REFUSER], -1
    inc qword ptr [r15 + TXN]
    cmp qword ptr [r15 + REQUEST + 8], N_SHARED_REGIONS
    jae root_retype_invalid
    call two_phase_commit
root_retype_answer:
    mov rsi, qword ptr [r15 + VERDICT]
    mov rdx, qword ptr [r15 + REFUSER]
    mov rcx, qword ptr [r15 + TXN]
    jmp answer
root_retype_invalid:
    mov qword ptr [r15 + VERDICT], CAPERR_INVALID_ARGUMENT
    mov qword ptr [r15 + REFUSER], 0
    jmp root_retype_answer

# LAB agree BEGIN coordinator
# two_phase_commit: run transaction TXN, the retype in REQUEST, on every
# core; VERDICT = 0 if it committed, else the first refusal's error code,
# and REFUSER = the core that refused.
#   clobbers: everything but rbx rbp r15
two_phase_commit:
    mov edi, OP_PREPARE_RETYPE        # phase 1: our own vote first
    call transaction_message
    call vote
    test rax, rax
    jnz two_phase_refused_here        # nobody else was asked: nothing to undo
    mov rdi, rbp
    call send_to_all
    call gather_votes                 # every vote is in: now decide
    cmp qword ptr [r15 + VERDICT], 0  # phase 2
    jne two_phase_abort
    mov edi, OP_COMMIT
    call transaction_message
    call apply_commit
    jmp two_phase_tell
two_phase_abort:
    mov edi, OP_ABORT
    call transaction_message
    call apply_abort
two_phase_tell:
    mov rdi, rbp
    call send_to_all
    jmp gather_votes                  # the acknowledgements (all say 0)
two_phase_refused_here:
    mov qword ptr [r15 + VERDICT], rax
    mov qword ptr [r15 + REFUSER], rbx
    ret
# LAB agree END coordinator

# transaction_message(op): OUT = op for this transaction, and a copy in
# MSG, where our own part (vote, apply_*) reads it like everyone else's.
#   clobbers: rax rcx rsi rdi
transaction_message:
    mov qword ptr [r15 + OUT + MSG_OP], rdi
    mov rax, qword ptr [r15 + REQUEST + 8]
    mov qword ptr [r15 + OUT + MSG_REGION], rax
    mov rax, qword ptr [r15 + TXN]
    mov qword ptr [r15 + OUT + MSG_TXN], rax
    mov rax, qword ptr [r15 + ORIGIN]
    mov qword ptr [r15 + OUT + MSG_INITIATOR], rax
    mov rax, qword ptr [r15 + REQUEST + 16]
    mov qword ptr [r15 + OUT + MSG_TYPE], rax
    mov rax, qword ptr [r15 + REQUEST + 40]
    mov qword ptr [r15 + OUT + MSG_DISPATCHER], rax
    mov rax, qword ptr [r15 + REQUEST + 32]
    mov qword ptr [r15 + OUT + MSG_DEST], rax
    lea rsi, [r15 + OUT]
    lea rdi, [r15 + MSG]
    mov ecx, 8
    rep movsq
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
