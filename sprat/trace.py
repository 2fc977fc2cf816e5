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
them. `ipi` events (source, target, mode, vector, time) are the
inter-processor interrupts. Other events are counted and otherwise left
alone, so an older sprat can still read a newer trace.

The chart is a message sequence chart: one vertical line per core, modeled
time running down, an arrow per message from the sender at its send time
to the receiver at its receive time, and a dashed arrow per IPI.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from emulator.debug.trace import read_trace
from emulator.devices.apic import DELIVERY_FIXED, DELIVERY_INIT, DELIVERY_STARTUP, IPI_LATENCY_CYCLES
from emulator.errors import SpratError
from sprat.table import format_table

IPI_MODES = {DELIVERY_FIXED: "fixed", DELIVERY_INIT: "INIT", DELIVERY_STARTUP: "STARTUP"}
CHANNEL_HEADERS = ["channel", "from", "to", "sends", "recvs", "words", "latency_min",
                   "latency_mean", "latency_max"]
IPI_HEADERS = ["source", "target", "mode", "vector", "count", "first_time"]
MAX_LABELED_ARROWS = 40        # beyond this, the chart's arrows go unlabeled


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "trace", help="summarise a message trace, or draw it",
        description="Read a trace written by `sprat boot --trace FILE`: print a table of "
                    "messages per channel and of IPIs, or draw a message sequence chart.")
    parser.add_argument("file", metavar="FILE", help="a trace file (JSON lines)")
    from sprat.boot import add_lab_option
    add_lab_option(parser)
    parser.add_argument("--plot", metavar="OUT.png", default=None,
                        help="draw a message sequence chart across cores to this image")
    parser.add_argument("--perfetto", metavar="OUT.json", default=None,
                        help="write a timeline in the Chrome/Perfetto trace-event format "
                             "(open it in ui.perfetto.dev): a track per core with what it "
                             "ran, messages and IPIs as arrows, modeled cycles as time")
    parser.set_defaults(run=run)


def run(args) -> int:
    events = read_trace(args.file)
    print(summary(events))
    if args.plot:
        plot(events, args.plot)
        print(f"sprat: chart written to {args.plot}")
    if args.perfetto:
        from sprat import perfetto
        perfetto.write(events, messages(events), args.perfetto)
        print(f"sprat: timeline written to {args.perfetto} (open it in ui.perfetto.dev)")
    return 0


# --- The summary --------------------------------------------------------------------
def messages(events) -> list[dict]:
    """Each message: its send and, if it arrived, its receive (matched by channel, seq)."""
    pending = {}
    found = []
    for event in events:
        kind = event["event"]
        key = (_key(event.get("channel")), event.get("seq"))
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
    return "\n".join(parts)


def _channel_rows(events) -> list[list]:
    by_channel = defaultdict(lambda: {"sends": 0, "recvs": 0, "words": 0, "pairs": set(),
                                      "latencies": []})
    for event in events:
        if event["event"] in ("send", "recv"):
            row = by_channel[_key(event.get("channel"))]
            row[event["event"] + "s"] += 1
            if event["event"] == "send":
                row["words"] += _word_count(event.get("words"))
                row["pairs"].add((event.get("core"), event.get("peer")))
    for message in messages(events):
        if message["recv"] is not None:
            latency = message["recv"].get("time", 0) - message["send"].get("time", 0)
            by_channel[_key(message["send"].get("channel"))]["latencies"].append(latency)
    rows = []
    for channel in sorted(by_channel, key=str):
        row = by_channel[channel]
        # a send made before the receiver was first seen names no peer
        known = {pair for pair in row["pairs"] if pair[1] is not None}
        pairs = sorted(known or row["pairs"], key=str)
        source, target = pairs[0] if len(pairs) == 1 else ("many", "many") if pairs else ("-", "-")
        latencies = row["latencies"]
        rows.append([channel, source, target, row["sends"], row["recvs"], row["words"],
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
            in sorted(groups.items(), key=lambda item: (item[1][1], str(item[0])))]


def _key(channel):
    """Channels may be numbers or names; lists (from JSON) are not hashable."""
    return tuple(channel) if isinstance(channel, list) else channel


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
                and event.get("target") in column:
            _draw_arrow(axes, column[event["source"]], event["time"], column[event["target"]],
                        event["time"] + IPI_LATENCY_CYCLES, "tab:red", "--",
                        IPI_MODES.get(event.get("mode"), "ipi") if label else None)
    axes.set_xticks(range(len(cores)), [f"core {c}" for c in cores])
    axes.xaxis.tick_top()
    axes.set_xlim(-0.5, len(cores) - 0.5)
    axes.set_ylim(max(times) + IPI_LATENCY_CYCLES, min(times) - IPI_LATENCY_CYCLES // 4)
    axes.set_ylabel("modeled time (cycles)")
    axes.set_title("messages (solid) and IPIs (dashed)", pad=28)
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=110)
    except OSError as error:
        raise SpratError(f"cannot write {path}: {error.strerror}") from None
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
    if send.get("core") not in column:
        return
    start = send["time"]
    text = f"ch {send.get('channel')} #{send.get('seq')}" if label else None
    if recv is None or recv.get("core") not in column:      # never received: a stub
        axes.plot([column[send["core"]]], [start], marker="x", color="tab:blue")
        return
    _draw_arrow(axes, column[send["core"]], start, column[recv["core"]], recv["time"],
                "tab:blue", "-", text)


def _draw_arrow(axes, x0, y0, x1, y1, color, style, text) -> None:
    axes.annotate("", xy=(x1, y1), xytext=(x0, y0),
                  arrowprops={"arrowstyle": "->", "color": color, "linestyle": style})
    if text:
        axes.text((x0 + x1) / 2, (y0 + y1) / 2, text, fontsize=7, color=color,
                  ha="center", va="bottom")
