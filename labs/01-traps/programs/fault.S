# fault.S: break one rule on purpose, for lab 1's grader.
#
# KIND picks the event; the instruction that causes it is at label
# `event_KIND`, so the grader knows where the processor must say it was.
# RSP is left three bytes off a 16-byte boundary: the frame must still
# land aligned on the kernel stack, and carry this RSP exactly.
#   1  write to the CPU driver's code page      #PF, error 7 (present, write, user)
#   2  read an unmapped user address            #PF, error 4 (not present, read, user)
#   3  `hlt` in ring 3                          #GP, error 0
#   4  `int 0x40`: a gate of DPL 0              #GP, error 0x202 (IDT entry 0x40), at the int
#   5  `int3`: the one DPL-3 gate               #BP, no error code, after the int3
#   6  `ud2`                                    #UD, no error code
#   7  divide by zero                           #DE, no error code
# The CPU driver reports the fault and kills the program, then runs the
# next one: nothing after the event is meant to run.
#
# Image arguments: kind=1..7

KIND = 1
UNMAPPED = USER_BASE + 0x100000

start:
    mov rax, 0x200000                 # KERNEL_BASE: the CPU driver's code
    mov rcx, UNMAPPED
    xor edx, edx
    xor esi, esi
    sub rsp, 3                        # RSP % 16 == 13 at the event
    mov rbx, KIND
    cmp rbx, 1
    je event_1
    cmp rbx, 2
    je event_2
    cmp rbx, 3
    je event_3
    cmp rbx, 4
    je event_4
    cmp rbx, 5
    je event_5
    cmp rbx, 6
    je event_6
    jmp event_7

event_1:
    mov qword ptr [rax], 0
    jmp survived
event_2:
    mov rax, qword ptr [rcx]
    jmp survived
event_3:
    hlt
    jmp survived
event_4:
    int 0x40
    jmp survived
event_5:
    int3
after_5:
    jmp survived
event_6:
    ud2
event_7:
    div rsi

survived:                             # never reached: the event kills us first
    add rsp, 3
    mov edi, 1
    call exit

.include "../../../userland/lib/sprat.S"
