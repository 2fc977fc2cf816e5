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
