"""`outreach resend --failed`: the mistakes that still burn messages can be undone, and only those.

A failure an operator has since fixed (a region not enabled at the provider, a template fixed
there) is listed first and queued again only with ``--yes``; the next run sends each once. What a
policy refused (a STOP, a suppression, a consent withdrawn) stays failed unless named by ``--key``,
and a message queued again still meets the suppression list before it is sent. The ledger's
queries are set-wise, tested on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter

import pytest
from guarantees_support import audience, newsletter, phone, twilio_project
from sqlalchemy import update

from outreach.ledger import FailedSelection, Ledger, messages, wall_clock
from outreach_twilio.testing import FakeTwilio

NOW = 1_795_000_000


def _row(ledger: Ledger, key: str, *, campaign: str = "news", state: str = "failed",
         error: str | None = "Twilio refused the message (HTTP 400, code 21408): region",
         stopped_by: str | None = None) -> dict:
    return {"key": key, "campaign": campaign, "version_id": ledger.version, "customer_id": key,
            "channel": "sms", "address": "+37491000000", "name": "Ani", "locale": "hy",
            "variables": "{}", "category": "marketing", "priority": 0, "state": state,
            "not_before": NOW, "due_at": NOW, "run_id": None, "error": error,
            "stopped_by": stopped_by}


def _states(ledger: Ledger) -> dict[str, tuple[str, int]]:
    with ledger.reader.connect() as conn:
        return {r.key: (r.state, r.attempts) for r in conn.execute(
            messages.select().order_by(messages.c.id))}


def test_the_selection_takes_failures_and_leaves_policy_refusals_unless_named(ledger):
    ledger.insert_messages([
        _row(ledger, "region-1"), _row(ledger, "region-2"),
        _row(ledger, "template", campaign="spring", error="SendGrid answered 400: bad template"),
        _row(ledger, "stop", error="Twilio refused the number (code 21610)",
             stopped_by="suppression"),
        _row(ledger, "consent", error="consent for sms was withdrawn after it was planned",
             stopped_by="consent"),
        _row(ledger, "sent", state="sent", error=None), _row(ledger, "unknown", state="unknown"),
    ])
    with ledger.engine.begin() as conn:  # one failed a week ago
        conn.execute(update(messages).where(messages.c.key == "region-2")
                     .values(updated_at=wall_clock() - 7 * 86400, attempts=5))

    def keys(selection: FailedSelection) -> list[str]:
        return [r["key"] for r in ledger.failed_messages(selection)]

    everything = FailedSelection()
    assert keys(everything) == ["region-1", "region-2", "template"]
    assert keys(FailedSelection(campaigns=("spring",))) == ["template"]
    assert keys(FailedSelection(reason="CODE 21408")) == ["region-1", "region-2"]
    assert keys(FailedSelection(reason="100%_")) == []  # LIKE's wildcards are plain text here
    assert keys(FailedSelection(since=wall_clock() - 86400)) == ["region-1", "template"]
    # Named by key, a policy refusal is the operator's to resend.
    assert keys(FailedSelection(keys=("stop", "region-1", "sent"))) == ["region-1", "stop"]
    refused = ledger.failed_counts(everything, refused=True)
    assert sorted((g["stopped_by"], g["count"]) for g in refused) == [("consent", 1),
                                                                     ("suppression", 1)]
    assert [(g["campaign"], g["count"]) for g in ledger.failed_counts(everything)] == [
        ("news", 2), ("spring", 1)]

    assert ledger.resend_failed(FailedSelection(reason="21408")) == 2

    states = _states(ledger)
    assert states["region-1"] == states["region-2"] == ("queued", 0)  # attempts start afresh
    assert {k: states[k][0] for k in ("template", "stop", "consent", "sent", "unknown")} == {
        "template": "failed", "stop": "failed", "consent": "failed", "sent": "sent",
        "unknown": "unknown"}
    assert sorted(c.key for c in ledger.claim("a", 10, NOW, 600)) == ["region-1", "region-2"]
    assert ledger.resend_failed(FailedSelection(keys=("stop",))) == 1
    assert _states(ledger)["stop"][0] == "queued"


def test_a_ledger_from_before_marks_its_policy_refusals_when_opened(ledger_url):
    led = Ledger(ledger_url)
    version = led.store_version("news", "v1", {"name": "news"})
    led.version = version
    led.insert_messages([
        _row(led, "late", error="suppressed after it was planned: operator"),
        _row(led, "withdrawn", error="consent for sms was withdrawn after it was planned"),
        _row(led, "gone", error="the customer is no longer in the audience, so their consent "
                                "cannot be confirmed"),
        _row(led, "region")])
    with led.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE messages DROP COLUMN stopped_by")
    led.close()

    again = Ledger(ledger_url)  # the column comes back, filled from the texts
    try:
        assert [r["key"] for r in again.failed_messages(FailedSelection())] == ["region"]
        assert sum(g["count"] for g in again.failed_counts(FailedSelection(), refused=True)) == 3
    finally:
        again.close()


@pytest.fixture
def fake(monkeypatch):
    with FakeTwilio() as provider:
        yield provider


def test_resend_failed_lists_first_then_the_next_run_sends_each_once(tmp_path, ledger_url, fake):
    p = twilio_project(tmp_path / "shop", fake, 6, ledger_url=ledger_url)
    p.campaign("news", newsletter())
    # Region permissions are not enabled for three numbers yet; one number replied STOP.
    for i in (1, 2, 3):
        fake.error_for(phone(i), status=400, code=21408)
    fake.error_for(phone(4), status=400, code=21610)

    first = p.cli("run", "--json", "--now", "2026-11-24T10:00")
    assert first.code == 1 and first.json()["totals"]["failed"] == 4
    assert len(fake.messages) == 2

    listed = p.cli("resend", "--failed")
    assert listed.code == 0, listed.stderr
    assert "3 failed message(s):" in listed.stdout
    assert "3 × news · sms: Twilio refused the message (HTTP 400, code 21408)" in listed.stdout
    assert "1 message(s) a policy refused stay failed" in listed.stdout
    assert "add --yes to queue these 3 message(s) again" in listed.stdout
    assert Counter(r["state"] for r in p.messages()) == {"sent": 2, "failed": 4}  # only listed

    as_json = p.cli("resend", "--failed", "--reason", "21408", "--since", "1h", "--json").json()
    assert as_json["count"] == 3 and as_json["requeued"] == 0
    assert sorted(r["address"] for r in as_json["failed"]) == [phone(1), phone(2), phone(3)]
    assert as_json["refused_by_policy"]["count"] == 0  # the STOP is not a 21408

    # The operator enables the region at Twilio; meanwhile one of the three asks to hear nothing.
    fake.clear_errors()
    fake.error_for(phone(4), status=400, code=21610)
    assert p.cli("suppress", phone(3), "--reason", "asked by phone").code == 0
    done = p.cli("resend", "--failed", "--yes")
    assert done.code == 0 and "3 message(s) queued again" in done.stdout

    after = p.cli("run", "--json", "--now", "2026-11-24T10:05")
    assert after.code == 0, after.stderr
    totals = after.json()["totals"]
    assert (totals["sent"], totals["suppressed"], totals["failed"]) == (2, 1, 0)
    assert Counter(m.to for m in fake.messages) == {phone(i): 1 for i in (0, 1, 2, 5)}
    states = {r["address"]: r["state"] for r in p.messages()}
    assert states[phone(3)] == "failed" and states[phone(4)] == "failed"

    # Nothing left to resend but the refusals, which stay put.
    nothing = p.cli("resend", "--failed", "--yes", "--json").json()
    assert (nothing["count"], nothing["requeued"], nothing["refused_by_policy"]["count"]) == (
        0, 0, 2)


def test_resend_needs_one_kind_and_filters_only_with_failed(sqlite_project):
    p = sqlite_project
    p.customers(audience(1))
    for args, expected in ((("resend",), "give --unknown or --failed"),
                           (("resend", "--unknown", "--failed"), "give --unknown or --failed"),
                           (("resend", "--unknown", "--campaign", "x"), "go with --failed"),
                           (("resend", "--failed", "--campaign", "nope"), "no campaign named"),
                           (("resend", "--failed", "--since", "yesterday"),
                            "--since: expected an ISO 8601 time")):
        result = p.cli(*args)
        assert result.code == 2 and expected in result.stderr, (args, result.stderr)
    ok = p.cli("resend", "--failed", "--since", "2026-11-24T09:00")
    assert ok.code == 0 and "no failed message matches" in ok.stdout
