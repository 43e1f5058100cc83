"""The job queue: procrastinate's tables in the ledger's database, written in the ledger's own
transactions.

Jobs are put on the queue on the caller's connection (procrastinate's ``connection=`` deferral),
so a job and the ledger rows it is about commit together or not at all: the planning jobs of a
run with the run's shard rows, a delivery job with the messages it is for. A job whose queueing
lock is taken (one of its kind already waits) is left out inside a savepoint, and the
transaction goes on.

:func:`ensure_schema` installs procrastinate's schema beside the ledger's tables when it is
missing; :func:`conninfo` turns the ledger's URL into the libpq string procrastinate's
connectors take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from outreach.ledger import SCHEMA_LOCK

#: Task names, as stored in procrastinate's jobs table.
PLAN_TASK = "outreach.plan_shard"
DISPATCH_TASK = "outreach.dispatch"
RUN_TASK = "outreach.run"
#: Queues: planning and delivery (``outreach worker --queue`` can keep a host to one of them).
PLAN_QUEUE = "outreach-plan"
DISPATCH_QUEUE = "outreach-dispatch"
QUEUES = (PLAN_QUEUE, DISPATCH_QUEUE)
#: Delivery jobs come first when a worker has a free slot: what is planned should leave.
PRIORITY = {PLAN_TASK: 0, DISPATCH_TASK: 10, RUN_TASK: 20}
_QUEUE_OF = {PLAN_TASK: PLAN_QUEUE, DISPATCH_TASK: DISPATCH_QUEUE, RUN_TASK: PLAN_QUEUE}


@dataclass
class Job:
    """A job to put on the queue."""

    task: str
    args: dict[str, Any] = field(default_factory=dict)
    #: At most one job with this lock waits at a time; a second is left out.
    queueing_lock: str | None = None
    scheduled_at: datetime | None = None


def conninfo(engine: Engine) -> str:
    """The libpq connection string of a SQLAlchemy engine's URL (its password kept)."""
    url = engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class JobQueue:
    """Puts jobs on procrastinate's queue through ``app`` (a procrastinate ``App``).

    With a PostgreSQL connector the jobs are written on the caller's connection, in its
    transaction; with procrastinate's in-memory connector (the fast tests) they go to memory.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        from procrastinate import testing

        self.in_memory = isinstance(app.connector, testing.InMemoryConnector)

    def defer(self, conn: Connection | None, jobs: Sequence[Job]) -> list[int | None]:
        """Put ``jobs`` on the queue in ``conn``'s transaction; each one's id (None for a job left
        out because its queueing lock was taken)."""
        from procrastinate import exceptions

        raw = None if self.in_memory or conn is None else conn.connection.driver_connection
        ids: list[int | None] = []
        plain = [j for j in jobs if j.queueing_lock is None]
        by_task: dict[tuple[str, datetime | None], list[Job]] = {}
        for job in plain:
            by_task.setdefault((job.task, job.scheduled_at), []).append(job)
        found: dict[int, int | None] = {}
        for (task, at), same in by_task.items():
            deferred = self._configure(task, raw, None, at).batch_defer(*[j.args for j in same])
            found.update(zip(map(id, same), deferred))
        for job in jobs:
            if job.queueing_lock is None:
                ids.append(found[id(job)])
                continue
            deferrer = self._configure(job.task, raw, job.queueing_lock, job.scheduled_at)
            try:
                if conn is not None and not self.in_memory:
                    with conn.begin_nested():  # a taken lock rolls back to here, not further
                        ids.append(deferrer.defer(**job.args))
                else:
                    ids.append(deferrer.defer(**job.args))
            except exceptions.AlreadyEnqueued:
                ids.append(None)
        return ids

    def job_states(self, conn: Connection, ids: Sequence[int], stalled_after: float
                   ) -> dict[int, str]:
        """procrastinate's status of these jobs (``todo``, ``doing``, ``succeeded``...), and
        ``stalled`` for one running on a worker that stopped beating (or was pruned)."""
        if not ids:
            return {}
        if self.in_memory:
            jobs = self.app.connector.jobs
            return {i: jobs[i]["status"] for i in ids if i in jobs}
        rows = conn.exec_driver_sql(
            "SELECT j.id, j.status::text, j.worker_id, "
            "w.last_heartbeat < now() - make_interval(secs => %(s)s) AS late "
            "FROM procrastinate_jobs j LEFT JOIN procrastinate_workers w ON w.id = j.worker_id "
            "WHERE j.id = ANY(%(ids)s)", {"ids": list(ids), "s": stalled_after}).all()
        conn.commit()
        return {r[0]: ("stalled" if r[1] == "doing" and (r[2] is None or r[3]) else r[1])
                for r in rows}

    def _configure(self, task: str, raw: Any, queueing_lock: str | None,
                   scheduled_at: datetime | None) -> Any:
        return self.app.configure_task(
            name=task, allow_unknown=True, queue=_QUEUE_OF[task], priority=PRIORITY[task],
            queueing_lock=queueing_lock, schedule_at=scheduled_at, connection=raw)


def ensure_schema(engine: Engine) -> None:
    """Install procrastinate's schema in the ledger's database when it is not there yet.

    Under the ledger's schema lock (a transaction-scoped advisory lock), so workers starting
    together install it once.
    """
    from procrastinate.schema import SchemaManager

    with engine.begin() as conn:
        conn.execute(text(SCHEMA_LOCK))
        if conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is None:
            # Straight to the driver, without parameters: the schema's SQL has % signs of its own.
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute(SchemaManager.get_schema())
