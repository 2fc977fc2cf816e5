"""The boot loader: from a menu.lst-style image to a machine ready to run.

    system = boot_image("images/default.lst", cores=4, output=print)
    result = system.machine.run(max_cycles=10**8)

What it does, in the order a real loader (GRUB with multiboot) would:
  1. read the image (kernel/image.py): one `kernel` line, `module` lines;
  2. assemble the CPU driver for KERNEL_BASE and each program for its own
     virtual base, so that an address names one instruction machine-wide:
     module lines naming the same file with the same numeric options are
     one program, program k linked at layout.program_base(k)
     (program_numbers; emulator/assembler.py caches the results);
  3. copy them into physical memory (each program once, page aligned,
     from MODULES_BASE);
  4. write the boot information the CPU driver reads (layout in
     cpudriver/layout.py): number of cores, memory size, the module table;
  5. start core 0 at the CPU driver's first byte with RDI = boot information.
The CPU driver does the rest: page tables, descriptor tables, the other
cores (unless a monitor on core 0 will: cpudriver/boot.S), ring 3.

Module arguments understood here: `core=N` runs the module on core N only
(default: every core that has no module of its own); `nospawn` loads it but
starts it nowhere (a program spawns it, as in Barrelfish); `monitor` makes
it a monitor, which may boot cores (SYS_START_CORE), and a monitor on core 0
means the CPU driver leaves the other cores to it (cpudriver/boot.S); any
other `name=NUMBER` becomes the assembler constant NAME in that module
(`iterations=1000` -> ITERATIONS), so one program can be built with
different parameters, except `channels=LIST` (pages and ranges: `20-21,40`),
the channel pages the program is given at boot: it holds their
capabilities, and they alone (and its core's channel to its monitor) are
mapped in its channel window (kernel/channels.py). An option that names
the program's channel (`channel=K`, `send=K`, `recv=K`) gives it page K
too (and still becomes a constant). Other bare words are
left to the program.
"""

import struct
from dataclasses import dataclass, field

from unicorn import x86_const as x86

from cpudriver import layout
from emulator.assembler import Program, assemble_file
from emulator.cost import find_pause_sites
from emulator.instcost import find_instruction_sites
from emulator.interconnect.storebuffer import find_fence_sites
from emulator.errors import SpratError
from emulator.machine import DEFAULT_MEMORY, Machine
from emulator.scheduler import DEFAULT_QUANTUM
from kernel.caps import defines as caps_defines
from kernel.capservice import CapabilityService
from kernel.capservice import defines as slot_defines
from kernel import skb
from kernel.channels import parse_channels
from kernel.image import BootImage, parse_image

PAGE = 4096
NOSPAWN = -2          # a module no core starts at boot (matches no core id)
CORES_STARTED_AT_POWER_ON = 1 << 0   # the machine starts the BSP; the CPU drivers, the rest


@dataclass
class LoadedModule:
    name: str               # the path as written in the image
    core: int | None        # None: every core
    physical: int
    program: Program
    flags: int = 0          # layout.MODULE_FLAG_*: MONITOR

    @property
    def stack_top(self) -> int:
        """Where each of its dispatchers' stacks starts (layout.stack_top)."""
        return self.program.base + layout.PROGRAM_SPAN


@dataclass
class System:
    """A booted machine and what was loaded into it (for the debugger and the trace)."""
    machine: Machine
    image: BootImage
    kernel: Program
    modules: list[LoadedModule] = field(default_factory=list)
    module_channels: list[list[int]] = field(default_factory=list)   # by module: channels=
    skb: object = None      # kernel/skb.py's answer, once monitor 0 has asked

    def dispatchers(self, core: int) -> int:
        """How many dispatchers the CPU driver of `core` has made (its variables)."""
        base = layout.PERCORE_BASE + core * layout.PERCORE_SIZE
        return self.machine.memory.read_u64(base + layout.PCV_N_DISPATCHERS)

    def programs_by_core(self) -> dict[int, list]:
        """The programs each core may run: as the CPU driver picks them at boot
        (dispatch.S: the modules named for that core, or else the ones for
        every core), and every `nospawn` module, which a program may spawn
        anywhere. Which one is mapped is told by looking
        (emulator/debug/symbols.py)."""
        spawnable = [m.program for m in self.modules if m.core == NOSPAWN]
        return {core: self.started_programs(core) + spawnable
                for core in range(self.machine.n_cores)}

    def started_programs(self, core: int) -> list:
        """The programs the CPU driver of `core` starts at boot (dispatch.S: the
        modules named for that core, or else the ones for every core)."""
        own = [m.program for m in self.modules if m.core == core]
        return own or [m.program for m in self.modules if m.core is None]

    def channel_holders(self, channel: int) -> frozenset[int] | None:
        """The cores whose programs the image gives channel page `channel` at
        boot (`channels=`, `channel=`, `send=`, `recv=`), or None if a program
        given it may run anywhere: a `nospawn` module, which a program spawns
        on a core the image does not say. (A spawn or a monitor may hand the
        page to more programs later: these are the ends known from the start.)"""
        own = {m.core for m in self.modules if m.core is not None}
        cores = set()
        for module, pages in zip(self.modules, self.module_channels):
            if channel not in pages:
                continue
            if module.core == NOSPAWN:
                return None
            if module.core is None:         # every core that has no module of its own
                cores |= set(range(self.machine.n_cores)) - own
            else:
                cores.add(module.core)
        return frozenset(cores)

    def failed_programs(self, core: int) -> int:
        """How many programs on `core` exited with a non-zero status or were killed."""
        base = layout.PERCORE_BASE + core * layout.PERCORE_SIZE
        return self.machine.memory.read_u64(base + layout.PCV_FAILED)

    def failures(self) -> str | None:
        """One line saying which programs failed, or None if none did."""
        counts = {core: self.failed_programs(core) for core in range(self.machine.n_cores)}
        failed = {core: n for core, n in counts.items() if n}
        if not failed:
            return None
        total = sum(failed.values())
        where = ", ".join(f"core {core}: {n}" for core, n in failed.items())
        return f"{total} program{'s' if total > 1 else ''} failed ({where}): a non-zero " \
               f"exit status, or killed for a fault"

    def module_for_core(self, core: int) -> LoadedModule | None:
        """The module the CPU driver will pick for `core` (see cpudriver/user.S)."""
        for wanted in (core, None):
            for module in self.modules:
                if module.core == wanted:
                    return module
        return None


def user_defines(module: int = 0) -> dict[str, int]:
    """The constants a user program may use (system call numbers, its address
    space): those of boot module `module`, whose stack is its own."""
    names = ("SYS_EXIT", "SYS_PRINT", "SYS_CORE_ID", "SYS_YIELD", "SYS_DISPATCHER_ID",
             "SYS_LMP_SEND", "SYS_LMP_RECV", "SYS_LMP_CALL", "SYS_SPAWN", "SYS_INVOKE",
             "SYS_CHANNEL_UNMAP", "SYS_CHANNEL_MAP", "SYS_INVLPG", "SYS_LMP_SEND_EP",
             "SYS_START_CORE", "SYS_CHANNEL_GRANT", "MONITOR_CHANNELS", "EPERM", "EAGAIN", "ENOMEM",
             "EFAULT", "EBUSY", "EINVAL",
             "ENOSYS", "USER_BASE", "USER_END",
             "MAX_PRINT", "USER_CHANNELS", "CHANNEL_SIZE", "N_USER_CHANNELS")
    own = {"PROGRAM_BASE": layout.program_base(module), "USER_STACK_TOP": layout.stack_top(module)}
    return {name: getattr(layout, name) for name in names} | own | caps_defines() \
        | slot_defines()


def boot_image(path, cores: int = 4, quantum: int = DEFAULT_QUANTUM,
               memory_size: int = DEFAULT_MEMORY, output=None, topology=None,
               cost_model: bool = True, seed: int | None = None,
               timing: str = "fast") -> System:
    """Parse, assemble and load an image; return a System ready to run.

    With a `topology`, the machine has its cores (and `cores` must agree).
    `timing`: "fast" or "detailed" (emulator/cost.py, "Timing modes").
    """
    image = parse_image(path)
    kernel = assemble_kernel(image)
    machine = Machine(cores, memory_size=memory_size, quantum=quantum, output=output,
                      topology=topology, cost_model=cost_model, seed=seed, timing=timing)
    machine.memory.write(layout.KERNEL_BASE, kernel.code)
    system = System(machine, image, kernel)
    _load_modules(system, cores)
    _write_boot_info(system)
    _track_channels(system)
    skb.attach(system)
    machine.set_hypercall_handler(CapabilityService(machine, system.module_channels))
    machine.power_on(layout.KERNEL_BASE, {x86.UC_X86_REG_RDI: layout.BOOT_INFO})
    return system


def assemble_image(image: BootImage) -> tuple[Program, list[Program]]:
    """The CPU driver and every module assembled as the loader does, with the
    same checks (a lab's build check assembles a student's images so)."""
    return assemble_kernel(image), [assemble_module(image, entry, program) for entry, program
                                    in zip(image.modules, program_numbers(image))]


def assemble_kernel(image: BootImage) -> Program:
    kernel = assemble_file(image.kernel.path, layout.KERNEL_BASE, defines=layout.defines())
    if len(kernel.code) > layout.KERNEL_MAX_SIZE:
        raise SpratError(f"{image.kernel.path}: the CPU driver is {len(kernel.code)} bytes, "
                         f"more than the {layout.KERNEL_MAX_SIZE} bytes it may occupy")
    return kernel


def program_numbers(image: BootImage) -> list[int]:
    """Which program each module line is: lines that name the same file with
    the same numeric options are one program (the same code, so one copy at
    one address); program k is the k-th distinct one (cpudriver/layout.py)."""
    programs, numbers = {}, []
    for entry in image.modules:
        options = _numeric_options(entry, f"{image.path}:{entry.line}")
        key = (str(entry.path), tuple(sorted(options.items())))
        numbers.append(programs.setdefault(key, len(programs)))
    return numbers


def assemble_module(image: BootImage, entry, number: int) -> Program:
    """A module line as program `number` (program_numbers): linked at that
    program's base, its numeric options as assembler constants."""
    where = f"{image.path}:{entry.line}"
    defines = user_defines(number) | _numeric_options(entry, where)
    program = assemble_file(entry.path, layout.program_base(number), defines=defines)
    if len(program.code) > layout.USER_MAX_IMAGE:
        raise SpratError(f"{where}: module {entry.path.name} is {len(program.code)} bytes, "
                         f"more than a program may be ({layout.USER_MAX_IMAGE})")
    return program


def _load_modules(system: System, cores: int) -> None:
    image, memory = system.image, system.machine.memory
    if len(image.modules) > layout.MAX_MODULES:
        raise SpratError(f"{image.path}: {len(image.modules)} modules, at most {layout.MAX_MODULES}")
    address = layout.MODULES_BASE
    loaded = {}             # program number -> (its physical address, its Program)
    for entry, number in zip(image.modules, program_numbers(image)):
        where = f"{image.path}:{entry.line}"
        core = _module_core(entry, cores, where)
        if number not in loaded:
            program = assemble_module(image, entry, number)
            if address + len(program.code) > layout.MODULES_END:
                raise SpratError(f"{where}: module {entry.path.name} does not fit: the modules "
                                 f"of an image may take "
                                 f"{(layout.MODULES_END - layout.MODULES_BASE) >> 20} MiB in all")
            memory.write(address, program.code)
            loaded[number] = (address, program)
            address += (len(program.code) + PAGE - 1) // PAGE * PAGE
        physical, program = loaded[number]
        system.module_channels.append(_module_channels(entry, where))
        system.modules.append(LoadedModule(entry.args[0] if entry.args else entry.path.name,
                                           core, physical, program, _module_flags(entry)))


def _module_core(entry, cores: int, where: str) -> int | None:
    if "nospawn" in entry.args[1:]:
        return NOSPAWN
    value = entry.options.get("core", "all")
    if value == "all":
        return None
    # isascii: '²' and other Unicode digits pass isdigit() but not int()
    if not (value.isascii() and value.isdigit()):
        raise SpratError(f"{where}: core={value} is not a core number (or 'all')")
    core = int(value)
    if core >= cores:
        raise SpratError(f"{where}: core={core}, but the machine has only {cores} cores")
    return core


def _module_flags(entry) -> int:
    """The bare words that mean something to the CPU driver, as MODULE_FLAG_* bits."""
    return layout.MODULE_FLAG_MONITOR if "monitor" in entry.args[1:] else 0


NAMED_CHANNELS = ("channel", "send", "recv")   # options that name the program's one channel


def _module_channels(entry, where: str) -> list[int]:
    """The channel pages its line gives the program: `channels=20-21,40`, and the
    page an option naming its channel says (`channel=2`, `send=0 recv=1`)."""
    texts = [(name, entry.options[name]) for name in ("channels",) + NAMED_CHANNELS
             if name in entry.options]
    pages = []
    for name, text in texts:
        try:
            pages += parse_channels(text)
        except ValueError as error:
            raise SpratError(f"{where}: {name}={text}: {error}") from None
    return pages


def _numeric_options(entry, where: str) -> dict[str, int]:
    defines, system_names = {}, frozenset(user_defines())
    for name, value in entry.options.items():
        if name in ("core", "channels"):
            continue
        try:
            number = int(value, 0)
        except ValueError:
            raise SpratError(f"{where}: {name}={value} is not a number") from None
        if not -(1 << 63) <= number < (1 << 64):
            raise SpratError(f"{where}: {name}={value} does not fit in 64 bits")
        if name.upper() in system_names:
            raise SpratError(f"{where}: {name}={value} would redefine the system's constant "
                             f"{name.upper()} (choose another name)")
        defines[name.upper()] = number
    return defines



def _track_channels(system: System) -> None:
    """Tell the cost model where the channels are, where programs poll them,
    where the privileged instructions it charges are, and where the code
    drains its store buffer (fences, locked instructions)."""
    cost = system.machine.cost
    if cost is None:
        return
    cost.track(layout.CHANNELS_PHYS, layout.CHANNELS_SIZE)
    cost.instructions.add_sites(find_instruction_sites(system.kernel))
    for module in system.modules:
        cost.add_pause_sites(find_pause_sites(module.program))
        cost.instructions.add_sites(find_instruction_sites(module.program))
    # The fences after the instruction costs: CostModel.add_fence_sites says why.
    cost.add_fence_sites(find_fence_sites(system.kernel))
    for module in system.modules:          # only where it runs: a code hook slows a core
        cost.add_fence_sites(find_fence_sites(module.program),
                             None if module.core is None else [module.core])


def _write_boot_info(system: System) -> None:
    memory = system.machine.memory
    header = struct.pack("<QQQQQ", layout.BOOT_MAGIC, system.machine.n_cores, memory.size,
                         len(system.modules), CORES_STARTED_AT_POWER_ON)
    info = header.ljust(layout.BI_MODULES, b"\0")
    for module in system.modules:
        core = layout.ALL_CORES if module.core is None else module.core & 0xFFFF_FFFF_FFFF_FFFF
        info += struct.pack("<QQQQQ", module.physical, len(module.program.code), core,
                            module.flags, module.program.base)
    memory.write(layout.BOOT_INFO, info)


def cores_started(system: System) -> list[int]:
    """The cores the CPU drivers have started so far (BI_CORES_STARTED), core 0 included."""
    mask = system.machine.memory.read_u64(layout.BOOT_INFO + layout.BI_CORES_STARTED)
    return [core for core in range(system.machine.n_cores) if mask >> core & 1]
