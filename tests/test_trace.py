"""The message trace: recording what the machine reports, and `sprat trace`."""

import json

from emulator.debug.trace import MessageLog, TraceRecorder, read_trace
from sprat import cli
from sprat.trace import messages, summary

from conftest import ROOT

DEFAULT_IMAGE = ROOT / "images" / "default.lst"


def send(time, core, peer, channel, seq, words=(1, 2)):
    return {"event": "send", "time": time, "core": core, "peer": peer, "channel": channel,
            "seq": seq, "words": list(words)}


def recv(time, core, peer, channel, seq, words=(1, 2)):
    return {"event": "recv", "time": time, "core": core, "peer": peer, "channel": channel,
            "seq": seq, "words": list(words)}


def write_trace(path, events):
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_boot_trace_records_every_ipi_with_its_fields(tmp_path, capsys):
    trace = tmp_path / "boot.trace"
    assert cli.main(["boot", "--cores", "4", "--trace", str(trace)]) == 0
    events = read_trace(trace)
    ipis = [e for e in events if e["event"] == "ipi"]
    assert len(ipis) == 6, "INIT and STARTUP for each of cores 1 to 3"
    assert {e["target"] for e in ipis} == {1, 2, 3}
    assert all(set(e) == {"event", "source", "target", "mode", "vector", "time"} for e in ipis)


def test_the_same_boot_gives_the_same_trace(tmp_path, capsys):
    traces = []
    for n in range(2):
        path = tmp_path / f"{n}.trace"
        cli.main(["boot", "--trace", str(path)])
        traces.append(path.read_bytes())
    assert traces[0] == traces[1]


def test_recorder_writes_any_event_with_all_its_fields(tmp_path):
    path = tmp_path / "t.trace"
    with open(path, "w") as stream:
        recorder = TraceRecorder(stream)
        recorder("send", time=5, core=0, peer=1, channel=2, words=(7, 8), seq=1)
        recorder("something_new", time=9, detail="x")
    events = read_trace(path)
    assert events[0] == send(5, 0, 1, 2, 1, (7, 8))
    assert events[1] == {"event": "something_new", "time": 9, "detail": "x"}


def test_message_log_keeps_the_last_messages_of_each_channel():
    log = MessageLog(keep=2)
    for seq in range(5):
        log("send", **{k: v for k, v in send(seq, 0, 1, "a", seq).items() if k != "event"})
    log("ipi", source=0, target=1, mode=0, vector=40, time=3)
    assert [e["seq"] for e in log.channels["a"]] == [3, 4]
    assert list(log.channels) == ["a"]


def test_sends_and_receives_pair_up_by_channel_and_sequence():
    events = [send(10, 0, 1, 3, 0), send(12, 0, 1, 3, 1), recv(40, 1, 0, 3, 0),
              send(15, 2, 1, 4, 0), recv(90, 1, 0, 3, 1)]
    paired = messages(events)
    assert [(m["send"]["seq"], m["recv"] and m["recv"]["time"]) for m in paired] == \
        [(0, 40), (1, 90), (0, None)]
    table = summary(events)
    assert "events: 2 recv, 3 send, from t=10 to t=90" in table
    row3 = next(line for line in table.splitlines() if line.split()[:1] == ["3"])
    assert row3.split() == ["3", "0", "1", "2", "2", "4", "30", "54", "78"]


def test_a_channel_whose_sends_name_no_receiver_shows_the_core_that_took_them():
    # Sends made before the receiver was first seen name no peer (lab 5's
    # waiting.lst fills the ring first): the table's "to" and the debugger's
    # msgs take the receiving core from the receives.
    events = [send(10, 0, None, 3, 0), send(12, 0, None, 3, 1), recv(40, 2, 0, 3, 0)]
    row3 = next(line for line in summary(events).splitlines() if line.split()[:1] == ["3"])
    assert row3.split()[:3] == ["3", "0", "2"]
    log = MessageLog(keep=4)
    for event in events:
        log(event["event"], **{k: v for k, v in event.items() if k != "event"})
    assert [e.get("peer") for e in log.channels[3]] == [2, 2, 0]


def test_trace_command_prints_a_table_and_draws_a_chart(tmp_path, capsys):
    path = write_trace(tmp_path / "m.trace", [
        {"event": "ipi", "source": 0, "target": 1, "mode": 0, "vector": 40, "time": 5},
        send(10, 0, 1, 3, 0), recv(40, 1, 0, 3, 0)])
    chart = tmp_path / "m.png"
    assert cli.main(["trace", str(path), "--plot", str(chart)]) == 0
    out = capsys.readouterr().out
    assert "latency_mean" in out and "fixed" in out
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_broken_trace_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.trace"
    bad.write_text('{"event": "ipi"}\nnot json\n')
    assert cli.main(["trace", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sprat: error: ") and ":2: not a trace line" in err
    assert err.count("\n") == 1
    assert cli.main(["trace", str(tmp_path / "missing.trace")]) == 2


def test_a_trace_names_the_receiver_of_a_send_made_before_the_receiver_was_seen(tmp_path,
                                                                               capsys):
    # spawn.lst's parent sends to the child before the child has taken
    # anything: the OS names no peer then, the file must all the same.
    path = tmp_path / "spawn.trace"
    assert cli.main(["boot", str(ROOT / "images/spawn.lst"), "--trace", str(path)]) == 0
    for message in messages(read_trace(path)):
        send, received = message["send"], message["recv"]
        assert received is not None, f"the message {send} was never received"
        assert send.get("peer") == received["core"], (
            f"the send on channel {send['channel']} at t={send['time']} names receiver "
            f"{send.get('peer')}, but core {received['core']} took it")


def test_the_recorder_fills_in_a_send_when_its_receiver_shows_keeping_the_order(tmp_path):
    path = tmp_path / "t.trace"
    recorder = TraceRecorder(open(path, "w"))
    recorder("send", time=1, core=0, peer=None, channel=3, seq=0, words=(1,))
    recorder("ipi", source=0, target=1, mode=0, vector=40, time=2)
    recorder("send", time=3, core=1, peer=None, channel=4, seq=0, words=(2,))
    recorder("recv", time=4, core=2, peer=0, channel=3, seq=0, words=(1,))
    recorder.close()
    events = read_trace(path)
    assert [(e["event"], e["time"]) for e in events] == \
        [("send", 1), ("ipi", 2), ("send", 3), ("recv", 4)], "events out of their order"
    assert events[0]["peer"] == 2, "the receiver that showed later is the send's peer"
    assert "peer" in events[2] and events[2]["peer"] is None, \
        "a send nobody took by the end says its receiver is unknown (null)"


def test_the_recorder_holds_no_more_than_its_limit_behind_a_waiting_send(tmp_path, monkeypatch):
    from emulator.debug import trace
    monkeypatch.setattr(trace, "HOLD_LIMIT", 3)
    path = tmp_path / "t.trace"

    def written():
        stream.flush()
        return read_trace(path)

    with open(path, "w") as stream:
        recorder = TraceRecorder(stream)
        recorder("send", time=0, core=0, peer=None, channel=3, seq=0, words=(1,))
        for time in (1, 2):
            recorder("run", time=time, core=1, what="idle", dispatcher=None)
        assert written() == [], "within the limit, the send waits for its receiver"
        recorder("run", time=3, core=1, what="idle", dispatcher=None)
        events = written()
        assert [e["time"] for e in events] == [0, 1, 2, 3], \
            f"past the limit of 3 held, the send and what followed it go out: {events}"
        assert events[0]["peer"] is None, "a send written before its receiver showed says null"


def test_the_chart_draws_every_message_even_one_sent_before_its_receiver_was_seen(
        tmp_path, capsys, monkeypatch):
    # A trace whose sends name no receiver (an older sprat's): the chart
    # takes the receiver from the receives.
    from sprat import trace as trace_command
    events = [send(10, 0, None, 20, 0), send(12, 0, None, 20, 1), recv(40, 2, 0, 20, 0),
              recv(50, 2, 0, 20, 1), send(60, 2, None, 21, 0), recv(70, 0, 2, 21, 0)]
    sent = [e for e in events if e["event"] == "send"]
    arrows = []
    real_arrow = trace_command._draw_arrow
    monkeypatch.setattr(trace_command, "_draw_arrow",
                        lambda axes, *rest: (arrows.append(rest[-2]), real_arrow(axes, *rest)))
    trace_command.plot(events, tmp_path / "p.png")
    assert sum(1 for color in arrows if color == "-") == len(sent)


def test_a_breakpoint_on_a_tracepoint_does_not_count_the_message_twice(tmp_path, capsys):
    script = tmp_path / "dup.txt"
    script.write_text("break urpc_send_commit core 0\ncontinue\ncontinue\nmsgs\n")
    assert cli.main(["debug", str(ROOT / "images/spawn.lst"), "--script", str(script)]) == 0
    out = capsys.readouterr().out.split("(sprat) msgs", 1)[1]
    assert out.count("send core 0") == 1, out
