"""Fuzz: GDB packets against the stub on the real machine never break it.

tests/test_gdbstub.py sends a stream of random bytes; here each case is a
short gdb session of packets with meaning and hostile arguments: reads
and writes of unmapped, kernel and huge ranges, thread ids that name no
core (0, -1, huge, not hex), registers that do not exist, breakpoints
anywhere, steps and continues, unknown commands, checksums that are
wrong, packets cut short or longer than the stub takes, raw noise. Half
the sessions are in gdb's non-stop mode (QNonStop:1 first), where the
machine runs between packets and stops come as notifications: there,
per-thread vCont actions, vStopped and QNonStop with hostile arguments.
The session then ends the way gdb ends one (detach) or the way a network
does (a disconnect in the middle of a packet).

A case passes when the stub answered every packet it could parse with a
well-formed reply, no handler failed (the stub logs an error when its
last line of defence catches one), and the session ended as asked,
within the time limit: never an exception, never a hang.
"""

import logging
import re
import threading

from hypothesis import event, given, settings, strategies as st

from cpudriver import layout
from emulator.debug.engine import DebugEngine
from emulator.debug.gdbstub import PACKET_SIZE, GdbServer, frame
from kernel.boot import boot_image
from tests.conftest import ROOT
from tests.fuzzing import CASE_SECONDS, examples, time_limit
from tests.test_gdbstub import Client, _drain

IMAGE = ROOT / "images" / "default.lst"
CORES = 2
MAX_CYCLES = 200_000                 # a `c` runs at most this long

ADDRESSES = st.one_of(st.sampled_from([0, layout.KERNEL_BASE, layout.PERCORE_BASE,
                                       layout.USER_BASE, layout.program_base(0),
                                       layout.APIC_BASE, 0xFFF, 0x1FFFFF,
                                       2**47, 2**63, 2**64 - 1, 2**64 - 4096, 2**64, 2**80]),
                      st.integers(0, 2**64 + 16))
LENGTHS = st.sampled_from([0, 1, 8, 4095, 4097, PACKET_SIZE, PACKET_SIZE * 4, 2**32, 2**63,
                           2**64 - 1, 2**64])
THREADS = st.sampled_from(["1", "2", "3", "0", "-1", "ff", "ffffffffffffffff", "1" * 40, "g",
                           "", "p1.1", "p-1.-1", " 1", "1;"])
HEX = st.sampled_from(["", "0", "00", "x", "zz", "0" * 20, "f" * 64, "123", "1,2", "-1"])


def hexa(number):
    return f"{number:x}"


PACKETS = st.one_of(
    st.builds(lambda a, n: f"m{hexa(a)},{hexa(n)}", ADDRESSES, LENGTHS),
    st.builds(lambda a, data: f"M{hexa(a)},{hexa(len(data))}:{data.hex()}", ADDRESSES,
              st.binary(max_size=16)),
    st.builds(lambda a, n, data: f"M{hexa(a)},{hexa(n)}:{data.hex()}", ADDRESSES, LENGTHS,
              st.binary(max_size=8)),
    st.builds(lambda a, n: f"X{hexa(a)},{hexa(n)}:", ADDRESSES, LENGTHS),
    st.builds(lambda op, t: f"H{op}{t}", st.sampled_from("gcx"), THREADS),
    st.builds(lambda t: f"T{t}", THREADS),
    st.builds(lambda t: f"qThreadExtraInfo,{t}", THREADS),
    st.builds(lambda action, t: f"vCont;{action}:{t}", st.sampled_from(["s", "c", "C05", "S05",
                                                                          "x", "t", "r0,1"]), THREADS),
    st.builds(lambda a, t, b, u: f"vCont;{a}:{t};{b}:{u}", st.sampled_from(["c", "s", "t", "C"]),
              THREADS, st.sampled_from(["c", "t", "s", "", "t:"]), THREADS),
    st.sampled_from(["vStopped", "vStopped;", "QNonStop:1", "QNonStop:0", "QNonStop:2",
                     "QNonStop:", "QNonStop", "vCont;t", "vCont;c", "vCont;t;c", "vCont;c;t:1",
                     "vCont;s:1;c", "vCtrlC"]),
    st.builds(lambda number, value: f"p{number}", st.sampled_from(["0", "10", "11", "17", "18", "40",
                                                                    "57", "ff", "ffffffff", "", "x"]),
              HEX),
    st.builds(lambda number, value: f"P{number}={value}", st.sampled_from(["0", "10", "11", "39",
                                                                            "ff", "x", ""]), HEX),
    st.builds(lambda value: f"G{value}", HEX),
    st.builds(lambda kind, a, n, insert: f"{insert}{kind},{hexa(a)},{hexa(n)}",
              st.sampled_from(["0", "1", "2", "3", "4", "9", ""]), ADDRESSES,
              st.sampled_from([0, 1, 2, 4, 8, 16, 2**32, 2**64]), st.sampled_from("Zz")),
    st.builds(lambda offset, length: f"qXfer:features:read:target.xml:{offset},{length}",
              st.sampled_from(["0", "ffff", "f" * 20, "x", "-1"]),
              st.sampled_from(["0", "1", "fff", "f" * 20, "x"])),
    st.sampled_from(["g", "?", "s", "c", "qC", "qfThreadInfo", "qsThreadInfo", "qAttached",
                     "qSupported:multiprocess+;xmlRegisters=i386", "qOffsets", "vCont?",
                     "QStartNoAckMode", "vMustReplyEmpty", "qTStatus", "vFile:open:", "!", "R00",
                     "bc", "A1,1,x", "\x03", "qRcmd,6865", "Qx", "vx;", "", "C05", "S05", "sff",
                     "c0", "i", "I"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="$#}*kD"),
            max_size=40),
)


def damaged(body: str, how: str) -> bytes:
    whole = frame(body)
    if how == "checksum":
        return whole[:-2] + b"%02x" % ((int(whole[-2:], 16) + 1) % 256)
    if how == "truncated":
        return whole[:max(1, len(whole) // 2)]
    if how == "huge":
        return frame("m" + "0" * (PACKET_SIZE * 2))
    return b"\x00\xff$$##}}*" + whole


SENDS = st.one_of(
    *[PACKETS.map(lambda body: frame(body))] * 4,
    st.builds(damaged, PACKETS, st.sampled_from(["checksum", "truncated", "huge", "noise"])),
    st.sampled_from([b"+", b"-", b"\x03", b"$", b"#", b"}"]),
)


class CapturedErrors(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@settings(max_examples=examples(30))
@given(sends=st.lists(SENDS, min_size=1, max_size=12), ending=st.sampled_from(["detach", "cut"]),
       mode=st.sampled_from(["all-stop", "non-stop"]))
def test_a_hostile_gdb_session_never_breaks_the_stub(sends, ending, mode):
    errors = CapturedErrors()
    logging.getLogger("emulator.debug.gdbstub").addHandler(errors)
    system = boot_image(IMAGE, cores=CORES)
    server = GdbServer(DebugEngine(system.machine, max_cycles=MAX_CYCLES))
    result = {}
    worker = threading.Thread(target=lambda: result.update(ended=server.serve_one()), daemon=True)
    worker.start()
    client = Client(server.port)
    received = bytearray()
    reader = threading.Thread(target=_drain, args=(client.sock, received), daemon=True)
    reader.start()
    try:
        with time_limit(CASE_SECONDS, "a gdb session"):
            if mode == "non-stop":
                client.send_raw(frame("QNonStop:1"))
            for data in sends:
                client.send_raw(data)
            if ending == "detach":
                # A truncated packet above may still be open: a '$' starts afresh.
                client.send_raw(frame("?") + frame("D"))
            else:
                client.send_raw(b"$m" + b"0" * 7)
                client.sock.shutdown(2)
            worker.join(CASE_SECONDS)
        assert not worker.is_alive(), "the stub stopped answering"
        expected = {ending if ending == "detach" else "disconnect"}
        assert result.get("ended") in expected, f"the session ended {result.get('ended')!r}"
        assert not errors.messages, f"a handler failed: {errors.messages[:2]}"
        if result["ended"] == "detach":
            reader.join(CASE_SECONDS)
            replies = re.findall(rb"\$([^#$]*)#[0-9a-f]{2}", bytes(received))
            assert replies and replies[-1] == b"OK", "the detach was not answered OK"
        event(f"ended by {result['ended']}")
        event(mode)
    finally:
        logging.getLogger("emulator.debug.gdbstub").removeHandler(errors)
        client.close()
        server.close()
