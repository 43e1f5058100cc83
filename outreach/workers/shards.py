"""One planning shard: its lock, its fenced writes, and the run it belongs to.

A shard job plans the customers of one :class:`~outreach.shard.Shard` for a run the coordinator
(:mod:`outreach.workers.runs`) started. It holds two advisory locks on one dedicated connection:

* the planner lock, **shared**: shards of one run plan side by side, while a single-process
  ``outreach run`` (which takes it exclusively) and a shard never plan at once;
* its shard's own lock, exclusively: two runs never plan the same customers at once, so each
  customer's caps are decided by one process, as before.

**Fencing.** Every write of the shard (messages, refusals, withdrawals, the delivery jobs, its
row in ``outreach_shards``) goes through that same connection (:class:`FencedLedger`). If the
connection is lost, so are the locks, and so is every later write: a shard that lost its lock
cannot write a row, because its writes and its lock die together.

Each batch's messages and the delivery job for them are written in one transaction: the job
exists exactly when the messages do. When the last shard of a run finishes, in the same
transaction it completes the run's schedule occurrences (only when every shard planned) and
records the run's combined report.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator, Mapping, Sequence, cast

from sqlalchemy import (
    BigInteger, Column, Integer, MetaData, String, Table, Text, select, text, update,
)
from sqlalchemy.engine import Connection, Engine

from outreach.config import Campaign, Project
from outreach.errors import LedgerBusy
from outreach.ledger import (
    PLANNER_LOCK_KEY, SCHEMA_LOCK, Ledger, OnConnection, from_epoch, wall_clock,
)
from outreach.planner import Planner
from outreach.plugins import Plugins
from outreach.report import RunReport
from outreach.shard import Shard
from outreach.workers.queue import DISPATCH_TASK, Job, JobQueue

_metadata = MetaData()

#: One row per shard of a run: what ``outreach status`` shows and what the sweep recovers.
shards_table = Table(
    "outreach_shards", _metadata,
    Column("run_id", String(64), primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("shards", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # queued, planning, done, failed
    Column("job_id", BigInteger),
    Column("worker", String(128)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("queued_at", BigInteger, nullable=False),
    Column("started_at", BigInteger),
    Column("finished_at", BigInteger),
    Column("args", Text, nullable=False),  # the job's arguments, to put it on the queue again
    Column("summary", Text),
    Column("error", Text),
)

#: The shard count runs plan with (one row). It changes only while no shard plans.
layout_table = Table(
    "outreach_shard_layout", _metadata,
    Column("id", Integer, primary_key=True),
    Column("shards", Integer, nullable=False),
)

#: Unfinished shard states, and finished ones.
OPEN = ("queued", "planning")
CLOSED = ("done", "failed")

#: How long a shard job waits for its lock (held by a sweep's probe, or a run finishing).
LOCK_WAIT = 10.0


class ShardBusy(LedgerBusy):
    """Another process holds this shard's lock (the job is retried later)."""


def ensure_tables(engine: Engine) -> None:
    """Create the shard tables when missing (under the ledger's schema lock)."""
    with engine.begin() as conn:
        conn.execute(text(SCHEMA_LOCK))
        _metadata.create_all(conn, checkfirst=True)


def shard_key(conn: Connection, index: int) -> int:
    """The advisory key of shard ``index``'s lock in this ledger."""
    return int(conn.execute(text(
        "SELECT hashtext(current_database() || '.' || current_schema() || '.outreach-shard-' "
        "|| CAST(:i AS text))"), {"i": index}).scalar_one())


def planner_key(conn: Connection) -> int:
    """The planner lock's advisory key (:data:`outreach.ledger.PLANNER_LOCK_KEY`)."""
    return int(conn.execute(text(f"SELECT {PLANNER_LOCK_KEY}")).scalar_one())


@contextlib.contextmanager
def shard_lock(engine: Engine, shard: Shard, wait: float = LOCK_WAIT) -> Iterator[Connection]:
    """Hold the planner lock (shared) and ``shard``'s lock on one connection, and yield it.

    Raises :class:`LedgerBusy` when a single-process run holds the ledger, :class:`ShardBusy`
    when another process still holds the shard after ``wait`` seconds, and
    :class:`StaleShard` when the ledger's shard count is no longer ``shard.count``.
    """
    conn = engine.connect()
    held: list[str] = []
    try:
        planner = planner_key(conn)
        key = shard_key(conn, shard.index)
        if not conn.execute(text("SELECT pg_try_advisory_lock_shared(:k)"), {"k": planner}).scalar():
            conn.commit()
            raise LedgerBusy("a run without workers holds this ledger; the shard is planned later")
        held.append("pg_advisory_unlock_shared(:p)")
        deadline = time.monotonic() + wait
        while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            if time.monotonic() >= deadline:
                conn.commit()
                raise ShardBusy(f"{shard} is being planned by another process")
            time.sleep(0.2)
        held.append("pg_advisory_unlock(:k)")
        stored = conn.execute(select(layout_table.c.shards)).scalar()
        conn.commit()
        if stored is not None and stored != shard.count:
            raise StaleShard(f"{shard}: the ledger plans in {stored} shards now")
        yield conn
    except BaseException:
        if held and conn.in_transaction():
            conn.rollback()
        raise
    finally:
        try:
            for call in reversed(held):
                conn.execute(text(f"SELECT {call}"), {"p": planner, "k": key})
            conn.commit()
        except Exception:  # noqa: BLE001 - a lost connection took its locks with it
            conn.invalidate()
        conn.close()


class StaleShard(LedgerBusy):
    """A shard job of an older shard count (the count changed since it was queued)."""


#: What a :class:`FencedLedger` writes through instead of an engine: every transaction on the
#: one connection that holds the shard's locks (the planner lock's fencing, outreach.ledger).
_OnConnection = OnConnection


class FencedLedger(Ledger):
    """The process's ledger, writing on the shard's locked connection (reads go on as before).

    ``after_insert(conn, rows)`` runs inside each transaction that writes messages: what puts
    their delivery job on the queue.
    """

    def __init__(self, ledger: Ledger, conn: Connection,
                 after_insert: Callable[[Connection, Sequence[dict[str, Any]]], None] | None = None,
                 ) -> None:  # noqa: D107 - shares the process ledger's state, not a new one
        self.__dict__.update(ledger.__dict__)
        # Only ``begin()`` is used for writes (see Ledger): the connection stands in for the engine.
        self.engine = cast(Engine, _OnConnection(conn))
        self.conn = conn
        self._after_insert = after_insert

    def insert_messages(self, rows: Sequence[dict[str, Any]]) -> int:
        with self.engine.begin() as conn:
            written = super().insert_messages(rows)
            if rows and self._after_insert is not None:
                self._after_insert(conn, rows)
        return written


@dataclass
class ShardJob:
    """A planning job's arguments (stored as JSON on the queue and in the shard's row)."""

    run: str
    shard: int
    shards: int
    now: int
    #: Due campaigns and the occurrence each serves (None for a campaign without a schedule).
    due: dict[str, int | None]
    campaigns: list[str] | None = None
    send: bool = True

    def as_args(self) -> dict[str, Any]:
        return {"run": self.run, "shard": self.shard, "shards": self.shards, "now": self.now,
                "due": self.due, "campaigns": self.campaigns, "send": self.send}


def plan_shard(project: Project, plugins: Plugins, ledger: Ledger, queue: JobQueue,
               args: Mapping[str, Any], *, worker: str = "", job_id: int | None = None,
               ) -> RunReport:
    """Plan one shard of a run (a planning job's body). Returns the shard's report."""
    job = ShardJob(**args)
    shard = Shard(job.shard, job.shards)
    now = from_epoch(job.now)
    report = RunReport(now=now.isoformat(timespec="seconds"), run_id=job.run)
    for name in job.campaigns or project.campaigns:
        if name in project.campaigns:
            report.campaign(name)
    due: list[tuple[Campaign, datetime | None]] = []
    for name, occurrence in job.due.items():
        rep = report.campaign(name)
        rep.due = True
        campaign = project.campaigns.get(name)
        if campaign is None:
            rep.error = (f"campaign {name!r} is not in this worker's project: every host needs "
                         "the same campaign files")
            continue
        due.append((campaign, None if occurrence is None else from_epoch(occurrence)))

    def enqueue_delivery(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        # Messages due later (quiet hours, a delay) are sent by the sweep once they are due.
        if job.send and any(r["due_at"] <= job.now for r in rows):
            queue.defer(conn, [Job(DISPATCH_TASK, {"now": job.now, "campaigns": job.campaigns})])

    with shard_lock(ledger.engine, shard) as conn:
        with conn.begin():
            conn.execute(update(shards_table).where(
                shards_table.c.run_id == job.run, shards_table.c.shard == job.shard).values(
                state="planning", worker=worker, started_at=wall_clock(), job_id=job_id))
        fenced = FencedLedger(ledger, conn, enqueue_delivery)
        try:
            Planner(project, plugins, fenced, now, report, campaigns=job.campaigns, run_id=job.run,
                    shard=shard, due=due).run()
        except Exception as exc:
            if not conn.invalidated:
                _finish(fenced, job, "failed", report, f"{type(exc).__name__}: {exc}")
            raise
        _finish(fenced, job, "done", report)
    return report


def _finish(ledger: FencedLedger, job: ShardJob, state: str, report: RunReport,
            error: str | None = None) -> None:
    """Record the shard's end; the last shard of a run also completes the run."""
    conn = ledger.conn
    with ledger.engine.begin():
        rows = conn.execute(select(shards_table).where(shards_table.c.run_id == job.run)
                            .with_for_update()).all()
        summary = report.as_dict()
        conn.execute(update(shards_table).where(
            shards_table.c.run_id == job.run, shards_table.c.shard == job.shard).values(
            state=state, finished_at=wall_clock(), summary=json.dumps(summary), error=error))
        states = {r.shard: r.state for r in rows}
        states[job.shard] = state
        if not all(s in CLOSED for s in states.values()):
            return
        from outreach.workers.runs import combined, shard_failures

        others = [r for r in rows if r.shard != job.shard]
        failed = shard_failures(others) + (
            [f"shard {job.shard + 1} of {job.shards} failed: {error}"] if state == "failed" else [])
        total = combined([json.loads(r.summary) for r in others if r.summary] + [summary],
                         report.now, job.run, failed)
        planned = all(s == "done" for s in states.values())
        if planned:
            for name, occurrence in job.due.items():
                if occurrence is not None and not total.campaign(name).error:
                    ledger.complete_occurrence(name, occurrence)
        status = ("ok" if total.ok else "problems") if planned else "failed"
        ledger.finish_run(job.run, status, total.as_dict())

