"""How long `outreach report` takes for 90 days of a ledger of 10,000,000 messages.

    python bench/report.py [--messages 10000000] [--days 365] [--report-days 90]
                           [--backend sqlite|postgresql|both] [--pg-url URL] [--repeat 3] [--small]

Builds the ledger set-wise (a few INSERT … SELECT over a generated series, not row by row):
messages spread evenly over ``--days`` across four campaigns (a fifth by SMS), a refusal for one
candidate in ten, and the providers' delivery events (delivered or bounced for every message sent,
an open for one email in three, a machine open for one in seven, a click for one in fifteen, a
complaint for one in two thousand). Then times the real `outreach report --json` over the last
``--report-days`` (the command's wall time, start-up included, and the figures' queries alone,
in-process), median of ``--repeat`` runs. The target is 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUTREACH, figure, machine_line, run_measured  # noqa: E402

DAY = 86_400
START = 1_764_547_200  # 2025-12-01T00:00Z: the ledger's first planned message
CAMPAIGNS = ("news", "win-back", "thanks", "birthday")
CHUNK = 1_000_000


def _campaign(name: str) -> str:
    return f'''name = "{name}"
rule = "newsletter"
schedule = "0 9 * * *"
channels = ["email", "sms"]
[email]
subject = "Hello {{{{ customer.first_name }}}}"
body = "Hi."
[sms]
body = "Hi {{{{ customer.first_name }}}}"
'''


def project(folder: Path, url: str) -> Path:
    """A project whose four campaigns are the ledger's (the report reads only the ledger)."""
    (folder / "campaigns").mkdir(parents=True, exist_ok=True)
    (folder / "customers.csv").write_text("id,first_name,email,consent_email\nc0,Ani,a@example.com,yes\n")
    (folder / "outreach.toml").write_text(f'''timezone = "America/Los_Angeles"
ledger = "{url}"
[audience]
source = "csv"
customers = "customers.csv"
[channels.email]
plugin = "outbox-email"
path = "outbox/email"
[channels.sms]
plugin = "outbox-sms"
path = "outbox/sms"
''')
    for name in CAMPAIGNS:
        (folder / "campaigns" / f"{name}.toml").write_text(_campaign(name))
    return folder


def _series(is_sqlite: bool, lo: int, hi: int) -> str:
    if is_sqlite:
        return (f"(WITH RECURSIVE s(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM s WHERE i < {hi - 1}) "
                "SELECT i FROM s)")
    return f"(SELECT generate_series({lo}, {hi - 1}) AS i)"


def build(url: str, n: int, days: int) -> None:
    """Fill the ledger at ``url`` with ``n`` messages over ``days`` days, set-wise."""
    from sqlalchemy import text

    from outreach.ledger import Ledger

    ledger = Ledger(url)
    cat = "||"  # string concatenation, on both databases
    step = days * DAY / n
    t0 = time.perf_counter()
    try:
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            s = _series(ledger.is_sqlite, lo, hi)
            at = f"({START} + CAST(i * {step} AS BIGINT))"
            camp = "CASE i % 4 " + " ".join(f"WHEN {k} THEN '{c}'" for k, c in enumerate(CAMPAIGNS)) + " END"
            state = ("CASE WHEN i % 50 = 1 THEN 'failed' WHEN i % 97 = 2 THEN 'unknown' "
                     "WHEN i % 31 = 3 THEN 'deferred' ELSE 'sent' END")
            with ledger.engine.begin() as conn:
                conn.execute(text(
                    "INSERT INTO messages (key, campaign, version_id, customer_id, channel, address, "
                    "name, locale, variables, category, priority, state, not_before, due_at, attempts, "
                    "segments, created_at, sent_at, updated_at, run_id) "
                    f"SELECT 'k' {cat} CAST(i AS VARCHAR(20)), {camp}, 1, "
                    f"'c' {cat} CAST(i % 1000000 AS VARCHAR(20)), "
                    "CASE WHEN i % 5 = 0 THEN 'sms' ELSE 'email' END, "
                    f"'c' {cat} CAST(i % 1000000 AS VARCHAR(20)) {cat} '@example.com', 'Ani', 'en', "
                    "'{\"customer\":{\"first_name\":\"Ani\"}}', 'marketing', 10, "
                    f"{state}, {at}, {at}, 1, CASE WHEN i % 5 = 0 THEN 1 END, {at}, {at}, {at}, 'bench' "
                    f"FROM {s} q"))
                conn.execute(text(
                    "INSERT INTO skips (key, campaign, customer_id, outcome, reason, decided_at) "
                    f"SELECT 'r' {cat} CAST(i AS VARCHAR(20)), {camp}, "
                    f"'c' {cat} CAST(i % 1000000 AS VARCHAR(20)), "
                    "CASE i % 3 WHEN 0 THEN 'capped' WHEN 1 THEN 'skipped' ELSE 'suppressed' END, "
                    "CASE i % 3 WHEN 0 THEN 'cap of 3 in 7d reached' WHEN 1 THEN 'no consent for email' "
                    f"ELSE 'suppressed: bounce' END, {at} FROM {s} q WHERE i % 10 = 7"))
                for kind, where, machine in (
                        ("delivered", "i % 20 <> 0", 0), ("bounce", "i % 20 = 0", 0),
                        ("open", "i % 5 <> 0 AND i % 3 = 0", 0), ("open", "i % 5 <> 0 AND i % 7 = 0", 1),
                        ("click", "i % 5 <> 0 AND i % 15 = 0", 0),
                        ("spamreport", "i % 5 <> 0 AND i % 2000 = 4", 0)):
                    conn.execute(text(
                        "INSERT INTO delivery_events (message_key, provider, provider_event_id, kind, "
                        "detail, machine_open, occurred_at, received_at, settled) "
                        f"SELECT 'k' {cat} CAST(i AS VARCHAR(20)), "
                        "CASE WHEN i % 5 = 0 THEN 'twilio' ELSE 'sendgrid' END, "
                        f"'{kind}{machine}-' {cat} CAST(i AS VARCHAR(20)), '{kind}', '', {machine}, "
                        f"{at} + 60, {at} + 61, 0 FROM {s} q "
                        f"WHERE {where} AND NOT (i % 50 = 1 OR i % 97 = 2 OR i % 31 = 3)"))
            print(f"  built {hi:,} messages ({time.perf_counter() - t0:.0f} s)", flush=True)
        with ledger.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    finally:
        ledger.close()


def _day(epoch: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).date().isoformat()


def measure(folder: Path, url: str, n: int, days: int, report_days: int,
            repeat: int) -> tuple[float, float, float]:
    """(median wall s of the command, median s of build_report in-process, rows of the window)."""
    from outreach.config import load_project
    from outreach.ledger import Ledger
    from outreach.plugins import get_plugins
    from outreach.reporting import Window, build_report

    until = START + days * DAY
    since = until - report_days * DAY
    args = [OUTREACH, "report", "--json", "--since", _day(since), "--until", _day(until - DAY)]
    walls, inner = [], []
    for _ in range(repeat):
        wall, _, code, out, err = run_measured(args, cwd=folder, env={**os.environ})
        if code != 0:
            raise SystemExit(f"outreach report failed ({code}): {err}")
        walls.append(wall)
    proj = load_project(folder / "outreach.toml", get_plugins())
    kinds = {n: ch.cls.address for n, ch in proj.channels.items()}
    ledger = Ledger(proj.ledger_url)
    try:
        for _ in range(repeat):
            t = time.perf_counter()
            report = build_report(ledger, Window(since, until, proj.tz), proj.campaigns, kinds,
                                  None, until)
            inner.append(time.perf_counter() - t)
    finally:
        ledger.close()
    planned = sum(t["planned"] for t in report["totals"])
    return statistics.median(walls), statistics.median(inner), planned


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=10_000_000)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--report-days", type=int, default=90)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--pg-url", default=os.environ.get("OUTREACH_BENCH_POSTGRES",
                                                      "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--small", action="store_true", help="a tiny run for CI (20,000 messages)")
    p.add_argument("--keep", type=Path, help="build (or reuse) the ledgers in this folder")
    a = p.parse_args(argv)
    n = 20_000 if a.small else a.messages
    print(machine_line(), flush=True)
    backends = ["sqlite", "postgresql"] if a.backend == "both" else [a.backend]
    if a.small and a.backend == "both":
        backends = ["sqlite"]
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        base = a.keep or Path(tmp)
        for backend in backends:
            folder = base / f"report-{backend}-{n}"
            fresh = not folder.exists()
            if backend == "sqlite":
                url = f"sqlite:///{folder / 'outreach.db'}"
            else:
                url = _pg_schema(a.pg_url, f"bench_report_{n}", fresh)
            project(folder, url)
            if fresh:
                build(url, n, a.days)
            wall, inner, planned = measure(folder, url, n, a.days, a.report_days, a.repeat)
            if backend == "postgresql" and a.keep is None:
                _drop_schema(a.pg_url, f"bench_report_{n}")
            figures.append(figure(f"report_{backend}", wall, "s", "<= 2 s", messages=n,
                                  in_window=planned, queries_s=inner))
            print(f"  ({planned:,} messages in the {a.report_days} days; the queries alone: "
                  f"{inner:.2f} s)", flush=True)
    return figures


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _pg_schema(url: str, schema: str, fresh: bool) -> str:
    """A URL whose search_path is ``schema`` (made anew when ``fresh``)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


if __name__ == "__main__":
    main()
