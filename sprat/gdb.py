"""`sprat debug --gdb PORT` (and `sprat boot --gdb PORT`): real gdb on a booted
image, with names and source lines.

    files = write_symbol_files(system, directory, port)   # ELF per program + a script
    target = GdbTarget(debuggee, files)                    # what the stub drives
    # gdb -x files.script   -- loads the symbols and connects

gdb learns names and source lines from ELF files (emulator/debug/elf.py
writes them): one for the CPU driver and one per user program, each at the
addresses it runs at, and a gdb script that loads them all and connects.

gdb has one address space for all its threads, and so does sprat where
code is concerned: every user program is linked at a virtual base of its
own (cpudriver/layout.py), so an address names one instruction on every
core. With every program's symbols loaded at once, `bt`, `info symbol` and
`list` name each core's frame in its own program, and `break urpc_send`
sets a location in every program that links it, each of which stops only
the cores running that program (no other address space maps it).

`GdbTarget` is the debug engine as the stub sees it, plus what only this
layer knows: each core's state and program for `info threads`, and the
`monitor` commands (cycles, cores, channels, msgs, ended).

In non-stop mode (`set non-stop on` before the script connects) the stub
may not print on gdb's console by itself, so the script's stop hook asks
`monitor ended new`, which says why the machine ended, once: at the first
stop after the end (`monitor ended` says it whenever asked).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path

from emulator.debug.elf import program_elf
from emulator.debug.target import TargetError
from emulator.errors import SpratError

KERNEL_NAME = "cpudriver"
SCRIPT_NAME = "sprat.gdb"
# The tree the sources' relative names start from (the CPU driver's
# `cpudriver/boot.S`): gdb finds them for `list` from here.
TREE = Path(__file__).resolve().parents[1]
# Where every user program begins (the CPU driver enters it there, nothing
# calls it): gdb's backtraces end at it.
USER_ENTRY = ("start",)
# The CPU driver's code that nothing called: where a core starts
# (cpudriver/boot.S) and what runs on a stack it has just reset
# (cpudriver/dispatch.S: entering a dispatcher, the idle loop). Every label
# is a frame to gdb, so each label of these routines is named. Without them
# gdb takes the word at rsp for a return address and shows `#1 0x0`.
KERNEL_ENTRY = ("kernel_entry", "ap_entry", "core_init", "core_init_run",
                "run_first_dispatcher", "run_first_dispatcher_go", "run_dispatcher",
                "idle", "idle_wait", "idle_sleep")
# The prompt commands a `monitor` may run: those that only look.
SHELL_VIEWS = ("cores", "msgs", "channels")


@dataclass
class SymbolFiles:
    """What write_symbol_files wrote: the script and each program's ELF file."""
    directory: Path
    script: Path
    kernel: Path
    programs: dict = field(default_factory=dict)     # name -> (Program, ELF path)

    def command(self) -> str:
        return f"gdb -x {self.script}"


def program_names(system) -> dict:
    """A name per user program (its file's stem, made unique): name -> Program.
    Module lines that are one program (kernel/boot.py) share one name."""
    names, seen = {}, set()
    for module in system.modules:
        if id(module.program) in seen:
            continue
        seen.add(id(module.program))
        stem = Path(module.name).stem or "program"
        name, n = stem, 2
        while name in names or name == KERNEL_NAME:
            name, n = f"{stem}_{n}", n + 1
        names[name] = module.program
    return names


def write_symbol_files(system, directory, port: int) -> SymbolFiles:
    """Write an ELF file per program and the gdb script that loads them and connects."""
    directory = Path(directory).absolute()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        kernel = directory / f"{KERNEL_NAME}.elf"
        kernel.write_bytes(program_elf(as_gdb_finds_it(system.kernel), KERNEL_NAME, str(TREE),
                                       outermost=KERNEL_ENTRY))
        programs = {}
        for name, program in program_names(system).items():
            path = directory / f"{name}.elf"
            path.write_bytes(program_elf(as_gdb_finds_it(program), name, str(TREE),
                                         outermost=USER_ENTRY))
            programs[name] = (program, path)
        files = SymbolFiles(directory, directory / SCRIPT_NAME, kernel, programs)
        files.script.write_text(gdb_script(files, port))
    except OSError as error:
        raise SpratError(f"cannot write gdb's symbol files in {directory}: "
                         f"{error.strerror}") from None
    return files


def as_gdb_finds_it(program):
    """`program` with each source file named so that gdb opens the file that
    was assembled: relative to the tree (gdb's compilation directory) if it
    is the tree's, else by its absolute path, as a lab workspace's copy of
    `userland/lib/urpc.S` is: by its tree name, gdb would show the tree's."""
    return replace(program, source_lines=tuple(
        (address, source_name(file), line) for address, file, line in program.source_lines))


def source_name(file: str) -> str:
    # The assembler names a file relative to the working directory when it
    # is inside it (emulator/assembler.py), and this process has not moved.
    path = (Path.cwd() / file).resolve()
    return path.relative_to(TREE).as_posix() if path.is_relative_to(TREE) else str(path)


def gdb_script(files: SymbolFiles, port: int) -> str:
    """The commands `gdb -x` runs: every program's symbols, then connect."""
    lines = [
        "# Written by `sprat debug --gdb` or `sprat boot --gdb`: run it with  gdb -x THIS-FILE",
        "# The CPU driver's symbols and every user program's, each at the address",
        "# it runs at (every program has a virtual base of its own).",
        "set confirm off",
        "set pagination off",
        "set architecture i386:x86-64",
        f"add-symbol-file {files.kernel}",
    ]
    for name, (program, path) in files.programs.items():
        lines.append(f"# {name}: {program.base:#x} .. {program.end:#x}")
        lines.append(f"add-symbol-file {path}")
    lines += [
        "# In non-stop mode, the stub cannot print why the machine ended: ask it.",
        "define hook-stop",
        "  if $_gdb_setting(\"non-stop\") && $_isvoid($_exitcode)",
        "    monitor ended new",
        "  end",
        "end",
        "set confirm on",
        f"target remote 127.0.0.1:{port}",
    ]
    return "\n".join(lines) + "\n"


class GdbTarget:
    """The debug engine as the GDB stub drives it, knowing the programs by name.

    Everything not defined here is the engine's (emulator/debug/engine.py).
    """

    def __init__(self, debuggee, files: SymbolFiles) -> None:
        self.debuggee = debuggee
        self.engine = debuggee.engine
        self.symbols = debuggee.symbols
        self.programs = {name: program for name, (program, _) in files.programs.items()}
        self.end_told = False           # `monitor ended` has said why the machine ended

    def __getattr__(self, name):
        return getattr(self.engine, name)

    # -- what `info threads` shows -----------------------------------------------
    def thread_info(self, core_id: int) -> str:
        core = self.engine.core(core_id)
        text = f"core {core_id} {core.state.value}, ring {core.privilege}"
        program = self.program_on(core_id)
        return f"{text}, {program}" if program else text

    def program_on(self, core_id: int) -> str | None:
        """The name of the user program mapped on a core now, if any."""
        for name, program in self.programs.items():
            if self.symbols.is_mapped(program, core_id):
                return name
        return None

    # -- monitor commands ----------------------------------------------------------
    def monitor(self, command: str) -> str:
        """`monitor help` lists them."""
        word, _, rest = command.partition(" ")
        if word in ("", "help"):
            return self._help()
        if word in ("cycles", *self._views()) and rest.strip():
            # Said here, not by the prompt, whose message points at its own `help`.
            raise TargetError(f"monitor {word} takes no arguments (`monitor help` lists "
                              f"the commands)")
        if word == "cycles":
            return "\n".join(f"core {c.id}: {c.cycles:,} cycles, {c.stats.instructions:,} "
                             f"instructions" for c in self.engine.machine.cores)
        if word == "ended":
            if rest.strip() not in ("", "new"):
                raise TargetError("usage: monitor ended [new]")
            return self._ended(only_new=rest.strip() == "new")
        if word in self._views():
            return self._shell_view(command)
        raise TargetError(f"no monitor command {word!r}: `monitor help` lists them")

    def _ended(self, only_new: bool) -> str:
        reason = self.engine.end_reason
        if reason is None or (only_new and self.end_told):
            return ""
        self.end_told = True
        return (f"sprat: the machine has ended: {reason}; its state stays here to inspect, "
                f"and running it again reports the exit"
                + "".join(f"\nsprat:   {note}" for note in self.engine.end_notes))

    def _views(self) -> list[str]:
        from sprat.debug import DebugShell
        return [name for name in SHELL_VIEWS if hasattr(DebugShell, f"do_{name}")]

    def _help(self) -> str:
        return ("monitor cycles            each core's modeled cycles and instructions\n"
                + "".join(f"monitor {view:<18}as `{view}` at the sprat debug prompt\n"
                          for view in self._views())
                + "monitor ended [new]       why the machine ended, once it has (new: if not "
                  "said yet)")

    def _shell_view(self, command: str) -> str:
        from sprat.debug import DebugShell
        out = io.StringIO()
        DebugShell(self.debuggee, stdout=out).onecmd(command)
        return out.getvalue().rstrip("\n")


def serve(debuggee, port: int, out, directory=None) -> str:
    """Write the symbol files, print the gdb command, serve gdb until one
    detaches or kills the machine (one that disconnects is followed by the
    next to connect); return how it ended ('detach', 'kill', 'exited')."""
    import tempfile

    from emulator.debug.gdbstub import GdbServer
    # The script names the port, which is known only once listening: the
    # server starts without its target, which is given before gdb can come.
    with GdbServer(None, port=port) as server:
        if directory is None:
            directory = tempfile.mkdtemp(prefix="sprat-gdb-")
        files = write_symbol_files(debuggee.system, directory, server.port)
        server.target = GdbTarget(debuggee, files)
        out.write(f"sprat: waiting for gdb on 127.0.0.1:{server.port} "
                  f"(in gdb: target remote :{server.port})\n"
                  f"sprat: with symbols and source lines: {files.command()}\n")
        out.flush()
        ended = server.serve_one()
        while ended == "disconnect":
            # gdb went without detaching (its `disconnect`, or it died): as
            # QEMU's stub does, the machine waits as it is for the next gdb.
            out.write(f"sprat: gdb disconnected; waiting for gdb again on 127.0.0.1:"
                      f"{server.port}\n")
            out.flush()
            ended = server.serve_one()
    out.write(f"sprat: the gdb session ended ({ended})\n")
    out.flush()
    return ended
