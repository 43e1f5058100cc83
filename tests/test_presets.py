"""Real exports plan with a preset and no edits: Shopify's customers and orders, Mailchimp's audience.

The fixtures in ``tests/fixtures/exports/`` are in exactly the vendors' layouts (their README names
the documentation each layout comes from). A test copies them into a project, names the preset in
``outreach.toml`` and plans or runs; the files are never touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from outreach.testing import Project

EXPORTS = Path(__file__).parent / "fixtures" / "exports"


def _audience(p: Project, block: str, **files: str) -> None:
    """Point the project's [audience] at copies of fixture files, with ``block`` added."""
    for name, fixture in files.items():
        shutil.copy(EXPORTS / fixture, p.root / f"{name}.csv")
    text = (p.root / "outreach.toml").read_text()
    lines = [f'{name} = "{name}.csv"' for name in files]
    text = text.replace('source = "csv"\ncustomers = "customers.csv"\nevents = "events.csv"\n',
                        'source = "csv"\n' + "\n".join(lines) + "\n" + block.strip() + "\n")
    (p.root / "outreach.toml").write_text(text)


def test_shopify_exports_plan_with_the_preset(sqlite_project):
    p = sqlite_project
    _audience(p, 'format = "shopify"\nphone_region = "US"',
              customers="shopify_customers_export.csv", events="shopify_orders_export.csv")
    p.campaign("thanks", """
        rule = "thank_you"
        channels = ["email"]
        [email]
        subject = "Thank you, {{ customer.first_name }}"
        body = "For {{ event.items }}: {{ event.total }} {{ event.currency }}"
    """)
    p.campaign("news", """
        rule = "newsletter"
        schedule = "0 9 * * *"
        start = "2026-11-01"
        channels = ["sms", "email"]
        [email]
        subject = "News"
        body = "You have spent {{ customer.total_spent }} with us"
        [sms]
        body = "News for {{ customer.first_name }}"
    """)
    plan = p.cli("plan", "--json", "--now", "2026-11-24T09:30")
    assert plan.code == 0, plan.stderr
    rows = {(c["campaign"], c["customer"], c["channel"], c["decision"])
            for c in plan.json()["candidates"]}
    # One thank-you per order, not per line item; the guest's order names no customer.
    assert {r for r in rows if r[0] == "thanks"} == {
        ("thanks", "7104423526570", "email", "send"), ("thanks", "7104423526571", "email", "send")}
    # Armen accepts SMS; Maricel's national number is read in the US region; Talin said no.
    news = {r[1]: r for r in rows if r[0] == "news"}
    assert news["7104423526570"][2:] == ("sms", "send")
    assert news["7104423526571"][2:] == ("email", "send")
    assert news["7104423526572"][3] == "skipped"
    assert plan.json()["invalid_rows"]["count"] == 0

    run = p.cli("run", "--now", "2026-11-24T09:30")
    assert run.code == 0, run.stderr
    thanks = {m["to"]: m for m in p.outbox("email") if m["campaign"] == "thanks"}
    armen = thanks["armen.hovsepian@example.com"]
    assert "2 × Sourdough loaf; 1 × Gata (sweet bread): 34.50 USD" in armen["body"]
    assert any(m["to"] == "+18185550101" for m in p.outbox("sms"))

    validate = p.cli("validate")
    assert validate.code == 0, validate.stderr
    assert "id ← Customer ID" in validate.stdout and "consent sms ← Accepts SMS Marketing" \
        in validate.stdout
    assert "Total Orders" in validate.stdout  # a column no campaign reads, named
    assert "reachable: email 2 of 3, sms 1 of 3" in validate.stdout


def test_mailchimp_export_plans_with_the_preset(sqlite_project):
    p = sqlite_project
    _audience(p, 'format = "mailchimp"\nphone_region = "US"\nconsent_default = { email = "yes" }',
              customers="mailchimp_subscribed_members_export.csv")
    p.campaign("birthday", """
        rule = "birthday"
        channels = ["email"]
        [email]
        subject = "Happy birthday, {{ customer.first_name }}"
        body = "A cake is waiting"
    """)
    p.campaign("club", """
        rule = "newsletter"
        schedule = "0 9 * * *"
        start = "2026-04-01"
        channels = ["email"]
        where = "'Bakery club' in customer.tags"
        [email]
        subject = "Club news"
        body = "Hello {{ customer.first_name }}"
    """)
    # 12 April, 10:00 in Yerevan: Ani's birthday (Mailchimp's 04/12), on her own clock.
    plan = p.cli("plan", "--json", "--now", "2026-04-12T10:00:00+04:00")
    assert plan.code == 0, plan.stderr
    rows = {(c["campaign"], c["customer"], c["decision"]) for c in plan.json()["candidates"]}
    assert ("birthday", "90498395", "send") in rows
    assert {r[1] for r in rows if r[0] == "club"} == {"90498395", "90498397"}
    assert plan.json()["invalid_rows"]["count"] == 0

    validate = p.cli("validate", "--json")
    assert validate.code == 0, validate.stderr
    audience = validate.json()["audience"]
    assert audience["consents"]["email"].startswith("consent_default")
    assert audience["mapped"]["customers"]["id"] == "LEID"
    assert audience["reachable"]["email"] == 3


def test_the_unsubscribed_mailchimp_export_gives_nobody_consent(sqlite_project):
    """Whatever consent_default says, Mailchimp's unsubscribed file (it has UNSUB_TIME) is a list
    of people who left: validate says the campaign can reach nobody, and nobody is planned."""
    p = sqlite_project
    _audience(p, 'format = "mailchimp"\nconsent_default = { email = "yes" }',
              customers="mailchimp_unsubscribed_members_export.csv")
    p.campaign("news", """
        rule = "newsletter"
        schedule = "0 9 * * *"
        start = "2026-04-01"
        channels = ["email"]
        [email]
        subject = "News"
        body = "Hello"
    """)
    validate = p.cli("validate")
    assert validate.code == 0
    assert "campaign news can reach nobody (email: 0 of 1 have consent for email" in validate.stderr
    assert "UNSUB_TIME" in validate.stdout
    plan = p.cli("plan", "--json", "--now", "2026-04-12T10:00")
    assert [c["decision"] for c in plan.json()["candidates"]] == ["skipped"]


def test_a_cancelled_shopify_order_is_no_purchase(sqlite_project):
    """Shopify exports cancelled orders too, with ``Cancelled at`` filled in: a customer who
    cancelled is not thanked for buying, and the order's further lines go with it."""
    import csv

    p = sqlite_project
    _audience(p, 'format = "shopify"\nphone_region = "US"',
              customers="shopify_customers_export.csv", events="shopify_orders_export.csv")
    path = p.root / "events.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    name, cancelled = header.index("Name"), header.index("Cancelled at")
    for row in rows[1:]:
        if row[name] == "#1041" and row[header.index("Financial Status")]:
            row[cancelled] = "2026-11-23 10:00:00 -0800"  # Armen's two-line order, first line
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    p.campaign("thanks", """
        rule = "thank_you"
        channels = ["email"]
        [email]
        subject = "Thank you, {{ customer.first_name }}"
        body = "For {{ event.items }}"
    """)
    plan = p.cli("plan", "--json", "--now", "2026-11-24T09:30")
    assert plan.code == 0, plan.stderr
    thanked = {c["customer"] for c in plan.json()["candidates"] if c["decision"] == "send"}
    assert thanked == {"7104423526571"}  # Maricel; Armen cancelled
    assert plan.json()["invalid_rows"]["count"] == 0
    validate = p.cli("validate", "--json")
    assert validate.json()["audience"]["mapped"]["events"]["cancelled"] == "Cancelled at"
