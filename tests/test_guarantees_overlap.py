"""Overlap safety: several ``outreach run`` / ``outreach dispatch`` processes on one ledger at once.

Cron may start a run while the last one is still going, and ``outreach dispatch`` is meant to run
several at a time. Real processes, on SQLite and on PostgreSQL, against a FakeTwilio served here:
one planner at a time (the others exit 3 and do nothing), frequency caps held across processes,
and every queued message delivered exactly once however the dispatchers interleave.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timezone

import pytest
from guarantees_support import (
    finish, newsletter, per_recipient, phone, spawn, twilio_project,
)

from outreach_twilio.testing import FakeTwilio

ONE_A_DAY = '[[caps]]\nmax = 1\nper = "1d"\n'
BUSY = "another outreach run is in progress"


def _outcome(code: int, out: str, err: str) -> dict:
    assert "Traceback" not in err, err
    if code == 3:
        assert BUSY in err, err
        assert out.strip() == "", out  # a refused run prints no report: it did nothing
        return {"busy": True}
    assert code == 0, (code, err)
    return json.loads(out)


@pytest.mark.slow
def test_four_runs_at_once_plan_once_and_hold_the_cap(tmp_path, ledger_url):
    """Overlap guarantee: four simultaneous runs plan each message once and together respect a cap."""
    customers = 30
    now = "2026-11-24T00:10"
    with FakeTwilio(latency=0.05, validate=False) as fake:
        p = twilio_project(tmp_path / "shop", fake, customers, ledger_url=ledger_url,
                           caps=ONE_A_DAY, concurrency=1, extra="batch_size = 5")
        # Two newsletters at the same hour compete for the one message a day each customer may get.
        p.campaign("promo-a", newsletter(priority=5))
        p.campaign("promo-b", newsletter(priority=50))
        # The ledger does not exist yet: the four also race to create it.
        # Two plain runs and one per campaign: without the lock, runs limited to one campaign would
        # each see an empty cap window and both send.
        argsets = [("run", "--json", "--now", now),
                   ("run", "--json", "--now", now, "--campaign", "promo-a"),
                   ("run", "--json", "--now", now, "--campaign", "promo-b"),
                   ("run", "--json", "--now", now)]
        procs = [spawn(p, *args) for args in argsets]
        reports = [_outcome(*finish(proc)) for proc in procs]
        rows = p.messages()
        got = per_recipient(fake)

    ran = [r for r in reports if not r.get("busy")]
    assert len(ran) < len(reports), "no run met the lock: nothing about overlap was proved"
    # Runs that got the lock one after the other find the work done: one message per customer.
    assert sum(r["totals"]["queued"] for r in ran) == customers
    assert got == Counter({phone(i): 1 for i in range(customers)})
    assert Counter(r["customer_id"] for r in rows) == Counter({f"c{i}": 1 for i in range(customers)})
    assert {r["state"] for r in rows} == {"sent"}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_run_while_the_planner_lock_is_held_does_nothing(tmp_path, backend, request):
    """Overlap guarantee: a run that cannot take the planner lock exits 3 and plans and sends nothing."""
    url = None if backend == "sqlite" else request.getfixturevalue("pg_url")
    with FakeTwilio(validate=False) as fake:
        p = twilio_project(tmp_path / "shop", fake, 5, ledger_url=url)
        p.campaign("news", newsletter())
        holder = p.ledger()
        try:
            with holder.planner_lock():
                result = p.cli("run", "--json", "--now", "2026-11-24T00:10")
        finally:
            holder.close()
        assert (result.code, result.stdout) == (3, "")
        assert BUSY in result.stderr and "Traceback" not in result.stderr
        assert p.messages() == [] and fake.messages == []
        # Once the lock is free the same run goes through, and a rerun adds nothing.
        p.run("2026-11-24T00:10")
        p.run("2026-11-24T00:10")
        assert per_recipient(fake) == Counter({phone(i): 1 for i in range(5)})


@pytest.mark.slow
def test_three_dispatchers_deliver_each_of_300_messages_exactly_once(tmp_path, ledger_url):
    """Overlap guarantee: concurrent `outreach dispatch` processes never hand one message over twice."""
    customers = 300
    now = "2026-11-24T00:10"
    with FakeTwilio(latency=0.005, validate=False) as fake:
        p = twilio_project(tmp_path / "shop", fake, customers, ledger_url=ledger_url, concurrency=8)
        p.campaign("news", newsletter())
        assert p.run(now, send=False).totals["queued"] == customers
        # Three at once, 120 each at most: they must share the 300 between them.
        procs = [spawn(p, "dispatch", "--json", "--limit", "120", "--now", now) for _ in range(3)]
        sent = []
        for proc in procs:
            code, out, err = finish(proc)
            assert code == 0 and "Traceback" not in err, (code, err)
            sent.append(json.loads(out)["totals"]["sent"])
        # A last sweep delivers whatever none of the three took.
        p.run(now)
        rows = p.messages()
        got = per_recipient(fake)

    assert sum(1 for n in sent if n > 0) >= 2, f"no overlap happened: {sent}"
    assert got == Counter({phone(i): 1 for i in range(customers)})
    assert Counter(r["state"] for r in rows) == Counter({"sent": customers})


def test_a_dispatcher_that_lost_its_expired_claim_does_not_send(tmp_path):
    """Overlap guarantee: a message is handed over once even when a slow dispatcher's claim expires.

    Dispatcher A claims, then stalls past ``claim_ttl`` before handing its batches over (a rate
    limit, a long GC pause, a slow provider on earlier calls: with 1000 rows claimed at once and
    ``rate_limit = 1`` the last leaves after 16 minutes, past the default 10-minute claim).
    Dispatcher B, started meanwhile, recovers the expired never-handed rows and sends them. A must
    then not send them too.
    """
    from outreach.dispatch import Dispatcher
    from outreach.ledger import Ledger
    from outreach.plugins import get_plugins
    from outreach.report import RunReport

    with FakeTwilio(validate=False) as fake:
        p = twilio_project(tmp_path / "shop", fake, 1, extra='claim_ttl = "1s"')
        p.campaign("news", newsletter())
        p.run("2026-11-24T00:10", send=False)
        plugins = get_plugins()
        project = p.load(plugins)
        now = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
        ledger_a, ledger_b = Ledger(project.ledger_url), Ledger(project.ledger_url)
        handed = ledger_a.mark_handed

        def stalled_then_handed(ids, owner, ttl=None):
            time.sleep(2.1)  # A's claim (1 s) expires while it is busy
            Dispatcher(project, plugins, ledger_b, now, RunReport(now=now.isoformat()),
                       owner="dispatcher-b").run()
            return handed(ids, owner, ttl)

        ledger_a.mark_handed = stalled_then_handed
        try:
            Dispatcher(project, plugins, ledger_a, now, RunReport(now=now.isoformat()),
                       owner="dispatcher-a").run()
        finally:
            ledger_a.close()
            ledger_b.close()
        assert per_recipient(fake) == Counter({phone(0): 1})
