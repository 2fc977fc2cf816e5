"""The parts of an x86-64 core's state that unicorn keeps but does not expose.

Unicorn emulates the instructions; it does not emulate the way the silicon
enters a trap (DESIGN.md section 2). To deliver an interrupt we must change
the current privilege level, reload the CS and SS descriptor caches, and tell
the engine that the exception has been delivered. None of that has an API,
so this module reads and patches unicorn's saved CPU context (QEMU's
CPUX86State) at offsets that were found by experiment on unicorn 2.1.4 and
are checked at start-up (`check_layout`), so a different unicorn fails loudly
instead of silently.

It also reaches two things outside the saved context: the CPUID feature
words, which decide both what `cpuid` reports and which instructions the
engine accepts (`clear_cpuid_feature`), and the live instruction pointer,
read as memory (`instruction_pointer`: a core reads it before every
quantum, and a register read through the C API costs ten times as much).

It also holds `Registers`, a fast path to uc_reg_read / uc_reg_write (the
Python binding's reg_read costs ~1.4 us, the bare C call ~0.35 us), and
`retired_instructions`, which reads unicorn's own instruction counter.

Nothing here knows about operating systems: it is the hardware's view.
"""

import ctypes
import struct

from unicorn import Uc, UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, UC_HOOK_INTR
from unicorn import x86_const as x86
from unicorn.unicorn_py3.unicorn import uclib

# --- Layout of unicorn's saved context (uc_context header + CPUX86State) ---
# The header (size, mode, arch, snapshot level, ...) is 40 bytes; then comes
# a plain copy of CPUX86State.
CONTEXT_HEADER = 40
HFLAGS = 176            # uint32 env->hflags; bits 0-1 are the CPL
SEGMENT_CACHE = 184     # SegmentCache segs[6]: ES CS SS DS FS GS, 24 bytes each
SEGMENT_SIZE = 24       # uint32 selector, pad, uint64 base, uint32 limit, uint32 flags
ERROR_CODE = 5384       # int env->error_code of the exception being raised
EXCEPTION_IS_INT = 5388  # int: 1 for a software `int n`, 0 for a fault
OLD_EXCEPTION = 5496    # int env->old_exception: -1 when no exception in flight

SEG_ES, SEG_CS, SEG_SS, SEG_DS, SEG_FS, SEG_GS = range(6)
HF_CPL_MASK = 0x3

# uc_struct->emu_counter: unicorn counts instructions for emu_start(count=N)
# in its own hook; the counter is one past N when the quantum ran out.
EMU_COUNTER = 1368
# uc_struct->emu_count: the N of emu_start(count=N). Unicorn's counting hook
# compares against it before every instruction, so lowering it in the middle
# of a quantum ends the quantum at an exact instruction (the debugger's
# watchpoints, emulator/debug/engine.py).
EMU_COUNT = 1376

# The live CPUX86State, for what lies past the saved copy: uc_struct->cpu
# (CPUState *), its env_ptr, and env->features (uint64_t per CPUID feature
# word), read when a block is translated (an instruction whose feature bit
# is clear decodes as invalid) and by `cpuid`.
UC_CPU = 440
CPU_ENV_PTR = 296
ENV_FEATURES = 5632
ENV_EIP = 128            # target_ulong env->eip, after the 16 general registers
FEAT_1_EDX = 0           # CPUID.1:EDX
FEAT_1_ECX = 1           # CPUID.1:ECX
CPUID_1_EDX_FPU = 1 << 0
CPUID_1_ECX_SSE3 = 1 << 0


class Registers:
    """Fast register access for one unicorn instance (ids from x86_const)."""

    def __init__(self, uc: Uc):
        self._handle = uc._uch
        self._value = ctypes.c_uint64()
        self._ref = ctypes.byref(self._value)
        self._read = uclib.uc_reg_read
        self._write = uclib.uc_reg_write

    def read(self, reg: int) -> int:
        # Unicorn writes only the register's own width (2 bytes for a
        # segment selector, 4 for EFLAGS) into the buffer, so clear it
        # first: else the bytes above are the last wider register read.
        self._value.value = 0
        self._read(self._handle, reg, self._ref)
        return self._value.value

    def write(self, reg: int, value: int) -> None:
        self._value.value = value & 0xFFFF_FFFF_FFFF_FFFF
        self._write(self._handle, reg, self._ref)


class SavedContext:
    """A reusable buffer holding a core's CPU context, patchable in place."""

    def __init__(self, uc: Uc):
        self._uc = uc
        self._context = uc.context_save()
        address = ctypes.cast(self._context.context, ctypes.c_void_p).value
        self._data = address + CONTEXT_HEADER

    def save(self) -> None:
        self._uc.context_update(self._context)

    def restore(self) -> None:
        self._uc.context_restore(self._context)

    def read_u32(self, offset: int) -> int:
        return ctypes.c_uint32.from_address(self._data + offset).value

    def write_u32(self, offset: int, value: int) -> None:
        ctypes.c_uint32.from_address(self._data + offset).value = value & 0xFFFF_FFFF

    def read_i32(self, offset: int) -> int:
        return ctypes.c_int32.from_address(self._data + offset).value

    def write_i32(self, offset: int, value: int) -> None:
        ctypes.c_int32.from_address(self._data + offset).value = value

    def load_segment(self, index: int, selector: int, base: int, limit: int, flags: int) -> None:
        """Fill a segment descriptor cache, as a segment load would."""
        offset = self._data + SEGMENT_CACHE + index * SEGMENT_SIZE
        struct.pack_into("<I4xQII", (ctypes.c_char * SEGMENT_SIZE).from_address(offset), 0,
                         selector, base, limit, flags)

    def segment(self, index: int) -> tuple[int, int, int, int]:
        offset = self._data + SEGMENT_CACHE + index * SEGMENT_SIZE
        return struct.unpack("<I4xQII", ctypes.string_at(offset, SEGMENT_SIZE))


def _env(uc: Uc) -> int:
    """The address of the live CPUX86State (uc->cpu->env_ptr)."""
    cpu = ctypes.c_uint64.from_address(uc._uch.value + UC_CPU).value
    return ctypes.c_uint64.from_address(cpu + CPU_ENV_PTR).value


def _cpuid_feature_word(uc: Uc, word: int) -> ctypes.c_uint64:
    return ctypes.c_uint64.from_address(_env(uc) + ENV_FEATURES + 8 * word)


def instruction_pointer(uc: Uc) -> ctypes.c_uint64:
    """RIP as a live ctypes view, for reading: what uc_reg_read returns for
    it (env->eip) without the call. Valid once the engine is set up (any
    mem_map). Write RIP through Registers: unicorn must know of a jump."""
    return ctypes.c_uint64.from_address(_env(uc) + ENV_EIP)


def clear_cpuid_feature(uc: Uc, word: int, bits: int) -> None:
    """Take a feature away: `cpuid` stops reporting it, and its instructions
    become invalid opcodes (#UD) in every block translated from now on.
    Call it after the engine is set up (any mem_map) and before code runs."""
    _cpuid_feature_word(uc, word).value &= ~bits


def emu_counter(uc: Uc) -> ctypes.c_uint64:
    """unicorn's instruction counter for the current emu_start, as a live ctypes view."""
    return ctypes.c_uint64.from_address(uc._uch.value + EMU_COUNTER)


def set_instruction_limit(uc: Uc, count: int) -> None:
    """Make the running emu_start stop before its instruction number count + 1."""
    ctypes.c_uint64.from_address(uc._uch.value + EMU_COUNT).value = count


def retired_instructions(uc: Uc, quantum: int) -> int:
    """How many instructions the last emu_start(count=quantum) executed."""
    return min(emu_counter(uc).value, quantum)


def check_layout() -> None:
    """Verify the offsets above against this unicorn, by experiment.

    Runs a 4-instruction program that divides by zero and halts, and checks
    that the fields land where this module expects them. Raises RuntimeError
    naming the field that moved (a unicorn upgrade, not a user error).
    """
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0x1000, 0x1000, UC_PROT_ALL)
    # mov rax, 0x1234; xor ecx, ecx; div ecx (#DE); hlt
    code = bytes.fromhex("48c7c034120000" "31c9" "f7f1" "f4")
    uc.mem_write(0x1000, code)
    context = SavedContext(uc)
    seen = {}

    def on_interrupt(uc, vector, _):
        context.save()
        seen["old_exception"] = context.read_i32(OLD_EXCEPTION)
        seen["is_int"] = context.read_i32(EXCEPTION_IS_INT)
        context.write_i32(OLD_EXCEPTION, -1)
        context.restore()
        uc.reg_write(x86.UC_X86_REG_RIP, 0x100B)   # skip the div, land on hlt

    uc.hook_add(UC_HOOK_INTR, on_interrupt)
    regs = Registers(uc)
    uc.emu_start(0x1000, 0, count=100)
    context.save()
    problems = []
    if regs.read(x86.UC_X86_REG_RAX) != 0x1234 or context.read_u32(0) != 0x1234:
        problems.append("general registers")
    if seen.get("old_exception") != 0 or seen.get("is_int") != 0:
        problems.append("old_exception / exception_is_int")
    if retired_instructions(uc, 100) != 4:
        problems.append("emu_counter")
    if ctypes.c_uint64.from_address(uc._uch.value + EMU_COUNT).value != 100:
        problems.append("emu_count")
    cpu = ctypes.c_uint64.from_address(uc._uch.value + UC_CPU).value
    env = ctypes.c_uint64.from_address(cpu + CPU_ENV_PTR).value if cpu else 0
    if not env or ctypes.c_uint64.from_address(env).value != 0x1234:
        problems.append("uc->cpu->env_ptr")
    elif not (_cpuid_feature_word(uc, FEAT_1_EDX).value & CPUID_1_EDX_FPU
              and _cpuid_feature_word(uc, FEAT_1_ECX).value & CPUID_1_ECX_SSE3):
        problems.append("env->features")
    if instruction_pointer(uc).value != regs.read(x86.UC_X86_REG_RIP) or \
            instruction_pointer(uc).value != 0x100C:      # after the hlt
        problems.append("env->eip")
    hflags = context.read_u32(HFLAGS)
    if not hflags & (1 << 15):        # HF_CS64: the engine is in 64-bit mode
        problems.append("hflags")
    if problems:
        raise RuntimeError("unicorn's internal layout is not the one sprat was built for: "
                           + ", ".join(problems) + " moved (see emulator/cpustate.py)")

