"""Frequency caps: rolling windows over what a customer was sent or is due to get, all campaigns
together; priority decides who gets the last slot; transactional campaigns are exempt; failed
messages do not count. Scenario tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import types
from datetime import datetime, timedelta

from outreach import caps as caps_mod
from outreach import hookimpl
from outreach.channel import PermanentError
from outreach.channels.outbox import OutboxEmail
from outreach.config import CapRule
from outreach.plugins import get_plugins

ONE_A_DAY = '[[caps]]\nmax = 1\nper = "1d"\n'
ANI = "c1,Ani,Petrosyan,ani@example.com,+37491234567,America/Los_Angeles,hy,yes,yes,vip"


def thanks(priority: int | None = None, channel: str = "email", category: str | None = None,
           rule: str = "thank_you", within: str | None = None) -> str:
    lines = [f'rule = "{rule}"', f'channels = ["{channel}"]']
    if priority is not None:
        lines.append(f"priority = {priority}")
    if category is not None:
        lines.append(f'category = "{category}"')
    if within is not None:
        lines += ["[params]", f'within = "{within}"']
    if channel == "email":
        lines += ["[email]", 'subject = "Hello {{ customer.first_name }}"', 'body = "..."']
    else:
        lines += ["[sms]", 'body = "Hello {{ customer.first_name }}"']
    return "\n".join(lines) + "\n"


def keys(p, channel="email"):
    return [m["key"] for m in p.outbox(channel)]


def test_higher_priority_wins_the_last_slot(project):
    p = project
    p.configure(caps=ONE_A_DAY)
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    # "a-promo" is read first, but "b-thanks" matters more
    p.campaign("a-promo", thanks(priority=5))
    p.campaign("b-thanks", thanks(priority=50))

    rows = []
    report = p.run("2026-11-24T10:00", rows=rows)

    assert keys(p) == ["b-thanks:e1"]
    assert sorted((x.campaign, x.decision, x.reason) for x in rows) == [
        ("a-promo", "capped", "cap of 1 message per 1d reached"),
        ("b-thanks", "send", ""),
    ]
    assert (report.campaigns["a-promo"].capped, report.campaigns["a-promo"].queued) == (1, 0)
    assert dict(report.campaigns["a-promo"].reasons) == {"cap of 1 message per 1d reached": 1}
    assert (report.campaigns["b-thanks"].capped, report.campaigns["b-thanks"].sent) == (0, 1)


def test_priority_decides_whatever_the_names(project):
    p = project
    p.configure(caps=ONE_A_DAY)
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("a-thanks", thanks(priority=50))
    p.campaign("b-promo", thanks(priority=5))

    p.run("2026-11-24T10:00")

    assert keys(p) == ["a-thanks:e1"]


def test_cap_allows_max_messages(project):
    p = project
    p.configure(caps='[[caps]]\nmax = 2\nper = "1d"\n')
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    for name, prio in (("a", 1), ("b", 2), ("c", 3)):
        p.campaign(name, thanks(priority=prio))

    report = p.run("2026-11-24T10:00")

    assert keys(p) == ["b:e1", "c:e1"]
    assert dict(report.campaigns["a"].reasons) == {"cap of 2 messages per 1d reached": 1}


def test_transactional_is_never_capped_and_does_not_count(project):
    p = project
    p.configure(caps=ONE_A_DAY)
    p.customers(ANI)
    p.events("""
        x1,c1,complaint,2026-11-24T08:00:00-08:00
        e1,c1,purchase,2026-11-24T09:00:00-08:00
        x2,c1,complaint,2026-11-24T11:00:00-08:00
    """)
    p.campaign("sorry", '''
        rule = "apology"
        channels = ["email"]
        [email]
        subject = "Sorry"
        body = "..."
    ''')
    p.campaign("thanks", thanks())

    first = p.run("2026-11-24T10:00")
    # the apology (priority 100) did not take the marketing slot: the thank-you went too
    assert keys(p) == ["sorry:x1", "thanks:e1"]
    assert (first.campaigns["sorry"].capped, first.campaigns["thanks"].capped) == (0, 0)

    # the cap is full with the thank-you, and a second apology still goes
    second = p.run("2026-11-24T11:30")
    assert keys(p) == ["sorry:x1", "sorry:x2", "thanks:e1"]
    assert second.campaigns["sorry"].capped == 0


def test_transactional_category_set_in_the_campaign_file_is_exempt(project):
    p = project
    p.configure(caps=ONE_A_DAY)
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("receipt", thanks(priority=1, category="transactional"))
    p.campaign("thanks", thanks(priority=60))
    p.campaign("promo", thanks(priority=5))

    report = p.run("2026-11-24T10:00")

    assert keys(p) == ["receipt:e1", "thanks:e1"]
    assert report.campaigns["promo"].capped == 1


def test_per_channel_cap(project):
    p = project
    p.configure(caps='[[caps]]\nchannel = "sms"\nmax = 1\nper = "1d"\n')
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("sms-high", thanks(priority=50, channel="sms"))
    p.campaign("sms-low", thanks(priority=10, channel="sms"))
    p.campaign("mail-a", thanks(priority=20))
    p.campaign("mail-b", thanks(priority=15))

    report = p.run("2026-11-24T10:00")

    assert keys(p, "sms") == ["sms-high:e1"]
    assert keys(p, "email") == ["mail-a:e1", "mail-b:e1"]  # email is not limited
    assert dict(report.campaigns["sms-low"].reasons) == {"cap of 1 sms message per 1d reached": 1}


def test_per_channel_cap_does_not_count_other_channels(project):
    p = project
    p.configure(caps='[[caps]]\nchannel = "sms"\nmax = 1\nper = "1d"\n')
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("mail", thanks(priority=90))
    p.campaign("text", thanks(priority=10, channel="sms"))

    p.run("2026-11-24T10:00")

    assert keys(p, "email") == ["mail:e1"]
    assert keys(p, "sms") == ["text:e1"]


def test_cap_counts_messages_from_earlier_runs(project):
    p = project
    p.configure(caps=ONE_A_DAY)
    p.customers(ANI)
    p.events("""
        e1,c1,purchase,2026-11-24T09:00:00-08:00
        e2,c1,purchase,2026-11-24T11:00:00-08:00
        e3,c1,purchase,2026-11-25T10:00:00-08:00
    """)
    p.campaign("thanks", thanks(within="3h"))

    day1 = p.run("2026-11-24T10:00")
    assert day1.campaigns["thanks"].sent == 1

    later = p.run("2026-11-24T12:00")  # two hours later: the day's slot is taken
    assert (later.campaigns["thanks"].capped, later.campaigns["thanks"].sent) == (1, 0)
    assert dict(later.campaigns["thanks"].reasons) == {"cap of 1 message per 1d reached": 1}

    day2 = p.run("2026-11-25T11:00")  # 25 hours after the first: allowed again
    assert (day2.campaigns["thanks"].capped, day2.campaigns["thanks"].sent) == (0, 1)
    assert keys(p) == ["thanks:e1", "thanks:e3"]


def test_cap_window_is_rolling_not_per_calendar_day(project):
    p = project
    p.configure(caps=ONE_A_DAY)
    p.customers(ANI)
    p.events("""
        e1,c1,purchase,2026-11-24T23:00:00-08:00
        e2,c1,purchase,2026-11-25T01:00:00-08:00
    """)
    p.campaign("thanks", thanks(within="3h"))

    p.run("2026-11-24T23:30")
    report = p.run("2026-11-25T01:30")  # another calendar day, but two hours later

    assert keys(p) == ["thanks:e1"]
    assert report.campaigns["thanks"].capped == 1


class _Refusing(OutboxEmail):
    """The outbox's email, refusing every message while ``refusing`` is set (as a provider
    refuses an address)."""

    type_name = "refusing-email"
    refusing = True

    def send(self, messages):
        if _Refusing.refusing:
            raise PermanentError("the provider refused this address", code=400)
        return super().send(messages)


def test_failed_messages_do_not_count(project):
    p = project
    p.configure(caps=ONE_A_DAY,
                channels='[channels.email]\nplugin = "refusing-email"\npath = "outbox/email"\n')
    p.customers(ANI)
    p.events("""
        e1,c1,purchase,2026-11-24T09:00:00-08:00
        e2,c1,purchase,2026-11-24T11:00:00-08:00
    """)
    p.campaign("thanks", thanks(within="3h"))
    module = types.ModuleType("refusing_plugin")
    module.outreach_register_channels = hookimpl(lambda register: register(_Refusing))
    plugins = get_plugins(extra=[module])
    _Refusing.refusing = True

    first = p.run("2026-11-24T10:00", plugins=plugins)
    assert (first.campaigns["thanks"].failed, first.campaigns["thanks"].sent) == (1, 0)
    assert [m["state"] for m in p.messages()] == ["failed"]

    _Refusing.refusing = False
    second = p.run("2026-11-24T12:00", plugins=plugins)
    assert (second.campaigns["thanks"].capped, second.campaigns["thanks"].sent) == (0, 1)
    assert keys(p) == ["thanks:e2"]


def test_deferred_message_counts_at_its_planned_time(project):
    """A text held by quiet hours until tomorrow 08:00 takes tomorrow's slot, not today's."""
    p = project
    p.configure(caps='[[caps]]\nmax = 1\nper = "1d"\n',
                quiet_hours='[quiet_hours]\nsms = { start = "21:00", end = "08:00" }\n')
    p.customers(ANI)
    p.events("""
        e1,c1,purchase,2026-11-24T22:00:00-08:00
        v1,c1,visit,2026-11-25T09:00:00-08:00
    """)
    p.campaign("text", thanks(priority=50, channel="sms", within="12h"))
    p.campaign("mail", thanks(priority=10, within="3h").replace(
        "[params]", '[params]\nevent = ["visit"]'))

    rows = []
    p.run("2026-11-24T22:30", rows=rows)  # the SMS is deferred to 08:00 on the 25th
    assert [(r.key, r.decision, r.not_before) for r in rows] == [
        ("text:e1", "defer", "2026-11-25T16:00:00+00:00")]

    rows = []
    report = p.run("2026-11-25T09:30", rows=rows)  # within a day of the deferred send
    assert sorted((r.key, r.decision) for r in rows) == [
        ("mail:v1", "capped"), ("text:e1", "already planned")]
    assert report.campaigns["text"].sent == 1
    assert keys(p, "sms") == ["text:e1"]
    assert keys(p, "email") == []


def test_no_caps_configured_nothing_is_capped(project):
    p = project
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    for name in ("a", "b", "c"):
        p.campaign(name, thanks())

    report = p.run("2026-11-24T10:00")

    assert keys(p) == ["a:e1", "b:e1", "c:e1"]
    assert sum(r.capped for r in report.campaigns.values()) == 0


# ---------------------------------------------------------------------------------- caps module
def test_usage_counts_both_ways_around_a_send_and_by_channel():
    day = CapRule(2, timedelta(days=1))
    sms_day = CapRule(1, timedelta(days=1), "sms")
    t = 1_800_000_000
    usage = caps_mod.Usage([("email", t - 86_399), ("sms", t + 3600), ("email", t + 86_400)])

    assert usage.count(day, "email", t) == 2  # exactly one window away is outside
    assert usage.count(sms_day, "sms", t) == 1
    assert caps_mod.check([day], usage, "email", t) == "cap of 2 messages per 1d reached"
    assert caps_mod.check([sms_day], usage, "sms", t) == "cap of 1 sms message per 1d reached"
    assert caps_mod.check([sms_day], usage, "email", t) is None  # the sms cap does not limit email
    assert caps_mod.check([day], caps_mod.Usage([]), "email", t) is None
    assert caps_mod.widest([day, CapRule(3, timedelta(days=7))]) == 7 * 86_400
    assert caps_mod.widest([]) == 0


# ------------------------------------------------------------------ a cap on one channel
SMS_A_DAY = '[[caps]]\nchannel = "sms"\nmax = 1\nper = "1d"\n'
EMAIL_A_DAY = '[[caps]]\nchannel = "email"\nmax = 1\nper = "1d"\n'


def both(priority: int, channels: str = '"sms", "email"') -> str:
    return (f'rule = "thank_you"\nchannels = [{channels}]\npriority = {priority}\n'
            '[email]\nsubject = "Hello {{ customer.first_name }}"\nbody = "..."\n'
            '[sms]\nbody = "Hello {{ customer.first_name }}"\n')


def test_a_cap_on_one_channel_falls_back_to_the_campaigns_next_channel(project):
    """The day's one SMS went to the more important campaign: the other still reaches the
    customer by email, the next channel it lists, instead of being capped."""
    p = project
    p.configure(caps=SMS_A_DAY)
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("high", thanks(priority=50, channel="sms"))
    p.campaign("low", both(priority=10))

    rows: list = []
    report = p.run("2026-11-24T10:00", rows=rows)

    assert keys(p, "sms") == ["high:e1"]
    assert keys(p, "email") == ["low:e1"]
    assert [(r.key, r.decision, r.channel) for r in rows if r.key == "low:e1"] == [
        ("low:e1", "send", "email")]
    assert (report.campaigns["low"].capped, report.campaigns["low"].sent) == (0, 1)


def test_no_fall_back_to_a_channel_the_customer_cannot_receive(project):
    p = project
    p.configure(caps=SMS_A_DAY)
    p.customers("c1,Ani,Petrosyan,ani@example.com,+37491234567,America/Los_Angeles,hy,no,yes,")
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("high", thanks(priority=50, channel="sms"))
    p.campaign("low", both(priority=10))

    report = p.run("2026-11-24T10:00")

    assert keys(p, "email") == []
    assert report.campaigns["low"].capped == 1
    assert dict(report.campaigns["low"].reasons) == {"cap of 1 sms message per 1d reached": 1}


def test_every_channel_capped_names_each_cap(project):
    p = project
    p.configure(caps=SMS_A_DAY + EMAIL_A_DAY)
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("a-sms", thanks(priority=50, channel="sms"))
    p.campaign("b-email", thanks(priority=40))
    p.campaign("c-both", both(priority=10))

    report = p.run("2026-11-24T10:00")

    assert (keys(p, "sms"), keys(p, "email")) == (["a-sms:e1"], ["b-email:e1"])
    assert dict(report.campaigns["c-both"].reasons) == {
        "sms: cap of 1 sms message per 1d reached; email: cap of 1 email message per 1d reached": 1}


def test_a_cap_on_every_channel_is_not_escaped_by_another_channel(project):
    p = project
    p.configure(caps=ONE_A_DAY)
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("high", thanks(priority=50, channel="sms"))
    p.campaign("low", both(priority=10))

    report = p.run("2026-11-24T10:00")

    assert keys(p, "email") == []
    assert dict(report.campaigns["low"].reasons) == {"cap of 1 message per 1d reached": 1}


def test_a_fall_back_deferred_to_the_morning_counts_what_is_planned_around_the_morning(project):
    """At 23:00 the day's email is spent, so the campaign falls back to SMS, held by quiet hours
    until 08:00. An SMS already planned for the next night (01:00, well past what the batch read
    for a send at 23:00) is within a day of 08:00: the SMS cap holds."""
    p = project
    p.configure(caps=SMS_A_DAY + EMAIL_A_DAY,
                quiet_hours='[quiet_hours]\nsms = { start = "21:00", end = "08:00" }\n')
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T22:00:00-08:00")
    p.campaign("a-email", thanks(priority=50))
    p.campaign("b-both", both(priority=10, channels='"email", "sms"'))
    ledger = p.ledger()
    try:
        version = ledger.store_version("earlier", "v1", {"name": "earlier"})
        at = int(datetime.fromisoformat("2026-11-26T01:00:00-08:00").timestamp())
        ledger.insert_messages([{
            "key": "earlier:c1", "campaign": "earlier", "version_id": version, "customer_id": "c1",
            "channel": "sms", "address": "+37491234567", "name": "Ani Petrosyan", "locale": "hy",
            "variables": "{}", "category": "marketing", "priority": 0, "state": "deferred",
            "not_before": at, "due_at": at, "run_id": None}])
    finally:
        ledger.close()

    rows: list = []
    report = p.run("2026-11-24T23:00", rows=rows)

    assert keys(p, "email") == ["a-email:e1"]
    assert dict(report.campaigns["b-both"].reasons) == {
        "email: cap of 1 email message per 1d reached; sms: cap of 1 sms message per 1d reached": 1}

    assert keys(p, "sms") == []
