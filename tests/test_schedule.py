"""When scheduled campaigns are due: baselines, start dates, missed fire times, interrupted
occurrences and cron across DST changes. Scenario tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from outreach.ledger import epoch
from outreach.schedule import due, latest_fire, next_fire

UTC = timezone.utc
LA = ZoneInfo("America/Los_Angeles")
DAILY = "0 10 * * *"
CUSTOMERS = """
    c1,Ani,Petrosyan,ani@example.com,+37491234567,Asia/Yerevan,hy,yes,yes,vip
    c2,Talin,Kazarian,talin@example.com,+18185550102,America/Los_Angeles,en,yes,yes,
"""


def t(text: str) -> datetime:
    """An instant; without an offset it is on the Los Angeles clock."""
    value = datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=LA)).astimezone(UTC)


def news(schedule: str = DAILY, start: str | None = None) -> str:
    lines = ['rule = "newsletter"', f'schedule = "{schedule}"', 'channels = ["email"]']
    if start:
        lines.append(f'start = "{start}"')
    lines += ["[email]", 'subject = "News"', 'body = "Issue of {{ occurrence }}"']
    return "\n".join(lines) + "\n"


def keys(p):
    return [m["key"] for m in p.outbox("email")]


# ---------------------------------------------------------------------------------- due(), unit
def test_event_driven_campaign_is_always_due():
    d = due(None, None, None, t("2026-11-24T10:00"), LA)
    assert (d.due, d.occurrence, d.baseline) == (True, None, None)


def test_new_campaign_without_start_records_a_baseline_and_is_not_due():
    now = t("2026-11-24T10:30")
    d = due(DAILY, None, None, now, LA)
    assert (d.due, d.occurrence, d.baseline) == (False, None, now)
    assert d.note == "new campaign: first occurrence at 2026-11-25T10:00:00-08:00"


def test_after_the_baseline_it_is_due_at_its_next_fire_time():
    baseline = epoch(t("2026-11-24T10:30"))
    assert due(DAILY, None, (baseline, None), t("2026-11-25T09:59"), LA).due is False
    d = due(DAILY, None, (baseline, None), t("2026-11-25T10:00"), LA)  # exactly at now
    assert (d.due, d.occurrence) == (True, t("2026-11-25T10:00"))
    assert d.occurrence.utcoffset().total_seconds() == -8 * 3600  # on the deployment's clock


def test_with_start_the_latest_missed_fire_time_is_caught_up_once():
    d = due(DAILY, t("2026-11-20T00:00"), None, t("2026-11-24T10:30"), LA)
    assert (d.due, d.occurrence, d.baseline) == (True, t("2026-11-24T10:00"), None)
    # once it is recorded, the same occurrence is not due again
    d = due(DAILY, t("2026-11-20T00:00"), (epoch(d.occurrence), None), t("2026-11-24T16:00"), LA)
    assert d.due is False


def test_start_in_the_future_is_not_due_yet():
    d = due(DAILY, t("2026-12-01T00:00"), None, t("2026-11-24T10:30"), LA)
    assert d.due is False


def test_a_fire_time_exactly_at_start_is_due():
    d = due(DAILY, t("2026-11-24T10:00"), None, t("2026-11-24T10:00"), LA)
    assert (d.due, d.occurrence) == (True, t("2026-11-24T10:00"))


def test_missed_fire_times_collapse_into_the_latest():
    last = epoch(t("2026-11-21T10:00"))
    d = due(DAILY, None, (last, None), t("2026-11-24T10:05"), LA)
    assert (d.due, d.occurrence) == (True, t("2026-11-24T10:00"))


def test_pending_occurrence_is_resumed_before_newer_ones():
    last, pending = epoch(t("2026-11-21T10:00")), epoch(t("2026-11-22T10:00"))
    d = due(DAILY, None, (last, pending), t("2026-11-24T10:05"), LA)
    assert (d.due, d.occurrence, d.resumed) == (True, t("2026-11-22T10:00"), True)


def test_latest_and_next_fire_on_the_deployment_clock():
    assert latest_fire(DAILY, t("2026-11-24T10:00"), LA) == t("2026-11-24T10:00")  # at now counts
    assert latest_fire(DAILY, t("2026-11-24T09:59:59"), LA) == t("2026-11-23T10:00")
    assert next_fire(DAILY, t("2026-11-24T10:00"), LA) == t("2026-11-25T10:00")  # strictly after


@pytest.mark.parametrize("now, latest", [
    # fall back on 1 November 2026: 09:00 PDT is 16:00 UTC, 09:00 PST is 17:00 UTC
    ("2026-10-31T09:00", "2026-10-31T16:00:00+00:00"),
    ("2026-11-01T16:30:00+00:00", "2026-10-31T16:00:00+00:00"),  # 08:30 PST: not yet 09:00
    ("2026-11-01T09:00", "2026-11-01T17:00:00+00:00"),
    # spring forward on 8 March 2026
    ("2026-03-07T09:00", "2026-03-07T17:00:00+00:00"),
    ("2026-03-08T08:59", "2026-03-07T17:00:00+00:00"),
    ("2026-03-08T09:00", "2026-03-08T16:00:00+00:00"),
])
def test_cron_fires_at_local_time_across_dst(now, latest):
    fire = latest_fire("0 9 * * *", t(now), LA)
    assert fire == t(latest)
    local = fire.astimezone(LA)
    assert (local.hour, local.minute) == (9, 0)


# ---------------------------------------------------------------------------------- runs
def test_new_campaign_without_start_waits_for_its_next_fire_time(project):
    p = project
    p.customers(CUSTOMERS)
    p.campaign("news", news())

    first = p.run("2026-11-24T10:30")  # first seen after today's 10:00
    assert first.campaigns["news"].due is False
    assert first.campaigns["news"].note == "new campaign: first occurrence at 2026-11-25T10:00:00-08:00"
    assert keys(p) == []
    assert p.run("2026-11-24T23:00").campaigns["news"].sent == 0
    assert p.run("2026-11-25T09:59").campaigns["news"].sent == 0

    report = p.run("2026-11-25T10:00")  # a fire time exactly at now is due
    assert report.campaigns["news"].sent == 2
    assert keys(p) == ["news:20261125T180000Z:c1", "news:20261125T180000Z:c2"]
    assert p.outbox("email")[0]["body"] == "Issue of 2026-11-25T10:00:00-08:00"


def test_a_dry_run_does_not_record_the_baseline(project):
    p = project
    p.customers(CUSTOMERS)
    p.campaign("news", news())

    p.run("2026-11-24T10:30", dry_run=True)
    # still unseen: first real sighting on the 25th after 10:00 sets the baseline there
    assert p.run("2026-11-25T10:30").campaigns["news"].sent == 0
    assert p.run("2026-11-26T10:00").campaigns["news"].sent == 2


def test_with_start_catches_up_once(project):
    p = project
    p.customers(CUSTOMERS)
    p.campaign("news", news(start="2026-11-20"))

    first = p.run("2026-11-24T10:30")
    second = p.run("2026-11-24T12:00")

    assert first.campaigns["news"].sent == 2
    assert (second.campaigns["news"].due, second.campaigns["news"].sent) == (False, 0)
    assert keys(p) == ["news:20261124T180000Z:c1", "news:20261124T180000Z:c2"]


def test_missed_fire_times_collapse_into_one_message_per_customer(project):
    p = project
    p.customers(CUSTOMERS)
    p.campaign("news", news(start="2026-11-20"))

    p.run("2026-11-21T10:05")
    # three days of downtime: the 22nd, 23rd and 24th were missed
    report = p.run("2026-11-24T11:00")

    assert report.campaigns["news"].sent == 2
    assert keys(p) == ["news:20261121T180000Z:c1", "news:20261121T180000Z:c2",
                       "news:20261124T180000Z:c1", "news:20261124T180000Z:c2"]


def test_interrupted_occurrence_is_resumed_with_the_same_keys(project):
    p = project
    p.customers(CUSTOMERS)
    p.campaign("news", news(start="2026-11-20"))
    p.run("2026-11-21T10:05")

    # The run for the 22nd crashed half-way: c1's message was planned (and sent), c2's not yet,
    # and the occurrence was never marked complete.
    p.customers(CUSTOMERS.strip().splitlines()[0])
    p.run("2026-11-22T10:05")
    ledger = p.ledger()
    try:
        ledger.begin_occurrence("news", epoch(t("2026-11-22T10:00")))
    finally:
        ledger.close()
    p.customers(CUSTOMERS)

    rows = []
    resumed = p.run("2026-11-23T10:30", rows=rows)  # the 23rd's fire time has passed too

    r = resumed.campaigns["news"]
    assert (r.due, r.note) == (True, "finishing an interrupted occurrence")
    assert sorted((x.key, x.decision) for x in rows) == [
        ("news:20261122T180000Z:c1", "already planned"),
        ("news:20261122T180000Z:c2", "send"),
    ]
    assert (r.sent, r.already_planned) == (1, 1)

    # the next run serves the 23rd, once
    assert p.run("2026-11-23T10:45").campaigns["news"].sent == 2
    assert p.run("2026-11-23T11:00").campaigns["news"].sent == 0
    assert keys(p) == [
        "news:20261121T180000Z:c1", "news:20261121T180000Z:c2",
        "news:20261122T180000Z:c1", "news:20261122T180000Z:c2",
        "news:20261123T180000Z:c1", "news:20261123T180000Z:c2",
    ]


def test_interrupted_occurrence_left_by_begin_occurrence_alone_is_planned(project):
    p = project
    p.customers(CUSTOMERS)
    p.campaign("news", news())
    p.run("2026-11-21T12:00")  # baseline
    ledger = p.ledger()
    try:
        ledger.begin_occurrence("news", epoch(t("2026-11-22T10:00")))
    finally:
        ledger.close()

    p.run("2026-11-22T10:20")

    assert keys(p) == ["news:20261122T180000Z:c1", "news:20261122T180000Z:c2"]
    ledger = p.ledger()
    try:
        assert ledger.campaign_states()["news"] == (epoch(t("2026-11-22T10:00")), None)
    finally:
        ledger.close()


@pytest.mark.parametrize("runs, expected", [
    # fall back on 1 November: 09:00 PDT on the 31st, 09:00 PST on the 1st and the 2nd
    (["2026-10-31T09:00", "2026-11-01T08:30:00-08:00", "2026-11-01T09:00", "2026-11-02T09:00"],
     ["20261031T160000Z", "20261101T170000Z", "20261102T170000Z"]),
    # spring forward on 8 March: 09:00 PST on the 7th, 09:00 PDT on the 8th
    (["2026-03-07T09:00", "2026-03-08T08:59", "2026-03-08T09:00", "2026-03-09T09:00"],
     ["20260307T170000Z", "20260308T160000Z", "20260309T160000Z"]),
])
def test_cron_in_the_deployment_zone_across_dst(project, runs, expected):
    p = project
    p.customers(CUSTOMERS.strip().splitlines()[1])
    p.campaign("news", news("0 9 * * *", start="2026-01-01"))

    for now in runs:
        p.run(now)

    assert keys(p) == [f"news:{stamp}:c2" for stamp in expected]
    assert [m["body"][-6:] for m in p.outbox("email")] == [
        "-07:00" if stamp.endswith("T160000Z") else "-08:00" for stamp in expected]
    assert all(m["body"][20:25] == "09:00" for m in p.outbox("email"))


def test_cron_uses_the_configured_time_zone(project):
    p = project
    p.configure(timezone="Asia/Yerevan")
    p.customers(CUSTOMERS)
    p.campaign("news", news("0 9 * * *", start="2026-11-20"))

    assert p.run("2026-11-24T08:59:00+04:00").campaigns["news"].sent == 2  # the 23rd's, caught up
    assert p.run("2026-11-24T09:00:00+04:00").campaigns["news"].sent == 2
    assert keys(p)[-1] == "news:20261124T050000Z:c2"
    assert p.outbox("email")[-1]["body"] == "Issue of 2026-11-24T09:00:00+04:00"


def test_daily_cron_in_the_repeated_hour_fires_once(project):
    p = project
    p.customers(CUSTOMERS)
    p.campaign("news", news("30 1 * * *", start="2026-10-01"))
    p.run("2026-10-31T12:00")  # the 31st's issue
    before = len(keys(p))

    # cron every 15 minutes through the night of the change
    for now in ("2026-11-01T01:45:00-07:00", "2026-11-01T01:15:00-08:00",
                "2026-11-01T01:45:00-08:00", "2026-11-01T03:00:00-08:00"):
        p.run(now)

    assert len(keys(p)) - before == 2  # one issue for each of the two customers


def test_hourly_cron_fires_in_the_repeated_hour_too(project):
    """Cron runs an hourly job in every real hour: 01:00 comes twice the night clocks fall back,
    and each is an occurrence (only a job at a fixed hour runs once)."""
    p = project
    p.customers(CUSTOMERS.strip().splitlines()[1])
    p.campaign("news", news("0 * * * *", start="2026-10-31"))

    for now in ("2026-11-01T00:30:00-07:00", "2026-11-01T01:30:00-07:00",
                "2026-11-01T01:30:00-08:00", "2026-11-01T01:45:00-08:00",
                "2026-11-01T02:30:00-08:00"):
        p.run(now)

    assert keys(p) == [f"news:20261101T{h:02d}0000Z:c2" for h in (7, 8, 9, 10)]
    assert [m["body"][-14:] for m in p.outbox("email")] == [
        "00:00:00-07:00", "01:00:00-07:00", "01:00:00-08:00", "02:00:00-08:00"]


@pytest.mark.parametrize("schedule", ["*/5 * * * *", "0 * * * *", "15,45 * * * *",
                                      "30 1 * * *", "0 2 * * *"])
@pytest.mark.parametrize("zone, night", [
    ("America/Los_Angeles", "2026-11-01"), ("America/Los_Angeles", "2026-03-08"),
    ("Europe/London", "2026-10-25"), ("Australia/Lord_Howe", "2026-04-05"),  # a 30-minute change
])
def test_latest_fire_through_dst_changes_matches_the_fire_times_in_order(schedule, zone, night):
    """Every 11 minutes through a night of DST change, the latest fire time is the last of the
    schedule's fire times (as croniter lists them going forward) at or before now."""
    tz = ZoneInfo(zone)
    day = datetime.fromisoformat(night).replace(tzinfo=UTC)
    ahead = croniter(schedule, (day - timedelta(days=3)).astimezone(tz))
    fires: list[datetime] = []
    while not fires or fires[-1] < day + timedelta(days=2):
        fires.append(ahead.get_next(datetime))
    now = day - timedelta(hours=12)  # each change falls within this window (UTC)
    while now < day + timedelta(hours=14):
        expected = max((f for f in fires if f.timestamp() <= now.timestamp()), key=datetime.timestamp)
        for at in (now, now.astimezone(tz)):  # whichever zone ``now`` comes in
            assert latest_fire(schedule, at, tz).timestamp() == expected.timestamp(), (at, schedule)
        now += timedelta(minutes=11)
