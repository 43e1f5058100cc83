"""A/B variants: declared in the campaign file, assigned by a hash of campaign and customer (so a
rerun, a crash or a resend never changes a customer's), recorded per message, sent with the
variant's own templates, shown by `preview --variant` and `history`."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from sqlalchemy import text

from outreach.errors import ConfigError
from outreach.experiments import VariantWeights, held_out

NEWS = '''
name = "news"
rule = "newsletter"
schedule = "0 9 * * *"
start = "2026-11-01"
channels = ["email"]
[email]
subject = "Fresh bread, {{ customer.first_name }}"
body = "Come by."
[email.hy]
subject = "Թարմ հաց, {{ customer.first_name }}"

[[variants]]
name = "plain"

[[variants]]
name = "urgent"
weight = 3
[variants.email]
subject = "Today only, {{ customer.first_name }}!"
[variants.email.hy]
subject = "Միայն այսօր, {{ customer.first_name }}"
'''


def _customers(n: int) -> str:
    return "\n".join(f"c{i:03d},N{i},L,c{i}@example.com,,UTC,{'hy' if i % 5 == 0 else 'en'},yes,no,"
                     for i in range(n))


@pytest.fixture
def shop(project):
    project.customers(_customers(60))
    project.campaign("news", NEWS)
    return project


def _expected(customer: str) -> str:
    return VariantWeights.of([("plain", 1.0), ("urgent", 3.0)]).pick("news", customer)


def test_each_message_carries_its_variant_and_its_templates(shop):
    shop.run("2026-11-24T10:00")
    msgs = {m["customer_id"]: m for m in shop.messages()}
    assert len(msgs) == 60
    assert {c: m["variant"] for c, m in msgs.items()} == {c: _expected(c) for c in msgs}
    assert set(Counter(m["variant"] for m in msgs.values())) == {"plain", "urgent"}
    subjects = {m["customer"]: m["subject"] for m in shop.outbox("email")}
    assert set(subjects) == set(msgs)
    for cid in msgs:
        subject = subjects[cid]
        i = int(cid[1:])
        if _expected(cid) == "urgent":
            assert subject == (f"Միայն այսօր, N{i}" if i % 5 == 0 else f"Today only, N{i}!")
        else:
            assert subject == (f"Թարմ հաց, N{i}" if i % 5 == 0 else f"Fresh bread, N{i}")


def test_the_same_customer_keeps_their_variant_across_runs_crashes_and_resends(shop, tmp_path):
    shop.run("2026-11-24T10:00", send=False)   # planned; the process "dies" before sending
    planned = {m["customer_id"]: (m["variant"], m["version_id"]) for m in shop.messages()}
    shop.run("2026-11-25T10:00")               # the next occurrence, and the first one's sends
    by_day: dict[str, dict[str, str]] = {}
    for m in shop.messages():
        by_day.setdefault(m["key"].split(":")[1] if ":" in m["key"] else m["key"], {})[
            m["customer_id"]] = m["variant"]
    for day in by_day.values():
        assert day == {c: v for c, (v, _) in planned.items()}
    # An outcome lost in a crash after the hand-over, then resent by the operator: same variant.
    ledger = shop.ledger()
    try:
        with ledger.engine.begin() as conn:
            conn.execute(text("UPDATE messages SET state = 'unknown' WHERE customer_id = 'c001'"))
    finally:
        ledger.close()
    assert shop.cli("resend", "--unknown", "--yes").code == 0
    assert shop.cli("dispatch").code == 0
    after = [m for m in shop.messages() if m["customer_id"] == "c001"]
    assert {(m["state"], m["variant"]) for m in after} == {("sent", planned["c001"][0])}
    resent = [m for m in shop.outbox("email") if m["key"] in {a["key"] for a in after}]
    assert {m["subject"] for m in resent} == {"Today only, N1!" if planned["c001"][0] == "urgent"
                                              else "Fresh bread, N1"}
    # A ledger lost altogether (a new one) gives every customer the same variant again.
    other = type(shop)(tmp_path / "again")
    other.customers(_customers(60))
    other.campaign("news", NEWS)
    other.run("2026-11-24T10:00")
    assert {m["customer_id"]: m["variant"] for m in other.messages()} == \
        {c: v for c, (v, _) in planned.items()}


def test_weights_hold_within_binomial_tolerance_over_100000_customers():
    weights = VariantWeights.of([("a", 1.0), ("b", 2.0), ("c", 7.0)])
    n = 100_000
    got = Counter(weights.pick("spring-sale", f"cust-{i}") for i in range(n))
    for name, share in (("a", 0.1), ("b", 0.2), ("c", 0.7)):
        sd = math.sqrt(n * share * (1 - share))
        assert abs(got[name] - n * share) < 4.5 * sd, (name, got)
    held = sum(held_out("spring-sale", f"cust-{i}", 0.1) for i in range(n))
    assert abs(held - 10_000) < 4.5 * math.sqrt(n * 0.1 * 0.9)
    # Independent draws: being held out says nothing about the variant.
    among_held = Counter(weights.pick("spring-sale", f"cust-{i}") for i in range(n)
                         if held_out("spring-sale", f"cust-{i}", 0.1))
    assert abs(among_held["c"] / held - 0.7) < 0.03


def test_preview_and_history_show_the_variant(shop):
    shown = shop.cli("preview", "news", "--variant", "urgent", "--json")
    assert shown.code == 0, shown.stderr
    assert shown.json()["variant"] == "urgent"
    assert shown.json()["channels"]["email"]["fields"]["subject"] == "Today only, Ani!"
    plain = shop.cli("preview", "news", "--variant", "plain", "--json").json()
    assert plain["channels"]["email"]["fields"]["subject"] == "Fresh bread, Ani"
    bad = shop.cli("preview", "news", "--variant", "loud")
    assert bad.code == 2 and "no variant named 'loud' (variants: plain, urgent)" in bad.stderr
    shop.run("2026-11-24T10:00")
    history = shop.cli("history", "--customer", "c001", "--json")
    assert history.code == 0, history.stderr
    [item] = history.json()["messages"]
    assert item["variant"] == _expected("c001")
    human = shop.cli("history", "--customer", "c001")
    assert f"variant {_expected('c001')}" in human.stdout


@pytest.mark.parametrize("body,key,message", [
    ('[[variants]]\nname = "only"\n', "variants", "at least two [[variants]]"),
    ('[[variants]]\nname = "a"\n[[variants]]\nname = "a"\n', "variants[1].name",
     "a second variant named 'a'"),
    ('[[variants]]\nname = "a"\nweight = -1\n[[variants]]\nname = "b"\n', "variants[0].weight",
     "at least 0"),
    ('[[variants]]\nname = "a"\n[variants.email]\nsubjekt = "x"\n[[variants]]\nname = "b"\n',
     "variants[0].email.subjekt", "overrides template fields only"),
    ('[[variants]]\nname = "a"\n[variants.email]\nsubject = "{{ oops"\n[[variants]]\nname = "b"\n',
     "variants[0].email.subject", ""),
    ('[[variants]]\nname = "a"\n[variants.sms]\nbody = "x"\n[[variants]]\nname = "b"\n',
     "variants[0].sms", "no channel named 'sms' among the campaign's"),
    ('[[variants]]\nname = "a"\n[variants.email]\nsubject = "{{ customer.shoe_size }}"\n'
     '[[variants]]\nname = "b"\n', "variants.a.email.subject", "shoe_size"),
])
def test_a_bad_variant_is_refused_naming_the_key(sqlite_project, body, key, message):
    base = NEWS.split("[[variants]]")[0]
    sqlite_project.campaign("news", base + body)
    with pytest.raises(ConfigError) as caught:
        sqlite_project.load()
    found = [p for p in caught.value.problems if p.key == key]
    assert found, [str(p) for p in caught.value.problems]
    assert message in found[0].message


def test_an_older_ledger_gains_the_variant_column(tmp_path, ledger_url):
    from outreach.ledger import Ledger

    if ledger_url.startswith("sqlite"):
        import sqlite3

        path = ledger_url.removeprefix("sqlite:///")
        Ledger(ledger_url).close()
        with sqlite3.connect(path) as conn:
            conn.execute("ALTER TABLE messages DROP COLUMN variant")
    else:
        led = Ledger(ledger_url)
        with led.engine.begin() as conn:
            conn.execute(text("ALTER TABLE messages DROP COLUMN variant"))
        led.close()
    led = Ledger(ledger_url)
    try:
        with led.reader.connect() as conn:
            assert conn.execute(text("SELECT COUNT(variant) FROM messages")).scalar() == 0
    finally:
        led.close()


THANKS = '''
name = "thanks"
rule = "thank_you"
channels = ["email"]
[email]
subject = "Thank you, {{ customer.first_name }}"
body = "For your order."
[[variants]]
name = "plain"
[[variants]]
name = "warm"
[variants.email]
subject = "You made our day, {{ customer.first_name }}"
'''


def test_variants_of_an_event_campaign_hold_on_runs_that_read_only_new_events(project):
    project.customers(_customers(6))
    project.campaign("thanks", THANKS)
    project.events("e1,c001,purchase,2026-11-24T09:00:00-08:00")
    project.run("2026-11-24T10:00")
    project.events("e1,c001,purchase,2026-11-24T09:00:00-08:00\n"
                   "e2,c002,purchase,2026-11-24T10:30:00-08:00\n"
                   "e3,c003,purchase,2026-11-24T10:40:00-08:00")
    project.run("2026-11-24T11:00")
    weights = VariantWeights.of([("plain", 1.0), ("warm", 1.0)])
    msgs = {m["customer_id"]: m["variant"] for m in project.messages()}
    assert msgs == {c: weights.pick("thanks", c) for c in ("c001", "c002", "c003")}
    for m in project.outbox("email"):
        warm = weights.pick("thanks", m["customer"]) == "warm"
        assert m["subject"].startswith("You made our day" if warm else "Thank you")


def test_the_report_compares_each_variant_with_the_first_declared(shop):
    """A variant named to sort last but declared first is the one the others are compared with."""
    body = NEWS.replace('name = "plain"\n', 'name = "zz-plain"\n')
    shop.campaign("news", body)
    shop.run("2026-11-24T10:00")
    result = shop.cli("report", "--json", "--since", "2026-11-01", "--until", "2026-11-30",
                      "--now", "2026-11-30T00:00")
    [exp] = result.json()["experiments"]
    assert [g["name"] for g in exp["groups"]] == ["zz-plain", "urgent"]
