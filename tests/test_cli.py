"""The command line, through a real subprocess: what an operator and cron see."""

from __future__ import annotations


import pytest

NEWS = '''
rule = "newsletter"
schedule = "0 9 * * *"
start = "2026-11-01"
channels = ["email", "sms"]
[email]
subject = "From the oven, {{ customer.first_name }}"
body = "Fresh gata on Friday."
[email.hy]
subject = "Թարմ գաթա, {{ customer.first_name }}"
[sms]
body = "Fresh gata on Friday, {{ customer.first_name }}!"
'''

CUSTOMERS = """
c1,Ani,Petrosyan,ani@example.com,+37491234567,Asia/Yerevan,hy,yes,yes,vip
c2,Juan,Cruz,,+639171234567,Asia/Manila,tl,no,yes,
c3,Leyla,Məmmədova,leyla@example,+994501234567,Asia/Baku,az,yes,no,
c4,Bad,Zone,bad@example.com,,Mars/Olympus,en,yes,no,
"""


@pytest.fixture
def shop(sqlite_project):
    sqlite_project.customers(CUSTOMERS)
    sqlite_project.campaign("news", NEWS)
    return sqlite_project


def test_run_sends_then_the_second_run_sends_nothing(shop):
    first = shop.cli("run", "--json", "--now", "2026-11-24T10:00")
    assert first.code == 0, first.stderr
    report = first.json()
    [news] = report["campaigns"]
    assert {k: news[k] for k in ("name", "due", "selected", "queued", "sent", "skipped")} == {
        "name": "news", "due": True, "selected": 3, "queued": 2, "sent": 2, "skipped": 1}
    assert report["invalid_rows"]["count"] == 1
    assert "customers.csv:5: timezone 'Mars/Olympus'" in report["invalid_rows"]["first"][0]
    assert [m["subject"] for m in shop.outbox("email")] == ["Թարմ գաթա, Ani"]
    assert [m["body"] for m in shop.outbox("sms")] == ["Fresh gata on Friday, Juan!"]

    second = shop.cli("run", "--json", "--now", "2026-11-24T10:05")
    assert second.code == 0
    assert second.json()["totals"]["sent"] == 0
    assert len(shop.outbox("email")) == 1 and len(shop.outbox("sms")) == 1


def test_human_output_is_a_table_and_bad_rows_go_to_stderr(shop):
    result = shop.cli("run", "--now", "2026-11-24T10:00")
    assert result.code == 0
    assert "news" in result.stdout and "sent" in result.stdout
    assert "1 audience row problem(s)" in result.stderr
    assert "Traceback" not in result.stderr


def test_dry_run_writes_nothing(shop):
    result = shop.cli("run", "--dry-run", "--json", "--now", "2026-11-24T10:00")
    assert result.code == 0
    assert result.json()["totals"]["queued"] == 2
    assert shop.outbox("email") == [] and shop.messages() == []


def test_plan_json_has_one_row_per_candidate_with_reasons(shop):
    result = shop.cli("plan", "--json", "--now", "2026-11-24T10:00")
    assert result.code == 0, result.stderr
    rows = {r["customer"]: r for r in result.json()["candidates"]}
    assert rows["c1"]["decision"] == "send" and rows["c1"]["channel"] == "email"
    assert rows["c2"]["channel"] == "sms"
    assert rows["c3"]["decision"] == "skipped"
    assert rows["c3"]["reason"].startswith("email: invalid email address 'leyla@example'")
    assert "sms: no consent for sms" in rows["c3"]["reason"]
    assert set(rows["c1"]) == {"campaign", "customer", "key", "channel", "decision", "reason",
                               "not_before"}


def test_invalid_configuration_exits_2_and_sends_nothing(shop):
    shop.campaign("broken", NEWS.replace('schedule = "0 9 * * *"', 'schedule = "at nine"'))
    result = shop.cli("run", "--now", "2026-11-24T10:00")
    assert result.code == 2
    assert "campaigns/broken.toml: schedule: expected a cron expression" in result.stderr
    assert "Traceback" not in result.stderr
    assert shop.outbox("email") == []


def test_skip_invalid_runs_the_valid_campaigns(shop):
    shop.campaign("broken", NEWS.replace('schedule = "0 9 * * *"', 'schedule = "at nine"'))
    result = shop.cli("run", "--skip-invalid", "--json", "--now", "2026-11-24T10:00")
    assert result.code == 0, result.stderr
    assert result.json()["totals"]["sent"] == 2
    assert result.json()["invalid_campaigns"][0].startswith("campaigns/broken.toml: schedule")


def test_validate(shop):
    ok = shop.cli("validate")
    assert ok.code == 0 and "1 campaign(s) valid: news" in ok.stdout
    shop.campaign("x", NEWS.replace("{{ customer.first_name }}!", "{{ customer.first_name !"))
    bad = shop.cli("validate", "--json")
    assert bad.code == 2
    assert bad.json()["problems"][0].startswith("campaigns/x.toml: sms.body: template error")


def test_usage_errors_exit_2(shop):
    assert shop.cli("run", "--now", "tomorrow").code == 2
    assert "--now: expected an ISO 8601 time" in shop.cli("run", "--now", "tomorrow").stderr
    unknown = shop.cli("run", "--campaign", "nope")
    assert unknown.code == 2 and "no campaign named 'nope'" in unknown.stderr
    assert shop.cli("frobnicate").code == 2


def test_missing_config_file(tmp_path, sqlite_project):
    result = sqlite_project.cli("-c", str(tmp_path / "nowhere.toml"), "run")
    assert result.code == 2
    assert "nowhere.toml: file not found" in result.stderr


def test_preview_and_history(shop):
    sample = shop.cli("preview", "news", "--json")
    assert sample.code == 0, sample.stderr
    assert sample.json()["channels"]["email"]["fields"]["subject"] == "From the oven, Ani"
    juan = shop.cli("preview", "news", "--customer", "c2", "--channel", "sms", "--json").json()
    assert juan["channels"]["sms"]["fields"]["body"] == "Fresh gata on Friday, Juan!"
    assert juan["channels"]["sms"]["fields"]["_segments"].startswith("1 (GSM-7")

    shop.cli("run", "--now", "2026-11-24T10:00")
    history = shop.cli("history", "--customer", "c1", "--json").json()
    [message] = history["messages"]
    assert message["state"] == "sent"
    assert message["content"]["subject"] == "Թարմ գաթա, Ani"
    refused = shop.cli("history", "--customer", "c3", "--json").json()
    assert refused["messages"] == []
    assert refused["refusals"][0]["outcome"] == "skipped"


def test_history_renders_what_was_sent_even_after_the_campaign_changed(shop):
    shop.cli("run", "--now", "2026-11-24T10:00")
    shop.campaign("news", NEWS.replace("Fresh gata on Friday.", "Closed on Friday."))
    history = shop.cli("history", "--customer", "c1", "--json").json()
    assert history["messages"][0]["content"]["body"] == "Fresh gata on Friday."


def test_suppress_then_the_address_gets_nothing(shop):
    added = shop.cli("suppress", "ANI@Example.com", "--reason", "asked by phone")
    assert added.code == 0
    assert added.stdout.strip() == "suppressed ani@example.com (email)"
    listed = shop.cli("suppress", "--list", "--json").json()
    assert [(r["address"], r["reason"], r["source"]) for r in listed] == [
        ("ani@example.com", "asked by phone", "operator")]
    report = shop.cli("run", "--json", "--now", "2026-11-24T10:00").json()
    assert report["campaigns"][0]["sent"] == 2
    assert shop.outbox("email") == []
    # Ani has an SMS consent too, so the campaign's next channel is chosen for her.
    assert [m["to"] for m in shop.outbox("sms")] == ["+37491234567", "+639171234567"]


def test_suppress_needs_a_reason(shop):
    result = shop.cli("suppress", "ani@example.com")
    assert result.code == 2 and "--reason is required" in result.stderr


def test_plugins_lists_builtins_and_first_party_plugins(shop):
    rows = {r["name"]: r for r in shop.cli("plugins", "--json").json()}
    assert rows["newsletter"]["rules"] == ["newsletter"]
    assert rows["consent"]["hooks"] == ["outreach_check_channel"]
    assert rows["sendgrid"]["channels"] == ["sendgrid"]
    assert rows["twilio"]["distribution"] == "outreach-twilio"


def test_status_after_a_run(shop):
    shop.cli("run", "--now", "2026-11-24T10:00")
    status = shop.cli("status", "--json").json()
    assert status["states"]["sent"] == 2
    assert status["runs"][0]["status"] == "ok"
    assert status["runs"][0]["totals"]["sent"] == 2


def test_a_second_run_while_one_holds_the_lock_exits_3(shop):
    import filelock

    lock = filelock.FileLock(str(shop.root / "outreach.db.lock"))
    lock.acquire()
    try:
        result = shop.cli("run", "--now", "2026-11-24T10:00")
    finally:
        lock.release()
    assert result.code == 3
    assert "another outreach run is in progress" in result.stderr
    assert shop.outbox("email") == []


def test_an_unreachable_ledger_is_one_line_exit_4(shop):
    text = (shop.root / "outreach.toml").read_text()
    (shop.root / "outreach.toml").write_text(text.replace(
        'ledger = "sqlite:///outreach.db"', 'ledger = "postgresql://nobody@127.0.0.1:1/none"'))
    result = shop.cli("run", "--now", "2026-11-24T10:00")
    assert result.code in (2, 4)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_suppression_after_planning_stops_a_deferred_message(sqlite_project):
    """Quiet hours hold an SMS overnight; a STOP that arrives meanwhile still stops it."""
    p = sqlite_project
    p.configure(quiet_hours='[quiet_hours]\nsms = { start = "21:00", end = "08:00" }\n')
    p.customers("c2,Juan,Cruz,,+639171234567,Asia/Manila,tl,no,yes,")
    p.campaign("news", NEWS)
    first = p.cli("run", "--json", "--now", "2026-11-24T07:00")  # 23:00 in Manila
    assert first.json()["totals"]["deferred"] == 1
    assert p.cli("suppress", "+63 917 123 4567", "--reason", "replied STOP").code == 0
    later = p.cli("run", "--json", "--now", "2026-11-24T17:00")  # 09:00 in Manila
    assert later.code == 0  # policy at work, not a failure
    assert later.json()["totals"]["suppressed"] == 1 and later.json()["totals"]["failed"] == 0
    assert p.outbox("sms") == []
    [row] = p.messages()
    assert row["state"] == "failed"
    assert row["error"] == "suppressed after it was planned: replied STOP"
