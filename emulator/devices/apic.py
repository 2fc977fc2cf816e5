"""The local APIC: each core's own interrupt controller, at 0xFEE00000.

Every core sees its own APIC at the same physical address, as on real x86.
sprat models the registers an operating system needs to boot other cores,
interrupt them, and keep time (Intel SDM vol. 3, chapter 10):

  0x020  ID               read: this core's APIC ID in bits 24-31
  0x030  version
  0x0B0  EOI              write anything: end of interrupt
  0x0F0  spurious vector  accepted and kept
  0x300  ICR low          write: send an IPI (vector, delivery mode, shorthand)
  0x310  ICR high         destination APIC ID in bits 24-31
  0x320  LVT timer        vector, masked bit 16, periodic bit 17
  0x380  initial count    write: (re)start the timer
  0x390  current count    read: what is left
  0x3E0  divide config    1, 2, 4, ... 128 (SDM encoding)

The timer counts the core's modeled cycles (divided), so time is the same
in every run. An IPI is handed to the machine's bus, which delivers it to
the target core after IPI_LATENCY_CYCLES of modeled time.
"""

APIC_BASE = 0xFEE0_0000
APIC_SIZE = 0x1000

REG_ID = 0x020
REG_VERSION = 0x030
REG_EOI = 0x0B0
REG_SPURIOUS = 0x0F0
REG_ICR_LOW = 0x300
REG_ICR_HIGH = 0x310
REG_LVT_TIMER = 0x320
REG_TIMER_INITIAL = 0x380
REG_TIMER_CURRENT = 0x390
REG_TIMER_DIVIDE = 0x3E0

APIC_VERSION = 0x0005_0014      # an integrated xAPIC with 6 LVT entries

# ICR fields
DELIVERY_FIXED = 0b000
DELIVERY_INIT = 0b101
DELIVERY_STARTUP = 0b110
SHORTHAND_NONE, SHORTHAND_SELF, SHORTHAND_ALL, SHORTHAND_OTHERS = range(4)

LVT_MASKED = 1 << 16
LVT_PERIODIC = 1 << 17

# One-way IPI delivery. On the x86 servers of the Barrelfish paper's era an
# IPI takes on the order of a microsecond from ICR write to handler entry;
# 1,000 cycles is that order of magnitude at 1-3 GHz. A rough figure, kept
# here by name so that every use of it is visible.
IPI_LATENCY_CYCLES = 1000

_DIVIDE_ENCODING = {0b0000: 2, 0b0001: 4, 0b0010: 8, 0b0011: 16,
                    0b1000: 32, 0b1001: 64, 0b1010: 128, 0b1011: 1}


class LocalApic:
    """The APIC of one core. `bus.send_ipi(...)` carries IPIs to other cores."""

    def __init__(self, core, bus):
        self.core = core
        self.bus = bus
        self.icr_high = 0
        self.spurious = 0xFF
        self.lvt_timer = LVT_MASKED
        self.timer_initial = 0
        self.timer_divide = 2
        self.timer_start = 0          # modeled cycle at which the count began
        self.timer_deadline = None    # modeled cycle of the next expiry

    # --- MMIO callbacks (unicorn calls these with an offset into the page) ---
    def read(self, uc, offset, size, _user_data):
        value = self._read_register(offset & ~3)
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def write(self, uc, offset, size, value, _user_data):
        self._write_register(offset & ~3, value & 0xFFFF_FFFF)

    def _read_register(self, register):
        if register == REG_ID:
            return self.core.id << 24
        if register == REG_VERSION:
            return APIC_VERSION
        if register == REG_SPURIOUS:
            return self.spurious
        if register == REG_ICR_HIGH:
            return self.icr_high
        if register == REG_LVT_TIMER:
            return self.lvt_timer
        if register == REG_TIMER_INITIAL:
            return self.timer_initial
        if register == REG_TIMER_CURRENT:
            return self._current_count()
        if register == REG_TIMER_DIVIDE:
            return next(k for k, v in _DIVIDE_ENCODING.items() if v == self.timer_divide)
        return 0

    def _write_register(self, register, value):
        if register == REG_ICR_LOW:
            self._send(value)
        elif register == REG_ICR_HIGH:
            self.icr_high = value & 0xFF00_0000
        elif register == REG_SPURIOUS:
            self.spurious = value
        elif register == REG_LVT_TIMER:
            self.lvt_timer = value & 0x0003_00FF
        elif register == REG_TIMER_INITIAL:
            self.timer_initial = value
            self._arm_timer(self.core.now())
        elif register == REG_TIMER_DIVIDE:
            self.timer_divide = _DIVIDE_ENCODING.get(value & 0b1011, 2)
        # EOI and read-only registers: nothing to do

    # --- Inter-processor interrupts ---
    def _send(self, icr_low):
        vector = icr_low & 0xFF
        mode = (icr_low >> 8) & 0b111
        shorthand = (icr_low >> 18) & 0b11
        destination = self.icr_high >> 24
        me = self.core.id
        if shorthand == SHORTHAND_SELF:
            targets = [me]
        elif shorthand == SHORTHAND_ALL:
            targets = list(range(self.bus.n_cores))
        elif shorthand == SHORTHAND_OTHERS:
            targets = [c for c in range(self.bus.n_cores) if c != me]
        else:
            targets = [destination]
        for target in targets:
            self.bus.send_ipi(me, target, mode, vector, self.core.now())

    # --- Timer ---
    def _arm_timer(self, now):
        if self.timer_initial == 0:
            self.timer_deadline = None
            return
        self.timer_start = now
        self.timer_deadline = now + self.timer_initial * self.timer_divide

    def _current_count(self):
        if self.timer_deadline is None:
            return 0
        left = (self.timer_deadline - self.core.now()) // self.timer_divide
        return max(0, left)

    def timer_expired(self, now):
        """Called by the scheduler at the deadline; returns the vector to raise, or None.

        A tick whose vector is still waiting for the core (its IF clear, say
        all through a run of system calls) is merged into the waiting one:
        the IRR holds one bit per vector, so a periodic timer on real silicon
        loses ticks rather than queueing them (SDM 10.8.4). Queueing each
        one would grow the core's queue for as long as the core runs."""
        self.timer_deadline = None
        if self.lvt_timer & LVT_PERIODIC:
            self._arm_timer(now)
        vector = self.lvt_timer & 0xFF
        if self.lvt_timer & LVT_MASKED or self._requested(vector):
            return None
        return vector

    def _requested(self, vector) -> bool:
        """Is `vector` raised and not yet taken by the core (its IRR bit set)?"""
        return any(waiting == vector for _, _, waiting in self.core._pending)
