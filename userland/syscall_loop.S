# syscall_loop.S: the same kernel entry, ITERATIONS times, to be timed.
#
# KIND 0: a null system call (SYS_CORE_ID: enter the kernel, do nothing,
#         come back). KIND 1: yield (with two of these on one core, each
#         yield is a context switch to the other dispatcher). KIND 2: a
#         capability invocation (identify the RAM in root slot 0: the
#         CPU driver, the hypercall port, the capability rules and back).
# The bench runs it with N and 2N iterations and takes the difference, so
# that start-up and exit cancel out.
#
# Image arguments: kind=0|1 iterations=N

KIND = 0
ITERATIONS = 1000

start:
    mov r12, ITERATIONS
    mov rax, KIND
    cmp rax, 2
    je invoke_loop
    test rax, rax
    jnz yield_loop
null_loop:
    mov eax, SYS_CORE_ID
    syscall
    dec r12
    jnz null_loop
    jmp done
yield_loop:
    mov eax, SYS_YIELD
    syscall
    dec r12
    jnz yield_loop
    jmp done
invoke_loop:
    mov rdi, CADDR_ROOT | 0
    mov esi, CAPFIELD_TYPE
    call cap_identify
    dec r12
    jnz invoke_loop
done:
    xor edi, edi
    call exit

.include "lib/sprat.S"
