# faulty.S: a program that breaks a rule, for images/faults.lst.
#
# KIND picks the crime; the CPU driver must stop this program with a report
# naming the core, the instruction and the cause, and leave the rest of the
# machine running:
#   1  write to kernel memory (the CPU driver's own page)     -> #PF
#   2  execute a privileged instruction (load CR3)            -> #GP
#   3  jump into another program's code (its frames, which    -> #PF
#      this program has no mapping for: TARGET is physical)
#   4  invoke a capability it does not hold (map from an      -> refused
#      empty slot): the invocation fails, and it says so
#
# Image arguments: kind=1|2|3|4 [target=ADDRESS]

KIND = 1
TARGET = 0x400000

start:
    mov rax, KIND
    cmp rax, 1
    je write_kernel
    cmp rax, 2
    je privileged
    cmp rax, 4
    je invoke_nothing
    jmp jump_away

write_kernel:
    mov rax, 0x200000                 # KERNEL_BASE: the CPU driver's code
    mov qword ptr [rax], 0
    jmp survived

privileged:
    xor eax, eax
    mov cr3, rax
    jmp survived

jump_away:
    mov rax, TARGET
    jmp rax

invoke_nothing:
    mov rdi, CADDR_ROOT | 1           # our PDPT: map into entry 1 ...
    mov esi, 1
    mov rdx, CADDR_ROOT | 9           # ... from slot 9, which holds nothing
    mov ecx, CAPRIGHT_READ
    xor r8d, r8d
    call cap_map
    test rax, rax
    jz survived
    neg rax
    mov r12, rax
    lea rdi, [rip + text_refused]
    call print_cstr
    mov rdi, r12
    call print_u64
    lea rdi, [rip + text_newline]
    call print_cstr
    mov edi, 1
    call exit

survived:                             # never reached: the fault kills us first
    lea rdi, [rip + text_survived]
    call print_cstr
    mov edi, 1
    call exit

text_survived: .asciz "faulty: the rule was not enforced!\n"
text_refused:  .asciz "faulty: invoking slot 9, which holds no capability, was refused: error "
text_newline:  .asciz "\n"

.include "lib/sprat.S"
