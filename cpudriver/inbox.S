# inbox.S: how one core's CPU driver asks another's for something.
#
# CPU drivers share no data; when core A needs core B to act (start a
# program there), A sends B a message. Each core has an inbox: one page
# among the channel frames (KERNEL_INBOXES + core * 4096, reached through
# the kernel's 1:1 map, and charged by the cost model like any channel).
# It is a URPC-style ring with many senders and one receiver:
#
#   + INBOX_TICKET        the next ticket; a sender takes one with `lock cmpxchg`,
#                         and only while a slot is free
#   + INBOX_TAKEN         how many requests the owner has taken (its line)
#   + INBOX_SLOTS_OFFSET  INBOX_SLOTS slots of 64 bytes: words 0..6 the
#                         request (what, two words, who asks, one more
#                         word), word 7 the control word = ticket + 1,
#                         written last
#
# After writing a request the sender interrupts the owner with an
# INBOX_VECTOR IPI; the owner's handler takes every complete request.
#
# A full inbox is -EAGAIN to whoever asked, never a wait: a sender runs
# with interrupts off, and a user program can fill an inbox (spawn in a
# loop), so a CPU driver that waited for room could wait forever for a
# core that is itself waiting for room in a third inbox.

# inbox_of: the inbox of core rdi.  out: rax.  clobbers: nothing else
inbox_of:
    mov rax, rdi
    shl rax, 12
    push rdx
    mov rdx, KERNEL_INBOXES
    add rax, rdx
    pop rdx
    ret

# post_request: put a request in core rdi's inbox and interrupt that core.
#   in: rdi = core, rsi = request, rdx = word 1, rcx = word 2, r11 = word 4
#   out: rax = 0, or -EAGAIN if the inbox is full
#   clobbers: rax rcx rdx rsi r8 r9 r10 r11
post_request:
    call inbox_of
    mov r8, rax                       # r8 = the inbox
post_request_ticket:
    mov rax, qword ptr [r8 + INBOX_TICKET]       # the next ticket ...
    mov r9, rax
    sub r9, qword ptr [r8 + INBOX_TAKEN]
    cmp r9, INBOX_SLOTS
    jae post_request_full                        # ... has no free slot
    lea r9, [rax + 1]
    lock cmpxchg qword ptr [r8 + INBOX_TICKET], r9
    jne post_request_ticket           # another core took it first: the next one
    mov r9, rax                       # r9 = our ticket
post_request_room:
    mov r10, r9
    and r10, INBOX_SLOTS - 1
    shl r10, 6
    lea r10, [r8 + r10 + INBOX_SLOTS_OFFSET]     # r10 = the slot
    mov qword ptr [r10], rsi
    mov qword ptr [r10 + 8], rdx
    mov qword ptr [r10 + 16], rcx
    mov rax, qword ptr gs:[PCV_CORE_ID]
    mov qword ptr [r10 + 24], rax     # who asks
    mov qword ptr [r10 + 32], r11
    inc r9
    mov qword ptr [r10 + 56], r9      # the control word, last
    # wake the owner: a fixed IPI through our local APIC
    mov rax, APIC_BASE
    shl edi, 24
    mov dword ptr [rax + 0x310], edi
    mov dword ptr [rax + 0x300], INBOX_VECTOR
    xor eax, eax
    ret
post_request_full:
    mov rax, -EAGAIN
    ret

# take_requests: act on every complete request in this core's inbox.
#   clobbers: rax rcx rdx rsi rdi r8-r11
take_requests:
    push rbx
    push r12
    mov rax, qword ptr gs:[PCV_CORE_ID]
    mov rdi, rax
    call inbox_of
    mov rbx, rax                      # rbx = our inbox
take_requests_next:
    mov rax, qword ptr gs:[PCV_INBOX_SEEN]
    mov r12, rax                      # r12 = the next ticket to take
    and rax, INBOX_SLOTS - 1
    shl rax, 6
    lea rsi, [rbx + rax + INBOX_SLOTS_OFFSET]    # rsi = its slot
    lea rax, [r12 + 1]
    cmp qword ptr [rsi + 56], rax
    jne take_requests_done
    cmp qword ptr [rsi], REQUEST_SPAWN
    jne take_requests_taken           # an unknown request: drop it
    mov rdi, qword ptr [rsi + 8]      # module index
    mov rax, qword ptr [rsi + 16]     # argument
    mov rdx, qword ptr [rsi + 32]     # the channels it is handed (the
    push rsi                          #   spawner's CPU driver checked them)
    mov rsi, rax
    call spawn_here
    pop rsi
take_requests_taken:
    lea rax, [r12 + 1]
    mov qword ptr gs:[PCV_INBOX_SEEN], rax
    mov qword ptr [rbx + INBOX_TAKEN], rax
    jmp take_requests_next
take_requests_done:
    pop r12
    pop rbx
    ret
