"""``outreach worker``: one procrastinate worker in the ledger's database, with outreach's tasks.

A worker takes up to ``--concurrency`` jobs at once: planning shards (CPU-bound Python, in a
thread) and deliveries (each a :class:`~outreach.dispatch.Dispatcher` on an event loop of its
own, in a thread). Beside its jobs, every worker

* beats: its row in ``outreach_workers`` says it is alive and what it is doing (``outreach
  status`` shows it);
* sweeps every ``[workers] sweep``: claims of a dead process are taken back (never handed over →
  queued, possibly handed over → unknown, exactly as ``outreach run`` does), shards of a dead
  worker are planned again (:func:`~outreach.workers.runs.recover_shards`), jobs of workers that
  stopped beating are closed, and a delivery job is queued when messages are due (deferrals whose
  time came, retries, recovered claims);
* with ``[workers] schedule``, starts runs on that schedule (procrastinate's periodic tasks: one
  run per tick however many workers there are).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, delete, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from outreach.config import Project
from outreach.dispatch import Dispatcher
from outreach.errors import LedgerBusy
from outreach.ledger import SCHEMA_LOCK, Ledger, from_epoch, wall_clock
from outreach.plugins import Plugins
from outreach.ratelimit import ensure_budget
from outreach.report import RunReport
from outreach.workers.queue import (
    DISPATCH_QUEUE, DISPATCH_TASK, PLAN_QUEUE, PLAN_TASK, RUN_TASK, Job, JobQueue, conninfo,
    ensure_schema,
)

log = logging.getLogger("outreach.workers")

#: A delivery job claims at most this many seconds of a rate-limited channel's rate at once:
#: the rate is shared by every worker, so each takes its share of the work, not all of it.
CLAIM_SECONDS = 1.0
#: Seconds between a worker's beats; one not seen for three beats is shown as gone.
BEAT = 5.0
#: procrastinate's heartbeat, and how long without one makes a worker's jobs stalled. A worker
#: taken for stalled wrongly costs a shard planned twice (the second time finds it planned).
HEARTBEAT = 2.0
STALLED_AFTER = 10.0

_metadata = MetaData()
workers_table = Table(
    "outreach_workers", _metadata,
    Column("name", String(128), primary_key=True),
    Column("host", String(128), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("seen_at", BigInteger, nullable=False),
    Column("jobs", Integer, nullable=False, default=0),
    Column("doing", String(255), nullable=False, default=""),
)


@dataclass
class Env:
    """What a worker's jobs use: the project, its plugins, the ledger and the queue."""

    project: Project
    plugins: Plugins
    ledger: Ledger
    queue: JobQueue
    name: str
    concurrency: int = 1
    #: Jobs running now (task name and id), for the worker's beat.
    running: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def started(self, job_id: int | None, what: str) -> None:
        if job_id is not None:
            with self.lock:
                self.running[job_id] = what

    def ended(self, job_id: int | None) -> None:
        if job_id is not None:
            with self.lock:
                self.running.pop(job_id, None)


def ensure_tables(ledger: Ledger) -> None:
    """Everything workers keep in the ledger's database: procrastinate's schema, the shards, the
    workers' beats and the shared rate budgets."""
    from outreach.workers import shards

    ensure_schema(ledger.engine)
    shards.ensure_tables(ledger.engine)
    ensure_budget(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(text(SCHEMA_LOCK))
        _metadata.create_all(conn, checkfirst=True)


def make_app(connector: Any, project: Project) -> Any:
    """A procrastinate App with outreach's tasks (and the run schedule, when configured)."""
    import procrastinate

    app = procrastinate.App(connector=connector)

    @app.task(name=PLAN_TASK, queue=PLAN_QUEUE, pass_context=True,
              retry=procrastinate.RetryStrategy(max_attempts=30, wait=10,
                                                retry_exceptions={LedgerBusy}))
    def plan_shard(context: Any, **args: Any) -> dict[str, Any]:
        from outreach.workers.shards import StaleShard, plan_shard as plan

        env: Env = context.additional_context["outreach"]
        job_id = context.job.id
        env.started(job_id, f"planning shard {args['shard'] + 1} of {args['shards']}")
        try:
            report = plan(env.project, env.plugins, env.ledger, env.queue, args, worker=env.name,
                          job_id=job_id)
        except StaleShard as exc:
            log.warning("%s: %s; left out", env.name, exc)
            return {"stale": str(exc)}
        finally:
            env.ended(job_id)
        totals = report.totals
        log.info("%s: planned shard %d of %d of run %s: %d queued", env.name, args["shard"] + 1,
                 args["shards"], args["run"], totals["queued"])
        return totals

    @app.task(name=DISPATCH_TASK, queue=DISPATCH_QUEUE, pass_context=True)
    def dispatch(context: Any, now: int | None = None,
                 campaigns: Sequence[str] | None = None) -> dict[str, int]:
        env: Env = context.additional_context["outreach"]
        job_id = context.job.id
        env.started(job_id, "sending")
        try:
            return deliver(env, now, campaigns, owner=f"{env.name}/{job_id}")
        finally:
            env.ended(job_id)

    schedule = project.workers.schedule if project.workers else None
    if schedule:
        @app.periodic(cron=schedule)
        @app.task(name=RUN_TASK, queue=PLAN_QUEUE, pass_context=True)
        def run(context: Any, timestamp: int) -> str:
            from outreach.workers.runs import start_run

            env: Env = context.additional_context["outreach"]
            try:
                report = start_run(env.project, env.plugins, env.ledger, env.queue,
                                   from_epoch(timestamp))
            except LedgerBusy as exc:
                log.info("%s: scheduled run not started: %s", env.name, exc)
                return str(exc)
            log.info("%s: started run %s", env.name, report.run_id)
            return report.run_id or ""

    return app


def deliver(env: Env, now: int | None, campaigns: Sequence[str] | None, owner: str
            ) -> dict[str, int]:
    """A delivery job's body: send what is due, as ``outreach dispatch`` does."""
    when = from_epoch(now) if now is not None else datetime.now(timezone.utc)
    # A run replayed with --now plans for that instant; anything due by the real time goes too.
    when = max(when, datetime.now(timezone.utc))
    report = RunReport(now=when.isoformat(timespec="seconds"))
    Dispatcher(env.project, env.plugins, env.ledger, when, report,
               campaigns=list(campaigns) if campaigns else None, owner=owner,
               claim_seconds=CLAIM_SECONDS).run()
    return report.totals


def sweep(env: Env) -> dict[str, int]:
    """One sweep (see the module's docstring); what it did."""
    from outreach.workers.runs import recover_shards

    requeued, unknown = env.ledger.recover()
    shards = recover_shards(env.ledger, env.queue, STALLED_AFTER)
    due = env.ledger.due_count(wall_clock(), None, list(env.project.channels))
    queued = 0
    if due:
        # One waiting job per worker that sweeps (a lock of its own name): every worker may send
        # a large backlog at once, and however often sweeps come, no more jobs than workers wait.
        with env.ledger.engine.begin() as conn:
            queued = sum(1 for i in env.queue.defer(conn, [Job(
                DISPATCH_TASK, {}, queueing_lock=f"outreach-sweep-{env.name}")]) if i is not None)
    return {"requeued": requeued, "unknown": unknown, "shards": shards, "due": due,
            "dispatch_jobs": queued}


def beat(env: Env, started: int) -> None:
    """Say this worker is alive, and what it is doing."""
    with env.lock:
        doing = "; ".join(sorted(set(env.running.values())))[:255]
        jobs = len(env.running)
    host, _, pid = env.name.rpartition(":")
    values = {"name": env.name, "host": host, "pid": int(pid) if pid.isdigit() else 0,
              "concurrency": env.concurrency, "started_at": started, "seen_at": wall_clock(),
              "jobs": jobs, "doing": doing}
    stmt = pg_insert(workers_table).values(**values)
    with env.ledger.engine.begin() as conn:
        conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={
            k: stmt.excluded[k] for k in ("seen_at", "jobs", "doing", "concurrency")}))


async def _housekeeping(env: Env, app: Any, sweep_every: float) -> None:
    """Beat and sweep until cancelled; a failing sweep is logged and tried again next time."""
    started = wall_clock()
    next_sweep = 0.0
    loop = asyncio.get_running_loop()
    while True:
        try:
            await asyncio.to_thread(beat, env, started)
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + sweep_every
                done = await asyncio.to_thread(sweep, env)
                await _close_stalled_jobs(app)
                if any(done[k] for k in ("requeued", "unknown", "shards", "dispatch_jobs")):
                    log.info("%s: sweep: %s", env.name, done)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the ledger may be briefly unreachable
            log.warning("%s: housekeeping failed: %s: %s", env.name, type(exc).__name__, exc)
        await asyncio.sleep(min(BEAT, sweep_every))


async def _close_stalled_jobs(app: Any) -> None:
    """Close the jobs of workers that stopped beating (killed): procrastinate never reruns them
    by itself, and outreach does not need it to (the sweep recovers their claims and shards)."""
    from procrastinate import jobs

    for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_AFTER):
        await app.job_manager.finish_job(job, jobs.Status.FAILED, delete_job=False)


def serve(project: Project, plugins: Plugins, *, concurrency: int,
          queues: Sequence[str] | None = None, name: str | None = None) -> None:
    """Run a worker until it is stopped (SIGINT or SIGTERM: running jobs are finished first)."""
    import procrastinate

    ledger = Ledger(project.ledger_url)
    try:
        ensure_tables(ledger)
        info = conninfo(ledger.engine)
        me = name or f"{socket.gethostname()}:{os.getpid()}"
        queue = JobQueue(procrastinate.App(
            connector=procrastinate.SyncPsycopgConnector(conninfo=info)))
        env = Env(project, plugins, ledger, queue, me, concurrency)
        app = make_app(procrastinate.PsycopgConnector(conninfo=info, min_size=1,
                                                      max_size=concurrency + 3), project)
        sweep_every = project.workers.sweep.total_seconds() if project.workers else 30.0
        log.info("%s: worker started (%d job(s) at once, queues %s)", me, concurrency,
                 ", ".join(queues or (PLAN_QUEUE, DISPATCH_QUEUE)))

        async def main() -> None:
            async with app.open_async():
                side = asyncio.create_task(_housekeeping(env, app, sweep_every))
                try:
                    await app.run_worker_async(
                        concurrency=concurrency, name=me, queues=list(queues) if queues else None,
                        additional_context={"outreach": env}, install_signal_handlers=True,
                        update_heartbeat_interval=HEARTBEAT, stalled_worker_timeout=STALLED_AFTER)
                finally:
                    side.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await side
            with ledger.engine.begin() as conn:
                conn.execute(delete(workers_table).where(workers_table.c.name == me))

        asyncio.run(main())
    finally:
        ledger.close()

