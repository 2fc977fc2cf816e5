"""Lab 1's grader: what the processor does on a trap, seen from the handler.

The student's emulator/traps.py delivers every exception, interrupt and
system call the machine takes. The grader boots images whose programs
(programs/*.S) take each kind of trap, and a code hook on the first
instruction of every CPU driver handler (the vector stubs of
cpudriver/vectors.S and syscall_entry) reads what that handler finds:
the privilege level, RSP, RFLAGS and the frame on the stack. Those are
compared with what the Intel SDM (vol. 3, 6.14; vol. 2, SYSCALL) says
the silicon leaves there, for events whose cause the grader knows
exactly (the faulting instruction, the user's RSP).

A few cases the CPU driver never produces (an IST stack, a trap gate, an
unaligned or changed RSP0, a fault at an odd kernel RSP, a gate selector
whose RPL is not its segment's DPL, a STAR with RPL bits) are set up by
the grader on a core stopped in ring 3 (programs/probe.S), where it calls
the student's deliver_interrupt (or deliver_syscall) itself and looks at
the core afterwards.
"""

import struct
from dataclasses import dataclass
from pathlib import Path

from sprat.lab.grading import QUANTA, boot, context, fail, test

# What the SDM fixes; the grader's own copies, not the student's.
VECTORS_WITH_ERROR_CODE = {8, 10, 11, 12, 13, 14, 17, 21, 29, 30}
RFLAGS_TF, RFLAGS_IF, RFLAGS_NT, RFLAGS_RF = 1 << 8, 1 << 9, 1 << 14, 1 << 16
RFLAGS_DF, RFLAGS_AC = 1 << 10, 1 << 18
MSR_STAR, MSR_LSTAR, MSR_FMASK = 0xC000_0081, 0xC000_0082, 0xC000_0084
TSS_RSP0, TSS_IST1 = 0x04, 0x24
GATE_TRAP = 0xF
NAMES = {0: "#DE", 1: "#DB (the single-step trap: TF was set)", 2: "the NMI", 3: "#BP",
         6: "#UD", 8: "#DF", 13: "#GP", 14: "#PF", 32: "the timer interrupt"}
FRAME_FIELDS = ("RIP", "CS", "RFLAGS", "RSP", "SS")
SELECTOR = 0xFFFF       # a selector is 16 bits; the frame's CS and SS slots are compared so

# Free RAM (past every core's private area), mapped in the kernel half:
# the stack the IST test hands the processor.
IST_STACK_TOP = 0x0300_1000
# TSS.IST2, in the same page: a frame found there names a slot read one off.
IST2_STACK_TOP = IST_STACK_TOP - 0x800
DOUBLE_FAULT = 8
GENERAL_PROTECTION = 13

SYSCALL = None          # Entry.vector of an entry at syscall_entry
SYSCALL_INSTRUCTION = b"\x0f\x05"
SYSCALL_LENGTH = len(SYSCALL_INSTRUCTION)
# calls.S's value in each register a system call keeps (RAX, RCX, R11 aside)
CALLS_REGISTERS = {"rbx": 0x1111, "rdx": 0x2222, "rsi": 0x3333, "rdi": 0x4444, "rbp": 0x5555,
                   "r8": 0x6666, "r9": 0x7777, "r10": 0x8888, "r13": 0x9999, "r14": 0xAAAA}


def name(vector):
    return NAMES.get(vector, f"vector {vector}")


# --- Watching handlers begin --------------------------------------------------------

@dataclass
class Entry:
    """The core as a handler's first instruction finds it."""
    core: int
    vector: int | None      # None: syscall_entry
    cpl: int                # the engine's own CPL, not CS's low bits
    cs: int
    ss: int
    rsp: int
    rflags: int
    rcx: int
    r11: int
    r15: int
    words: tuple | None     # 8 words from RSP up; None when RSP points nowhere
    before_rcx: bytes | None = None     # syscall_entry: the 2 bytes below RCX
    kept: dict | None = None            # syscall_entry: the registers SYSCALL keeps

    def frame(self, with_error):
        """The processor's frame at RSP: {"error": .., "RIP": .., "CS": .., ...}."""
        words = self.words or (None,) * 8
        fields = (("error",) if with_error else ()) + FRAME_FIELDS
        frame = dict(zip(fields, words))
        for selector in ("CS", "SS"):
            if frame[selector] is not None:
                frame[selector] &= SELECTOR
        return frame


def snapshot(core, vector):
    from unicorn import x86_const as x86

    from emulator import cpustate
    from emulator.paging import PageFault
    regs = core.regs
    core.context.save()
    cpl = core.context.read_u32(cpustate.HFLAGS) & cpustate.HF_CPL_MASK
    rsp = regs.read(x86.UC_X86_REG_RSP)
    try:
        words = struct.unpack("<8Q", core.read_virtual(rsp, 64))
    except PageFault:
        words = None
    rcx = regs.read(x86.UC_X86_REG_RCX)
    before_rcx = kept = None
    if vector is SYSCALL:
        try:
            before_rcx = core.read_virtual(rcx - SYSCALL_LENGTH, SYSCALL_LENGTH)
        except PageFault:
            pass
        kept = {name: regs.read(getattr(x86, f"UC_X86_REG_{name.upper()}"))
                for name in CALLS_REGISTERS}
    # (a segment register read fills 16 bits of a reused 64-bit buffer)
    return Entry(core.id, vector, cpl, regs.read(x86.UC_X86_REG_CS) & SELECTOR,
                 regs.read(x86.UC_X86_REG_SS) & SELECTOR, rsp, regs.read(x86.UC_X86_REG_RFLAGS),
                 rcx, regs.read(x86.UC_X86_REG_R11), regs.read(x86.UC_X86_REG_R15), words,
                 before_rcx, kept)


class Watch:
    """Code hooks on a booted system: every handler entry, every exit(status),
    and the kernel RSP at each instruction in `at` (label -> list of RSPs)."""

    def __init__(self, system, at=()):
        from unicorn import UC_HOOK_CODE
        from unicorn import x86_const as x86
        symbols = system.kernel.symbols
        stubs = {symbols[f"vector{v}"]: v for v in range(256)}
        self.entries: list[Entry] = []
        self.exits: list[tuple[int, int]] = []      # (core, status)
        self.rsp_at = {label: [] for label in at}

        for core in system.machine.cores:
            def on_stub(uc, address, size, _, core=core):
                if address in stubs:
                    self.entries.append(snapshot(core, stubs[address]))

            def on_syscall(uc, address, size, _, core=core):
                self.entries.append(snapshot(core, SYSCALL))

            def on_exit(uc, address, size, _, core=core):
                self.exits.append((core.id, core.regs.read(x86.UC_X86_REG_RDI)))

            uc = core.uc
            uc.hook_add(UC_HOOK_CODE, on_stub, begin=min(stubs), end=max(stubs))
            for label, hook in (("syscall_entry", on_syscall), ("sys_exit", on_exit)):
                uc.hook_add(UC_HOOK_CODE, hook, begin=symbols[label], end=symbols[label])
            for label in at:
                def on_label(uc, address, size, _, core=core, label=label):
                    self.rsp_at[label].append(core.regs.read(x86.UC_X86_REG_RSP))
                uc.hook_add(UC_HOOK_CODE, on_label, begin=symbols[label], end=symbols[label])

    def on(self, core, vectors=None):
        """Entries on `core` (of the given vectors; SYSCALL for system calls)."""
        return [e for e in self.entries
                if e.core == core and (vectors is None or e.vector in vectors)]


def watched_boot(image, *, cores, quantum=None, max_cycles=2_000_000, at=()):
    """Boot a lab image with a Watch installed, and run it to its end."""
    watches = []
    run = boot(image, cores=cores, quantum=quantum, max_cycles=max_cycles,
               setup=lambda system: watches.append(Watch(system, at)))
    watch = watches[0]
    for core in run.system.machine.cores:
        if core.failure and "delivery raised" in core.failure:
            hint = ""
            if "RecursionError" in core.failure:
                hint = (" (a delivery that faults delivers a fault, which faults again: a check "
                        "that refuses every event, such as the gate's DPL applied to "
                        "exceptions and hardware interrupts, not only to `int n`?)")
            fail(f"core {core.id}: {core.failure}{hint}", run)     # the student's code crashed
    return run, watch


# --- What the SDM says a frame holds ------------------------------------------------

def layout():
    from cpudriver import layout as cpudriver_layout
    return cpudriver_layout


def rsp0_of(core):
    """The CPU driver's ring-0 stack on `core` (what its TSS's RSP0 holds)."""
    lay = layout()
    return lay.PERCORE_BASE + core * lay.PERCORE_SIZE + lay.PC_KSTACK_TOP


def stack_problem(what, entry, expected, top, where, unaligned_top):
    """Why the handler's RSP is not `top` less the frame of `expected`."""
    lay = layout()
    got, size = entry.rsp, len(expected)
    want = top - 8 * size
    interrupted_cs = entry.frame("error" in expected)["CS"] if entry.words else None
    if got >= lay.USER_BASE and interrupted_cs == lay.KERNEL_CS:
        return (f"{what}: the frame is on the user's stack (RSP {got:#x}) and its CS says ring 0 "
                f"was interrupted: the core was switched to ring 0 and then the event refused "
                f"(the gate's DPL check must come before anything changes)")
    if got >= lay.USER_BASE:
        return (f"{what}: the frame is on the user's stack (RSP {got:#x}): coming from ring 3 "
                f"the processor first switches to the TSS's RSP0 ({top:#x})")
    first = list(expected.values())[:2]
    if (unaligned_top is not None and got == unaligned_top - 8 * size and entry.words
            and list(entry.words[:2]) == first):
        return (f"{what}: the frame was pushed from RSP {unaligned_top:#x} as it was; the "
                f"processor first aligns RSP down to a multiple of 16 ({top:#x})")
    pushed_from = got + 8 * size
    if (unaligned_top is not None and unaligned_top - 16 <= pushed_from <= unaligned_top
            and _holds(entry, expected)):
        return (f"{what}: the frame was pushed from {pushed_from:#x}, but "
                f"{unaligned_top:#x} aligned down to a multiple of 16 is {top:#x} (clear the "
                f"low 4 bits: & ~0xF)")
    others = [core for core in range(lay.MAX_CORES) if core != entry.core
              and got == rsp0_of(core) - 8 * size]
    if others:
        return (f"{what}: the frame is on core {others[0]}'s kernel stack (its RSP0 "
                f"{rsp0_of(others[0]):#x}), not core {entry.core}'s: each core has its own TSS, "
                f"read at every event")
    pushed, extra = divmod(top - got, 8)
    if not extra and 0 < pushed <= 8 and pushed != size:
        hint = ""
        if pushed == size - 2:
            hint = ": in 64-bit mode SS and RSP are pushed always, privilege change or not"
        elif pushed == size + 1 and "error" not in expected:
            hint = (": this vector has no error code, yet one was pushed (or RSP was moved "
                    "down before it was aligned: align the old RSP first, then push)")
        elif pushed == size - 1 and "error" in expected:
            hint = ": this vector has an error code, and none was pushed"
        return f"{what}: {pushed} words were pushed below {where} {top:#x}, expected {size}{hint}"
    return (f"{what}: RSP in the handler is {got:#x}, expected {want:#x} ({where} {top:#x} "
            f"less a {size}-word frame)")


def _holds(entry, expected):
    """Is every value the grader knows in its place in the frame at RSP?"""
    words = entry.words or ()
    return len(words) >= len(expected) and all(
        (word & SELECTOR if field in ("CS", "SS") else word) == value
        for (field, value), word in zip(expected.items(), words) if field != "RFLAGS")


def _misordered(entry, expected):
    """Are the values the grader knows all in the frame, but not in their places?"""
    words = [w & SELECTOR if k in ("CS", "SS") else w
             for k, w in zip(expected, entry.words)]
    known = {k: v for k, v in expected.items() if k != "RFLAGS"}
    if all(words[i] == known[k] for i, k in enumerate(expected) if k in known):
        return False
    left = list(entry.words[:len(expected)])
    for value in known.values():
        match = next((w for w in left if w == value or w & SELECTOR == value), None)
        if match is None:
            return False
        left.remove(match)
    return True


def expect_frame(what, entry, expected, top, where, unaligned_top=None):
    """Fail the test with frame_problem's reason, if the frame has a problem."""
    problem = frame_problem(what, entry, expected, top, where, unaligned_top)
    if problem:
        fail(problem)


def frame_problem(what, entry, expected, top, where, unaligned_top=None):
    """Compare the frame at the handler's RSP with `expected` ({"error": .., "RIP": .., ...}),
    pushed below `top` (where the stack starts, aligned)."""
    with_error = "error" in expected
    if entry.rsp != top - 8 * len(expected):
        return stack_problem(what, entry, expected, top, where, unaligned_top)
    if entry.words is None:
        return f"{what}: RSP {entry.rsp:#x} in the handler is not mapped"
    got = entry.frame(with_error)
    if _misordered(entry, expected):
        order = ", ".join((("error code",) if with_error else ()) + FRAME_FIELDS)
        return (f"{what}: the frame holds the right values in the wrong order: from RSP up "
                f"it is {order}")
    offsets = {k: 8 * i for i, k in enumerate(got)}
    for field, want in expected.items():
        if field == "RFLAGS":
            continue
        if got[field] != want:
            label = "error code" if field == "error" else field
            hint = ""
            if field == "RSP" and got[field] == want & ~0xF != want:
                hint = ": the frame keeps RSP as it was, before the alignment"
            return (f"{what}: the frame's {label} (at RSP+{offsets[field]}) is {got[field]:#x}, "
                    f"expected {want:#x}{hint}")
    flags_want = expected["RFLAGS"]
    if (got["RFLAGS"] & RFLAGS_IF) != (flags_want & RFLAGS_IF):
        was = "set" if flags_want & RFLAGS_IF else "clear"
        now = "clear" if flags_want & RFLAGS_IF else "set"
        return (f"{what}: the frame's RFLAGS ({got['RFLAGS']:#x}) has IF {now}, but the "
                f"interrupted code ran with IF {was}: push RFLAGS as it was, before clearing "
                f"anything")
    return None


def handler_problem(what, entry, *, from_ring):
    """What the handler itself must find: ring 0, the gate's CS, IF clear."""
    lay = layout()
    if entry.cpl != 0:
        return (f"{what}: the handler runs in ring {entry.cpl}, not ring 0 (the DPL of the "
                f"gate's code segment)")
    if entry.cs != lay.KERNEL_CS:
        return f"{what}: CS is {entry.cs:#x} in the handler, not the gate's selector {lay.KERNEL_CS:#x}"
    if entry.rflags & RFLAGS_IF:
        return f"{what}: IF is still set in the handler: an interrupt gate clears it"
    if from_ring == 3 and entry.ss != 0:
        return (f"{what}: SS is {entry.ss:#x} in the handler: on a privilege change in 64-bit "
                f"mode the processor loads a null SS (selector 0)")
    return None


def check_user_event(run, what, entry, vector, error, rip, user_rsp, stop):
    """A trap from ring 3 at a known instruction and RSP."""
    lay = layout()
    if entry.vector != vector:
        hint = ("" if entry.vector != 14 else " (a page fault on the way in: did the handler "
                "start in ring 3? The new CPL is the DPL of the handler's code segment, 0, "
                "not the gate's DPL)")
        if entry.vector == 13 and entry.words and entry.words[0] == vector * 8 + 2:
            hint = (f" (the #GP's error code {vector * 8 + 2:#x} says gate {vector} refused the "
                    f"`int`: its DPL is 3 and the program's CPL is 3; only a DPL below the CPL "
                    f"refuses)")
        fail(f"{what}: the processor went to the handler of {name(entry.vector)}, not "
             f"{name(vector)}'s{hint}", run, stop)
    expected = {} if error is None else {"error": error}
    expected.update(RIP=rip, CS=lay.USER_CS, RFLAGS=RFLAGS_IF, RSP=user_rsp, SS=lay.USER_SS)
    problem = (handler_problem(what, entry, from_ring=3)
               or frame_problem(what, entry, expected, rsp0_of(entry.core), "RSP0"))
    if problem:
        fail(problem, run, stop)


def expect_exits(run, watch, wanted, why):
    """Every program ran to its end and said exit(0)."""
    statuses = [status for _, status in watch.exits]
    wrong = [(core, status) for core, status in watch.exits if status]
    if wrong or len(statuses) < wanted:
        # The programs enter the kernel by `syscall`: a wrong entry is the fault to name.
        problem, stop = system_call_problem(run, watch)
        if problem:
            fail(problem, run, stop)
    for core, status in wrong:
        fail(f"a program on core {core} exited with status {status}: "
             f"{why.get(status, 'it went wrong')}", run,
             "sys_exit")
    if len(statuses) < wanted:
        fail(f"only {len(statuses)} of {wanted} programs got to exit(); the run ended: "
             f"{run.result.reason}", run)
    run.expect_clean()


def syscall_entry_problem(entry, fmask):
    """What any system call must find at syscall_entry, whatever the program."""
    lay = layout()
    problems = [
        (entry.cpl != 0, f"the handler runs in ring {entry.cpl}, not ring 0"),
        (entry.cs != lay.KERNEL_CS, f"CS is {entry.cs:#x}, not STAR[47:32] = {lay.KERNEL_CS:#x}"),
        (entry.ss != lay.KERNEL_SS,
         f"SS is {entry.ss:#x}, not STAR[47:32] + 8 = {lay.KERNEL_SS:#x}"),
        (entry.before_rcx != SYSCALL_INSTRUCTION,
         f"RCX is {entry.rcx:#x}, not the address of the instruction after a syscall"),
        (not entry.r11 & RFLAGS_IF,
         f"R11 ({entry.r11:#x}) has IF clear: it must hold RFLAGS as the program had it, "
         f"before FMASK"),
        (entry.rflags != entry.r11 & ~fmask,
         f"RFLAGS is {entry.rflags:#x}, expected R11 & ~FMASK = {entry.r11 & ~fmask:#x}"),
        (entry.rsp < lay.USER_BASE,
         f"RSP is {entry.rsp:#x}, not the program's: SYSCALL does not switch stacks (the CPU "
         f"driver does)"),
    ]
    return next((problem for wrong, problem in problems if wrong), None)


def system_call_problem(run, watch):
    """The first system call of the run that entered the kernel wrong:
    (reason, breakpoint that stops there), or (None, None)."""
    for core in run.system.machine.cores:
        calls = watch.on(core.id, {SYSCALL})
        if core.stats.syscalls and not calls:
            count = core.stats.syscalls
            why = syscall_on_a_probe() or (
                "does deliver_syscall leave RIP at LSTAR - SYSCALL_LENGTH, since unicorn adds "
                "SYSCALL_LENGTH after the hook?")
            return (f"core {core.id} executed {count} syscall instruction{'s' * (count != 1)} "
                    f"and none reached syscall_entry: {why} (the run ended: "
                    f"{run.result.reason})"), None
        fmask = core.read_msr(MSR_FMASK)
        for number, entry in enumerate(calls, 1):
            found = syscall_entry_problem(entry, fmask)
            if found:
                return (f"system call {number} on core {core.id}: {found}",
                        f"syscall_entry core {core.id}")
    return None, None


def syscall_on_a_probe():
    """What deliver_syscall leaves on a probe core with the CPU driver's MSRs,
    from ring 3 with IF set: a reason, or None. (A system call that never
    reached syscall_entry may have got there with a flag FMASK should have
    cleared, TF, and trapped on its first instruction.)"""
    from emulator import traps
    system, core = stopped_in_ring_3()
    lstar, fmask = core.read_msr(MSR_LSTAR), core.read_msr(MSR_FMASK)
    syscall_at = core.rip
    try:
        traps.deliver_syscall(core)
    except Exception:           # the boot's own failure says more
        return None
    entry = snapshot(core, SYSCALL)
    if core.rip != lstar - SYSCALL_LENGTH:
        return (f"after deliver_syscall RIP is {core.rip:#x}, not LSTAR - SYSCALL_LENGTH = "
                f"{lstar - SYSCALL_LENGTH:#x} (unicorn adds SYSCALL_LENGTH after the hook)")
    if entry.rcx == syscall_at + SYSCALL_LENGTH:
        entry.before_rcx = SYSCALL_INSTRUCTION          # the probe has no syscall there
    problem = syscall_entry_problem(entry, fmask)
    if problem and entry.rflags & RFLAGS_TF and fmask & RFLAGS_TF:
        problem += " (TF set: the kernel's first instruction traps, #DB)"
    return f"after deliver_syscall {problem}" if problem else None


# --- Exceptions from user mode (images/faults.lst) -----------------------------------

# fault.S's kinds: (what, vector, error code or None, label the frame's RIP names)
FAULT_KINDS = {
    1: ("#PF from a write to kernel memory (fault.S kind=1)", 14, 0b111, "event_1"),
    2: ("#PF from a read of an unmapped page (fault.S kind=2)", 14, 0b100, "event_2"),
    3: ("#GP from `hlt` in ring 3 (fault.S kind=3)", 13, 0, "event_3"),
    4: ("`int 0x40` through a DPL-0 gate (fault.S kind=4)", 13, 0x40 * 8 + 2, "event_4"),
    5: ("`int3` through the DPL-3 gate (fault.S kind=5)", 3, None, "after_5"),
    6: ("#UD from `ud2` (fault.S kind=6)", 6, None, "event_6"),
    7: ("#DE from a division by zero (fault.S kind=7)", 0, None, "event_7"),
}
FAULT_RSP_OFFSET = 3        # fault.S: `sub rsp, 3` before its event
TIMER_VECTOR = 32


def check_faults(image, quanta, max_cycles=200_000):
    """Boot `image` (fault.S programs, core=N kind=K) and check each program's event."""
    lay = layout()
    for quantum in quanta:
        run, watch = watched_boot(image, cores=2, quantum=quantum, max_cycles=max_cycles)
        for core in range(2):
            # Time slices may interrupt a program before its event: skip the timer.
            seen = [e for e in watch.on(core) if e.vector not in (SYSCALL, TIMER_VECTOR)]
            programs = [(int(entry.options["kind"]), module) for entry, module
                        in zip(run.system.image.modules, run.system.modules)
                        if module.core == core]
            for index, (kind, module) in enumerate(programs):
                what, vector, error, label = FAULT_KINDS[kind]
                stop = f"vector{vector} core {core}"
                if index >= len(seen):
                    fail(f"{what}: no handler ran for it (the run ended: {run.result.reason})",
                         run, stop)
                entry = seen[index]
                check_user_event(run, what, entry, vector, error, module.program.symbols[label],
                                 module.stack_top - FAULT_RSP_OFFSET, stop)
            killed = run.system.failed_programs(core)
            if killed != len(programs):
                fail(f"the CPU driver stopped {killed} of the {len(programs)} programs on core "
                     f"{core}, each of which should be killed by its fault", run)
        if not run.result.clean:
            run.expect_clean()


@test(points=15)
def exceptions_from_user_mode_arrive_with_the_right_frame():
    """#PF (two error codes), #GP, #UD and #DE from ring 3: ring 0, RSP0's stack, exact frame, IF off."""
    check_faults("images/faults.lst", QUANTA)


@test(points=10)
def software_interrupts_obey_the_gate_privilege():
    """`int 0x40` (DPL-0 gate) is a #GP at the int, `int3` a #BP after it; `int 13` pushes no error code."""
    check_faults("images/softints.lst", (1, 13, 10_000))
    check_int_13_from_ring_3()
    check_int_from_ring_0()


def check_int_from_ring_0():
    """`int 0x40` from ring 0 through its DPL-0 gate: DPL 0 is not below CPL 0,
    so the gate is used. (softints.lst's programs are all in ring 3, where a
    rule that refuses every DPL-0 gate, or every DPL below 3, refuses the
    same `int`s as the SDM's DPL < CPL.)"""
    system, core = stopped_in_ring_3()
    deliver(core, TIMER_VECTOR)                 # now in the timer's handler: ring 0
    lay = layout()
    what = "`int 0x40` from ring 0 (the timer's handler) through its gate of DPL 0"
    rsp = core.regs.read(x86_register("RSP"))
    expected = {"RIP": core.rip, "CS": lay.KERNEL_CS,
                "RFLAGS": core.regs.read(x86_register("RFLAGS")), "RSP": rsp,
                "SS": core.regs.read(x86_register("SS")) & SELECTOR}
    entry = deliver(core, 0x40, software=True)
    if core.rip == system.kernel.symbols[f"vector{GENERAL_PROTECTION}"]:
        fail(f"{what}: it was refused with a #GP; only a gate whose DPL is below the caller's "
             f"CPL refuses `int n` (DPL 0 < CPL 0 is false: the kernel may use any gate)")
    if core.rip != system.kernel.symbols["vector64"]:
        fail(f"{what}: the core is at {core.rip:#x}, not the gate's handler vector64")
    problem = frame_problem(what, entry, expected, rsp & ~0xF, "the current RSP aligned down to "
                            "16,", unaligned_top=rsp)
    if problem:
        fail(problem)


def x86_register(name):
    from unicorn import x86_const as x86
    return getattr(x86, f"UC_X86_REG_{name}")


def check_int_13_from_ring_3():
    """`int 13` through a gate the program may use: the #GP vector, but a
    software interrupt, which pushes no error code (Intel SDM vol. 3, 6.13:
    not for INT n, even for vectors 8, 10-14, 17 and 21). The CPU driver's
    gate 13 has DPL 0, so the grader gives it DPL 3 on a probe core."""
    system, core = stopped_in_ring_3()
    patch_gate(system, GENERAL_PROTECTION, dpl=3)
    expected = user_frame(core)
    what = "`int 13` from ring 3 through a gate of DPL 3"
    entry = deliver(core, GENERAL_PROTECTION, 0, software=True)
    if entry.rsp == rsp0_of(0) - 8 * (len(expected) + 1):
        fail(f"{what}: 6 words were pushed below RSP0 {rsp0_of(0):#x}, expected 5: `int n` "
             f"pushes no error code, even for a vector that has one (only an exception the "
             f"processor raises does: deliver's `software` says which)")
    problem = (handler_problem(what, entry, from_ring=3)
               or frame_problem(what, entry, expected, rsp0_of(0), "RSP0"))
    if problem:
        fail(problem)


# --- Faults in the kernel (images/badptr.lst) ----------------------------------------

BADPTR_FAULTS = 50


@test(points=15)
def kernel_page_faults_stay_on_the_kernel_stack():
    """50 #PFs in a row in ring 0: no stack switch, RSP aligned down to 16, never a #DF."""
    lay = layout()
    run, watch = watched_boot("images/badptr.lst", cores=1, max_cycles=150_000,
                              at=("user_access_begin",))
    symbols = run.system.kernel.symbols
    problem, stop = system_call_problem(run, watch)
    if problem:
        fail(f"{problem} (badptr.S's prints enter the kernel by `syscall`)", run, stop)
    faults = [e for e in watch.on(0) if e.vector is not SYSCALL]
    before = watch.rsp_at["user_access_begin"]
    for number, entry in enumerate(faults[:BADPTR_FAULTS], 1):
        what = f"kernel page fault {number} of {BADPTR_FAULTS} (print of a bad buffer)"
        stop = f"vector{entry.vector} core 0"
        if number > len(before):
            fail(f"{what}: a fault arrived without the user-copy loop running first", run, stop)
        rsp = before[number - 1]
        aligned = rsp & ~0xF
        if entry.vector != 14:
            fail(f"{what}: the processor went to the handler of {name(entry.vector)}", run, stop)
        if entry.rsp == rsp0_of(0) - 48:
            fail(f"{what}: the frame went to the TSS's RSP0, but a fault in ring 0 stays on the "
                 f"current stack (no privilege change, no stack switch)", run, stop)
        expected = {"error": 0, "RIP": symbols["user_access_begin"], "CS": lay.KERNEL_CS,
                    "RFLAGS": 0, "RSP": rsp, "SS": lay.KERNEL_SS}
        problem = (handler_problem(what, entry, from_ring=0)
                   or frame_problem(what, entry, expected, aligned, "RSP aligned down to 16,",
                                    unaligned_top=rsp))
        if problem:
            fail(problem, run, stop)
    expect_exits(run, watch, 1, {4: "a print of a bad buffer did not return -EFAULT"})
    if len(faults) != BADPTR_FAULTS:
        fail(f"{len(faults)} exceptions were delivered, expected {BADPTR_FAULTS} page faults", run)
    check_gate_into_ring_3()


def check_gate_into_ring_3():
    """The same rule seen from ring 3: a gate whose code segment is ring 3's
    (the new CPL is that descriptor's DPL, not always 0) changes no privilege,
    so the frame goes on the current stack. The CPU driver's gates all name
    its ring-0 CS, where `new CPL = 0` and `switch when coming from ring 3`
    look right."""
    lay = layout()
    system, core = stopped_in_ring_3()
    handler = system.modules[0].program.symbols["start"]
    # The gate names the user's code segment with RPL 0: the processor ignores
    # a gate selector's RPL and gives CS the new CPL, so CS must be USER_CS.
    gate_selector = lay.USER_CS & ~3
    patch_gate(system, TIMER_VECTOR, selector=gate_selector, handler=handler)
    # Room above the frame for the grader's look at 8 words: the stack's top is its page's end.
    from unicorn import x86_const as x86
    core.regs.write(x86.UC_X86_REG_RSP, core.regs.read(x86.UC_X86_REG_RSP) - 64)
    expected = user_frame(core)
    rsp = expected["RSP"]
    what = (f"the timer interrupt from ring 3 through a gate whose selector is {gate_selector:#x},"
            f" the user's code segment (DPL 3) with RPL 0")
    pushes = []                 # where the delivery wrote through the page tables
    write_virtual = core.write_virtual

    def noting_write_virtual(address, data):
        pushes.append(address)
        write_virtual(address, data)
    core.write_virtual = noting_write_virtual
    try:
        entry = deliver(core, TIMER_VECTOR)
    finally:
        del core.write_virtual
    if core.rip == system.kernel.symbols[f"vector{DOUBLE_FAULT}"]:
        if not pushes:
            fail(f"{what}: it became a #DF, and no frame was written with core.write_virtual: "
                 f"the current stack ({rsp:#x}) is mapped, through the core's page tables, "
                 f"not at that physical address")
        fail(f"{what}: it became a #DF, so its frame could not be pushed: with no privilege "
             f"change the frame goes on the current stack (RSP0 is only for a change to ring 0;"
             f" the TSS's slot for ring 3 is empty)")
    if entry.cpl != 3:
        fail(f"{what}: the handler runs in ring {entry.cpl}, not ring 3: the new CPL is the DPL "
             f"of the gate's code segment (the descriptor's flags), not always 0 nor the RPL "
             f"of the gate's selector")
    if core.rip != handler:
        fail(f"{what}: the core is at {core.rip:#x}, not the gate's handler {handler:#x}")
    if entry.cs == gate_selector:
        fail(f"{what}: CS in the handler is {entry.cs:#x}, the gate's selector as it is: CS's "
             f"RPL (its low 2 bits) must be the new CPL, 3, whatever the gate's selector says, "
             f"so CS is {lay.USER_CS:#x}")
    if entry.cs != lay.USER_CS or entry.ss != lay.USER_SS:
        fail(f"{what}: CS:SS in the handler are {entry.cs:#x}:{entry.ss:#x}, expected "
             f"{lay.USER_CS:#x}:{lay.USER_SS:#x} (the gate's CS; SS kept, no privilege change)")
    problem = frame_problem(what, entry, expected, rsp & ~0xF,
                            "the current RSP (no privilege change) aligned down to 16,",
                            unaligned_top=rsp)
    if problem:
        fail(problem)


# --- Timer interrupts (images/slices.lst) ---------------------------------------------

SLICES_WORDS = 13           # slices.S pushes 13 words before its loop


@test(points=15)
def timer_interrupts_preempt_and_resume_programs():
    """Time slices on a core with two programs: each timer frame is exact and both finish intact."""
    lay = layout()
    for quantum in (7, 10_000):
        run, watch = watched_boot("images/slices.lst", cores=1, quantum=quantum,
                                  max_cycles=600_000)
        program = run.system.modules[0].program
        loop = (program.symbols["spin"], program.symbols["spin_end"])
        user_rsp = run.system.modules[0].stack_top - 8 * SLICES_WORDS
        timers = [e for e in watch.on(0) if e.vector is not SYSCALL]
        from_user = [e for e in timers if e.frame(False)["CS"] == lay.USER_CS]
        for number, entry in enumerate(timers, 1):
            what = f"timer interrupt {number}"
            stop = f"vector{entry.vector} core 0"
            if entry.vector != 32:
                problem, _ = system_call_problem(run, watch)     # the programs' syscalls
                if problem:
                    fail(problem, run)
                fail(f"the programs took {name(entry.vector)} (handler entry {number}), not only "
                     f"timer interrupts: an earlier frame must have been wrong", run, stop)
            # Where the timer lands in the loop depends on the schedule: any RIP
            # inside it is right (and one outside it is reported after the frame's shape).
            frame = entry.frame(False)
            rip = frame["RIP"] if loop[0] <= (frame["RIP"] or 0) < loop[1] else loop[0]
            problem = (handler_problem(what, entry, from_ring=3)
                       or frame_problem(what, entry, {"RIP": rip, "CS": lay.USER_CS,
                                                      "RFLAGS": RFLAGS_IF, "RSP": user_rsp,
                                                      "SS": lay.USER_SS},
                                        rsp0_of(0), "RSP0"))
            if problem:
                fail(problem, run, stop)
            if not loop[0] <= frame["RIP"] < loop[1]:
                fail(f"{what}: the frame's RIP {frame['RIP']:#x} is not in slices.S's loop "
                     f"({loop[0]:#x}..{loop[1]:#x})", run, stop)
        if len(from_user) < 2:
            fail(f"only {len(from_user)} timer interrupts came from the programs; the two "
                 f"programs should be interrupted at least twice", run)
        counted = run.system.machine.cores[0].stats.interrupts
        if counted != len(timers):
            fail(f"core 0's count of interrupts (core.stats.interrupts, the `interrupts` column "
                 f"of sprat boot) is {counted}, for {len(timers)} delivered: the given code "
                 f"after your region counts each delivery once; count none yourself", run)
        expect_exits(run, watch, 2, {2: "a register, its stack or IF was different after a "
                                        "timer interrupt"})


# --- System calls (images/calls.lst) ------------------------------------------------

CALLS = 20


@test(points=15)
def system_calls_enter_at_lstar_and_return_intact():
    """SYSCALL: ring 0 at LSTAR with STAR's CS/SS, RCX = next RIP, R11 = RFLAGS, FMASK applied, RSP kept."""
    lay = layout()
    for quantum in (1, 13, 10_000):
        run, watch = watched_boot("images/calls.lst", cores=2, quantum=quantum,
                                  max_cycles=150_000)
        for core_id in range(2):
            core = run.system.machine.cores[core_id]
            fmask = core.read_msr(MSR_FMASK)
            program = run.system.module_for_core(core_id).program
            after = program.symbols["after_syscall"]
            calls = watch.on(core_id, {SYSCALL})
            for number, entry in enumerate(calls, 1):
                what = f"system call {number} on core {core_id}"
                stop = f"syscall_entry core {core_id}"
                in_loop = number <= CALLS
                changed = [f"{reg.upper()} is {entry.kept[reg]:#x}, not calls.S's {value:#x}"
                           for reg, value in CALLS_REGISTERS.items()
                           if in_loop and entry.kept[reg] != value]
                problems = [
                    (entry.cpl != 0, f"the handler runs in ring {entry.cpl}, not ring 0"),
                    (entry.cs != lay.KERNEL_CS,
                     f"CS is {entry.cs:#x}, not STAR[47:32] = {lay.KERNEL_CS:#x}"),
                    (entry.ss != lay.KERNEL_SS,
                     f"SS is {entry.ss:#x}, not STAR[47:32] + 8 = {lay.KERNEL_SS:#x}"),
                    (in_loop and entry.rcx != after,
                     f"RCX is {entry.rcx:#x}, not the address of the instruction after the "
                     f"syscall ({after:#x})"),
                    (not entry.r11 & RFLAGS_IF,
                     f"R11 ({entry.r11:#x}) has IF clear: it must hold RFLAGS as the program "
                     f"had it, before FMASK"),
                    (entry.rflags != entry.r11 & ~fmask,
                     f"RFLAGS is {entry.rflags:#x}, expected R11 & ~FMASK = "
                     f"{entry.r11 & ~fmask:#x}"),
                    (bool(changed),
                     f"{changed[0] if changed else ''}: SYSCALL changes RCX, R11, RFLAGS, CS, "
                     f"SS and RIP, and no other register"),
                    (in_loop and entry.rsp != entry.r15,
                     f"RSP is {entry.rsp:#x}, not the program's {entry.r15:#x}: SYSCALL does not "
                     f"switch stacks (the CPU driver does)"),
                ]
                for wrong, problem in problems:
                    if wrong:
                        fail(f"{what}: {problem}", run, stop)
            if len(calls) != CALLS + 1:
                never = "" if calls else (
                    " (no system call reached syscall_entry: " + (syscall_on_a_probe() or (
                        "does deliver_syscall leave RIP at LSTAR - SYSCALL_LENGTH, since "
                        "unicorn adds SYSCALL_LENGTH after the hook?")) + ")")
                fail(f"core {core_id} made {len(calls)} system calls, expected {CALLS + 1}"
                     f"{never}: {run.result.reason}", run)
            if core.stats.syscalls != len(calls):
                fail(f"core {core_id}'s count of system calls (core.stats.syscalls, the "
                     f"`syscalls` column of sprat boot) is {core.stats.syscalls}, for "
                     f"{len(calls)} made: the machine counts each before it calls "
                     f"deliver_syscall; count none yourself", run)
        expect_exits(run, watch, 2, {3: "a register, RSP or IF was different after a system "
                                        "call"})
    check_syscall_reads_the_msrs()


# Other MSRs than the CPU driver's: its own (CS 0x08, FMASK with IF, a program
# whose RFLAGS hold IF alone) cannot tell STAR, LSTAR and FMASK from constants.
PROBE_KERNEL_CS = 0x28
PROBE_LSTAR = 0xFFFF_8000_0012_3450
PROBE_FMASK = RFLAGS_DF | RFLAGS_AC | RFLAGS_TF


def check_syscall_reads_the_msrs():
    """deliver_syscall on a probe core whose STAR, LSTAR and FMASK are not the
    CPU driver's, from a program with DF, AC and TF set besides IF."""
    from unicorn import x86_const as x86

    from emulator import traps
    system, core = stopped_in_ring_3()
    regs = core.regs
    for msr, value in ((MSR_STAR, PROBE_KERNEL_CS << 32), (MSR_LSTAR, PROBE_LSTAR),
                       (MSR_FMASK, PROBE_FMASK)):
        core.uc.reg_write(x86.UC_X86_REG_MSR, (msr, value))
    flags = regs.read(x86.UC_X86_REG_RFLAGS) | RFLAGS_DF | RFLAGS_AC | RFLAGS_TF | RFLAGS_IF
    regs.write(x86.UC_X86_REG_RFLAGS, flags)
    syscall_at = core.rip
    traps.deliver_syscall(core)
    entry = snapshot(core, SYSCALL)
    what = (f"a system call with STAR[47:32] = {PROBE_KERNEL_CS:#x}, LSTAR = {PROBE_LSTAR:#x}"
            f" and FMASK = {PROBE_FMASK:#x} (DF, AC, TF), from RFLAGS {flags:#x}")
    problems = [
        (entry.cs != PROBE_KERNEL_CS,
         f"CS is {entry.cs:#x}, not STAR[47:32] = {PROBE_KERNEL_CS:#x} (read STAR, do not assume "
         f"the CPU driver's selectors)"),
        (entry.ss != PROBE_KERNEL_CS + 8,
         f"SS is {entry.ss:#x}, not STAR[47:32] + 8 = {PROBE_KERNEL_CS + 8:#x}"),
        (core.rip != PROBE_LSTAR - SYSCALL_LENGTH,
         f"RIP after deliver_syscall is {core.rip:#x}, not LSTAR - SYSCALL_LENGTH = "
         f"{PROBE_LSTAR - SYSCALL_LENGTH:#x}"),
        (entry.rcx != syscall_at + SYSCALL_LENGTH,
         f"RCX is {entry.rcx:#x}, not the next instruction {syscall_at + SYSCALL_LENGTH:#x}"),
        (entry.r11 != flags, f"R11 is {entry.r11:#x}, not RFLAGS as it was, {flags:#x}"),
        (entry.rflags != flags & ~PROBE_FMASK,
         f"RFLAGS is {entry.rflags:#x}, expected RFLAGS & ~FMASK = {flags & ~PROBE_FMASK:#x}"
         f" (clear what FMASK says, not a fixed set of flags)"),
    ]
    for wrong, problem in problems:
        if wrong:
            fail(f"{what}: {problem}")
    check_syscall_forces_ring_0()


def check_syscall_forces_ring_0():
    """STAR[47:32] with RPL bits set: SYSCALL still enters ring 0 with CS's
    RPL 0 (SDM vol. 2: CS.Selector := STAR[47:32] AND FFFCH; CPL := 0). The
    CPU driver's STAR has RPL 0, where taking CS, or the CPL, from STAR as
    it is looks right."""
    from unicorn import x86_const as x86

    from emulator import traps
    system, core = stopped_in_ring_3()
    star_cs = PROBE_KERNEL_CS | 3
    core.uc.reg_write(x86.UC_X86_REG_MSR, (MSR_STAR, star_cs << 32))
    traps.deliver_syscall(core)
    entry = snapshot(core, SYSCALL)
    what = f"a system call with STAR[47:32] = {star_cs:#x} (RPL 3)"
    if entry.cpl != 0:
        fail(f"{what}: the handler runs in ring {entry.cpl}, not ring 0: SYSCALL always enters "
             f"ring 0, whatever STAR's RPL bits say")
    if entry.cs != PROBE_KERNEL_CS:
        fail(f"{what}: CS is {entry.cs:#x}, not STAR[47:32] with its RPL cleared, "
             f"{PROBE_KERNEL_CS:#x}: CS's RPL is the new CPL, 0")


# --- Cases the CPU driver never makes: delivered by the grader --------------------------

def stopped_in_ring_3():
    """A booted core 0 standing at probe.S's `probe` in ring 3, RSP % 16 == 13."""
    from emulator.debug.engine import DebugEngine
    from kernel.boot import boot_image
    path = Path(context.lab_folder or Path(__file__).parent) / "images/probe.lst"
    system = boot_image(path, cores=1)
    engine = DebugEngine(system.machine, max_cycles=1_000_000)
    probe = system.modules[0].program.symbols["probe"]
    engine.run_until(0, probe)
    engine.close()
    core = system.machine.cores[0]
    if core.rip != probe:
        fail(f"the probe program never reached ring 3: {system.machine.outcome().reason}")
    return system, core


def deliver(core, vector, error_code=None, software=False):
    from emulator import traps
    traps.deliver_interrupt(core, vector, error_code, software)
    return snapshot(core, vector)


def user_frame(core, error=None):
    """The frame an event at probe.S's `probe` must push."""
    from unicorn import x86_const as x86
    lay = layout()
    expected = {} if error is None else {"error": error}
    expected.update(RIP=core.rip, CS=lay.USER_CS,
                    RFLAGS=core.regs.read(x86.UC_X86_REG_RFLAGS),
                    RSP=core.regs.read(x86.UC_X86_REG_RSP), SS=lay.USER_SS)
    return expected


def patch_gate(system, vector, *, ist=None, gate_type=None, dpl=None, selector=None,
               handler=None):
    lay = layout()
    gate = lay.PERCORE_BASE + lay.PC_IDT + 16 * vector
    attributes = gate + 4
    memory = system.machine.memory
    if selector is not None:
        memory.write(gate + 2, struct.pack("<H", selector))
    if handler is not None:
        memory.write(gate, struct.pack("<H", handler & 0xFFFF))
        memory.write(gate + 6, struct.pack("<HI", handler >> 16 & 0xFFFF, handler >> 32))
    if ist is not None:
        memory.write(attributes, bytes([ist]))
    if gate_type is not None:
        old = memory.read(attributes + 1, 1)[0]
        memory.write(attributes + 1, bytes([old & 0xF0 | gate_type]))
    if dpl is not None:
        old = memory.read(attributes + 1, 1)[0]
        memory.write(attributes + 1, bytes([old & 0x9F | dpl << 5]))


def tss(offset):
    lay = layout()
    return lay.PERCORE_BASE + lay.PC_TSS + offset


def give_ist_stacks(system, ist1):
    """TSS.IST1 = `ist1`, TSS.IST2 a stack of its own, gate 2 (NMI) naming IST 1."""
    system.machine.memory.write_u64(tss(TSS_IST1), ist1)
    system.machine.memory.write_u64(tss(TSS_IST1 + 8), IST2_STACK_TOP)
    patch_gate(system, 2, ist=1)


def expect_the_nmis_handler(system, core, entry, what):
    """The NMI reached its own handler, and not through IST2's stack."""
    if core.rip == system.kernel.symbols[f"vector{DOUBLE_FAULT}"]:
        fail(f"{what}: it became a #DF, so its frame could not be pushed on the stack the TSS "
             f"gave for it (IST n is the 8 bytes at TSS_IST1 + 8 * (n - 1))")
    if IST2_STACK_TOP - 48 <= entry.rsp < IST2_STACK_TOP:
        fail(f"{what}: the frame is on TSS.IST2's stack ({IST2_STACK_TOP:#x}), not IST1's: IST n "
             f"is the 8 bytes at TSS_IST1 + 8 * (n - 1)")
    if not IST_STACK_TOP - 0x100 <= entry.rsp < IST_STACK_TOP:
        fail(f"{what}: the frame is not on TSS.IST1's stack (RSP in the handler is "
             f"{entry.rsp:#x}): a gate that names an IST uses that stack, whether or not the "
             f"privilege changes")


@test(points=8)
def ist_gates_switch_to_their_own_stack():
    """A gate naming IST 1 puts the frame on TSS.IST1's stack, from ring 3 and from ring 0 alike."""
    system, core = stopped_in_ring_3()
    give_ist_stacks(system, IST_STACK_TOP)
    expected = user_frame(core)
    what = "an NMI through a gate naming IST 1, from ring 3"
    entry = deliver(core, 2)
    expect_the_nmis_handler(system, core, entry, what)
    expect_frame(what, entry, expected, IST_STACK_TOP, "TSS.IST1")
    # Again, now from the handler (ring 0): the IST switch happens all the same.
    what = "an NMI through a gate naming IST 1, from ring 0"
    ring0_rsp = entry.rsp
    entry = deliver(core, 2)
    if entry.rsp != IST_STACK_TOP - 40:
        fail(f"{what}: RSP in the handler is {entry.rsp:#x}, expected {IST_STACK_TOP - 40:#x}: "
             f"a gate's IST stack is used whether or not the privilege changes")
    if entry.frame(False)["RSP"] != ring0_rsp:
        fail(f"{what}: the frame's RSP is {entry.frame(False)['RSP']:#x}, not the interrupted "
             f"handler's {ring0_rsp:#x}")


@test(points=7)
def the_new_stack_is_aligned_to_16_bytes():
    """RSP is aligned down to 16 before the push: odd RSP0, ring-0 RSP and IST stacks."""
    system, core = stopped_in_ring_3()
    # One delivery with the CPU driver's RSP0 first, then back to ring 3: the
    # processor reads the TSS at every event, so RSP0's new value is the one used.
    before = core.uc.context_save()
    deliver(core, 32)
    core.uc.context_restore(before)
    rsp0 = rsp0_of(0) - 8
    system.machine.memory.write_u64(tss(TSS_RSP0), rsp0)
    expected = user_frame(core)
    what = (f"the timer interrupt from ring 3 with TSS.RSP0 = {rsp0:#x} (changed after an "
            f"earlier delivery)")
    entry = deliver(core, 32)
    if entry.rsp == rsp0_of(0) - 40:
        fail(f"{what}: the frame went below {rsp0_of(0):#x}, RSP0 as an earlier delivery found "
             f"it: the processor reads the TSS at every event, and a kernel may change RSP0")
    expect_frame(what, entry, expected, rsp0 & ~0xF, "RSP0 aligned down to 16,",
                 unaligned_top=rsp0)
    # From ring 0 with an RSP that is not even word-aligned.
    from unicorn import x86_const as x86
    odd = entry.rsp - 0x103
    core.regs.write(x86.UC_X86_REG_RSP, odd)
    lay = layout()
    expected = {"error": 2, "RIP": core.rip, "CS": lay.KERNEL_CS, "RFLAGS": entry.rflags,
                "RSP": odd, "SS": entry.ss}
    what = f"a #PF in ring 0 at RSP {odd:#x}"
    entry = deliver(core, 14, 2)
    expect_frame(what, entry, expected, odd & ~0xF, "RSP aligned down to 16,",
                 unaligned_top=odd)
    # An IST stack is aligned like any other.
    ist_top = IST_STACK_TOP - 8
    give_ist_stacks(system, ist_top)
    expected = {"RIP": core.rip, "CS": lay.KERNEL_CS, "RFLAGS": entry.rflags, "RSP": entry.rsp,
                "SS": entry.ss}
    what = f"an NMI through a gate naming IST 1, with TSS.IST1 = {ist_top:#x}"
    entry = deliver(core, 2)
    expect_the_nmis_handler(system, core, entry, what)
    expect_frame(what, entry, expected, ist_top & ~0xF, "TSS.IST1 aligned down to 16,",
                 unaligned_top=ist_top)


@test(points=10)
def interrupt_gates_clear_IF_and_trap_gates_keep_it():
    """Entry clears TF, NT and RF always and IF for an interrupt gate; the frame keeps the old RFLAGS."""
    from unicorn import x86_const as x86
    for gate_type, gate in ((None, "an interrupt gate"), (GATE_TRAP, "a trap gate")):
        system, core = stopped_in_ring_3()
        if gate_type is not None:
            patch_gate(system, 32, gate_type=gate_type)
        flags = core.regs.read(x86.UC_X86_REG_RFLAGS) | RFLAGS_TF | RFLAGS_NT | RFLAGS_RF
        core.regs.write(x86.UC_X86_REG_RFLAGS, flags)
        expected = user_frame(core)
        what = f"the timer interrupt through {gate}, from ring 3 with TF, NT, RF and IF set"
        entry = deliver(core, 32)
        expect_frame(what, entry, expected, rsp0_of(0), "RSP0")
        pushed = entry.frame(False)["RFLAGS"]
        if pushed != flags:
            fail(f"{what}: the frame's RFLAGS is {pushed:#x}, expected {flags:#x}: push RFLAGS "
                 f"as it was, before clearing anything")
        for bit, flag in ((RFLAGS_TF, "TF"), (RFLAGS_NT, "NT"), (RFLAGS_RF, "RF")):
            if entry.rflags & bit:
                fail(f"{what}: {flag} is still set in the handler: every gate clears TF, NT, "
                     f"RF (and VM)")
        if gate_type is None and entry.rflags & RFLAGS_IF:
            fail(f"{what}: IF is still set in the handler: an interrupt gate clears it")
        if gate_type == GATE_TRAP and not entry.rflags & RFLAGS_IF:
            fail(f"{what}: IF is clear in the handler: a trap gate (type {GATE_TRAP:#x}) leaves "
                 f"IF as it was")


@test(points=5)
def a_frame_that_cannot_be_pushed_becomes_a_double_fault():
    """An unmapped RSP0: the event becomes a #DF on its IST stack, framing the program as it was."""
    from emulator import traps
    from emulator.paging import PageFault
    lay = layout()
    system, core = stopped_in_ring_3()
    bad_rsp0 = lay.USER_BASE + 0x1000           # the user half's first 2 MiB: never mapped
    memory = system.machine.memory
    memory.write_u64(tss(TSS_RSP0), bad_rsp0)
    memory.write_u64(tss(TSS_IST1), IST_STACK_TOP)
    patch_gate(system, DOUBLE_FAULT, ist=1)     # what real kernels do, for this very case
    expected = user_frame(core, error=0)
    what = (f"the timer interrupt from ring 3 with TSS.RSP0 = {bad_rsp0:#x} (not mapped) and "
            f"#DF's gate naming IST 1")
    try:
        entry = deliver(core, 32)
    except PageFault as fault:
        fail(f"{what}: deliver_interrupt raised PageFault ({fault}): a PageFault from pushing "
             f"the frame must become _DeliveryFault, which the caller delivers as a #DF")
    except traps.TripleFault as fault:
        fail(f"{what}: triple fault ({fault}), but #DF's own stack (TSS.IST1) is mapped")
    handler = system.kernel.symbols[f"vector{DOUBLE_FAULT}"]
    if core.rip != handler:
        fail(f"{what}: the core is at {core.rip:#x}, not #DF's handler vector8 ({handler:#x})")
    problem = (handler_problem(what, entry, from_ring=3)
               or changed_before_the_push(what, entry, expected)
               or frame_problem(what, entry, expected, IST_STACK_TOP, "TSS.IST1"))
    if problem:
        fail(f"{problem} (the delivery that could not push its frame must have changed nothing: "
             f"the #DF frames the program as it was)")


def changed_before_the_push(what, entry, expected):
    """The #DF's frame, where it belongs, holds a register of the program
    other than it was, though a timer interrupt that can push its frame
    frames that register right: the failed delivery changed it before the
    push (and then "push it as it was" would be the wrong advice)."""
    if entry.rsp != IST_STACK_TOP - 8 * len(expected) or entry.words is None:
        return None
    got = entry.frame(True)
    offsets = {field: 8 * i for i, field in enumerate(got)}
    wrong = [field for field in FRAME_FIELDS if got[field] != expected[field]]
    if not wrong:
        return None
    _, core = stopped_in_ring_3()
    plain = user_frame(core)
    framed = deliver(core, TIMER_VECTOR).frame(False)
    field = next((field for field in wrong if framed[field] == plain[field]), None)
    if field is None:
        return None
    return (f"{what}: the frame's {field} (at RSP+{offsets[field]}) is {got[field]:#x}, but the "
            f"program had {expected[field]:#x}, as a timer interrupt that can push its frame "
            f"says: the failed delivery changed {field} before its push faulted; change no "
            f"register until the frame is on the stack")
