"""Scale-out on PostgreSQL: planning shards and deliveries as jobs for ``outreach worker`` processes.

With ``[workers]`` in ``outreach.toml`` (and the ``outreach[workers]`` extra installed), a run is
placed on workers instead of being made by one process:

* ``outreach run`` (cron on one host, or the workers themselves on ``[workers] schedule``)
  decides once which campaigns are due and enqueues one planning job per shard
  (:mod:`outreach.workers.runs`);
* each planning job plans its shard's customers (:class:`outreach.shard.Shard`) under a lock of
  its own, and the messages of each batch and a delivery job for them are written in one
  transaction (:mod:`outreach.workers.shards`);
* delivery jobs claim and send through the :class:`~outreach.dispatch.Dispatcher`, as
  ``outreach dispatch`` does: the ledger's claims, not the queue, decide who sends a message;
* every worker sweeps now and then: claims of a process that died are taken back (as every
  dispatcher does), the shards of a worker that died are planned again, and what is due is sent
  (:mod:`outreach.workers.sweep`).

The queue is procrastinate's, in the ledger's own database: jobs are rows taken with ``SKIP
LOCKED``, workers wake on LISTEN/NOTIFY, and a job whose worker died is never rerun by the queue
itself (the sweep decides, from the ledger). The README's "Scaling out" section is the user's
guide; this package's modules each hold one part.
"""

from __future__ import annotations

from outreach.errors import UsageError

#: How the extra is installed, for messages.
EXTRA = "pip install 'outreach[workers]'"


class WorkersUnavailable(UsageError):
    """Workers were asked for where they cannot run (no PostgreSQL ledger, no procrastinate)."""


def require_postgresql(ledger_url: str, what: str) -> None:
    """Refuse workers on a SQLite ledger, saying why."""
    if ledger_url.startswith("sqlite"):
        raise WorkersUnavailable(
            f"{what} needs a PostgreSQL ledger: workers on several hosts share their jobs and "
            "claims through it, and a SQLite file belongs to one host. On one host, cron "
            "`outreach run` as before; to scale out, set ledger = \"postgresql://…\" and add a "
            "[workers] table")


def require_procrastinate() -> None:
    """Refuse workers when the optional procrastinate dependency is missing."""
    try:
        import procrastinate  # noqa: F401
    except ImportError:
        raise WorkersUnavailable(f"workers need procrastinate, which is not installed: {EXTRA}"
                                 ) from None
