"""What an operator sees from the real command line: exit codes, options in either place, commands
that only read working without the providers' secrets, times and tables people can read."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from outreach.errors import ExitCode

NEWS = '''
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

CUSTOMERS = """
c1,Ani,Petrosyan,ani@example.com,+37491234567,Asia/Yerevan,hy,yes,yes,vip
c2,Juan,Cruz,,+639171234567,Asia/Manila,tl,no,yes,
"""

#: SendGrid and Twilio, pointed at addresses nothing listens on: the commands below never call them.
PROVIDERS = """
[channels.email]
plugin = "sendgrid"
from_email = "shop@example.com"
api_host = "http://127.0.0.1:9"
unsubscribe_url = "https://shop.example.com/unsubscribe?k={key}"

[channels.sms]
plugin = "twilio"
from_number = "+15005550006"
api_base = "http://127.0.0.1:9"
"""

NO_SECRETS = {"SENDGRID_API_KEY": "", "TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": ""}


@pytest.fixture
def shop(sqlite_project):
    sqlite_project.customers(CUSTOMERS)
    sqlite_project.campaign("news", NEWS)
    return sqlite_project


# ------------------------------------------------------------------------------------ exit codes
def test_a_ledger_file_that_is_not_a_ledger_exits_4_in_one_line(shop):
    assert shop.cli("run", "--now", "2026-11-24T10:00").code == ExitCode.OK
    (shop.root / "outreach.db").write_bytes(b"this is not a database" * 100)
    result = shop.cli("status")
    assert result.code == ExitCode.INTERNAL == 4, result.stderr
    assert "cannot open the ledger" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_ledger_server_exits_4_and_a_url_outreach_cannot_use_exits_2(shop):
    shop.ledger_url = "postgresql://postgres@127.0.0.1:9/nothing"
    shop.configure()
    result = shop.cli("status")
    assert result.code == ExitCode.INTERNAL, result.stderr
    assert "cannot open the ledger" in result.stderr and "Connection refused" in result.stderr
    shop.ledger_url = "mysql://root@127.0.0.1/test"
    shop.configure()
    result = shop.cli("status")
    assert result.code == ExitCode.CONFIG, result.stderr
    assert "ledger: expected sqlite:///FILE or postgresql://" in result.stderr


def test_exit_codes_keep_their_documented_numbers():
    assert {c.name: c.value for c in ExitCode} == {
        "OK": 0, "SEND_FAILED": 1, "CONFIG": 2, "LOCKED": 3, "INTERNAL": 4, "INTERRUPTED": 130}


# ------------------------------------------------------------------------------------ -c and --json
def test_json_goes_before_or_after_the_command(shop):
    shop.cli("run", "--now", "2026-11-24T10:00")
    before, after = shop.cli("--json", "status"), shop.cli("status", "--json")
    assert before.code == after.code == 0, before.stderr + after.stderr
    assert before.json()["states"] == after.json()["states"]
    assert before.json()["states"]["sent"] == 2
    refused = shop.cli("--json", "init", "elsewhere")
    assert refused.code == ExitCode.CONFIG
    assert "--json: `outreach init` has no JSON output" in refused.stderr
    assert not (shop.root / "elsewhere").exists()


def test_config_goes_before_or_after_the_command(shop, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = str(shop.root / "outreach.toml")

    def outreach(*args: str):
        return subprocess.run([sys.executable, "-m", "outreach", *args], cwd=elsewhere,
                              capture_output=True, text=True, timeout=120)

    ran = outreach("-c", config, "run", "--json", "--now", "2026-11-24T10:00")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["totals"]["sent"] == 2
    again = outreach("run", "-c", config, "--json", "--now", "2026-11-25T10:00")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["totals"]["sent"] == 2
    status = outreach("status", "--config", config, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["states"]["sent"] == 4
    assert not (elsewhere / "outreach.db").exists()


# ------------------------------------------------------------------------------------ no secrets
@pytest.fixture
def live_shop(shop):
    shop.configure(channels=PROVIDERS)
    return shop


def test_commands_that_only_read_work_without_the_providers_secrets(live_shop):
    p = live_shop
    for args in (("status",), ("status", "--json"), ("history", "--customer", "c1"),
                 ("plan", "--now", "2026-11-24T10:00"), ("preview", "news"),
                 ("validate", "--offline"), ("report",), ("report", "--json")):
        result = p.cli(*args, env=NO_SECRETS)
        assert result.code == 0, (args, result.stdout, result.stderr)
        assert "SENDGRID_API_KEY is not set" not in result.stdout + result.stderr or \
            args[0] == "validate", args
    preview = p.cli("preview", "news", "--json", env=NO_SECRETS).json()
    assert preview["channels"]["email"]["fields"]["subject"] == "From the oven, Ani"
    plan = p.cli("plan", "--json", "--now", "2026-11-24T10:00", env=NO_SECRETS).json()
    assert {r["customer"]: r["channel"] for r in plan["candidates"]} == {"c1": "email",
                                                                        "c2": "sms"}


def test_validate_offline_says_which_secrets_it_did_not_check_and_plain_validate_refuses(live_shop):
    offline = live_shop.cli("validate", "--offline", env=NO_SECRETS)
    assert offline.code == 0, offline.stderr
    assert "offline: the providers' secrets were not checked" in offline.stderr
    for var in ("SENDGRID_API_KEY", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        assert var in offline.stderr
    as_json = live_shop.cli("validate", "--offline", "--json", env=NO_SECRETS).json()
    assert as_json["ok"] is True and len(as_json["secrets_not_checked"]) == 3
    plain = live_shop.cli("validate", env=NO_SECRETS)
    assert plain.code == ExitCode.CONFIG
    assert "the environment variable SENDGRID_API_KEY is not set" in plain.stderr
    assert "the environment variable TWILIO_AUTH_TOKEN is not set" in plain.stderr


def test_run_still_refuses_without_the_secrets(live_shop):
    result = live_shop.cli("run", "--now", "2026-11-24T10:00", env=NO_SECRETS)
    assert result.code == ExitCode.CONFIG
    assert "SENDGRID_API_KEY is not set" in result.stderr
    assert live_shop.messages() == []


# ------------------------------------------------------------------------------------ durations
def test_a_month_is_30_days_and_a_year_365_and_a_wrong_unit_lists_the_units(shop):
    shop.customers("c1,Ani,Petrosyan,ani@example.com,,Asia/Yerevan,hy,yes,no,")
    shop.configure(caps='[[caps]]\nmax = 1\nper = "1mo"\n')
    sent = [shop.cli("run", "--json", "--now", day).json()["totals"]["sent"]
            for day in ("2026-11-01T10:00", "2026-11-30T10:00", "2026-12-01T10:00")]
    assert sent == [1, 0, 1]  # 29 days after the first: capped; 30 days after: free again
    shop.configure(caps='[[caps]]\nmax = 1\nper = "1y"\n')
    assert shop.cli("validate", "--headers-only").code == 0
    shop.configure(caps='[[caps]]\nmax = 1\nper = "3 months"\n')
    refused = shop.cli("validate", "--headers-only")
    assert refused.code == ExitCode.CONFIG
    assert ('caps[0].per: expected a duration such as "7d" or "12h" (a whole number and a unit: '
            's, m, h, d, w, mo = 30 days, y = 365 days; combined as in "1d12h")'
            ) in refused.stderr
    shop.configure(caps='[[caps]]\nmax = 1\nper = "1M"\n')
    refused = shop.cli("validate", "--headers-only")
    assert refused.code == ExitCode.CONFIG and "got '1M'" in refused.stderr


# ------------------------------------------------------------------------------------ times, tables
QUIET_SMS = '[quiet_hours]\nsms = { start = "21:00", end = "08:00" }\nemail = false\n'


def test_times_are_in_the_deployments_zone_to_the_second_and_deferred_messages_say_why(shop):
    shop.configure(quiet_hours=QUIET_SMS)  # America/Los_Angeles; Juan is in Asia/Manila
    # 10:00 in Los Angeles is 02:00 in Manila: Juan's SMS waits until 08:00 there, 16:00 here.
    plan = shop.cli("plan", "--now", "2026-11-24T10:00", env={"COLUMNS": "200"})
    assert plan.code == 0, plan.stderr
    assert "plan at 2026-11-24 10:00:00 PST" in plan.stdout
    assert "2026-11-24 16:00:00 PST" in plan.stdout and "+08:00" not in plan.stdout
    assert shop.cli("run", "--now", "2026-11-24T10:00").code == 0
    status = shop.cli("status", env={"COLUMNS": "200"})
    assert "1 deferred: quiet hours 21:00–08:00 in Asia/Manila" in status.stdout, status.stdout
    assert "None" not in status.stdout
    assert re.search(r"│ 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d PST", status.stdout), status.stdout
    history = shop.cli("history", "--customer", "c2")
    assert "planned for 2026-11-24 16:00:00 PST" in history.stdout, history.stdout
    ani = shop.cli("history", "--customer", "c1")
    assert re.search(r"planned for 2026-11-24 10:00:00 PST, sent 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d "
                     r"PST", ani.stdout), ani.stdout
    as_json = shop.cli("history", "--customer", "c2", "--json").json()
    assert as_json["messages"][0]["planned_for"] == "2026-11-25T00:00:00+00:00"  # machines: ISO


@pytest.mark.parametrize("columns", ["80", "60"])
def test_narrow_terminals_never_cut_a_number(sqlite_project, columns):
    p = sqlite_project
    p.customers("\n".join(f"c{i},N{i},P,c{i}@example.com,,,en,yes,no," for i in range(1234)))
    p.campaign("a-campaign-with-a-long-name", NEWS)
    run = p.cli("run", "--dry-run", "--now", "2026-11-24T10:00", env={"COLUMNS": columns})
    assert run.code == 0, run.stderr
    assert "…" not in run.stdout
    assert re.search(r"\bselected 1234\b.*\bqueued 1234\b", run.stdout), run.stdout
    assert "a-campaign-with-a-long-name" in run.stdout
    wide = p.cli("run", "--dry-run", "--now", "2026-11-24T10:00", env={"COLUMNS": "200"})
    assert "┃ campaign" in wide.stdout and re.search(r"│\s+1234 │", wide.stdout), wide.stdout
    p.cli("run", "--now", "2026-11-24T10:00")
    status = p.cli("status", env={"COLUMNS": columns})
    assert "…" not in status.stdout and "1234" in status.stdout, status.stdout


# ------------------------------------------------------------------------------------ templates
def test_an_undefined_name_is_named_with_what_exists_and_no_python_class_names(shop):
    shop.file("templates/news.txt", "Dear {{ customer.frist_name }},\nFresh gata on Friday.\n")
    shop.campaign("news", NEWS.replace('body = "Fresh gata on Friday."',
                                       'body_file = "templates/news.txt"'))
    result = shop.cli("validate", "--headers-only")
    assert result.code == ExitCode.CONFIG
    assert ("campaigns/news.toml: email.body: fails on a sample customer (templates/news.txt): "
            "customer.frist_name is undefined; customer has: ") in result.stderr, result.stderr
    listed = result.stderr.split("customer has: ")[1].splitlines()[0].split(", ")
    assert {"first_name", "email", "last_name", "tags"} <= set(listed)
    assert "object" not in result.stderr and "Error" not in result.stderr
    shop.file("templates/news.txt", "Dear {{ custmer.first_name }}")
    result = shop.cli("validate", "--headers-only")
    assert "custmer is undefined; the variables are: customer" in result.stderr, result.stderr


# ------------------------------------------------------------------------------------ languages
MIXED = '''
rule = "newsletter"
schedule = "0 9 * * *"
start = "2026-11-01"
channels = ["email"]
[email]
subject = "Fresh gata, {{ customer.first_name }}"
body = "Fresh gata on Friday."
[email.hy]
subject = "Թարմ գաթա, {{ customer.first_name }}"
body = "Ուրբաթ օրը թարմ գաթա։"
[email.hy-AM]
subject = "Թարմ գաթա Երևանում, {{ customer.first_name }}"
'''


def test_each_field_falls_back_from_the_region_to_the_language_to_the_default(sqlite_project):
    p = sqlite_project
    p.customers("""
        c1,Ani,Petrosyan,ani@example.com,,Asia/Yerevan,hy-AM,yes,no,
        c2,Aram,Sargsyan,aram@example.com,,Asia/Yerevan,hy,yes,no,
        c3,Jane,Doe,jane@example.com,,Europe/London,en-GB,yes,no,
    """)
    p.campaign("news", MIXED)
    preview = p.cli("preview", "news", "--customer", "c1", "--json", "--now", "2026-11-24T10:00")
    assert preview.code == 0, preview.stderr
    fields = preview.json()["channels"]["email"]["fields"]
    assert fields == {"subject": "Թարմ գաթա Երևանում, Ani", "body": "Ուրբաթ օրը թարմ գաթա։"}
    shown = p.cli("preview", "news", "--customer", "c1", "--now", "2026-11-24T10:00")
    assert "Ուրբաթ օրը թարմ գաթա։" in shown.stdout and "Fresh gata" not in shown.stdout
    run = p.cli("run", "--json", "--now", "2026-11-24T10:00")
    assert run.code == 0, run.stderr
    sent = {m["to"]: (m["subject"], m["body"]) for m in p.outbox("email")}
    assert sent == {
        "ani@example.com": ("Թարմ գաթա Երևանում, Ani", "Ուրբաթ օրը թարմ գաթա։"),
        "aram@example.com": ("Թարմ գաթա, Aram", "Ուրբաթ օրը թարմ գաթա։"),
        "jane@example.com": ("Fresh gata, Jane", "Fresh gata on Friday."),
    }
    history = p.cli("history", "--customer", "c1", "--json").json()
    assert history["messages"][0]["content"] == {"subject": "Թարմ գաթա Երևանում, Ani",
                                                 "body": "Ուրբաթ օրը թարմ գաթա։"}
