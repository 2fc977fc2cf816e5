"""Benches print tables and JSON rows with the documented fields (not timings)."""

import json

from sprat.cli import main


def test_bench_boot_json_rows_have_the_documented_fields(capsys):
    status = main(["bench", "boot", "--json", "--iterations", "20000"])
    out, _ = capsys.readouterr()
    assert status == 0
    rows = json.loads(out)
    boot = [r for r in rows if "boot_s" in r]
    speed = [r for r in rows if "ratio" in r]
    assert [r["cores"] for r in boot] == [1, 4, 16, 32, 64]
    assert all(set(r) == {"cores", "boot_s", "rss_mb_per_core"} for r in boot)
    assert [r["cores"] for r in speed] == [1, 4]
    for row in speed:
        assert set(row) == {"cores", "mips_sprat", "mips_unicorn", "ratio"}
        assert row["mips_sprat"] > 0 and row["mips_unicorn"] > 0
        assert abs(row["ratio"] - row["mips_sprat"] / row["mips_unicorn"]) < 1e-9
