"""Crash safety: ``outreach run`` killed with SIGKILL at random moments, then rerun until quiet.

The project sends SMS through the real Twilio plugin to a FakeTwilio served by this test process,
so a killed process leaves exactly what production would: rows claimed (``sending``), some handed
over, some requests accepted by the provider whose answer never arrived. Every trial serves a new
hourly newsletter occurrence and is killed at a seeded random moment (either measured from the
start, which lands in start-up, planning or sending, or measured from its first request to the
provider, which lands among the calls in flight). The next trial's run recovers what the previous one
left. After the trials, once the claims expired (``claim_ttl = "1s"``), runs go on until one
finds nothing to do, and then:

* nobody received an occurrence twice at the provider (per recipient and per text);
* every planned message is sent or ``unknown`` with its reason: nothing queued or sending;
* what was sent reached the provider exactly once; ``unknown`` ones at most once (never resent);
* every occurrence that was begun was planned for every customer (nothing silently skipped).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from guarantees_support import (
    BASE_DAY, deliveries, finish, newsletter, spawn, stuck, twilio_project,
    wait_for,
)
from sqlalchemy import select

from outreach.ledger import campaign_state
from outreach_twilio.testing import FakeTwilio

CUSTOMERS = 40
TRIALS = int(os.environ.get("OUTREACH_CRASH_TRIALS", "20"))
SEED = int(os.environ.get("OUTREACH_CRASH_SEED", "20261124"))
FIRST = datetime.fromisoformat(f"{BASE_DAY}T00:10")


def _now(trial: int) -> str:
    return (FIRST + timedelta(hours=trial)).isoformat(timespec="minutes")


def crash_trials(p, fake: FakeTwilio, trials: int, rng: random.Random) -> dict[str, int]:
    """Start ``outreach run`` once per trial and SIGKILL it at a random moment. Returns how it went."""
    outcomes: Counter = Counter()
    for trial in range(trials):
        before = len(fake.requests)
        proc = spawn(p, "run", "--json", "--now", _now(trial))
        if rng.random() < 0.5:
            # From the start: start-up, planning (batches of 5 customers) or sending.
            time.sleep(rng.uniform(0.5, 1.6))
        else:
            # Inside sending: a random moment after the provider saw this run's first request.
            wait_for(lambda: len(fake.requests) > before or proc.poll() is not None, timeout=20)
            time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            proc.kill()
            outcomes["killed"] += 1
        else:
            outcomes["finished first"] += 1
        code, _, err = finish(proc)
        assert "Traceback" not in err, err
        assert code in (-9, 0, 1, 3), (code, err)
    return dict(outcomes)


def run_until_quiet(p, now: str, limit: int = 6) -> list[dict]:
    """Real runs at ``now`` until one recovers, plans and sends nothing."""
    reports = []
    for _ in range(limit):
        result = p.cli("run", "--json", "--now", now)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.code in (0, 1), (result.code, result.stderr)
        report = result.json()
        reports.append(report)
        t = report["totals"]
        if (t["queued"], t["sent"], t["unknown"], t["failed"]) == (0, 0, 0, 0) and \
                report["recovered"] == {"requeued": 0, "unknown": 0}:
            return reports
    raise AssertionError(f"not quiet after {limit} runs: {reports[-1]}")


def expected_body(row) -> str:
    variables = json.loads(row["variables"])
    return f"News {variables['occurrence']} for {variables['customer']['first_name']}"


def lane(root, trials: int, seed: int, *, ledger_url: str | None = None,
         customers: int = CUSTOMERS) -> dict:
    """One project and its own FakeTwilio, put through ``trials`` crashes and then run until quiet."""
    rng = random.Random(seed)
    with FakeTwilio(latency=0.05, validate=False, seed=seed) as fake:
        p = twilio_project(root, fake, customers, ledger_url=ledger_url, concurrency=4,
                           extra='claim_ttl = "1s"\nbatch_size = 5')
        p.campaign("news", newsletter())
        outcomes = crash_trials(p, fake, trials, rng)
        time.sleep(2.2)  # past every claim's expiry: the killed processes' rows can be recovered
        run_until_quiet(p, _now(trials - 1))
        rows = p.messages()
        ledger = p.ledger()
        try:
            with ledger.reader.connect() as conn:
                pending = conn.execute(select(campaign_state.c.pending_fire)).scalars().all()
        finally:
            ledger.close()
        return {"outcomes": outcomes, "rows": rows, "got": deliveries(fake), "pending": pending,
                "customers": customers}


def check_lane(result: dict) -> None:
    """The guarantees, on what one lane left behind (AssertionError naming the first broken one)."""
    rows, got = result["rows"], result["got"]
    assert rows, "nothing was planned at all"
    # Nobody got the same occurrence twice, whatever was killed when.
    assert [k for k, n in got.items() if n > 1] == []
    # No message is left claimed or queued; failed/unknown carry a reason.
    assert stuck(rows) == []
    states = Counter(r["state"] for r in rows)
    assert set(states) <= {"sent", "unknown"}, states  # no provider faults: nothing else to become
    for r in rows:
        n = got[(r["address"], expected_body(r))]
        if r["state"] == "sent":
            assert n == 1, (r["key"], n)  # sent means the provider has it, exactly once
        else:
            assert n <= 1, (r["key"], n)  # unknown: maybe delivered, never resent
            assert "may have been sent" in r["error"]
    # Everything the provider accepted belongs to a planned message.
    assert set(got) <= {(r["address"], expected_body(r)) for r in rows}
    # Every occurrence begun was planned for every customer, and none is left half planned.
    per_occurrence = Counter(r["key"].rsplit(":", 1)[0] for r in rows)
    assert set(per_occurrence.values()) == {result["customers"]}, per_occurrence
    assert result["pending"] == [None]


@pytest.mark.slow
def test_sigkill_at_random_moments_never_doubles_or_loses_a_message(tmp_path):
    """Crash guarantee: a killed run never makes anyone get a message twice, nor silently drops one."""
    lanes = 2  # two projects side by side (CI has two cores); TRIALS crashes in all
    with ThreadPoolExecutor(lanes) as pool:
        futures = [pool.submit(lane, tmp_path / f"shop{i}", TRIALS // lanes + (i < TRIALS % lanes),
                               SEED + i) for i in range(lanes)]
        results = [f.result() for f in futures]
    killed = sum(r["outcomes"].get("killed", 0) for r in results)
    assert killed >= TRIALS // 2, [r["outcomes"] for r in results]
    for result in results:
        check_lane(result)
    unknown = sum(1 for r in results for row in r["rows"] if row["state"] == "unknown")
    sent = sum(1 for r in results for row in r["rows"] if row["state"] == "sent")
    assert sent > 0 and killed > 0, (sent, unknown, killed)
