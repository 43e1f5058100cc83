"""Data problems do not vanish: `outreach validate` reads the audience and says what a run would drop.

Each test is a mistake that used to pass `validate` with "ok" and then silently cost customers:
a rule parameter naming a column that does not exist, dates that are not ISO, Mailchimp's
``04/12`` birthdays, a consent of ``maybe``, a customers file with no consent column at all. And
`validate` refuses, `run` sends no more: what one refuses the other refuses, with the same message.
"""

from __future__ import annotations

import codecs
from datetime import datetime, timezone

import pytest

from outreach.testing import Project

NOW = "2026-11-24T10:00"
HEADER = "id,first_name,email,phone,timezone,consent_email,consent_sms,club_renews_on"


def _newsletter(p: Project) -> None:
    p.campaign("news", """
        rule = "newsletter"
        schedule = "0 9 * * *"
        start = "2026-11-01"
        channels = ["email"]
        [email]
        subject = "News"
        body = "Hello {{ customer.first_name }}"
    """)


def _renewal(p: Project, attribute: str = "club_renews_on") -> None:
    p.campaign("renewal", f"""
        rule = "reminder"
        channels = ["email"]
        [params]
        before = "{attribute}"
        lead = "14d"
        [email]
        subject = "Your club renews on {{{{ date }}}}"
        body = "See you"
    """)


def _people(p: Project, *rows: str, header: str = HEADER) -> None:
    (p.root / "customers.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


def test_a_rule_parameter_naming_a_missing_column_is_refused_by_validate_and_run(sqlite_project):
    p = sqlite_project
    _people(p, "c1,Ani,ani@example.com,,,yes,no,2026-12-01")
    _newsletter(p)
    _renewal(p, "appointment_date")
    validate, run = p.cli("validate"), p.cli("run", "--now", NOW)
    expected = ("campaigns/renewal.toml: params.before: the audience has no attribute "
                "'appointment_date' (its attributes: club_renews_on)")
    assert validate.code == 2 and expected in validate.stderr, validate.stderr
    assert run.code == 2 and expected in run.stderr, run.stderr
    assert p.outbox("email") == []
    skipped = p.cli("run", "--now", NOW, "--skip-invalid")
    assert skipped.code == 0 and "campaign left out: renewal: " in skipped.stderr
    assert [m["campaign"] for m in p.outbox("email")] == ["news"]


def test_dates_that_are_not_iso_are_read_when_unambiguous_and_reported_when_not(sqlite_project):
    p = sqlite_project
    _people(p, "c1,Ani,ani@example.com,,,yes,no,12/01/2026",     # 12 January or 1 December?
            "c2,Aram,aram@example.com,,,yes,no,30/11/2026",      # only a day can be 30
            "c3,Lilit,lilit@example.com,,,yes,no,Dec 5 2026")
    _renewal(p)
    validate = p.cli("validate")
    assert validate.code == 0
    assert ("customers.csv:2: club_renews_on: '12/01/2026' could be day/month or month/day; "
            "declare date_format") in validate.stderr
    assert "the customer is kept without club_renews_on" in validate.stderr
    plan = p.cli("plan", "--json", "--now", NOW)
    assert sorted(c["customer"] for c in plan.json()["candidates"]) == ["c2", "c3"]
    assert plan.json()["invalid_rows"]["count"] == 1
    assert "customers.csv:2: club_renews_on" in p.cli("plan", "--now", NOW).stderr  # as run does

    text = (p.root / "outreach.toml").read_text()
    (p.root / "outreach.toml").write_text(text.replace(
        'events = "events.csv"\n', 'events = "events.csv"\ndate_format = "%m/%d/%Y"\n'))
    _people(p, "c1,Ani,ani@example.com,,,yes,no,12/01/2026")
    plan = p.cli("plan", "--json", "--now", NOW)
    assert [(c["customer"], c["key"]) for c in plan.json()["candidates"]] == \
        [("c1", "renewal:c1:2026-12-01")]


def test_mailchimp_birthdays_without_the_preset_are_reported_not_skipped_silently(sqlite_project):
    p = sqlite_project
    _people(p, "c1,Ani,ani@example.com,,,yes,no,04/12", "c2,Joy,joy@example.com,,,yes,no,11/24",
            header="id,first_name,email,phone,timezone,consent_email,consent_sms,birthday")
    _newsletter(p)
    p.campaign("birthday", """
        rule = "birthday"
        channels = ["email"]
        [email]
        subject = "Happy birthday"
        body = "Cake!"
    """)
    validate = p.cli("validate")
    assert "customers.csv:2: birthday: '04/12' could be day/month or month/day" in validate.stderr
    run = p.cli("run", "--now", "2026-11-24T10:00")
    assert run.code == 0 and "customers.csv:2: birthday" in run.stderr
    sent = sorted((m["campaign"], m["to"]) for m in p.outbox("email"))
    # Joy's 11/24 cannot be misread: her birthday is today. Ani keeps her newsletter.
    assert sent == [("birthday", "joy@example.com"), ("news", "ani@example.com"),
                    ("news", "joy@example.com")]


def test_a_consent_of_maybe_is_reported_with_file_and_line(sqlite_project):
    p = sqlite_project
    _people(p, "c1,Ani,ani@example.com,,,yes,no,", "c2,Aram,aram@example.com,,,maybe,no,")
    _newsletter(p)
    validate = p.cli("validate", "--json")
    assert validate.code == 0
    rows = validate.json()["audience"]["row_problems"]
    assert rows == {"count": 1, "first": ["customers.csv:3: consent_email is 'maybe'; expected "
                                          "yes or no"]}
    human = p.cli("validate")
    assert "1 audience row problem(s)" in human.stderr and "ok: 1 campaign(s) valid" in human.stdout
    assert "1 audience row problem(s) and 0 warning(s) above" in human.stdout


def test_a_customers_file_without_any_consent_column_is_refused(sqlite_project):
    p = sqlite_project
    _people(p, "c1,Ani,ani@example.com", header="id,first_name,email")
    _newsletter(p)
    expected = ("campaigns/news.toml: channels: can reach nobody: the audience gives no consent "
                "for email")
    validate, run = p.cli("validate"), p.cli("run", "--now", NOW)
    assert validate.code == 2 and expected in validate.stderr
    assert run.code == 2 and expected in run.stderr
    text = (p.root / "outreach.toml").read_text()
    (p.root / "outreach.toml").write_text(text.replace(
        'events = "events.csv"\n', 'events = "events.csv"\nconsent_default = { email = "yes" }\n'))
    validate = p.cli("validate")
    assert validate.code == 0 and "consent email: consent_default (yes for every customer)" \
        in validate.stdout
    assert p.cli("run", "--now", NOW).code == 0
    assert [m["to"] for m in p.outbox("email")] == ["ani@example.com"]


def test_an_attribute_no_row_fills_and_a_campaign_that_reaches_nobody_are_warned(sqlite_project):
    p = sqlite_project
    _people(p, "c1,Ani,ani@example.com,,,no,no,", "c2,Aram,not-an-address,,,yes,no,")
    _renewal(p)
    validate = p.cli("validate", "--json")
    assert validate.code == 0
    warnings = validate.json()["audience"]["warnings"]
    assert "campaign renewal: no customer has a value for 'club_renews_on' (read by " \
           "params.before)" in warnings
    assert ("campaign renewal can reach nobody (email: 1 of 2 have consent for email, 0 of those "
            "a valid email address)") in warnings


def test_the_survey_reads_in_a_stream_and_moves_a_progress_bar(sqlite_project):
    from outreach.plugins import get_plugins
    from outreach.survey import survey

    p = sqlite_project
    _people(p, *[f"c{i},N{i},n{i}@example.com,,,yes,no," for i in range(12_000)])
    _newsletter(p)
    project = p.load(get_plugins())
    seen: list[tuple[int, int | None]] = []
    found = survey(project, project.source(), datetime.now(timezone.utc),
                   lambda n, total: seen.append((n, total)))
    assert found.customers == 12_000 and found.reachable == {"email": 12_000, "sms": 0}
    assert seen[0] == (0, 12_000) and seen[-1] == (12_000, 12_000) and len(seen) >= 3


# ---------------------------------------------------------------------------------------- refused alike
def _events_campaigns(p: Project) -> None:
    _newsletter(p)
    p.campaign("thanks", """
        rule = "thank_you"
        channels = ["email"]
        [email]
        subject = "Thank you"
        body = "Thanks"
    """)


@pytest.mark.parametrize("name, content, words", [
    ("empty", b"", "events.csv is empty"),
    ("no time", b"id,customer_id,type\ne1,c1,purchase\n", "lacks the column(s) time"),
    ("utf-16", codecs.BOM_UTF16_LE + "id,customer_id,type,time\n".encode("utf-16-le"),
     "is UTF-16"),
    ("semicolons", b"id;customer_id;type;time\ne1;c1;purchase;2026-11-24T09:00:00-08:00\n",
     "set delimiter = \";\""),
])
def test_a_broken_events_file_is_refused_by_run_as_by_validate(sqlite_project, name, content, words):
    p = sqlite_project
    _people(p, "c1,Ani,ani@example.com,,,yes,no,")
    _events_campaigns(p)
    (p.root / "events.csv").write_bytes(content)
    validate, run = p.cli("validate"), p.cli("run", "--now", NOW)
    assert validate.code == 2 and words in validate.stderr, validate.stderr
    assert run.code == 2 and words in run.stderr, run.stderr
    problem = next(line.strip() for line in validate.stderr.splitlines() if words in line)
    assert problem in run.stderr  # the same message, word for word
    assert p.outbox("email") == []
    skipped = p.cli("run", "--now", NOW, "--skip-invalid")
    assert skipped.code == 0, skipped.stderr
    assert "campaign left out: thanks: it reads events, which cannot be read" in skipped.stderr
    assert [m["campaign"] for m in p.outbox("email")] == ["news"]


def test_a_customers_file_without_id_is_refused_by_run_as_by_validate(sqlite_project):
    p = sqlite_project
    _people(p, "Ani,ani@example.com,yes", header="first_name,email,consent_email")
    _newsletter(p)
    validate, run = p.cli("validate"), p.cli("run", "--now", NOW, "--skip-invalid")
    assert validate.code == 2 and "customers.csv has no id column" in validate.stderr
    assert run.code == 2 and "customers.csv has no id column" in run.stderr
