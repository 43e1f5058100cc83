"""`send_at`: a campaign's messages leave at a time of day on each customer's own clock."""

from __future__ import annotations

from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo

import pytest

from outreach.errors import ConfigError
from outreach.schedule import next_local_time

UTC = timezone.utc
HEADER = "id,first_name,email,timezone,locale,consent_email"
WEEKLY = '''
    rule = "newsletter"
    schedule = "0 18 * * 0"
    start = "2026-11-01"
    send_at = "09:00"
    channels = ["email"]
    [email]
    subject = "This week"
    body = "Hello {{ customer.first_name }}"
'''


def planned(rows) -> dict[str, datetime]:
    return {r.customer: datetime.fromisoformat(r.not_before).astimezone(UTC) for r in rows
            if r.decision in ("send", "defer")}


@pytest.fixture
def weekly(outreach_project):
    p = outreach_project
    p.configure(timezone="UTC")
    p.customers(f"""{HEADER}
        yerevan,Ani,ani@example.com,Asia/Yerevan,hy,yes
        la,Ben,ben@example.com,America/Los_Angeles,en,yes
        kiritimati,Kai,kai@example.com,Pacific/Kiritimati,en,yes
        here,Ida,ida@example.com,,en,yes
    """)
    p.campaign("weekly", WEEKLY)
    return p


def test_each_customer_gets_it_at_nine_on_their_own_clock(weekly):
    rows: list = []
    # The occurrence fires on Sunday 29 November at 18:00 UTC; every zone's next 09:00 is a Monday.
    weekly.run("2026-11-29T18:00", rows=rows)
    assert planned(rows) == {
        "yerevan": datetime(2026, 11, 30, 5, 0, tzinfo=UTC),      # 09:00 +04
        "la": datetime(2026, 11, 30, 17, 0, tzinfo=UTC),          # 09:00 -08
        "kiritimati": datetime(2026, 11, 29, 19, 0, tzinfo=UTC),  # 09:00 +14, Monday there
        "here": datetime(2026, 11, 30, 9, 0, tzinfo=UTC),         # no zone: the deployment's
    }
    assert weekly.outbox("email") == []
    weekly.run("2026-11-30T06:00")  # Monday 10:00 in Yerevan, still Sunday night in Los Angeles
    assert sorted(m["to"] for m in weekly.outbox("email")) == ["ani@example.com", "kai@example.com"]
    weekly.run("2026-11-30T17:00")
    assert len(weekly.outbox("email")) == 4
    again: list = []
    weekly.run("2026-11-30T17:05", rows=again)
    assert [r for r in again if r.decision != "already planned"] == []


def test_a_late_run_sends_at_once_where_the_time_has_passed(weekly):
    rows: list = []
    weekly.run("2026-11-30T12:00", rows=rows)  # planned 18 hours after the occurrence
    times = planned(rows)
    assert times["yerevan"] <= datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # sent now, not tomorrow
    assert times["la"] == datetime(2026, 11, 30, 17, 0, tzinfo=UTC)
    assert sorted(m["to"] for m in weekly.outbox("email")) == [
        "ani@example.com", "ida@example.com", "kai@example.com"]


def test_dedupe_keys_do_not_depend_on_the_send_time(weekly):
    rows: list = []
    weekly.run("2026-11-29T18:00", rows=rows)
    assert {r.key for r in rows} == {f"weekly:20261129T180000Z:{c}"
                                     for c in ("yerevan", "la", "kiritimati", "here")}


LA = ZoneInfo("America/Los_Angeles")


@pytest.mark.parametrize("clock, after, expected", [
    # An ordinary day.
    (time(9), datetime(2026, 11, 29, 18, tzinfo=UTC), datetime(2026, 11, 30, 9, tzinfo=LA)),
    # 02:30 does not exist on 8 March 2026 in Los Angeles: the moment of the jump (03:00 PDT).
    (time(2, 30), datetime(2026, 3, 8, 8, tzinfo=UTC), datetime(2026, 3, 8, 10, tzinfo=UTC)),
    # 01:30 happens twice on 1 November 2026: the first one (PDT, 08:30 UTC).
    (time(1, 30), datetime(2026, 11, 1, 7, tzinfo=UTC), datetime(2026, 11, 1, 8, 30, tzinfo=UTC)),
    # Already past today: tomorrow.
    (time(9), datetime(2026, 11, 30, 18, tzinfo=UTC), datetime(2026, 12, 1, 9, tzinfo=LA)),
])
def test_the_next_local_time_across_dst(clock, after, expected):
    # Compared in UTC: an ambiguous local time never equals a time in another zone (PEP 495).
    assert next_local_time(clock, after, LA).astimezone(UTC) == expected.astimezone(UTC)


def test_nine_on_the_customers_clock_moves_with_their_dst(outreach_project):
    """London leaves summer time on 25 October 2026: 09:00 there is 08:00 UTC before, 09:00 after."""
    p = outreach_project
    p.configure(timezone="UTC")
    p.customers(f"{HEADER}\nlondon,Ada,ada@example.com,Europe/London,en-GB,yes\n")
    p.campaign("daily", WEEKLY.replace('"0 18 * * 0"', '"0 0 * * *"').replace("2026-11-01",
                                                                            "2026-10-20"))
    before: list = []
    after: list = []
    p.run("2026-10-24T00:00", rows=before)
    p.run("2026-10-26T00:00", rows=after)
    assert planned(before)["london"] == datetime(2026, 10, 24, 8, 0, tzinfo=UTC)
    assert planned(after)["london"] == datetime(2026, 10, 26, 9, 0, tzinfo=UTC)


def test_an_event_campaign_waits_for_the_next_morning(outreach_project):
    p = outreach_project
    p.customers(f"{HEADER}\nc1,Ani,ani@example.com,Asia/Yerevan,hy,yes\n")
    p.events("e1,c1,purchase,2026-11-24T20:00:00+04:00\ne2,c1,purchase,2026-11-25T08:00:00+04:00")
    p.campaign("thanks", '''
        rule = "thank_you"
        send_at = "10:00"
        channels = ["email"]
        [email]
        subject = "Thank you"
        body = "Order {{ event.id }}"
    ''')
    rows: list = []
    p.run(datetime(2026, 11, 25, 8, 30, tzinfo=ZoneInfo("Asia/Yerevan")), rows=rows)
    assert {r.key: r.not_before for r in rows} == {
        "thanks:e1": "2026-11-25T10:00:00+04:00", "thanks:e2": "2026-11-25T10:00:00+04:00"}
    # A purchase found after 10:00 is thanked at 10:00 the next day, not at once.
    p.events("e3,c1,purchase,2026-11-25T10:30:00+04:00")
    later: list = []
    p.run(datetime(2026, 11, 25, 10, 45, tzinfo=ZoneInfo("Asia/Yerevan")), rows=later)
    assert [(r.key, r.not_before) for r in later] == [("thanks:e3", "2026-11-26T10:00:00+04:00")]


def test_send_at_inside_quiet_hours_is_refused_with_the_reason(outreach_project):
    p = outreach_project
    p.configure(quiet_hours='[quiet_hours]\nsms = { start = "21:00", end = "08:00" }\n'
                            'email = false\n')
    p.campaign("weekly", WEEKLY.replace('"09:00"', '"22:30"').replace('["email"]',
                                                                     '["email", "sms"]')
               + '\n[sms]\nbody = "Hi"\n')
    with pytest.raises(ConfigError) as caught:
        p.load()
    [problem] = caught.value.problems
    assert (problem.file, problem.key) == ("campaigns/weekly.toml", "send_at")
    assert "22:30 falls in the quiet hours of channel 'sms' (21:00–08:00)" in problem.message


def test_send_at_must_be_a_time_of_day(outreach_project):
    p = outreach_project
    p.campaign("weekly", WEEKLY.replace('"09:00"', '"9am"'))
    with pytest.raises(ConfigError, match=r"send_at: expected a time of day such as \"21:00\""):
        p.load()
