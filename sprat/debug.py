"""`sprat debug`: boot an image stopped before its first instruction, and step it.

    $ sprat debug --cores 4
    sprat debug: 4 cores, stopped before the first instruction (`help` lists the commands)
    core 0 ring 0 0x200000 <kernel_entry> cpudriver/boot.S:12  mov rsp, 0x9000
    (sprat) break syscall_entry core 2
    breakpoint 1 at 0x200585 <syscall_entry> cpudriver/syscall.S:14 (core 2)
    (sprat) continue
    core 2 hit breakpoint 1
    core 2 ring 0 0x200585 <syscall_entry> cpudriver/syscall.S:14  swapgs

`sprat debug --script FILE` runs the commands in FILE (each echoed after
the prompt, `#` starts a comment), for labs and tests. Either way, left by
`quit`, Ctrl-D or the script's end, it exits 1, with a line saying why, if
the commands ran the machine to an end that `sprat boot` counts as failed
(a program killed or exiting non-zero, unless --expect-failures; a broken
channel protocol; a panic; the cycle budget), else 0: a mistyped command
costs its `***` line, not the exit status.

`sprat debug --gdb PORT` serves gdb's remote protocol on 127.0.0.1:PORT
instead of the prompt: `target remote :PORT` in gdb, and each core is a
thread.

The prompt is Python's `cmd.Cmd`, as pdb's is: every command is a `do_NAME`
method below, and its docstring is what `help NAME` prints. A mistake costs
one line starting with `***`, never the session. What the commands do to the
machine is emulator/debug/engine.py (non-stop holding too: `stop core K`);
what addresses are called is emulator/debug/symbols.py; what `print`,
`set`, `display`, `x` and conditions compute is emulator/debug/expression.py;
where a message is sent or taken and what a channel's ring holds are the
OS's knowledge (kernel/tracepoints.py, kernel/urpc.py). This file only
reads commands and prints.
"""

from __future__ import annotations

import cmd
import contextlib
import re
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import capstone
from unicorn import x86_const as x86

from emulator import sources
from emulator.core import CoreState
from emulator.debug import expression
from emulator.debug.engine import DebugEngine
from emulator.debug.expression import ExpressionError
from emulator.debug.frames import RETURN_ADDRESS, Outermost, frame_rules
from emulator.debug.symbols import Location, SymbolError, SymbolTable
from emulator.debug.target import TargetError
from emulator.debug.timetravel import TimeTravel
from emulator.debug.trace import MessageLog, TraceRecorder
from kernel.tracepoints import (install_message_tracepoints, install_run_tracepoints,
                               message_points, read_message)
from cpudriver.layout import N_USER_CHANNELS
from kernel.urpc import URPC_SLOTS, ring_state
from emulator.errors import SpratError
from emulator.files import OutputFile, read_text
from sprat.boot import (DEFAULT_MAX_CYCLES, VIOLATIONS_SHOWN, add_machine_options, end_early,
                        machine_shape, positive_argument)
from sprat.gdb import KERNEL_ENTRY, USER_ENTRY
from sprat.lab.watchdog import on_stop
from sprat.output import input_name, output_name
from sprat.table import format_table

MAX_STEPS = 10_000_000
MAX_DUMP = 4096
MAX_DISASSEMBLY = 200
DEFAULT_DUMP = 64
DEFAULT_DISASSEMBLY = 8
DEFAULT_WATCH = 8
LONGEST_INSTRUCTION = 15       # bytes, on x86
BACKTRACE_WORDS = 256          # how far up the stack `bt` looks for return addresses
MESSAGES_SHOWN = 8
MAX_REVERSE_LINE = 1000        # instructions reverse-step undoes looking for another line
LIST_LINES = 10                # `list` shows this many source lines
MAX_EXAMINE = 512              # units `x/N` shows at most
# x/FMT: unit sizes, and how many units a line holds.
UNIT_SIZES = {"b": 1, "h": 2, "w": 4, "g": 8}
UNITS_PER_LINE = {1: 8, 2: 8, 4: 4, 8: 2}
VALUE_FORMATS = "xduotc"
_FILE_LINE = re.compile(r"(?P<file>[^\s:]+):(?P<line>\d+)")
_PLAIN_ADDRESS = re.compile(r"[A-Za-z_.][\w.$]*(\+\w+)*|\d\w*(\+\w+)*")
# `break PLACE if CONDITION`: the first `if` standing as a word.
_IF = re.compile(r"(?P<place>.*?)(?:(?:^|\s+)if(?:\s+(?P<condition>.*)|$))?$", re.DOTALL)
# `set LHS = RHS`: the first `=` that is not part of ==, !=, <= or >=.
_ASSIGNMENT = re.compile(r"(?<![=!<>])=(?!=)")

EFLAGS_BITS = ((0, "CF"), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"),
               (10, "DF"), (11, "OF"))
REGISTER_ROWS = (("rax", "rbx", "rcx", "rdx"), ("rsi", "rdi", "rbp", "rsp"),
                 ("r8", "r9", "r10", "r11"), ("r12", "r13", "r14", "r15"))
SYSTEM_REGISTERS = (("cr0", "cr2", "cr3", "cr4"), ("efer", "fs_base", "gs_base", "k_gs_base"))
SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
# Instructions `next` runs to the end of instead of stepping into.
STEP_OVER = ("call", "syscall")
SYSCALL_RCX_TO_RIP = 136 - 96      # trap.S's frame: TF_RIP - TF_RCX (syscall's rcx = its rip)


class CommandError(Exception):
    """A mistake in a command: shown as one `***` line."""


@dataclass
class PointNote:
    """What the prompt knows of a breakpoint beyond the engine's: what it
    stops on, its condition as typed, whether `tbreak` made it."""
    what: str
    base: object = None             # base(core) -> bool: the place's own test (a channel)
    condition: str | None = None
    once: bool = False
    event: str | None = None        # "send" / "recv" for a message breakpoint
    aside: str | None = None        # said once, when it is set (a spawned program's place)


# --- The command line --------------------------------------------------------------
def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "debug", help="boot an image stopped, and step it core by core (or serve gdb)",
        description="Boot an image stopped before its first instruction and give a prompt "
                    "to step cores, set breakpoints and watchpoints, and look at registers, "
                    "memory and messages; or serve gdb's remote protocol with --gdb.")
    add_machine_options(parser)
    parser.add_argument("--script", metavar="FILE", type=input_name("debugger script"),
                        help="run the commands in FILE instead of reading them from the terminal")
    parser.add_argument("--break", dest="breaks", metavar="WHERE", action="append", default=[],
                        help="set a breakpoint (`LABEL [core K]`, as the `break` command "
                             "takes it) and run to it before the prompt (repeatable)")
    add_gdb_option(parser)
    add_trace_option(parser)
    parser.add_argument("--expect-failures", action="store_true",
                        help="programs that exit with a non-zero status or are killed for a "
                             "fault do not fail the run (as for sprat boot; with --script, "
                             "a failed run exits 1)")
    parser.add_argument("--max-cycles", type=positive_argument, default=DEFAULT_MAX_CYCLES,
                        metavar="C", help="a `continue` stops when every core's clock passes "
                                          f"C cycles (default {DEFAULT_MAX_CYCLES:,})")
    parser.set_defaults(run=run)


def port_argument(text: str) -> int:
    import argparse
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535; 0: any free one)")
    return int(text)


def add_gdb_option(parser) -> None:
    parser.add_argument("--gdb", type=port_argument, metavar="PORT", default=None,
                        help="wait for gdb on 127.0.0.1:PORT (0: any free port) before the "
                             "first instruction; each core is a gdb thread")
    parser.add_argument("--gdb-files", metavar="DIR", default=None,
                        help="with --gdb: write the symbol files (ELF, DWARF) and the gdb script "
                             "to DIR (default: a new temporary directory)")


def add_trace_option(parser) -> None:
    parser.add_argument("--trace", metavar="FILE", default=None, type=output_name("trace file"),
                        help="record every message and IPI to FILE, one JSON line each "
                             "(see `sprat trace`)")


def run(args) -> int:
    debuggee = open_debuggee(args, sys.stdout)

    def stopped():
        # By the lab watchdog: the run still says where each core was, and
        # its trace is whole.
        end_early(debuggee.system)
        debuggee.close()
    try:
        with on_stop(stopped):
            return drive(args, debuggee)
    finally:
        debuggee.close()


def drive(args, debuggee) -> int:
    """Hand the machine to gdb, the script or the prompt; the exit status."""
    from sprat.cli import EXIT_MACHINE_FAILURE, EXIT_OK
    if args.gdb is not None:
        from sprat import gdb
        ended = gdb.serve(debuggee, args.gdb, sys.stdout, args.gdb_files)
        if ended not in ("detach", "kill", "exited"):
            print(f"sprat: the gdb connection was lost ({ended}) before gdb detached",
                  file=sys.stderr)
            return EXIT_MACHINE_FAILURE
    else:
        shell = DebugShell(debuggee, stdout=sys.stdout)
        if args.breaks:
            shell.run_to_breakpoints(args.breaks)
        if args.script is not None:
            shell.run_script(args.script)
        else:
            shell.interactive()
    # Left by gdb, the script's end, `quit` or Ctrl-D alike: the run's
    # outcome (as gdb was told: SIGABRT, code 01), not the last command's
    # (a mistake costs its `***` line, no more).
    failure = run_failure(debuggee.engine)
    if failure is not None:
        print(f"sprat: the run failed: {failure}", file=sys.stderr)
        return EXIT_MACHINE_FAILURE
    return EXIT_OK


def run_failure(engine) -> str | None:
    """Why the run failed, if it has ended and failed as `sprat boot` counts
    it (a program killed or that exited non-zero, a broken channel
    protocol, a panic, a deadlock, the cycle budget spent), or None. A run
    the commands left before its end has no outcome yet: a replay that
    stops where a mistake shows is not a failure of its own."""
    return engine.end_reason if engine.end_reason is not None and engine.exit_code else None


# --- What is being debugged ----------------------------------------------------------
@dataclass
class Debuggee:
    """A booted system with its debug engine, symbols, message log and trace."""
    system: object
    engine: DebugEngine
    symbols: SymbolTable
    messages: MessageLog
    trace_file: object = None

    @property
    def machine(self):
        return self.system.machine

    def close(self) -> None:
        if self.trace_file is not None:
            self.trace_file.close()


def open_debuggee(args, out) -> Debuggee:
    """Boot the image the options name, stopped, with everything the prompt needs."""
    from kernel.boot import boot_image
    cores, topology = machine_shape(args)

    def console(core, line):
        out.write(f"[core {core}] {line}\n")
        out.flush()

    system = boot_image(args.image, cores=cores, quantum=args.quantum, output=console,
                        topology=topology, seed=args.seed, timing=args.timing)
    return attach(system, max_cycles=args.max_cycles, trace=getattr(args, "trace", None),
                  expect_failures=getattr(args, "expect_failures", False))


def attach(system, max_cycles=None, trace=None, tracepoints=True, observer=None,
           expect_failures=False) -> Debuggee:
    """Wrap a booted (not yet run) system for debugging (`tracepoints`: install
    the message tracepoints, unless the caller has and gives their `observer`:
    `sprat boot --trace`; `expect_failures`: a program's non-zero exit does
    not fail the run)."""
    engine = DebugEngine(system.machine, max_cycles=max_cycles)
    if not expect_failures:
        engine.end_checks.append(lambda: failed_programs(system))
    symbols = SymbolTable(shared=[system.kernel], per_core=system.programs_by_core(),
                          read=engine.read_memory)
    messages = MessageLog(keep=MESSAGES_SHOWN)
    system.machine.observers.append(messages)
    if tracepoints:
        observer = install_message_tracepoints(system)
    if observer is not None:
        engine.end_checks.append(lambda: broken_protocol(observer.violations))
    engine.travel = TimeTravel(engine)       # reverse execution: history kept from here
    trace_file = None
    if trace:
        trace_file = open_trace(system.machine, trace)
        install_run_tracepoints(system)
    return Debuggee(system, engine, symbols, messages, trace_file)


def failed_programs(system) -> list[str]:
    """The end check of a run whose programs failed, in `sprat boot`'s words:
    which programs, then the faults that killed any of them."""
    failures = system.failures()
    if failures is None:
        return []
    from kernel.diagnosis import user_faults
    return [failures, *user_faults(system)]


def broken_protocol(violations) -> list[str]:
    """The end check of a run that broke the channel protocol (what `sprat
    explore` and `sprat boot --trace` flag): how often, then the first few."""
    count = len(violations)
    if not count:
        return []
    lines = [f"the channel protocol was broken ({count} violation{'s' if count > 1 else ''})"]
    lines += [violation["text"] for violation in violations[:VIOLATIONS_SHOWN]]
    if count > VIOLATIONS_SHOWN:
        lines.append(f"... and {count - VIOLATIONS_SHOWN} more")
    return lines


def open_trace(machine, path) -> TraceRecorder:
    """Start recording the machine's events to `path`; returns the recorder,
    which the caller closes (OutputError, exit status 1, if any write failed)."""
    recorder = TraceRecorder(OutputFile(path, "trace"))
    machine.observers.append(recorder)
    return recorder


# --- The prompt ------------------------------------------------------------------------
class DebugShell(cmd.Cmd):
    """The `sprat debug` prompt: one do_NAME method per command."""

    prompt = "(sprat) "
    # Commands an empty line repeats, as in gdb and pdb.
    REPEATABLE = ("step", "s", "stepi", "si", "next", "n", "until", "u", "list", "l")

    def __init__(self, debuggee: Debuggee, stdout=None, stdin=None):
        super().__init__(stdin=stdin, stdout=stdout or sys.stdout)
        self.debuggee = debuggee
        self.engine = debuggee.engine
        self.symbols = debuggee.symbols
        self._frame_rules = {}                # id(program) -> its frame rules (bt)
        self.machine = debuggee.machine
        self.selected = 0
        self.disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self.notes: dict[int, PointNote] = {}       # breakpoint number -> what the prompt knows
        self.displays: dict[int, tuple[str, str, object]] = {}     # number -> (format, text, tree)
        self._display_numbers = iter(range(1, 2**31))
        self._condition_errors: list[str] = []
        self._listed: tuple[str, int] | None = None # (file, last line) of the last `list`

    # -- running the loop ------------------------------------------------------
    def interactive(self) -> None:
        """The terminal session, until `quit` or Ctrl-D: readline history,
        Ctrl-C stops a `continue` (`run_failure` then says whether the run
        failed)."""
        try:
            import readline  # noqa: F401 -- cmd uses it for history and editing
        except ImportError:
            pass
        self.greet()
        while True:
            try:
                self.cmdloop()
                return
            except KeyboardInterrupt:
                self.out("^C (type quit to leave)")

    def run_to_breakpoints(self, places) -> bool:
        """--break: set each breakpoint, then continue to the first one hit."""
        self.greet()
        for place in places:
            self.out(f"{self.prompt}break {place}")
            try:
                self.do_break(place)
            except (CommandError, TargetError, SymbolError, SpratError) as error:
                raise SpratError(f"--break {place}: {error}") from None
        self.out(f"{self.prompt}continue")
        self.onecmd("continue")

    def run_script(self, path) -> None:
        """Run the commands of a file, echoing each after the prompt
        (`run_failure` then says whether the run they drove failed)."""
        lines = read_text(path, "debugger script").splitlines()
        self.greet()
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            self.out(f"{self.prompt}{line}")
            if self.onecmd(line):
                break

    def greet(self) -> None:
        text = self.banner()
        if text:
            self.out(text)

    def banner(self) -> str:
        if getattr(self, "_greeted", False):     # --break ran first and greeted
            return ""
        self._greeted = True
        n = self.machine.n_cores
        return (f"sprat debug: {n} core{'s' if n > 1 else ''}, stopped before the first "
                f"instruction (`help` lists the commands)\n{self.where(self.selected)}")

    def onecmd(self, line: str):
        """One command; any mistake in it is one line, never the end of the session."""
        try:
            return super().onecmd(line)
        except (CommandError, TargetError, SymbolError, ExpressionError) as error:
            self.out(f"*** {error}")
        except SpratError as error:
            self.out(f"*** {error}")
        except Exception as error:      # a bug in sprat: say so, and go on
            self.out(f"*** internal error: {type(error).__name__}: {error}")
        return False

    def emptyline(self):
        if self.lastcmd.split(" ", 1)[0] in self.REPEATABLE:
            return self.onecmd(self.lastcmd)
        return False

    def default(self, line: str):
        word = line.split()[0] if line.split() else line
        self.out(f"*** unknown command {word!r}: `help` lists the commands")

    def out(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    # -- cores -----------------------------------------------------------------------
    def do_cores(self, arg):
        """cores
        Every core: its state, privilege ring, rip and where that is, instructions
        retired and modeled cycles. `*` marks the selected core; `(held)`, a
        core `stop core K` holds."""
        self._no_arguments("cores", arg)
        rows = []
        for core in self.machine.cores:
            state = core.state.value + (" (held)" if core.id in self.engine.held else "")
            rows.append(["*" if core.id == self.selected else "", core.id, state,
                         core.privilege, f"{core.rip:#x}", self._name(core.rip) or "",
                         core.stats.instructions, core.cycles])
        self.out(format_table(["", "core", "state", "ring", "rip", "where", "instructions",
                               "cycles"], rows))

    def do_core(self, arg):
        """core [K]
        Select core K: step, next, regs, x, disas and bt act on it. Without K,
        show where the selected core is."""
        if arg.strip():
            self.selected = self._core_number(arg.strip())
        self.out(self.where(self.selected))

    # -- stepping and running ---------------------------------------------------------------
    def do_step(self, arg):
        """step [N]
        Execute N instructions (default 1) of the selected core, the others
        standing still. Stops early at a breakpoint, a watchpoint or a fault.
        If an interrupt is due on the core, taking it is one step: the core
        lands at the handler's first instruction, having executed nothing."""
        count = self._count(arg, 1, MAX_STEPS)
        core = self.machine.cores[self.selected]
        for done in range(count):
            reason = self.engine.cannot_run(core.id)
            if reason:
                self.out(reason)
                break
            instructions, interrupts = core.stats.instructions, core.stats.interrupts
            event = self.engine.step(core.id)
            if event.reason != "step":
                self.report(event)
                return
            if core.stats.instructions == instructions and core.stats.interrupts > interrupts:
                self.out(f"core {core.id} took an interrupt: at its handler")
            hits = self.engine.breakpoints_at(core.rip, core)
            if hits and done < count - 1:
                self.out(f"core {core.id} reached {self._numbers(hits)}")
                break
        self.out(self.where(core.id))
        self._show_displays()

    do_s = do_step
    do_stepi = do_step
    do_si = do_step

    def do_next(self, arg):
        """next
        Like step, but a `call` (or a `syscall`) runs until it returns to the
        next instruction. Meanwhile every core runs, as in `continue`, and
        anything that stops a `continue` stops it too."""
        self._no_arguments("next", arg)
        core = self.machine.cores[self.selected]
        instruction = self._decode(core.rip, core.id)
        if instruction is None or instruction.mnemonic not in STEP_OVER:
            return self.do_step("")
        reason = self.engine.cannot_run(core.id)
        if reason:
            self.out(reason)
            return
        self._must_not_be_held(core.id)
        stack = core.regs.read(x86.UC_X86_REG_RSP)
        back = instruction.address + instruction.size
        # The same address deeper in a recursion is not "returned" yet.
        event = self.engine.run_until(
            core.id, back, condition=lambda c: c.regs.read(x86.UC_X86_REG_RSP) >= stack)
        self.report(event)

    do_n = do_next

    def do_continue(self, arg):
        """continue [core K | -a]
        Run every core until a breakpoint, a watchpoint, a fault, or the end of
        the run (or the cycle budget, --max-cycles). Ctrl-C stops it.
        Cores held with `stop core K` stay where they are (non-stop: see
        `help stop`). `continue core K` releases core K and runs it alone, the
        others standing still; `continue -a` releases every core and runs all."""
        words = arg.split()
        only = None
        if words == ["-a"] or words == ["all"]:
            self.engine.held.clear()
        elif len(words) == 2 and words[0] == "core":
            only = self._core_number(words[1])
            self.engine.held.discard(only)
        elif words:
            raise CommandError("usage: continue [core K | -a]")
        with self._ctrl_c_interrupts():
            event = self.engine.resume(only=only)
        self.report(event)

    do_c = do_continue
    do_cont = do_continue

    def do_stop(self, arg):
        """stop core K [K ...]
        Non-stop, as a deterministic machine can have it: hold cores K. A held
        core stays where it is while `continue`, `next`, `finish` and `until`
        run the others (the scheduler passes over it, and its clock stands
        still). `step` still steps it; `continue core K` runs it alone and
        releases it; `continue -a` releases every core. Released, a core is
        the furthest behind in modeled time, so it runs first until it has
        caught up; it sees what the others stored meanwhile, no earlier than
        they stored it. Without arguments, say which cores are held."""
        words = arg.split()
        if not words:
            held = sorted(self.engine.held)
            self.out(f"held: {', '.join(f'core {c}' for c in held)}" if held else
                     "no core is held: `stop core K` holds one")
            return
        if words[0] != "core" or len(words) < 2:
            raise CommandError("usage: stop core K [K ...]")
        cores = [self._core_number(word) for word in words[1:]]
        self.engine.held.update(cores)
        for core in cores:
            self.out(f"core {core} held: {self.where(core)}")

    def do_finish(self, arg):
        """finish
        Run until the selected core returns from the routine it is in, and show
        rax. The return address is the first word on the core's stack that
        follows a `call` in known code (as `bt` finds it: there are no frame
        pointers), and it counts as reached only once the stack has popped it.
        The other cores run meanwhile, as in `continue`."""
        self._no_arguments("finish", arg)
        core = self.machine.cores[self.selected]
        self._must_not_be_held(core.id)
        rsp = core.regs.read(x86.UC_X86_REG_RSP)
        frame = next(self._return_addresses(core.id), None)
        if frame is None:
            raise CommandError(f"no return address on core {core.id}'s stack: "
                               f"`finish` needs a routine that was called")
        slot, back = rsp + frame[0], frame[1]
        self.out(f"run till exit from #0  {self._describe(core.rip)}")
        with self._ctrl_c_interrupts():
            event = self.engine.run_until(
                core.id, back, condition=lambda c: c.regs.read(x86.UC_X86_REG_RSP) > slot)
        self.report(event)
        if event.reason == "breakpoint" and all(b.temporary for b in self.engine.stop_causes):
            self.out(f"value returned: rax = {core.regs.read(x86.UC_X86_REG_RAX):#x}")

    def do_until(self, arg):
        """until [LOCATION]  (advance LOCATION is the same)
        Without LOCATION: like `next`, but at a jump back (the end of a loop)
        run on until the selected core reaches the instruction after it, in
        the same stack frame: the loop runs to its end. With LOCATION (as for
        break: a label, FILE:LINE, an address): run until the selected core
        reaches it. The other cores run meanwhile; anything that stops a
        `continue` stops this too."""
        core = self.machine.cores[self.selected]
        if arg.strip():
            location = self._location(arg.strip(), core.id)
            self._must_not_be_held(core.id)
            with self._ctrl_c_interrupts():
                event = self.engine.run_until(core.id, self.symbols.address_on(location, core.id))
            return self.report(event)
        instruction = self._decode(core.rip, core.id)
        target = _branch_target(instruction) if instruction is not None else None
        if not (instruction and instruction.mnemonic.startswith("j") and target is not None
                and target <= instruction.address):
            return self.do_next("")
        self._must_not_be_held(core.id)
        stack = core.regs.read(x86.UC_X86_REG_RSP)
        with self._ctrl_c_interrupts():
            event = self.engine.run_until(
                core.id, instruction.address + instruction.size,
                condition=lambda c: c.regs.read(x86.UC_X86_REG_RSP) >= stack)
        self.report(event)

    do_u = do_until
    do_advance = do_until

    # -- breakpoints and watchpoints ---------------------------------------------------------
    def do_break(self, arg):
        """break [LOCATION [core K] [if CONDITION]]
        Stop any core (or only core K) about to execute LOCATION: a label of
        the CPU driver or of a program (`start`, `syscall_entry+4`), a source
        line (`urpc.S:107`, `userland/hello.S:12`), a number, or an expression
        (`$rip + 4`). A program's label stops only the cores running a program
        that has it (a library routine is in each program that links it, at
        each one's address: all are covered). With `core K`, a place no
        program of core K has is refused, naming the cores whose programs
        have it; one only a `nospawn` program has is set, saying that it
        stops core K only if a program spawns that one there.
        `break send CHANNEL` / `break recv CHANNEL` stop a core right after it
        has sent a message on CHANNEL (its control word is stored) / taken one
        (its count is stored); their CONDITION may read the message's payload
        as word[0] .. word[6] (`break recv 20 if word[0] == 5`).
        With `if`, the core stops only where CONDITION (an expression: `help
        print`) is not 0, computed on that core at that moment.
        Without arguments, list the breakpoints and watchpoints."""
        if not arg.strip():
            return self._list_points()
        self._add_break(arg, once=False)

    do_b = do_break

    def do_tbreak(self, arg):
        """tbreak LOCATION [core K] [if CONDITION]
        A breakpoint (as `break` takes it) deleted when it first stops a core."""
        if not arg.strip():
            raise CommandError("usage: tbreak LOCATION [core K] [if CONDITION]")
        self._add_break(arg, once=True)

    def do_condition(self, arg):
        """condition N [CONDITION]
        Stop at breakpoint N only where CONDITION is not 0; without CONDITION,
        stop there always again."""
        number, _, text = arg.strip().partition(" ")
        point = self._breakpoint(number)
        note = self.notes[point.number]
        tree = expression.parse(text) if text.strip() else None
        note.condition = text.strip() or None
        point.condition = self._condition(point.number, note.base, tree, note.event)
        self.out(f"breakpoint {point.number}: " +
                 (f"stops only if {note.condition}" if tree else "stops always"))

    def do_watch(self, arg):
        """watch ADDR [LEN]
        Stop any core right after it stores into the LEN bytes (default 8) at
        virtual address ADDR (an expression: a number, a label, `$rsp + 16`).
        Accesses are caught at the physical bytes behind ADDR, translated
        afresh through each core's page tables before each of its turns."""
        self._add_watch(arg, "write", "watch")

    def do_rwatch(self, arg):
        """rwatch ADDR [LEN]
        Stop any core right after it loads from the LEN bytes (default 8) at
        ADDR (as watch takes it). Instruction fetches do not count."""
        self._add_watch(arg, "read", "rwatch")

    def do_awatch(self, arg):
        """awatch ADDR [LEN]
        Stop any core right after it loads from or stores into the LEN bytes
        (default 8) at ADDR (as watch takes it)."""
        self._add_watch(arg, "access", "awatch")

    def do_delete(self, arg):
        """delete [N ...]
        Delete breakpoints and watchpoints by number; without a number, all."""
        words = arg.split()
        if not words:
            for number in [*self.engine.breakpoints, *self.engine.watchpoints]:
                self.engine.delete(number)
            self.notes.clear()
            self.out("deleted every breakpoint and watchpoint")
            return
        for word in words:
            if not (word.isascii() and word.isdigit()) or not self.engine.delete(int(word)):
                raise CommandError(f"no breakpoint or watchpoint {word} (see `info breakpoints`)")
            self.notes.pop(int(word), None)
        self.out(f"deleted {' '.join(words)}")

    do_d = do_delete

    def do_disable(self, arg):
        """disable [N ...]
        Keep breakpoints or watchpoints N but let them stop nothing; without a
        number, all of them."""
        self._enable(arg, False)

    def do_enable(self, arg):
        """enable [N ...]
        Let disabled breakpoints or watchpoints N stop cores again; without a
        number, all of them."""
        self._enable(arg, True)

    def do_info(self, arg):
        """info breakpoints | display | channels | registers | line [LOCATION]
        info breakpoints (or `info b`): every breakpoint and watchpoint, with
        its condition, whether it is enabled, and how often it stopped a core.
        info display: the expressions shown at every stop. info channels: as
        `channels`. info registers: as `regs`. info line: where a location's
        source line is (default: the selected core's rip)."""
        word, _, rest = arg.strip().partition(" ")
        if word in ("breakpoints", "break", "b", "watchpoints"):
            return self._list_points()
        if word == "display":
            return self._show_displays(all_of_them=True)
        if word == "channels":
            return self.do_channels(rest)
        if word in ("registers", "reg", "r"):
            return self.do_regs(rest)
        if word == "line":
            core = self.selected
            address = self.symbols.address_on(self._location(rest.strip(), core), core) \
                if rest.strip() else self.machine.cores[core].rip
            source = self.symbols.source(address)
            if source is None:
                raise CommandError(f"no source line for {address:#x} on core {core}")
            self.out(f"line {source} holds {self._describe(address)}")
            return
        raise CommandError("usage: info breakpoints | display | channels | registers | line")

    # -- looking at a core -------------------------------------------------------------------
    def do_regs(self, arg):
        """regs
        The selected core's registers."""
        self._no_arguments("regs", arg)
        values = self.engine.read_registers(self.selected)

        def row(names, width=18):
            return "  ".join(f"{n:<3} {values[n]:#0{width}x}" for n in names)
        for names in REGISTER_ROWS:
            self.out(row(names))
        rip = values["rip"]
        name, source = self._name(rip), self.symbols.source(rip)
        self.out(f"rip {rip:#018x}" + (f" <{name}>" if name else "") + (f" {source}" if source else ""))
        self.out(f"eflags {values['eflags']:#x} [ {' '.join(self._flags(values['eflags']))} ]  "
                 + "  ".join(f"{s} {values[s]:#06x}" for s in SEGMENTS))
        for names in SYSTEM_REGISTERS:
            self.out("  ".join(f"{n} {values[n]:#x}" for n in names))

    def do_x(self, arg):
        """x ADDR [LEN]  or  x/NUF ADDR
        Memory at virtual address ADDR (an expression: `help print`) as the
        selected core sees it. `x ADDR [LEN]`: LEN bytes (default 64) in hex
        and ASCII. `x/NUF ADDR`, as in gdb: N units (default 1) of size U --
        b (1 byte), h (2), w (4), g (8, the default) -- shown in format F --
        x hex (default), d signed, u unsigned, o octal, t binary, c character
        -- or `x/Ni ADDR`: N instructions, disassembled. `x/4gx $rsp`."""
        if arg.startswith("/"):
            fmt, _, rest = arg[1:].partition(" ")
            return self._examine(fmt, rest)
        address, length = self._address_and_count(arg, "x ADDR [LEN]", DEFAULT_DUMP, MAX_DUMP)
        data = self._read_mapped(address, length)
        for offset in range(0, len(data), 16):
            chunk = data[offset:offset + 16]
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
            self.out(f"{address + offset:#014x}:  {chunk.hex(' '):<47}  |{text}|")
        if len(data) < length:
            self.out(f"*** {address + len(data):#x} is not mapped on core {self.selected}")

    def _examine(self, fmt: str, text: str) -> None:
        """x/NUF: N units of size U in format F."""
        match = re.fullmatch(r"(\d*)([bhwgxduotci]*)", fmt)
        if not match or not text.strip():
            raise CommandError("usage: x/NUF ADDR (N a count; U one of b h w g; "
                               "F one of x d u o t c i)")
        count = self._count(match.group(1), 1, MAX_EXAMINE)
        letters = match.group(2)
        sizes = [c for c in letters if c in UNIT_SIZES]
        formats = [c for c in letters if c not in UNIT_SIZES]
        if len(sizes) > 1 or len(formats) > 1:
            raise CommandError(f"x/{fmt}: one size and one format at most")
        address = self._value(text)
        if formats == ["i"]:
            return self._disassemble(address, count, self.machine.cores[self.selected])
        form = formats[0] if formats else "x"
        size = UNIT_SIZES[sizes[0]] if sizes else (1 if form == "c" else 8)
        data = self._read_mapped(address, count * size)
        per_line = UNITS_PER_LINE[size]
        for first in range(0, len(data) // size, per_line):
            at = address + first * size
            name = self._name(at)
            values = [int.from_bytes(data[(first + i) * size:(first + i + 1) * size], "little")
                      for i in range(min(per_line, len(data) // size - first))]
            self.out(f"{at:#x}{' <' + name + '>' if name else ''}:\t"
                     + "\t".join(_format_value(v, form, size) for v in values))
        if len(data) < count * size:
            self.out(f"*** {address + len(data) // size * size:#x} is not mapped on core "
                     f"{self.selected}")

    def do_list(self, arg):
        """list [LOCATION]
        Ten source lines around the selected core's rip (`=>` marks its line),
        or around LOCATION: a label (`list urpc_send`) or FILE:LINE (`list
        urpc.S:100`). `list` again, or an empty line after it, goes on with the
        next ten."""
        text = arg.strip()
        mark = None
        if not text and self._listed and self.lastcmd.split(" ")[0] in ("list", "l"):
            file, last = self._listed
            first = last + 1
        else:
            file, line, mark = self._source_of(text)
            first = max(1, line - LIST_LINES // 2)
        lines = self._source_file(file)
        if first > len(lines):
            raise CommandError(f"line {first} is past the end of {file} ({len(lines)} lines)")
        last = min(len(lines), first + LIST_LINES - 1)
        for number in range(first, last + 1):
            marker = "=>" if number == mark else "  "
            self.out(f"{marker}{number:5}  {lines[number - 1]}")
        self._listed = (file, last)

    do_l = do_list

    def _source_of(self, text: str) -> tuple[str, int, int | None]:
        """(file, line, the line to mark) that `list TEXT` is about."""
        core = self.machine.cores[self.selected]
        match = _FILE_LINE.fullmatch(text)
        if match:
            return self._source_name(match.group("file")), int(match.group("line")), None
        address = self.symbols.address_on(self._location(text, core.id), core.id) \
            if text else core.rip
        source = self.symbols.source(address)
        if source is None:
            raise CommandError(f"no source line for {address:#x} on core {core.id}")
        file, _, line = source.rpartition(":")
        return file, int(line), int(line) if not text else None

    def _source_name(self, name: str) -> str:
        """The full name of the source file `name` is a tail of."""
        names = {file for program in [*self.symbols.shared,
                                      *(p for ps in self.symbols.per_core.values() for p in ps)]
                 for _, file, _ in program.source_lines}
        found = sorted(file for file in names if file == name or file.endswith("/" + name))
        if not found:
            raise CommandError(f"no source file {name!r} in the programs of this image")
        if len(found) > 1:
            raise CommandError(f"{name!r} could be {', '.join(found)}: say which")
        return found[0]

    @staticmethod
    def _source_file(name: str) -> list[str]:
        path = sources.TREE / name          # an absolute name stays itself
        return read_text(sources.locate(path), "source file").splitlines()

    def do_print(self, arg):
        """print[/F] EXPRESSION
        The value of an expression on the selected core, in decimal and hex
        (/x hex, /d signed, /u unsigned, /o octal, /t binary, /c character).
        The expression language, as in C (spaces are allowed anywhere):
          numbers 42 0x2a 0b101; registers $rax $rip $eflags; labels (their
          address); memory: [ADDR] or *ADDR (8 bytes), u8[ADDR] u16[ADDR]
          u32[ADDR] u64[ADDR]; + - * / % << >> & | ^ ~ == != < <= > >= && || !
          and parentheses. Values are unsigned 64-bit, as registers are.
        `print $rsp + 8`, `print/x [$rsp]`, `print u32[urpc_channel] & 0xff`."""
        form, text = self._format_and_text(arg, "print[/F] EXPRESSION")
        self.out(f"{text} = {_format_print(self._value(text), form)}")

    do_p = do_print

    def do_display(self, arg):
        """display[/F] [EXPRESSION]
        Show EXPRESSION (as print takes it) now and at every stop, numbered;
        `undisplay N` forgets it. Without EXPRESSION, show them all now."""
        if not arg.strip():
            return self._show_displays(all_of_them=True)
        form, text = self._format_and_text(arg, "display[/F] EXPRESSION")
        tree = expression.parse(text)
        number = next(self._display_numbers)
        self.displays[number] = (form, text, tree)
        self._show_display(number)

    def do_undisplay(self, arg):
        """undisplay [N ...]
        Stop showing displays N at every stop; without N, every one."""
        words = arg.split()
        if not words:
            self.displays.clear()
            self.out("no more displays")
            return
        for word in words:
            if not word.isdigit() or int(word) not in self.displays:
                raise CommandError(f"no display {word} (see `info display`)")
            del self.displays[int(word)]

    def do_set(self, arg):
        """set $REGISTER = EXPRESSION  or  set MEMORY = EXPRESSION
        Change a register of the selected core (rax .. r15, rip, eflags), or
        memory it sees: *ADDR or [ADDR] (8 bytes), u8[ADDR] u16[ADDR] u32[ADDR]
        u64[ADDR]. Both sides are expressions (`help print`):
        `set $rax = $rbx + 1`, `set *($rsp + 8) = 0`, `set u32[0x8000201400] = 7`.
        A store into code is seen by every core (each translates it afresh)."""
        match = _ASSIGNMENT.search(arg)
        if not match:
            raise CommandError("usage: set $REGISTER = EXPRESSION  or  set *ADDR = EXPRESSION")
        target = expression.parse(arg[:match.start()])
        if not expression.is_lvalue(target):
            raise CommandError(f"cannot store into {arg[:match.start()].strip()!r}: "
                               f"a register ($rax) or memory (*ADDR, u32[ADDR]) can be set")
        value = self._value(arg[match.end():])
        if isinstance(target, expression.Register):
            self.engine.write_register(self.selected, target.name, value)
            self.out(f"${target.name} = {value:#x}")
            return
        address = target.address.evaluate(self._values(self.selected))
        value &= 2 ** (8 * target.size) - 1
        self.engine.write_memory(self.selected, address, value.to_bytes(target.size, "little"))
        self.out(f"{target.size} byte{'s' if target.size > 1 else ''} at {address:#x} = {value:#x}")

    def do_channels(self, arg):
        """channels
        Every channel that has carried a message so far: the core at each end,
        the sender's next message number (the newest control word in the
        ring), the receiver's next (after the last message it took), the last
        count the receiver acknowledged in the ack line (written every half
        ring), and how many messages sit in the ring unread, of its 16 slots.
        Read from the channel's shared page (userland/lib/urpc.S) and from the
        sends and receives the tracepoints report (kernel/tracepoints.py)."""
        self._no_arguments("channels", arg)
        latest = self.debuggee.messages.latest
        if not latest:
            self.out("no channel has carried a message yet")
            return
        rows = []
        for channel in sorted(latest, key=lambda c: (not isinstance(c, int), str(c))):
            sent, taken = latest[channel].get("send"), latest[channel].get("recv")
            ring = ring_state(self.machine.memory, channel) if isinstance(channel, int) else None
            next_sent = ring.sent if ring else (sent["seq"] + 1 if sent else 0)
            next_taken = taken["seq"] + 1 if taken else 0
            receiver = taken["core"] if taken else self._peer(sent) if sent else None
            rows.append([channel, _core_of(sent), "-" if receiver is None else receiver,
                         next_sent, next_taken,
                         ring.acked if ring else "-",
                         f"{next_sent - next_taken}/{URPC_SLOTS}"])
        self.out(format_table(["channel", "sender", "receiver", "next send", "next recv",
                               "acked", "in ring"], rows))

    def do_disas(self, arg):
        """disas [ADDR] [N]
        Disassemble N instructions (default 8) at ADDR (default: the selected
        core's rip; an expression, `help print`), with the labels of the CPU
        driver and the programs. `=>` marks the instruction the core will
        execute next."""
        core = self.machine.cores[self.selected]
        if arg.strip():
            address, count = self._address_and_count(arg, "disas [ADDR] [N]",
                                                     DEFAULT_DISASSEMBLY, MAX_DISASSEMBLY)
        else:
            address, count = core.rip, DEFAULT_DISASSEMBLY
        self._disassemble(address, count, core)

    def _disassemble(self, address: int, count: int, core) -> None:
        code = self._read_mapped(address, count * LONGEST_INSTRUCTION, core.id)
        if not code:
            raise CommandError(f"{address:#x} is not mapped on core {core.id}")
        for n, instruction in enumerate(self.disassembler.disasm(code, address)):
            if n == count:
                break
            label = self.symbols.label_at(instruction.address)
            if label:
                source = self.symbols.source(instruction.address)
                self.out(f"{label}:" + (f"  ({source})" if source else ""))
            marker = "=>" if instruction.address == core.rip else "  "
            name = self._name(instruction.address)
            self.out(f"{marker} {instruction.address:#x} {'<' + name + '>' if name else '':24} "
                     f"{self._instruction_text(instruction, core.id)}")

    def do_bt(self, arg):
        """bt
        The selected core's call stack: rip, then its callers. Where the code
        tells how far its routine has moved rsp (pushes, pops, sub/add rsp,
        counted from the routine's entry: emulator/debug/frames.py, the rules
        gdb gets too) each caller is exact, and the stack ends at a program's
        start or the CPU driver's entry. From code no routine's entry reaches
        (a trap handler) on, it is a scan: every word on the stack that is
        the address just after a `call` (or a `syscall`) in known code, where
        an old return address left on the stack may show too (`scanned`)."""
        self._no_arguments("bt", arg)
        core = self.machine.cores[self.selected]
        self.out(f"#0  {self._describe(core.rip)}")
        for frame, (offset, value, how) in enumerate(self._callers(core.id), 1):
            self.out(f"#{frame}  {self._describe(value)}   "
                     f"(after a {how}; at rsp+{offset:#x})")

    def _callers(self, core_id: int):
        """(offset from rsp, return address, how it was found) of each caller,
        nearest first: unwound by the frame rules while the code has them,
        then scanned."""
        core = self.machine.cores[core_id]
        rsp = core.regs.read(x86.UC_X86_REG_RSP)
        rip, frame_rsp = core.rip, 0          # frame_rsp: the frame's rsp, from rsp
        while True:
            rule = self._frame_rule(rip)
            if isinstance(rule, Outermost):
                return                        # nothing called this code
            if rule is None:
                break                         # no rule here: scan from this frame on
            at = frame_rsp + rule - RETURN_ADDRESS
            word = self._read_mapped(rsp + at, 8, core_id)
            value = int.from_bytes(word, "little")
            if len(word) < 8 or self._return_kind(value, core_id) != "call":
                break                         # not what the rule says: scan
            yield at, value, "call"
            rip, frame_rsp = value, frame_rsp + rule
        for offset, value, how in self._return_addresses(core_id):
            if offset >= frame_rsp:
                yield offset, value, f"{how}, scanned"

    def _frame_rule(self, address: int):
        """The frame rule at `address` (emulator/debug/frames.py): how far the
        caller's frame is above rsp, Outermost, or None where no rule is sure."""
        program = self.symbols.program_at(address)
        if program is None:
            return None
        if id(program) not in self._frame_rules:
            outermost = KERNEL_ENTRY if program in self.symbols.shared else USER_ENTRY
            self._frame_rules[id(program)] = frame_rules(program, outermost)
        return self._frame_rules[id(program)].get(address)

    def _return_addresses(self, core_id: int):
        """(offset from rsp, value, 'call' or 'syscall') of each stack word that
        is the address right after one, nearest first."""
        rsp = self.machine.cores[core_id].regs.read(x86.UC_X86_REG_RSP)
        stack = self._read_mapped(rsp, BACKTRACE_WORDS * 8, core_id)
        words = {offset: int.from_bytes(stack[offset:offset + 8], "little")
                 for offset in range(0, len(stack) - 7, 8)}
        for offset, value in words.items():
            how = self._return_kind(value, core_id)
            # `syscall` leaves the return address in rcx, and the trap frame
            # keeps rcx as well as rip: the same word twice, one frame (rip's).
            if how == "syscall" and words.get(offset + SYSCALL_RCX_TO_RIP) == value:
                continue
            if how:
                yield offset, value, how

    do_where = do_bt

    def do_msgs(self, arg):
        """msgs
        The last messages sent and received on each channel, each with the
        core at its other end: the one seen there, or, before the receiver
        took a message, the only other core the image gives the channel to
        (`core ?` if the image does not say: a spawned program's channel)."""
        self._no_arguments("msgs", arg)
        channels = self.debuggee.messages.channels
        if not channels:
            self.out("no messages yet: channels show here once a program sends on one "
                     "(and once the channel library reports its sends and receives)")
            return
        for channel in sorted(channels, key=str):
            self.out(f"channel {channel}:")
            for event in channels[channel]:
                self.out("  " + describe_message(event, self._peer(event)))

    def _peer(self, event: dict) -> int | None:
        """The core at a message's other end: as its event names it, or else,
        before that end was seen, the only other core the image gives the
        channel to (lab 5's stream: channel 1 to cores 0 and 2)."""
        peer, channel = event.get("peer"), event.get("channel")
        if peer is not None or not isinstance(channel, int):
            return peer
        holders = self.debuggee.system.channel_holders(channel) or frozenset()
        others = holders - {event.get("core")}
        return next(iter(others)) if len(others) == 1 else None

    # -- leaving ---------------------------------------------------------------------------
    def do_quit(self, arg):
        """quit
        Leave the debugger (the machine is dropped)."""
        return True

    do_q = do_quit
    do_exit = do_quit

    def do_EOF(self, arg):
        """Ctrl-D leaves, as quit does."""
        self.out()
        return True

    # -- completion ------------------------------------------------------------------------
    def complete_break(self, text, line, begidx, endidx):
        return [name for name in self.symbols.names() if name.startswith(text)]

    complete_b = complete_watch = complete_x = complete_disas = complete_break

    # -- what a stop looks like ------------------------------------------------------------
    def report(self, event) -> None:
        """Say why the machine stopped, select the core that stopped, show where."""
        core = self.machine.cores[event.core]
        for error in self._condition_errors:
            self.out(f"*** {error}")
        self._condition_errors = []
        if event.reason == "exited":
            self.out(f"the run is over: {self.engine.end_reason}")
            for note in self.engine.end_notes:
                self.out(f"  {note}")
            return
        if event.reason == "interrupt" and self.engine.stalled:
            held = sorted(self.engine.held)
            self.out(f"the cores that ran can go no further; core {event.core} could, but "
                     f"stood still" + (f" (held: {', '.join(map(str, held))})" if held else "")
                     + ": `continue` runs every core not held, `continue -a` releases them all")
            return
        self.selected = core.id
        if event.reason == "breakpoint":
            self._report_breakpoints(core)
        elif event.reason == "watchpoint":
            self._report_watch(core, event)
        elif event.reason == "fault":
            self._report_fault(core)
        elif event.reason == "interrupt":
            self.out("stopped (interrupted)")
        self.out(self.where(core.id))
        self._show_displays()

    def _report_breakpoints(self, core) -> None:
        listed = [b for b in self.engine.stop_causes if not b.temporary]
        if not listed:
            return
        self.out(f"core {core.id} hit {self._numbers(listed)}")
        for point in listed:
            note = self.notes.get(point.number)
            if note and note.event:
                message = read_message(core, note.event)
                words = " ".join(f"{w:#x}" for w in message.words)
                verb = "sent" if note.event == "send" else "took"
                self.out(f"  core {core.id} {verb} message {message.seq} on channel "
                         f"{message.channel}: {words}")
            if note and note.once:
                self.engine.delete(point.number)
                del self.notes[point.number]
                self.out(f"  (temporary breakpoint {point.number} deleted)")

    def _report_watch(self, core, event) -> None:
        watch = self.engine.stop_causes[0]
        shown = min(watch.length, 16)
        try:
            value = self.engine.read_memory(core.id, watch.address, shown).hex(" ")
        except TargetError:
            value = "(not mapped)"
        verb = {"write": "wrote to", "read": "read", "access": "accessed"}[watch.kind]
        state = "are now" if watch.kind != "read" else "are"
        self.out(f"core {core.id} {verb} watchpoint {watch.number} at {event.addr:#x}; "
                 f"the {shown} byte{'s' if shown > 1 else ''} at {watch.address:#x} "
                 f"{state} {value}")

    def _report_fault(self, core) -> None:
        fault = self.engine.fault
        if core.state is CoreState.FAILED:
            self.out(f"core {core.id} failed: {core.failure}")
        elif fault is not None:
            where = f" {self._describe(fault.rip)}" if fault.rip is not None else ""
            self.out(f"core {core.id} took {fault}{where}; stopped at its handler")

    def where(self, core_id: int) -> str:
        """`core 2 ring 0 0x200123 <trap_common+3> cpudriver/trap.S:42  push rax`"""
        core = self.machine.cores[core_id]
        if core.state is CoreState.OFF:
            return f"core {core_id} off: waits for INIT and STARTUP IPIs"
        if core.state in (CoreState.STOPPED, CoreState.FAILED):
            why = core.failure if core.state is CoreState.FAILED else f"exit code {core.exit_code}"
            return f"core {core_id} {core.state.value} ({why})"
        state = "" if core.state is CoreState.RUNNING else f" {core.state.value}"
        instruction = self._decode(core.rip, core_id)
        text = f"  {self._instruction_text(instruction, core_id)}" if instruction else ""
        return (f"core {core_id}{state} ring {core.privilege} "
                f"{self._describe(core.rip)}{text}")

    # -- helpers ---------------------------------------------------------------------------
    def _describe(self, address: int) -> str:
        """`0x200123 <trap_common+3> cpudriver/trap.S:42`, as much as is known."""
        text = f"{address:#x}"
        name = self._name(address)
        if name:
            text += f" <{name}>"
        source = self.symbols.source(address)
        if source:
            text += f" {source}"
        return text

    def _name(self, address: int) -> str | None:
        return self.symbols.describe(address)

    def _decode(self, address: int, core_id: int):
        code = self._read_mapped(address, LONGEST_INSTRUCTION, core_id)
        return next(self.disassembler.disasm(code, address, 1), None)

    def _instruction_text(self, instruction, core_id: int) -> str:
        """`mnemonic operands`, with a label for a branch target or a rip-relative operand."""
        text = f"{instruction.mnemonic} {instruction.op_str}".strip()
        target = _branch_target(instruction)
        if target is not None:
            name = self._name(target)
            if name:
                text += f" <{name}>"
        return text

    def _read_mapped(self, address: int, length: int, core_id: int | None = None) -> bytes:
        """As many bytes as `core_id` (default: the selected core) sees mapped from
        `address` on, up to `length`."""
        core_id = self.selected if core_id is None else core_id
        data = b""
        while len(data) < length:
            at = address + len(data)
            size = min(length - len(data), 4096 - (at & 0xFFF))
            try:
                data += self.engine.read_memory(core_id, at, size)
            except TargetError:
                break
        return data

    def _return_kind(self, value: int, core_id: int) -> str | None:
        """'call' or 'syscall' if `value` is the address right after one, in known code."""
        if self.symbols.program_at(value) is None:
            return None
        for size in (5, 2, 3, 6, 7):        # call rel32; call reg / [reg] / [reg+d8] / [m32]
            try:
                code = self.engine.read_memory(core_id, value - size, size)
            except TargetError:
                continue
            instruction = next(self.disassembler.disasm(code, value - size, 1), None)
            if instruction and instruction.size == size and instruction.mnemonic in STEP_OVER:
                return instruction.mnemonic
        return None

    def _location(self, text: str, core: int | None):
        """A place as typed: FILE:LINE, a label (+ an offset), a number, or any
        expression (`$rip + 4`), computed on the selected core."""
        match = _FILE_LINE.fullmatch(text)
        if match:
            return self.symbols.line(match.group("file"), int(match.group("line")), core)
        if _PLAIN_ADDRESS.fullmatch(text):
            return self.symbols.resolve(text, core)
        return Location(self._value(text))

    def _core_number(self, text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) >= self.machine.n_cores:
            raise CommandError(f"no core {text}: cores are 0 to {self.machine.n_cores - 1}")
        return int(text)

    @staticmethod
    def _count(text: str, default: int, largest: int) -> int:
        text = text.strip()
        if not text:
            return default
        try:
            value = int(text.replace("_", ""), 0)
        except ValueError:
            raise CommandError(f"{text!r} is not a number") from None
        if not 1 <= value <= largest:
            raise CommandError(f"{value} is out of range: 1 to {largest:,}")
        return value

    @staticmethod
    def _no_arguments(command: str, arg: str) -> None:
        if arg.strip():
            raise CommandError(f"{command} takes no arguments (see `help {command}`)")

    @staticmethod
    def _flags(eflags: int) -> list[str]:
        return [name for bit, name in EFLAGS_BITS if eflags >> bit & 1]

    @staticmethod
    def _numbers(points) -> str:
        numbers = ", ".join(str(p.number) for p in points)
        return f"breakpoint{'s' if len(points) > 1 else ''} {numbers}"

    @staticmethod
    def _cores_text(cores) -> str:
        if cores is None:
            return ""
        listed = ", ".join(str(c) for c in sorted(cores))
        return f" (core{'s' if len(cores) > 1 else ''} {listed})"

    def _list_points(self) -> None:
        if not self.engine.breakpoints and not self.engine.watchpoints:
            self.out("no breakpoints or watchpoints")
            return
        rows = []
        for point in self.engine.breakpoints.values():
            note = self.notes.get(point.number) or PointNote(self._describe(point.address))
            rows.append([point.number, "tbreakpoint" if note.once else "breakpoint",
                         "yes" if point.enabled else "no", note.what
                         + self._cores_text(point.cores), note.condition or "", point.hits])
        for point in self.engine.watchpoints.values():
            kind = {"write": "watchpoint", "read": "read watch", "access": "acc watch"}
            rows.append([point.number, kind[point.kind], "yes" if point.enabled else "no",
                         f"{point.length} bytes at {point.address:#x}", "", point.hits])
        self.out(format_table(["num", "type", "enabled", "what", "if", "hits"],
                              sorted(rows)))

    # -- breakpoints, as the commands make them ----------------------------------------------
    def _add_break(self, arg: str, once: bool) -> None:
        """break/tbreak: LOCATION [core K] [if CONDITION]."""
        match = _IF.match(arg.strip())
        place, condition_text = match.group("place").strip(), (match.group("condition") or "").strip()
        tree = expression.parse(condition_text) if condition_text else None
        core = None
        words = place.split()
        if len(words) >= 3 and words[-2] == "core":
            core = self._core_number(words[-1])
            words = words[:-2]
        if not words:
            raise CommandError("usage: break LOCATION [core K] [if CONDITION]")
        if words[0] in ("send", "recv") and len(words) == 2:
            point, note = self._message_break(words[0], words[1], core)
        elif len(words) == 1:
            point, note = self._place_break(words[0], core)
        else:
            raise CommandError(f"cannot read {' '.join(words)!r} as a place to stop "
                               f"(a label, FILE:LINE, an address, `send N`, `recv N`)")
        note.condition, note.once = condition_text or None, once
        self.notes[point.number] = note
        point.condition = self._condition(point.number, note.base, tree, note.event)
        kind = "temporary breakpoint" if once else "breakpoint"
        self.out(f"{kind} {point.number} at {note.what}{self._cores_text(point.cores)}"
                 + (f" if {note.condition}" if note.condition else ""))
        if note.aside:
            self.out(f"  ({note.aside})")

    def _place_break(self, text: str, core: int | None):
        location = self._location(text, core)
        cores = location.cores
        if core is not None:
            cores = frozenset({core}) if cores is None else cores & {core}
            if not cores:
                raise CommandError(f"{text} is not in core {core}'s programs")
        # Each place is in one program's code, which only the cores running
        # that program map: a hook there stops no other program.
        addresses = location.addresses
        point = self.engine.add_breakpoint(addresses[0], cores, also=addresses[1:])
        shown = self._describe(addresses[0])
        if len(addresses) > 1:
            shown += f" (and {len(addresses) - 1} more program{'s' if len(addresses) > 2 else ''})"
        aside = self._spawned_only(text, core, location) if core is not None else None
        return point, PointNote(shown, aside=aside)

    def _spawned_only(self, text: str, core: int, location) -> str | None:
        """A place on `core` only in `nospawn` programs stops the core only if one
        is spawned there: what to say, lest it look like the core's own program."""
        started = self.debuggee.system.started_programs(core)
        programs = [program for _, program in location.places]
        if not programs or any(p is q for p in programs for q in started):
            return None
        names = sorted({Path(m.name).name for m in self.debuggee.system.modules
                        if any(m.program is p for p in programs)})
        return (f"core {core} starts no program with {text}: this is {' and '.join(names)}'s, "
                f"which stops core {core} only if a program spawns it there")

    def _message_break(self, event: str, channel_text: str, core: int | None):
        """break send/recv CHANNEL: right after a message is sent or taken on it."""
        if not (channel_text.isascii() and channel_text.isdigit()) or \
                int(channel_text) >= N_USER_CHANNELS:
            raise CommandError(f"{channel_text!r} is not a channel: 0 to {N_USER_CHANNELS - 1}")
        channel = int(channel_text)
        points = message_points(self.debuggee.system, event)
        if not points:
            raise CommandError(f"no program in this image links URPC: nothing can {event}")
        places = tuple(points)
        location = Location(places[0][0], None, places)

        def base(c):
            return read_message(c, event).channel == channel
        cores = None if core is None else frozenset({core})
        addresses = location.addresses
        point = self.engine.add_breakpoint(addresses[0], cores, also=addresses[1:])
        note = PointNote(f"{event} on channel {channel}", base, event=event)
        return point, note

    def _condition(self, number: int, base, tree, event: str | None):
        """The engine's test for breakpoint `number`: its place's own test, then
        the person's condition. A condition that cannot be computed (memory not
        mapped) stops the core, and says why at the stop."""
        if base is None and tree is None:
            return None

        def check(core) -> bool:
            if base is not None and not base(core):
                return False
            if tree is None:
                return True
            words = (lambda: read_message(core, event).words) if event else None
            try:
                return bool(tree.evaluate(_Values(self, core.id, words)))
            except (ExpressionError, SymbolError, TargetError) as error:
                self._condition_errors.append(f"breakpoint {number}: its condition "
                                              f"cannot be computed: {error}")
                return True
        return check

    def _add_watch(self, arg: str, kind: str, command: str) -> None:
        address, length = self._address_and_count(arg, f"{command} ADDR [LEN]",
                                                  DEFAULT_WATCH, MAX_DUMP)
        point = self.engine.add_watchpoint(address, length, kind)
        name = {"write": "watchpoint", "read": "read watchpoint",
                "access": "access watchpoint"}[kind]
        self.out(f"{name} {point.number} on {length} byte{'s' if length > 1 else ''} at "
                 f"{self._describe(address)}")

    def _enable(self, arg: str, enabled: bool) -> None:
        words = arg.split()
        points = {**self.engine.breakpoints, **self.engine.watchpoints}
        if not words:
            chosen = list(points.values())
        else:
            for word in words:
                if not word.isdigit() or int(word) not in points:
                    raise CommandError(f"no breakpoint or watchpoint {word} "
                                       f"(see `info breakpoints`)")
            chosen = [points[int(word)] for word in words]
        for point in chosen:
            point.enabled = enabled
        numbers = " ".join(str(p.number) for p in chosen) or "nothing"
        self.out(f"{'enabled' if enabled else 'disabled'} {numbers}")

    def _breakpoint(self, text: str):
        if not text.isdigit() or int(text) not in self.engine.breakpoints:
            raise CommandError(f"no breakpoint {text or '(a number is missing)'} "
                               f"(see `info breakpoints`)")
        point = self.engine.breakpoints[int(text)]
        self.notes.setdefault(point.number, PointNote(self._describe(point.address)))
        return point

    def _must_not_be_held(self, core_id: int) -> None:
        if core_id in self.engine.held:
            raise CommandError(f"core {core_id} is held (stop core): `continue core {core_id}` "
                               f"runs it, `continue -a` releases every core")

    # -- expressions -----------------------------------------------------------------------
    def _values(self, core_id: int, words=None):
        return _Values(self, core_id, words)

    def _value(self, text: str) -> int:
        """An expression's value on the selected core."""
        return expression.parse(text).evaluate(self._values(self.selected))

    def _address_and_count(self, arg: str, usage: str, default: int, largest: int):
        """`ADDR [N]`: ADDR an expression; N a trailing number after a whole one."""
        text = arg.strip()
        if not text:
            raise CommandError(f"usage: {usage}")
        try:
            expression.parse(text)
            return self._value(text), default
        except ExpressionError:
            head, _, tail = text.rpartition(" ")
            if not head.strip():
                raise
        return self._value(head), self._count(tail, default, largest)

    @staticmethod
    def _format_and_text(arg: str, usage: str) -> tuple[str, str]:
        form = ""
        if arg.startswith("/"):
            form, _, arg = arg[1:].partition(" ")
            if form not in tuple(VALUE_FORMATS):
                raise CommandError(f"/{form}: a format is one of "
                                   f"{', '.join('/' + f for f in VALUE_FORMATS)}")
        if not arg.strip():
            raise CommandError(f"usage: {usage}")
        return form, arg.strip()

    def _show_displays(self, all_of_them: bool = False) -> None:
        if all_of_them and not self.displays:
            self.out("no displays: `display EXPRESSION` makes one")
        for number in self.displays:
            self._show_display(number)

    def _show_display(self, number: int) -> None:
        form, text, tree = self.displays[number]
        try:
            value = _format_print(tree.evaluate(self._values(self.selected)), form)
        except (ExpressionError, SymbolError, TargetError) as error:
            value = f"(cannot be computed: {error})"
        self.out(f"{number}: {text} = {value}")

    @contextlib.contextmanager
    def _ctrl_c_interrupts(self):
        """Within: Ctrl-C asks the engine to stop the run, instead of ending the session."""
        if threading.current_thread() is not threading.main_thread():
            yield       # only the main thread may take signals
            return
        previous = signal.signal(signal.SIGINT, lambda *_: self.engine.request_interrupt())
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # -- running backwards (emulator/debug/timetravel.py) ---------------------------------
    def do_reverse(self, arg):
        """reverse-stepi [N] | reverse-step [N] | reverse-continue
        Run backwards. reverse-stepi undoes the selected core's last N
        instructions (default 1; an interrupt it took counts as one);
        reverse-step goes back N source lines of the selected core;
        reverse-continue goes back to the previous breakpoint or watchpoint
        hit on any core (a watchpoint: before the store, at the storing
        instruction), or to the start if there was none. The whole machine
        goes back; what comes after is made anew by the next step or continue.
        Aliases: rsi, rs, rc."""
        command, _, count = arg.partition(" ")
        actions = {"-stepi": self.do_rsi, "-step": self.do_rs, "-continue": self.do_rc}
        if command not in actions:
            raise CommandError("usage: reverse-stepi [N], reverse-step [N] or reverse-continue")
        return actions[command](count)

    def do_rsi(self, arg):
        """rsi [N]: reverse-stepi (see `help reverse`)."""
        for _ in range(self._count(arg, 1, MAX_STEPS)):
            self.engine.travel.reverse_step(self.selected)
        self.out(self.where(self.selected))

    def do_rs(self, arg):
        """rs [N]: reverse-step (see `help reverse`)."""
        core = self.machine.cores[self.selected]
        for _ in range(self._count(arg, 1, MAX_STEPS)):
            line = self.symbols.source(core.rip)
            for _ in range(MAX_REVERSE_LINE):
                self.engine.travel.reverse_step(core.id)
                if self.symbols.source(core.rip) != line:
                    break
        self.out(self.where(core.id))

    def do_rc(self, arg):
        """rc: reverse-continue (see `help reverse`)."""
        self._no_arguments("reverse-continue", arg)
        travel = self.engine.travel
        event = travel.reverse_continue()
        if travel.at_start:
            self.out("no earlier breakpoint or watchpoint hit: at the start of the recorded history")
            self.out(self.where(self.selected))
            return
        core = self.machine.cores[event.core]
        self.selected = core.id
        if event.reason == "watchpoint":
            watch = self.engine.stop_causes[0]
            self.out(f"core {core.id} is about to store to watchpoint {watch.number} "
                     f"at {event.addr:#x} (going backwards)")
        else:
            listed = [b for b in self.engine.stop_causes if not b.temporary]
            self.out(f"core {core.id} hit {self._numbers(listed)} (going backwards)")
        self.out(self.where(core.id))


def _branch_target(instruction) -> int | None:
    """Where a jump or call goes, or what a [rip + d] operand points at."""
    operands = instruction.op_str
    if instruction.mnemonic.startswith("j") or instruction.mnemonic == "call":
        try:
            return int(operands, 0)
        except ValueError:
            return None
    if "[rip " in operands:
        sign, _, rest = operands.partition("[rip ")[2].partition(" ")
        try:
            displacement = int(rest.split("]")[0], 0)
        except ValueError:
            return None
        end = instruction.address + instruction.size
        return end + displacement if sign == "+" else end - displacement
    return None


class _Values:
    """What an expression's names mean on one core (emulator/debug/expression.py)."""

    def __init__(self, shell: DebugShell, core_id: int, words=None):
        self.shell, self.core, self.words = shell, core_id, words
        self._registers = None

    def register(self, name: str) -> int:
        if self._registers is None:
            self._registers = self.shell.engine.read_registers(self.core)
        if name not in self._registers:
            raise ExpressionError(f"no register ${name} (see `regs`)")
        return self._registers[name]

    def symbol(self, name: str) -> int:
        symbols = self.shell.symbols
        return symbols.address_on(symbols.lookup(name, self.core), self.core)

    def memory(self, address: int, size: int) -> int:
        return int.from_bytes(self.shell.engine.read_memory(self.core, address, size), "little")

    def array(self, name: str, index: int) -> int:
        if self.words is None:
            raise ExpressionError(f"{name}[N] is a message's payload word: only a "
                                  f"`break send`/`break recv` condition has one")
        words = self.words()
        if not 0 <= index < len(words):
            raise ExpressionError(f"{name}[{index}]: a message has words 0 to {len(words) - 1}")
        return words[index]


def _format_value(value: int, form: str, size: int) -> str:
    """One unit of x/NUF."""
    bits = 8 * size
    if form == "x":
        return f"{value:#0{2 + 2 * size}x}"
    if form == "d":
        return str(value - (1 << bits) if value >> (bits - 1) else value)
    if form == "o":
        return f"{value:#o}"
    if form == "t":
        return f"{value:0{bits}b}"
    if form == "c":
        return f"{value} {chr(value)!r}" if value < 128 else str(value)
    return str(value)


def _format_print(value: int, form: str) -> str:
    """A value as print shows it (64 bits; no format: decimal and hex)."""
    if not form:
        return f"{value} ({value:#x})" if value > 9 else str(value)
    return _format_value(value, form, 8) if form != "x" else f"{value:#x}"


def _core_of(event) -> str:
    return "-" if event is None else str(event.get("core"))


def describe_message(event: dict, peer: int | None = None) -> str:
    """One send or recv event as a line (`peer`: the other end's core, if the
    event does not name it)."""
    words = event.get("words")
    shown = " ".join(f"{w:#x}" if isinstance(w, int) else str(w) for w in words) \
        if isinstance(words, (list, tuple)) else str(words)
    if event.get("peer") is not None:
        peer = event["peer"]
    return (f"t={event.get('time')} {event.get('event')} core {event.get('core')} "
            f"{'->' if event.get('event') == 'send' else '<-'} "
            f"core {peer if peer is not None else '?'} "
            f"seq {event.get('seq')}: {shown}")
