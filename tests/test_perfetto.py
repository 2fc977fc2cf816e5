"""`sprat trace FILE --perfetto OUT.json`: a timeline ui.perfetto.dev opens.

The spawn image is booted with --trace, its trace exported, and the JSON
checked against the trace-event format's rules (phases, timestamps,
complete slices that nest, flows whose two ends match and bind to a
slice) and against what happened: a track per core, what each ran, an
arrow per message and per IPI.
"""

import json
from collections import defaultdict

import pytest

from sprat import cli
from conftest import ROOT

PHASES = {"X", "M", "s", "f"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("perfetto")
    trace, out = folder / "spawn.trace", folder / "spawn.json"
    assert cli.main(["boot", str(ROOT / "images" / "spawn.lst"), "--trace", str(trace)]) == 0
    assert cli.main(["trace", str(trace), "--perfetto", str(out)]) == 0
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    return json.loads(out.read_text()), events


def test_every_record_follows_the_trace_event_format(exported):
    document, _ = exported
    records = document["traceEvents"]
    assert records, "the timeline is empty"
    for record in records:
        assert record["ph"] in PHASES, f"unknown phase: {record}"
        assert isinstance(record["pid"], int) and isinstance(record["tid"], int), record
        assert isinstance(record["name"], str), record
        if record["ph"] != "M":
            assert isinstance(record["ts"], (int, float)) and record["ts"] >= 0, record
        if record["ph"] == "X":
            assert isinstance(record["dur"], (int, float)) and record["dur"] > 0, record


def test_each_core_is_a_named_track(exported):
    document, _ = exported
    names = {r["tid"]: r["args"]["name"] for r in document["traceEvents"]
             if r["ph"] == "M" and r["name"] == "thread_name"}
    assert names == {n: f"core {n}" for n in range(4)}, names


def test_slices_on_a_track_nest(exported):
    document, _ = exported
    by_track = defaultdict(list)
    for record in document["traceEvents"]:
        if record["ph"] == "X":
            by_track[record["tid"]].append((record["ts"], -record["dur"], record))
    for track, slices in by_track.items():
        open_ends = []
        for start, negative, record in sorted(slices, key=lambda s: s[:2]):
            stop = start - negative
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            assert not open_ends or stop <= open_ends[-1], \
                f"core {track}: {record['name']} at {start} overlaps the slice around it"
            open_ends.append(stop)


def test_what_each_core_ran_is_on_its_track(exported):
    document, _ = exported
    ran = defaultdict(set)
    for record in document["traceEvents"]:
        if record["ph"] == "X" and record["cat"] == "run":
            ran[record["tid"]].add(record["name"])
    assert {"kernel", "dispatcher 0", "idle"} <= ran[0], ran[0]
    assert {"kernel", "dispatcher 0", "idle"} <= ran[2], \
        f"core 2 runs the spawned child as a dispatcher: {ran[2]}"


def test_messages_and_ipis_are_flows_that_bind_to_slices(exported):
    document, events = exported
    records = document["traceEvents"]
    starts = {r["id"]: r for r in records if r["ph"] == "s"}
    ends = {r["id"]: r for r in records if r["ph"] == "f"}
    assert starts.keys() == ends.keys(), "every arrow needs a start and an end"
    slices = defaultdict(list)
    for record in records:
        if record["ph"] == "X":
            slices[record["tid"]].append((record["ts"], record["ts"] + record["dur"]))
    for ident, start in starts.items():
        end = ends[ident]
        assert (start["cat"], start["name"]) == (end["cat"], end["name"]), ident
        assert end["bp"] == "e" and end["ts"] >= start["ts"], ident
        for point in (start, end):
            assert any(a <= point["ts"] < b for a, b in slices[point["tid"]]), \
                f"the arrow {ident} has no slice to bind to on core {point['tid']}"
    messages = sorted((s["tid"], ends[i]["tid"], s["name"]) for i, s in starts.items()
                      if s["cat"] == "message")
    assert messages == [(0, 2, "channel 20 message 0"), (2, 0, "channel 21 message 0")], messages
    ipis = [s for s in starts.values() if s["cat"] == "ipi"]
    assert len(ipis) == sum(e["event"] == "ipi" for e in events) > 0


def test_a_perfetto_file_that_cannot_be_written_is_one_line(tmp_path, capsys):
    trace = tmp_path / "t.trace"
    trace.write_text('{"event": "send", "time": 1, "core": 0, "channel": 1, "seq": 0}\n')
    try:
        status = cli.main(["trace", str(trace), "--perfetto", str(tmp_path / "no" / "out.json")])
    except SystemExit as exited:        # argparse refuses the name itself
        status = exited.code
    error = capsys.readouterr().err
    assert status != 0 and "no such folder" in error and len(error.strip().splitlines()) == 1, error
