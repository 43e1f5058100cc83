"""Behaviour of the built-in rules: thank_you, newsletter, reminder, apology and birthday.

Each test writes a campaign file, a customer list and events, runs at given times (in the project's
time zone, America/Los_Angeles, unless an offset is given) and looks at what was sent, what the
report says, or the plan rows. Scenario tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from outreach.errors import ConfigError

ANI = "c1,Ani,Petrosyan,ani@example.com,+37491234567,America/Los_Angeles,hy,yes,yes,vip"
TALIN = "c2,Talin,Kazarian,talin@example.com,+18185550102,America/Los_Angeles,en,yes,yes,"

THANKS = '''
    rule = "thank_you"
    channels = ["email"]
    [email]
    subject = "Thank you, {{ customer.first_name }}"
    body = "Thanks for order {{ event.id }}."
'''


def sent_keys(p, channel="email"):
    return [m["key"] for m in p.outbox(channel)]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


# ---------------------------------------------------------------------------------- thank_you
def test_thank_you_once_per_purchase_within_window(project):
    p = project
    p.customers("\n".join([ANI, TALIN]))
    p.events("""
        e1,c1,purchase,2026-11-24T09:00:00-08:00
        e2,c1,purchase,2026-11-23T15:00:00-08:00
        e3,c2,purchase,2026-11-24T08:30:00-08:00
        e4,c2,refund,2026-11-24T08:45:00-08:00
    """)
    p.campaign("thanks", THANKS)

    report = p.run("2026-11-24T10:00")

    assert sent_keys(p) == ["thanks:e1", "thanks:e2", "thanks:e3"]
    assert [m["to"] for m in p.outbox("email")] == ["ani@example.com", "ani@example.com",
                                                   "talin@example.com"]
    assert p.outbox("email")[0]["subject"] == "Thank you, Ani"
    assert p.outbox("email")[0]["body"] == "Thanks for order e1."
    r = report.campaigns["thanks"]
    assert (r.selected, r.queued, r.sent, r.skipped) == (3, 3, 3, 0)


def test_thank_you_not_for_purchases_older_than_within(project):
    p = project
    p.customers("\n".join([ANI, TALIN]))
    p.events("""
        e1,c1,purchase,2026-11-21T09:00:00-08:00
        e2,c2,purchase,2026-11-22T10:00:00-08:00
    """)
    p.campaign("thanks", THANKS)  # within defaults to 2d

    report = p.run("2026-11-24T10:00")

    # e1 is three days old; e2 exactly two days old is still within the window
    assert sent_keys(p) == ["thanks:e2"]
    assert report.campaigns["thanks"].selected == 1


def test_thank_you_not_twice_across_reruns(project):
    p = project
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("thanks", THANKS)

    first = p.run("2026-11-24T10:00")
    second = p.run("2026-11-24T10:15")
    third = p.run("2026-11-25T10:00")

    assert first.campaigns["thanks"].sent == 1
    # The second run reads only the events after the first's (none); the third, a day later,
    # makes the daily full pass and finds e1 planned already.
    assert second.planning["mode"] == "incremental" and third.planning["mode"] == "full"
    for later, again in ((second, 0), (third, 1)):
        r = later.campaigns["thanks"]
        assert (r.selected, r.queued, r.sent, r.already_planned) == (0, 0, 0, again)
    assert sent_keys(p) == ["thanks:e1"]
    assert [m["state"] for m in p.messages()] == ["sent"]


def test_thank_you_ignores_events_from_the_future_of_the_run(project):
    p = project
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("thanks", THANKS)

    report = p.run("2026-11-24T08:00")

    assert sent_keys(p) == []
    assert report.campaigns["thanks"].selected == 0


FEEDBACK = '''
    rule = "thank_you"
    channels = ["email"]
    [params]
    delay = "3d"
    within = "2d"
    [email]
    subject = "How was it, {{ customer.first_name }}?"
    body = "Tell us about order {{ event.id }}."
'''


def test_feedback_delay_is_not_sent_before_its_time(project):
    p = project
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("feedback", FEEDBACK)

    for early in ("2026-11-24T10:00", "2026-11-26T10:00", "2026-11-27T08:59"):
        report = p.run(early)
        assert report.campaigns["feedback"].sent == 0, early
    assert sent_keys(p) == []

    report = p.run("2026-11-27T09:00")
    assert report.campaigns["feedback"].sent == 1
    assert sent_keys(p) == ["feedback:e1"]
    assert p.outbox("email")[0]["subject"] == "How was it, Ani?"
    # and never again
    assert p.run("2026-11-28T09:00").campaigns["feedback"].sent == 0
    assert sent_keys(p) == ["feedback:e1"]


def test_feedback_delay_is_decided_when_it_falls_due(project):
    """A delayed message is decided when its time comes, with the consent and suppressions of then:
    nothing is planned right after the purchase, and a customer who withdrew consent meanwhile
    is not written to."""
    p = project
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("feedback", FEEDBACK)

    rows = []
    p.run("2026-11-24T10:00", dry_run=True, rows=rows)
    assert rows == []

    p.customers(ANI.replace("yes", "no"))
    rows = []
    p.run("2026-11-27T09:30", dry_run=True, rows=rows)
    assert [(r.key, r.decision) for r in rows] == [("feedback:e1", "skipped")]


def test_feedback_delay_planned_ahead_is_sent_by_a_later_run(project):
    """Whenever the delayed message is planned, it leaves at its time, not before, exactly once."""
    p = project
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("feedback", FEEDBACK)

    p.run("2026-11-24T10:00")
    p.run("2026-11-27T08:00")
    assert sent_keys(p) == []
    p.run("2026-11-27T09:30")
    assert sent_keys(p) == ["feedback:e1"]
    [row] = p.messages()
    assert row["state"] == "sent"
    assert row["not_before"] >= int(when("2026-11-27T17:00:00+00:00").timestamp())


def test_feedback_delay_gives_up_after_within(project):
    p = project
    p.customers(ANI)
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("feedback", FEEDBACK)

    # the deployment was down from the purchase until after due + within (27th + 2d)
    report = p.run("2026-11-29T09:01")

    assert sent_keys(p) == []
    assert report.campaigns["feedback"].selected == 0


# ---------------------------------------------------------------------------------- newsletter
NEWSLETTER = '''
    rule = "newsletter"
    schedule = "0 10 * * *"
    start = "2026-11-20"
    channels = ["email"]
    {extra}
    [email]
    subject = "News for {{ customer.first_name }}"
    body = "Issue of {{ occurrence }}"
'''


def test_newsletter_once_per_occurrence_per_customer(project):
    p = project
    p.customers("\n".join([ANI, TALIN]))
    p.campaign("news", NEWSLETTER.replace("{extra}", ""))

    first = p.run("2026-11-24T10:05")
    again = p.run("2026-11-24T16:00")
    next_day = p.run("2026-11-25T10:00")

    assert first.campaigns["news"].sent == 2
    assert (again.campaigns["news"].due, again.campaigns["news"].sent) == (False, 0)
    assert next_day.campaigns["news"].sent == 2
    assert sent_keys(p) == [
        "news:20261124T180000Z:c1", "news:20261124T180000Z:c2",
        "news:20261125T180000Z:c1", "news:20261125T180000Z:c2",
    ]
    assert p.outbox("email")[0]["body"] == "Issue of 2026-11-24T10:00:00-08:00"


def test_newsletter_where_filter(project):
    p = project
    p.customers("\n".join([ANI, TALIN]))
    p.campaign("vip-news", NEWSLETTER.replace("{extra}", "where = \"'vip' in customer.tags\""))

    report = p.run("2026-11-24T10:05")

    assert [m["to"] for m in p.outbox("email")] == ["ani@example.com"]
    r = report.campaigns["vip-news"]
    assert (r.selected, r.sent, r.skipped) == (1, 1, 0)


TIER_HEADER = ("id,first_name,last_name,email,phone,timezone,locale,consent_email,consent_sms,"
               "tags,tier")
TIERS = (TIER_HEADER + "\n"
         "c1,Ani,Petrosyan,ani@example.com,,America/Los_Angeles,hy,yes,no,,gold\n"
         "c2,Talin,Kazarian,talin@example.com,,America/Los_Angeles,en,yes,no,,\n"
         "c3,Maricel,Dela Cruz,maricel@example.com,,America/Los_Angeles,tl,yes,no,,silver\n")


def test_newsletter_where_on_an_attribute_column(project):
    p = project
    p.customers(TIERS)
    p.campaign("gold-news", NEWSLETTER.replace("{extra}", "where = \"customer.tier == 'gold'\""))

    report = p.run("2026-11-24T10:05")

    assert [m["customer"] for m in p.outbox("email")] == ["c1"]
    assert report.campaigns["gold-news"].selected == 1


def test_newsletter_where_treats_an_empty_cell_as_a_value(project):
    p = project
    p.customers(TIERS)
    p.campaign("not-gold", NEWSLETTER.replace("{extra}", "where = \"customer.tier != 'gold'\""))

    report = p.run("2026-11-24T10:05")

    assert [m["customer"] for m in p.outbox("email")] == ["c2", "c3"]
    assert dict(report.campaigns["not-gold"].reasons) == {}


def test_newsletter_requires_a_schedule(sqlite_project):
    p = sqlite_project
    p.campaign("news", '''
        rule = "newsletter"
        channels = ["email"]
        [email]
        subject = "News"
        body = "..."
    ''')

    with pytest.raises(ConfigError) as caught:
        p.load()

    assert [(pr.file, pr.key, pr.message) for pr in caught.value.problems] == [
        ("campaigns/news.toml", "schedule", "the newsletter rule needs a cron schedule"),
    ]


# ---------------------------------------------------------------------------------- reminder
WINBACK = '''
    rule = "reminder"
    channels = ["email"]
    [params]
    inactive_for = "30d"
    repeat_after = "14d"
    max_times = 2
    [email]
    subject = "We miss you, {{ customer.first_name }}"
    body = "Reminder {{ reminder_number }} after {{ days_inactive }} days."
'''


def test_reminder_inactive_repeat_and_max_times(project):
    p = project
    p.customers(ANI)
    p.events("""
        e1,c1,purchase,2026-09-01T10:00:00-07:00
        e2,c1,purchase,2026-11-20T10:00:00-08:00
    """)
    p.campaign("winback", WINBACK)
    spell1 = "winback:c1:20260901T170000Z:"

    def run(now):
        return p.run(now).campaigns["winback"].sent

    assert run("2026-09-30T10:00") == 0  # 29 days quiet: not yet
    assert run("2026-10-01T10:00") == 1  # 30 days: first reminder
    assert sent_keys(p) == [spell1 + "1"]
    assert p.outbox("email")[0]["body"] == "Reminder 1 after 30 days."
    assert run("2026-10-08T10:00") == 0  # within repeat_after
    assert run("2026-10-15T09:59") == 0  # 13 days 23 hours 59 minutes: still within
    assert run("2026-10-15T10:00") == 1  # 14 days after the first: second reminder
    assert sent_keys(p) == [spell1 + "1", spell1 + "2"]
    assert p.outbox("email")[1]["body"] == "Reminder 2 after 44 days."
    assert run("2026-10-29T10:00") == 0  # max_times = 2: never a third
    assert run("2026-11-19T10:00") == 0
    # a purchase on 20 November starts a new spell; 30 days later the count starts again
    assert run("2026-12-19T10:00") == 0
    assert run("2026-12-20T10:00") == 1
    spell2 = "winback:c1:20261120T180000Z:"
    assert sent_keys(p) == [spell1 + "1", spell1 + "2", spell2 + "1"]
    assert p.outbox("email")[2]["body"] == "Reminder 1 after 30 days."


def test_reminder_never_active_customer_is_not_reminded(project):
    p = project
    p.customers("\n".join([ANI, TALIN]))
    p.events("e1,c1,purchase,2026-09-01T10:00:00-07:00")
    p.campaign("winback", WINBACK)

    p.run("2026-10-02T10:00")

    assert [m["customer"] for m in p.outbox("email")] == ["c1"]


def test_reminder_reads_the_history_of_quiet_customers_only():
    """A win-back asks the ledger about the customers who went quiet, in one set-wise call, and
    still counts their earlier reminders."""
    from datetime import timezone
    from zoneinfo import ZoneInfo

    from outreach.audience import Customer, Profile
    from outreach.rule import PastMessage, SelectContext
    from outreach.rules.reminder import Reminder

    now = when("2026-10-20T10:00:00-07:00").astimezone(timezone.utc)
    old, recent = when("2026-09-01T10:00:00-07:00"), when("2026-10-15T10:00:00-07:00")
    profiles = [Profile(Customer("quiet"), latest={"purchase": old}),
                Profile(Customer("active"), latest={"purchase": recent}),
                Profile(Customer("never")),
                Profile(Customer("reminded"), latest={"purchase": old})]
    asked: list[list[str]] = []

    def loader(ids):
        asked.append(list(ids))
        spell = "winback:reminded:20260901T170000Z:"
        return {"reminded": [PastMessage(spell + "1", now - timedelta(days=3), "sent")]}

    rule = Reminder("winback", {"inactive_for": timedelta(days=30), "activity": ["purchase"],
                                "repeat_after": timedelta(days=14), "max_times": 2})
    ctx = SelectContext("winback", now, ZoneInfo("America/Los_Angeles"), history_loader=loader)
    found = list(rule.select(profiles, ctx))

    assert asked == [["quiet", "reminded"]]
    assert [c.key for c in found] == ["winback:quiet:20260901T170000Z:1"]


RENEWAL_HEADER = ("id,first_name,last_name,email,phone,timezone,locale,consent_email,consent_sms,"
                  "tags,club_renews_on")


def test_reminder_before_a_date_attribute_with_lead(project):
    p = project
    p.customers(RENEWAL_HEADER + "\n"
                "c1,Ani,Petrosyan,ani@example.com,,America/Los_Angeles,hy,yes,no,,2026-12-01\n"
                "c2,Talin,Kazarian,talin@example.com,,America/Los_Angeles,en,yes,no,,2026-12-20\n"
                "c3,Maricel,Dela Cruz,maricel@example.com,,America/Los_Angeles,tl,yes,no,,\n")
    p.campaign("renewal", '''
        rule = "reminder"
        channels = ["email"]
        [params]
        before = "club_renews_on"
        lead = "7d"
        [email]
        subject = "Your club renews on {{ date }}"
        body = "{{ days_left }} days left, {{ customer.first_name }}."
    ''')

    assert p.run("2026-11-23T10:00").campaigns["renewal"].sent == 0  # 8 days ahead
    assert p.run("2026-11-24T10:00").campaigns["renewal"].sent == 1  # 7 days ahead
    assert p.run("2026-11-28T10:00").campaigns["renewal"].sent == 0  # once per date
    assert p.run("2026-12-02T10:00").campaigns["renewal"].sent == 0  # the date is past

    [m] = p.outbox("email")
    assert (m["key"], m["to"]) == ("renewal:c1:2026-12-01", "ani@example.com")
    assert m["subject"] == "Your club renews on 2026-12-01"
    assert m["body"] == "7 days left, Ani."


# ---------------------------------------------------------------------------------- apology
APOLOGY = '''
    rule = "apology"
    channels = ["email"]
    [email]
    subject = "We are sorry, {{ customer.first_name }}"
    body = "What happened: {{ event.what_happened }}. What changes: {{ event.what_changes }}."
'''


def test_apology_is_transactional_with_priority_100(sqlite_project):
    p = sqlite_project
    p.events("id,customer_id,type,time,what_happened,what_changes\n")
    p.campaign("sorry", APOLOGY)

    campaign = p.load().campaigns["sorry"]

    assert (campaign.category, campaign.priority) == ("transactional", 100)


def test_apology_template_uses_event_attributes(project):
    p = project
    p.customers("\n".join([ANI, TALIN]))
    p.events("""
        id,customer_id,type,time,what_happened,what_changes
        x1,c1,complaint,2026-11-24T08:00:00-08:00,your cake arrived two hours late,we added a second driver on Saturdays
        x2,c2,purchase,2026-11-24T08:10:00-08:00,,
    """)
    p.campaign("sorry", APOLOGY)

    report = p.run("2026-11-24T10:00")

    [m] = p.outbox("email")
    assert (m["key"], m["to"], m["category"]) == ("sorry:x1", "ani@example.com", "transactional")
    assert m["subject"] == "We are sorry, Ani"
    assert m["body"] == ("What happened: your cake arrived two hours late. "
                         "What changes: we added a second driver on Saturdays.")
    assert report.campaigns["sorry"].sent == 1
    [row] = p.messages()
    assert (row["category"], row["priority"]) == ("transactional", 100)


# ---------------------------------------------------------------------------------- birthday
BIRTHDAY_HEADER = ("id,first_name,last_name,email,phone,timezone,locale,consent_email,consent_sms,"
                   "tags,birthday")
BIRTHDAY = '''
    rule = "birthday"
    channels = ["email"]
    [email]
    subject = "Happy birthday, {{ customer.first_name }}!"
    body = "{% if age %}{{ age }} years!{% else %}Many happy returns!{% endif %}"
'''


def test_birthday_on_the_customers_local_date(project):
    p = project
    p.customers(BIRTHDAY_HEADER + "\n"
                "c1,Mariam,Avetisyan,mariam@example.org,,Asia/Yerevan,hy,yes,no,,1991-11-25\n"
                "c2,Talin,Kazarian,talin@example.com,,America/Los_Angeles,en,yes,no,,--11-25\n")
    p.campaign("bday", BIRTHDAY)

    # 13:00 on the 24th in Los Angeles is 01:00 on the 25th in Yerevan: Mariam's birthday there,
    # greeted on her own morning (09:00 in Yerevan, still the 24th in Los Angeles); Talin not yet
    rows = []
    p.run("2026-11-24T13:00", rows=rows)
    assert [(r.key, r.decision) for r in rows] == [("bday:c1:2026", "defer")]
    assert when(rows[0].not_before) == when("2026-11-25T09:00:00+04:00")

    report = p.run("2026-11-24T21:00")  # 09:00 on the 25th in Yerevan
    [m] = p.outbox("email")
    assert (m["key"], m["to"]) == ("bday:c1:2026", "mariam@example.org")
    assert m["body"] == "35 years!"
    assert report.campaigns["bday"].sent == 1

    # the 25th in Los Angeles: Talin now; Mariam not again (once a year)
    report = p.run("2026-11-25T09:00")
    assert report.campaigns["bday"].sent == 1
    assert report.campaigns["bday"].already_planned == 1
    assert sent_keys(p) == ["bday:c1:2026", "bday:c2:2026"]
    assert p.outbox("email")[1]["body"] == "Many happy returns!"
    # the 26th in Yerevan: nothing more
    assert p.run("2026-11-25T13:00").campaigns["bday"].selected == 0


def test_birthday_once_per_year(project):
    p = project
    p.customers(BIRTHDAY_HEADER + "\n"
                "c1,Ani,Petrosyan,ani@example.com,,America/Los_Angeles,hy,yes,no,,1990-11-24\n")
    p.campaign("bday", BIRTHDAY)

    for now in ("2026-11-24T10:00", "2026-11-24T12:00", "2026-11-24T23:59", "2026-11-25T00:00"):
        p.run(now)
    assert sent_keys(p) == ["bday:c1:2026"]
    p.run("2027-11-24T10:00")
    assert sent_keys(p) == ["bday:c1:2026", "bday:c1:2027"]
    assert [m["body"] for m in p.outbox("email")] == ["36 years!", "37 years!"]


def test_birthday_29_february_greeted_on_28_february_in_a_common_year(project):
    p = project
    p.customers(BIRTHDAY_HEADER + "\n"
                "c1,Ani,Petrosyan,ani@example.com,,America/Los_Angeles,hy,yes,no,,--02-29\n"
                "c2,Talin,Kazarian,talin@example.com,,America/Los_Angeles,en,yes,no,,2000-02-29\n")
    p.campaign("bday", BIRTHDAY)

    p.run("2027-02-27T10:00")
    assert sent_keys(p) == []
    p.run("2027-02-28T10:00")
    assert sent_keys(p) == ["bday:c1:2027", "bday:c2:2027"]
    assert p.outbox("email")[1]["body"] == "27 years!"
    p.run("2027-03-01T10:00")
    # in a leap year, on the 29th and not on the 28th
    p.run("2028-02-28T10:00")
    assert len(p.outbox("email")) == 2
    p.run("2028-02-29T10:00")
    assert sent_keys(p) == ["bday:c1:2027", "bday:c1:2028", "bday:c2:2027", "bday:c2:2028"]
