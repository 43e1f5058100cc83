"""`outreach preview`: a sample customer that fits the deployment, or a real one with real data."""

from __future__ import annotations

import pytest

THANKS = '''
rule = "thank_you"
channels = ["email"]
[params]
within = "2d"
[email]
subject = "Thank you, {{ customer.first_name }}"
body = "Order {{ event.id }} of {{ event.time | date }} ({{ customer.timezone }})"
[email.hy]
subject = "Շնորհակալություն, {{ customer.first_name }}"
'''


@pytest.fixture
def shop(outreach_project):
    p = outreach_project
    p.customers("""
        c1,Ani,P,ani@example.com,,Asia/Yerevan,hy,yes,no,
        c2,Ben,Q,ben@example.com,,America/New_York,en,yes,no,
        c3,Cy,R,cy@example.com,,,en,yes,no,
    """)
    p.events("""
        e1,c1,purchase,2026-10-01T09:00:00-08:00
        e2,c1,purchase,2026-11-23T09:00:00-08:00
        e3,c2,purchase,2026-09-01T09:00:00-08:00
        e4,c2,complaint,2026-11-23T09:00:00-08:00
    """)
    p.campaign("thanks", THANKS)
    return p


def test_the_sample_customer_lives_in_the_deployment_and_speaks_its_language(shop):
    preview = shop.cli("preview", "thanks", "--json", "--now", "2026-11-24T10:00")
    assert preview.code == 0, preview.stderr
    email = preview.json()["channels"]["email"]
    assert email["locale"] == "en"
    assert email["fields"]["subject"] == "Thank you, Ani"
    assert email["fields"]["body"] == "Order e-sample of November 24, 2026 (America/Los_Angeles)"
    assert "sample customer in America/Los_Angeles speaking en" in preview.json()["note"]

    shop.configure(extra='locale = "hy"')
    armenian = shop.cli("preview", "thanks", "--json", "--now", "2026-11-24T10:00").json()
    assert armenian["channels"]["email"]["fields"]["subject"] == "Շնորհակալություն, Ani"


def test_a_real_customer_is_shown_with_the_event_a_run_would_write_about(shop):
    ani = shop.cli("preview", "thanks", "--customer", "c1", "--json", "--now", "2026-11-24T10:00")
    assert ani.code == 0, ani.stderr
    email = ani.json()["channels"]["email"]
    assert email["locale"] == "hy"
    assert email["fields"]["subject"] == "Շնորհակալություն, Ani"
    assert email["fields"]["body"] == "Order e2 of 2026 թ. նոյեմբերի 23 (Asia/Yerevan)"
    assert "would write to c1 (thanks:e2)" in ani.json()["note"]


def test_a_customer_the_rule_would_not_select_is_shown_with_their_latest_event(shop):
    ben = shop.cli("preview", "thanks", "--customer", "c2", "--json", "--now", "2026-11-24T10:00")
    assert ben.code == 0, ben.stderr
    assert ben.json()["channels"]["email"]["fields"]["body"] == \
        "Order e3 of September 1, 2026 (America/New_York)"
    assert "would not write to c2" in ben.json()["note"]
    assert "latest purchase event (e3)" in ben.json()["note"]

    cy = shop.cli("preview", "thanks", "--customer", "c3", "--json", "--now", "2026-11-24T10:00")
    assert cy.json()["channels"]["email"]["fields"]["body"].startswith("Order e-sample of")
    assert "no event it reads" in cy.json()["note"]


def test_an_unknown_customer_is_a_usage_error(shop):
    result = shop.cli("preview", "thanks", "--customer", "nobody")
    assert result.code == 2
    assert "no customer with id 'nobody'" in result.stderr
