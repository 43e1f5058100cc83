"""The bench commands run at a tiny size and print their figure (no timing is asserted: CI machines
differ; the figures themselves are in the README, measured with bench/run_all.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _run(*args: str, timeout: float = 120) -> str:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                         cwd=BENCH.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_profile_plan_writes_a_profile(tmp_path):
    out = tmp_path / "plan.txt"
    _run(str(BENCH / "profile_plan.py"), "--small", "--data", str(tmp_path), "--out", str(out))
    assert "cProfile of `outreach run --dry-run`" in out.read_text()


def _figures(stdout: str) -> list[dict]:
    return [json.loads(line.split(" ", 1)[1]) for line in stdout.splitlines()
            if line.startswith("@@figure ")]


def test_generate_writes_a_complete_project(tmp_path):
    out = _run(str(BENCH / "generate.py"), "--customers", "300", "--ledger-messages", "200",
               "--out", str(tmp_path / "p"))
    assert json.loads(out.splitlines()[-1])["ledger_messages"] == 200
    p = tmp_path / "p"
    assert (p / "outreach.toml").is_file() and (p / "outreach.db").is_file()
    assert len((p / "data" / "customers.csv").read_text(encoding="utf-8").splitlines()) == 301
    assert len(list((p / "campaigns").glob("*.toml"))) == 4


@pytest.mark.parametrize("script, extra", [
    ("plan.py", ["--data"]),
    ("incremental.py", ["--data"]),
    ("outbox_write.py", []),
    ("dispatch_rate.py", []),
    ("dispatch_twilio.py", []),
    ("dispatch_sendgrid.py", []),
    ("versus_loop.py", []),
    ("report.py", []),
    ("webhooks.py", []),
])
def test_bench_command_prints_its_figure(script, extra, tmp_path):
    args = [str(BENCH / script), "--small", *extra]
    if extra == ["--data"]:
        args.append(str(tmp_path))
    stdout = _run(*args)
    assert "machine:" in stdout
    figures = _figures(stdout)
    assert figures, stdout
    for fig in figures:
        assert fig["value"] == fig["value"] and fig["value"] > 0, fig  # a number, not NaN or 0


def test_the_sql_source_bench_prints_its_figures(pg_url, tmp_path):
    """bench/sql_source.py on the real PostgreSQL (its schemas are its own, dropped after)."""
    base = pg_url.split("?", 1)[0]
    stdout = _run(str(BENCH / "sql_source.py"), "--small", "--data", str(tmp_path),
                  "--pg-url", base, timeout=600)
    names = {f["figure"]: f for f in _figures(stdout)}
    assert names["sql_incremental_rows_read_20000"]["value"] == 1601, stdout
    assert {"sql_plan_time_ratio_2000", "sql_plan_peak_ratio_2000"} <= set(names)
