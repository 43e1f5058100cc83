"""Delivery guarantees with workers: real ``outreach worker`` processes, a real PostgreSQL ledger,
a fake Twilio counting what it receives.

* A worker killed (SIGKILL) at a random moment of a run: nobody gets a message twice, nothing is
  lost silently (every customer planned once; every message sent, or ``unknown`` with its reason),
  and the killed worker's work is finished by the others once its claims expire.
* ``rate_limit`` holds across workers: four workers together stay under the provider's limit (a
  fake enforcing it with 429s), because the budget is one for all of them.

The full-size versions are benchmarks: ``bench/workers_soak.py`` (200,000 customers, 8 shards,
4 workers, 20 kills) and ``bench/workers_rate.py``.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from guarantees_support import newsletter, spawn, stop, twilio_project, wait_for
from outreach.ledger import messages
from outreach_twilio.testing import FakeTwilio

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _project(tmp_path, pg_url, fake, n, *, shards, claim_ttl="3s", rate=None):
    tables = f"""
        [workers]
        shards = {shards}
        sweep = "1s"
    """
    p = twilio_project(tmp_path / "shop", fake, n, ledger_url=pg_url,
                       extra=f'claim_ttl = "{claim_ttl}"', tables=tables, concurrency=16,
                       timeout=15)
    if rate:
        text = (p.root / "outreach.toml").read_text()
        (p.root / "outreach.toml").write_text(
            text.replace("concurrency = 16", f"concurrency = 16\nrate_limit = {rate}"))
    p.campaign("news", newsletter())
    return p


def _run_state(p, run_id):
    from outreach.workers.runs import run_state

    ledger = p.ledger()
    try:
        return run_state(ledger, run_id)
    finally:
        ledger.close()


def _settled(p, run_id) -> bool:
    state = _run_state(p, run_id)
    return (bool(state["shards"]) and set(state["shards"]) == {"done"}
            and not set(state["messages"]) & {"queued", "sending", "deferred"})


def test_guarantees_a_worker_killed_at_any_moment(tmp_path, pg_url):
    """20 runs, each a new occurrence of an hourly newsletter to 600 customers in 8 shards on 4
    workers; in each, one worker is killed with SIGKILL at a random moment and a new one started."""
    n, trials = 600, int(os.environ.get("OUTREACH_WORKER_TRIALS", "20"))
    rng = random.Random(int(os.environ.get("OUTREACH_TRIAL_SEED", "15")))
    with FakeTwilio(validate=False) as fake:
        p = _project(tmp_path, pg_url, fake, n, shards=8)
        workers = [spawn(p, "worker", "--concurrency", "2") for _ in range(4)]
        try:
            first = p.cli("run", "--now", "2026-11-24T09:30", "--wait", timeout=300)
            assert first.code == 0, first.stdout + first.stderr
            baseline = len(fake.messages)
            assert baseline == n  # the 09:00 occurrence (the campaign starts that day)
            for trial in range(trials):
                hour = 10 + trial
                day, hour = 24 + hour // 24, hour % 24
                began = time.monotonic()
                started = p.cli("run", "--now", f"2026-11-{day}T{hour:02d}:05", "--json")
                assert started.code == 0, started.stderr
                run_id = started.json()["run_id"]
                time.sleep(rng.uniform(0.0, 3.0))
                victim = rng.randrange(len(workers))
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                workers[victim] = spawn(p, "worker", "--concurrency", "2")
                assert wait_for(lambda: _settled(p, run_id), timeout=240, step=0.5), \
                    (trial, _run_state(p, run_id))
                print(f"trial {trial}: settled {time.monotonic() - began:.1f} s after its start")
                ledger = p.ledger()
                try:
                    with ledger.reader.connect() as conn:
                        rows = conn.execute(select(messages.c.state, messages.c.address,
                                                   messages.c.error, func.count())
                                            .where(messages.c.run_id == run_id)
                                            .group_by(messages.c.state, messages.c.address,
                                                      messages.c.error)).all()
                finally:
                    ledger.close()
                # Every customer planned once in this run (the occurrence is new).
                assert sum(r[3] for r in rows) == n, (trial, p.cli("status", "--json").stdout)
                body = f"News 2026-11-{day}T{hour:02d}:00:00-08:00"
                got = Counter(m.to for m in fake.messages if m.body.startswith(body))
                assert not [to for to, k in got.items() if k > 1], f"duplicates in trial {trial}"
                for state, address, error, _ in rows:
                    if state == "sent":
                        assert got[address] == 1, (trial, address)
                    else:
                        # Not sent: only 'unknown' (it may have left when the worker died), with
                        # its reason, never silently missing.
                        assert state == "unknown" and error, (trial, state, address, error)
            assert len(fake.messages) - baseline <= trials * n
        finally:
            stop(workers)


def test_guarantees_the_rate_limit_holds_across_four_workers(tmp_path, pg_url):
    """rate_limit = 50 on a channel sent through by four workers, against a provider that
    enforces 50 requests a second itself: not one 429 after the first second, and the four
    together never above the limit (each on its own would send at the full rate)."""
    rate, n = 50, 400
    with FakeTwilio(validate=False) as fake:
        # A bucket of half a second: the fake runs in this process, and on a busy machine its
        # threads may take requests late and together. Four processes each at the full rate
        # would still empty it within a second (the bench uses a tenth of a second).
        fake.enforce_rate(rate, burst=rate / 2)
        p = _project(tmp_path, pg_url, fake, n, shards=4, claim_ttl="60s", rate=rate)
        workers = [spawn(p, "worker", "--concurrency", "2") for _ in range(4)]
        try:
            assert p.cli("run", "--now", "2026-11-24T09:30", "--wait", timeout=300).code == 0
            times = sorted(r.received_at for r in fake.requests)
            assert len(fake.messages) == n
            span = times[-1] - times[0]
            achieved = (len(times) - 1) / span
            late = [t for t in fake.rate_limited if t - times[0] > 1.0]
            assert late == []
            assert achieved <= rate * 1.05, achieved
            assert achieved >= rate * 0.5, achieved  # the figure itself: bench/workers_rate.py
        finally:
            stop(workers)
