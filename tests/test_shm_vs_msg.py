"""`sprat bench shm-vs-msg`: the paper's Figure 3 shapes, its JSON rows, its plot.

One small run (1 and 8 clients, 1- and 8-line updates, few updates) is
shared by most tests; the numbers it checks are the shapes the paper
found, with wide margins, not exact values.
"""

import json

import pytest

from sprat.cli import main

SMALL = ["--cores", "1,8", "--lines", "1,8", "--updates", "20", "--warmup", "5"]


def bench_rows(capsys, arguments):
    status = main(["bench", "shm-vs-msg", "--json", *arguments])
    out, err = capsys.readouterr()
    assert status == 0, f"the bench failed: {err}"
    return json.loads(out)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """(rows by (mode, cores, lines), the plot's path) of one small run."""
    import contextlib
    import io
    plot = tmp_path_factory.mktemp("plot") / "shm_vs_msg.png"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = main(["bench", "shm-vs-msg", "--json", "--plot", str(plot), *SMALL])
    assert status == 0, "the small shm-vs-msg run failed"
    rows = json.loads(out.getvalue())
    return {(r["mode"], r["cores"], r["lines"]): r for r in rows}, plot


def cost(rows, mode, cores, lines, field="cycles_per_update"):
    return rows[(mode, cores, lines)][field]


def test_json_rows_have_mode_cores_lines_and_cycles_per_update(small_run):
    rows, _ = small_run
    assert set(rows) == {(mode, cores, lines) for mode in ("shm", "msg")
                         for cores in (1, 8) for lines in (1, 8)}
    for (mode, _, _), row in rows.items():
        assert set(row) == {"mode", "cores", "lines", "cycles_per_update",
                            "server_cycles_per_update"}
        assert row["cycles_per_update"] > 0
        assert (row["server_cycles_per_update"] is None) == (mode == "shm")


def test_shared_memory_cost_grows_with_contention(small_run):
    rows, _ = small_run
    for lines in (1, 8):
        alone, contended = cost(rows, "shm", 1, lines), cost(rows, "shm", 8, lines)
        assert contended > 10 * alone, (
            f"{lines}-line updates cost {alone} cycles on 1 core and only {contended} on 8: "
            f"contention should make them far dearer")


def test_server_cost_per_message_stays_flat_as_clients_grow(small_run):
    rows, _ = small_run
    for lines in (1, 8):
        one = cost(rows, "msg", 1, lines, "server_cycles_per_update")
        eight = cost(rows, "msg", 8, lines, "server_cycles_per_update")
        assert eight < 1.5 * one, (
            f"the server spends {one} cycles per update for 1 client but {eight} for 8: "
            f"a message should cost the same however many clients send")


def test_message_cost_hardly_depends_on_the_lines_updated(small_run):
    rows, _ = small_run
    for cores in (1, 8):
        one, eight = cost(rows, "msg", cores, 1), cost(rows, "msg", cores, 8)
        assert eight < 1.5 * one, (
            f"{cores} clients pay {one} cycles per 1-line update and {eight} per 8-line "
            f"update: the lines stay in the server's cache, so they should cost little")


def test_messages_beat_shared_memory_for_eight_contended_lines(small_run):
    rows, _ = small_run
    shm, msg = cost(rows, "shm", 8, 8), cost(rows, "msg", 8, 8)
    assert msg < shm, f"8 clients: 8-line updates cost {msg} as messages, {shm} in place"


def test_plot_writes_a_png(small_run):
    _, plot = small_run
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{plot} is not a PNG"


def test_the_run_is_deterministic(capsys):
    arguments = ["--cores", "4", "--lines", "2", "--updates", "10", "--warmup", "3"]
    assert bench_rows(capsys, arguments) == bench_rows(capsys, arguments)


def test_too_many_cores_is_a_one_line_error(capsys):
    status = main(["bench", "shm-vs-msg", "--cores", "17"])
    _, err = capsys.readouterr()
    assert status == 2
    assert "17" in err and "16 cores" in err and len(err.strip().splitlines()) == 1
