# twophase.S: ask monitor 0 to retype shared regions; print what the
# monitors agreed.
#
# Runs beside a monitor and asks it on the core's client rings (any core
# will do: a monitor forwards its program's requests to monitor 0). Each
# step of PLAN (four bits a step, lowest first, STEPS of them) asks for one
# retype of a whole shared region into a frame: bits 0-1 the region, bit 2
# set asks for an impossible type instead (the initiator's own retype then
# fails after every core voted yes: a failure in the middle). The monitors
# run a two-phase commit (userland/monitor.S, "3. agreement") and answer:
#
#   retype region 0: committed, transaction 1; the new frame is ours, at physical 58720256
#   retype region 1: refused by core 2, error 120 (in use there): rolled back on every core
#
# At the end it counts itself done in the word DONE of page DONE_PAGE;
# with stop=1 (the default) it then waits until CLIENTS programs have, and
# stops the monitors; built with show=1 they print their replicas, which
# must all agree.
#
# Image arguments: plan=NIBBLES steps=N stop=0|1 clients=N

PLAN = 0x6010                         # region 0, 1, 0 again, 2 with a bad type
STEPS = 4
ENDS = USER_STACK_TOP - 256           # our ends of the client rings
STOP = 1
CLIENTS = 1
DONE_PAGE = MONITOR_FIRST_PAGE + 1
DONE = 8                              # (word 0 of that page is a domain's, tests)
IMPOSSIBLE = 4                        # a step's bit: ask for a type that cannot be
BAD_TYPE = 0xFF
NEW_OBJECT = CADDR_ROOT | 20          # + region: where a retype's new object goes

start:
    mov rsp, ENDS                     # the stack goes below them
    mov rdi, rsp
    call monitor_open
    mov r12, PLAN                     # r12 = the steps left, lowest first
    mov r13, STEPS                    # r13 = how many
next_step:
    test r13, r13
    jz finished
    mov rbx, r12
    and rbx, 0xF                      # rbx = this step
    call retype
    shr r12, 4
    dec r13
    jmp next_step
finished:
    mov rax, USER_CHANNELS + DONE_PAGE * 4096 + DONE
    lock inc qword ptr [rax]          # one more client done
    mov rcx, STOP
    test rcx, rcx
    jz finished_quietly
wait_for_the_others:
    cmp qword ptr [rax], CLIENTS
    jae stop_monitors
    mov eax, SYS_YIELD
    syscall
    mov rax, USER_CHANNELS + DONE_PAGE * 4096 + DONE
    jmp wait_for_the_others
finished_quietly:
    xor edi, edi
    call exit
stop_monitors:
    mov rdi, ENDS
    jmp stop_monitors_and_exit

# retype: ask for step rbx and print the answer.
#   clobbers: rax rcx rdx rsi rdi r8-r11 r14 r15
retype:
    mov rdx, rbx
    and rdx, 3                        # w1 = the region
    mov ecx, CAPTYPE_FRAME
    mov eax, BAD_TYPE
    test rbx, IMPOSSIBLE
    cmovnz ecx, eax
    shl rcx, 8                        # w2 = type << 8
    lea r8, [rdx + NEW_OBJECT]        # w3 = where the new object goes
    mov esi, MONITOR_RETYPE
    mov rdi, ENDS
    call monitor_call                 # rax = verdict, rdx = refuser, rcx = txn
    mov r14, rax
    mov r15, rdx
    push rcx
    lea rdi, [rip + text_retype]
    call print_cstr
    mov rdi, rbx
    and rdi, 3
    call print_u64
    test r14, r14
    jnz retype_refused
    lea rdi, [rip + text_committed]
    call print_cstr
    pop rdi
    call print_u64
    lea rdi, [rip + text_ours]        # the new frame is ours: where is it?
    call print_cstr
    mov rdi, rbx
    and rdi, 3
    add rdi, NEW_OBJECT
    mov esi, CAPFIELD_BASE
    call cap_identify
    mov rdi, rax
    call print_u64
    jmp retype_done
retype_refused:
    pop rdi
    lea rdi, [rip + text_refused]
    call print_cstr
    mov rdi, r15
    call print_u64
    lea rdi, [rip + text_error]
    call print_cstr
    mov rdi, r14
    call print_u64
    call print_reason
    lea rdi, [rip + text_rolled_back]
    call print_cstr
retype_done:
    lea rdi, [rip + text_newline]
    jmp print_cstr

# print_reason: " (what error r14 means)" for the refusals a commit meets.
#   clobbers: rax rcx rdx rsi rdi r8-r11
print_reason:
    lea rdi, [rip + text_in_use]
    cmp r14, CAPERR_HAS_DESCENDANTS
    je print_reason_go
    lea rdi, [rip + text_locked]
    cmp r14, CAPERR_LOCKED
    je print_reason_go
    lea rdi, [rip + text_elsewhere]
    cmp r14, CAPERR_RETYPED_ELSEWHERE
    je print_reason_go
    lea rdi, [rip + text_not_allowed]
    cmp r14, CAPERR_RETYPE_NOT_ALLOWED
    je print_reason_go
    ret
print_reason_go:
    jmp print_cstr

text_retype:      .asciz "retype region "
text_committed:   .asciz ": committed, transaction "
text_ours:        .asciz "; the new frame is ours, at physical "
text_refused:     .asciz ": refused by core "
text_error:       .asciz ", error "
text_rolled_back: .asciz ": rolled back on every core"
text_newline:     .asciz "\n"
text_in_use:      .asciz " (in use there)"
text_locked:      .asciz " (locked by another commit)"
text_elsewhere:   .asciz " (retyped on another core)"
text_not_allowed: .asciz " (cannot be retyped into that)"

.include "lib/monitor_client.S"
.include "lib/urpc.S"
.include "lib/sprat.S"
