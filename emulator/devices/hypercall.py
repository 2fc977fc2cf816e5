"""The hypercall port: how guest kernel code reaches a service written in Python.

Some kernel services would take pages of assembly and teach little in it
(DESIGN.md section 3: capability invocations). The CPU driver hands them to
Python through this one small, documented door, the way a paravirtualised
kernel calls its hypervisor:

    mov rdi, OPERATION ...                # arguments in rdi rsi rdx r10 r8 r9
    out HYPERCALL_PORT, al                # ring 0 only: user code gets #GP
    # rax = result, rdx = a second result

The machine passes the core to whatever handler the OS registered with
`machine.set_hypercall_handler(handler)`; the handler reads and writes the
core's registers. With no handler, rax = -ENOSYS. A port write from ring 3
never gets here: the machine checks every port access as the processor does
(emulator/privilege.py: CPL against IOPL, then the TSS's I/O permission
bitmap), the CPU driver runs user code with IOPL 0 and gives its TSS no
bitmap, so the `out` is a #GP at the instruction and the service never
hears of it.
"""

HYPERCALL_PORT = 0xA0
ENOSYS = 38
