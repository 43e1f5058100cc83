"""``outreach suppress``: what it stores is the form the planner and the dispatcher compare.

Through the real command line (a subprocess), on a real SQLite ledger.
"""

from __future__ import annotations

import json

import pytest

from outreach.ledger import suppressions

NEWS = '''
rule = "newsletter"
schedule = "0 9 * * *"
start = "2026-11-01"
channels = ["sms", "email"]
[email]
subject = "News"
body = "Fresh gata on Friday."
[sms]
body = "Fresh gata on Friday!"
'''

CUSTOMERS = """
c1,Jane,Doe,Jane.Doe@example.com,+15035550104,America/Los_Angeles,en,yes,yes,
c2,Bob,Ray,,+1 503 555 0101,America/Los_Angeles,en,no,yes,
c3,Cy,Ro,cy@example.com,(503) 555-0103,America/Los_Angeles,en,yes,yes,
"""

NOW = "2026-11-24T10:00"


@pytest.fixture
def shop(sqlite_project):
    sqlite_project.configure(extra='phone_region = "US"')
    sqlite_project.customers(CUSTOMERS)
    sqlite_project.campaign("news", NEWS)
    return sqlite_project


def _plan(project) -> dict[str, dict]:
    result = project.cli("plan", "--json", "--now", NOW)
    assert result.code == 0, result.stderr
    return {r["customer"]: r for r in result.json()["candidates"]}


def _stored(project) -> list[tuple[str, str]]:
    ledger = project.ledger()
    try:
        with ledger.reader.connect() as conn:
            return sorted((r.kind, r.address) for r in conn.execute(suppressions.select()))
    finally:
        ledger.close()


@pytest.mark.parametrize("typed, stored, customer, after", [
    ("(503) 555-0104", "+15035550104", "c1", ("send", "email")),  # falls back to email
    ("503-555-0101", "+15035550101", "c2", ("suppressed", None)),
])
def test_a_national_number_is_stored_in_e164_and_stops_the_send(shop, typed, stored, customer,
                                                                 after):
    assert (_plan(shop)[customer]["decision"], _plan(shop)[customer]["channel"]) == ("send", "sms")
    result = shop.cli("suppress", typed, "--reason", "asked by phone")
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == f"suppressed {stored} (phone)"
    assert _stored(shop) == [("phone", stored)]
    row = _plan(shop)[customer]
    assert (row["decision"], row["channel"]) == after, row
    if after[0] == "suppressed":
        assert row["reason"] == "sms: suppressed: asked by phone; email: no consent for email"


def test_an_email_with_capitals_and_a_trailing_space_matches(shop):
    result = shop.cli("suppress", "Jane.Doe@example.com ", "--reason", "asked", "--json")
    assert result.code == 0, result.stderr
    assert result.json() == {"address": "jane.doe@example.com", "kind": "email", "added": True}
    shop.cli("suppress", "(503) 555-0104", "--reason", "asked")
    assert _plan(shop)["c1"]["decision"] == "suppressed"
    again = shop.cli("suppress", "JANE.DOE@EXAMPLE.COM", "--reason", "twice")
    assert again.code == 0 and "already suppressed" in again.stdout


def test_a_national_number_in_the_audience_is_read_in_the_deployment_region(shop):
    row = _plan(shop)["c3"]
    assert (row["decision"], row["channel"]) == ("send", "sms"), row


def test_what_cannot_be_normalised_is_refused_and_nothing_stored(sqlite_project):
    sqlite_project.campaign("news", NEWS)  # no phone_region
    national = sqlite_project.cli("suppress", "(503) 555-0104", "--reason", "asked")
    assert national.code == 2
    assert "phone_region" in national.stderr and "nothing was stored" in national.stderr
    bad = sqlite_project.cli("suppress", "jane@", "--reason", "asked")
    assert bad.code == 2 and "invalid email address" in bad.stderr
    assert "Traceback" not in national.stderr + bad.stderr
    assert _stored(sqlite_project) == []


def test_entries_an_older_version_stored_as_typed_still_match(project):
    """On SQLite and PostgreSQL: rows written as typed, as `outreach suppress` once did."""
    shop = project
    shop.configure(extra='phone_region = "US"')
    shop.customers(CUSTOMERS)
    shop.campaign("news", NEWS)
    ledger = shop.ledger()
    try:
        with ledger.engine.begin() as conn:
            conn.execute(suppressions.insert(), [
                {"kind": k, "address": a, "reason": r, "source": "operator", "created_at": 1}
                for k, a, r in [("phone", "(503) 555-0104", "old, by phone"),
                                ("email", "Jane.Doe@example.com", "old, by mail"),
                                ("phone", "503-555-0101", "old"), ("phone", "+15035550101", "newer")]])
    finally:
        ledger.close()
    rows = _plan(shop)
    assert rows["c1"]["decision"] == "suppressed"
    assert "sms: suppressed: old, by phone" in rows["c1"]["reason"]
    assert "email: suppressed: old, by mail" in rows["c1"]["reason"]
    assert rows["c2"]["decision"] == "suppressed"
    assert _stored(shop) == [("email", "jane.doe@example.com"), ("phone", "+15035550101"),
                             ("phone", "+15035550104")]


def test_the_dispatcher_recheck_stops_a_planned_message(shop):
    planned = shop.cli("run", "--no-send", "--json", "--now", NOW)
    assert planned.code == 0, planned.stderr
    assert shop.cli("suppress", "(503) 555-0104", "--reason", "late STOP").code == 0
    sent = shop.cli("dispatch", "--json", "--now", "2026-11-24T11:00")
    assert sent.code == 0, sent.stderr
    phones = [m["to"] for m in shop.outbox("sms")]
    assert "+15035550104" not in phones and "+15035550101" in phones


def test_remove_takes_the_address_in_any_form(shop):
    shop.cli("suppress", "+15035550104", "--reason", "asked")
    result = shop.cli("suppress", "(503) 555-0104", "--remove")
    assert result.code == 0 and "+15035550104 (phone) removed" in result.stdout
    assert _stored(shop) == []


# ------------------------------------------------------------------------------------- --import
def test_import_a_plain_list_reports_each_refused_line_and_adds_the_rest(shop):
    lines = [f"+1503555{n:04d}" for n in range(100, 3100)]  # 3000 valid US numbers
    lines[10] = "not a number"
    lines[20] = "jane@"
    lines[30] = lines[31]  # a repeat
    lines.insert(0, "# exported from the help desk")
    lines.insert(5, "")
    (shop.root / "stops.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shop.cli("suppress", "+15035550200", "--reason", "earlier")
    result = shop.cli("suppress", "--import", "stops.txt", "--reason", "help desk")
    assert result.code == 2, result.stderr
    assert "stops.txt:13: invalid phone number 'not a number'" in result.stderr
    assert "stops.txt:23: invalid email address 'jane@'" in result.stderr
    assert result.stdout.strip() == "stops.txt: 2996 added, 2 already present, 2 refused"
    assert len(_stored(shop)) == 2997


def test_import_a_csv_finds_its_email_and_phone_columns(shop):
    rows = ["Name,E-mail,Phone Number,Note"]
    rows += [f"Customer {n},user{n}@Example.com,(503) 555-{n:04d},x" for n in range(1000, 3000)]
    rows.append("Jane,Jane.Doe@example.com,,bounced")
    (shop.root / "export.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = shop.cli("suppress", "--import", "export.csv", "--reason", "old list", "--json")
    assert result.code == 0, result.stderr
    assert result.json() == {"file": "export.csv", "added": 4001, "already_present": 0,
                             "refused": []}
    stored = _stored(shop)
    assert ("email", "user1000@example.com") in stored and ("phone", "+15035551000") in stored
    jane = _plan(shop)["c1"]  # only her email is listed: sms still goes
    assert (jane["decision"], jane["channel"]) == ("send", "sms")


def test_import_by_column_and_json_lists_refusals(shop):
    (shop.root / "list.csv").write_text("who,contact\nJane,(503) 555-0104\nBob,12\n",
                                        encoding="utf-8")
    result = shop.cli("suppress", "--import", "list.csv", "--column", "contact",
                      "--reason", "asked", "--json")
    assert result.code == 2
    report = result.json()
    assert report["added"] == 1 and report["already_present"] == 0
    assert [(r["line"], r["address"]) for r in report["refused"]] == [(3, "12")]
    assert _plan(shop)["c1"]["channel"] == "email"  # her phone is listed now
    missing = shop.cli("suppress", "--import", "list.csv", "--column", "email", "--reason", "x")
    assert missing.code == 2 and "list.csv:1: no column 'email'" in missing.stderr
    gone = shop.cli("suppress", "--import", "nope.csv", "--reason", "x")
    assert gone.code == 2 and "nope.csv" in gone.stderr and "Traceback" not in gone.stderr


def test_import_inserts_in_batches_not_per_line(shop, monkeypatch):
    """Set-wise: a few thousand addresses take a handful of inserts (counted in-process)."""
    from outreach import suppress as adding
    from outreach.ledger import Ledger

    calls = []
    original = Ledger.suppress_many
    monkeypatch.setattr(Ledger, "suppress_many",
                        lambda self, pairs, *a: calls.append(len(pairs)) or original(self, pairs, *a))
    path = shop.root / "many.txt"
    path.write_text("".join(f"user{n}@example.com\n" for n in range(12000)), encoding="utf-8")
    ledger = shop.ledger()
    try:
        report = adding.import_file(ledger, path, "bulk", "US")
    finally:
        ledger.close()
    assert report.added == 12000 and calls == [adding.BATCH, adding.BATCH, 2000]
    assert json.dumps(report.as_dict())
