"""The devices of the sprat machine, one module each.

  console.py  the debug console on I/O port 0xE9 (one line buffer per core)
  power.py    the per-core power-off port 0xF4 (the "machine is done" signal)
  apic.py     each core's local APIC at 0xFEE00000: IDs, IPIs, the timer

A device sees the core that touched it, because on a multicore each core
has its own local APIC and its own view of a port write.
"""
