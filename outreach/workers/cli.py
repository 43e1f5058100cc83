"""What the ``outreach run`` and ``outreach worker`` commands do with ``[workers]``."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import Sequence

from outreach.config import Project
from outreach.ledger import Ledger
from outreach.plugins import Plugins
from outreach.report import RunReport
from outreach.workers import require_postgresql, require_procrastinate


def start(project: Project, plugins: Plugins, now: datetime, *, campaigns: Sequence[str],
          send: bool, wait: bool) -> tuple[RunReport, bool]:
    """Start a sharded run; with ``wait``, wait for it. (report, whether the run is finished)."""
    require_postgresql(project.ledger_url, "[workers]")
    require_procrastinate()
    import procrastinate

    from outreach.workers.queue import JobQueue, conninfo
    from outreach.workers.runs import start_run, wait_for
    from outreach.workers.worker import ensure_tables

    ledger = Ledger(project.ledger_url)
    try:
        ensure_tables(ledger)
        queue = JobQueue(procrastinate.App(
            connector=procrastinate.SyncPsycopgConnector(conninfo=conninfo(ledger.engine))))
        report = start_run(project, plugins, ledger, queue, now, campaigns=campaigns or None,
                           send=send)
        if not wait:
            return report, False
        return wait_for(ledger, report, send=send), True
    finally:
        ledger.close()


def work(project: Project, plugins: Plugins, *, concurrency: int,
         queues: Sequence[str] = ()) -> None:
    """Run a worker in this process until it is stopped."""
    require_postgresql(project.ledger_url, "outreach worker")
    require_procrastinate()
    from outreach.workers.worker import serve

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    mine = logging.getLogger("outreach.workers")
    mine.addHandler(handler)
    mine.setLevel(logging.INFO)
    logging.getLogger("procrastinate").addHandler(handler)
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    serve(project, plugins, concurrency=concurrency, queues=list(queues) or None)
