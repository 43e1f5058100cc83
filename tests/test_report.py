"""`outreach report`: what happened to each campaign's messages, per day or week, from the ledger
and the providers' delivery events, on SQLite and PostgreSQL, through the real command."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from sqlalchemy import insert

from outreach.ledger import delivery_events, epoch
from outreach.run import parse_now

NEWS = '''
name = "news"
rule = "newsletter"
schedule = "0 9 * * *"
start = "2026-11-01"
channels = ["email", "sms"]
[email]
subject = "From the oven, {{ customer.first_name }}"
body = "Fresh gata on Friday."
[sms]
body = "Fresh gata on Friday, {{ customer.first_name }}!"
'''

TEXTS = '''
name = "texts"
rule = "newsletter"
schedule = "0 9 * * *"
start = "2026-11-01"
channels = ["sms"]
[sms]
body = "Hi {{ customer.first_name }}"
'''


def _customers(n: int, email: bool = True) -> str:
    return "\n".join(f"c{i:03d},N{i},L,{f'c{i}@example.com' if email else ''},"
                     f"+3749100{i:04d},UTC,en,{'yes' if email else 'no'},yes,"
                     for i in range(n))


def _events(project, rows: list[tuple[str, str, str, int]]) -> None:
    """Provider events as outreach serve records them: (message key, provider, kind, machine)."""
    ledger = project.ledger()
    try:
        with ledger.engine.begin() as conn:
            conn.execute(insert(delivery_events), [
                {"message_key": key, "provider": provider, "provider_event_id": f"ev{i}",
                 "kind": kind, "detail": "", "machine_open": machine,
                 "occurred_at": 1_795_000_000 + i, "received_at": 1_795_000_000 + i}
                for i, (key, provider, kind, machine) in enumerate(rows)])
    finally:
        ledger.close()


@pytest.fixture
def shop(project):
    project.customers(_customers(20) + "\n" + "\n".join(
        f"s{i:02d},S{i},L,,+37491009{i:03d},UTC,en,no,yes," for i in range(5)))
    project.campaign("news", NEWS)
    return project


def _report(project, *args: str) -> dict:
    result = project.cli("report", "--json", "--since", "2026-11-01", "--until", "2026-11-30",
                         "--now", "2026-11-30T00:00", *args)
    assert result.code == 0, result.stderr
    return result.json()


def test_without_delivery_events_the_report_says_what_it_cannot_know(shop):
    shop.run("2026-11-24T10:00")
    report = _report(shop)
    [row] = report["rows"]
    assert row["period"] == "2026-11-24" and row["planned"] == 25 and row["sent"] == 25
    assert row["delivered"] is None and row["opened"] is None and row["complained"] is None
    assert row["cannot_know"] == ["delivered", "bounced", "opened", "machine_opened", "clicked",
                                  "unsubscribed", "complained"]
    assert row["cannot_know_why"] == "needs outreach serve webhooks"
    assert row["rates"]["delivery"] is None
    human = shop.cli("report", "--since", "2026-11-01", "--until", "2026-11-30",
                     "--now", "2026-11-30T00:00", env={"COLUMNS": "80"})
    assert human.code == 0, human.stderr
    assert "needs outreach serve webhooks" in human.stdout


def test_outcomes_come_from_delivery_events_once_per_message(shop):
    shop.run("2026-11-24T10:00")
    msgs = shop.messages()
    email = sorted(m["key"] for m in msgs if m["channel"] == "email")
    sms = sorted(m["key"] for m in msgs if m["channel"] == "sms")
    assert len(email) == 20 and len(sms) == 5
    rows = [(k, "sendgrid", "processed", 0) for k in email]
    rows += [(k, "sendgrid", "delivered", 0) for k in email[:18]]
    rows += [(k, "sendgrid", "bounce", 0) for k in email[18:]]
    rows += [(k, "sendgrid", "open", 0) for k in email[:6]] * 3     # opened three times: once
    rows += [(k, "sendgrid", "open", 1) for k in email[6:10]]      # privacy proxies, apart
    rows += [(k, "sendgrid", "click", 0) for k in email[:3]]
    rows += [(email[0], "sendgrid", "spamreport", 0), (email[1], "sendgrid", "unsubscribe", 0)]
    rows += [(k, "twilio", "delivered", 0) for k in sms[:4]] + [(sms[4], "twilio", "undelivered", 0)]
    rows += [(sms[3], "twilio", "inbound_stop", 0), ("not-a-key", "twilio", "delivered", 0)]
    _events(shop, rows)
    report = _report(shop)
    [row] = report["rows"]
    assert {k: row[k] for k in ("planned", "sent", "delivered", "bounced", "opened",
                                "machine_opened", "clicked", "unsubscribed", "complained")} == {
        "planned": 25, "sent": 25, "delivered": 22, "bounced": 3, "opened": 6,
        "machine_opened": 4, "clicked": 3, "unsubscribed": 2, "complained": 1}
    assert "cannot_know" not in row
    assert row["rates"]["delivery"] == pytest.approx(22 / 25)
    assert row["rates"]["open"] == pytest.approx(6 / 22)
    assert row["rates"]["complaint"] == pytest.approx(1 / 22)
    assert row["complaint_flag"] == "over the 0.3 % limit"
    [total] = report["totals"]
    assert total["period"] == "total" and total["delivered"] == 22


def test_sms_only_campaigns_cannot_have_opens(project):
    project.customers(_customers(4, email=False))
    project.campaign("texts", TEXTS)
    project.run("2026-11-24T10:00")
    _events(project, [(m["key"], "twilio", "delivered", 0) for m in project.messages()])
    [row] = _report(project)["rows"]
    assert row["delivered"] == 4 and row["segments"] == 4
    assert row["opened"] is None and row["clicked"] is None
    assert row["cannot_know"] == ["opened", "machine_opened", "clicked", "complained"]


def test_refusals_and_periods_by_day_and_week(shop):
    shop.customers(_customers(20) + "\nx1,X,Y,,,UTC,en,no,no,")  # reachable on no channel
    shop.configure(caps="[[caps]]\nmax = 1\nper = \"2d\"\n")
    for day in ("2026-11-23", "2026-11-24", "2026-11-25"):
        shop.run(f"{day}T10:00")
    by_day = _report(shop)
    assert [(r["period"], r["sent"], r["capped"], r["skipped"]) for r in by_day["rows"]] == [
        ("2026-11-23", 20, 0, 1), ("2026-11-24", 0, 20, 1), ("2026-11-25", 20, 0, 1)]
    by_week = _report(shop, "--by", "week")
    assert [(r["period"], r["sent"]) for r in by_week["rows"]] == [("2026-11-23", 40)]
    reasons = {(r["outcome"], r["count"]) for r in by_week["refusals"]}
    assert ("capped", 20) in reasons and ("skipped", 3) in reasons  # one per occurrence


def test_campaign_filter_and_bad_input(shop):
    shop.campaign("texts", TEXTS)
    shop.run("2026-11-24T10:00")
    only = _report(shop, "--campaign", "texts")
    assert {r["campaign"] for r in only["rows"]} == {"texts"}
    bad = shop.cli("report", "--campaign", "nope")
    assert bad.code == 2 and "no campaign named 'nope'" in bad.stderr
    bad = shop.cli("report", "--since", "last tuesday")
    assert bad.code == 2 and "--since: expected a date" in bad.stderr
    bad = shop.cli("report", "--since", "2026-11-30", "--until", "2026-11-01")
    assert bad.code == 2 and "must come before" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_terminal_view_fits_80_columns_and_cuts_no_number(sqlite_project):
    shop = sqlite_project
    shop.customers(_customers(120))
    shop.campaign("news", NEWS)
    shop.run("2026-11-24T10:00")
    result = shop.cli("report", "--since", "2026-11-01", "--until", "2026-11-30",
                      "--now", "2026-11-30T00:00", env={"COLUMNS": "80"})
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout
    messages = [line for line in lines if line.startswith("2026-11-24")]
    assert re.fullmatch(r"2026-11-24\s+120\s+120\s+0\s+0\s+0\s+0", messages[0])


def test_html_without_the_extra_exits_2_naming_it(sqlite_project, tmp_path):
    code = ("import sys; sys.modules['plotly'] = None; sys.modules['plotly.graph_objects'] = None; "
            "from outreach.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, "report", "--html", str(tmp_path / "r.html")],
                          cwd=sqlite_project.root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'outreach[report]'" in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_a_planned_time_counts_in_the_deployment_days(sqlite_project):
    """23:45 in Los Angeles is the next day in UTC: the row is the local day."""
    shop = sqlite_project
    shop.customers(_customers(2))
    shop.campaign("news", NEWS.replace('"0 9 * * *"', '"30 23 * * *"'))
    shop.run("2026-11-24T23:45")
    [row] = _report(shop)["rows"]
    assert row["period"] == "2026-11-24"
    assert epoch(parse_now("2026-11-24T23:45", shop.load().tz)) == shop.messages()[0]["not_before"]
