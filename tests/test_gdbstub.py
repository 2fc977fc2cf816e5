"""The GDB stub, spoken to byte by byte over a real loopback socket.

Each test starts a GdbServer on a FakeTarget (emulator/debug/target.py) in
a background thread and plays gdb's part with `Client`, a few lines that
frame packets and read replies. test_gdb_real.py does the same with the
real gdb; this file covers what gdb would never send: damaged packets,
disconnects at bad moments, and a few thousand packets of noise.
"""

import random
import re
import socket
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from emulator.debug.gdbstub import (PACKET_SIZE, GdbServer, PacketReader, escape_binary,
                                    expand_run_length, frame, target_xml, unescape_binary)
from emulator.debug.target import REGISTERS, FakeTarget, StopEvent, TargetError
from emulator.errors import SpratError

TIMEOUT_S = 10


class Client:
    """Just enough of gdb's side: frame, send, read one reply."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT_S)
        self.buffer = b''
        self.ack_mode = True

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, body: str) -> None:
        self.sock.sendall(frame(body))

    def read_byte(self) -> bytes:
        while not self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError('the stub closed the connection')
            self.buffer += data
        byte, self.buffer = self.buffer[:1], self.buffer[1:]
        return byte

    def read_packet(self, start: bytes = b'$') -> str:
        """The next reply's body, skipping acks; checks the checksum. (A
        notification is framed the same, starting with % instead.)"""
        while self.read_byte() != start:
            pass
        body = b''
        while (byte := self.read_byte()) != b'#':
            body += byte
        digits = self.read_byte() + self.read_byte()
        assert int(digits, 16) == sum(body) & 0xFF, f'reply {body!r} has a bad checksum'
        return body.decode('latin-1')

    def request(self, body: str) -> str:
        """Send a packet; in ack mode the stub must ack it first."""
        self.send(body)
        if self.ack_mode:
            ack = self.read_byte()
            assert ack == b'+', f'expected the stub to ack {body!r}, got {ack!r}'
        return self.read_packet()

    def close(self) -> None:
        self.sock.close()


class Harness:
    """A FakeTarget, a GdbServer on it serving one session, and a Client."""

    def __init__(self, target: FakeTarget) -> None:
        self.target = target
        self.server = GdbServer(target)
        self.result: dict = {}
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.client = Client(self.server.port)

    def _serve(self) -> None:
        try:
            self.result['ended'] = self.server.serve_one()
        except BaseException as error:  # the test asserts there was none
            self.result['error'] = error

    def session_end(self) -> str:
        """How serve_one returned; fails if it raised or never returned."""
        self.thread.join(TIMEOUT_S)
        assert not self.thread.is_alive(), 'the session did not end'
        assert 'error' not in self.result, f'the server raised {self.result.get("error")!r}'
        return self.result['ended']

    def close(self) -> None:
        self.client.close()
        self.server.close()
        self.thread.join(TIMEOUT_S)
        assert not self.thread.is_alive(), 'the server did not stop on close()'
        assert 'error' not in self.result, f'the server raised {self.result.get("error")!r}'


@pytest.fixture
def stub():
    harness = Harness(FakeTarget(ncores=4))
    yield harness
    harness.close()


def make_stub(request_cleanup, **kwargs) -> Harness:
    harness = Harness(FakeTarget(**kwargs))
    request_cleanup(harness.close)
    return harness


def decode_registers(reply: str) -> dict[str, int | None]:
    values, at = {}, 0
    for reg in REGISTERS:
        digits = reply[at:at + reg.bits // 4]
        at += reg.bits // 4
        values[reg.name] = None if 'x' in digits else int.from_bytes(bytes.fromhex(digits), 'little')
    assert at == len(reply), 'the g reply is not as long as the register table says'
    return values


# -- framing, without a socket -------------------------------------------

def test_frame_appends_modulo_256_checksum():
    assert frame('OK') == b'$OK#9a'
    assert frame('') == b'$#00'


def test_reader_reassembles_a_packet_delivered_one_byte_at_a_time():
    reader = PacketReader()
    frames = [f for byte in b'+' + frame('m1000,4') for f in reader.feed(bytes([byte]))]
    assert [(f.kind, f.data) for f in frames] == [('ack', ''), ('packet', 'm1000,4')]


def test_reader_expands_run_length_encoding():
    assert expand_run_length(b'0* ') == b'0000'
    assert expand_run_length(b'ab*"c') == b'abbbbbbc'
    assert PacketReader().feed(b'$0* #%02x' % (sum(b'0* ') & 0xFF))[0].data == '0000'


def test_reader_reports_a_packet_cut_short_by_the_next_one():
    frames = PacketReader().feed(b'$m10' + frame('?'))
    assert [f.kind for f in frames] == ['damaged', 'packet']
    assert frames[1].data == '?'


def test_reader_keeps_memory_bounded_on_an_endless_packet():
    reader = PacketReader(max_body=100)
    reader.feed(b'$' + b'a' * 1_000_000)
    assert len(reader._body) == 100, 'the reader kept more than max_body bytes'
    assert reader.feed(b'#00')[0].kind == 'invalid'
    assert reader.feed(frame('?'))[0].data == '?', 'the reader did not recover'


def test_binary_escape_round_trips_every_byte():
    data = bytes(range(256))
    text = escape_binary(data)
    assert all(c not in text for c in '$#*')
    assert unescape_binary(text) == data


# -- acks and framing over the socket --------------------------------------

def test_damaged_checksum_is_answered_with_nak(stub):
    stub.client.send_raw(b'$g#00')
    assert stub.client.read_byte() == b'-'
    assert stub.client.request('?').startswith('T05')


def test_nak_from_gdb_makes_the_stub_resend_its_reply(stub):
    first = stub.client.request('qC')
    stub.client.send_raw(b'-')
    assert stub.client.read_packet() == first


def test_no_ack_mode_stops_the_acks(stub):
    assert stub.client.request('QStartNoAckMode') == 'OK'
    stub.client.ack_mode = False
    stub.client.send_raw(b'+')  # gdb's ack of the OK: must be ignored
    stub.client.send('qC')
    assert stub.client.read_byte() == b'$', 'no ack expected after QStartNoAckMode'
    stub.client.buffer = b'$' + stub.client.buffer
    assert stub.client.read_packet() == 'QC1'


def test_unknown_packet_gets_the_empty_reply(stub):
    assert stub.client.request('qSomethingNew:1') == ''
    assert stub.client.request('vMustReplyEmpty') == ''
    assert stub.client.request('!') == ''
    assert stub.client.request('question') == '', 'only ? asks for the stop reason'


def test_oversized_packet_is_rejected_not_buffered(stub):
    stub.client.send('m' + '0' * (PACKET_SIZE + 10))
    assert stub.client.read_byte() == b'+'
    assert stub.client.read_packet().startswith('E')
    assert stub.client.request('?').startswith('T05')


# -- queries ---------------------------------------------------------------

def test_qsupported_offers_what_gdb_needs_for_many_cores(stub):
    features = stub.client.request('qSupported:multiprocess+;swbreak+;hwbreak+').split(';')
    assert 'PacketSize=%x' % PACKET_SIZE in features
    for needed in ('qXfer:features:read+', 'vContSupported+', 'QStartNoAckMode+'):
        assert needed in features
    assert stub.client.request('vCont?') == 'vCont;c;C;s;S'


def test_target_description_read_in_pieces_is_valid_amd64_xml(stub):
    document, offset = '', 0
    while True:
        reply = stub.client.request(f'qXfer:features:read:target.xml:{offset:x},80')
        assert reply[0] in 'ml', f'unexpected qXfer reply {reply[:20]!r}'
        chunk = unescape_binary(reply[1:]).decode()
        document += chunk
        offset += len(chunk)
        if reply[0] == 'l':
            break
    assert document == target_xml()
    root = ET.fromstring(document)
    assert root.find('architecture').text == 'i386:x86-64'
    names = [reg.get('name') for reg in root.iter('reg')]
    assert names[:17] == ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp',
                          'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip']
    assert names[17:24] == ['eflags', 'cs', 'ss', 'ds', 'es', 'fs', 'gs']
    assert names == [r.name for r in REGISTERS]


def test_qxfer_of_an_unknown_annex_is_an_error(stub):
    assert stub.client.request('qXfer:features:read:nope.xml:0,100') == 'E00'


def test_question_mark_reports_the_stopped_core_as_a_thread(stub):
    assert re.fullmatch(r'T05thread:1;core:0;', stub.client.request('?'))


def test_each_core_is_a_thread(stub):
    assert stub.client.request('qfThreadInfo') == 'm1,2,3,4'
    assert stub.client.request('qsThreadInfo') == 'l'
    assert stub.client.request('qC') == 'QC1'
    assert stub.client.request('qAttached') == '1'
    assert stub.client.request('T4') == 'OK'
    assert stub.client.request('T5') == 'E03', 'thread 5 would be core 4, which does not exist'


def test_thread_extra_info_names_core_and_ring(stub):
    reply = stub.client.request('qThreadExtraInfo,3')
    assert bytes.fromhex(reply).decode() == 'core 2 ring 3'
    assert bytes.fromhex(stub.client.request('qThreadExtraInfo,1')).decode() == 'core 0 ring 0'


# -- registers ---------------------------------------------------------------

def test_hg_chooses_whose_registers_g_returns(stub):
    for core in range(4):
        stub.target.regs[core]['rax'] = 0x1000 + core
    assert decode_registers(stub.client.request('g'))['rax'] == 0x1000
    assert stub.client.request('Hg3') == 'OK'
    regs = decode_registers(stub.client.request('g'))
    assert regs['rax'] == 0x1002
    assert regs['rip'] == stub.target.regs[2]['rip']
    assert regs['cs'] == 0x2b
    assert stub.client.request('Hg9') == 'E03'


def test_registers_the_target_leaves_out_are_unavailable(stub):
    regs = decode_registers(stub.client.request('g'))
    assert regs['st0'] is None and regs['fctrl'] is None
    assert regs['cr3'] == 0


def test_p_and_P_read_and_write_one_register(stub):
    rip = [r.name for r in REGISTERS].index('rip')
    stub.client.request('Hg2')
    assert stub.client.request(f'P{rip:x}=efbeadde00000000') == 'OK'
    assert stub.target.regs[1]['rip'] == 0xdeadbeef
    assert stub.client.request(f'p{rip:x}') == 'efbeadde00000000'
    assert stub.client.request(f'P{rip:x}=1234') == 'E22', 'a too-short value must be refused'
    assert stub.client.request('p999') == 'E22'


def test_G_writes_only_the_registers_that_changed(stub):
    reply = stub.client.request('g')
    written = []
    original = stub.target.write_register
    stub.target.write_register = lambda core, name, value: (written.append(name),
                                                            original(core, name, value))
    new = '2a' + reply[2:]  # rax = 0x2a
    assert stub.client.request('G' + new) == 'OK'
    assert written == ['rax']
    assert stub.target.regs[0]['rax'] == 0x2a
    assert stub.client.request('G' + new[:-2]) == 'E22'


# -- memory --------------------------------------------------------------------

def test_memory_write_then_read_round_trips(stub):
    assert stub.client.request('M2000,4:deadbeef') == 'OK'
    assert stub.client.request('m2000,4') == 'deadbeef'
    assert stub.target.memory[0x1000:0x1004] == bytes.fromhex('deadbeef')


def test_binary_X_write_handles_escaped_bytes(stub):
    data = b'$#}*\x03\x00\xff'
    assert stub.client.request(f'X3000,{len(data):x}:' + escape_binary(data)) == 'OK'
    assert stub.client.request(f'm3000,{len(data):x}') == data.hex()
    assert stub.client.request('X3000,0:') == 'OK', 'gdb probes X support with length 0'
    assert stub.client.request('X3000,2:a') == 'E22'


def test_unmapped_memory_is_E14_and_a_partial_read_returns_the_mapped_part(stub):
    assert stub.client.request('m0,4') == 'E14'
    assert stub.client.request('M0,1:00') == 'E14'
    end = 0x1000 + len(stub.target.memory)
    assert stub.client.request(f'm{end - 2:x},8') == '9090'


def test_memory_is_read_through_the_selected_core(stub):
    seen = []
    original = stub.target.read_memory
    stub.target.read_memory = lambda core, addr, n: (seen.append(core), original(core, addr, n))[1]
    stub.client.request('Hg4')
    stub.client.request('m1000,1')
    assert seen == [3]


# -- breakpoints, watchpoints, running -------------------------------------------

def test_breakpoint_stops_the_core_that_reaches_it(stub):
    stub.client.request('qSupported:swbreak+;hwbreak+')
    assert stub.client.request('Z0,1105,1') == 'OK'
    assert stub.target.breakpoints == {0x1105}
    assert stub.client.request('vCont;c') == 'T05thread:2;core:1;swbreak:;'
    assert decode_registers(stub.client.request('g'))['rip'] == 0x1105, \
        'after a stop, g must show the core that stopped'
    assert stub.client.request('z0,1105,1') == 'OK'
    assert stub.target.breakpoints == set()


def test_software_and_hardware_breakpoints_share_one_hook(stub):
    stub.client.request('Z0,1200,1')
    stub.client.request('Z1,1200,1')
    stub.client.request('Z0,1200,1')  # inserting twice must be harmless
    stub.client.request('z0,1200,1')
    assert stub.target.breakpoints == {0x1200}, 'the hardware breakpoint is still wanted'
    stub.client.request('z1,1200,1')
    assert stub.target.breakpoints == set()


def test_write_watchpoint_reports_the_address(stub):
    stub.target.memory[0x0] = FakeTarget.STORE  # core 0's first instruction
    stub.target.regs[0].update(rdi=0x3004, rax=0x41)
    assert stub.client.request('Z2,3000,8') == 'OK'
    assert stub.client.request('vCont;c') == 'T05thread:1;core:0;watch:3004;'
    assert stub.target.memory[0x2004] == 0x41
    assert stub.client.request('z2,3000,8') == 'OK'
    assert stub.target.watchpoints == set()


def test_read_and_access_watchpoints_reach_the_target_and_are_reported_by_kind(stub):
    stub.target.memory[0x0] = FakeTarget.STORE
    stub.target.regs[0].update(rdi=0x3004, rax=0x41)
    assert stub.client.request('Z3,3100,8') == 'OK'
    assert stub.client.request('Z4,3000,8') == 'OK'
    assert stub.target.watchpoints == {(0x3100, 8, 'read'), (0x3000, 8, 'access')}
    assert stub.client.request('vCont;c') == 'T05thread:1;core:0;awatch:3004;', \
        'a store into an access watchpoint must be reported as awatch'
    assert stub.client.request('z3,3100,8') == 'OK'
    assert stub.client.request('z4,3000,8') == 'OK'
    assert stub.target.watchpoints == set()


def test_vcont_step_moves_only_the_named_core(stub):
    before = [regs['rip'] for regs in stub.target.regs]
    assert stub.client.request('vCont;s:3;c') == 'T05thread:3;core:2;'
    after = [regs['rip'] for regs in stub.target.regs]
    assert after == [before[0], before[1], before[2] + 1, before[3]]


def test_legacy_s_and_c_follow_hc(stub):
    stub.client.request('Hc2')
    assert stub.client.request('s') == 'T05thread:2;core:1;'
    assert stub.target.regs[1]['rip'] == 0x1101
    stub.client.request('Z0,1010,1')
    assert stub.client.request('c').startswith('T05thread:1;')


def test_bad_vcont_actions_are_refused(stub):
    assert stub.client.request('vCont;s:9') == 'E03'
    assert stub.client.request('vCont;x') == 'E22'


def test_ctrl_c_interrupts_a_running_machine(request):
    harness = make_stub(request.addfinalizer, ncores=2, max_ticks=None)
    for core in range(2):  # every core spins on `jmp $`
        harness.target.memory[0x100 * core:0x100 * core + 2] = b'\xeb\xfe'
    harness.client.send('vCont;c')
    assert harness.client.read_byte() == b'+'
    time.sleep(0.2)
    harness.client.send_raw(b'\x03')
    assert harness.client.read_packet().startswith('T02thread:')


def test_ctrl_c_right_after_continue_is_not_lost(request):
    harness = make_stub(request.addfinalizer, ncores=2, max_ticks=None)
    for core in range(2):
        harness.target.memory[0x100 * core:0x100 * core + 2] = b'\xeb\xfe'
    harness.client.send_raw(frame('vCont;c') + b'\x03')
    assert harness.client.read_byte() == b'+'
    assert harness.client.read_packet().startswith('T02')


def test_machine_end_is_told_with_its_reason_then_reported_as_exit(stub):
    stub.target.memory[0x0] = FakeTarget.HLT
    stub.target.regs[0]['rax'] = 0x2a
    told = bytes.fromhex(stub.client.request('c')[1:]).decode()
    assert 'the machine has ended' in told and 'exit status 42' in told, told
    assert stub.client.read_packet() == 'T06thread:1;core:0;', \
        'the end must first be a stop (SIGABRT for a failure), so the state stays inspectable'
    assert stub.client.request('g'), 'registers must still be readable after the end'
    assert stub.client.request('c') == 'W2a', 'running again after the end reports the exit'


def test_monitor_commands_are_answered_by_the_target(stub):
    def monitor(command):
        if command != 'cycles':
            raise TargetError(f'no monitor command {command!r}')
        return 'core 0: 12 cycles'
    stub.target.monitor = monitor
    assert bytes.fromhex(stub.client.request('qRcmd,' + b'cycles'.hex())) == b'core 0: 12 cycles\n'
    told = stub.client.request('qRcmd,' + b'nonsense'.hex())
    assert bytes.fromhex(told[1:]) == b"no monitor command 'nonsense'\n"
    assert stub.client.read_packet() == 'OK', \
        'a refused monitor command says why and ends there: an error reply adds gdb\'s ' \
        '"Protocol error with Rcmd"'


def test_fault_is_reported_as_sigsegv(stub):
    stub.target.regs[2]['rip'] = 0x10
    assert stub.client.request('vCont;s:3') == 'T0bthread:3;core:2;'


def test_target_failure_costs_one_error_reply_not_the_session(stub):
    def broken(core):
        raise RuntimeError('bug in the machine')
    stub.target.read_registers = broken
    assert stub.client.request('g') == 'E05'
    assert stub.client.request('qfThreadInfo') == 'm1,2,3,4'


# -- ending a session ------------------------------------------------------------

def test_detach_replies_ok_and_removes_breakpoints(stub):
    stub.client.request('Z0,1234,1')
    stub.client.request('Z2,3000,4')
    assert stub.client.request('D') == 'OK'
    assert stub.session_end() == 'detach'
    assert stub.target.breakpoints == set() and stub.target.watchpoints == set()
    assert not stub.target.killed


def test_k_kills_the_target_and_ends_the_session(stub):
    stub.client.send('k')
    assert stub.session_end() == 'kill'
    assert stub.target.killed


def test_vkill_replies_ok(stub):
    assert stub.client.request('vKill;1') == 'OK'
    assert stub.session_end() == 'kill'
    assert stub.target.killed


def test_disconnect_mid_packet_ends_the_session_quietly(stub):
    stub.client.request('Z0,1234,1')
    stub.client.send_raw(b'$m1000,')
    stub.client.close()
    assert stub.session_end() == 'disconnect'
    assert stub.target.breakpoints == set(), 'a vanished gdb must not leave breakpoints behind'


def test_disconnect_while_running_interrupts_the_machine(request):
    harness = make_stub(request.addfinalizer, ncores=2, max_ticks=None)
    harness.target.memory[0:2] = harness.target.memory[0x100:0x102] = b'\xeb\xfe'
    harness.client.send('vCont;c')
    assert harness.client.read_byte() == b'+'
    time.sleep(0.1)
    harness.client.close()
    assert harness.session_end() == 'disconnect'


def test_close_stops_a_server_waiting_for_gdb():
    server = GdbServer(FakeTarget())
    result = {}
    thread = threading.Thread(target=lambda: result.update(ended=server.serve_one()))
    thread.start()
    time.sleep(0.1)
    server.close()
    thread.join(TIMEOUT_S)
    assert result == {'ended': 'closed'}


def test_server_listens_on_loopback_only():
    server = GdbServer(FakeTarget())
    try:
        assert server._listener.getsockname()[0] == '127.0.0.1'
    finally:
        server.close()
    with pytest.raises(SpratError, match='127.0.0.1 only'):
        GdbServer(FakeTarget(), host='0.0.0.0')


def test_stop_event_fills_in_the_usual_signal():
    assert StopEvent(0, 'interrupt').signal == 2
    assert StopEvent(0, 'fault').signal == 11
    assert StopEvent(1, 'breakpoint').signal == 5
    with pytest.raises(ValueError):
        StopEvent(0, 'bored')


def test_fake_target_refuses_unmapped_memory():
    with pytest.raises(TargetError):
        FakeTarget().read_memory(0, 0, 1)


# -- fuzz ------------------------------------------------------------------------

FUZZ_SEED = 20240607
FUZZ_PACKETS = 3000
FUZZ_TIME_LIMIT_S = 60
# Command beginnings, so that fuzzed packets get past the first letter and
# into the handlers. k, D and vKill end the session by design: left out.
FUZZ_PREFIXES = ['g', 'G', 'p', 'P', 'm', 'M', 'X', 'Z0,', 'Z1,', 'Z2,', 'Z3,', 'z0,', 'z2,',
                 'Hg', 'Hc', 'T', 'c', 's', 'C05', 'S05', 'vCont;', 'vCont?', 'vCont;s:', '?',
                 'qXfer:features:read:target.xml:', 'qXfer:', 'qThreadExtraInfo,', 'qSupported:',
                 'qfThreadInfo', 'qC', 'qAttached', 'QStartNoAckMode', 'qOffsets', '']
FUZZ_ALPHABET = b'0123456789abcdefABCDEFxX,;:=-}*$#+\x03 \xff\x00'


def fuzz_stream(rng: random.Random) -> bytes:
    items = []
    for _ in range(FUZZ_PACKETS):
        body = rng.choice(FUZZ_PREFIXES).encode() + bytes(
            rng.choice(FUZZ_ALPHABET) for _ in range(rng.randrange(0, 40)))
        body = body.replace(b'$', b'').replace(b'#', b'')
        kind = rng.random()
        if kind < 0.45:
            items.append(frame(body.decode('latin-1')))        # well formed
        elif kind < 0.6:
            items.append(b'$' + body + b'#%02x' % rng.randrange(256))  # checksum: likely bad
        elif kind < 0.75:
            whole = frame(body.decode('latin-1'))
            items.append(whole[:rng.randrange(1, len(whole))])  # truncated
        else:
            items.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30))))
    stream = b''.join(items)
    # Whatever follows a '$' must not be a session-ending k or D.
    return re.sub(rb'\$[kD]', b'$q', stream)


def test_fuzzed_packets_never_break_the_stub(request, caplog):
    harness = make_stub(request.addfinalizer, ncores=3, max_ticks=50)
    harness.client.sock.settimeout(None)  # the drain thread waits as long as it must
    received = bytearray()
    reader = threading.Thread(target=_drain, args=(harness.client.sock, received), daemon=True)
    reader.start()
    rng = random.Random(FUZZ_SEED)
    stream = fuzz_stream(rng)
    started = time.monotonic()
    at = 0
    while at < len(stream):
        size = rng.randrange(1, 200)
        harness.client.send_raw(stream[at:at + size])
        at += size
    # Then a well-formed '?' and a detach: if the session survived all of
    # the above, it ends now, by our D, with these two replies last.
    harness.client.send_raw(frame('?') + frame('D'))
    harness.thread.join(FUZZ_TIME_LIMIT_S)
    elapsed = time.monotonic() - started
    assert not harness.thread.is_alive(), f'the stub stopped answering ({elapsed:.0f} s)'
    assert harness.session_end() == 'detach', 'the fuzz ended the session before our D'
    reader.join(TIMEOUT_S)
    replies = re.findall(rb'\$([^#$]*)#[0-9a-f]{2}', bytes(received))
    assert len(replies) > 1000, 'the fuzz provoked suspiciously few replies'
    assert re.fullmatch(rb'T[0-9a-f]{2}thread:[0-9a-f]+;[^#]*|W[0-9a-f]{2}', replies[-2]), \
        f'the last ? got {replies[-2]!r}, not a stop reply'
    assert replies[-1] == b'OK'
    errors = [r.getMessage() for r in caplog.records if r.levelname in ('ERROR', 'CRITICAL')]
    assert not errors, f'a handler failed on fuzzed input: {errors[:3]}'
    assert elapsed < FUZZ_TIME_LIMIT_S


def _drain(sock: socket.socket, into: bytearray) -> None:
    try:
        while data := sock.recv(65536):
            into += data
    except OSError:
        pass


# -- non-stop mode ---------------------------------------------------------------

class CountingTarget(FakeTarget):
    """A FakeTarget that counts the slices the stub runs it for."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.slices = 0

    def run_slice(self, quanta):
        self.slices += 1
        return super().run_slice(quanta)


def read_notification(client: Client) -> str:
    """The next `%Stop:...` notification's body (gdb's side never acks them)."""
    return client.read_packet(start=b'%')


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f'never happened: {what}'
        time.sleep(0.01)


SPIN = b'\xeb\xfe'      # jmp $


@pytest.fixture
def non_stop(request):
    """Three cores spinning on `jmp $`, a session in non-stop mode, no acks."""
    target = CountingTarget(ncores=3, max_ticks=None)
    harness = Harness(target)
    request.addfinalizer(harness.close)
    for core in range(3):
        target.write_memory(0, target.regs[core]['rip'] + 4, SPIN)
    assert harness.client.request('QStartNoAckMode') == 'OK'
    harness.client.ack_mode = False
    assert harness.client.request('QNonStop:1') == 'OK'
    return harness


def test_non_stop_shows_one_stopped_core_on_connecting_and_runs_the_others(non_stop):
    client, target = non_stop.client, non_stop.target
    assert client.request('vCont?') == 'vCont;c;C;s;S;t', 'non-stop needs the t action'
    assert client.request('?') == 'T00thread:1;core:0;'
    assert client.request('vStopped') == 'OK'
    wait_for(lambda: target.regs[2]['rip'] == 0x1204, 'core 2 running to its loop')
    assert target.regs[0]['rip'] == 0x1000, 'core 0, reported stopped, must not move'


def test_non_stop_stops_one_core_with_t_and_tells_by_notification(non_stop):
    client, target = non_stop.client, non_stop.target
    client.request('?')
    client.request('vStopped')
    assert client.request('vCont;t:3') == 'OK'
    assert read_notification(client) == 'Stop:T00thread:3;core:2;', \
        'a core stopped by t is reported with signal 0'
    assert client.request('vStopped') == 'OK'
    assert 2 in target.held and 1 not in target.held
    slices = target.slices
    wait_for(lambda: target.slices > slices + 2, 'core 1 running on while core 2 is stopped')


def test_non_stop_breakpoint_stops_only_the_core_that_hits_it(non_stop):
    client, target = non_stop.client, non_stop.target
    client.request('?')                     # cores 1 and 2 start running
    assert client.request('vStopped') == 'OK'
    assert client.request('Z0,1104,1') == 'OK'     # core 1's `jmp $`
    assert read_notification(client) == 'Stop:T05thread:2;core:1;'
    assert client.request('vStopped') == 'OK'
    slices = target.slices
    wait_for(lambda: target.slices > slices + 2, 'the machine running on after the stop')
    assert 1 in target.held and target.regs[1]['rip'] == 0x1104, \
        'the core at the breakpoint must stay there'
    assert client.request('vCont;c:2') == 'OK'
    assert read_notification(client) == 'Stop:T05thread:2;core:1;', \
        'continued, core 1 should go round its loop once and hit the breakpoint again'


def test_non_stop_queues_stops_behind_one_notification(non_stop):
    client = non_stop.client
    client.request('?')
    client.request('vStopped')
    assert client.request('vCont;t') == 'OK'
    assert read_notification(client) == 'Stop:T00thread:2;core:1;'
    assert client.request('vStopped') == 'T00thread:3;core:2;'
    assert client.request('vStopped') == 'OK'


def test_non_stop_step_of_one_core_is_told_by_notification(non_stop):
    client, target = non_stop.client, non_stop.target
    client.request('?')
    client.request('vStopped')
    assert client.request('vCont;s:1') == 'OK'
    assert read_notification(client) == 'Stop:T05thread:1;core:0;'
    assert target.regs[0]['rip'] == 0x1001
    assert client.request('vCont;c:2') == 'OK', 'c of a running core changes nothing'


def test_non_stop_machine_with_every_core_stopped_runs_no_slice(non_stop):
    client, target = non_stop.client, non_stop.target
    client.request('?')
    client.request('vStopped')
    client.request('vCont;t')
    read_notification(client)
    client.request('vStopped')
    assert client.request('vStopped') == 'OK'
    slices = target.slices
    for _ in range(20):
        assert client.request('qC') == 'QC1'
    assert target.slices == slices, 'a machine with every core stopped must not be run'


def test_non_stop_end_stops_every_running_core_then_reports_the_exit(non_stop):
    client, target = non_stop.client, non_stop.target
    target.memory[0] = FakeTarget.HLT       # core 0 ends the machine, cleanly (al = 0)
    client.request('?')
    client.request('vStopped')
    assert client.request('vCont;c:1') == 'OK'
    assert read_notification(client) == 'Stop:T00thread:1;core:0;'
    assert client.request('vStopped') == 'T00thread:2;core:1;'
    assert client.request('vStopped') == 'T00thread:3;core:2;'
    assert client.request('vStopped') == 'OK'
    assert client.request('g'), 'registers must still be readable after the end'
    assert client.request('vCont;c:1') == 'OK'
    assert read_notification(client) == 'Stop:W00', 'running again after the end is the exit'


def test_non_stop_refuses_bad_packets_with_an_error(non_stop):
    client = non_stop.client
    for packet, reply in [('vCont;x', 'E22'), ('vCont;', 'E22'), ('vCont;c:9', 'E03'),
                          ('vCont;t:zz', 'E01'), ('vCont;c:1;q', 'E22'), ('QNonStop:2', 'E22'),
                          ('QNonStop:', 'E22'), ('vCont;C:1', 'E22')]:
        assert client.request(packet) == reply, f'{packet} should be refused with {reply}'
    assert client.request('?') == 'T00thread:1;core:0;', 'the session must go on'


class AllStopOnly:
    """A target that cannot hold some cores while others run."""

    def __init__(self, target) -> None:
        self._target = target

    def __getattr__(self, name):
        if name == 'run_slice':
            raise AttributeError(name)
        return getattr(self._target, name)


def test_non_stop_is_refused_by_a_target_that_cannot_hold_cores(request):
    harness = Harness(AllStopOnly(FakeTarget()))
    request.addfinalizer(harness.close)
    features = harness.client.request('qSupported:swbreak+')
    assert 'QNonStop+' not in features
    assert harness.client.request('QNonStop:1') == 'E22'
    assert harness.client.request('vStopped') == '', 'vStopped is for non-stop mode only'


def test_non_stop_ctrl_c_stops_every_running_core(non_stop):
    client = non_stop.client
    client.request('?')
    client.request('vStopped')
    client.send_raw(b'\x03')
    assert read_notification(client) == 'Stop:T02thread:2;core:1;'
    assert client.request('vStopped') == 'T02thread:3;core:2;'
    assert client.request('vStopped') == 'OK'


def test_non_stop_target_failure_while_running_stops_the_cores_not_the_session(non_stop):
    client, target = non_stop.client, non_stop.target

    def broken(quanta):
        raise RuntimeError('bug in the machine')
    client.request('?')
    assert client.request('vStopped') == 'OK'       # cores 1 and 2 run
    target.run_slice = broken                       # ... and the next slice fails
    assert read_notification(client) == 'Stop:T06thread:2;core:1;'
    assert client.request('vStopped') == 'T06thread:3;core:2;'
    assert client.request('vStopped') == 'OK'
    assert client.request('qC') == 'QC1', 'the session must go on'


class StalledTarget(CountingTarget):
    """Running cores that wait for a stopped one: no slice can move them."""

    def run_slice(self, quanta):
        self.slices += 1
        self.stalled = True
        return None


def test_non_stop_cores_waiting_on_a_stopped_one_are_not_run_in_a_loop(request):
    harness = Harness(StalledTarget(ncores=3))
    request.addfinalizer(harness.close)
    client, target = harness.client, harness.target
    assert client.request('QStartNoAckMode') == 'OK'
    client.ack_mode = False
    assert client.request('QNonStop:1') == 'OK'
    client.request('?')
    client.request('vStopped')          # cores 1 and 2 "run", but cannot move
    slices = target.slices
    time.sleep(0.2)                     # time enough for a busy loop to show itself
    assert client.request('qC') == 'QC1'
    # At most one slice after each packet (vStopped's may come after `slices`
    # was read): a busy loop would have run hundreds.
    assert target.slices <= slices + 2, \
        f'{target.slices - slices} slices run for nothing: the stub spins instead of waiting for gdb'
