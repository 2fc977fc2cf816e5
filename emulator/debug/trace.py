"""The message trace: every event the machine reports, one JSON line each.

    recorder = TraceRecorder(open("run.trace", "w"))
    machine.observers.append(recorder)
    machine.run()
    recorder.close()
    events = read_trace("run.trace")     # [{"event": "ipi", "time": 812, ...}, ...]

The machine tells its observers about what crosses between cores
(`machine._notify(event, **fields)`): an `ipi` (source, target, mode,
vector, time) and, from the OS (kernel/tracepoints.py), a `send` or
`recv` (time, core, peer, channel, words, seq; on a page of several
rings, which `ring`: `channel_name` names it) and a `run` (time, core,
what: kernel, user or idle, dispatcher). The recorder writes whatever event
comes, with its fields, so a new kind of event is traced the day something
reports it. Keys are sorted and nothing of the host (no wall-clock time)
goes in: the same run gives the same file.

It knows one thing of messages. A send made before anyone took from its
ring names no peer (the OS does not know the receiver yet): the recorder
holds that send back, with every event after it so that the file stays in
order, until the first receive on the ring names the receiver, and writes
the send with it as its peer. A send whose ring nobody took from by the
end (or held longer than HOLD_LIMIT events) is written with `"peer":
null`: in a trace, null means the receiver is not known. `close()` writes
what is held and closes the file.

`MessageLog` is the in-memory cousin the debugger's `msgs` command reads:
the last few sends and receives on each channel.

Reading a trace back and drawing it is sprat/trace.py's business.
"""

from __future__ import annotations

import copy
import json
from collections import deque

from emulator.errors import SpratError
from emulator.files import TRACE_LIMIT, read_text

MESSAGE_EVENTS = ("send", "recv")
# Events held back behind a send that waits for its receiver, at most (tens
# of megabytes of memory); beyond, the oldest go out as they are.
HOLD_LIMIT = 100_000


def channel_name(event: dict):
    """What a message travels on: its channel, or on a page of several
    rings (the monitors'), "C ring R": each ring has its own ends and
    message numbers."""
    channel, ring = event.get("channel"), event.get("ring")
    return channel if ring is None else f"{channel} ring {ring}"


class TraceRecorder:
    """A machine observer that writes each event as a line of JSON (a send
    that names no peer waits for its receiver: see above)."""

    def __init__(self, stream):
        self.stream = stream
        self.events = 0
        # From the first send that waits for its receiver on: each event as
        # a line, or as a record while it is such a send.
        self.held: deque = deque()
        self.waiting: dict[object, list[dict]] = {}     # channel_name -> its sends that wait

    def __call__(self, event: str, **fields) -> None:
        self.events += 1
        if event == "recv" and self.waiting:
            for send in self.waiting.pop(channel_name(fields), ()):
                send["peer"] = fields.get("core")
        if event == "send" and "peer" in fields and fields["peer"] is None:
            record = {"event": event, **fields}
            self.waiting.setdefault(channel_name(fields), []).append(record)
            self.held.append(record)
        elif self.held:
            self.held.append(_line({"event": event, **fields}))
        else:
            self.stream.write(_line({"event": event, **fields}))
        self._write_held(limit=HOLD_LIMIT)

    def close(self) -> None:
        """Write every event still held (a send nobody took: no peer), then
        close the stream (which may raise, emulator/files.py's OutputFile)."""
        self._write_held(limit=0)
        self.stream.close()

    def _write_held(self, limit: int) -> None:
        """Write the held events up to the first send still waiting for its
        receiver, or down to `limit` held (the sends among them as they are)."""
        while self.held:
            first = self.held[0]
            if isinstance(first, dict):
                if self._waits(first) and len(self.held) <= limit:
                    return
                self._stop_waiting(first)
                first = _line(first)
            self.held.popleft()
            self.stream.write(first)

    def _waits(self, send: dict) -> bool:
        return any(waiting is send for waiting in self.waiting.get(channel_name(send), ()))

    def _stop_waiting(self, send: dict) -> None:
        name = channel_name(send)
        rest = [waiting for waiting in self.waiting.get(name, ()) if waiting is not send]
        if rest:
            self.waiting[name] = rest
        else:
            self.waiting.pop(name, None)


def _line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, default=_plain) + "\n"


class MessageLog:
    """The last `keep` message events (send and recv) of each channel, and,
    for each channel, the last event of each kind (its ends' cores, the
    last message numbers): `latest[channel]["send"]`."""

    def __init__(self, keep: int = 8):
        self.keep = keep
        self.channels: dict[object, deque] = {}
        self.latest: dict[object, dict[str, dict]] = {}

    def __call__(self, event: str, **fields) -> None:
        if event not in MESSAGE_EVENTS:
            return
        channel = channel_name(fields)
        if channel not in self.channels:
            self.channels[channel] = deque(maxlen=self.keep)
        record = {"event": event, **fields}
        if event == "recv":
            # The sends made before the receiver was first seen name no
            # peer: the core that takes them is it.
            for kept in self.channels[channel]:
                if kept["event"] == "send" and kept.get("peer") is None:
                    kept["peer"] = fields.get("core")
        self.channels[channel].append(record)
        self.latest.setdefault(channel, {})[event] = record

    def checkpoint_state(self):        # emulator/checkpoint.py
        return copy.deepcopy(self.channels)

    def restore_state(self, state) -> None:
        self.channels = copy.deepcopy(state)


def read_trace(path, check=None) -> list[dict]:
    """The events of a trace file, in order (SpratError if it is not one).

    `check(event)`, if given, returns what is wrong with an event (a reader
    that uses some fields says what they must hold), or None."""
    text = read_text(path, "trace", limit=TRACE_LIMIT)
    return [_parse_line(line, path, number, check)
            for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _parse_line(line: str, path, number: int, check) -> dict:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        # ValueError: bad JSON, or a number of thousands of digits;
        # RecursionError: arrays nested thousands deep.
        raise SpratError(f"{path}:{number}: not a trace line (JSON expected)") from None
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        raise SpratError(f"{path}:{number}: a trace line needs an \"event\" field")
    problem = check(record) if check is not None else None
    if problem is not None:
        raise SpratError(f"{path}:{number}: {record['event']} event: {problem}")
    return record


def _plain(value):
    """JSON for what is not JSON already: sequences (message words) and enums."""
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if hasattr(value, "value"):
        return value.value
    try:
        return list(value)
    except TypeError:
        return str(value)
