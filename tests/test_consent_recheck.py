"""Consent is re-checked before dispatch: a message planned earlier and still waiting (deferred by
quiet hours, queued by ``--no-send``) is not sent once its customer withdraws consent for its
channel in the audience, or leaves the audience.

Scenario tests on SQLite and on PostgreSQL, each with the waiting messages matched in memory (the
usual case) and in a temporary file (what a large backlog takes).
"""

from __future__ import annotations

import pytest

from outreach import recheck
from outreach.ledger import epoch
from outreach.run import parse_now
from outreach.sources.csv_source import CSVSource

QUIET = ('[quiet_hours]\nsms = { start = "21:00", end = "08:00" }\n'
         'email = { start = "21:00", end = "08:00" }\n')
#: What a message deferred overnight records as the reason it waits.
WAITING = "quiet hours 21:00–08:00 in America/Los_Angeles"

# Ani lives in Los Angeles (the project's zone); a purchase late at night waits for 08:00.
ANI_BOTH = "c1,Ani,Petrosyan,ani@example.com,+18185550101,America/Los_Angeles,hy,yes,yes,"
ANI_NO_SMS = "c1,Ani,Petrosyan,ani@example.com,+18185550101,America/Los_Angeles,hy,yes,no,"
ANI_NO_EMAIL = "c1,Ani,Petrosyan,ani@example.com,+18185550101,America/Los_Angeles,hy,no,yes,"
TALIN = "c2,Talin,Kazarian,talin@example.com,+18185550102,America/Los_Angeles,en,yes,yes,"

NIGHT = "2026-11-24T23:00"
MORNING = "2026-11-25T08:05"
SMS_WITHDRAWN = "consent for sms was withdrawn after it was planned"
EMAIL_WITHDRAWN = "consent for email was withdrawn after it was planned"


def thanks(channel: str) -> str:
    table = ('[email]\nsubject = "Thank you, {{ customer.first_name }}"\nbody = "Thanks!"\n'
             if channel == "email" else '[sms]\nbody = "Thank you, {{ customer.first_name }}!"\n')
    return f'rule = "thank_you"\nchannels = ["{channel}"]\n' + table


@pytest.fixture(params=["in memory", "in a file"])
def p(request, project, monkeypatch):
    """The project, with waiting messages matched in memory or in a temporary file."""
    if request.param == "in a file":
        monkeypatch.setattr(recheck, "WAITING_IN_MEMORY", 0)
    project.configure(quiet_hours=QUIET)
    return project


def deferred_overnight(p, *campaigns: str, customers: str = ANI_BOTH) -> None:
    """Plan at 23:00: every campaign's message to c1 waits for 08:00."""
    p.customers(customers)
    p.events("e1,c1,purchase,2026-11-24T22:50:00-08:00")
    for channel in campaigns:
        p.campaign(f"thanks-{channel}", thanks(channel))
    report = p.run(NIGHT)
    assert sum(r.deferred for r in report.campaigns.values()) == len(campaigns)
    assert {m["state"] for m in p.messages()} == {"deferred"}


def states(p) -> dict[str, tuple[str, str | None]]:
    return {m["key"]: (m["state"], m["error"]) for m in p.messages()}


# ---------------------------------------------------------------------------------- withdrawn
def test_sms_deferred_overnight_is_not_sent_after_consent_is_withdrawn(p):
    deferred_overnight(p, "sms")
    p.customers(ANI_NO_SMS)  # she said no to SMS during the night

    rows: list = []
    report = p.run(MORNING, rows=rows)

    assert p.outbox("sms") == []
    assert states(p) == {"thanks-sms:e1": ("failed", SMS_WITHDRAWN)}
    r = report.campaigns["thanks-sms"]
    assert (r.sent, r.skipped, r.failed) == (0, 1, 0)
    assert dict(r.reasons) == {SMS_WITHDRAWN: 1}
    assert report.ok  # a policy refusal, not a failure: exit code 0
    assert [(x.key, x.decision, x.channel, x.reason) for x in rows
            if x.decision == "withdrawn"] == [("thanks-sms:e1", "withdrawn", "sms", SMS_WITHDRAWN)]

    # never sent later either, and not counted again
    later = p.run("2026-11-25T09:00")
    assert p.outbox("sms") == []
    assert later.campaigns["thanks-sms"].skipped == 0


def test_consent_unchanged_the_deferred_sms_is_sent(p):
    deferred_overnight(p, "sms")

    report = p.run(MORNING)

    assert [m["key"] for m in p.outbox("sms")] == ["thanks-sms:e1"]
    assert states(p) == {"thanks-sms:e1": ("sent", None)}
    assert (report.campaigns["thanks-sms"].sent, report.campaigns["thanks-sms"].skipped) == (1, 0)


def test_withdrawing_sms_consent_leaves_a_waiting_email_alone(p):
    deferred_overnight(p, "sms", "email")
    p.customers(ANI_NO_SMS)

    report = p.run(MORNING)

    assert p.outbox("sms") == []
    assert [m["key"] for m in p.outbox("email")] == ["thanks-email:e1"]
    assert states(p) == {"thanks-sms:e1": ("failed", SMS_WITHDRAWN),
                         "thanks-email:e1": ("sent", None)}
    assert (report.campaigns["thanks-email"].sent, report.campaigns["thanks-email"].skipped) == (1, 0)


def test_withdrawing_email_consent_leaves_a_waiting_sms_alone(p):
    deferred_overnight(p, "sms", "email")
    p.customers(ANI_NO_EMAIL)

    p.run(MORNING)

    assert p.outbox("email") == []
    assert [m["key"] for m in p.outbox("sms")] == ["thanks-sms:e1"]
    assert states(p) == {"thanks-email:e1": ("failed", EMAIL_WITHDRAWN),
                         "thanks-sms:e1": ("sent", None)}


def test_only_the_customer_who_withdrew_loses_her_message(p):
    p.customers("\n".join([ANI_BOTH, TALIN]))
    p.events("e1,c1,purchase,2026-11-24T22:50:00-08:00\ne2,c2,purchase,2026-11-24T22:50:00-08:00")
    p.campaign("thanks-sms", thanks("sms"))
    p.run(NIGHT)
    p.customers("\n".join([ANI_NO_SMS, TALIN]))

    report = p.run(MORNING)

    assert [m["key"] for m in p.outbox("sms")] == ["thanks-sms:e2"]
    assert states(p) == {"thanks-sms:e1": ("failed", SMS_WITHDRAWN),
                         "thanks-sms:e2": ("sent", None)}
    assert (report.campaigns["thanks-sms"].sent, report.campaigns["thanks-sms"].skipped) == (1, 1)


def test_a_queued_message_left_for_dispatch_is_withdrawn_too(p):
    # Planned with --no-send (no quiet hours involved): it is queued, due now.
    p.configure()
    p.customers(ANI_BOTH)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("thanks-email", thanks("email"))
    p.run("2026-11-24T10:00", send=False)
    assert states(p) == {"thanks-email:e1": ("queued", None)}
    p.customers(ANI_NO_EMAIL)

    report = p.run("2026-11-24T10:10")

    assert p.outbox("email") == []
    assert states(p) == {"thanks-email:e1": ("failed", EMAIL_WITHDRAWN)}
    assert report.campaigns["thanks-email"].skipped == 1


def test_a_message_already_claimed_by_a_dispatcher_is_left_to_it(p):
    deferred_overnight(p, "sms")
    when = parse_now(MORNING, p.load().tz)
    ledger = p.ledger()
    try:
        [claimed] = ledger.claim("another-dispatcher", 10, epoch(when), 600)
    finally:
        ledger.close()
    p.customers(ANI_NO_SMS)

    report = p.run(MORNING)

    [m] = p.messages()
    assert (m["state"], m["claim_owner"]) == ("sending", "another-dispatcher")
    assert m["error"] == WAITING  # why it waited, not a withdrawal
    assert report.campaigns["thanks-sms"].skipped == 0
    assert p.outbox("sms") == []


class _ClaimedWhileRead(CSVSource):
    """The CSV source, with a dispatcher (another process) claiming every due message just as the
    audience starts streaming: after the run read what waits, before it withdraws anything."""

    type_name = "csv-claimed"
    at: int = 0
    open_ledger = None  # the test's Project.ledger

    def customers(self, report):
        ledger = type(self).open_ledger()
        try:
            assert len(ledger.claim("another-dispatcher", 10, self.at, 600)) == 1
        finally:
            ledger.close()
        yield from super().customers(report)


def test_a_message_claimed_while_the_audience_is_read_is_left_to_its_dispatcher(p):
    import types

    from outreach import hookimpl
    from outreach.plugins import get_plugins

    deferred_overnight(p, "sms")
    p.customers(ANI_NO_SMS)
    _ClaimedWhileRead.at = epoch(parse_now(MORNING, p.load().tz))
    _ClaimedWhileRead.open_ledger = p.ledger
    plugin = types.ModuleType("claimed_while_read")
    plugin.outreach_register_sources = hookimpl(lambda register: register(_ClaimedWhileRead))
    text = (p.root / "outreach.toml").read_text()
    (p.root / "outreach.toml").write_text(text.replace('source = "csv"', 'source = "csv-claimed"'))

    report = p.run(MORNING, plugins=get_plugins(extra=[plugin]))

    [m] = p.messages()
    assert (m["state"], m["claim_owner"]) == ("sending", "another-dispatcher")
    assert m["error"] == WAITING  # why it waited, not a withdrawal
    assert report.campaigns["thanks-sms"].skipped == 0


def test_a_message_recovered_from_a_crashed_dispatcher_is_re_checked_too(p):
    deferred_overnight(p, "sms")
    ledger = p.ledger()
    try:  # a dispatcher claimed it at 08:00 and died before handing it over; the claim expired
        [claimed] = ledger.claim("crashed", 10, epoch(parse_now(MORNING, p.load().tz)), -1)
    finally:
        ledger.close()
    p.customers(ANI_NO_SMS)

    report = p.run(MORNING)

    assert report.recovered == (1, 0)
    assert p.outbox("sms") == []
    assert states(p) == {"thanks-sms:e1": ("failed", SMS_WITHDRAWN)}
    assert report.campaigns["thanks-sms"].skipped == 1


def test_withdraw_takes_only_messages_still_waiting(p):
    deferred_overnight(p, "sms", "email")
    at = epoch(parse_now(MORNING, p.load().tz))
    ledger = p.ledger()
    try:
        [claimed] = ledger.claim("another-dispatcher", 1, at, 600)
        other = "sms" if claimed.channel == "email" else "email"
        assert ledger.withdraw(["c1"], [claimed.channel], "no", dry_run=True) == []
        assert ledger.withdraw(["c1"], [claimed.channel], "no") == []
        assert ledger.withdraw(["c1"], [other], "no", dry_run=True) == [
            (f"thanks-{other}:e1", f"thanks-{other}", "c1", other)]
        assert ledger.withdraw(["c1"], ["email", "sms"], "no") == [
            (f"thanks-{other}:e1", f"thanks-{other}", "c1", other)]
        assert ledger.withdraw(["c1"], ["email", "sms"], "no") == []
    finally:
        ledger.close()
    assert states(p) == {f"thanks-{claimed.channel}:e1": ("sending", WAITING),
                         f"thanks-{other}:e1": ("failed", "no")}



#: A newsletter by SMS at 22:00: in quiet hours, so it waits (deferred) until the morning.
NIGHTLY_SMS = '''
    rule = "newsletter"
    schedule = "0 22 * * *"
    start = "2026-11-20"
    channels = ["sms"]
    [sms]
    body = "Tonight's news, {{ customer.first_name }}"
'''

def test_a_run_with_no_campaign_due_still_withdraws(p):
    p.customers(ANI_BOTH)
    p.campaign("news", NIGHTLY_SMS)
    night = p.run("2026-11-24T22:00")
    assert (night.campaigns["news"].due, night.campaigns["news"].deferred) == (True, 1)
    # She says no to SMS, and somebody else's row in the export is broken.
    p.customers("\n".join([ANI_NO_SMS, "c9,Bad,Row,bad@example.com,,Not/AZone,en,yes,yes,"]))

    morning = p.run(MORNING)

    r = morning.campaigns["news"]
    assert (r.due, r.sent, r.skipped) == (False, 0, 1)
    assert dict(r.reasons) == {SMS_WITHDRAWN: 1}
    assert states(p) == {"news:20261125T060000Z:c1": ("failed", SMS_WITHDRAWN)}
    assert p.outbox("sms") == []
    assert morning.row_problem_count == 1  # the audience was read (for the waiting message)

    # Nothing waits any more: a run with no campaign due does not read the audience at all.
    idle = p.run("2026-11-25T09:00")
    assert idle.row_problem_count == 0
    assert idle.campaigns["news"].skipped == 0


def test_the_light_pass_keeps_a_message_whose_consent_holds(p):
    p.customers(ANI_BOTH)
    p.campaign("news", NIGHTLY_SMS)
    p.run("2026-11-24T22:00")

    morning = p.run(MORNING)

    assert (morning.campaigns["news"].due, morning.campaigns["news"].sent) == (False, 1)
    assert [m["to"] for m in p.outbox("sms")] == ["+18185550101"]


# ---------------------------------------------------------------------------------- absent
def test_a_customer_no_longer_in_the_audience_is_not_written_to(p):
    p.customers("\n".join([ANI_BOTH, TALIN]))
    p.events("e1,c1,purchase,2026-11-24T22:50:00-08:00\ne2,c2,purchase,2026-11-24T22:50:00-08:00")
    p.campaign("thanks-sms", thanks("sms"))
    p.run(NIGHT)
    p.customers(TALIN)  # Ani was deleted from the CRM during the night

    report = p.run(MORNING)

    assert [m["key"] for m in p.outbox("sms")] == ["thanks-sms:e2"]
    assert states(p) == {"thanks-sms:e1": ("failed", recheck.ABSENT),
                         "thanks-sms:e2": ("sent", None)}
    r = report.campaigns["thanks-sms"]
    assert (r.sent, r.skipped) == (1, 1)
    assert dict(r.reasons) == {recheck.ABSENT: 1}


def test_an_empty_audience_is_taken_for_a_broken_export_and_withdraws_nobody(p):
    deferred_overnight(p, "sms")
    p.customers("")  # the export wrote its header and nothing else

    report = p.run(MORNING)

    assert [m["key"] for m in p.outbox("sms")] == ["thanks-sms:e1"]
    assert report.campaigns["thanks-sms"].skipped == 0


class _BreaksAfterOne(CSVSource):
    """The CSV source, failing after its first customer (a connection lost half-way)."""

    type_name = "csv-breaks"

    def customers(self, report):
        for i, customer in enumerate(super().customers(report)):
            if i == 1:
                raise OSError("the CRM connection was reset")
            yield customer


def test_a_source_failing_partway_withdraws_nobody_for_being_absent(p, monkeypatch, tmp_path):
    import tempfile
    import types

    from outreach import hookimpl
    from outreach.plugins import get_plugins

    plugin = types.ModuleType("breaks_after_one")
    plugin.outreach_register_sources = hookimpl(lambda register: register(_BreaksAfterOne))
    p.configure(quiet_hours=QUIET, extra="batch_size = 1")  # Talin's batch is read, then it fails
    p.customers("\n".join([TALIN, ANI_BOTH]))
    p.events("e1,c1,purchase,2026-11-24T22:50:00-08:00")
    p.campaign("thanks-sms", thanks("sms"))
    p.run(NIGHT)
    plugins = get_plugins(extra=[plugin])
    text = (p.root / "outreach.toml").read_text()
    (p.root / "outreach.toml").write_text(text.replace('source = "csv"', 'source = "csv-breaks"'))

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    # Kept, with its traceback (the planner's frames), as a report or a log handler would: a
    # large re-check's temporary file must be gone by then, not at collection.
    with pytest.raises(OSError, match="reset") as failure:
        p.run(MORNING, plugins=plugins)
    assert list(temporary.iterdir()) == [], failure

    # Ani (second in the file) was never read: her message still waits, unsent.
    assert states(p) == {"thanks-sms:e1": ("deferred", WAITING)}
    assert p.outbox("sms") == []


# ---------------------------------------------------------------------------------- dry runs
def test_a_dry_run_says_what_would_be_withdrawn_and_writes_nothing(p):
    deferred_overnight(p, "sms")
    p.customers(ANI_NO_SMS)

    rows: list = []
    dry = p.run(MORNING, dry_run=True, rows=rows)

    assert (dry.campaigns["thanks-sms"].skipped, dict(dry.campaigns["thanks-sms"].reasons)) == (
        1, {SMS_WITHDRAWN: 1})
    assert [(x.customer, x.key, x.decision, x.channel, x.reason) for x in rows
            if x.decision == "withdrawn"] == [("c1", "thanks-sms:e1", "withdrawn", "sms", SMS_WITHDRAWN)]
    assert states(p) == {"thanks-sms:e1": ("deferred", WAITING)}

    plan = p.cli("plan", "--json", "--now", MORNING)
    assert plan.code == 0, plan.stderr
    assert [(c["key"], c["decision"], c["reason"]) for c in plan.json()["candidates"]
            if c["decision"] == "withdrawn"] == [("thanks-sms:e1", "withdrawn", SMS_WITHDRAWN)]
    assert states(p) == {"thanks-sms:e1": ("deferred", WAITING)}

    p.run(MORNING)
    assert states(p) == {"thanks-sms:e1": ("failed", SMS_WITHDRAWN)}


# ---------------------------------------------------------------------------------- scope
def test_a_run_for_another_campaign_leaves_the_waiting_message_alone(p):
    deferred_overnight(p, "sms", "email")
    p.customers("c1,Ani,Petrosyan,ani@example.com,+18185550101,America/Los_Angeles,hy,no,no,")

    report = p.run(MORNING, campaigns=["thanks-email"])

    assert states(p) == {"thanks-sms:e1": ("deferred", WAITING),
                         "thanks-email:e1": ("failed", EMAIL_WITHDRAWN)}
    assert "thanks-sms" not in report.campaigns


def test_a_withdrawn_message_no_longer_counts_towards_caps(p):
    p.configure(quiet_hours=QUIET, caps='[[caps]]\nmax = 1\nper = "1d"\n')
    deferred_overnight(p, "sms")
    # In the morning she says no to SMS, and an order is delivered: a review request by email.
    p.customers(ANI_NO_SMS)
    p.events("e1,c1,purchase,2026-11-24T22:50:00-08:00\nd1,c1,delivered,2026-11-25T08:00:00-08:00")
    p.campaign("review", '''
        rule = "thank_you"
        channels = ["email"]
        [params]
        event = ["delivered"]
        [email]
        subject = "How was it?"
        body = "..."
    ''')

    report = p.run(MORNING)

    assert p.outbox("sms") == []
    assert [m["key"] for m in p.outbox("email")] == ["review:d1"]
    assert (report.campaigns["review"].sent, report.campaigns["review"].capped) == (1, 0)


@pytest.mark.parametrize("rows, sent", [
    ([ANI_NO_SMS, ANI_BOTH], False),  # the first row read decides, as it does for planning
    ([ANI_BOTH, ANI_NO_SMS], True),
])
def test_a_customer_listed_twice_is_judged_by_the_first_row(p, rows, sent):
    p.configure(quiet_hours=QUIET, extra="batch_size = 1")  # the two rows in different batches
    deferred_overnight(p, "sms")
    p.customers("\n".join(rows))

    p.run(MORNING)

    assert [m["key"] for m in p.outbox("sms")] == (["thanks-sms:e1"] if sent else [])
