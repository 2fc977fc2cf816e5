"""The power-off port: how a core tells the machine it is finished.

Writing a byte to port 0xF4 switches the writing core off for good, with
that byte as its exit code, like QEMU's isa-debug-exit device. The CPU
driver writes 0 when it has nothing left to run and a non-zero code when it
panics. The machine is done when no core can run any more; the run is clean
when every core switched itself off with code 0.
"""

POWER_PORT = 0xF4
