# spin.S: a compute-bound loop, for measuring how fast the emulator runs.
#
# ITERATIONS comes from the image (`module /userland/spin.S iterations=N`);
# the loop body is four instructions, and no memory is touched, so the
# measured speed is the engine's, not the cost model's.

start:
    mov rcx, ITERATIONS
    xor eax, eax
spin_loop:
    add rax, rcx
    xor rax, 0x55
    dec rcx
    jnz spin_loop
spin_done:
    xor edi, edi
    call exit

.include "lib/sprat.S"
