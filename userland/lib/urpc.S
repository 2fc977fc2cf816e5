# urpc.S: user-level RPC between cores, the way Barrelfish's URPC does it.
#
# A channel carries messages one way, from one core to another, through a
# page of shared memory (one of the channel frames at USER_CHANNELS). It
# holds a ring of URPC_SLOTS slots of one cache line (64 bytes) each, and,
# in a line of its own, the receiver's acknowledgement count:
#
#   ring + 0      slot 0: payload words 0..6, then the control word
#   ring + 64     slot 1
#   ...
#   ring + 1024   ack line: how many messages the receiver has consumed
#
# Sending writes the 7 payload words first and the control word last. The
# control word of message n (counting from 0) is n + 1: it says "this slot
# holds message n", and because it differs on every lap of the ring a stale
# slot can never be mistaken for a new one. The receiver polls the control
# word of the slot it expects next: nothing but that cache line moves
# between the cores until a message is there (x86 keeps stores in order,
# so when the receiver sees the control word the payload is complete).
#
# Flow control: the sender never has more than URPC_SLOTS messages
# unconsumed. The receiver writes its count to the ack line every
# URPC_SLOTS/2 messages, and the sender reads the ack line only when its
# own idea of the count says the ring might be full, so acks cost a
# cache line transfer every half ring, not every message.
#
# Each end keeps its private state (which the other core never touches) in
# a struct urpc_end in its own memory:
#   +0  URPC_RING   the ring's address
#   +8  URPC_SEQ    sender: next message number; receiver: next expected
#   +16 URPC_ACKED  sender: the receiver's count, as last read
#
# Waiting is `pause` in a loop: the machine parks a core that pauses after
# reading channel lines until another core writes one of them
# (emulator/cost.py), so a waiting core costs the host nothing.

URPC_SLOTS = 16
URPC_SLOT_SIZE = 64
URPC_PAYLOAD_WORDS = 7
URPC_CONTROL = 56                     # the control word: the slot's last word
URPC_ACK = 1024                       # URPC_SLOTS * URPC_SLOT_SIZE
URPC_RING = 0
URPC_SEQ = 8
URPC_ACKED = 16
URPC_END_SIZE = 24

# urpc_channel(index) -> the address of shared channel `index`
urpc_channel:
    mov rax, rdi
    shl rax, 12                       # CHANNEL_SIZE is one page
    mov rdx, USER_CHANNELS
    add rax, rdx
    ret

# urpc_init(end, ring): start an end of a channel at message 0.
urpc_init:
    mov qword ptr [rdi + URPC_RING], rsi
    mov qword ptr [rdi + URPC_SEQ], 0
    mov qword ptr [rdi + URPC_ACKED], 0
    ret

# urpc_send(end, message): send 7 words; waits while the ring is full.
#   in: rdi = the sender's end, rsi = 7 words to send
#   clobbers: rax rcx rdx r8
urpc_send:
# LAB urpc BEGIN send
    mov rax, qword ptr [rdi + URPC_SEQ]
    mov rcx, rax
    sub rcx, qword ptr [rdi + URPC_ACKED]
    cmp rcx, URPC_SLOTS
    jb urpc_send_room
    # The ring may be full: read the receiver's count until there is room.
    mov rdx, qword ptr [rdi + URPC_RING]
urpc_send_wait:
    mov rcx, qword ptr [rdx + URPC_ACK]
    mov qword ptr [rdi + URPC_ACKED], rcx
    mov r8, rax
    sub r8, rcx
    cmp r8, URPC_SLOTS
    jb urpc_send_room
    pause
    jmp urpc_send_wait
urpc_send_room:
    # slot = ring + (seq mod URPC_SLOTS) * 64
    mov rdx, rax
    and rdx, URPC_SLOTS - 1
    shl rdx, 6
    add rdx, qword ptr [rdi + URPC_RING]
    # the payload first ...
    mov rcx, qword ptr [rsi]
    mov qword ptr [rdx], rcx
    mov rcx, qword ptr [rsi + 8]
    mov qword ptr [rdx + 8], rcx
    mov rcx, qword ptr [rsi + 16]
    mov qword ptr [rdx + 16], rcx
    mov rcx, qword ptr [rsi + 24]
    mov qword ptr [rdx + 24], rcx
    mov rcx, qword ptr [rsi + 32]
    mov qword ptr [rdx + 32], rcx
    mov rcx, qword ptr [rsi + 40]
    mov qword ptr [rdx + 40], rcx
    mov rcx, qword ptr [rsi + 48]
    mov qword ptr [rdx + 48], rcx
    # ... the control word last: from here on the receiver may take it
    lea rcx, [rax + 1]
urpc_send_commit:
    mov qword ptr [rdx + URPC_CONTROL], rcx
    mov qword ptr [rdi + URPC_SEQ], rcx
# LAB urpc END send
urpc_send_end:
    ret

# urpc_recv(end, buffer): wait for the next message; copy its 7 words.
#   in: rdi = the receiver's end, rsi = room for 7 words
#   clobbers: rax rcx rdx
urpc_recv:
# LAB urpc BEGIN receive
    mov rax, qword ptr [rdi + URPC_SEQ]
    mov rdx, rax
    and rdx, URPC_SLOTS - 1
    shl rdx, 6
    add rdx, qword ptr [rdi + URPC_RING]
    lea rcx, [rax + 1]                # the control word message `seq` carries
urpc_recv_poll:
    cmp qword ptr [rdx + URPC_CONTROL], rcx
    je urpc_recv_take
    pause
    jmp urpc_recv_poll
urpc_recv_take:
    jmp urpc_take

# urpc_poll(end, buffer) -> 1 and the message in buffer, or 0 if none yet.
#   in: rdi = the receiver's end, rsi = room for 7 words
#   clobbers: rax rcx rdx
urpc_poll:
    mov rax, qword ptr [rdi + URPC_SEQ]
    mov rdx, rax
    and rdx, URPC_SLOTS - 1
    shl rdx, 6
    add rdx, qword ptr [rdi + URPC_RING]
    lea rcx, [rax + 1]
    cmp qword ptr [rdx + URPC_CONTROL], rcx
    je urpc_take
    xor eax, eax
    ret

# urpc_take: copy the slot at rdx out, count it, acknowledge every half ring.
#   in: rdi = end, rsi = buffer, rdx = slot, rcx = seq + 1.  out: rax = 1
urpc_take:
    mov rax, qword ptr [rdx]
    mov qword ptr [rsi], rax
    mov rax, qword ptr [rdx + 8]
    mov qword ptr [rsi + 8], rax
    mov rax, qword ptr [rdx + 16]
    mov qword ptr [rsi + 16], rax
    mov rax, qword ptr [rdx + 24]
    mov qword ptr [rsi + 24], rax
    mov rax, qword ptr [rdx + 32]
    mov qword ptr [rsi + 32], rax
    mov rax, qword ptr [rdx + 40]
    mov qword ptr [rsi + 40], rax
    mov rax, qword ptr [rdx + 48]
    mov qword ptr [rsi + 48], rax
urpc_received:
    mov qword ptr [rdi + URPC_SEQ], rcx
    test rcx, URPC_SLOTS / 2 - 1
    jnz urpc_take_done
    mov rdx, qword ptr [rdi + URPC_RING]
    mov qword ptr [rdx + URPC_ACK], rcx
urpc_take_done:
    mov eax, 1
# LAB urpc END receive
urpc_recv_end:
    ret
