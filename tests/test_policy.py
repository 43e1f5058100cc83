"""The policy chain: consent → suppression → address validity → channel choice → quiet hours.

Scenario tests run on SQLite and on PostgreSQL; ``quiet_until`` is also tested on its own.
"""

from __future__ import annotations

from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo

import pytest

from outreach.policy.quiet_hours import quiet_until

UTC = timezone.utc
LA = ZoneInfo("America/Los_Angeles")
QUIET_SMS = '[quiet_hours]\nsms = { start = "21:00", end = "08:00" }\n'

THANKS_SMS = '''
    rule = "thank_you"
    channels = ["sms"]
    [sms]
    body = "Thank you, {{ customer.first_name }}!"
'''
THANKS_EMAIL = '''
    rule = "thank_you"
    channels = ["email"]
    [email]
    subject = "Thank you, {{ customer.first_name }}"
    body = "Thanks!"
'''


def thanks_on(*channels: str) -> str:
    tables = {
        "email": '[email]\nsubject = "Thank you, {{ customer.first_name }}"\nbody = "Thanks!"\n',
        "sms": '[sms]\nbody = "Thank you, {{ customer.first_name }}!"\n',
    }
    order = ", ".join(f'"{c}"' for c in channels)
    return f'rule = "thank_you"\nchannels = [{order}]\n' + "".join(tables[c] for c in channels)


def one_purchase(p, customer_row: str, time_: str = "2026-11-24T09:00:00-08:00") -> None:
    p.customers(customer_row)
    p.events(f"e1,{customer_row.split(',')[0]},purchase,{time_}")


# ---------------------------------------------------------------------------------- consent
def test_no_consent_is_skipped_with_its_reason(project):
    p = project
    one_purchase(p, "c1,Ani,Petrosyan,ani@example.com,+37491234567,Asia/Yerevan,hy,yes,no,")
    p.campaign("thanks", THANKS_SMS)

    rows = []
    report = p.run("2026-11-24T10:00", rows=rows)

    assert p.outbox("sms") == []
    r = report.campaigns["thanks"]
    assert (r.selected, r.queued, r.skipped, r.suppressed) == (1, 0, 1, 0)
    assert dict(r.reasons) == {"no consent for sms": 1}
    assert [(x.key, x.decision, x.channel, x.reason) for x in rows] == [
        ("thanks:e1", "skipped", "sms", "no consent for sms")]


def test_every_row_whose_consent_cannot_be_read_is_reported_and_the_others_kept(tmp_path):
    from outreach.sources.csv_source import CSVSource

    path = tmp_path / "customers.csv"
    path.write_text("id,email,consent_email,consent_sms\n"
                    "c1,a@example.com,yes,maybe\n"
                    "c2,b@example.com,yes,no\n"
                    "c3,c@example.com,yes,maybe\n"
                    "c4,d@example.com,yes,no\n")
    problems: list = []
    source = CSVSource({"customers": str(path), "delimiter": ","}, tmp_path, "UTC")
    customers = list(source.customers(problems.append))
    assert [(c.id, c.consent) for c in customers] == [("c2", {"email"}), ("c4", {"email"})]
    assert [(x.line, x.message) for x in problems] == [
        (2, "consent_sms is 'maybe'; expected yes or no"),
        (4, "consent_sms is 'maybe'; expected yes or no")]


def test_no_consent_for_the_first_channel_chooses_the_next(project):
    p = project
    one_purchase(p, "c1,Ani,Petrosyan,ani@example.com,+37491234567,Asia/Yerevan,hy,yes,no,")
    p.campaign("thanks", thanks_on("sms", "email"))

    rows = []
    report = p.run("2026-11-24T10:00", rows=rows)

    assert [(x.decision, x.channel) for x in rows] == [("send", "email")]
    assert p.outbox("sms") == []
    assert [m["to"] for m in p.outbox("email")] == ["ani@example.com"]
    r = report.campaigns["thanks"]
    assert (r.sent, r.skipped) == (1, 0)


def test_consent_applies_to_transactional_campaigns_too(project):
    p = project
    p.customers("c1,Ani,Petrosyan,ani@example.com,+37491234567,Asia/Yerevan,hy,no,no,")
    p.events("x1,c1,complaint,2026-11-24T09:00:00-08:00")
    p.campaign("sorry", '''
        rule = "apology"
        channels = ["email"]
        [email]
        subject = "Sorry"
        body = "Sorry."
    ''')

    report = p.run("2026-11-24T10:00")

    assert p.outbox("email") == []
    assert dict(report.campaigns["sorry"].reasons) == {"no consent for email": 1}


# ---------------------------------------------------------------------------------- suppression
def test_suppressed_address_is_not_written_to(project):
    p = project
    one_purchase(p, "c1,Ani,Petrosyan,ani@example.com,+37491234567,Asia/Yerevan,hy,yes,yes,")
    p.campaign("thanks", THANKS_EMAIL)
    ledger = p.ledger()
    try:
        assert ledger.suppress("email", "ani@example.com", "bounced", "operator") is True
    finally:
        ledger.close()

    rows = []
    report = p.run("2026-11-24T10:00", rows=rows)

    assert p.outbox("email") == []
    r = report.campaigns["thanks"]
    assert (r.queued, r.suppressed, r.skipped) == (0, 1, 0)
    assert dict(r.reasons) == {"suppressed: bounced": 1}
    assert [(x.decision, x.channel, x.reason) for x in rows] == [
        ("suppressed", "email", "suppressed: bounced")]


def test_suppressed_phone_matches_whatever_way_the_number_is_written(project):
    p = project
    one_purchase(p, "c1,Ani,Petrosyan,ani@example.com,+374 91 234-567,Asia/Yerevan,hy,yes,yes,")
    p.campaign("thanks", thanks_on("sms", "email"))
    ledger = p.ledger()
    try:
        ledger.suppress("phone", "+37491234567", "replied STOP", "twilio:21610")
    finally:
        ledger.close()

    rows = []
    p.run("2026-11-24T10:00", rows=rows)

    # the SMS is suppressed, so the next channel in the campaign's order is chosen
    assert [(x.decision, x.channel) for x in rows] == [("send", "email")]
    assert p.outbox("sms") == []
    assert [m["to"] for m in p.outbox("email")] == ["ani@example.com"]


def test_suppression_matches_an_email_whose_domain_is_written_in_capitals(project):
    p = project
    one_purchase(p, "c1,Ani,Petrosyan,ani@EXAMPLE.COM,+37491234567,Asia/Yerevan,hy,yes,yes,")
    p.campaign("thanks", THANKS_EMAIL)
    ledger = p.ledger()
    try:
        ledger.suppress("email", "ani@example.com", "bounced", "operator")
    finally:
        ledger.close()

    report = p.run("2026-11-24T10:00")

    assert p.outbox("email") == []
    assert report.campaigns["thanks"].suppressed == 1


def test_suppression_matches_an_email_whatever_its_capitals(project):
    p = project
    one_purchase(p, "c1,Ani,Petrosyan,Ani@Example.com,+37491234567,Asia/Yerevan,hy,yes,yes,")
    p.campaign("thanks", THANKS_EMAIL)
    ledger = p.ledger()
    try:
        ledger.suppress("email", "ani@example.com", "unsubscribed", "operator")
    finally:
        ledger.close()

    report = p.run("2026-11-24T10:00")

    assert p.outbox("email") == []
    assert dict(report.campaigns["thanks"].reasons) == {"suppressed: unsubscribed": 1}


def test_suppressed_on_every_channel_is_reported_as_suppressed(project):
    p = project
    one_purchase(p, "c1,Ani,Petrosyan,ani@example.com,+37491234567,Asia/Yerevan,hy,yes,yes,")
    p.campaign("thanks", thanks_on("email", "sms"))
    ledger = p.ledger()
    try:
        ledger.suppress("email", "ani@example.com", "bounced", "operator")
        ledger.suppress("phone", "+37491234567", "replied STOP", "twilio")
    finally:
        ledger.close()

    report = p.run("2026-11-24T10:00")

    r = report.campaigns["thanks"]
    assert (r.suppressed, r.skipped, r.queued) == (1, 0, 0)
    assert dict(r.reasons) == {"email: suppressed: bounced; sms: suppressed: replied STOP": 1}


# ---------------------------------------------------------------------------------- addresses
def test_invalid_email_is_skipped_with_a_reason_naming_it(project):
    p = project
    one_purchase(p, "c1,Ani,Petrosyan,ani@@example,+37491234567,Asia/Yerevan,hy,yes,yes,")
    p.campaign("thanks", THANKS_EMAIL)

    rows = []
    report = p.run("2026-11-24T10:00", rows=rows)

    assert p.outbox("email") == []
    r = report.campaigns["thanks"]
    assert (r.skipped, r.queued) == (1, 0)
    [reason] = r.reasons
    assert reason.startswith("invalid email address 'ani@@example': ")
    assert [(x.decision, x.channel) for x in rows] == [("skipped", "email")]


def test_invalid_phone_is_skipped_with_a_reason_naming_it(project):
    p = project
    one_purchase(p, "c1,Ani,Petrosyan,ani@example.com,12345,Asia/Yerevan,hy,yes,yes,")
    p.campaign("thanks", THANKS_SMS)

    report = p.run("2026-11-24T10:00")

    assert p.outbox("sms") == []
    assert dict(report.campaigns["thanks"].reasons) == {
        "invalid phone number '12345': expected E.164 such as +37491234567 (or set "
        "phone_region in outreach.toml to read national numbers)": 1}


def test_phone_that_parses_but_is_not_a_valid_number(project):
    p = project
    one_purchase(p, "c1,Ani,Petrosyan,ani@example.com,+1 555 000 0000,Asia/Yerevan,hy,yes,yes,")
    p.campaign("thanks", THANKS_SMS)

    report = p.run("2026-11-24T10:00")

    assert dict(report.campaigns["thanks"].reasons) == {
        "invalid phone number '+1 555 000 0000': not a valid number": 1}


def test_missing_phone_is_skipped(project):
    p = project
    one_purchase(p, "c1,Ani,Petrosyan,ani@example.com,,Asia/Yerevan,hy,yes,yes,")
    p.campaign("thanks", THANKS_SMS)

    report = p.run("2026-11-24T10:00")

    assert dict(report.campaigns["thanks"].reasons) == {"no phone number": 1}


def test_phone_is_sent_in_e164(project):
    p = project
    one_purchase(p, "c1,Ani,Petrosyan,ani@example.com,+374 91 23-45-67,Asia/Yerevan,hy,yes,yes,")
    p.campaign("thanks", THANKS_SMS)

    p.run("2026-11-24T10:00")

    assert [m["to"] for m in p.outbox("sms")] == ["+37491234567"]


# ---------------------------------------------------------------------------------- channel order
def test_channel_order_first_receivable_wins(project):
    p = project
    p.customers("""
        c1,Ani,Petrosyan,ani@example.com,+37491234567,Asia/Yerevan,hy,yes,yes,
        c2,Talin,Kazarian,not-an-email,+18185550102,America/Los_Angeles,en,yes,yes,
        c3,Maricel,Dela Cruz,maricel@example.com,+639171234567,Asia/Manila,tl,no,yes,
        c4,Aysel,Mammadova,aysel@example.com,,Asia/Baku,az,no,yes,
    """)
    p.events("""
        e1,c1,purchase,2026-11-24T09:00:00-08:00
        e2,c2,purchase,2026-11-24T09:00:00-08:00
        e3,c3,purchase,2026-11-24T09:00:00-08:00
        e4,c4,purchase,2026-11-24T09:00:00-08:00
    """)
    p.campaign("thanks", thanks_on("email", "sms"))

    rows = []
    report = p.run("2026-11-24T10:00", rows=rows)

    assert sorted((x.customer, x.decision, x.channel) for x in rows) == [
        ("c1", "send", "email"),
        ("c2", "send", "sms"),
        ("c3", "send", "sms"),
        ("c4", "skipped", None),
    ]
    assert [m["to"] for m in p.outbox("email")] == ["ani@example.com"]
    assert [m["to"] for m in p.outbox("sms")] == ["+18185550102", "+639171234567"]
    c4 = next(x for x in rows if x.customer == "c4")
    assert c4.reason == "email: no consent for email; sms: no phone number"
    assert report.campaigns["thanks"].skipped == 1


# ---------------------------------------------------------------------------------- quiet hours
def test_sms_in_quiet_hours_is_deferred_to_local_morning_not_dropped(project):
    p = project
    p.configure(quiet_hours=QUIET_SMS)
    one_purchase(p, "c1,Maricel,Dela Cruz,maricel@example.com,+639171234567,Asia/Manila,tl,yes,yes,",
                 "2026-11-24T22:00:00+08:00")
    p.campaign("thanks", THANKS_SMS)

    rows = []
    report = p.run("2026-11-24T22:30:00+08:00", rows=rows)

    [row] = rows
    assert (row.decision, row.channel) == ("defer", "sms")
    assert row.not_before == "2026-11-25T00:00:00+00:00"  # 08:00 in Manila
    assert row.reason == "quiet hours 21:00–08:00 in Asia/Manila"
    r = report.campaigns["thanks"]
    assert (r.queued, r.deferred, r.sent, r.skipped) == (1, 1, 0, 0)
    assert p.outbox("sms") == []
    assert [m["state"] for m in p.messages()] == ["deferred"]

    assert p.run("2026-11-25T07:59:00+08:00").campaigns["thanks"].sent == 0
    assert p.outbox("sms") == []

    later = p.run("2026-11-25T08:05:00+08:00")
    assert later.campaigns["thanks"].sent == 1
    assert [(m["key"], m["to"]) for m in p.outbox("sms")] == [("thanks:e1", "+639171234567")]
    assert [m["state"] for m in p.messages()] == ["sent"]


def test_quiet_hours_do_not_hold_email(project):
    p = project
    p.configure(quiet_hours=QUIET_SMS)
    one_purchase(p, "c1,Maricel,Dela Cruz,maricel@example.com,+639171234567,Asia/Manila,tl,yes,yes,",
                 "2026-11-24T22:00:00+08:00")
    p.campaign("thanks", THANKS_EMAIL)

    p.run("2026-11-24T22:30:00+08:00")

    assert [m["to"] for m in p.outbox("email")] == ["maricel@example.com"]


def test_quiet_hours_are_on_by_default_for_sms(project):
    p = project
    p.configure(quiet_hours="")
    one_purchase(p, "c1,Maricel,Dela Cruz,maricel@example.com,+639171234567,Asia/Manila,tl,yes,yes,",
                 "2026-11-24T22:00:00+08:00")
    p.campaign("thanks", THANKS_SMS)

    rows = []
    p.run("2026-11-24T22:30:00+08:00", rows=rows)

    assert [(r.decision, r.not_before) for r in rows] == [("defer", "2026-11-25T00:00:00+00:00")]


@pytest.mark.parametrize("run_at, event_at, expected", [
    # fall back: 22:30 PDT on 31 October → 08:00 PST on 1 November
    ("2026-10-31T22:30", "2026-10-31T22:00:00-07:00", "2026-11-01T16:00:00+00:00"),
    # inside the repeated hour (the second 01:30, already PST)
    ("2026-11-01T01:30:00-08:00", "2026-11-01T01:00:00-08:00", "2026-11-01T16:00:00+00:00"),
    # spring forward: 22:30 PST on 7 March → 08:00 PDT on 8 March
    ("2026-03-07T22:30", "2026-03-07T22:00:00-08:00", "2026-03-08T15:00:00+00:00"),
    # after the jump, still night: 03:30 PDT → 08:00 PDT the same day
    ("2026-03-08T03:30", "2026-03-08T03:00:00-07:00", "2026-03-08T15:00:00+00:00"),
])
def test_quiet_hours_across_dst_changes(project, run_at, event_at, expected):
    p = project
    p.configure(quiet_hours=QUIET_SMS)
    one_purchase(p, "c1,Talin,Kazarian,talin@example.com,+18185550102,America/Los_Angeles,en,yes,yes,",
                 event_at)
    p.campaign("thanks", THANKS_SMS)

    rows = []
    p.run(run_at, rows=rows)

    [row] = rows
    assert (row.decision, row.not_before) == ("defer", expected)
    local = datetime.fromisoformat(expected).astimezone(LA)
    assert (local.hour, local.minute) == (8, 0)
    p.run(datetime.fromisoformat(expected))
    assert [m["key"] for m in p.outbox("sms")] == ["thanks:e1"]


def test_quiet_hours_use_the_deployment_zone_when_the_customer_has_none(project):
    p = project
    p.configure(quiet_hours=QUIET_SMS, timezone="Asia/Baku")
    one_purchase(p, "c1,Aysel,Mammadova,aysel@example.com,+994501234567,,az,yes,yes,",
                 "2026-11-24T23:00:00+04:00")
    p.campaign("thanks", THANKS_SMS)

    rows = []
    p.run("2026-11-24T23:10", rows=rows)  # the project's zone: Baku

    assert [(r.decision, r.not_before, r.reason) for r in rows] == [
        ("defer", "2026-11-25T04:00:00+00:00", "quiet hours 21:00–08:00 in Asia/Baku")]


# ---------------------------------------------------------------------------------- quiet_until
NIGHT = (time(21, 0), time(8, 0))
LUNCH = (time(12, 0), time(14, 0))
MANILA = ZoneInfo("Asia/Manila")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize("local, expected", [
    ("2026-11-24T20:59:59+08:00", None),
    ("2026-11-24T21:00:00+08:00", "2026-11-25T08:00:00+08:00"),  # start is inside
    ("2026-11-24T23:59:00+08:00", "2026-11-25T08:00:00+08:00"),
    ("2026-11-25T00:00:00+08:00", "2026-11-25T08:00:00+08:00"),
    ("2026-11-25T07:59:59+08:00", "2026-11-25T08:00:00+08:00"),
    ("2026-11-25T08:00:00+08:00", None),  # end is outside
    ("2026-11-25T12:00:00+08:00", None),
])
def test_quiet_until_window_crossing_midnight(local, expected):
    got = quiet_until(utc(local), *NIGHT, MANILA)
    assert got == (utc(expected) if expected else None)
    if got is not None:
        assert got.tzinfo is not None and got.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("local, expected", [
    ("2026-11-24T11:59:00+08:00", None),
    ("2026-11-24T12:00:00+08:00", "2026-11-24T14:00:00+08:00"),
    ("2026-11-24T13:30:00+08:00", "2026-11-24T14:00:00+08:00"),
    ("2026-11-24T14:00:00+08:00", None),
    ("2026-11-24T23:00:00+08:00", None),
])
def test_quiet_until_window_within_one_day(local, expected):
    assert quiet_until(utc(local), *LUNCH, MANILA) == (utc(expected) if expected else None)


def test_quiet_until_empty_window_is_never_quiet():
    assert quiet_until(utc("2026-11-24T21:00:00+08:00"), time(21, 0), time(21, 0), MANILA) is None


def test_quiet_until_reads_the_clock_of_the_given_zone():
    # 14:30 UTC is 22:30 in Manila (quiet) but 06:30 in Los Angeles (quiet too, ends at 08:00 PST)
    at = utc("2026-11-24T14:30:00+00:00")
    assert quiet_until(at, *NIGHT, MANILA) == utc("2026-11-25T08:00:00+08:00")
    assert quiet_until(at, *NIGHT, LA) == utc("2026-11-24T08:00:00-08:00")
    # 04:30 UTC is 12:30 in Manila (not quiet) and 20:30 in Los Angeles (not quiet)
    assert quiet_until(utc("2026-11-24T04:30:00+00:00"), *NIGHT, MANILA) is None
    assert quiet_until(utc("2026-11-24T04:30:00+00:00"), *NIGHT, LA) is None


def test_quiet_until_across_dst_in_los_angeles():
    # fall back: the night of 31 October is 11 hours long on the wall clock, 12 in reality
    assert quiet_until(utc("2026-10-31T22:30:00-07:00"), *NIGHT, LA) == utc("2026-11-01T16:00:00+00:00")
    # spring forward
    assert quiet_until(utc("2026-03-07T22:30:00-08:00"), *NIGHT, LA) == utc("2026-03-08T15:00:00+00:00")


def test_quiet_until_end_inside_a_spring_forward_gap_moves_to_the_first_real_instant():
    # quiet 01:00–02:30; on 8 March 2026 the clocks jump from 02:00 PST to 03:00 PDT
    got = quiet_until(utc("2026-03-08T01:15:00-08:00"), time(1, 0), time(2, 30), LA)
    assert got == utc("2026-03-08T03:00:00-07:00")
