"""Symbols: what an address is called, and where a name is.

    symbols = SymbolTable(shared=[kernel], per_core={0: [hello], 2: [spin, ping]},
                          read=engine.read_memory)
    symbols.describe(0x200123)             # -> "trap_common+3"
    symbols.source(0x200123)               # -> "cpudriver/trap.S:42"
    symbols.lookup("start", core=2)        # -> Location(0x8001000000, {2}, ((0x80.., spin),))
    symbols.line("urpc.S", 107)            # -> a Location too

Every assembled source is a `Program` (emulator/assembler.py) with a table
label -> address. The CPU driver is seen by every core at the same
address; each user program only by the cores that run it, but at an
address of its own (cpudriver/layout.py gives every program of an image
its own virtual base). So an address names one instruction machine-wide:
from address to name needs no core, only the program whose code holds it.

From name to address, the core matters: a name given by a person resolves
to a `Location`: the address, the cores on which that name means something
(None: every core, `per_core` says which programs a core may run) and, for
a user label, its places: each program that has it, with its address there
(a library routine such as urpc_send is at a different address in each
program that links it). A breakpoint on a user label covers every place;
each stops only the cores running its program, as no other address space
maps it. Which of its places a core is in now (`address_on`) is found by
looking: the program whose first bytes are in memory at its base address
(through `read(core, address, length)`, the core's view).

Names in addresses: `NAME`, `NAME+OFFSET`, numbers (`0x200000`, `4096`)
and `NUMBER+OFFSET`; source lines, `FILE:LINE`, go through `line`.
Registers (`$rsp`) and expressions are the debugger's business
(emulator/debug/expression.py): they need a live core.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TERM = re.compile(r'\s*([A-Za-z_.$][\w.$]*|0[xX][0-9a-fA-F_]+|\d[\d_]*)\s*')


def _same_file(path: str, name: str) -> bool:
    """Is `name` the whole of `path` or a tail of it, component by component?"""
    return path == name or path.endswith("/" + name.lstrip("/"))


def _cores_phrase(cores) -> str:
    """[0] -> 'core 0'; [0, 2, 3] -> 'cores 0, 2 and 3'."""
    if len(cores) == 1:
        return f"core {cores[0]}"
    return f"cores {', '.join(map(str, cores[:-1]))} and {cores[-1]}"


class SymbolError(ValueError):
    """A name that is not a symbol, or an address that does not parse."""


# How many bytes of a program are compared with memory to tell it is mapped.
IDENTIFYING_BYTES = 64


@dataclass(frozen=True)
class Location:
    address: int
    cores: frozenset[int] | None = None     # None: the address means this on every core
    # User code: (address, program) for each program that has the name; a
    # library routine is at a different address in each program that links it.
    places: tuple = ()

    @property
    def addresses(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(address for address, _ in self.places)) or (self.address,)

    def plus(self, offset: int) -> "Location":
        mask = 2**64 - 1
        return Location((self.address + offset) & mask, self.cores,
                        tuple(((a + offset) & mask, p) for a, p in self.places))


class SymbolTable:
    def __init__(self, shared=(), per_core: dict | None = None, read=None):
        """`shared`: programs every core sees; `per_core`: core -> the programs it
        may run; `read(core, address, length) -> bytes`: to tell which is mapped."""
        self.shared = list(shared)
        self.per_core = {core: list(programs) for core, programs in (per_core or {}).items()}
        self.read = read
        every = self.shared + [p for programs in self.per_core.values() for p in programs]
        self.programs = list({id(program): program for program in every}.values())

    # --- Address -> name ------------------------------------------------------
    def program_at(self, address: int):
        """The program whose code holds `address`, or None."""
        for program in self.programs:
            if program.base <= address < program.end:
                return program
        return None

    def address_on(self, location: Location, core: int) -> int:
        """The one address `location` means on `core`: in the program mapped
        there now, or the only one it can mean."""
        addresses = location.addresses
        if len(addresses) == 1:
            return addresses[0]
        for address, program in location.places:
            if self.is_mapped(program, core):
                return address
        raise SymbolError(f"it is at different addresses in different programs, and none of "
                          f"them is running on core {core}")

    def is_mapped(self, program, core: int) -> bool:
        """Is `program` the one in `core`'s address space right now?"""
        if self.read is None:
            return True
        length = min(IDENTIFYING_BYTES, len(program.code))
        try:
            return self.read(core, program.base, length) == program.code[:length]
        except Exception:       # unmapped: not this one
            return False

    def describe(self, address: int) -> str | None:
        """`label` or `label+offset` (decimal offset, as gdb writes it)."""
        program = self.program_at(address)
        found = program.symbol_at(address) if program else None
        if found is None:
            return None
        name, offset = found
        return f"{name}+{offset}" if offset else name

    def source(self, address: int) -> str | None:
        """`file:line` of the statement that assembled to `address`."""
        program = self.program_at(address)
        found = program.line_at(address) if program else None
        return f"{found[0]}:{found[1]}" if found else None

    def label_at(self, address: int) -> str | None:
        """The label defined exactly at `address`, if any."""
        described = self.describe(address)
        return described if described and "+" not in described else None

    # --- Name -> address ----------------------------------------------------
    def lookup(self, name: str, core: int | None = None) -> Location:
        """Where `name` is: a shared program's label first, then the cores' own.

        With `core`, only that core's programs are searched (besides the
        shared ones). A user label may be in several programs, at a different
        address in each: the Location has them all (`places`).
        """
        for program in self.shared:
            if name in program.symbols:
                return Location(program.symbols[name])
        places, cores = [], set()
        for program, may_run in self._programs(core, shared=False):
            if name in program.symbols:
                places.append((program.symbols[name], program))
                cores |= may_run
        if not places:
            raise SymbolError(self._missing(f"symbol {name!r}", core,
                                            lambda program: name in program.symbols))
        return Location(places[0][0], frozenset(cores), tuple(places))

    def line(self, file: str, line: int, core: int | None = None) -> Location:
        """Where source line `file:line` starts (the first line at or after it
        that produced code, as gdb does). `file` may be any tail of the path
        (`urpc.S`, `lib/urpc.S`). A file several programs include is at a
        different address in each: the Location has them all (`places`)."""
        found = []          # (line, address, program, cores)
        for program, cores in self._programs(core):
            best = None
            for address, name, number in program.source_lines:
                if _same_file(name, file) and number >= line and \
                        (best is None or (number, address) < best):
                    best = (number, address)
            if best is not None:
                found.append((*best, program, cores))
        if not found:
            raise SymbolError(self._missing(
                f"code at or after {file}:{line}", core,
                lambda program: any(_same_file(name, file) and number >= line
                                    for _, name, number in program.source_lines)))
        nearest = min(number for number, *_ in found)
        found = [(address, program, cores) for number, address, program, cores in found
                 if number == nearest]
        address, _, cores = found[0]
        if cores is None:
            return Location(address)
        running = frozenset(c for _, _, cs in found for c in cs)
        return Location(address, running, tuple((a, program) for a, program, _ in found))

    def _missing(self, what: str, core: int | None, has) -> str:
        """Why `what` was not found: on `core`, say which cores' programs have it
        (`has(program)`), lest a person think it is nowhere."""
        if core is not None:
            others = [c for c, programs in sorted(self.per_core.items())
                      if any(has(program) for program in programs)]
            if others:
                return (f"core {core} runs no program with {what} "
                        f"({_cores_phrase(others)} {'do' if len(others) > 1 else 'does'})")
        return f"no {what}" + (f" on core {core}" if core is not None else "")

    def _programs(self, core: int | None, shared: bool = True):
        """(program, the cores that may run it, None for every core), the shared first."""
        for program in self.shared if shared else ():
            yield program, None
        by_program = {}
        for c in ([core] if core is not None else sorted(self.per_core)):
            for program in self.per_core.get(c, ()):
                by_program.setdefault(id(program), (program, set()))[1].add(c)
        for program, cores in by_program.values():
            yield program, frozenset(cores)

    def resolve(self, text: str, core: int | None = None) -> Location:
        """An address as a person writes it: a number, a name, either + an offset."""
        parts = text.split("+")
        if not all(parts):
            raise SymbolError(f"cannot read {text!r} as an address")
        location = self._term(parts[0], core)
        return location.plus(sum(self._number(part) for part in parts[1:]))

    def _term(self, text: str, core: int | None) -> Location:
        match = _TERM.fullmatch(text)
        if not match:
            raise SymbolError(f"cannot read {text!r} as an address")
        word = match.group(1)
        if word[0].isdigit():
            return Location(self._number(word))
        return self.lookup(word, core)

    @staticmethod
    def _number(text: str) -> int:
        try:
            return int(text.strip().replace("_", ""), 0)
        except ValueError:
            raise SymbolError(f"{text.strip()!r} is not a number") from None

    def names(self) -> list[str]:
        """Every label, for completion at the prompt."""
        found = set()
        for program in self.programs:
            found.update(program.symbols)
        return sorted(found)
