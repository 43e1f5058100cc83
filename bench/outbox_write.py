"""Writing the outbox: planned messages into the SQLite ledger, in the planner's batches.

    python bench/outbox_write.py [--messages 300000] [--batch 2000] [--ledger URL] [--small]

Rows are shaped exactly as the planner writes them (``Ledger.insert_messages``: one
``INSERT … ON CONFLICT (key) DO NOTHING`` executemany'd per batch, each batch one transaction), into
a ledger that already holds as many messages (so the unique-key and secondary indexes are
realistic). Besides the rate, the CPU time of this process per message is printed: steadier than
wall time on a shared machine. Target: at least 150,000 messages/s into SQLite.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import figure, machine_line  # noqa: E402


def rows(start: int, n: int, version: int, run_id: str) -> list[dict]:
    variables = json.dumps({"customer": {"first_name": "Ani"}, "occurrence": "2026-11-24T09:00:00-08:00"},
                           ensure_ascii=False, separators=(",", ":"))
    at = 1_795_000_000
    return [{"key": f"newsletter:20261124T170000Z:c{i:07d}", "campaign": "newsletter",
             "version_id": version, "customer_id": f"c{i:07d}", "channel": "email",
             "address": f"customer{i}@example.com", "name": "Ani Petrosyan", "locale": "hy",
             "variables": variables, "category": "marketing", "priority": 10, "state": "queued",
             "not_before": at, "due_at": at, "run_id": run_id} for i in range(start, start + n)]


def measure(n: int, batch: int, url: str | None = None) -> tuple[float, float]:
    """(messages per second, CPU seconds of this process per message) of the timed writes."""
    from outreach.ledger import Ledger

    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        ledger = Ledger(url or f"sqlite:///{tmp}/outreach.db")
        try:
            version = ledger.store_version("newsletter", "v1", {"templates": {}})
            for i in range(0, n, 50_000):  # history: as many messages already there
                ledger.insert_messages(rows(10_000_000 + i, min(50_000, n - i), version, "old"))
            prepared = [rows(i, min(batch, n - i), version, "bench") for i in range(0, n, batch)]
            started, cpu = time.perf_counter(), time.process_time()
            written = sum(ledger.insert_messages(b) for b in prepared)
            took, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            ledger.close()
    assert written == n, (written, n)
    return n / took, cpu / n


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=300_000)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--ledger", help="a PostgreSQL URL (default: a fresh SQLite file)")
    p.add_argument("--small", action="store_true", help="a tiny run for CI (4,000 messages)")
    a = p.parse_args(argv)
    n = 4000 if a.small else a.messages
    print(machine_line())
    rate, cpu = measure(n, a.batch, a.ledger)
    print(f"{n:,} messages in batches of {a.batch:,} into {'PostgreSQL' if a.ledger else 'SQLite'}; "
          f"{cpu * 1e6:.2f} µs of CPU per message in this process")
    return figure("outbox_write", rate, "messages/s", ">= 150,000", messages=n, cpu_per_message=cpu)


if __name__ == "__main__":
    main()
