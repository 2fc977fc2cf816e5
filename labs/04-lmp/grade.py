"""Lab 4's grader: the context switch and LMP, judged on what the machine did.

The student writes the switch between dispatchers (cpudriver/dispatch.S:
schedule, load_dispatcher, pick_next) and LMP (cpudriver/lmp.S:
sys_lmp_send, sys_lmp_recv, sys_lmp_send_ep, sys_lmp_call). The grader
watches every crossing of the line between user mode and the CPU driver,
with code hooks on two places outside the student's regions (trap.S):

  trap_dispatch  a dispatcher enters the kernel; its registers are the trap
                 frame (rdi), and CR3 still says which dispatcher it is
  trap_return    a dispatcher is about to leave to user mode; its registers
                 are the frame at rsp, CR3 and PCV_CURRENT say who it is

From those crossings alone, a model of what LMP means (kept here, not taken
from the student's code) says what each crossing must look like: a send to
a dispatcher waiting in SYS_LMP_RECV is delivered, whole, and that receiver
is the next to leave the kernel; a send to one that is not waiting returns
-EAGAIN (-EINVAL for no such dispatcher) to the sender at once and delivers
nothing; a system call
gives back every register but rax, rcx and r11 (and a receiver's rdi rsi
rdx); a time slice gives back every register; when a time slice ends and
another dispatcher can run, another runs. The programs (programs/
lmp_check.S, userland/lmp_pingpong.S, lmp_share.S) check what they receive
too, and the ping-pong's round trips measure the cost against the
reference in the same grade.

On one core the only schedule is the timer's, which counts modeled cycles:
the quantum and a seed change nothing there. So instead of QUANTA the images
move the points where time slices land by pacing the programs (lmp_check.S:
work of (k * pace) mod 4096 rounds after message k), with several paces.
"""

import struct
from bisect import bisect_right
from dataclasses import dataclass, field

from sprat.lab.grading import boot, fail, test

MAX_CYCLES = 12_000_000          # the images end by ~3.4 million cycles
# One-way LMP cost, student / reference. The cost model charges `rep movsq`
# as one instruction however many words it copies, so a switch that copies
# the frame word by word in a loop (correct, and plain) costs more than the
# reference's, within the bound; a receiver that waits for the round robin
# waits out the bystander's time slice: ~90x in pingpong.lst.
COST_BOUND = 3.0
FRAME_FIELDS = ("r15", "r14", "r13", "r12", "r11", "r10", "r9", "r8", "rbp", "rdi", "rsi",
                "rdx", "rcx", "rbx", "rax", "vector", "error", "rip", "cs", "rflags", "rsp",
                "ss")
SYSCALL_LOST = {"rax", "rcx", "r11"}       # a system call gives back every other register
MESSAGE_REGISTERS = ("rax", "rdi", "rsi", "rdx")   # the sender, then the three words


def layout():
    from cpudriver import layout as cpudriver_layout
    return cpudriver_layout


def call_names():
    lay = layout()
    return {lay.SYS_EXIT: "exit", lay.SYS_YIELD: "yield", lay.SYS_LMP_SEND: "lmp_send",
            lay.SYS_LMP_RECV: "lmp_recv", lay.SYS_LMP_CALL: "lmp_call",
            lay.SYS_LMP_SEND_EP: "lmp_send_ep", lay.SYS_PRINT: "print"}


# --- Watching the crossings ---------------------------------------------------------------

@dataclass
class Crossing:
    """A dispatcher entering the kernel ("enter") or leaving it ("leave")."""
    kind: str
    core: int
    dispatcher: int          # by its page tables (CR3)
    current: int | None      # leave: by PCV_CURRENT
    frame: dict
    cr3: int
    next_up: int | None = None   # leave: the dispatcher PCV_NEXT names (None: 0, as it must be)
    state: int | None = None     # leave: its DCB_STATE (DISPATCHER_RUNNABLE, as it must be)


class Watch:
    """Code hooks at trap_dispatch and trap_return on every core; `crossings[core]`."""

    def __init__(self, system):
        from unicorn import UC_HOOK_CODE
        from unicorn import x86_const as x86
        lay = layout()
        symbols = system.kernel.symbols
        self.crossings = {core.id: [] for core in system.machine.cores}
        in_kernel = {core.id: 0 for core in system.machine.cores}
        memory = system.machine.memory

        for core in system.machine.cores:
            area = lay.PERCORE_BASE + core.id * lay.PERCORE_SIZE
            slots = area + lay.PC_DISPATCHERS

            def index(slot):
                return (slot - slots) >> lay.DISPATCHER_SHIFT

            def record(kind, frame_address, core=core, area=area):
                words = struct.unpack("<22Q", core.read_virtual(frame_address,
                                                                lay.TRAP_FRAME_SIZE))
                frame = dict(zip(FRAME_FIELDS, words))
                # A trap taken in the kernel (idle's hlt, a fault in sys_print's copy)
                # returns to the kernel: neither is a dispatcher's crossing.
                if kind == "enter" and frame["cs"] & 3 != 3:
                    in_kernel[core.id] += 1
                    return
                if kind == "leave" and frame["cs"] & 3 != 3 and in_kernel[core.id]:
                    in_kernel[core.id] -= 1
                    return
                cr3 = core.regs.read(x86.UC_X86_REG_CR3)
                who = index(cr3 - lay.D_PML4)
                current = next_up = state = None
                if kind == "leave" and 0 <= who < lay.MAX_DISPATCHERS:
                    state = memory.read_u64(slots + who * lay.DISPATCHER_SIZE + lay.DCB_STATE)
                if kind == "leave":
                    current = index(memory.read_u64(area + lay.PCV_CURRENT))
                    slot = memory.read_u64(area + lay.PCV_NEXT)
                    next_up = index(slot) if slot else None
                self.crossings[core.id].append(Crossing(kind, core.id, who, current, frame, cr3,
                                                        next_up, state))

            def on_enter(uc, address, size, _, core=core, record=record):
                record("enter", core.regs.read(x86.UC_X86_REG_RDI))

            def on_leave(uc, address, size, _, core=core, record=record):
                record("leave", core.regs.read(x86.UC_X86_REG_RSP))

            for label, hook in (("trap_dispatch", on_enter), ("trap_return", on_leave)):
                core.uc.hook_add(UC_HOOK_CODE, hook, begin=symbols[label], end=symbols[label])
                core.uc.ctl_remove_cache(symbols[label], symbols[label] + 1)


@dataclass
class CR3Write:
    """A `mov cr3` the CPU driver ran: on which core, where, from which register."""
    core: int
    where: str               # FILE:LINE of the instruction
    register: str            # its source register
    old: int                 # CR3 before it
    new: int                 # what it wrote


class CR3Writes:
    """Code hooks on every `mov cr3` of the CPU driver (found as the cost model finds
    them, emulator/instcost.py, which charges each: a write empties the TLB), and
    on every instruction of the student's files, for a `mov cr3` hidden where the
    cost model does not look: inside the bytes of another statement (`.byte`),
    reached by a jump into its middle."""

    def __init__(self):
        self.all: list[CR3Write] = []
        self.hidden: list[str] = []      # FILE:LINE of each statement one hid in

    def install(self, system):
        from unicorn import UC_HOOK_CODE

        from emulator.instcost import classify, find_instruction_sites, opcode_at
        from kernel.diagnosis import short_source
        kernel = system.kernel
        lines = {address: f"{file}:{line}" for address, file, line in kernel.source_lines}
        sites = find_instruction_sites(kernel)

        def code_at(address):
            return kernel.code[address - kernel.base:address - kernel.base + 15]

        def register_of(address):
            code = code_at(address)
            at = opcode_at(code)
            rex_b = code[at - 1] & 1 if at and 0x40 <= code[at - 1] <= 0x4F else 0
            return GENERAL_REGISTERS[(code[at + 2] & 7) | rex_b << 3]

        for address, site in sites.items():
            if site.kind != "mov_cr3":
                continue
            where, register = short_source(lines[address]), register_of(address)
            for core in system.machine.cores:
                def on_write(uc, at, size, _, core=core, where=where, register=register):
                    self.record(core, where, register)
                core.uc.hook_add(UC_HOOK_CODE, on_write, begin=address, end=address)
                core.uc.ctl_remove_cache(address, address + 1)

        starts = sorted(lines)
        hid = {}                          # address -> (where, register) or None

        def hidden_write(address):
            """(FILE:LINE of the statement, register) if a mov cr3 that is no
            site begins at `address`, else None."""
            if address not in hid:
                hid[address] = None
                if address not in sites and classify(code_at(address)) == "mov_cr3":
                    statement = starts[bisect_right(starts, address) - 1]
                    hid[address] = (short_source(lines[statement]), register_of(address))
            return hid[address]

        for begin, end in student_code(kernel, short_source):
            for core in system.machine.cores:
                def on_step(uc, address, size, _, core=core):
                    found = hidden_write(address)
                    if found:
                        self.hidden.append(found[0])
                        self.record(core, *found)
                core.uc.hook_add(UC_HOOK_CODE, on_step, begin=begin, end=end)
                core.uc.ctl_remove_cache(begin, end + 1)

    def record(self, core, where, register):
        from unicorn import x86_const as x86
        regs = core.regs
        self.all.append(CR3Write(core.id, where, register, regs.read(x86.UC_X86_REG_CR3),
                                 regs.read(getattr(x86, f"UC_X86_REG_{register.upper()}"))))


STUDENT_FILES = ("cpudriver/dispatch.S", "cpudriver/lmp.S")     # lab.toml's files


def student_code(kernel, short_source):
    """[(first, last)] addresses of the CPU driver's code from the student's files."""
    spans = {}
    for address, file, line in kernel.source_lines:
        name = short_source(f"{file}:{line}").rpartition(":")[0]
        if name in STUDENT_FILES:
            first, last = spans.get(name, (address, address))
            spans[name] = (min(first, address), max(last, address))
    return [(first, last + 15) for first, last in spans.values()]


PAGE_TABLE_BITS = 0x000F_FFFF_FFFF_F000    # of CR3: the PML4's physical address
GENERAL_REGISTERS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


# --- What LMP means: the model the crossings are held to -----------------------------------

@dataclass
class Problem:
    kind: str        # "switch", "delivery", "handover", "refusal", "registers", "timer"
    text: str
    stop: str


@dataclass
class Model:
    """One core's dispatchers as LMP's rules say they must be, crossing by crossing."""
    core: int
    n: int
    state: dict = field(default_factory=dict)      # d -> "ready" | "waiting" | "exited"
    pending: dict = field(default_factory=dict)    # d -> what it entered the kernel for
    deliveries: dict = field(default_factory=dict)  # d -> (sender, words, call) owed to it
    next_up: tuple | None = None                   # (who must leave next, why, stop, sender)
    unswitched: tuple | None = None                # (receiver, why): a delivery whose sender
                                                   #  went back itself, PCV_NEXT left set
    refusal: tuple | None = None                   # (sender, its refused call, its target,
                                                   #  stop): the sender goes on
    refused_words: dict = field(default_factory=dict)  # d -> {word: (sender, call, j, stop,
                                                   #  seq)} of every send to d that was refused
    refused_from: dict = field(default_factory=dict)   # d -> {sender: (call, stop, seq)}, alike
    sends: int = 0                                 # refused sends so far: `seq` above
    timer: tuple | None = None                     # (d, others that could run)
    last_send: tuple | None = None                 # (sender, call, target, stop) just entered
    problems: list = field(default_factory=list)
    delivered: int = 0
    handed_over: int = 0
    refused: int = 0

    def __post_init__(self):
        self.state = {d: "ready" for d in range(self.n)}

    def problem(self, kind, text, label="trap_return", stop=None):
        self.problems.append(Problem(kind, text, stop or f"{label} core {self.core}"))

    def stop_at_send(self, call, cr3, frame, target, delivered):
        """Where a replay stops for one send: its own system call's entry (a
        solution may not pass through sys_lmp_send), on this dispatcher (its
        page tables, CR3), for this message (its first word, rsi), at the
        attempt that was delivered (the receiver waiting) or refused (not)."""
        lay = layout()
        condition = f"$cr3 == {cr3:#x} && $rsi == {frame['rsi']:#x}"
        if not 0 <= target < self.n:
            condition += f" && $rdi == {frame['rdi']:#x}"    # which missing one
        else:
            state = (lay.PERCORE_BASE + self.core * lay.PERCORE_SIZE + lay.PC_DISPATCHERS
                     + target * lay.DISPATCHER_SIZE + lay.DCB_STATE)
            condition += (f" && u64[{state:#x}] {'==' if delivered else '!='}"
                          f" {lay.DISPATCHER_WAITING}")
        return f"sys_{call} core {self.core} if {condition}"

    # A dispatcher enters the kernel (`cr3`: its page tables).
    def enter(self, d, frame, cr3=0):
        lay = layout()
        names = call_names()
        vector = frame["vector"]
        info = {"frame": frame, "call": None, "result": None, "seq": self.sends}
        if vector == lay.SYSCALL_VECTOR:
            number = frame["rax"]
            info["call"] = names.get(number, f"system call {number}")
            if number == lay.SYS_EXIT:
                self.state[d] = "exited"
            elif number == lay.SYS_LMP_RECV:
                self.state[d] = "waiting"
            elif number in (lay.SYS_LMP_SEND, lay.SYS_LMP_CALL, lay.SYS_LMP_SEND_EP):
                self.send(d, number, frame, info, cr3)
        elif vector == lay.TIMER_VECTOR:
            others = [e for e in range(self.n) if e != d and self.state[e] == "ready"]
            self.timer = (d, others)
            info["call"] = "time slice"
        elif vector < 32:
            self.state[d] = "exited"               # killed for a fault
            info["call"] = f"fault {vector}"
        else:
            info["call"] = f"interrupt {vector}"
        self.pending[d] = info

    def send(self, s, number, frame, info, cr3):
        lay = layout()
        call = info["call"]
        if number == lay.SYS_LMP_SEND_EP:
            from kernel.caps import root_caddr
            from kernel.capservice import SLOT_PEERS
            target = frame["rdi"] - root_caddr(SLOT_PEERS)
            if not 0 <= target < lay.MAX_DISPATCHERS:
                return                             # some other capability: not judged here
            words = (frame["rsi"], frame["rdx"], 1 if frame["r10"] else 0)
        else:
            target = frame["rdi"]
            words = (frame["rsi"], frame["rdx"], frame["r10"])
        info["target"] = target
        delivered = target < self.n and target != s and self.state[target] == "waiting"
        info["stop"] = stop = self.stop_at_send(call, cr3, frame, target, delivered)
        self.last_send = (s, call, target, stop)
        if target >= self.n:
            info["result"] = -lay.EINVAL
            self.refusal = (s, f"{call} to {signed(target)}", None, stop)
        elif delivered:
            self.deliveries[target] = (s, words, call, stop)
            self.state[target] = "ready"
            self.next_up = (target, f"dispatcher {s}'s {call} to {target}", stop, s)
            if number == lay.SYS_LMP_CALL:
                self.state[s] = "waiting"          # until the answer comes
            else:
                info["result"] = 0
        else:
            info["result"] = -lay.EAGAIN
            info["busy"] = self.state.get(target)
            self.refusal = (s, f"{call} to {'itself' if target == s else target}", target, stop)
            self.sends += 1
            carried = self.refused_words.setdefault(target, {})
            for j, word in enumerate(words):
                carried[word] = (s, call, j, stop, self.sends)
            self.refused_from.setdefault(target, {})[s] = (call, stop, self.sends)

    # A dispatcher leaves the kernel (by CR3: `d`; by PCV_CURRENT: `current`;
    # `next_up`: whom PCV_NEXT names, which must be nobody by then).
    def leave(self, d, current, frame, cr3, next_up=None, state=None):
        if not 0 <= d < self.n:
            self.problem("switch", f"dispatcher {current} (PCV_CURRENT) goes back to user mode on"
                         f" page tables that are no dispatcher's (CR3 = {cr3:#x}): load_dispatcher"
                         f" loads the next dispatcher's DCB_CR3", "load_dispatcher")
            d = current
        elif current != d:
            self.problem("switch", f"dispatcher {d}'s page tables are loaded (CR3) but PCV_CURRENT"
                         f" says dispatcher {current} runs: schedule makes the next dispatcher"
                         f" current, and load_dispatcher loads that one's DCB_CR3",
                         "load_dispatcher")
        if not 0 <= d < self.n:
            return
        sent, self.last_send = self.last_send, None
        lay = layout()
        if (frame["cs"], frame["ss"]) != (lay.USER_CS, lay.USER_SS):
            self.problem("switch", f"dispatcher {d} goes back to user mode with cs ="
                         f" {frame['cs']:#x} and ss = {frame['ss']:#x} in its frame (user mode:"
                         f" {lay.USER_CS:#x}, {lay.USER_SS:#x}): a switch must save and load the"
                         f" whole trap frame, r15 to ss", "load_dispatcher")
            return
        # A delivery whose sender goes back itself, PCV_NEXT still naming the
        # receiver, had no switch at all: said as such below, and once.
        delivery = self.next_up
        left_set = delivery is not None and d == delivery[3] and next_up == delivery[0]
        if next_up is None:
            self.unswitched = None
        stale = self.unswitched is not None and next_up == self.unswitched[0]
        if next_up is not None and self.refusal is None and not left_set and not stale:
            self.problem("handover", f"dispatcher {d} goes back to user mode with PCV_NEXT still"
                         f" naming dispatcher {next_up}: pick_next clears PCV_NEXT whether or not"
                         f" it uses it, and only a delivered message sets it", "pick_next")
        if self.next_up is not None:
            due, why, stop, sender = self.next_up
            if left_set:
                self.unswitched = (due, why)
                self.problem("handover", f"after {why}, {d} itself went back to user mode with"
                             f" PCV_NEXT naming {due}: no switch happened, so pick_next never took"
                             f" PCV_NEXT; a delivered send also asks for a switch"
                             f" (request_reschedule)", stop=stop)
            elif d != due:
                self.problem("handover", f"after {why}, dispatcher {d} ran next, not {due}: the"
                             f" receiver runs next (the sender hands it the core through"
                             f" PCV_NEXT, which holds the receiver's slot as dispatcher_slot"
                             f" returns it, not its number; pick_next takes it first)", stop=stop)
            else:
                self.handed_over += 1
        elif self.refusal is not None:
            sender, what, target, stop = self.refusal
            if stale:
                self.problem("refusal", f"dispatcher {sender}'s {what} was refused, and PCV_NEXT"
                             f" still names dispatcher {next_up}, left there by an earlier"
                             f" delivery ({self.unswitched[1]}) whose sender went back to user"
                             f" mode with no switch: a delivered send also asks for a switch"
                             f" (request_reschedule)", stop=stop)
            elif next_up is not None:
                self.problem("refusal", f"dispatcher {sender}'s {what} was refused, yet PCV_NEXT"
                             f" names dispatcher {next_up} as {d} goes back to user mode: set"
                             f" PCV_NEXT only for a delivered message (a stale PCV_NEXT wins the"
                             f" next switch, whoever the round robin's turn is)", stop=stop)
            elif d != sender and d == target:
                busy = "it had exited" if self.state.get(d) == "exited" else "it was busy"
                self.problem("refusal", f"dispatcher {sender}'s {what} had to be refused ({busy},"
                             f" not waiting in lmp_recv), yet {d} ran next,"
                             f" as if it had been delivered: deliver only to a dispatcher whose"
                             f" DCB_STATE is DISPATCHER_WAITING", stop=stop)
            elif d != sender:
                self.problem("refusal", f"dispatcher {sender}'s {what} was refused, yet dispatcher"
                             f" {d} ran next: a refused send returns to its sender at once, no"
                             f" switch (does the refusal ask for one, request_reschedule? does"
                             f" schedule clear PCV_RESCHEDULE? is PCV_NEXT set only for a"
                             f" delivery?)", stop=stop)
        elif self.timer is not None:
            ended, others = self.timer
            if d == ended and others:
                self.problem("timer", f"dispatcher {d}'s time slice ended while dispatcher"
                             f" {others[0]} could run, and {d} ran again: after a time slice"
                             f" the next runnable dispatcher runs (is PCV_NEXT left set after a"
                             f" hand-over?)", "pick_next")
        self.next_up = self.timer = self.refusal = None
        if self.state.get(d) == "exited":
            if sent is not None and sent[2] == d:
                self.problem("switch", f"dispatcher {sent[0]}'s {sent[1]} to {d} woke dispatcher"
                             f" {d}, which had exited: only a dispatcher waiting in lmp_recv may"
                             f" be sent to (its DCB_STATE)", stop=sent[3])
            else:
                self.problem("switch", f"dispatcher {d} ran again after it exited or was killed:"
                             f" only a DISPATCHER_RUNNABLE one may run", "pick_next")
            self.state[d] = "ready"
        elif self.state.get(d) == "waiting":
            call = (self.pending.get(d) or {}).get("call", "lmp_recv")
            self.problem("delivery", f"dispatcher {d} came back from {call} although nobody sent"
                         f" it a message: a dispatcher waiting in lmp_recv must not run until a"
                         f" message comes", "sys_lmp_recv")
            self.state[d] = "ready"
        info = self.pending.pop(d, None)
        if state is not None and state != lay.DISPATCHER_RUNNABLE:
            self.not_runnable(d, state, info, frame)
        if info is None:
            self.check_first_run(d, frame)
            return
        lost = set()
        if info["frame"]["vector"] == layout().SYSCALL_VECTOR:
            lost = set(SYSCALL_LOST)
            if d in self.deliveries:
                self.check_delivery(d, frame, info["frame"])
                lost |= {"rdi", "rsi", "rdx"}
            elif info["result"] is not None:
                self.check_result(d, info, frame)
        self.check_kept(d, info, frame, lost)

    def not_runnable(self, d, state, info, frame):
        """A dispatcher goes back to user mode though its DCB_STATE says it may not run."""
        lay = layout()
        name = {lay.DISPATCHER_WAITING: "DISPATCHER_WAITING",
                lay.DISPATCHER_EXITED: "DISPATCHER_EXITED"}.get(state, str(state))
        call = (info or {}).get("call")
        text = (f"dispatcher {d} goes back to user mode"
                f"{f' from its {call}' if call else ''} (rax = {signed(frame['rax'])}) while its"
                f" DCB_STATE says {name}: only a runnable dispatcher runs, and the round robin"
                f" will skip it from now on")
        stop = (info or {}).get("stop")
        if call == "lmp_call" and info.get("result"):
            text += (" (its call was refused: a refused lmp_call returns the send's error at once"
                     " and leaves its caller runnable; mark it waiting only once the send is"
                     " delivered)")
        elif call == "lmp_recv":
            text += " (lmp_recv marks its caller waiting and asks for a switch: request_reschedule)"
        self.problem("switch", text, stop=stop)

    def check_first_run(self, d, frame):
        """A dispatcher's first run starts at its program's first instruction,
        with the registers make_dispatcher gave it (rdi = core id, rdx = its
        number; rsi, the number of cores, is the machine's, not judged here)."""
        lay = layout()
        for register, want, what in (("rdi", self.core, "its core's id"),
                                     ("rdx", d, "its number")):
            carried = self.carried_by_a_refusal(d, register, frame[register], -1)
            if frame[register] != want and carried:
                self.problem("switch", f"dispatcher {d} first ran with {register} ="
                             f" {frame[register]:#x}, not {want} ({what}) as make_dispatcher set"
                             f" it: {carried[0]}", stop=carried[1])
                return
        # Each program is entered at its own base, its stack at the top of its
        # window (cpudriver/layout.py): the program is the one RIP is in.
        program = lay.program_index(frame["rip"])
        base = lay.PROGRAMS_BASE if program is None else lay.program_base(program)
        for register, want in (("rip", base), ("rsp", base + lay.PROGRAM_SPAN),
                               ("cs", lay.USER_CS), ("ss", lay.USER_SS)):
            if frame[register] != want:
                self.problem("switch", f"dispatcher {d} first ran with {register} ="
                             f" {frame[register]:#x}, not {want:#x} as its DCB's frame says:"
                             f" a switch must load the whole trap frame, rip to ss",
                             "load_dispatcher")
                return

    def check_delivery(self, d, frame, before):
        sender, words, call, stop = self.deliveries.pop(d)
        self.delivered += 1
        wanted = [sender, *words]
        for place, register in enumerate(MESSAGE_REGISTERS):
            have, want = frame[register], wanted[place]
            if have == want:
                continue
            if register == "rax":
                shown = f"{signed(have)}, expected the sender's number {want}"
            elif call == "lmp_send_ep" and register == "rdx":
                shown = (f"{have:#x}, expected {want} "
                         f"({'a capability came along' if want else 'no capability was given'})")
                shown += (" (the third word is the hypercall's rdx, 1 if it copied the"
                          " capability, else 0: is it lost or overwritten on the way?)")
                self.problem("delivery", f"dispatcher {sender}'s {call} to {d}: the receiver got"
                             f" {register} = {shown}", stop=stop)
                return
            else:
                shown = f"{have:#x}, expected word {place - 1} = {want:#x}"
            self.problem("delivery", f"dispatcher {sender}'s {call} to {d}: the receiver got"
                         f" {register} = {shown}"
                         f"{word_hint(have, wanted, register, before, self.core)}",
                         stop=stop)
            return

    def check_result(self, d, info, frame):
        lay = layout()
        want, have, call = info["result"], signed(frame["rax"]), info["call"]
        target, stop = info.get("target"), info.get("stop")
        if have == want:
            if want:
                self.refused += 1
            return
        if have == info["frame"]["rax"]:
            self.problem("delivery", f"dispatcher {d}'s {call} to {target} came back with rax ="
                         f" {have}, the call's own number: no result was written (syscall_dispatch"
                         f" writes rax to [rbx + TF_RAX]: is rbx kept?)", stop=stop)
        elif want == 0:          # (the receiver's DCB_STATE may not say so: no condition on it)
            self.problem("delivery", f"dispatcher {d}'s {call} to {target} returned {have}, though"
                         f" {target} was waiting for a message (in lmp_recv, or in lmp_call for"
                         f" its answer): it must be delivered (0)", stop=stop.split(" && u64[")[0])
        elif want == -lay.EINVAL:
            self.problem("refusal", f"dispatcher {d}'s {call} to {signed(target)}, a dispatcher"
                         f" that does not exist (this core has {self.n}, numbered 0 to"
                         f" {self.n - 1}), returned {have}, not -EINVAL ({-lay.EINVAL})"
                         f"{bound_hint(signed(target), self.n)}", stop=stop)
        else:
            whom = "itself" if target == d else f"{target}, which was not waiting in lmp_recv" \
                f" ({info.get('busy')})"
            why = "only a waiting dispatcher may be sent to"
            if call == "lmp_call" and target == d:
                why += (" (does lmp_call mark its caller waiting before its send looks at the"
                        " receiver? Then a call to itself finds itself waiting: send first, and"
                        " wait only once the message is delivered)")
            if call == "lmp_send_ep" and have == -lay.EINVAL:
                why = ("the hypercall refused it, and lmp_send_ep returns the hypercall's error as"
                       " it is (is a negative rax taken for the receiver's number?)")
            self.problem("refusal", f"dispatcher {d}'s {call} to {whom} returned {have}, not"
                         f" -EAGAIN ({-lay.EAGAIN}): {why}", stop=stop)

    def check_kept(self, d, info, frame, lost):
        before = info["frame"]
        lay = layout()
        program = lay.program_index(frame["rip"])
        if (frame["rip"] != before["rip"] and program is not None
                and frame["rip"] == lay.program_base(program)):
            self.problem("switch", f"dispatcher {d} came back from its {info['call']} at its"
                         f" program's first instruction (rip {frame['rip']:#x}), not where it"
                         f" entered the kernel ({before['rip']:#x}): it resumed from the frame it"
                         f" started with, so its registers were never saved as it was switched"
                         f" out (schedule saves the running dispatcher's frame whatever its"
                         f" state: one waiting in lmp_recv is resumed from it)", "schedule")
            return
        for register in FRAME_FIELDS:
            if register in lost or register in ("vector", "error"):
                continue
            carried = self.carried_by_a_refusal(d, register, frame[register], info["seq"])
            if frame[register] != before[register] and carried:
                self.problem("registers", f"dispatcher {d}'s {register} was"
                             f" {before[register]:#x} when it entered the kernel ({info['call']})"
                             f" and {frame[register]:#x} when it came back: {carried[0]}",
                             stop=carried[1])
                return
            if frame[register] != before[register]:
                self.problem("registers", f"dispatcher {d}'s {register} was {before[register]:#x}"
                             f" when it entered the kernel ({info['call']}) and"
                             f" {frame[register]:#x} when it came back"
                             f"{register_hint(register, info)}")
                return

    def carried_by_a_refusal(self, d, register, value, since):
        """(why, stop) if `value`, found in `d`'s `register`, is what a send to `d`
        refused after send number `since` would have written there: a word, or
        (in rax) its sender's number. Then the send wrote into d's saved frame
        before its check that d waits."""
        if register == "rax" and value in self.refused_from.get(d, {}):
            call, stop, seq = self.refused_from[d][value]
            if seq > since:
                return (f"that is dispatcher {value}'s number, and its {call} to {d} was refused"
                        f" meanwhile ({d} was not waiting): a refused send writes nothing; check"
                        f" DCB_STATE before writing the sender's number into the receiver's"
                        f" frame", stop)
        found = self.refused_words.get(d, {}).get(value)
        if found is None or value < 1 << 48 or found[4] <= since:   # (words have bit 48+ set)
            return None
        sender, call, j, stop, _ = found
        return (f"that is word {j} of dispatcher {sender}'s {call} to {d}, which was refused"
                f" ({d} was not waiting): a refused send writes nothing; check DCB_STATE before"
                f" writing the words into the receiver's frame", stop)

    def finish(self):
        for d, (sender, words, call, stop) in self.deliveries.items():
            self.problem("delivery", f"dispatcher {sender}'s {call} to {d} was taken as delivered"
                         f" (it was waiting), but {d} never ran again to receive it", stop=stop)


def signed(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def bound_hint(target, n):
    """What a send to a missing dispatcher that was not refused as one suggests."""
    if target == n:
        return (f" (one past the last: is the bound check off by one? {n} dispatchers are"
                f" 0 to {n - 1})")
    if target < 0:
        return " (a negative number: the bound check must compare unsigned, jae, not jge)"
    if target >= 1 << 32 and target & 0xFFFF_FFFF < n:
        return (f" (its low 32 bits name dispatcher {target & 0xFFFF_FFFF}: the bound check must"
                f" compare all 64 bits, rdi, not edi)")
    return ""


def word_hint(have, wanted, register, before, core):
    """What a wrong register in a delivered message suggests, as a parenthesis."""
    lay = layout()
    if register != "rax" and have == lay.PERCORE_BASE + core * lay.PERCORE_SIZE:
        return (" (that is the core's own area, PCV_SELF, which current_index leaves in rcx:"
                " is a word written from rcx after a call that clobbers it?)")
    if register == "rax" and signed(have) == -lay.EAGAIN:
        return " (rax is still lmp_recv's -EAGAIN: write the sender's number into its saved rax)"
    if register != "rax" and have == before[register]:
        return (f" (that is what the receiver's {register} held when it called: the words never"
                f" reached its saved frame, DCB_FRAME)")
    if register != "rax" and wanted[1:].count(have) == 1:
        return " (the words are there, in the wrong registers: w0, w1, w2 go to rdi, rsi, rdx)"
    return ""


def register_hint(register, info):
    call = info["call"]
    if call == "time slice":
        return ": a switch must save and restore the whole trap frame"
    if register in ("rdi", "rsi", "rdx") and call in ("lmp_send", "lmp_call", "lmp_send_ep"):
        return (": were the words written into the sender's frame? The receiver's registers are"
                " its saved frame in its DCB")
    if register in ("rsp", "rip", "rflags"):
        return ": a switch must save and restore the whole trap frame, rip to ss"
    return ""


# --- Running an image and holding it to the model -----------------------------------------

@dataclass
class Checked:
    run: object
    models: dict

    def problems(self, kinds):
        return [p for model in self.models.values() for p in model.problems if p.kind in kinds]

    def total(self, what):
        return sum(getattr(model, what) for model in self.models.values())


def run_checked(image, cores=1, also=None):
    """Boot `image` with the student's CPU driver, watch every crossing, model it.
    `also(system)`: another watch to install."""
    watches = []

    def setup(system):
        watches.append(Watch(system))
        if also is not None:
            also(system)
    run = boot(image, cores=cores, max_cycles=MAX_CYCLES, setup=setup)
    for core, line in run.console:
        if "not written yet" in line:
            fail(f"core {core}: {line.strip()}", run)
    models = {}
    for core, crossings in watches[0].crossings.items():
        if not crossings:
            continue
        model = Model(core, run.system.dispatchers(core))
        for crossing in crossings:
            if crossing.kind == "enter":
                model.enter(crossing.dispatcher, crossing.frame, crossing.cr3)
            else:
                model.leave(crossing.dispatcher, crossing.current, crossing.frame, crossing.cr3,
                            crossing.next_up, crossing.state)
        model.finish()
        models[core] = model
    return Checked(run, models)


def judge(checked, kinds, programs=True):
    """Fail on the first problem of `kinds`, then on a run that did not end well
    (with `programs`, also on a program that says something was wrong)."""
    problems = checked.problems(kinds)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more like it)" if len(problems) > 1 else ""
        fail(first.text + more, checked.run, stop=first.stop)
    expect_finished(checked.run, programs, checked.models)


def expect_finished(run, programs=True, models=None):
    """Every core finished (and, with `programs`, every program ended well, as it says)."""
    for core, line in run.console:
        if "KERNEL PANIC" in line:
            fail(f"core {core}: {line.strip()}{where_in_kernel(run, core)}"
                 f"{panicked_in_a_send((models or {}).get(core))}", run)
        if programs and line.startswith("lmp_check:"):
            fail(f"core {core}: {line.strip()}", run)
    if not run.result.clean:
        fail(f"the run did not end cleanly: {run.why_unfinished()}{stuck_hint(run)}", run)
    if programs:
        run.expect_clean()


def panicked_in_a_send(model):
    """', inside dispatcher D's CALL to T ...' if the kernel panicked while a send
    was in it (entered, never left): which send, and what its target suggests."""
    if model is None or model.last_send is None:
        return ""
    sender, call, target, stop = model.last_send
    if 0 <= target < model.n:
        return f", inside dispatcher {sender}'s {call} to {target}"
    return (f", inside dispatcher {sender}'s {call} to {signed(target):#x}, a dispatcher that does"
            f" not exist: it must return -EINVAL before anything is looked up"
            f"{bound_hint(signed(target), model.n)}")


def stuck_hint(run):
    """What a run that spends its cycle budget with PCV_NEXT still set usually
    means, as a sentence: a stale PCV_NEXT, which wins every later switch."""
    if not run.result.reason.startswith("cycle budget"):
        return ""
    lay = layout()
    for core in run.system.machine.cores:
        area = lay.PERCORE_BASE + core.id * lay.PERCORE_SIZE
        slot = run.system.machine.memory.read_u64(area + lay.PCV_NEXT)
        if slot:
            index = (slot - area - lay.PC_DISPATCHERS) >> lay.DISPATCHER_SHIFT
            return (f". Core {core.id}'s PCV_NEXT still names dispatcher {index}: a stale"
                    f" PCV_NEXT wins every later switch (and one that is not runnable sends"
                    f" pick_next round and round); clear it in pick_next whether or not you"
                    f" use it, and set it only for a delivered message")
    return ""


def where_in_kernel(run, core):
    """' (in LABEL+N, file:line)' where core `core`'s kernel panic happened, as
    kernel/diagnosis.py reads it from the panic's frame."""
    for line in run.diagnosis():
        if line.startswith(f"core {core} stopped") and "a kernel panic" in line and "(in " in line:
            return " " + line[line.rindex("(in "):]
    return ""


def expect_lines(run, wanted):
    """The programs' own closing lines, as many as the image has programs saying them."""
    said = [line.strip() for _, line in run.console]
    for line in wanted:
        if line not in said:
            fail(f"no program said '{line}' (what they said: {'; '.join(said) or 'nothing'})", run)
        said.remove(line)


# --- The tests ------------------------------------------------------------------------

PAIRS_LINES = ["sent 30", "received 30", "sent 30", "received 30", "bystander rounds 300000"]
CALLS_LINES = ["calls 20", "calls 20", "answered 40", "bystander rounds 200000"]
BUSY_LINES = ["probed 40", "sent 12", "received 12", "bystander rounds 150000"]


@test(points=25)
def messages_arrive_whole_and_in_order():
    """Sends and calls between pairs on one core: each message reaches its receiver, words intact."""
    for image, lines, count in (("images/pairs.lst", PAIRS_LINES, 60),
                                ("images/calls.lst", CALLS_LINES, 80)):
        checked = run_checked(image)
        judge(checked, {"switch", "delivery"})
        expect_lines(checked.run, lines)
        if checked.total("delivered") != count:
            fail(f"{image}: {checked.total('delivered')} messages were delivered, expected"
                 f" {count}", checked.run)


@test(points=20)
def the_receiver_runs_next():
    """After a delivered send or call, the receiver is the next dispatcher to run (hand-over)."""
    for image, count in (("images/pairs.lst", 60), ("images/calls.lst", 80)):
        checked = run_checked(image)
        judge(checked, {"switch", "handover"}, programs=False)
        if checked.total("handed_over") != count:
            fail(f"{image}: {checked.total('handed_over')} of {count} messages were handed over",
                 checked.run)


@test(points=15)
def a_dispatcher_not_waiting_gets_nothing():
    """A send to a dispatcher not in lmp_recv (busy, itself, none such) is refused, nothing delivered."""
    checked = run_checked("images/busy.lst")
    judge(checked, {"switch", "refusal", "delivery"})
    expect_lines(checked.run, BUSY_LINES)
    if checked.total("refused") < 46:
        fail(f"only {checked.total('refused')} sends were refused; the prober alone makes 46 that"
             f" must be", checked.run)


@test(points=15)
def registers_survive_calls_and_time_slices():
    """Every register comes back from a system call or a time slice as it was; slices rotate."""
    for image in ("images/slices.lst", "images/pairs.lst", "images/busy.lst", "images/calls.lst"):
        checked = run_checked(image)
        judge(checked, {"switch", "registers", "timer"}, programs=False)


@test(points=10)
def a_capability_goes_along():
    """lmp_send_ep: the frame's capability lands in the receiver's slot, which it maps and reads;
    without a capability rdx is 0; a refusal, the capability system's or -EAGAIN, comes back as it is."""
    from kernel.caps import CapType, root_caddr
    from kernel.capservice import SLOT_RECEIVE
    checked = run_checked("images/share.lst")
    judge(checked, {"switch", "delivery", "refusal"})
    run = checked.run
    if checked.total("delivered") != 2:
        fail(f"{checked.total('delivered')} messages went through endpoints, expected 2 (the giver's"
             f" to the taker, the ep prober's to its taker)", run, stop="sys_lmp_send_ep core 0")
    service = run.system.machine._hypercall_handler
    system = service.systems[0]
    given = system.lookup(service.cspaces[(0, 0)], root_caddr(4))
    taken = system.lookup(service.cspaces[(0, 1)], root_caddr(SLOT_RECEIVE))
    if taken.type != CapType.FRAME or taken.obj is not given.obj:
        fail(f"the taker's slot {SLOT_RECEIVE} holds a {taken.type.name}, not a copy of the"
             f" giver's frame", run, stop="sys_lmp_send_ep core 0")
    expect_lines(run, ["taker: mapped the frame I was given; it holds 23063",
                       "ep prober: refused twice as it should be, then sent",
                       "ep taker: the words, and no capability"])


@test(points=5)
def cr3_is_written_only_when_it_changes():
    """A switch to the dispatcher whose page tables are loaded keeps CR3: a write empties the TLB."""
    for image in ("images/pingpong.lst", "images/busy.lst"):
        writes = CR3Writes()
        checked = run_checked(image, also=writes.install)
        judge(checked, {"switch"}, programs=False)
        if writes.hidden:
            fail(f"{image}: a `mov cr3` ran from inside the bytes of the statement at"
                 f" {writes.hidden[0]}, reached by a jump into its middle: the machine charges"
                 f" and counts only the instructions the assembler placed; write `mov cr3, REG`"
                 f" as an instruction of its own", checked.run)
        # The page tables are CR3's bits 12 to 51: a write that changes only
        # the flag bits below them (PWT, PCD) loads the same tables again.
        reloads = [w for w in writes.all if (w.old ^ w.new) & PAGE_TABLE_BITS == 0]
        if reloads:
            first = reloads[0]
            fail(f"{image}: {len(reloads)} of the {len(writes.all)} CR3 writes loaded the page"
                 f" tables loaded already (the first at {first.where}, CR3 {first.old:#x} on"
                 f" core {first.core}): each empties the TLB for nothing; a switch back to the"
                 f" dispatcher that was running must keep CR3 (write it only when it changes)",
                 checked.run,
                 stop=f"{first.where} core {first.core} if"
                      f" (($cr3 ^ ${first.register}) & {PAGE_TABLE_BITS:#x}) == 0")


@test(points=10)
def costs_no_more_than_the_reference():
    """One-way LMP cost past a bystander within 3x of the reference's, measured in this grade."""
    yours = run_checked("images/pingpong.lst")
    judge(yours, {"switch", "handover"}, programs=False)
    reference = boot("images/pingpong.lst", cores=1, max_cycles=MAX_CYCLES, reference=True)
    mine, theirs = one_way(yours.run), one_way(reference)
    if mine > COST_BOUND * theirs:
        fail(f"one LMP message costs {mine:.0f} cycles one way, the reference {theirs:.0f}: more"
             f" than {COST_BOUND}x (does the bystander run inside a round trip, or does the path"
             f" do work it need not?)", yours.run)


def one_way(run):
    """lmp_pingpong.S's pinger: 'lmp rounds N cycles C', C / 2N."""
    for _, line in run.console:
        if line.startswith("lmp rounds"):
            words = line.split()
            return int(words[-1]) / (2 * int(words[2]))
    fail(f"the ping-pong never finished: {run.result.reason}", run)
