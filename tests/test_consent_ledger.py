"""The consent ledger: what a customer changed through outreach (an unsubscribe link, the
preference page, a STOP) outranks the audience export, which will still say ``yes``.

Scenario tests on SQLite and PostgreSQL: the planner, the consent re-check and the dispatcher
each honour the latest change.
"""

from __future__ import annotations

import json

from outreach.dispatch import Dispatcher
from outreach.ledger import epoch
from outreach.plugins import get_plugins
from outreach.report import RunReport
from outreach.run import parse_now

QUIET = ('[quiet_hours]\nsms = { start = "21:00", end = "08:00" }\n'
         'email = { start = "21:00", end = "08:00" }\n')
ANI = "c1,Ani,Petrosyan,ani@example.com,+18185550101,America/Los_Angeles,hy,yes,yes,"
TALIN = "c2,Talin,Kazarian,talin@example.com,+18185550102,America/Los_Angeles,en,yes,yes,"
NIGHT = "2026-11-24T23:00"
MORNING = "2026-11-25T08:05"


def thanks(channel: str, category: str = "marketing") -> str:
    table = ('[email]\nsubject = "Thank you, {{ customer.first_name }}"\nbody = "Thanks!"\n'
             if channel == "email" else '[sms]\nbody = "Thank you, {{ customer.first_name }}!"\n')
    return (f'rule = "thank_you"\nchannels = ["{channel}"]\ncategory = "{category}"\n' + table)


def change(p, customer: str, **kw) -> bool:
    led = p.ledger()
    try:
        kw.setdefault("at", 1_790_000_000)
        return led.record_consent_change(customer, **kw)
    finally:
        led.close()


def dispatch_only(p, now: str) -> RunReport:
    """``outreach dispatch`` in-process: no audience is read, only the ledger."""
    plugins = get_plugins()
    project = p.load(plugins)
    report = RunReport(now=parse_now(now, project.tz))
    led = p.ledger()
    try:
        Dispatcher(project, plugins, led, parse_now(now, project.tz), report).run()
    finally:
        led.close()
    return report


# ---------------------------------------------------------------------------------- the ledger
def test_a_change_with_evidence_is_recorded_once(ledger):
    assert ledger.record_consent_change("c1", consent="email", action="withdrawn", source="link",
                                        evidence="msg-1", at=100)
    assert not ledger.record_consent_change("c1", consent="email", action="withdrawn",
                                            source="link", evidence="msg-1", at=200)
    # without evidence every call is its own change
    assert ledger.record_consent_change("c1", consent="email", action="granted",
                                        source="operator", at=300)
    assert ledger.record_consent_change("c1", consent="email", action="granted",
                                        source="operator", at=301)
    history = ledger.consent_history("c1")
    assert [(h["action"], h["source"], h["created_at"]) for h in history] == [
        ("withdrawn", "link", 100), ("granted", "operator", 300), ("granted", "operator", 301)]


def test_overrides_are_the_latest_action_per_key(ledger):
    ledger.record_consent_change("c1", consent="email", action="withdrawn", source="link", at=100)
    ledger.record_consent_change("c1", consent="sms", action="withdrawn", source="stop", at=110)
    ledger.record_consent_change("c1", consent="sms", action="granted", source="stop", at=120)
    ledger.record_consent_change("c2", category="marketing", action="withdrawn",
                                 source="preferences", at=130)
    assert ledger.consent_overrides(["c1", "c2", "c3"]) == {
        "c1": {"email": "withdrawn", "sms": "granted"},
        "c2": {"category:marketing": "withdrawn"}}
    assert ledger.consent_overrides([]) == {}


def test_a_change_names_a_consent_or_a_category(ledger):
    import pytest

    with pytest.raises(ValueError):
        ledger.record_consent_change("c1", action="withdrawn", source="link", at=1)
    with pytest.raises(ValueError):
        ledger.record_consent_change("c1", consent="email", action="maybe", source="link", at=1)


# ---------------------------------------------------------------------------------- the planner
def test_unsubscribed_customer_is_not_planned_although_the_export_says_yes(project):
    p = project
    p.customers(ANI + "\n" + TALIN)
    p.events("e1,c1,purchase,2026-11-24T10:00:00-08:00\ne2,c2,purchase,2026-11-24T10:00:00-08:00")
    p.campaign("thanks-email", thanks("email"))
    change(p, "c1", consent="email", action="withdrawn", source="link", evidence="k1")

    report = p.run("2026-11-24T12:00")

    assert [m["key"] for m in p.outbox("email")] == ["thanks-email:e2"]
    r = report.campaigns["thanks-email"]
    assert (r.sent, r.skipped) == (1, 1)
    assert dict(r.reasons) == {"no consent for email": 1}


def test_granted_restores_only_what_outreach_withdrew(project):
    p = project
    p.customers(ANI.replace(",yes,yes,", ",no,yes,"))  # the export says no to email
    p.events("e1,c1,purchase,2026-11-24T10:00:00-08:00")
    p.campaign("thanks-email", thanks("email"))
    change(p, "c1", consent="email", action="withdrawn", source="link", at=100)
    change(p, "c1", consent="email", action="granted", source="preferences", at=200)

    p.run("2026-11-24T12:00")
    assert p.outbox("email") == []  # granted does not override the export's no

    p.customers(ANI)  # the export says yes: the withdrawal was undone, she gets it
    p.events("e2,c1,purchase,2026-11-24T11:00:00-08:00")
    p.run("2026-11-24T12:30")
    assert [m["key"] for m in p.outbox("email")] == ["thanks-email:e2"]


def test_a_category_left_refuses_its_campaigns_on_every_channel_not_others(project):
    p = project
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T10:00:00-08:00")
    p.campaign("promo-sms", thanks("sms"))
    p.campaign("receipt-email", thanks("email", "transactional"))
    change(p, "c1", category="marketing", action="withdrawn", source="preferences")

    report = p.run("2026-11-24T12:00")

    assert p.outbox("sms") == []
    assert [m["key"] for m in p.outbox("email")] == ["receipt-email:e1"]
    assert dict(report.campaigns["promo-sms"].reasons) == {
        "the customer unsubscribed from marketing messages": 1}


# ---------------------------------------------------------------------------------- re-check
def test_recheck_withdraws_a_waiting_message_after_an_unsubscribe(project):
    p = project
    p.configure(quiet_hours=QUIET)
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T22:50:00-08:00")
    p.campaign("thanks-sms", thanks("sms"))
    p.campaign("thanks-email", thanks("email"))
    p.run(NIGHT)
    assert {m["state"] for m in p.messages()} == {"deferred"}
    change(p, "c1", consent="sms", action="withdrawn", source="stop", evidence="SM1")

    report = p.run(MORNING)  # the export still says yes to SMS

    assert p.outbox("sms") == []
    assert [m["key"] for m in p.outbox("email")] == ["thanks-email:e1"]
    states = {m["key"]: (m["state"], m["stopped_by"]) for m in p.messages()}
    assert states == {"thanks-sms:e1": ("failed", "consent"), "thanks-email:e1": ("sent", None)}
    assert report.campaigns["thanks-sms"].skipped == 1


def test_recheck_withdraws_waiting_messages_of_a_category_left(project):
    p = project
    p.configure(quiet_hours=QUIET)
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T22:50:00-08:00")
    p.campaign("promo-sms", thanks("sms"))
    p.campaign("receipt-email", thanks("email", "transactional"))
    p.run(NIGHT)
    change(p, "c1", category="marketing", action="withdrawn", source="preferences")

    p.run(MORNING)

    assert p.outbox("sms") == []
    assert [m["key"] for m in p.outbox("email")] == ["receipt-email:e1"]
    failed = {m["key"]: m["error"] for m in p.messages() if m["state"] == "failed"}
    assert failed == {"promo-sms:e1": "the customer unsubscribed from marketing messages after "
                                      "it was planned"}


# ---------------------------------------------------------------------------------- dispatch
def test_dispatch_alone_does_not_send_a_message_whose_consent_was_withdrawn(project):
    p = project
    p.configure(quiet_hours=QUIET)
    p.customers(ANI + "\n" + TALIN)
    p.events("e1,c1,purchase,2026-11-24T22:50:00-08:00\ne2,c2,purchase,2026-11-24T22:50:00-08:00")
    p.campaign("thanks-sms", thanks("sms"))
    p.run(NIGHT)
    assert {m["state"] for m in p.messages()} == {"deferred"}
    change(p, "c1", consent="sms", action="withdrawn", source="link", evidence="thanks-sms:e1")

    report = dispatch_only(p, MORNING)  # no audience read: the ledger alone decides

    assert [m["key"] for m in p.outbox("sms")] == ["thanks-sms:e2"]
    rows = {m["key"]: (m["state"], m["stopped_by"], m["error"]) for m in p.messages()}
    assert rows["thanks-sms:e1"] == ("failed", "consent", "consent for sms was withdrawn by the "
                                                           "customer after it was planned")
    r = report.campaigns["thanks-sms"]
    assert (r.sent, r.skipped, r.failed) == (1, 1, 0)
    assert report.ok


def test_fewer_messages_is_a_cap_of_the_customers_own(project):
    p = project
    p.customers(ANI + "\n" + TALIN)
    p.events("e1,c1,purchase,2026-11-24T10:00:00-08:00\ne2,c2,purchase,2026-11-24T10:00:00-08:00")
    p.campaign("thanks-email", thanks("email"))
    p.campaign("thanks-sms", thanks("sms"))
    led = p.ledger()
    try:
        led.set_customer_cap("c1", 1, 7 * 86400)
        assert led.customer_caps(["c1", "c2"]) == {"c1": (1, 7 * 86400)}
    finally:
        led.close()

    report = p.run("2026-11-24T12:00")  # no deployment cap at all

    sent = sorted(m["key"] for ch in ("email", "sms") for m in p.outbox(ch))
    assert len([k for k in sent if k.endswith(":e1")]) == 1  # Ani asked for one a week
    assert len([k for k in sent if k.endswith(":e2")]) == 2  # Talin did not
    assert sum(r.capped for r in report.campaigns.values()) == 1
    assert epoch(parse_now("2026-11-24T12:00", p.load().tz)) > 0


# ---------------------------------------------------------------------------------- the command
def test_outreach_consent_shows_the_history(sqlite_project):
    p = sqlite_project
    p.customers(ANI)
    r = p.cli("consent", "--customer", "c1")
    assert r.code == 0 and "no consent change recorded for customer 'c1'" in r.stdout
    change(p, "c1", consent="sms", action="withdrawn", source="stop", evidence="SM123",
           at=1_790_000_000)
    change(p, "c1", category="marketing", action="withdrawn", source="preferences",
           at=1_790_000_100)
    led = p.ledger()
    try:
        led.set_customer_cap("c1", 1, 30 * 86400)
    finally:
        led.close()

    r = p.cli("consent", "--customer", "c1")
    assert r.code == 0, r.stderr
    assert "sms" in r.stdout and "SM123" in r.stdout and "category marketing" in r.stdout
    assert "at most 1 marketing message(s) per 30 days" in r.stdout
    data = json.loads(p.cli("consent", "--customer", "c1", "--json").stdout)
    assert data["changes"] == [
        {"at": "2026-09-21T14:13:20+00:00", "consent": "sms", "category": None,
         "action": "withdrawn", "source": "stop", "evidence": "SM123"},
        {"at": "2026-09-21T14:15:00+00:00", "consent": None, "category": "marketing",
         "action": "withdrawn", "source": "preferences", "evidence": ""}]
    assert data["own_cap"] == {"max": 1, "per_seconds": 30 * 86400}
    assert p.cli("consent").code == 2  # --customer is required


# ---------------------------------------------------------------------------------- incremental runs
def test_an_incremental_run_honours_consent_changes_and_reads_feedback_events(project):
    """A run that reads only the new events (outreach.incremental) applies the ledger's consent
    changes to the customers it looks up, and reads feedback answers from the ledger."""
    p = project
    p.configure(quiet_hours=QUIET)
    p.customers(ANI + "\n" + TALIN)
    p.events("e1,c1,purchase,2026-11-24T22:50:00-08:00\ne2,c2,purchase,2026-11-24T22:50:00-08:00")
    p.campaign("thanks-sms", thanks("sms"))
    p.campaign("sorry", 'rule = "apology"\nchannels = ["email"]\n[params]\nevents = ["feedback"]\n'
               'max_rating = 2\n[email]\nsubject = "Sorry"\nbody = "You said {{ event.comment }}"\n')
    first = p.run(NIGHT)
    assert first.planning["mode"] == "full"
    change(p, "c1", consent="sms", action="withdrawn", source="stop", evidence="SM9")
    led = p.ledger()
    try:
        at = epoch(parse_now("2026-11-25T07:00", p.load().tz))
        led.record_customer_event("feedback:m1", "c2", "feedback", at,
                                  {"rating": 1, "comment": "cold bread"})
        led.record_customer_event("feedback:m2", "c1", "feedback", at,
                                  {"rating": 5, "comment": "lovely"})
    finally:
        led.close()

    report = p.run(MORNING)

    assert report.planning["mode"] == "incremental"
    assert [m["key"] for m in p.outbox("sms")] == ["thanks-sms:e2"]  # Ani's waiting SMS withdrawn
    errors = {m["key"]: m["error"] for m in p.messages() if m["state"] == "failed"}
    assert errors == {"thanks-sms:e1": "consent for sms was withdrawn after it was planned"}
    [sorry] = p.outbox("email")
    assert (sorry["key"], sorry["customer"]) == ("sorry:feedback:m1", "c2")
    assert "cold bread" in sorry["body"]
