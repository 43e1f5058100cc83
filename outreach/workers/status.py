"""What ``outreach status`` shows of the workers: who is alive, the last run's shards, the jobs."""

from __future__ import annotations

from typing import Any, Callable

from rich.console import Console
from rich.table import Table
from sqlalchemy import select, text

from outreach.ledger import Ledger, from_epoch, wall_clock


def workers_status(ledger: Ledger) -> dict[str, Any] | None:
    """Workers, the latest sharded run's shards and the queue's jobs; None when this ledger has
    never had workers."""
    from outreach.workers.shards import shards_table
    from outreach.workers.worker import BEAT, workers_table

    with ledger.reader.connect() as conn:
        if conn.execute(text("SELECT to_regclass('outreach_workers')")).scalar() is None:
            return None
        now = wall_clock()
        workers = [{"name": r.name, "alive": now - r.seen_at <= 3 * BEAT,
                    "seen": from_epoch(r.seen_at).isoformat(), "jobs": r.jobs,
                    "concurrency": r.concurrency, "doing": r.doing}
                   for r in conn.execute(select(workers_table)
                                         .order_by(workers_table.c.name)).all()]
        last = conn.execute(select(shards_table.c.run_id).order_by(
            shards_table.c.queued_at.desc()).limit(1)).scalar()
        shards = []
        if last is not None:
            shards = [{"shard": r.shard, "of": r.shards, "state": r.state, "worker": r.worker,
                       "attempts": r.attempts, "error": r.error,
                       "started": from_epoch(r.started_at).isoformat() if r.started_at else None,
                       "finished": from_epoch(r.finished_at).isoformat() if r.finished_at else None}
                      for r in conn.execute(select(shards_table)
                                            .where(shards_table.c.run_id == last)
                                            .order_by(shards_table.c.shard)).all()]
        jobs: dict[str, dict[str, int]] = {}
        for task, status, n in conn.exec_driver_sql(
                "SELECT task_name, status::text, count(*) FROM procrastinate_jobs "
                "WHERE status IN ('todo', 'doing') GROUP BY task_name, status").all():
            jobs.setdefault(task, {})[status] = n
    return {"workers": workers, "run": last, "shards": shards, "jobs": jobs,
            "alive": sum(1 for w in workers if w["alive"])}


def print_status(out: Console, status: dict[str, Any],
                 when: Callable[[str | None], str] = lambda t: t or "") -> None:
    """The human form; ``when`` shows a stored ISO time to people (the deployment's zone)."""
    table = Table(title=f"workers ({status['alive']} alive)", title_justify="left")
    for col in ("worker", "alive", "last seen", "jobs", "doing"):
        table.add_column(col)
    for w in status["workers"]:
        table.add_row(w["name"], "yes" if w["alive"] else "no", when(w["seen"]),
                      f"{w['jobs']}/{w['concurrency']}", w["doing"])
    out.print(table)
    if status["shards"]:
        table = Table(title=f"shards of run {status['run']}", title_justify="left")
        for col in ("shard", "state", "worker", "started", "finished", "note"):
            table.add_column(col)
        for s in status["shards"]:
            table.add_row(f"{s['shard'] + 1}/{s['of']}", s["state"], s["worker"] or "",
                          when(s["started"]), when(s["finished"]), s["error"] or "")
        out.print(table)
    jobs = status["jobs"]
    out.print("jobs in flight: " + (", ".join(
        f"{task} {counts.get('doing', 0)} running, {counts.get('todo', 0)} waiting"
        for task, counts in sorted(jobs.items())) or "none"), markup=False)


__all__ = ["workers_status", "print_status"]
