"""The progress bar: shown on a terminal, never under cron, with --json, or into a pipe.

The real ``outreach`` runs in a subprocess whose stderr is a pseudo-terminal, as when an operator
runs it by hand, or a pipe, as under cron.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")

N = 30


def _shop(p):
    p.customers("\n".join(f"c{i},Name{i},F,c{i}@example.com,,UTC,en,yes,no," for i in range(N)))
    p.campaign("news", '''
        rule = "newsletter"
        schedule = "0 9 * * *"
        start = "2026-11-01"
        channels = ["email"]
        [email]
        subject = "News"
        body = "Hello {{ customer.first_name }}"
    ''')
    return p


def _run(p, *args: str, terminal: bool) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``outreach ARGS`` with stderr on a terminal or a pipe."""
    env = {**os.environ, **p.environ, "COLUMNS": "120", "TERM": "xterm-256color"}
    env.pop("OUTREACH_CONFIG", None)
    env.pop("CI", None)  # rich treats CI as a terminal that cannot redraw; cron has no CI either
    if not terminal:
        proc = subprocess.run([sys.executable, "-m", "outreach", *args], cwd=p.root, env=env,
                              capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr
    leader, follower = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the follower side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "outreach", *args], cwd=p.root, env=env,
                              stdout=subprocess.PIPE, stderr=follower, text=True, timeout=120)
    finally:
        os.close(follower)
        reader.join(timeout=10)
        os.close(leader)
    return proc.returncode, proc.stdout, b"".join(chunks).decode("utf-8", "replace")


def test_a_run_on_a_terminal_shows_a_bar_per_stage_with_totals(sqlite_project):
    p = _shop(sqlite_project)

    code, out, err = _run(p, "run", "--now", "2026-11-24T10:00", terminal=True)

    assert code == 0, err
    assert "planning" in err and "sending" in err
    assert f"{N}/{N}" in err  # customers planned, out of the count read from the file
    assert "━" in err  # the bar itself
    assert "news" in out  # the report still goes to stdout


def test_no_progress_under_cron_or_with_json(sqlite_project):
    p = _shop(sqlite_project)

    code, out, err = _run(p, "run", "--now", "2026-11-24T10:00", terminal=False)
    assert code == 0 and "planning" not in err and "━" not in err

    code, out, err = _run(p, "plan", "--json", "--now", "2026-11-24T10:00", terminal=True)
    assert code == 0 and "planning" not in err and "━" not in err


def test_dispatch_on_a_terminal_shows_messages_sent(sqlite_project):
    p = _shop(sqlite_project)
    assert _run(p, "run", "--no-send", "--now", "2026-11-24T10:00", terminal=False)[0] == 0

    code, out, err = _run(p, "dispatch", "--now", "2026-11-24T10:00", terminal=True)

    assert code == 0, err
    assert "sending" in err and f"{N}/{N}" in err


def test_the_customers_file_count_is_a_hint_from_its_lines(tmp_path):
    from outreach.sources.csv_source import CSVSource

    path = tmp_path / "customers.csv"
    path.write_text("id,email\nc1,a@example.com\nc2,b@example.com")  # no final newline
    assert CSVSource({"customers": str(path)}, tmp_path, "UTC").count_hint() == 2
    path.write_text("id,email\n")
    assert CSVSource({"customers": str(path)}, tmp_path, "UTC").count_hint() == 0
    assert CSVSource({"customers": str(tmp_path / "gone.csv")}, tmp_path, "UTC").count_hint() is None
