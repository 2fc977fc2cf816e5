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
the prompt, `#` starts a comment), for labs and tests. `sprat debug --gdb
PORT` serves gdb's remote protocol on 127.0.0.1:PORT instead of the prompt:
`target remote :PORT` in gdb, and each core is a thread.

The prompt is Python's `cmd.Cmd`, as pdb's is: every command is a `do_NAME`
method below, and its docstring is what `help NAME` prints. A mistake costs
one line starting with `***`, never the session. What the commands do to the
machine is emulator/debug/engine.py; what addresses are called is
emulator/debug/symbols.py; this file only reads commands and prints.
"""

from __future__ import annotations

import cmd
import contextlib
import signal
import sys
import threading
from dataclasses import dataclass

import capstone
from unicorn import x86_const as x86

from emulator.core import CoreState
from emulator.debug.engine import DebugEngine
from emulator.debug.symbols import Location, SymbolError, SymbolTable
from emulator.debug.target import TargetError
from emulator.debug.timetravel import TimeTravel
from emulator.debug.trace import MessageLog, TraceRecorder
from kernel.tracepoints import install_message_tracepoints
from emulator.errors import SpratError
from emulator.files import OutputFile, read_text
from sprat.boot import DEFAULT_MAX_CYCLES, add_machine_options, machine_shape, positive_argument
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

EFLAGS_BITS = ((0, "CF"), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"),
               (10, "DF"), (11, "OF"))
REGISTER_ROWS = (("rax", "rbx", "rcx", "rdx"), ("rsi", "rdi", "rbp", "rsp"),
                 ("r8", "r9", "r10", "r11"), ("r12", "r13", "r14", "r15"))
SYSTEM_REGISTERS = (("cr0", "cr2", "cr3", "cr4"), ("efer", "fs_base", "gs_base", "k_gs_base"))
SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
# Instructions `next` runs to the end of instead of stepping into.
STEP_OVER = ("call", "syscall")


class CommandError(Exception):
    """A mistake in a command: shown as one `***` line."""


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
    parser.add_argument("--gdb-files", metavar="DIR", default=None,
                        help="with --gdb: write the symbol files (ELF, DWARF) and the gdb script "
                             "to DIR (default: a new temporary directory)")
    add_trace_option(parser)
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


def add_trace_option(parser) -> None:
    parser.add_argument("--trace", metavar="FILE", default=None, type=output_name("trace file"),
                        help="record every message and IPI to FILE, one JSON line each "
                             "(see `sprat trace`)")


def run(args) -> int:
    from sprat.cli import EXIT_MACHINE_FAILURE, EXIT_OK
    debuggee = open_debuggee(args, sys.stdout)
    try:
        if args.gdb is not None:
            from sprat import gdb
            ended = gdb.serve(debuggee, args.gdb, sys.stdout, args.gdb_files)
            if ended in ("detach", "kill", "exited"):
                return EXIT_OK
            print(f"sprat: the gdb connection was lost ({ended}) before gdb detached",
                  file=sys.stderr)
            return EXIT_MACHINE_FAILURE
        shell = DebugShell(debuggee, stdout=sys.stdout)
        if args.breaks:
            shell.run_to_breakpoints(args.breaks)
        if args.script is not None:
            return shell.run_script(args.script)
        return shell.interactive()
    finally:
        debuggee.close()


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
                        topology=topology, seed=args.seed)
    return attach(system, max_cycles=args.max_cycles, trace=getattr(args, "trace", None))


def attach(system, max_cycles=None, trace=None) -> Debuggee:
    """Wrap a booted (not yet run) system for debugging."""
    engine = DebugEngine(system.machine, max_cycles=max_cycles)
    symbols = SymbolTable(shared=[system.kernel], per_core=system.programs_by_core(),
                          read=engine.read_memory)
    messages = MessageLog(keep=MESSAGES_SHOWN)
    system.machine.observers.append(messages)
    install_message_tracepoints(system)
    engine.travel = TimeTravel(engine)       # reverse execution: history kept from here
    trace_file = open_trace(system.machine, trace) if trace else None
    return Debuggee(system, engine, symbols, messages, trace_file)


def open_trace(machine, path):
    """Start recording the machine's events to `path` (the caller closes the file,
    which raises OutputError, exit status 1, if any write failed)."""
    stream = OutputFile(path, "trace")
    machine.observers.append(TraceRecorder(stream))
    return stream


def serve_gdb(engine, port: int, out) -> str:
    """Serve one gdb session on the stopped machine; return how it ended."""
    from emulator.debug.gdbstub import GdbServer
    with GdbServer(engine, port=port) as server:
        out.write(f"sprat: waiting for gdb on 127.0.0.1:{server.port} "
                  f"(in gdb: target remote :{server.port})\n")
        out.flush()
        ended = server.serve_one()
    out.write(f"sprat: the gdb session ended ({ended})\n")
    out.flush()
    return ended


# --- The prompt ------------------------------------------------------------------------
class DebugShell(cmd.Cmd):
    """The `sprat debug` prompt: one do_NAME method per command."""

    prompt = "(sprat) "
    # Commands an empty line repeats, as in gdb and pdb.
    REPEATABLE = ("step", "s", "stepi", "si", "next", "n")

    def __init__(self, debuggee: Debuggee, stdout=None, stdin=None):
        super().__init__(stdin=stdin, stdout=stdout or sys.stdout)
        self.debuggee = debuggee
        self.engine = debuggee.engine
        self.symbols = debuggee.symbols
        self.machine = debuggee.machine
        self.selected = 0
        self.disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)

    # -- running the loop ------------------------------------------------------
    def interactive(self) -> int:
        """The terminal session: readline history, Ctrl-C stops a `continue`."""
        try:
            import readline  # noqa: F401 -- cmd uses it for history and editing
        except ImportError:
            pass
        self.greet()
        while True:
            try:
                self.cmdloop()
                return 0
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

    def run_script(self, path) -> int:
        """Run the commands of a file, echoing each after the prompt."""
        lines = read_text(path, "debugger script").splitlines()
        self.greet()
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            self.out(f"{self.prompt}{line}")
            if self.onecmd(line):
                break
        return 0

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
        except (CommandError, TargetError, SymbolError) as error:
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
        retired and modeled cycles. `*` marks the selected core."""
        self._no_arguments("cores", arg)
        rows = []
        for core in self.machine.cores:
            rows.append(["*" if core.id == self.selected else "", core.id, core.state.value,
                         core.privilege, f"{core.rip:#x}", self._name(core.rip, core.id) or "",
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
        stack = core.regs.read(x86.UC_X86_REG_RSP)
        back = instruction.address + instruction.size
        # The same address deeper in a recursion is not "returned" yet.
        event = self.engine.run_until(
            core.id, back, condition=lambda c: c.regs.read(x86.UC_X86_REG_RSP) >= stack)
        self.report(event)

    do_n = do_next

    def do_continue(self, arg):
        """continue
        Run every core until a breakpoint, a watchpoint, a fault, or the end of
        the run (or the cycle budget, --max-cycles). Ctrl-C stops it."""
        self._no_arguments("continue", arg)
        with self._ctrl_c_interrupts():
            event = self.engine.resume()
        self.report(event)

    do_c = do_continue
    do_cont = do_continue

    # -- breakpoints and watchpoints ---------------------------------------------------------
    def do_break(self, arg):
        """break [ADDR|SYMBOL [core K]]
        Stop any core (or only core K) about to execute ADDR: a number, a label
        of the CPU driver or of a program (`start`, `syscall_entry+4`), or a
        register (`$rip`). User labels stop only the cores whose program has
        them. Without arguments, list the breakpoints and watchpoints."""
        words = arg.split()
        if not words:
            return self._list_points()
        core = None
        if len(words) == 3 and words[1] == "core":
            core = self._core_number(words[2])
        elif len(words) != 1:
            raise CommandError("usage: break ADDR|SYMBOL [core K]")
        location = self._location(words[0], core)
        cores = location.cores
        if core is not None:
            cores = frozenset({core}) if cores is None else cores & {core}
            if not cores:
                raise CommandError(f"{words[0]} is not in core {core}'s program")
        condition = None
        if location.programs:
            programs = location.programs
            condition = lambda c: self.symbols.running(programs, c.id)  # noqa: E731
        point = self.engine.add_breakpoint(location.address, cores, condition)
        self.out(f"breakpoint {point.number} at {self._describe(point.address, min(cores or {0}))}"
                 f"{self._cores_text(cores)}")

    do_b = do_break

    def do_watch(self, arg):
        """watch ADDR [LEN]
        Stop any core right after it stores into the LEN bytes (default 8) at
        virtual address ADDR (a number, a label or a register, as for break)."""
        words = arg.split()
        if len(words) not in (1, 2):
            raise CommandError("usage: watch ADDR [LEN]")
        address = self._location(words[0], self.selected).address
        length = self._count(words[1] if len(words) == 2 else "", DEFAULT_WATCH, MAX_DUMP)
        point = self.engine.add_watchpoint(address, length)
        self.out(f"watchpoint {point.number} on {length} byte{'s' if length > 1 else ''} at "
                 f"{self._describe(address, self.selected)}")

    def do_delete(self, arg):
        """delete [N ...]
        Delete breakpoints and watchpoints by number; without a number, all."""
        words = arg.split()
        if not words:
            for number in [*self.engine.breakpoints, *self.engine.watchpoints]:
                self.engine.delete(number)
            self.out("deleted every breakpoint and watchpoint")
            return
        for word in words:
            if not (word.isascii() and word.isdigit()) or not self.engine.delete(int(word)):
                raise CommandError(f"no breakpoint or watchpoint {word} (see `break`)")
        self.out(f"deleted {' '.join(words)}")

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
        name, source = self._name(rip, self.selected), self.symbols.source(rip, self.selected)
        self.out(f"rip {rip:#018x}" + (f" <{name}>" if name else "") + (f" {source}" if source else ""))
        self.out(f"eflags {values['eflags']:#x} [ {' '.join(self._flags(values['eflags']))} ]  "
                 + "  ".join(f"{s} {values[s]:#06x}" for s in SEGMENTS))
        for names in SYSTEM_REGISTERS:
            self.out("  ".join(f"{n} {values[n]:#x}" for n in names))

    def do_x(self, arg):
        """x ADDR [LEN]
        Dump LEN bytes (default 64) of memory at virtual address ADDR as the
        selected core sees it, in hex and ASCII."""
        words = arg.split()
        if len(words) not in (1, 2):
            raise CommandError("usage: x ADDR [LEN]")
        address = self._location(words[0], self.selected).address
        length = self._count(words[1] if len(words) == 2 else "", DEFAULT_DUMP, MAX_DUMP)
        data = self._read_mapped(address, length)
        for offset in range(0, len(data), 16):
            chunk = data[offset:offset + 16]
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
            self.out(f"{address + offset:#014x}:  {chunk.hex(' '):<47}  |{text}|")
        if len(data) < length:
            self.out(f"*** {address + len(data):#x} is not mapped on core {self.selected}")

    def do_disas(self, arg):
        """disas [ADDR] [N]
        Disassemble N instructions (default 8) at ADDR (default: the selected
        core's rip), with the labels of the CPU driver and the programs.
        `=>` marks the instruction the core will execute next."""
        words = arg.split()
        if len(words) > 2:
            raise CommandError("usage: disas [ADDR] [N]")
        core = self.machine.cores[self.selected]
        address = self._location(words[0], core.id).address if words else core.rip
        count = self._count(words[1] if len(words) == 2 else "", DEFAULT_DISASSEMBLY,
                            MAX_DISASSEMBLY)
        code = self._read_mapped(address, count * LONGEST_INSTRUCTION, core.id)
        if not code:
            raise CommandError(f"{address:#x} is not mapped on core {core.id}")
        for n, instruction in enumerate(self.disassembler.disasm(code, address)):
            if n == count:
                break
            label = self.symbols.label_at(instruction.address, core.id)
            if label:
                source = self.symbols.source(instruction.address, core.id)
                self.out(f"{label}:" + (f"  ({source})" if source else ""))
            marker = "=>" if instruction.address == core.rip else "  "
            name = self._name(instruction.address, core.id)
            self.out(f"{marker} {instruction.address:#x} {'<' + name + '>' if name else '':24} "
                     f"{self._instruction_text(instruction, core.id)}")

    def do_bt(self, arg):
        """bt
        The selected core's call stack, as far as it can be told: rip, then
        every word on the stack that is the address just after a `call` (or a
        `syscall`) in known code. The CPU driver keeps no frame pointers, so
        this is a scan: an old return address left on the stack shows too."""
        self._no_arguments("bt", arg)
        core = self.machine.cores[self.selected]
        self.out(f"#0  {self._describe(core.rip, core.id)}")
        rsp = core.regs.read(x86.UC_X86_REG_RSP)
        stack = self._read_mapped(rsp, BACKTRACE_WORDS * 8, core.id)
        frame = 1
        for offset in range(0, len(stack) - 7, 8):
            value = int.from_bytes(stack[offset:offset + 8], "little")
            how = self._return_kind(value, core.id)
            if how:
                self.out(f"#{frame}  {self._describe(value, core.id)}   "
                         f"(after a {how}; at rsp+{offset:#x})")
                frame += 1

    do_where = do_bt

    def do_msgs(self, arg):
        """msgs
        The last messages sent and received on each channel."""
        self._no_arguments("msgs", arg)
        channels = self.debuggee.messages.channels
        if not channels:
            self.out("no messages yet: channels show here once a program sends on one "
                     "(and once the channel library reports its sends and receives)")
            return
        for channel in sorted(channels, key=str):
            self.out(f"channel {channel}:")
            for event in channels[channel]:
                self.out("  " + describe_message(event))

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
        if event.reason == "exited":
            self.out(f"the run is over: {self.engine.end_reason}")
            return
        self.selected = core.id
        if event.reason == "breakpoint":
            listed = [b for b in self.engine.stop_causes if not b.temporary]
            if listed:
                self.out(f"core {core.id} hit {self._numbers(listed)}")
        elif event.reason == "watchpoint":
            self._report_watch(core, event)
        elif event.reason == "fault":
            self._report_fault(core)
        elif event.reason == "interrupt":
            self.out("stopped (interrupted)")
        self.out(self.where(core.id))

    def _report_watch(self, core, event) -> None:
        watch = self.engine.stop_causes[0]
        shown = min(watch.length, 16)
        try:
            value = self.engine.read_memory(core.id, watch.address, shown).hex(" ")
        except TargetError:
            value = "(not mapped)"
        self.out(f"core {core.id} wrote to watchpoint {watch.number} at {event.addr:#x}; "
                 f"the {shown} byte{'s' if shown > 1 else ''} at {watch.address:#x} are now {value}")

    def _report_fault(self, core) -> None:
        fault = self.engine.fault
        if core.state is CoreState.FAILED:
            self.out(f"core {core.id} failed: {core.failure}")
        elif fault is not None:
            where = f" {self._describe(fault.rip, core.id)}" if fault.rip is not None else ""
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
                f"{self._describe(core.rip, core_id)}{text}")

    # -- helpers ---------------------------------------------------------------------------
    def _describe(self, address: int, core_id: int) -> str:
        """`0x200123 <trap_common+3> cpudriver/trap.S:42`, as much as is known."""
        text = f"{address:#x}"
        name = self._name(address, core_id)
        if name:
            text += f" <{name}>"
        source = self.symbols.source(address, core_id)
        if source:
            text += f" {source}"
        return text

    def _name(self, address: int, core_id: int) -> str | None:
        return self.symbols.describe(address, core_id)

    def _decode(self, address: int, core_id: int):
        code = self._read_mapped(address, LONGEST_INSTRUCTION, core_id)
        return next(self.disassembler.disasm(code, address, 1), None)

    def _instruction_text(self, instruction, core_id: int) -> str:
        """`mnemonic operands`, with a label for a branch target or a rip-relative operand."""
        text = f"{instruction.mnemonic} {instruction.op_str}".strip()
        target = _branch_target(instruction)
        if target is not None:
            name = self._name(target, core_id)
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
        if self.symbols.program_at(value, core_id) is None:
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
        """An address as typed: a register ($rsp), a number, a label, plus an offset."""
        if text.startswith("$"):
            name, _, offset = text[1:].partition("+")
            values = self.engine.read_registers(self.selected)
            if name not in values:
                raise CommandError(f"no register {name!r} (see `regs`)")
            extra = self.symbols.resolve(offset).address if offset else 0
            return Location((values[name] + extra) & (2**64 - 1))
        return self.symbols.resolve(text, core)

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
        for point in self.engine.breakpoints.values():
            core = min(point.cores) if point.cores else self.selected
            self.out(f"{point.number:3}  breakpoint  {self._describe(point.address, core)}"
                     f"{self._cores_text(point.cores)}  hits {point.hits}")
        for point in self.engine.watchpoints.values():
            self.out(f"{point.number:3}  watchpoint  {point.length} bytes at {point.address:#x}"
                     f"  hits {point.hits}")

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
            line = self.symbols.source(core.rip, core.id)
            for _ in range(MAX_REVERSE_LINE):
                self.engine.travel.reverse_step(core.id)
                if self.symbols.source(core.rip, core.id) != line:
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


def describe_message(event: dict) -> str:
    """One send or recv event as a line."""
    words = event.get("words")
    shown = " ".join(f"{w:#x}" if isinstance(w, int) else str(w) for w in words) \
        if isinstance(words, (list, tuple)) else str(words)
    peer = event.get("peer")
    return (f"t={event.get('time')} {event.get('event')} core {event.get('core')} "
            f"{'->' if event.get('event') == 'send' else '<-'} "
            f"core {peer if peer is not None else '?'} "
            f"seq {event.get('seq')}: {shown}")
