"""A sharded run: started once (``outreach run`` or the workers' schedule), planned by shard jobs.

The coordinator does what must happen once per run, in one process, in a few statements:

1. take back stalled shards of earlier runs (:func:`recover_shards`); while a run is still being
   planned, a new one is refused, as a second ``outreach run`` is (exit 3);
2. take back expired claims (so those messages are re-checked for consent by the shards);
3. decide which campaigns are due and for which occurrence, and mark those occurrences begun
   (after a crash the next run finishes them first, with the same keys);
4. in one transaction, record one row per shard and put one planning job per shard on the queue.

The last shard to finish completes the occurrences and records the run's combined report.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime
from typing import Any, Iterator, Mapping, Sequence

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import Connection

from outreach.config import Project
from outreach.errors import LedgerBusy
from outreach.ledger import Ledger, epoch, messages, wall_clock
from outreach.planner import Planner
from outreach.plugins import Plugins
from outreach.report import COUNTERS, RunReport
from outreach.run import check_campaign_names
from outreach.workers.queue import PLAN_TASK, Job, JobQueue
from outreach.workers.shards import (
    CLOSED, OPEN, ShardJob, layout_table, planner_key, shard_key, shards_table,
)

#: A shard job is put on the queue again at most this many times before its shard is failed.
MAX_ATTEMPTS = 5


def combined(summaries: Sequence[Mapping[str, Any]], now: str, run_id: str | None,
             failed: Sequence[str] = ()) -> RunReport:
    """One report from the shards' reports (their ``as_dict`` forms): counters and reasons summed,
    a campaign due where any shard found it due, the first error of each campaign kept. A shard
    that ``failed`` (its reasons) is the error of every due campaign: part of its audience was
    not planned."""
    report = RunReport(now=now, run_id=run_id)
    for summary in summaries:
        for c in summary.get("campaigns", []):
            rep = report.campaign(c["name"])
            rep.due = rep.due or bool(c.get("due"))
            rep.note = rep.note or c.get("note", "")
            for counter in COUNTERS:
                setattr(rep, counter, getattr(rep, counter) + int(c.get(counter, 0)))
            rep.already_planned += int(c.get("already_planned", 0))
            rep.reasons.update(c.get("reasons", {}))
            rep.error = rep.error or c.get("error")
        rows = summary.get("invalid_rows", {})
        report.row_problem_count += int(rows.get("count", 0))
        report.row_problems += rows.get("first", [])[:max(0, 50 - len(report.row_problems))]
        recovered = summary.get("recovered", {})
        report.recovered = (report.recovered[0] + int(recovered.get("requeued", 0)),
                            report.recovered[1] + int(recovered.get("unknown", 0)))
    if failed:
        for rep in report.campaigns.values():
            if rep.due and not rep.error:
                rep.error = "; ".join(failed)
    return report


@contextlib.contextmanager
def _coordinator(ledger: Ledger) -> Iterator[Connection]:
    """One coordinator at a time per ledger (a session advisory lock, held a few statements)."""
    conn = ledger.engine.connect()
    try:
        got = conn.execute(text(
            "SELECT pg_try_advisory_lock(hashtext(current_database() || '.' || current_schema() "
            "|| '.outreach-coordinator'))")).scalar()
        conn.commit()
        if not got:
            raise LedgerBusy("another outreach run is starting on this ledger; nothing was done")
        try:
            yield conn
        finally:
            conn.execute(text(
                "SELECT pg_advisory_unlock(hashtext(current_database() || '.' || current_schema() "
                "|| '.outreach-coordinator'))"))
            conn.commit()
    finally:
        conn.close()


def start_run(project: Project, plugins: Plugins, ledger: Ledger, queue: JobQueue, now: datetime,
              *, campaigns: Sequence[str] | None = None, send: bool = True) -> RunReport:
    """Start a sharded run at ``now``: its report so far (due campaigns, recovered claims)."""
    assert project.workers is not None
    check_campaign_names(project, campaigns)
    count = project.workers.shards
    with _coordinator(ledger) as conn:
        recover_shards(ledger, queue)
        with conn.begin():
            planning = conn.execute(
                select(shards_table.c.run_id, func.count())
                .where(shards_table.c.state.in_(OPEN)).group_by(shards_table.c.run_id)).all()
        if planning:
            run_id, left = planning[0]
            raise LedgerBusy(f"run {run_id} is still being planned ({left} shard(s) to go); "
                             "nothing was done")
        _set_layout(ledger, conn, count)
        run_id = ledger.start_run("run", epoch(now))
        report = RunReport(now=now.isoformat(timespec="seconds"), run_id=run_id,
                           skipped_campaigns=[str(p) for p in project.skipped])
        try:
            report.recovered = ledger.recover()
            due = Planner(project, plugins, ledger, now, report, campaigns=campaigns,
                          run_id=run_id).due_campaigns()
            for campaign, occurrence in due:
                if occurrence is not None:
                    ledger.begin_occurrence(campaign.name, epoch(occurrence))
                # Once here rather than by every shard at the same moment.
                ledger.store_version(campaign.name, campaign.version, campaign.content)
            jobs = [ShardJob(run_id, i, count, epoch(now),
                             {c.name: None if o is None else epoch(o) for c, o in due},
                             list(campaigns) if campaigns else None, send) for i in range(count)]
            with conn.begin():
                ids = queue.defer(conn, [Job(PLAN_TASK, j.as_args()) for j in jobs])
                t = wall_clock()
                conn.execute(insert(shards_table), [
                    {"run_id": run_id, "shard": j.shard, "shards": count, "state": "queued",
                     "job_id": job_id, "attempts": 1, "queued_at": t,
                     "args": json.dumps(j.as_args())} for j, job_id in zip(jobs, ids)])
        except BaseException:
            ledger.finish_run(run_id, "failed", report.as_dict())
            raise
    return report


def _set_layout(ledger: Ledger, conn: Connection, count: int) -> None:
    """Record the shard count runs plan with. A new count is taken only while no process plans
    (the planner lock is free: shards hold it shared), so two counts never plan at once."""
    with conn.begin():
        stored = conn.execute(select(layout_table.c.shards)).scalar()
        if stored == count:
            return
        if stored is None:
            conn.execute(insert(layout_table).values(id=1, shards=count))
            return
    key = planner_key(conn)
    if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
        conn.commit()
        raise LedgerBusy(f"[workers] shards changed from {stored} to {count}; the new count is "
                         "taken once no shard of the old one plans. Nothing was done")
    try:
        conn.execute(update(layout_table).values(shards=count))
        conn.commit()
    finally:
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        conn.commit()


def recover_shards(ledger: Ledger, queue: JobQueue, stalled_after: float = 30.0) -> int:
    """Put the shards of dead workers on the queue again; how many.

    A shard being planned whose lock nobody holds lost its process (a lock lives as long as its
    holder's connection). A shard waiting whose job is no longer waiting or running, or runs on
    a worker that stopped beating, never started. Each is put on the queue again (in the
    transaction that updates its row, guarded by its previous job id, so two sweeps never both
    do), at most :data:`MAX_ATTEMPTS` times, then failed with the reason.
    """
    with ledger.engine.connect() as conn:
        rows = conn.execute(select(shards_table).where(shards_table.c.state.in_(OPEN))).all()
        conn.commit()
        if not rows:
            return 0
        jobs = queue.job_states(conn, [r.job_id for r in rows if r.job_id is not None],
                                stalled_after)
        again = 0
        for row in rows:
            if row.state == "planning":
                key = shard_key(conn, row.shard)
                free = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                if free:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
                if not free:
                    continue
                why = "its worker stopped while planning it"
            else:
                state = jobs.get(row.job_id)
                if state in ("todo", "doing"):
                    continue
                why = ("its worker stopped before planning it" if state == "stalled"
                       else f"its job ended ({state or 'gone'}) before planning it")
            with conn.begin():
                if row.attempts >= MAX_ATTEMPTS:
                    conn.execute(update(shards_table).where(
                        shards_table.c.run_id == row.run_id, shards_table.c.shard == row.shard,
                        shards_table.c.state == row.state).values(
                        state="failed", finished_at=wall_clock(),
                        error=f"gave up after {row.attempts} attempts: {why}"))
                    continue
                [job_id] = queue.defer(conn, [Job(PLAN_TASK, json.loads(row.args))])
                taken = conn.execute(update(shards_table).where(
                    shards_table.c.run_id == row.run_id, shards_table.c.shard == row.shard,
                    shards_table.c.state == row.state,
                    shards_table.c.attempts == row.attempts).values(
                    state="queued", job_id=job_id, attempts=row.attempts + 1, worker=None,
                    error=why, queued_at=wall_clock())).rowcount
                if not taken:  # another sweep did it first: its job stands, not this one
                    conn.rollback()
                    continue
                again += 1
        return again


def shard_failures(rows: Sequence[Any]) -> list[str]:
    """What went wrong, one line per failed shard row."""
    return [f"shard {r.shard + 1} of {r.shards} failed: {r.error or 'no reason recorded'}"
            for r in rows if r.state == "failed"]


def run_state(ledger: Ledger, run_id: str) -> dict[str, Any]:
    """Where a run is: its shards by state, and its messages by state."""
    with ledger.reader.connect() as conn:
        shards: dict[str, int] = dict(conn.execute(select(shards_table.c.state, func.count())
                                   .where(shards_table.c.run_id == run_id)
                                   .group_by(shards_table.c.state)).all())
        states: dict[str, int] = dict(conn.execute(select(messages.c.state, func.count())
                                   .where(messages.c.run_id == run_id)
                                   .group_by(messages.c.state)).all())
    return {"shards": shards, "messages": states}


def wait_for(ledger: Ledger, report: RunReport, *, send: bool, poll: float = 0.5) -> RunReport:
    """Wait until the run is planned (every shard done or failed) and, with ``send``, until none
    of its messages due by now waits or is being sent; the run's report then (planning from the
    shards, delivery counted in the ledger)."""
    assert report.run_id is not None
    run_id = report.run_id
    while True:
        state = run_state(ledger, run_id)
        if state["shards"] and all(s in CLOSED for s in state["shards"]):
            if not send or not _in_flight(ledger, run_id):
                break
        time.sleep(poll)
    with ledger.reader.connect() as conn:
        rows = conn.execute(select(shards_table).where(shards_table.c.run_id == run_id)).all()
        # What delivery did: sent, unknown, and failed after an attempt (a message withdrawn or
        # suppressed before it left was never attempted, and the shards counted it already).
        sent = conn.execute(select(messages.c.campaign, messages.c.state, func.count())
                            .where(messages.c.run_id == run_id,
                                   messages.c.state.in_(("sent", "unknown"))
                                   | ((messages.c.state == "failed") & (messages.c.attempts > 0)))
                            .group_by(messages.c.campaign, messages.c.state)).all()
    total = combined([json.loads(r.summary) for r in rows if r.summary], report.now, run_id,
                     shard_failures(rows))
    total.recovered = report.recovered
    total.skipped_campaigns = report.skipped_campaigns
    for campaign, state_, n in sent:
        rep = total.campaign(campaign)
        setattr(rep, state_, getattr(rep, state_) + n)
    return total


def _in_flight(ledger: Ledger, run_id: str) -> bool:
    """Whether a message of the run is due now and still waiting, or being sent."""
    with ledger.reader.connect() as conn:
        return bool(conn.execute(select(func.count()).select_from(messages).where(
            messages.c.run_id == run_id,
            (messages.c.state == "sending")
            | (messages.c.state.in_(("queued", "deferred")) & (messages.c.due_at <= wall_clock()))
        )).scalar())
