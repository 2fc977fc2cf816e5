# faulty.S: a program that breaks a rule, for images/faults.lst.
#
# KIND picks the crime; the CPU driver must stop this program with a report
# naming the core, the instruction and the cause, and leave the rest of the
# machine running:
#   1  write to kernel memory (the CPU driver's own page)     -> #PF
#   2  execute a privileged instruction (load CR3)            -> #GP
#   3  jump into another program's code (its frames, which    -> #PF
#      this program has no mapping for: TARGET is physical)
#
# Image arguments: kind=1|2|3 [target=ADDRESS]

KIND = 1
TARGET = 0x400000

start:
    mov rax, KIND
    cmp rax, 1
    je write_kernel
    cmp rax, 2
    je privileged
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

survived:                             # never reached: the fault kills us first
    lea rdi, [rip + text_survived]
    call print_cstr
    mov edi, 1
    call exit

text_survived: .asciz "faulty: the rule was not enforced!\n"

.include "lib/sprat.S"
