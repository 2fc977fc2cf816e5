"""`sprat trace`: read a message trace, as a table or as a sequence chart.

    $ sprat boot images/urpc.lst --trace run.trace
    $ sprat trace run.trace
    events: 3 ipi, 200 send, 200 recv, from t=0 to t=81,220
    channel  from  to  sends  recvs  words  latency_min  latency_mean  latency_max
    ...
    $ sprat trace run.trace --plot run.png
    $ sprat trace run.trace --perfetto run.json      (sprat/perfetto.py)

A trace is what emulator/debug/trace.py records: one JSON object per line,
each with an "event" and its fields. Messages are `send` and `recv`
(time, core, peer, channel, words, seq): a send and the receive with the
same channel and seq are one message, whose latency is the time between
them. A send's peer is the core that takes it (null: not known; a trace
of an older sprat leaves it null on the sends made before the receiver was
first seen, and the table and chart take the receiver from the receives).
`ipi` events (source, target, mode, vector, time) are the
inter-processor interrupts. `violation` events (kernel/channel_observer.py)
are broken channel protocol: the summary counts them and shows the first
few in full. Other events are counted and otherwise left
alone, so an older sprat can still read a newer trace.

The chart is a message sequence chart: one vertical line per core, modeled
time running down, an arrow per message from the sender at its send time
to the receiver at its receive time, and a dashed arrow per IPI.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from emulator.debug.trace import channel_name, read_trace
from emulator.devices.apic import DELIVERY_FIXED, DELIVERY_INIT, DELIVERY_STARTUP, IPI_LATENCY_CYCLES
from emulator.errors import SpratError
from emulator.machine import MAX_CORES
from sprat.output import output_name, png_name, save_png
from sprat.table import format_table

IPI_MODES = {DELIVERY_FIXED: "fixed", DELIVERY_INIT: "INIT", DELIVERY_STARTUP: "STARTUP"}
CHANNEL_HEADERS = ["channel", "from", "to", "sends", "recvs", "words", "latency_min",
                   "latency_mean", "latency_max"]
IPI_HEADERS = ["source", "target", "mode", "vector", "count", "first_time"]
VIOLATIONS_SHOWN = 10          # the summary lists the first few in full
MAX_LABELED_ARROWS = 40        # beyond this, the chart's arrows go unlabeled


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "trace", help="summarise a message trace, or draw it",
        description="Read a trace written by `sprat boot --trace FILE`: print a table of "
                    "messages per channel and of IPIs, or draw a message sequence chart.")
    parser.add_argument("file", metavar="FILE", help="a trace file (JSON lines)")
    from sprat.boot import add_lab_option
    add_lab_option(parser)
    parser.add_argument("--plot", metavar="OUT.png", default=None, type=png_name,
                        help="draw a message sequence chart across cores to this image")
    parser.add_argument("--perfetto", metavar="OUT.json", default=None,
                        type=output_name("timeline", ".json"),
                        help="write a timeline in the Chrome/Perfetto trace-event format "
                             "(open it in ui.perfetto.dev): a track per core with what it "
                             "ran, messages and IPIs as arrows, modeled cycles as time")
    parser.set_defaults(run=run)


def run(args) -> int:
    events = read_trace(args.file, check=event_problem)
    print(summary(events))
    if args.plot is not None:
        plot(events, args.plot)
        print(f"sprat: chart written to {args.plot}")
    if args.perfetto is not None:
        from sprat import perfetto
        perfetto.write(events, messages(events), args.perfetto)
        print(f"sprat: timeline written to {args.perfetto} (open it in ui.perfetto.dev)")
    return 0


# --- What an event may hold ---------------------------------------------------------
# A trace is a file anyone can edit: every field read below is checked
# first, so a wrong one is one line naming it rather than a crash.
CORE_FIELDS = ("core", "peer", "source", "target")
NUMBER_FIELDS = ("seq", "mode", "vector")
LATEST_TIME = 1 << 64


def event_problem(event: dict) -> str | None:
    """What is wrong with one event's fields, or None."""
    time = event.get("time")
    if time is not None and not _number(time, 0, LATEST_TIME):
        return f"\"time\" must be a cycle count, 0 to 2^64, not {_short(time)}"
    for field in CORE_FIELDS:
        value = event.get(field)
        if value is not None and not _number(value, 0, MAX_CORES - 1):
            return f"\"{field}\" must be a core number, 0 to {MAX_CORES - 1}, not {_short(value)}"
    for field in NUMBER_FIELDS:
        value = event.get(field)
        if value is not None and not _number(value, -LATEST_TIME, LATEST_TIME):
            return f"\"{field}\" must be a whole number, not {_short(value)}"
    channel = event.get("channel")
    if not (channel is None or _name(channel)
            or isinstance(channel, list) and all(_name(part) for part in channel)):
        return f"\"channel\" must be a number, a name or a list of them, not {_short(channel)}"
    words = event.get("words")
    if words is not None and not isinstance(words, (list, int)):
        return f"\"words\" must be a list of words, not {_short(words)}"
    return None


def _number(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _name(value) -> bool:
    return isinstance(value, str) or _number(value, -LATEST_TIME, LATEST_TIME)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- The summary --------------------------------------------------------------------
def messages(events) -> list[dict]:
    """Each message: its send and, if it arrived, its receive (matched by
    channel, or ring of a page of several: channel_name, and seq)."""
    pending = {}
    found = []
    for event in events:
        kind = event["event"]
        key = (_key(channel_name(event)), event.get("seq"))
        if kind == "send":
            message = {"send": event, "recv": None}
            pending.setdefault(key, []).append(message)
            found.append(message)
        elif kind == "recv" and pending.get(key):
            pending[key].pop(0)["recv"] = event
    return found


def summary(events) -> str:
    kinds = Counter(event["event"] for event in events)
    times = [event["time"] for event in events if isinstance(event.get("time"), int)]
    head = "events: " + (", ".join(f"{count:,} {kind}" for kind, count in sorted(kinds.items()))
                         or "none")
    if times:
        head += f", from t={min(times):,} to t={max(times):,}"
    parts = [head]
    channel_rows = _channel_rows(events)
    if channel_rows:
        parts += ["", format_table(CHANNEL_HEADERS, channel_rows)]
    else:
        parts += ["", "no messages in this trace"]
    ipi_rows = _ipi_rows(events)
    if ipi_rows:
        parts += ["", format_table(IPI_HEADERS, ipi_rows)]
    violations = [event for event in events if event["event"] == "violation"]
    if violations:
        parts += ["", f"channel protocol violations: {len(violations):,}"]
        parts += [f"  {event.get('text', event)}" for event in violations[:VIOLATIONS_SHOWN]]
        if len(violations) > VIOLATIONS_SHOWN:
            parts.append(f"  ... and {len(violations) - VIOLATIONS_SHOWN:,} more")
    return "\n".join(parts)


def _channel_rows(events) -> list[list]:
    by_channel = defaultdict(lambda: {"sends": 0, "recvs": 0, "words": 0, "pairs": set(),
                                      "receivers": set(), "latencies": []})
    for event in events:
        if event["event"] in ("send", "recv"):
            row = by_channel[_ring_key(event)]
            row[event["event"] + "s"] += 1
            if event["event"] == "send":
                row["words"] += _word_count(event.get("words"))
                row["pairs"].add((event.get("core"), event.get("peer")))
            else:
                row["receivers"].add(event.get("core"))
    for message in messages(events):
        sent, received = message["send"].get("time"), (message["recv"] or {}).get("time")
        if sent is not None and received is not None:
            latency = received - sent
            by_channel[_ring_key(message["send"])]["latencies"].append(latency)
    rows = []
    for channel, ring in sorted(by_channel, key=_in_channel_order):
        row = by_channel[channel, ring]
        # a send made before the receiver was first seen names no peer;
        # then the core that took the messages is the other end
        known = {pair for pair in row["pairs"] if pair[1] is not None}
        if not known and len(row["receivers"]) == 1:
            receiver = next(iter(row["receivers"]))
            known = {(sender, receiver) for sender, _ in row["pairs"]}
        pairs = sorted(known or row["pairs"], key=str)
        source, target = pairs[0] if len(pairs) == 1 else ("many", "many") if pairs else ("-", "-")
        latencies = row["latencies"]
        name = str(channel_name({"channel": channel, "ring": ring}))   # a number, not a count
        rows.append([name, source, target, row["sends"], row["recvs"], row["words"],
                     min(latencies) if latencies else None,
                     sum(latencies) / len(latencies) if latencies else None,
                     max(latencies) if latencies else None])
    return rows


def _ipi_rows(events) -> list[list]:
    groups = {}
    for event in events:
        if event["event"] != "ipi":
            continue
        key = (event.get("source"), event.get("target"), event.get("mode"), event.get("vector"))
        count, first = groups.get(key, (0, event.get("time")))
        groups[key] = (count + 1, first)
    return [[source, target, IPI_MODES.get(mode, str(mode)), vector, count, first]
            for (source, target, mode, vector), (count, first)
            in sorted(groups.items(), key=_by_first_time)]


def _by_first_time(item):
    """IPI groups in time order; those of no time last, in a fixed order."""
    key, (_, first) = item
    return (first is None, first or 0, str(key))


def _key(channel):
    """Channels may be numbers or names; lists (from JSON) are not hashable."""
    return tuple(channel) if isinstance(channel, list) else channel


def _ring_key(event) -> tuple:
    """(channel, ring): a ring of a page of several (the monitors') is a
    channel of its own (ring None: the page's one ring)."""
    return _key(event.get("channel")), event.get("ring")


def _in_channel_order(key) -> tuple:
    channel, ring = key
    number = channel if isinstance(channel, int) else None
    return (number is None, number or 0, str(channel), -1 if ring is None else ring)


def _word_count(words) -> int:
    return len(words) if isinstance(words, (list, tuple)) else (1 if words is not None else 0)


# --- The chart ------------------------------------------------------------------------
def plot(events, path) -> None:
    """Draw the message sequence chart: cores across, modeled time down."""
    import matplotlib
    matplotlib.use("Agg")           # a file, never a window
    import matplotlib.pyplot as plt

    cores = _cores_of(events)
    if not cores:
        raise SpratError("the trace has no events between cores to draw")
    column = {core: i for i, core in enumerate(cores)}
    times = [e["time"] for e in events if isinstance(e.get("time"), int)] or [0]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.6 * len(cores)), 8))
    for core, x in column.items():
        axes.axvline(x, color="0.75", linewidth=1, zorder=0)
    sent = messages(events)
    label = len(sent) <= MAX_LABELED_ARROWS
    for message in sent:
        _draw_message(axes, column, message, label)
    for event in events:
        if event["event"] == "ipi" and event.get("source") in column \
                and event.get("target") in column and event.get("time") is not None:
            _draw_arrow(axes, column[event["source"]], event["time"], column[event["target"]],
                        event["time"] + IPI_LATENCY_CYCLES, "tab:red", "--",
                        IPI_MODES.get(event.get("mode"), "ipi") if label else None)
    axes.set_xticks(range(len(cores)), [f"core {c}" for c in cores])
    axes.xaxis.tick_top()
    axes.set_xlim(-0.5, len(cores) - 0.5)
    # floats: matplotlib's arrays would take a time past 2^63 for an object
    axes.set_ylim(float(max(times) + IPI_LATENCY_CYCLES),
                  float(min(times) - IPI_LATENCY_CYCLES // 4))
    axes.set_ylabel("modeled time (cycles)")
    axes.set_title("messages (solid) and IPIs (dashed)", pad=28)
    figure.tight_layout()
    try:
        save_png(figure, path, dpi=110)
    finally:
        plt.close(figure)


def _cores_of(events) -> list[int]:
    cores = set()
    for event in events:
        for field in ("core", "peer", "source", "target"):
            if isinstance(event.get(field), int):
                cores.add(event[field])
    return sorted(cores)


def _draw_message(axes, column, message, label: bool) -> None:
    # The receiver is whoever took it: a send made before the receiver was
    # first seen names no peer, but its receive names the core.
    send, recv = message["send"], message["recv"]
    if send.get("core") not in column or send.get("time") is None \
            or recv is not None and recv.get("time") is None:
        return                  # from a core the chart does not show, or at no time
    start = send["time"]
    text = f"ch {channel_name(send)} #{send.get('seq')}" if label else None
    if recv is None or recv.get("core") not in column:      # never received: a stub
        axes.plot([column[send["core"]]], [float(start)], marker="x", color="tab:blue")
        return
    _draw_arrow(axes, column[send["core"]], start, column[recv["core"]], recv["time"],
                "tab:blue", "-", text)


def _draw_arrow(axes, x0, y0, x1, y1, color, style, text) -> None:
    y0, y1 = float(y0), float(y1)
    axes.annotate("", xy=(x1, y1), xytext=(x0, y0),
                  arrowprops={"arrowstyle": "->", "color": color, "linestyle": style})
    if text:
        axes.text((x0 + x1) / 2, (y0 + y1) / 2, text, fontsize=7, color=color,
                  ha="center", va="bottom")
