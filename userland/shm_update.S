# shm_update.S: CLIENTS cores update one shared array directly.
#
# The shared-memory half of the Barrelfish paper's motivating experiment
# (Baumann et al., SOSP 2009, section 2, Figure 3, "SHMn"): every core
# repeatedly adds one to the first word of each of the LINES cache lines
# of an array they all share, without a lock. Each update moves every line
# into the updating core's cache, so the more cores update, the longer
# each one waits for the lines to come back.
#
# Cores 0 .. CLIENTS-1 take part. Every core of the machine meets at a
# start barrier once all are up (the others then exit), so the clients
# start together on a quiet machine. Each does WARMUP updates, then
# measures UPDATES updates with the modeled clock and prints:
#     shm updates 1000 cycles 123456
# A core that has measured goes on updating until every core has, so the
# last ones are measured under the same contention as the first.
#
# Image arguments: clients=N lines=L updates=K warmup=W

CLIENTS = 1
LINES = 1
UPDATES = 100
WARMUP = 16
SYNC_CHANNEL = 0                      # the start barrier and the done count
ARRAY_CHANNEL = 1                     # the shared array: LINES lines of this frame
START = 0                             # offsets in the sync frame, a line each
DONE = 64

start:
    mov rbx, rdi                      # rbx = our core id
    mov rbp, rsi                      # rbp = how many cores the machine has
    mov rdi, ARRAY_CHANNEL
    call urpc_channel
    mov r14, rax                      # r14 = the shared array
    mov rdi, SYNC_CHANNEL
    call urpc_channel
    mov r15, rax                      # r15 = the sync frame
    lea rdi, [r15 + START]            # rdi = the start barrier, for both paths
    cmp rbx, CLIENTS
    jae not_a_client
    mov rsi, rbp                      # it waits for every core of the machine
    call barrier

    mov r12, WARMUP
warm_up:
    call update
    dec r12
    jnz warm_up
    call clock
    mov r13, rax                      # r13 = when the measured updates began
    mov r12, UPDATES
measured:
    call update
    dec r12
    jnz measured
    call clock
    sub r13, rax
    neg r13                           # r13 = cycles for UPDATES updates

    lea rdi, [r15 + DONE]
    call arrive
keep_contending:                      # until the last core has measured
    call update
    cmp qword ptr [r15 + DONE], CLIENTS
    jb keep_contending

    lea rdi, [rip + text_shm]
    mov rsi, UPDATES
    mov rdx, r13
    call report
    xor edi, edi
    call exit

not_a_client:                         # count in at the start barrier (rdi), leave
    call arrive
    xor edi, edi
    call exit

# update: add one to the first word of each line of the shared array.
#   in: r14 = the array
#   clobbers: rax rcx
#   A plain read-modify-write, no lock, as in the paper: the cost is the
#   line moving between caches, not the atomicity.
update:
    mov rax, r14
    mov ecx, LINES
update_line:
    inc qword ptr [rax]
    add rax, 64
    dec ecx
    jnz update_line
    ret

text_shm: .asciz "shm updates"

.include "lib/urpc.S"
.include "lib/measure.S"
.include "lib/sprat.S"
