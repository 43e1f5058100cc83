"""Quiet hours hold at the moment of sending, whatever moved the send.

Planning defers a message planned inside its channel's quiet hours; these tests are about the
messages planned outside them whose send moved into them afterwards: a retry's backoff after a
provider's 503, a ``resend --unknown`` or ``resend --failed``. Through the real command line, with
real zones (the deployment in Los Angeles, a customer in Yerevan), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from guarantees_support import run_inprocess, twilio_channel, twilio_env, twilio_project
from sqlalchemy import text

from outreach.ledger import epoch
from outreach_twilio.testing import FakeTwilio

YEREVAN = ZoneInfo("Asia/Yerevan")  # UTC+4, no DST
QUIET = '[quiet_hours]\nsms = { start = "21:00", end = "08:00" }\n'
#: One try per run, and the next run's after 30 minutes (well under ``max_backoff``).
RETRY = '[retry]\nattempts_per_run = 1\nbackoff = "30m"\nmax_attempts = 5\n'
ANI = "+37491000001"  # in Yerevan
BOB = "+18185550102"  # in Los Angeles, the deployment's zone
CUSTOMERS = (f"c1,Ani,Petrosyan,ani@example.com,{ANI},Asia/Yerevan,hy,yes,yes,\n"
             f"c2,Bob,Smith,bob@example.com,{BOB},America/Los_Angeles,en,yes,yes,")
THANKS = ('rule = "thank_you"\nchannels = ["sms"]\n'
          '[sms]\nbody = "Thank you, {{ customer.first_name }}!"\n')
HELD = "waiting for quiet hours to end: quiet hours 21:00–08:00 in Asia/Yerevan"


def yerevan(text_: str) -> str:
    """A local Yerevan wall time as ``--now`` (with its offset)."""
    return datetime.fromisoformat(text_).replace(tzinfo=YEREVAN).isoformat()


def at(text_: str) -> int:
    return epoch(datetime.fromisoformat(text_).replace(tzinfo=YEREVAN))


@pytest.fixture
def fake(monkeypatch):
    with FakeTwilio(seed=5, validate=False) as provider:
        for k, v in twilio_env(provider).items():  # in-process runs read secrets from os.environ
            monkeypatch.setenv(k, v)
        yield provider


@pytest.fixture
def p(tmp_path, fake, ledger_url):
    """Ani in Yerevan and Bob in Los Angeles; each bought something at 20:45 Yerevan time."""
    p = twilio_project(tmp_path / "shop", fake, 0, ledger_url=ledger_url)
    p.configure(channels=twilio_channel(fake, timeout=2.0, concurrency=1), quiet_hours=QUIET,
                caps=RETRY)
    p.customers(CUSTOMERS)
    # 20:45 in Yerevan is 08:45 in Los Angeles.
    p.events("e1,c1,purchase,2026-11-24T20:45:00+04:00\ne2,c2,purchase,2026-11-24T20:45:00+04:00")
    p.campaign("thanks", THANKS)
    return p


def rows(p) -> dict[str, dict]:
    return {m["address"]: m for m in p.messages()}


def sent_to(fake) -> list[str]:
    return [m.to for m in fake.messages]


def run(p, capsys, now: str, *extra: str) -> tuple[int, dict]:
    code, out, err = run_inprocess(p, "run", "--json", "--now", yerevan(now), *extra, capsys=capsys)
    assert "Traceback" not in err and code in (0, 1), (code, err)
    return code, json.loads(out)


def test_a_retry_moved_into_quiet_hours_waits_for_the_morning_in_the_customers_zone(p, fake,
                                                                                    capsys):
    fake.fail_next(2, status=503)
    code, report = run(p, capsys, "2026-11-24T20:50")
    assert code == 0 and report["totals"]["deferred"] == 2
    planned = {a: r["not_before"] for a, r in rows(p).items()}
    assert all(r["due_at"] > at("2026-11-24T21:00") for r in rows(p).values())  # the backoff

    # 21:30 in Yerevan (09:30 in Los Angeles): Bob's retry goes, Ani's waits for her 08:00.
    code, report = run(p, capsys, "2026-11-24T21:30")
    assert code == 0, report
    assert sent_to(fake) == [BOB]
    ani = rows(p)[ANI]
    assert (ani["state"], ani["due_at"], ani["attempts"], ani["error"]) == (
        "deferred", at("2026-11-25T08:00"), 1, HELD)
    assert ani["claim_owner"] is None and ani["not_before"] == planned[ANI]
    assert {a: r["timezone"] for a, r in rows(p).items()} == {ANI: "Asia/Yerevan",
                                                              BOB: "America/Los_Angeles"}
    assert report["held_for_quiet_hours"] == 1
    [thanks] = report["campaigns"]
    assert (thanks["sent"], thanks["deferred"]) == (1, 1)
    assert thanks["reasons"] == {f"deferred: {HELD}": 1}

    status = p.cli("status")
    assert status.code == 0 and f"1 deferred: {HELD}" in status.stdout, status.stdout
    assert "1 message(s) held for quiet hours" in status.stdout
    human = run_inprocess(p, "dispatch", "--now", yerevan("2026-11-25T07:59"), capsys=capsys)
    assert human[0] == 0 and sent_to(fake) == [BOB]  # not due before 08:00

    code, report = run(p, capsys, "2026-11-25T08:05")
    assert code == 0 and report["held_for_quiet_hours"] == 0
    assert sent_to(fake) == [BOB, ANI]
    ani = rows(p)[ANI]
    assert (ani["state"], ani["attempts"], ani["not_before"]) == ("sent", 2, planned[ANI])


def test_dispatch_alone_holds_too(p, fake, capsys):
    """``outreach dispatch`` (no planning) gates its claims the same way, in a subprocess."""
    p.configure(quiet_hours=QUIET, caps=RETRY)  # outbox channels: no provider involved
    res = p.cli("run", "--no-send", "--now", yerevan("2026-11-24T20:50"))
    assert res.code == 0, res.stderr
    assert {r["state"] for r in p.messages()} == {"queued"}
    res = p.cli("dispatch", "--json", "--now", yerevan("2026-11-24T23:10"))
    assert res.code == 0, res.stderr
    assert [m["to"] for m in p.outbox("sms")] == [BOB]
    assert rows(p)[ANI]["state"] == "deferred" and rows(p)[BOB]["state"] == "sent"
    assert res.json()["held_for_quiet_hours"] == 1


def test_resend_unknown_at_night_waits_and_is_due_at_the_runs_now(p, fake, capsys):
    fake.slow_next(1, seconds=3.0)  # the first answer never comes in time: unknown
    code, report = run(p, capsys, "2026-11-24T20:50")
    assert report["totals"]["unknown"] == 1 and report["totals"]["sent"] == 1, report
    [unknown] = [r for r in p.messages() if r["state"] == "unknown"]
    assert unknown["address"] == ANI  # the first one claimed (one call at a time)
    resent = p.cli("resend", "--unknown", "--yes", "--json")
    assert resent.code == 0 and resent.json()["requeued"] == 1
    row = rows(p)[unknown["address"]]
    # Due as it was (not at the wall clock of the resend): a run replayed at a past --now sends it.
    assert row["due_at"] <= at("2026-11-24T20:50") and row["not_before"] == unknown["not_before"]

    before = len(fake.messages)
    code, report = run(p, capsys, "2026-11-24T23:00")  # 23:00 in Yerevan: held until 08:00 there
    assert report["held_for_quiet_hours"] == 1 and len(fake.messages) == before
    assert (rows(p)[ANI]["state"], rows(p)[ANI]["due_at"]) == ("deferred", at("2026-11-25T08:00"))
    code, report = run(p, capsys, "2026-11-25T08:05")
    assert code == 0 and report["totals"]["sent"] == 1
    assert len(fake.messages) == before + 1
    row = rows(p)[unknown["address"]]
    assert row["state"] == "sent" and row["not_before"] == unknown["not_before"]


def test_resend_failed_at_night_waits_and_keeps_its_planned_time(p, fake, capsys):
    """A failed message queued again by an operator at night waits for the morning; its planned
    time, what caps count, is not moved by the resend nor by the hold."""
    p.customers(CUSTOMERS.splitlines()[0])  # Ani alone
    fake.fail_next(1, status=400)  # refused: a mistake on our side, fixed below
    code, report = run(p, capsys, "2026-11-24T20:50")
    assert code == 1 and rows(p)[ANI]["state"] == "failed", report
    planned = rows(p)[ANI]["not_before"]
    res = p.cli("resend", "--failed", "--yes", "--json")
    assert res.code == 0 and res.json()["requeued"] == 1
    res = p.cli("dispatch", "--json", "--now", yerevan("2026-11-25T03:00"))
    assert res.code == 0 and fake.messages == [], res.stdout
    ani = rows(p)[ANI]
    assert (ani["state"], ani["due_at"], ani["error"], ani["not_before"]) == (
        "deferred", at("2026-11-25T08:00"), HELD, planned)
    assert res.json()["held_for_quiet_hours"] == 1
    res = p.cli("dispatch", "--json", "--now", yerevan("2026-11-25T08:05"))
    assert res.code == 0 and res.json()["totals"]["sent"] == 1
    assert sent_to(fake) == [ANI]
    assert rows(p)[ANI]["not_before"] == planned


def test_a_ledger_without_the_timezone_column_is_migrated_and_uses_the_deployment_zone(
        p, fake, capsys):
    """Messages planned before ``messages.timezone`` existed are held in the deployment's zone."""
    p.configure(quiet_hours=QUIET, caps=RETRY)  # outbox channels; the deployment in Los Angeles
    res = p.cli("run", "--no-send", "--now", "2026-11-24T08:50")  # Los Angeles time
    assert res.code == 0, res.stderr
    ledger = p.ledger()
    try:
        with ledger.engine.begin() as conn:  # the ledger as an earlier version left it
            conn.execute(text("ALTER TABLE messages DROP COLUMN timezone"))
    finally:
        ledger.close()
    # 23:10 in Los Angeles is 11:10 in Yerevan: without her zone, Ani waits for Los Angeles' 08:00.
    res = p.cli("dispatch", "--json", "--now", "2026-11-24T23:10")
    assert res.code == 0 and res.json()["held_for_quiet_hours"] == 2, res.stdout
    la = ZoneInfo("America/Los_Angeles")
    morning = epoch(datetime(2026, 11, 25, 8, 0, tzinfo=la))
    assert {(r["state"], r["due_at"], r["timezone"]) for r in p.messages()} == {
        ("deferred", morning, None)}
    assert "in America/Los_Angeles" in p.messages()[0]["error"]
    assert p.outbox("sms") == []


def test_a_long_dispatch_stops_at_the_start_of_quiet_hours(tmp_path):
    """The send time is the run's ``now`` plus the time the run has taken: what a dispatcher
    claims after 21:00 waits, even when it started at 20:59:59."""
    from outreach.dispatch import Dispatcher
    from outreach.ledger import Ledger
    from outreach.plugins import get_plugins
    from outreach.report import RunReport
    from outreach.testing import Project

    p = Project(tmp_path / "shop")
    p.configure(quiet_hours=QUIET, caps=RETRY)
    p.customers(CUSTOMERS.splitlines()[0])  # Ani, in Yerevan
    p.events("e1,c1,purchase,2026-11-24T20:45:00+04:00")
    p.campaign("thanks", THANKS)
    res = p.cli("run", "--no-send", "--now", yerevan("2026-11-24T20:50"))
    assert res.code == 0, res.stderr
    plugins = get_plugins()
    project = p.load(plugins)
    ledger = Ledger(project.ledger_url)
    try:
        now = datetime(2026, 11, 24, 20, 59, 59, 800_000, tzinfo=YEREVAN)
        dispatcher = Dispatcher(project, plugins, ledger, now.astimezone(timezone.utc),
                                RunReport(now=now.isoformat()), owner="o")
        claimed = ledger.claim("o", 10, epoch(now), 600)
        assert dispatcher._hold_quiet(claimed) == claimed  # 20:59:59.8: it may go
        ledger.release([c.id for c in claimed], "o")
        time.sleep(0.3)  # the run goes on past 21:00
        claimed = ledger.claim("o", 10, epoch(now), 600)
        assert dispatcher._hold_quiet(claimed) == []
    finally:
        ledger.close()
    [row] = p.messages()
    assert (row["state"], row["due_at"], row["error"]) == ("deferred", at("2026-11-25T08:00"), HELD)
