"""The debug console: a byte written to port 0xE9 is a character of output.

Port 0xE9 is the "debug console" of Bochs and QEMU: the cheapest possible
output device, one `out 0xe9, al` per character. sprat keeps one line
buffer per core and emits each finished line tagged with the core that
wrote it, so the output of 64 cores stays readable:

    [core 3] hello from core 3
"""

CONSOLE_PORT = 0xE9
MAX_LINE = 4096     # a guest that never prints a newline still gets flushed


class Console:
    def __init__(self, n_cores: int, sink):
        """`sink(core, line)` receives every finished line."""
        self._lines = [bytearray() for _ in range(n_cores)]
        self._sink = sink
        self.bytes_written = [0] * n_cores

    def write_byte(self, core: int, value: int) -> None:
        self.bytes_written[core] += 1
        buffer = self._lines[core]
        if value == 0x0A:
            self._emit(core)
        else:
            buffer.append(value & 0xFF)
            if len(buffer) >= MAX_LINE:
                self._emit(core)

    def flush(self) -> None:
        """Emit what is left in every buffer (at the end of a run)."""
        for core, buffer in enumerate(self._lines):
            if buffer:
                self._emit(core)

    def _emit(self, core: int) -> None:
        text = self._lines[core].decode("utf-8", errors="replace")
        self._lines[core].clear()
        self._sink(core, text)
