"""Provider faults: 429s, 5xx and answers slower than the timeout, across many runs.

The Twilio plugin sends to a FakeTwilio answering 30 % of requests with 429 or 503 and holding 5 %
past the channel's timeout (after accepting them: the ambiguous case). Runs go on, the clock
(``--now``) moving past the backoffs, until nothing is left to send. Then every message is sent, or
``unknown`` for the ambiguous ones, and nobody got anything twice; ``outreach status`` shows it.
Also: a retryable message waits in the ledger for its backoff and is given up after
``max_attempts``; and ``outreach resend --unknown`` resends only on an operator's ``--yes``.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta

import pytest
from guarantees_support import (
    newsletter, per_recipient, phone, run_inprocess, stuck, twilio_env, twilio_project,
)

from outreach_twilio.testing import FakeTwilio

FIRST = datetime.fromisoformat("2026-11-24T00:10")


def _at(delta: timedelta) -> str:
    return (FIRST + delta).isoformat(timespec="seconds")


@pytest.fixture
def fake(monkeypatch):
    with FakeTwilio(seed=11, validate=False) as provider:
        for k, v in twilio_env(provider).items():  # in-process runs read secrets from os.environ
            monkeypatch.setenv(k, v)
        yield provider


@pytest.mark.slow
def test_429_503_and_timeouts_end_sent_or_unknown_and_never_twice(tmp_path, fake, capsys):
    """Faults guarantee: under 429/503/timeouts every message ends sent or unknown, none sent twice."""
    customers = 60
    fake.fault_rate(rate_429=0.15, rate_503=0.15, rate_slow=0.05, slow_seconds=1.0,
                    retry_after=0.05)
    p = twilio_project(tmp_path / "shop", fake, customers, timeout=0.3, concurrency=30, tables="""
        [retry]
        max_attempts = 30
        attempts_per_run = 2
        backoff = "1s"
        max_backoff = "4s"
        max_wait = "1s"
    """)
    p.campaign("news", newsletter())
    codes = []
    for minute in range(15):
        code, out, err = run_inprocess(p, "run", "--json", "--now", _at(timedelta(minutes=minute)),
                                       capsys=capsys)
        assert "Traceback" not in err and code in (0, 1), (code, err)
        report = json.loads(out)
        t = report["totals"]
        assert code == (1 if t["unknown"] or t["failed"] else 0)  # cron can tell
        codes.append(code)
        states = Counter(r["state"] for r in p.messages())
        if not states.keys() & {"queued", "deferred", "sending"}:
            break
    else:
        raise AssertionError(f"still not done after 15 runs: {states}")
    rows = p.messages()
    got = per_recipient(fake)

    assert len(rows) == customers
    assert stuck(rows) == []
    by_state = Counter(r["state"] for r in rows)
    assert set(by_state) <= {"sent", "unknown"}, by_state
    for r in rows:
        if r["state"] == "sent":
            assert got[r["address"]] == 1, r["key"]
        else:
            assert got[r["address"]] <= 1, r["key"]  # accepted before the answer came late
            assert "within 0.3 s" in r["error"] and "may have been sent" in r["error"]
    assert max(got.values()) == 1
    # The faults really happened: retried in-process and deferred across runs, and some ambiguous.
    assert len(fake.requests) > customers
    assert any(r["attempts"] > 1 for r in rows if r["state"] == "sent")
    assert by_state["unknown"] >= 1 and by_state["sent"] >= customers // 2

    code, out, err = run_inprocess(p, "status", "--json", capsys=capsys)
    assert code == 0 and "Traceback" not in err
    shown = json.loads(out)
    assert shown["states"] == {"queued": 0, "sending": 0, "deferred": 0, "sent": by_state["sent"],
                               "failed": 0, "unknown": by_state["unknown"]}
    assert sum(x["count"] for x in shown["problems"] if x["state"] == "unknown") == by_state["unknown"]


def test_a_retryable_failure_waits_for_its_backoff_then_is_given_up(tmp_path, fake, capsys):
    """Nothing-lost guarantee: a failing message is retried by later runs after its backoff, then failed with a reason."""
    fake.fail_next(50, status=503, body=fake.error_body(503, "Service Unavailable"))
    p = twilio_project(tmp_path / "shop", fake, 1, tables="""
        [retry]
        max_attempts = 3
        attempts_per_run = 1
        backoff = "1m"
        max_backoff = "1h"
        max_wait = "1s"
    """)
    p.campaign("news", newsletter())

    def run(delta: timedelta) -> dict:
        code, out, err = run_inprocess(p, "run", "--json", "--now", _at(delta), capsys=capsys)
        assert "Traceback" not in err, err
        return {"code": code, **json.loads(out)}

    first = run(timedelta(0))
    [row] = p.messages()
    assert (first["code"], row["state"], row["attempts"]) == (0, "deferred", 1)
    assert "attempt 1 of 3" in row["error"]
    # The backoff lives in the ledger: 1 minute (±20 %) after the run's --now.
    planned = row["not_before"]
    assert planned + 48 <= row["due_at"] <= planned + 73
    asked = len(fake.requests)
    run(timedelta(seconds=30))  # not due yet: not tried
    assert len(fake.requests) == asked and p.messages()[0]["state"] == "deferred"
    run(timedelta(minutes=2))  # due: second attempt, backoff doubled
    [row] = p.messages()
    assert (row["state"], row["attempts"], len(fake.requests)) == ("deferred", 2, asked + 1)
    assert row["due_at"] >= planned + 120 + 96
    last = run(timedelta(minutes=10))  # third and last attempt
    [row] = p.messages()
    assert (last["code"], row["state"], row["attempts"]) == (1, "failed", 3)
    assert "gave up after 3 attempts" in row["error"] and "503" in row["error"]
    run(timedelta(minutes=45))  # given up means given up (same hourly occurrence)
    assert len(fake.requests) == asked + 2 and fake.messages == []


def test_resend_unknown_lists_first_and_resends_only_with_yes(tmp_path, fake, capsys):
    """Handed-once guarantee: an unknown message is resent only on `resend --unknown --yes`, then delivered once more."""
    fake.slow_next(1, seconds=1.0)  # the first request is accepted, but answered after the timeout
    p = twilio_project(tmp_path / "shop", fake, 3, timeout=0.3, concurrency=1)
    p.campaign("news", newsletter())
    code, out, _ = run_inprocess(p, "run", "--json", "--now", _at(timedelta(0)), capsys=capsys)
    assert code == 1 and json.loads(out)["totals"]["unknown"] == 1
    [unknown] = [r for r in p.messages() if r["state"] == "unknown"]
    assert per_recipient(fake) == Counter({phone(0): 1, phone(1): 1, phone(2): 1})
    assert unknown["address"] == phone(0)

    # Later runs never resend it on their own.
    run_inprocess(p, "run", "--json", "--now", _at(timedelta(minutes=40)), capsys=capsys)
    code, out, err = run_inprocess(p, "resend", "--unknown", capsys=capsys)
    assert code == 0 and unknown["key"] in out and "--yes" in out, (code, out, err)
    assert [r["state"] for r in p.messages() if r["key"] == unknown["key"]] == ["unknown"]
    code, out, _ = run_inprocess(p, "dispatch", "--json", capsys=capsys)
    assert json.loads(out)["totals"]["sent"] == 0
    assert per_recipient(fake)[phone(0)] == 1

    resent = p.cli("resend", "--unknown", "--yes", "--json")
    assert resent.code == 0 and resent.json()["requeued"] == 1
    code, out, _ = run_inprocess(p, "dispatch", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["totals"]["sent"] == 1
    assert per_recipient(fake) == Counter({phone(0): 2, phone(1): 1, phone(2): 1})
    assert [r["state"] for r in p.messages()] == ["sent", "sent", "sent"]
    # And only once more: nothing is left to resend.
    code, out, _ = run_inprocess(p, "resend", "--unknown", "--yes", "--json", capsys=capsys)
    assert json.loads(out) == {"unknown": [], "requeued": 0}
