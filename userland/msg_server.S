# msg_server.S: apply the clients' updates to an array only this core touches.
#
# The server of the Barrelfish paper's motivating experiment (SOSP 2009,
# section 2, Figure 3): the clients of userland/msg_client.S (cores 1 ..
# CLIENTS) each send "update" over a channel of their own; the server
# sweeps the channels in turn with urpc_poll and, for each update, adds
# one to the first word of each of the LINES lines of its array. Nobody
# else touches the array, so those lines stay in this core's cache: what
# an update costs here is receiving the message.
#
# It measures its own rate: the modeled cycles from the first update after
# the clients' warm-up (CLIENTS * WARMUP updates) to the last of the
# measured ones (CLIENTS * UPDATES more), and prints:
#     server updates 4000 cycles 123456
# It exits when every client has sent "stop".
#
# Image arguments: core=0 clients=N lines=L updates=K warmup=W

CLIENTS = 1
LINES = 1
UPDATES = 100
WARMUP = 16
SYNC_CHANNEL = 0                      # the start barrier (see msg_client.S)
ARRAY_CHANNEL = 1                     # the server's array: LINES lines of this frame
CLIENT_CHANNELS = 1                   # the client on core c sends on channel 1 + c
START = 0
OP_UPDATE = 1                         # message word 0 (see msg_client.S)
OP_STOP = 2
MEASURE_FROM = CLIENTS * WARMUP       # updates applied when the clock starts ...
MEASURE_TO = CLIENTS * (WARMUP + UPDATES)   # ... and when it stops
MESSAGE = 0                           # our stack frame: the message received ...
ENDS = 64                             # ... and one receive end per client
FRAME = ENDS + CLIENTS * URPC_END_SIZE

start:
    mov rbp, rsi                      # rbp = how many cores the machine has
    sub rsp, FRAME
    call open_channels
    mov rdi, ARRAY_CHANNEL
    call urpc_channel
    mov r14, rax                      # r14 = the array
    xor r12d, r12d                    # r12 = updates applied
    xor r13d, r13d                    # r13 = clients that said stop
    mov rdi, SYNC_CHANNEL
    call urpc_channel
    lea rdi, [rax + START]
    mov rsi, rbp
    call barrier

sweep:
    lea rbx, [rsp + ENDS]             # rbx = the end polled next
    xor ebp, ebp                      # rbp = messages taken in this sweep
sweep_poll:
    mov rdi, rbx
    lea rsi, [rsp + MESSAGE]
    call urpc_poll
    test eax, eax
    jz sweep_next
    inc rbp
    mov rdi, qword ptr [rsp + MESSAGE]
    call serve
sweep_next:
    add rbx, URPC_END_SIZE
    lea rax, [rsp + FRAME]             # just past the last end
    cmp rbx, rax
    jb sweep_poll
    cmp r13, CLIENTS
    je finished
    test rbp, rbp
    jnz sweep
    pause                             # no channel had a message: park until
    jmp sweep                         # a client writes one of them

finished:
    lea rdi, [rip + text_server]
    mov rsi, CLIENTS * UPDATES
    mov rdx, r15
    call report
    xor edi, edi
    call exit

# open_channels: start our receive end of every client's channel.
#   in: rsp + 8 + ENDS = room for CLIENTS ends (our caller's frame)
#   clobbers: rax rcx rdx rsi rdi rbx
open_channels:
    mov ebx, 1                        # rbx = the client's core, 1 .. CLIENTS
open_channels_next:
    lea rdi, [rbx + CLIENT_CHANNELS]
    call urpc_channel
    mov rsi, rax
    lea rdi, [rbx - 1]
    imul rdi, rdi, URPC_END_SIZE
    lea rdi, [rsp + 8 + ENDS + rdi]
    call urpc_init
    inc rbx
    cmp rbx, CLIENTS
    jbe open_channels_next
    ret

# serve(op): carry out one request, and read the clock at the edges of
# the measured updates.
#   in: rdi = op, r14 = the array, r12 = updates applied so far,
#       r13 = stops seen so far
#   out: r12 or r13 counted; r15 = start time, then measured cycles
#   clobbers: rax rcx rdx
serve:
    cmp rdi, OP_STOP
    jne serve_update
    inc r13
    ret
serve_update:
    cmp r12, MEASURE_FROM
    jne serve_apply
    call clock
    mov r15, rax
serve_apply:
    mov rax, r14
    mov ecx, LINES
serve_line:
    inc qword ptr [rax]               # our own lines: cache hits
    add rax, 64
    dec ecx
    jnz serve_line
    inc r12
    cmp r12, MEASURE_TO
    jne serve_done
    call clock
    sub r15, rax
    neg r15
serve_done:
    ret

text_server: .asciz "server updates"

.include "lib/urpc.S"
.include "lib/measure.S"
.include "lib/sprat.S"
