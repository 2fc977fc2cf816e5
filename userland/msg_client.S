# msg_client.S: send each update to a server core as a message.
#
# The message-passing half of the Barrelfish paper's motivating experiment
# (Baumann et al., SOSP 2009, section 2, Figure 3, "MSGn"): instead of
# touching the shared array itself, a client sends "update" to the one
# core that owns the array (userland/msg_server.S, on core 0), over a URPC
# channel of its own: the client on core c sends on channel 1 + c (channel
# 0 holds the start barrier, channel 1 the server's array). Sends are
# asynchronous; the ring's flow control makes a client wait when it is
# URPC_SLOTS messages ahead of the server.
#
# Cores 1 .. CLIENTS are clients. Every core of the machine meets at a
# start barrier once all are up (the others then exit). Each client sends
# WARMUP updates, then measures UPDATES of them with the modeled clock and
# prints:   msg updates 1000 cycles 123456
# A client that has measured goes on sending until every client has (so
# the server stays as busy for the last as for the first), then sends
# "stop".
#
# Image arguments: clients=N updates=K warmup=W

CLIENTS = 1
UPDATES = 100
WARMUP = 16
SYNC_CHANNEL = 0                      # the start barrier and the done count
CLIENT_CHANNELS = 1                   # the client on core c sends on channel 1 + c
START = 0                             # offsets in the sync frame, a line each
DONE = 64
OP_UPDATE = 1                         # message word 0: what the server should do
OP_STOP = 2
END = 0                               # our stack frame: the channel's send end ...
MESSAGE = 32                          # ... and the message being sent
FRAME = 96

start:
    mov rbx, rdi                      # rbx = our core id
    mov rbp, rsi                      # rbp = how many cores the machine has
    sub rsp, FRAME
    mov rdi, SYNC_CHANNEL
    call urpc_channel
    mov r15, rax                      # r15 = the sync frame
    test rbx, rbx
    jz not_a_client                   # core 0 runs the server, not us
    cmp rbx, CLIENTS
    ja not_a_client
    lea rdi, [rbx + CLIENT_CHANNELS]
    call urpc_channel                 # our channel to the server
    lea rdi, [rsp + END]
    mov rsi, rax
    call urpc_init
    lea rdi, [r15 + START]
    mov rsi, rbp
    call barrier
    lea rbx, [rsp + END]              # from here on: rbx = our end,
    lea rbp, [rsp + MESSAGE]          #               rbp = the message

    mov r12, WARMUP
warm_up:
    call send_update
    dec r12
    jnz warm_up
    call clock
    mov r13, rax                      # r13 = when the measured updates began
    mov r12, UPDATES
measured:
    call send_update
    dec r12
    jnz measured
    call clock
    sub r13, rax
    neg r13                           # r13 = cycles for UPDATES updates

    lea rdi, [r15 + DONE]
    call arrive
keep_sending:                         # until the last client has measured
    call send_update
    cmp qword ptr [r15 + DONE], CLIENTS
    jb keep_sending
    mov edi, OP_STOP
    call send

    lea rdi, [rip + text_msg]
    mov rsi, UPDATES
    mov rdx, r13
    call report
    xor edi, edi
    call exit

not_a_client:                         # count in at the start barrier, leave
    lea rdi, [r15 + START]
    call arrive
    xor edi, edi
    call exit

# send_update: ask the server to update the array once.
#   in: rbx = our end, rbp = the message
#   clobbers: rax rcx rdx rsi rdi r8
send_update:
    mov edi, OP_UPDATE
# send(op): send a message whose word 0 is op (the other words unused).
#   in: rdi = op, rbx = our end, rbp = the message
#   clobbers: rax rcx rdx rsi rdi r8
send:
    mov qword ptr [rbp], rdi
    mov rdi, rbx
    mov rsi, rbp
    jmp urpc_send                     # its ret returns to our caller

text_msg: .asciz "msg updates"

.include "lib/urpc.S"
.include "lib/measure.S"
.include "lib/sprat.S"
