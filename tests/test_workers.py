"""Workers: ``outreach run`` placed on ``outreach worker`` processes through a PostgreSQL ledger.

The fast tests run the jobs in this process on procrastinate's in-memory connector (the ledger is
the real PostgreSQL); the others start real ``outreach worker`` subprocesses against the local
PostgreSQL and a fake Twilio. The delivery guarantees under crashes and the shared rate limit are
in test_guarantees_workers.py.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from datetime import datetime, timezone

import pytest
from sqlalchemy import select, text, update

from guarantees_support import newsletter, spawn, stop, twilio_project
from outreach.errors import LedgerBusy
from outreach.ledger import Ledger
from outreach.plugins import get_plugins
from outreach.shard import Shard
from outreach_twilio.testing import FakeTwilio


WORKERS = textwrap.dedent("""
    [workers]
    shards = {shards}
    sweep = "1s"
""")


def _workers_project(tmp_path, pg_url, fake, n, shards=4, claim_ttl="30s"):
    # A generous timeout: a busy test machine must not turn slow answers into unknown outcomes.
    p = twilio_project(tmp_path / "shop", fake, n, ledger_url=pg_url,
                       extra=f'claim_ttl = "{claim_ttl}"', tables=WORKERS.format(shards=shards),
                       concurrency=16, timeout=15)
    p.campaign("news", newsletter())
    return p


# ---------------------------------------------------------------------------------------- refusals
def test_worker_on_sqlite_is_a_clear_error(sqlite_project):
    result = sqlite_project.cli("worker")
    assert result.code == 2, result.stderr
    assert "needs a PostgreSQL ledger" in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_table_on_sqlite_is_a_configuration_error(sqlite_project):
    sqlite_project.configure(extra="", caps="[workers]\nshards = 4")
    result = sqlite_project.cli("validate")
    assert result.code == 2
    assert "workers: workers share their jobs through a PostgreSQL ledger" in result.stderr


def test_wait_without_workers_is_a_usage_error(sqlite_project):
    result = sqlite_project.cli("run", "--wait")
    assert result.code == 2
    assert "--wait" in result.stderr


# ---------------------------------------------------------------------------------------- in memory
def _in_memory(p):
    """The project's workers with procrastinate's in-memory queue, run in this process."""
    import procrastinate
    from procrastinate.testing import InMemoryConnector

    from outreach.workers.queue import JobQueue
    from outreach.workers.worker import Env, ensure_tables, make_app

    plugins = get_plugins()
    project = p.load(plugins)
    ledger = Ledger(project.ledger_url)
    ensure_tables(ledger)
    app = make_app(InMemoryConnector(), project)
    assert isinstance(app, procrastinate.App)
    env = Env(project, plugins, ledger, JobQueue(app), "test:1")
    return project, plugins, ledger, app, env


@pytest.mark.postgres
def test_a_run_is_one_planning_job_per_shard_then_delivery_jobs(tmp_path, pg_url, monkeypatch):
    import asyncio

    from outreach.workers.queue import DISPATCH_TASK, PLAN_TASK
    from outreach.workers.runs import run_state, start_run

    with FakeTwilio() as fake:
        p = _workers_project(tmp_path, pg_url, fake, 60, shards=3)
        for k, v in p.environ.items():
            monkeypatch.setenv(k, v)
        project, plugins, ledger, app, env = _in_memory(p)

        def start(hour: int, minute: int):
            return asyncio.to_thread(start_run, project, plugins, ledger, env.queue,
                                     datetime(2026, 11, 24, hour, minute, tzinfo=timezone.utc))

        def work():
            return app.run_worker_async(wait=False, concurrency=1, install_signal_handlers=False,
                                        additional_context={"outreach": env})

        async def scenario():
            async with app.open_async():
                await start(18, 30)  # the newsletter's first sighting: nothing due
                await work()
                report = await start(19, 5)
                planning = [j for j in app.connector.jobs.values() if j["task_name"] == PLAN_TASK
                            and j["args"]["run"] == report.run_id]
                assert sorted(j["args"]["shard"] for j in planning) == [0, 1, 2]
                hour = int(datetime(2026, 11, 24, 19, tzinfo=timezone.utc).timestamp())
                assert all(j["args"]["due"] == {"news": hour} for j in planning)
                # A second run while this one is being planned is refused, as a second cron
                # run is.
                with pytest.raises(LedgerBusy, match="still being planned"):
                    await start(19, 6)
                await work()
                return report

        try:
            report = asyncio.run(scenario())
            assert any(j["task_name"] == DISPATCH_TASK for j in app.connector.jobs.values())
            state = run_state(ledger, report.run_id)
            assert state["shards"] == {"done": 3}
            assert state["messages"] == {"sent": 60}
            # Two occurrences of the hourly newsletter (10:00 and 11:00): each customer got each once.
            assert len(fake.messages) == 120
            assert set(Counter((m.to, m.body) for m in fake.messages).values()) == {1}
            runs = {r["id"]: r for r in ledger.recent_runs()}
            assert runs[report.run_id]["status"] == "ok"
            assert runs[report.run_id]["summary"]["totals"]["queued"] == 60
            # The occurrence is complete: the next run does not plan it again.
            assert ledger.campaign_states()["news"][1] is None
        finally:
            ledger.close()


@pytest.mark.postgres
def test_the_schedule_starts_runs_without_cron(tmp_path, pg_url):
    from outreach.workers.queue import RUN_TASK

    with FakeTwilio() as fake:
        p = _workers_project(tmp_path, pg_url, fake, 5)
        (p.root / "outreach.toml").write_text((p.root / "outreach.toml").read_text().replace(
            'sweep = "1s"', 'sweep = "1s"\nschedule = "*/10 * * * *"'))
        project, plugins, ledger, app, env = _in_memory(p)
        ledger.close()
        periodic = [t for t in app.periodic_registry.periodic_tasks.values()]
        assert [(t.task.name, t.cron) for t in periodic] == [(RUN_TASK, "*/10 * * * *")]


# ---------------------------------------------------------------------------------------- locks
@pytest.mark.postgres
def test_a_shard_lock_excludes_the_same_shard_and_a_run_without_workers(tmp_path, pg_url):
    from outreach.workers.shards import ShardBusy, ensure_tables, shard_lock

    ledger = Ledger(pg_url)
    ensure_tables(ledger.engine)
    try:
        with shard_lock(ledger.engine, Shard(0, 2)):
            with shard_lock(ledger.engine, Shard(1, 2)):  # another shard plans beside it
                pass
            with pytest.raises(ShardBusy):
                with shard_lock(ledger.engine, Shard(0, 2), wait=0.3):
                    pass
            with pytest.raises(LedgerBusy):  # a single-process run waits for the shards
                with ledger.planner_lock():
                    pass
        with ledger.planner_lock():
            with pytest.raises(LedgerBusy, match="without workers"):
                with shard_lock(ledger.engine, Shard(0, 2)):
                    pass
    finally:
        ledger.close()


@pytest.mark.postgres
def test_a_shard_that_lost_its_lock_cannot_write(tmp_path, pg_url):
    """Fencing: a shard writes on the connection that holds its lock. When that connection is
    gone (killed by an operator, a network cut, a server restart) the lock is released, and the
    shard's next write fails instead of landing beside another process's."""
    from outreach.workers.shards import FencedLedger, ensure_tables, shard_lock

    ledger = Ledger(pg_url)
    version = ledger.store_version("news", "v1", {"name": "news"})
    ensure_tables(ledger.engine)
    row = {"key": "k1", "campaign": "news", "version_id": version, "customer_id": "c1",
           "channel": "sms", "address": "+37491000001", "name": "", "locale": "", "variables": "{}",
           "category": "marketing", "priority": 0, "state": "queued", "not_before": 1,
           "due_at": 1, "run_id": "r"}
    try:
        with pytest.raises(Exception):
            with shard_lock(ledger.engine, Shard(0, 2)) as conn:
                fenced = FencedLedger(ledger, conn)
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
                conn.commit()
                with ledger.engine.connect() as other:
                    other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                    other.commit()
                # Another process may take the shard now...
                with shard_lock(ledger.engine, Shard(0, 2), wait=5):
                    pass
                fenced.insert_messages([row])  # ...and this write must not happen
        assert ledger.existing_keys(["k1"]) == set()
    finally:
        ledger.close()


@pytest.mark.postgres
def test_a_dead_workers_shard_is_planned_again(tmp_path, pg_url, monkeypatch):
    from outreach.workers.runs import recover_shards, start_run
    from outreach.workers.shards import shards_table

    with FakeTwilio() as fake:
        p = _workers_project(tmp_path, pg_url, fake, 20, shards=2)
        project, plugins, ledger, app, env = _in_memory(p)
        try:
            report = start_run(project, plugins, ledger, env.queue,
                               datetime(2026, 11, 24, 19, 5, tzinfo=timezone.utc))
            # A worker took shard 0 and died while planning it: the row says so, nobody holds
            # the lock.
            with ledger.engine.begin() as conn:
                conn.execute(update(shards_table).where(shards_table.c.shard == 0)
                             .values(state="planning", worker="gone:1"))
            assert recover_shards(ledger, env.queue) == 1
            with ledger.engine.connect() as conn:
                row = conn.execute(select(shards_table).where(
                    shards_table.c.run_id == report.run_id, shards_table.c.shard == 0)).one()
            assert (row.state, row.attempts, row.worker) == ("queued", 2, None)
            assert "stopped while planning" in row.error
            assert recover_shards(ledger, env.queue) == 0  # its new job waits: nothing to do
        finally:
            ledger.close()


# ---------------------------------------------------------------------------------------- real workers
@pytest.mark.postgres
def test_workers_plan_and_send_a_run_and_status_shows_them(tmp_path, pg_url):
    with FakeTwilio(validate=False) as fake:
        p = _workers_project(tmp_path, pg_url, fake, 400, shards=4)
        workers = [spawn(p, "worker", "--concurrency", "2") for _ in range(2)]
        try:
            first = p.cli("run", "--now", "2026-11-24T10:30", "--wait", "--json", timeout=180)
            assert first.code == 0, first.stderr
            assert first.json()["totals"]["queued"] == 400  # the 10:00 newsletter
            result = p.cli("run", "--now", "2026-11-24T11:05", "--wait", "--json", timeout=180)
            assert result.code == 0, result.stderr
            report = result.json()
            assert report["totals"]["queued"] == 400  # the 11:00 one
            assert report["totals"]["sent"] == 400
            assert len(fake.messages) == 800
            assert set(Counter((m.to, m.body) for m in fake.messages).values()) == {1}
            status = p.cli("status", "--json").json()
            assert status["workers"]["alive"] == 2
            assert [s["state"] for s in status["workers"]["shards"]] == ["done"] * 4
            human = p.cli("status").stdout
            assert "workers (2 alive)" in human and "shards of run" in human
        finally:
            stop(workers)
        # A stopped worker leaves the list.
        assert p.cli("status", "--json").json()["workers"]["workers"] == []
