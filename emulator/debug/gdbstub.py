"""A GDB remote-serial-protocol server: real gdb debugging sprat's cores.

    server = GdbServer(target)              # any emulator.debug.target.Target
    print('target remote 127.0.0.1:%d' % server.port)
    reason = server.serve_one()             # one gdb session, then returns
    server.close()

gdb connects over TCP (loopback only: whoever reaches this port can read and
write every byte of the machine) and sends short text packets; this module
answers them by calling the Target. Each core is a gdb thread (core c is
thread c + 1, as thread ids must be positive); `Hg` picks whose registers
and memory `g`/`m` see, and every stop reply names the core that stopped.

Read it top to bottom:
  1. framing: `$data#checksum`, the `+`/`-` acks, run-length and `}`
     escapes (`PacketReader`, `frame`, `escape_binary`, `unescape_binary`);
  2. registers: the target description gdb asks for (`target_xml`) and the
     byte layout of the `g` packet, both made from target.REGISTERS;
  3. one session (`Session`): a method per packet, `_packet_g` for `g`;
     at its end, in a part of its own, gdb's non-stop mode;
  4. the listening socket (`GdbServer`).

When the machine can run no more (every core halted, a deadlock, a panic),
gdb is first told why in an `O` console packet and shown an ordinary stop,
so every register and byte can still be looked at; only running it again
after that reports the exit (`W`). `monitor COMMAND` (qRcmd) and the text
`info threads` shows (qThreadExtraInfo) come from the target if it offers
them (target.py lists the optional calls).

Non-stop mode (`set non-stop on` in gdb: one core stops at a breakpoint
while the others run on) is served when the target can hold cores; see
the part "Non-stop mode" of Session for how.

What is not here: the machine (see target.py), tracepoints,
file I/O, and multiprocess thread ids. Unknown packets get gdb's "not
supported" (an empty reply); broken ones get an error reply or a NAK, never
an exception. The protocol is in the GDB manual's "Remote Protocol" appendix;
set the logger 'emulator.debug.gdbstub' to DEBUG to watch a conversation.
"""

from __future__ import annotations

import logging
import re
import select
import socket
import threading
from collections import deque
from typing import Callable, NamedTuple

from emulator.debug.target import (REGISTERS, SIGINT, SIGTRAP, Register, StopEvent, Target,
                                   TargetError)
from emulator.errors import SpratError

log = logging.getLogger(__name__)

LOOPBACK = '127.0.0.1'

# Largest packet body either side sends, announced in qSupported. 16 KiB
# lets gdb move 8 KiB of memory per m/M packet, plenty for a teaching OS.
PACKET_SIZE = 0x4000

# Memory requests are split so that no target call crosses a page: a read
# that runs into an unmapped page then returns the mapped part before it.
PAGE_SIZE = 0x1000

# Error replies carry a Unix errno in decimal, as QEMU's and most stubs'
# do; gdb only shows them.
E_MALFORMED = 'E01'   # the packet itself makes no sense
E_NO_THREAD = 'E03'   # ESRCH: no such thread (core)
E_TARGET = 'E05'      # EIO: the target failed at something it should do
E_MEMORY = 'E14'      # EFAULT: unmapped memory
E_INVALID = 'E22'     # EINVAL: well-formed, but a bad value
E_XFER = 'E00'        # qXfer: unknown object or annex (the manual's choice)

# A send that cannot finish within this time means gdb stopped reading:
# the session is dropped rather than hanging the server.
SEND_TIMEOUT_S = 10.0

INTERRUPT_BYTE = 0x03  # Ctrl-C, sent raw (not in a packet) while running

SIGABRT = 6  # the signal of a stop at a machine's unclean end (gdb: "Aborted")

# Non-stop: the machine runs in slices of this many quanta (a few
# milliseconds of host time), and gdb's packets are read between slices.
SLICE_QUANTA = 8

# Z/z packet types that are watchpoints -> the target's kind, and the
# stop-reply field that tells gdb which kind fired.
WATCH_KINDS = {'2': 'write', '3': 'read', '4': 'access'}
WATCH_REPLY = {'write': 'watch', 'read': 'rwatch', 'access': 'awatch'}


# --------------------------------------------------------------------------
# 1. Framing
# --------------------------------------------------------------------------

def checksum(body: bytes) -> int:
    """The packet checksum: sum of the body's bytes, modulo 256."""
    return sum(body) & 0xFF


def frame(body: str) -> bytes:
    """`$body#cs`, ready to send (body must already be escaped if binary)."""
    raw = body.encode('latin-1')
    return b'$%s#%02x' % (raw, checksum(raw))


# The bytes that would end or confuse a frame if sent raw inside one;
# gdb escapes '*' too, so that it is never read as run-length encoding.
_MUST_ESCAPE = frozenset(b'$#}*')


def escape_binary(data: bytes) -> str:
    """Binary data as packet text: `}` then the byte XOR 0x20 for $ # } *."""
    out = bytearray()
    for byte in data:
        if byte in _MUST_ESCAPE:
            out += bytes([ord('}'), byte ^ 0x20])
        else:
            out.append(byte)
    return out.decode('latin-1')


def unescape_binary(text: str) -> bytes:
    """Undo escape_binary; ValueError on a `}` with nothing after it."""
    raw = text.encode('latin-1')
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == ord('}'):
            if i + 1 == len(raw):
                raise ValueError('escape character at end of data')
            out.append(raw[i + 1] ^ 0x20)
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def expand_run_length(body: bytes) -> bytes:
    """Undo run-length encoding: `X*n` is X repeated 1 + (n - 29) times.

    Only stubs' replies are meant to be compressed, but the framing allows
    it both ways, and since gdb escapes a literal '*' in binary data,
    expanding here can never damage what gdb sends.
    """
    if b'*' not in body:
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i] == ord('*'):
            if not out or i + 1 == len(body):
                raise ValueError('run-length marker with no character to repeat')
            repeat = body[i + 1] - 29
            if repeat < 0:
                raise ValueError('run-length count below zero')
            out += out[-1:] * repeat
            i += 2
        else:
            out.append(body[i])
            i += 1
    return bytes(out)


class Frame(NamedTuple):
    """One thing that arrived from gdb.

    kind: 'packet' (data = body text), 'damaged' (checksum wrong or cut
    short: ask again), 'invalid' (arrived intact, cannot be a packet:
    too long, bad run-length), 'interrupt' (Ctrl-C), 'ack' or 'nak'.
    """

    kind: str
    data: str = ''


class PacketReader:
    """Turns the byte stream from gdb into Frames; feed it whatever recv got.

    A push parser rather than blocking reads, so the same reader serves
    the quiet time (waiting for the next command) and the busy time (the
    machine is running and only Ctrl-C is expected).
    """

    def __init__(self, max_body: int = PACKET_SIZE) -> None:
        self.max_body = max_body
        self._state = 'idle'        # 'idle' -> 'body' -> 'checksum' -> 'idle'
        self._body = bytearray()
        self._too_long = False
        self._sum_digits = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        for byte in data:
            found = self._step(byte)
            if found is not None:
                frames.append(found)
        return frames

    def _step(self, byte: int) -> Frame | None:
        if self._state == 'idle':
            return self._idle(byte)
        if byte == ord('$'):
            # A '$' can never be inside a packet (binary data escapes it):
            # the packet being read was cut short, and a new one begins.
            self._start()
            return Frame('damaged', 'truncated by a new packet')
        if self._state == 'body':
            return self._in_body(byte)
        return self._in_checksum(byte)

    def _idle(self, byte: int) -> Frame | None:
        if byte == ord('$'):
            self._start()
        elif byte == INTERRUPT_BYTE:
            return Frame('interrupt')
        elif byte == ord('+'):
            return Frame('ack')
        elif byte == ord('-'):
            return Frame('nak')
        # Anything else between packets is line noise: ignored, as gdb does.
        return None

    def _start(self) -> None:
        self._state = 'body'
        self._body.clear()
        self._too_long = False
        self._sum_digits.clear()

    def _in_body(self, byte: int) -> Frame | None:
        if byte == ord('#'):
            self._state = 'checksum'
        elif len(self._body) < self.max_body:
            self._body.append(byte)
        else:
            # Keep reading to the '#' so the stream stays in step, but do
            # not keep the bytes: memory use stays bounded.
            self._too_long = True
        return None

    def _in_checksum(self, byte: int) -> Frame | None:
        self._sum_digits.append(byte)
        if len(self._sum_digits) < 2:
            return None
        self._state = 'idle'
        try:
            expected = int(self._sum_digits.decode('latin-1'), 16)
        except ValueError:
            return Frame('damaged', 'checksum is not two hex digits')
        if self._too_long:
            return Frame('invalid', 'longer than PacketSize')
        if expected != checksum(self._body):
            return Frame('damaged', 'checksum mismatch')
        try:
            body = expand_run_length(bytes(self._body))
        except ValueError as error:
            return Frame('invalid', str(error))
        return Frame('packet', body.decode('latin-1'))


# --------------------------------------------------------------------------
# 2. Registers: the target description and the `g` packet layout
# --------------------------------------------------------------------------

# EFLAGS bits gdb shows by name (`info registers eflags` -> [ IF ZF ]).
_EFLAGS_BITS = (('CF', 0), ('', 1), ('PF', 2), ('AF', 4), ('ZF', 6), ('SF', 7),
                ('TF', 8), ('IF', 9), ('DF', 10), ('OF', 11), ('NT', 14),
                ('RF', 16), ('VM', 17), ('AC', 18), ('VIF', 19), ('VIP', 20),
                ('ID', 21))


def target_xml() -> str:
    """The amd64 target description gdb reads with qXfer:features:read.

    Made from REGISTERS, so the description and the `g` layout can never
    disagree: gdb numbers registers in the order they appear here.
    """
    lines = ['<?xml version="1.0"?>',
             '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
             '<target version="1.0">',
             '  <architecture>i386:x86-64</architecture>']
    features: dict[str, list[str]] = {}
    for reg in REGISTERS:
        group = f' group="{reg.group}"' if reg.group else ''
        features.setdefault(reg.feature, []).append(
            f'    <reg name="{reg.name}" bitsize="{reg.bits}" type="{reg.gdb_type}"{group}/>')
    for name, regs in features.items():
        lines.append(f'  <feature name="{name}">')
        if any('i386_eflags' in r for r in regs):
            lines += _eflags_type()
        lines += regs
        lines.append('  </feature>')
    lines.append('</target>')
    return '\n'.join(lines) + '\n'


def _eflags_type() -> list[str]:
    fields = [f'      <field name="{n}" start="{b}" end="{b}"/>' for n, b in _EFLAGS_BITS]
    return ['    <flags id="i386_eflags" size="4">', *fields, '    </flags>']


def encode_register(value: int | None, bits: int) -> str:
    """Little-endian hex for `g`/`p`; 'xx' per byte when unavailable."""
    size = bits // 8
    if value is None:
        return 'xx' * size
    return (value & ((1 << bits) - 1)).to_bytes(size, 'little').hex()


# --------------------------------------------------------------------------
# Parsing helpers: every malformed field becomes a PacketError, which the
# session turns into an error reply. Nothing here trusts its input.
# --------------------------------------------------------------------------

def _unsupported(packet: str) -> str:
    """The empty reply: gdb's word for "this stub does not know that packet"."""
    return ''


class PacketError(Exception):
    """A packet we cannot act on; str(error) is the error reply to send."""


_HEX = re.compile(r'[0-9a-fA-F]+')


def parse_hex(text: str, bits: int = 64) -> int:
    """A hex number that must fit in `bits` bits."""
    if not _HEX.fullmatch(text):
        raise PacketError(E_MALFORMED)
    value = int(text, 16)
    if value >> bits:
        raise PacketError(E_INVALID)
    return value


def parse_hex_bytes(text: str) -> bytes:
    """Hex pairs to bytes (bytes.fromhex alone would accept spaces)."""
    if (text and not _HEX.fullmatch(text)) or len(text) % 2:
        raise PacketError(E_MALFORMED)
    return bytes.fromhex(text)


def parse_addr_length(text: str) -> tuple[int, int]:
    """`addr,length` as in m, M, X and qXfer."""
    addr, comma, length = text.partition(',')
    if not comma:
        raise PacketError(E_MALFORMED)
    return parse_hex(addr), parse_hex(length, bits=32)


def page_chunks(addr: int, length: int) -> list[tuple[int, int]]:
    """Split [addr, addr + length) at page boundaries: [(addr, length)...]."""
    chunks = []
    while length > 0:
        size = min(length, PAGE_SIZE - addr % PAGE_SIZE)
        chunks.append((addr, size))
        addr, length = addr + size, length - size
    return chunks


# --------------------------------------------------------------------------
# 3. One gdb session
# --------------------------------------------------------------------------

class Session:
    """One connected gdb: reads packets, answers them, drives the target.

    All-stop: the machine is stopped whenever the session waits for a
    packet. A run (`c`, `s`, `vCont`) goes to a worker thread so that this
    thread can keep reading the socket for gdb's Ctrl-C meanwhile.
    """

    def __init__(self, sock: socket.socket, target: Target) -> None:
        self.sock = sock
        self.target = target
        self.reader = PacketReader()
        self.pending: deque[Frame] = deque()  # read, not yet handled
        self.ack_mode = True          # until QStartNoAckMode
        self.gdb_features: set[str] = set()
        first = target.cores()[0]
        # Before anything ran, the machine is simply stopped: report SIGTRAP
        # as stubs conventionally do, which gdb shows without fuss.
        self.last_stop = StopEvent(first, 'interrupt', signal=SIGTRAP)
        self.g_core = first           # Hg: whose registers and memory
        # The core gdb's user works with: the last one named by Hg or that
        # stopped, but not one gdb only stepped back over a breakpoint (bs).
        self.chosen_core = first
        self.c_core: int | None = None  # Hc: who `s` steps; None = last stopped
        self.breakpoints: dict[int, set[str]] = {}  # addr -> {'0', '1'}
        self.watchpoints: set[tuple[int, int, str]] = set()   # (addr, size, kind)
        self.end_told = False         # gdb has been told why the machine ended
        self.last_reply = b''
        self.ended: str | None = None  # 'detach', 'kill', 'disconnect', 'exited'
        self.exited = False           # gdb has been sent the machine's exit (W)
        # Non-stop mode (the part of its own below):
        self.non_stop = False
        self.stopped: dict[int, StopEvent] = {}   # stopped core -> why
        self.stepping: set[int] = set()  # asked to step, waiting to be able to move
        self.stops: deque[StopEvent] = deque()   # not yet taken by gdb (vStopped)
        self.notified = False         # a %Stop is out and gdb has not drained the queue
        self.idle = False             # no running core can move until gdb acts

    # -- the loop ------------------------------------------------------

    def run(self) -> str:
        """Serve until gdb detaches, kills or goes away; return which."""
        try:
            while self.ended is None:
                if not self.pending:
                    if self._cores_running():
                        self._run_between_packets()     # non-stop only
                    else:
                        self._receive()
                while self.pending and self.ended is None:
                    self._on_frame(self.pending.popleft())
                self._notify_stop()
        finally:
            self._remove_debug_state()
        return self.ended

    def _receive(self) -> None:
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return  # an idle gdb is fine; the timeout only bounds sends
        except OSError:
            data = b''
        if not data:
            # After the exit, gdb has nothing more to say: leaving is normal.
            self.ended = 'exited' if self.exited else 'disconnect'
            return
        self.pending.extend(self.reader.feed(data))

    def _on_frame(self, frame_: Frame) -> None:
        if frame_.kind == 'packet':
            self.idle = False     # (non-stop) whatever gdb did may let a core move
            self._ack()
            log.debug('<- %s', frame_.data[:200])
            reply = self.dispatch(frame_.data)
            if reply is not None and self.ended != 'disconnect':
                self._send(reply)
        elif frame_.kind == 'damaged':
            log.debug('<- damaged packet (%s)', frame_.data)
            self._reject()
        elif frame_.kind == 'invalid':
            log.debug('<- invalid packet (%s)', frame_.data)
            self._ack()
            self._send(E_MALFORMED)
        elif frame_.kind == 'nak' and self.ack_mode and self.last_reply:
            self._write(self.last_reply)
        elif frame_.kind == 'interrupt' and self.non_stop:
            self._stop_cores(self._running_cores(), SIGINT)
        # 'ack' needs nothing; 'interrupt' while stopped (all-stop) is a late
        # Ctrl-C whose stop was already reported.

    def _reject(self) -> None:
        # With acks, '-' asks gdb to send it again; without them an error
        # reply is the only way to keep one answer per packet.
        if self.ack_mode:
            self._write(b'-')
        else:
            self._send(E_MALFORMED)

    def _ack(self) -> None:
        if self.ack_mode:
            self._write(b'+')

    def _send(self, reply: str) -> None:
        log.debug('-> %s', reply[:200])
        self.last_reply = frame(reply)
        self._write(self.last_reply)

    def _write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.ended = 'disconnect'

    # -- dispatch --------------------------------------------------------

    def dispatch(self, packet: str) -> str | None:
        """The reply to one packet; None when the packet takes no reply.

        The catch-all at the end is the last line of defence: a bug in a
        handler or the target must cost gdb one error reply, not the
        connection.
        """
        try:
            return self._handler(packet)(packet)
        except PacketError as error:
            return str(error)
        except TargetError as error:
            log.debug('target refused: %s', error)
            return E_TARGET
        except Exception:  # noqa: BLE001 -- see the docstring
            log.exception('gdb stub: packet %r failed', packet[:80])
            return E_TARGET

    def _handler(self, packet: str) -> Callable[[str], str | None]:
        """`_packet_g` answers `g`; `_packet_qC` answers `qC`; `?` is special."""
        if not packet:
            return _unsupported
        if packet[0] == '?':
            return self._stop_reasons if self.non_stop else self._stop_reason
        if packet[0] in 'qQv':
            # Named packets: the name runs to the first ':', ';', ',' or '?'
            # (so 'vCont?' and 'vCont;c' both reach _packet_vCont).
            name = re.split('[:;,?]', packet, maxsplit=1)[0]
            return getattr(self, f'_packet_{name}', _unsupported)
        return getattr(self, f'_packet_{packet[0]}', _unsupported)

    # -- threads ---------------------------------------------------------

    def _core_of_thread(self, text: str) -> int:
        """A thread id from gdb (hex, thread = core + 1) to a core."""
        core = parse_hex(text) - 1
        if core not in self.target.cores():
            raise PacketError(E_NO_THREAD)
        return core

    def _thread(self, core: int) -> str:
        return f'{core + 1:x}'

    def _packet_H(self, packet: str) -> str:
        """Hg/Hc <thread>: pick the core for registers/memory or for `s`."""
        op, thread = packet[1:2], packet[2:]
        if op not in ('g', 'c'):
            return ''
        if thread in ('-1', '0'):     # all threads / any thread
            if op == 'c':
                self.c_core = None
            return 'OK'
        core = self._core_of_thread(thread)
        if op == 'g':
            self.g_core = self.chosen_core = core
        else:
            self.c_core = core
        return 'OK'

    def _packet_T(self, packet: str) -> str:
        """T<thread>: is the thread alive? Cores always are."""
        self._core_of_thread(packet[1:])
        return 'OK'

    def _packet_qfThreadInfo(self, packet: str) -> str:
        return 'm' + ','.join(self._thread(c) for c in self.target.cores())

    def _packet_qsThreadInfo(self, packet: str) -> str:
        return 'l'  # the whole list went in qfThreadInfo's one reply

    def _packet_qC(self, packet: str) -> str:
        return 'QC' + self._thread(self.last_stop.core)

    def _packet_qThreadExtraInfo(self, packet: str) -> str:
        """What `info threads` shows beside each thread: core and ring, or
        what the target says (its state and program)."""
        core = self._core_of_thread(packet.partition(',')[2])
        describe = getattr(self.target, 'thread_info', None)
        if describe is not None:
            return describe(core).encode().hex()
        cs = self.target.read_registers(core).get('cs')
        text = f'core {core}' if cs is None else f'core {core} ring {cs & 3}'
        return text.encode().hex()

    def _packet_qRcmd(self, packet: str) -> str:
        """qRcmd,hex: gdb's `monitor COMMAND`, answered by the target."""
        try:
            command = parse_hex_bytes(packet.partition(',')[2]).decode()
        except UnicodeDecodeError:
            raise PacketError(E_MALFORMED) from None
        monitor = getattr(self.target, 'monitor', None)
        if monitor is None:
            return ''
        try:
            text = monitor(command.strip())
        except TargetError as error:
            # The message as console output, then OK: an error reply would
            # make gdb add "Protocol error with Rcmd" to a line that says it all.
            self._console(f'{error}\n')
            return 'OK'
        if not text:
            return 'OK'
        # A reply of hex digits is console output and ends the command.
        return (text if text.endswith('\n') else text + '\n').encode().hex()

    def _console(self, text: str) -> None:
        """An `O` packet: text gdb prints on its console."""
        self._send('O' + text.encode().hex())

    def _packet_qAttached(self, packet: str) -> str:
        # '1': gdb attached to a machine that was already there, so quitting
        # gdb detaches instead of killing the machine.
        return '1'

    # -- general queries -------------------------------------------------

    def _packet_qSupported(self, packet: str) -> str:
        self.gdb_features = set(packet.partition(':')[2].split(';'))
        features = [f'PacketSize={PACKET_SIZE:x}', 'qXfer:features:read+',
                    'vContSupported+', 'QStartNoAckMode+', 'swbreak+', 'hwbreak+']
        if self._can_hold():
            features.append('QNonStop+')
        if self._travel() is not None:
            features += ['ReverseStep+', 'ReverseContinue+']
        return ';'.join(features)

    def _packet_QStartNoAckMode(self, packet: str) -> str:
        # This packet's own reply is still acked by gdb; the '+' it sends
        # for it is ignored like every other ack.
        self.ack_mode = False
        return 'OK'

    def _packet_qOffsets(self, packet: str) -> str:
        return 'Text=0;Data=0;Bss=0'  # the kernel runs where it was linked

    def _packet_qXfer(self, packet: str) -> str:
        """qXfer:features:read:target.xml:offset,length"""
        parts = packet.split(':')
        if len(parts) != 5:
            raise PacketError(E_MALFORMED)
        _, obj, op, annex, window = parts
        if (obj, op, annex) != ('features', 'read', 'target.xml'):
            return E_XFER if (obj, op) == ('features', 'read') else ''
        offset, length = parse_addr_length(window)
        document = target_xml().encode()
        chunk = document[offset:offset + min(length, PACKET_SIZE // 2)]
        more = offset + len(chunk) < len(document)
        return ('m' if more else 'l') + escape_binary(chunk)

    def _stop_reason(self, packet: str) -> str:
        """?: why is the machine stopped? Asked once, on connecting."""
        return self.stop_reply(self.last_stop)

    # -- registers ---------------------------------------------------------

    def _packet_g(self, packet: str) -> str:
        values = self.target.read_registers(self.g_core)
        return ''.join(encode_register(values.get(r.name), r.bits) for r in REGISTERS)

    def _packet_G(self, packet: str) -> str:
        """Write every register whose value changed (cs and friends rarely
        do, and some targets cannot write them)."""
        data = packet[1:]
        if len(data) != sum(r.bits // 4 for r in REGISTERS):
            raise PacketError(E_INVALID)
        current = self.target.read_registers(self.g_core)
        at = 0
        for reg in REGISTERS:
            digits = data[at:at + reg.bits // 4]
            at += reg.bits // 4
            if reg.name not in current or digits.startswith('x'):
                continue
            value = int.from_bytes(parse_hex_bytes(digits), 'little')
            if value != current[reg.name]:
                self.target.write_register(self.g_core, reg.name, value)
        return 'OK'

    def _register(self, text: str) -> Register:
        number = parse_hex(text, bits=16)
        if number >= len(REGISTERS):
            raise PacketError(E_INVALID)
        return REGISTERS[number]

    def _packet_p(self, packet: str) -> str:
        reg = self._register(packet[1:])
        value = self.target.read_registers(self.g_core).get(reg.name)
        return encode_register(value, reg.bits)

    def _packet_P(self, packet: str) -> str:
        number, equals, digits = packet[1:].partition('=')
        reg = self._register(number)
        raw = parse_hex_bytes(digits)
        if not equals or len(raw) != reg.bits // 8:
            raise PacketError(E_INVALID)
        self.target.write_register(self.g_core, reg.name, int.from_bytes(raw, 'little'))
        return 'OK'

    # -- memory ------------------------------------------------------------

    def _packet_m(self, packet: str) -> str:
        """m addr,length: as many bytes as are readable from addr on."""
        addr, length = parse_addr_length(packet[1:])
        length = min(length, (PACKET_SIZE - 1) // 2)
        if addr + length > 1 << 64:
            return E_MEMORY
        data = self._read_memory(addr, length)
        if length and not data:
            return E_MEMORY
        return data.hex()

    def _read_memory(self, addr: int, length: int) -> bytes:
        data = bytearray()
        for chunk_addr, size in page_chunks(addr, length):
            try:
                chunk = self.target.read_memory(self.g_core, chunk_addr, size)
            except TargetError:
                break
            if not chunk:
                break
            data += chunk[:size]
            if len(chunk) < size:
                break
        return bytes(data)

    def _packet_M(self, packet: str) -> str:
        """M addr,length:hex"""
        header, colon, digits = packet[1:].partition(':')
        addr, length = parse_addr_length(header)
        data = parse_hex_bytes(digits)
        if not colon or len(data) != length:
            raise PacketError(E_INVALID)
        return self._write_memory(addr, data)

    def _packet_X(self, packet: str) -> str:
        """X addr,length:binary -- M with escaped raw bytes instead of hex."""
        header, colon, binary = packet[1:].partition(':')
        addr, length = parse_addr_length(header)
        try:
            data = unescape_binary(binary)
        except ValueError:
            raise PacketError(E_MALFORMED) from None
        if not colon or len(data) != length:
            raise PacketError(E_INVALID)
        return self._write_memory(addr, data)   # length 0: gdb probing for X

    def _write_memory(self, addr: int, data: bytes) -> str:
        if addr + len(data) > 1 << 64:
            return E_MEMORY
        try:
            for chunk_addr, size in page_chunks(addr, len(data)):
                offset = chunk_addr - addr
                self.target.write_memory(self.g_core, chunk_addr, data[offset:offset + size])
        except TargetError:
            return E_MEMORY
        return 'OK'

    # -- breakpoints and watchpoints --------------------------------------

    def _packet_Z(self, packet: str) -> str:
        return self._breakpoint(packet, insert=True)

    def _packet_z(self, packet: str) -> str:
        return self._breakpoint(packet, insert=False)

    def _breakpoint(self, packet: str, insert: bool) -> str:
        """Z/z type,addr,kind. 0 (software) and 1 (hardware) both become
        engine breakpoints; 2, 3 and 4 are write, read and access
        watchpoints of `kind` bytes."""
        fields = packet[1:].split(';')[0].split(',')
        if len(fields) != 3:
            raise PacketError(E_MALFORMED)
        kind_of_point, addr, size = fields[0], parse_hex(fields[1]), parse_hex(fields[2], 32)
        if kind_of_point in ('0', '1'):
            self._change_breakpoint(kind_of_point, addr, insert)
        elif kind_of_point in WATCH_KINDS:
            if size == 0:
                raise PacketError(E_INVALID)
            self._change_watchpoint(addr, size, WATCH_KINDS[kind_of_point], insert)
        else:
            return ''
        return 'OK'

    def _change_breakpoint(self, kind: str, addr: int, insert: bool) -> None:
        # A software and a hardware breakpoint at one address share one
        # engine hook; inserting twice is allowed and must change nothing.
        kinds = self.breakpoints.get(addr, set())
        if insert and not kinds:
            self.target.add_breakpoint(addr)
        if insert:
            self.breakpoints[addr] = kinds | {kind}
        elif kind in kinds:
            kinds.discard(kind)
            if not kinds:
                del self.breakpoints[addr]
                self.target.remove_breakpoint(addr)

    def _change_watchpoint(self, addr: int, size: int, kind: str, insert: bool) -> None:
        point = (addr, size, kind)
        if insert and point not in self.watchpoints:
            self._watch_call(self.target.add_watchpoint, point)
            self.watchpoints.add(point)
        elif not insert and point in self.watchpoints:
            self.watchpoints.discard(point)
            self._watch_call(self.target.remove_watchpoint, point)

    @staticmethod
    def _watch_call(call, point: tuple[int, int, str]) -> None:
        # A write watchpoint is called as it always was, so that a target
        # without read watchpoints still serves gdb's `watch`.
        addr, size, kind = point
        if kind == 'write':
            call(addr, size)
        else:
            call(addr, size, kind)

    def _remove_debug_state(self) -> None:
        """Leave no hook behind when gdb goes, however it goes."""
        try:
            for addr in list(self.breakpoints):
                self.target.remove_breakpoint(addr)
            for point in list(self.watchpoints):
                self._watch_call(self.target.remove_watchpoint, point)
        except Exception:  # noqa: BLE001 -- cleanup must not hide why we ended
            log.exception('gdb stub: removing breakpoints failed')
        self.breakpoints.clear()
        self.watchpoints.clear()
        if self.non_stop:
            # Whoever drives the machine next finds every core free, and
            # stopped: the session ends with the machine at rest.
            self.target.held.clear()

    # -- running -----------------------------------------------------------

    def _packet_vCont(self, packet: str) -> str:
        """vCont? lists actions; vCont;s:2;c steps thread 2, vCont;c runs."""
        if packet == 'vCont?':
            # gdb ignores vCont unless both c and C are offered; t (stop a
            # thread) is non-stop's.
            return 'vCont;c;C;s;S;t' if self.non_stop else 'vCont;c;C;s;S'
        if not packet.startswith('vCont;'):
            return ''
        if self.non_stop:
            return self._vcont_non_stop(packet)
        step_cores, run_cores = [], []
        for action in packet[len('vCont;'):].split(';'):
            op, colon, thread = action.partition(':')
            # No thread, or -1, means every thread the action applies to.
            core = self._core_of_thread(thread) if colon and thread != '-1' else None
            if op in ('s', 'c') or (op[:1] in ('S', 'C') and _HEX.fullmatch(op[1:])):
                (step_cores if op[0] in 'sS' else run_cores).append(core)
            else:
                raise PacketError(E_INVALID)
        run = bool(run_cores)
        # All-stop with one stepping thread: "continue the others" lets the
        # others run only as far as the stepping core needs (a target
        # without step_while_others_run keeps them still, as step() does).
        if step_cores:
            core = step_cores[0]
            core = self._default_core() if core is None else core
            others_run = getattr(self.target, 'step_while_others_run', None)
            if run and others_run is not None:
                return self._run(lambda: others_run(core))
            return self._step(core)
        if not run:
            return ''
        # `vCont;c:2` (gdb's `set scheduler-locking on`) runs thread 2 alone,
        # as QEMU does; `vCont;c` runs every core.
        return self._resume(None if None in run_cores else set(run_cores))

    def _packet_b(self, packet: str) -> str:
        """bs: one instruction of the current core backwards; bc: back to the
        previous breakpoint or watchpoint hit (emulator/debug/timetravel.py)."""
        travel = self._travel()
        if travel is None or packet not in ('bs', 'bc'):
            return ''
        if self.non_stop:
            # Going back restores the whole machine: not one core of it.
            raise PacketError(E_INVALID)
        if packet == 'bs':
            # `reverse-stepi` on thread 2 while thread 1 stopped at a breakpoint:
            # gdb first steps thread 1 back over it (Hc1, bs), then thread 2
            # with Hc0, "any thread", meaning the one it shows (see chosen_core).
            chosen, core = self.chosen_core, self.c_core
            core = chosen if core is None else core
            at_start = []

            def step_back() -> StopEvent:
                try:
                    return travel.reverse_step(core)
                except TargetError:     # the core has run nothing since recording began
                    at_start.append(core)
                    return StopEvent(core, 'step')
            reply = self._run(step_back)
            if self.c_core is not None:
                self.chosen_core = chosen   # a step over a breakpoint, not the user's step
        else:
            reply = self._run(travel.reverse_continue)
            at_start = travel.at_start
        if at_start and reply.startswith('T'):
            # gdb's word for "no further back": the start of the history
            reply = reply[:3] + 'replaylog:begin;' + reply[3:]
        return reply

    def _travel(self):
        """The target's history, if it keeps one (reverse execution)."""
        return getattr(self.target, 'travel', None)

    def _default_core(self) -> int:
        return self.last_stop.core if self.c_core is None else self.c_core

    def _packet_c(self, packet: str) -> str:
        """c [addr]: run all cores (from addr on the current core, if given)."""
        self._set_pc(packet[1:])
        return self._vcont_non_stop('vCont;c') if self.non_stop else self._resume()

    def _packet_C(self, packet: str) -> str:
        """C sig[;addr]: as c; signals mean nothing to the machine."""
        self._set_pc(packet[1:].partition(';')[2])
        return self._vcont_non_stop('vCont;c') if self.non_stop else self._resume()

    def _packet_s(self, packet: str) -> str:
        self._set_pc(packet[1:])
        return self._step(self._default_core())

    def _packet_S(self, packet: str) -> str:
        self._set_pc(packet[1:].partition(';')[2])
        return self._step(self._default_core())

    def _set_pc(self, addr: str) -> None:
        if addr:
            self.target.write_register(self._default_core(), 'rip', parse_hex(addr))

    def _step(self, core: int) -> str:
        if self.non_stop:
            return self._vcont_non_stop(f'vCont;s:{self._thread(core)}')
        return self._run(lambda: self.target.step(core))

    def _resume(self, only: set[int] | None = None) -> str:
        """Run every core, or only the cores in `only`."""
        if only is None or only == set(self.target.cores()):
            return self._run(self.target.resume)
        return self._run(lambda: self.target.resume(only=only))

    def _run(self, start: Callable[[], StopEvent]) -> str:
        """Run the machine on a worker thread; here, watch for Ctrl-C.

        The worker pokes a socketpair when it is done, so this thread
        sleeps in select() on "gdb said something" or "the run ended",
        with no polling delay on either.
        """
        outcome: dict[str, object] = {}
        done_r, done_w = socket.socketpair()

        def work() -> None:
            try:
                outcome['event'] = start()
            except Exception as error:  # noqa: BLE001 -- reported to gdb below
                outcome['error'] = error
            finally:
                done_w.send(b'.')

        worker = threading.Thread(target=work, name='gdbstub-run', daemon=True)
        with done_r, done_w:
            worker.start()
            try:
                self._watch_while_running(done_r)
            except BaseException:
                # Ctrl-C at the stub's own terminal (KeyboardInterrupt) ends the
                # program: the worker must leave the emulator before Python shuts
                # down under it, which would crash the process.
                self.target.request_interrupt()
                worker.join()
                raise
            worker.join()
        return self._finish_run(outcome)

    def _watch_while_running(self, done: socket.socket) -> None:
        # A Ctrl-C may have come in the same read as the command that
        # started this run: it is queued behind it, and it is for this run.
        interrupted = self._interrupt_if_asked(already=False)
        while True:
            readable, _, _ = select.select([self.sock, done], [], [])
            if done in readable:
                return
            frames = self._receive_while_running()
            if frames is None:
                # gdb went away mid-run: stop the machine and wait for it
                # (on the worker's socketpair, not on the dead connection).
                if not interrupted:
                    self.target.request_interrupt()
                done.recv(1)
                return
            # gdb sends nothing but Ctrl-C while the machine runs; anything
            # else that came anyway is answered after the stop reply.
            self.pending.extend(frames)
            interrupted = self._interrupt_if_asked(already=interrupted)

    def _interrupt_if_asked(self, already: bool) -> bool:
        """Take the Ctrl-Cs out of `pending`; the first one stops the run."""
        asked = any(f.kind == 'interrupt' for f in self.pending)
        if asked:
            self.pending = deque(f for f in self.pending if f.kind != 'interrupt')
            if not already:   # once is enough
                self.target.request_interrupt()
        return already or asked

    def _receive_while_running(self) -> list[Frame] | None:
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return []
        except OSError:
            data = b''
        if not data:
            self.ended = 'disconnect'
            return None
        return self.reader.feed(data)

    def _finish_run(self, outcome: dict) -> str:
        if 'error' in outcome:
            log.error('gdb stub: the target failed while running: %s', outcome['error'])
            return E_TARGET
        event = outcome['event']
        self.last_stop = event
        self.g_core = self.chosen_core = event.core   # gdb expects the stopped thread selected
        return self.stop_reply(event)

    def stop_reply(self, event: StopEvent) -> str:
        """`T05thread:2;core:1;` and friends, or `W00` when the machine ended."""
        if event.reason == 'exited':
            return self._end_reply(event)
        reply = f'T{event.signal & 0xFF:02x}thread:{self._thread(event.core)};core:{event.core:x};'
        if event.reason == 'watchpoint' and event.addr is not None:
            reply += f'{self._watch_field(event.addr)}:{event.addr:x};'
        elif event.reason == 'breakpoint':
            reply += self._breakpoint_kind(event.core)
        return reply

    def _end_reply(self, event: StopEvent) -> str:
        """The machine can run no more. The first time, say why (an `O`
        packet gdb prints) and report a stop, so that gdb keeps the machine
        to look at; a run asked for after that gets the exit (`W`)."""
        if self.end_told:
            self.exited = True
            return f'W{event.exit_code & 0xFF:02x}'
        self.end_told = True
        reason = getattr(self.target, 'end_reason', None) or 'every core has stopped'
        clean = event.exit_code == 0
        notes = ''.join(f'sprat:   {note}\n' for note in getattr(self.target, 'end_notes', []))
        self._console(f'sprat: the machine has ended: {reason} (exit status '
                      f'{event.exit_code}); its state stays here to inspect, '
                      f'and running it again reports the exit\n{notes}')
        signal = 0 if clean else SIGABRT
        return f'T{signal:02x}thread:{self._thread(event.core)};core:{event.core:x};'

    def _watch_field(self, addr: int) -> str:
        """watch, rwatch or awatch: the kind of the watchpoint `addr` is in."""
        kinds = {kind for start, size, kind in self.watchpoints if start <= addr < start + size}
        for kind in ('access', 'write', 'read'):    # if several cover it, the widest
            if kind in kinds:
                return WATCH_REPLY[kind]
        return 'watch'

    def _breakpoint_kind(self, core: int) -> str:
        # swbreak/hwbreak tell gdb the pc already points at the breakpoint,
        # so it must not back it up by one as it does after a real int3.
        # Only sent if gdb said it understands them.
        try:
            pc = self.target.read_registers(core).get('rip')
        except TargetError:
            return ''
        kinds = self.breakpoints.get(pc, set())
        if '0' in kinds and 'swbreak+' in self.gdb_features:
            return 'swbreak:;'
        if '1' in kinds and 'hwbreak+' in self.gdb_features:
            return 'hwbreak:;'
        return ''

    # -- ending ------------------------------------------------------------

    def _packet_D(self, packet: str) -> str:
        """Detach: gdb leaves, the machine stays (the caller may resume it)."""
        self._remove_debug_state()
        self._send('OK')
        self.ended = 'detach'
        return None

    def _packet_k(self, packet: str) -> None:
        """Kill: no reply is expected; the connection ends."""
        self.target.kill()
        self.ended = 'kill'
        return None

    def _packet_vKill(self, packet: str) -> None:
        self.target.kill()
        self._send('OK')
        self.ended = 'kill'
        return None


    # ======================================================================
    # Non-stop mode (`set non-stop on`; QNonStop:1)
    # ======================================================================
    #
    # In all-stop mode the machine runs only while one packet (c, s, vCont)
    # is being answered. In non-stop mode each core is stopped or running on
    # its own, and the session goes on while some run:
    #
    #   - `stopped` holds the cores gdb knows (or will know) are stopped, and
    #     why. The target holds them (target.held): its scheduler passes over
    #     them, so a core stays at its breakpoint while the others run, and
    #     where each stops is as deterministic as in all-stop.
    #   - vCont gives each core its own action (c, s, or t to stop it) and is
    #     answered OK at once; what happens later is told by notifications.
    #   - While a core runs, run() alternates strictly: a slice of the
    #     machine (SLICE_QUANTA quanta), then the packets gdb sent meanwhile,
    #     if any (select without waiting). When no running core can move
    #     (they wait on a held one, or every core is stopped), the session
    #     blocks on the socket: nothing changes until gdb acts, so the host's
    #     CPU is not spent waiting.
    #   - A stop is queued in `stops`. The first goes to gdb as an
    #     asynchronous `%Stop:T05...` notification; gdb answers `vStopped`
    #     and gets the next queued stop for each, until `OK`. `?` (sent on
    #     connecting) starts that sequence afresh (see _stop_reasons).
    #   - The end of the machine stops every running core (SIGABRT unless the
    #     end was clean). Console output (`O`) is not allowed in non-stop
    #     mode, so gdb hears why from a monitor command (sprat.gdb's stop
    #     hook asks `monitor ended new`). Running a core after that reports
    #     the exit (`W`), as in all-stop.
    #   - Reverse execution goes back with the whole machine: refused here.

    def _can_hold(self) -> bool:
        """Can the target run some cores while others stay stopped?"""
        return all(hasattr(self.target, name)
                   for name in ('held', 'release', 'run_slice', 'stalled'))

    def _packet_QNonStop(self, packet: str) -> str:
        """QNonStop:1 enters non-stop mode (every core stopped), QNonStop:0 leaves it."""
        mode = packet.partition(':')[2]
        if mode not in ('0', '1') or (mode == '1' and not self._can_hold()):
            raise PacketError(E_INVALID)
        cores = self.target.cores()
        if mode == '1' and not self.non_stop:
            self.target.held.update(cores)
            self.stopped = {core: StopEvent(core, 'interrupt', signal=0) for core in cores}
        elif mode == '0' and self.non_stop:
            # All-stop runs every core: nothing may stay held.
            self.target.held.clear()
            self.stopped.clear()
            self.stepping.clear()
        self.stops.clear()
        self.notified = False
        self.non_stop = mode == '1'
        return 'OK'

    def _vcont_non_stop(self, packet: str) -> str:
        """vCont;c:2;t:1 -- each core takes the first action naming it (one
        without a thread names every core). Actions that would change nothing
        are ignored, as the manual asks: c or s of a running core, t of a
        stopped one."""
        chosen: dict[int, str] = {}
        for action in packet[len('vCont;'):].split(';'):
            op, colon, thread = action.partition(':')
            if not (op in ('c', 's', 't') or (op[:1] in ('C', 'S') and _HEX.fullmatch(op[1:]))):
                raise PacketError(E_INVALID)
            named = ([self._core_of_thread(thread)] if colon and thread != '-1'
                     else self.target.cores())
            for core in named:
                chosen.setdefault(core, op[0].lower())
        untold = {event.core for event in self.stops}
        for core, op in chosen.items():
            if op == 't':
                self._stop_cores([core], signal=0)   # the manual's signal for t
            elif core not in self.stopped or core in untold:
                continue                # running, as far as gdb knows
            elif op == 's':
                self._step_alone(core)
            else:
                self._release(core)
        return 'OK'

    def _running_cores(self) -> list[int]:
        return [core for core in self.target.cores() if core not in self.stopped]

    def _cores_running(self) -> bool:
        """Non-stop, and some core is running that may still move."""
        return self.non_stop and not self.idle and bool(self._running_cores())

    def _release(self, core: int) -> None:
        del self.stopped[core]
        self.target.release(core)

    def _step_alone(self, core: int) -> None:
        """One instruction of `core` now; the others run on afterwards. A core
        that cannot move yet (not started) stays held, and its step ends when
        the others have made it able to (see _end_waiting_steps)."""
        cannot_run = getattr(self.target, 'cannot_run', None)
        if cannot_run is not None and cannot_run(core) is not None:
            del self.stopped[core]
            self.stepping.add(core)
            return
        event = self.target.step(core)      # (if it fails, the core stays stopped)
        del self.stopped[core]
        if event.reason == 'exited':
            self._machine_ended(event)
        else:
            self._stopped_now(event)

    def _stop_cores(self, cores, signal: int) -> None:
        for core in cores:
            if core not in self.stopped:
                self.target.held.add(core)
                self.stepping.discard(core)
                self._stopped_now(StopEvent(core, 'interrupt', signal=signal))

    def _stopped_now(self, event: StopEvent) -> None:
        self.stopped[event.core] = event
        self.stops.append(event)

    def _run_between_packets(self) -> None:
        """A slice of the machine, then whatever gdb sent meanwhile (without
        waiting for it). Strictly in turn: a gdb that sends nothing does not
        stop the machine, and a gdb that sends a lot does not starve it."""
        try:
            event = self.target.run_slice(SLICE_QUANTA)
            self._end_waiting_steps()
        except Exception:  # noqa: BLE001 -- as in all-stop's _run: gdb hears, the session goes on
            log.exception('gdb stub: the target failed while running')
            self._stop_cores(self._running_cores(), SIGABRT)
            return
        if event is None:
            # Nothing can move until gdb releases a core: wait for gdb.
            self.idle = self.target.stalled
        elif event.reason == 'exited':
            self._machine_ended(event)
        else:
            self.target.held.add(event.core)
            self.stepping.discard(event.core)
            self._stopped_now(event)
        readable, _, _ = select.select([self.sock], [], [], 0)
        if readable:
            self._receive()

    def _end_waiting_steps(self) -> None:
        cannot_run = getattr(self.target, 'cannot_run', None)
        for core in sorted(self.stepping):
            if cannot_run is None or cannot_run(core) is None:
                self.stepping.discard(core)
                self._stopped_now(StopEvent(core, 'step'))

    def _machine_ended(self, event: StopEvent) -> None:
        """Nothing can run any more: every running core stops (the first
        time), or, if gdb ran it after being told, the machine has exited."""
        running = self._running_cores()
        self.target.held.update(self.target.cores())
        self.stepping.clear()
        if self.end_told:
            self.exited = True
            for core in running:
                self.stopped[core] = StopEvent(core, 'interrupt', signal=0)
            self.stops.append(event)
            return
        self.end_told = True
        signal = 0 if event.exit_code == 0 else SIGABRT
        for core in running or [event.core]:
            self.stopped.pop(core, None)
            self._stopped_now(StopEvent(core, 'interrupt', signal=signal))

    def _non_stop_reply(self, event: StopEvent) -> str:
        if event.reason == 'exited':
            return f'W{event.exit_code & 0xFF:02x}'
        return self.stop_reply(event)

    def _notify_stop(self) -> None:
        """Send the first queued stop as a notification, unless gdb is still
        taking the queue (it will get this one from vStopped)."""
        if self.non_stop and self.stops and not self.notified and self.ended is None:
            body = 'Stop:' + self._non_stop_reply(self.stops[0])
            log.debug('-> %%%s', body[:200])
            self._write(b'%' + frame(body)[1:])     # '%' instead of '$'; never acked
            self.notified = True

    def _packet_vStopped(self, packet: str) -> str:
        """gdb took the stop it was last sent; the next one, or OK when none is left."""
        if not self.non_stop:
            return ''
        if self.notified and self.stops:
            self.stops.popleft()
        return self._next_stop()

    def _stop_reasons(self, packet: str) -> str:
        """? in non-stop (gdb asks once, on connecting): the stopped cores.

        The manual says: every stopped core, the first in this reply, the
        rest by vStopped. But gdb 13 fails an internal assertion when more
        than one thread is stopped as it connects in non-stop mode (a gdb
        bug that others patch gdb for). So one core stays stopped, the
        lowest, and the others are let run. On a sprat machine that changes
        nothing until gdb runs that core: before core 0 starts the other
        cores, they cannot run.
        """
        stopped = sorted(self.stopped)
        for core in stopped[1:]:
            self._release(core)
        self.stops = deque(self.stopped[core] for core in stopped[:1])
        return self._next_stop()

    def _next_stop(self) -> str:
        if not self.stops:
            self.notified = False
            return 'OK'
        self.notified = True
        return self._non_stop_reply(self.stops[0])


# --------------------------------------------------------------------------
# 4. The listening socket
# --------------------------------------------------------------------------

class GdbServer:
    """Listens on 127.0.0.1 and serves one gdb at a time.

    `port=0` picks a free port; `.port` says which. `serve_one()` serves a
    single session and returns how it ended ('detach', 'kill',
    'exited' (gdb left after the machine's end), 'disconnect', or 'closed'
    if close() came first); after 'detach' the
    machine is stopped and the caller decides whether to run it on.
    """

    # How often a waiting accept() looks whether close() was called.
    ACCEPT_POLL_S = 0.2

    def __init__(self, target: Target, host: str = LOOPBACK, port: int = 0) -> None:
        if host != LOOPBACK:
            # Anyone who can connect owns the machine's memory: never listen
            # beyond this host.
            raise SpratError(f'the GDB stub listens on {LOOPBACK} only, not {host}')
        self.target = target
        self._closed = threading.Event()
        self._session_sock: socket.socket | None = None
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((LOOPBACK, port))
        except OSError as error:
            self._listener.close()
            raise SpratError(f'cannot listen for gdb on {LOOPBACK}:{port}: {error.strerror}') from None
        self._listener.listen(1)
        self._listener.settimeout(self.ACCEPT_POLL_S)
        self.port = self._listener.getsockname()[1]

    def serve_one(self) -> str:
        """Wait for gdb, serve it until it goes; return how it ended."""
        sock = self._accept()
        if sock is None:
            return 'closed'
        log.info('gdb connected')
        try:
            reason = Session(sock, self.target).run()
        finally:
            self._session_sock = None
            sock.close()
        log.info('gdb session ended: %s', reason)
        return reason

    def serve_forever(self) -> None:
        """Serve gdb sessions one after another until close()."""
        while not self._closed.is_set():
            self.serve_one()

    def close(self) -> None:
        """Stop listening and end the current session, if any (thread-safe)."""
        self._closed.set()
        sock = self._session_sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)   # wakes the session's recv
            except OSError:
                pass
        self._listener.close()

    def _accept(self) -> socket.socket | None:
        while not self._closed.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return None  # closed under us
            sock.settimeout(SEND_TIMEOUT_S)
            # gdb's packets are tiny and each waits for an answer: send now.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._session_sock = sock
            return sock
        return None

    def __enter__(self) -> GdbServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
