"""URPC tracepoints: every message sent and received reaches the trace."""

import json

from sprat.cli import main
from tests.conftest import ROOT


def test_boot_trace_records_each_message_once_each_way(tmp_path, capsys):
    image = tmp_path / "stream.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     "module /userland/urpc_stream.S core=0 role=0 channel=5 count=40\n"
                     "module /userland/urpc_stream.S core=1 role=1 channel=5 count=40\n")
    trace = tmp_path / "run.trace"
    assert main(["boot", str(image), "--cores", "2", "--trace", str(trace)]) == 0
    capsys.readouterr()
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    sends = [e for e in events if e["event"] == "send"]
    receives = [e for e in events if e["event"] == "recv"]
    assert [e["seq"] for e in sends] == list(range(40)) == [e["seq"] for e in receives]
    assert all(e["channel"] == 5 and e["core"] == 0 for e in sends)
    assert all(e["channel"] == 5 and e["core"] == 1 for e in receives)
    for sent, received in zip(sends, receives):
        assert sent["words"] == received["words"] == [sent["seq"] + k for k in range(7)]
        assert received["time"] > sent["time"], "a message arrived before it was sent"
    assert sum(e["event"] == "ipi" for e in events) == 2


def test_the_monitors_rings_three_to_a_page_each_have_their_own_ends(tmp_path, capsys):
    """The monitors pack three rings into a channel page: each send and
    receive names its ring, names as its other end the core at the other
    end of that ring (the debugger's msgs showed monitor 0's request to
    core 2 as sent to core 1, a student noticed), and a message is
    matched with its own receive."""
    from sprat.trace import messages
    trace = tmp_path / "run.trace"
    assert main(["boot", str(ROOT / "images" / "shootdown.lst"), "--cores", "4",
                 "--trace", str(trace)]) == 0
    capsys.readouterr()
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    ringed = [e for e in events if e["event"] in ("send", "recv") and "ring" in e]
    assert {e["ring"] for e in ringed} >= {0, 1}, "the monitors' rings are not told apart"
    pages = {e["channel"] for e in ringed}
    assert any(len({e["core"] for e in ringed if e["channel"] == page and e["event"] == "recv"})
               > 1 for page in pages), "no page carried messages to two receivers"
    matched = [m for m in messages(events) if m["recv"] is not None and "ring" in m["send"]]
    assert matched
    for message in matched:
        sent, received = message["send"], message["recv"]
        assert sent["words"] == received["words"], f"{sent} matched with {received}"
        assert sent["peer"] in (None, received["core"]), f"{sent} names the wrong receiver"
        assert received["peer"] in (None, sent["core"]), f"{received} names the wrong sender"
