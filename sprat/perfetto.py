"""A sprat trace as a timeline: the Chrome/Perfetto trace-event format.

    $ sprat boot images/spawn.lst --trace run.trace
    $ sprat trace run.trace --perfetto run.json      # open it in ui.perfetto.dev

The format is a JSON object whose "traceEvents" are records with a phase
("ph"), a process and thread ("pid", "tid") and a timestamp ("ts", in
microseconds). Here the machine is one process, each core one thread (a
track), and one modeled cycle is shown as one microsecond: what the
timeline measures is cycles.

  slices ("X")   on each core's track, what it ran, from the trace's `run`
                 events (kernel/tracepoints.py): "kernel", "dispatcher N",
                 "idle". A core runs its CPU driver from the moment it starts
                 (time 0 for core 0, its STARTUP IPI for the others) until the
                 first change; the last slice lasts to the end of the trace.
                 Each send, receive and IPI is also a one-cycle slice inside
                 those, so that the arrows below have a slice to bind to.
  flows ("s"/"f") an arrow from the sender's track at its send time to the
                 receiver's at its receive time, one per message (matched by
                 channel and sequence number, as `sprat trace` does), and one
                 per IPI from its source to its target, arriving after the
                 modeled IPI latency.
  metadata ("M") the process's and the tracks' names.

Only what the trace records is drawn: a trace made before `run` events
existed has the message and IPI slices and arrows, and no "what ran".
"""

from __future__ import annotations

import json

from emulator.debug.trace import channel_name
from emulator.devices.apic import DELIVERY_STARTUP, IPI_LATENCY_CYCLES
from emulator.files import write_bytes

PID = 1
MARK = 1        # cycles: the length of a message's or an IPI's own slice


def timeline(events: list[dict], messages: list[dict]) -> dict:
    """The trace-event JSON object for a trace's events (`messages`: each
    message's send and receive, from sprat/trace.py's `messages`)."""
    # The last moment drawn: the last event, or an IPI's arrival after it.
    end = max((e["time"] for e in events if isinstance(e.get("time"), int)),
              default=0) + IPI_LATENCY_CYCLES + MARK
    cores = sorted({c for e in events for c in _cores_of(e)})
    records = [{"ph": "M", "pid": PID, "tid": 0, "name": "process_name",
                "args": {"name": "sprat machine (1 us = 1 modeled cycle)"}}]
    for core in cores:
        records.append({"ph": "M", "pid": PID, "tid": core, "name": "thread_name",
                        "args": {"name": f"core {core}"}})
        records.append({"ph": "M", "pid": PID, "tid": core, "name": "thread_sort_index",
                        "args": {"sort_index": core}})
    records += _run_slices(events, cores, end)
    records += _message_flows(messages)
    records += _ipi_flows(events)
    return {"traceEvents": records, "displayTimeUnit": "ns",
            "otherData": {"source": "sprat trace", "time": "modeled cycles, shown as microseconds"}}


def write(events: list[dict], messages: list[dict], path) -> None:
    """Write the timeline to `path` (an OutputError, one line, if it cannot be)."""
    write_bytes(path, json.dumps(timeline(events, messages)).encode(), "timeline")


# --- What ran ----------------------------------------------------------------------
def _run_slices(events, cores, end) -> list[dict]:
    runs = {core: [] for core in cores}
    for event in events:
        if event["event"] == "run" and event.get("core") in runs and _at(event):
            runs[event["core"]].append(event)
    if not any(runs.values()):
        return []
    starts = _start_times(events)
    slices = []
    for core, changes in runs.items():
        if core not in starts and not changes:
            continue
        at, what = starts.get(core, changes[0]["time"] if changes else end), "kernel"
        for change in changes:
            slices += _slice(core, what, at, change["time"])
            at, what = change["time"], _name(change)
        slices += _slice(core, what, at, end)
    return slices


def _start_times(events) -> dict[int, int]:
    """When each core started: 0 for the first, its STARTUP IPI's arrival for the others."""
    starts = {0: 0}
    for event in events:
        if event["event"] == "ipi" and event.get("mode") == DELIVERY_STARTUP:
            starts.setdefault(event["target"], event["time"] + IPI_LATENCY_CYCLES)
    return starts


def _name(run: dict) -> str:
    if run.get("what") == "user":
        number = run.get("dispatcher")
        return f"dispatcher {number}" if number is not None else "dispatcher"
    return str(run.get("what"))


def _slice(core, name, start, stop) -> list[dict]:
    if stop <= start:
        return []
    return [{"ph": "X", "pid": PID, "tid": core, "ts": start, "dur": stop - start,
             "name": name, "cat": "run"}]


# --- Arrows ------------------------------------------------------------------------------
def _message_flows(messages) -> list[dict]:
    records = []
    for number, message in enumerate(messages, 1):
        send, recv = message["send"], message["recv"]
        if not _at(send):
            continue
        name = f"channel {channel_name(send)} message {send.get('seq')}"
        args = {"words": send.get("words"), "seq": send.get("seq")}
        records.append(_mark(send["core"], send["time"], f"send: {name}", "message", args))
        if recv is None or not _at(recv):
            continue
        records.append(_mark(recv["core"], recv["time"], f"recv: {name}", "message", args))
        records += _flow(f"message-{number}", "message", name, send["core"], send["time"],
                         recv["core"], recv["time"])
    return records


def _ipi_flows(events) -> list[dict]:
    records = []
    for number, event in enumerate(e for e in events if e["event"] == "ipi"):
        source, target, time = event.get("source"), event.get("target"), event.get("time")
        if not all(isinstance(v, int) for v in (source, target, time)):
            continue
        name = f"IPI vector {event.get('vector')} mode {event.get('mode')}"
        arrive = time + IPI_LATENCY_CYCLES
        records.append(_mark(source, time, f"sent {name}", "ipi", {}))
        records.append(_mark(target, arrive, f"got {name}", "ipi", {}))
        records += _flow(f"ipi-{number}", "ipi", name, source, time, target, arrive)
    return records


def _mark(core, time, name, category, args) -> dict:
    return {"ph": "X", "pid": PID, "tid": core, "ts": time, "dur": MARK, "name": name,
            "cat": category, "args": args}


def _flow(ident, category, name, source, start, target, stop) -> list[dict]:
    """An arrow: starts in the slice at `start` on `source`, ends in the one at
    `stop` on `target` ("bp": "e": bound to the enclosing slice)."""
    return [{"ph": "s", "pid": PID, "tid": source, "ts": start, "id": ident, "cat": category,
             "name": name},
            {"ph": "f", "bp": "e", "pid": PID, "tid": target, "ts": stop, "id": ident,
             "cat": category, "name": name}]


def _at(event) -> bool:
    """Does the event say on which core and when? (a trace may come from anywhere)"""
    return isinstance(event.get("core"), int) and isinstance(event.get("time"), int)


def _cores_of(event) -> list[int]:
    keys = ("source", "target") if event["event"] == "ipi" else ("core",)
    return [event[k] for k in keys if isinstance(event.get(k), int)]
