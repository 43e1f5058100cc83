"""Planning shards: shards split the customers, and together plan exactly what one planner plans.

The planner takes a shard (index, count) and plans only the customers whose id hashes to it:
their candidates, their events, their caps, their waiting messages. These tests use the planner
in-process on SQLite (what a shard does is the same on either database); the workers that run
shards are tested in test_workers.py and test_guarantees_workers.py.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timezone

import pytest

from outreach.ledger import Ledger
from outreach.planner import Planner
from outreach.plugins import get_plugins
from outreach.report import RunReport
from outreach.run import parse_now
from outreach.shard import Shard

NOW = "2026-11-24T10:00"


def test_a_customer_belongs_to_exactly_one_shard():
    ids = [f"c{i}" for i in range(2000)] + ["Ա-17", "tagalog:ñ", ""]
    for count in (1, 2, 3, 8):
        owners = [[i for i in range(count) if Shard(i, count).owns(cid)] for cid in ids]
        assert all(len(o) == 1 for o in owners)
    # A stable hash (the same on every host and every Python), not the per-process hash().
    assert Shard(zlib.crc32(b"c42") % 8, 8).owns("c42")
    sizes = [sum(Shard(i, 8).owns(cid) for cid in ids) for i in range(8)]
    assert min(sizes) > 2000 / 8 * 0.8  # roughly even


def test_a_shard_out_of_range_is_refused():
    with pytest.raises(ValueError, match="0 <= index < count"):
        Shard(8, 8)


def _plan(p, shard=None, rows=None, dry_run=True, due=None):
    plugins = get_plugins()
    project = p.load(plugins)
    now = parse_now(NOW, project.tz)
    ledger = Ledger(project.ledger_url)
    report = RunReport(now=NOW)
    try:
        Planner(project, plugins, ledger, now, report, dry_run=dry_run, shard=shard,
                on_row=rows.append if rows is not None else None, due=due).run()
    finally:
        ledger.close()
    return report


@pytest.fixture
def shop(sqlite_project):
    p = sqlite_project
    p.configure(caps="""
        [[caps]]
        max = 1
        per = "7d"
    """)
    p.customers("\n".join(f"c{i},Name{i},,n{i}@example.com,+3749100{i:04d},,en,"
                          f"{'yes' if i % 7 else 'no'},yes," for i in range(300)))
    p.events("\n".join(f"e{i},c{i % 300},purchase,2026-11-24T09:{i % 60:02d}:00-08:00"
                       for i in range(120)))
    p.campaign("thanks", """
        rule = "thank_you"
        channels = ["email"]
        [email]
        subject = "Thank you"
        body = "Thanks {{ customer.first_name }}"
    """)
    p.campaign("news", """
        rule = "newsletter"
        schedule = "0 10 * * *"
        start = "2026-11-01"
        channels = ["email", "sms"]
        [email]
        subject = "News"
        body = "Hello"
        [sms]
        body = "Hello"
    """)
    return p


def test_shards_together_plan_what_one_planner_plans(shop):
    whole: list = []
    _plan(shop, rows=whole)
    parts: list = []
    for i in range(4):
        mine: list = []
        _plan(shop, Shard(i, 4), rows=mine)
        assert all(Shard(i, 4).owns(r.customer) for r in mine)
        parts += mine

    def key(r):
        return (r.campaign, r.customer, r.key, r.decision, r.channel, r.reason, r.not_before)

    assert sorted(map(key, parts)) == sorted(map(key, whole))
    assert {r.decision for r in whole} >= {"send", "skipped", "capped"}


def test_a_shard_does_not_take_other_shards_customers_for_absent(shop):
    """The consent re-check withdraws the waiting messages of customers missing from the audience;
    a shard sees only its own customers, and must leave everyone else's messages alone."""
    shop.run(NOW, send=False)  # every thank-you and newsletter queued, none sent
    ledger = shop.ledger()
    try:
        waiting_before = ledger.state_counts().get("queued", 0)
    finally:
        ledger.close()
    assert waiting_before > 100
    report = _plan(shop, Shard(1, 4), dry_run=False, due=[])
    assert report.totals["skipped"] == 0
    ledger = shop.ledger()
    try:
        assert ledger.state_counts().get("queued", 0) == waiting_before
    finally:
        ledger.close()


def test_a_shard_withdraws_its_own_customers_messages_only(shop):
    shop.run(NOW, send=False)
    # c1 and c2 withdraw email consent; only the shard that owns c1 is planned.
    text = (shop.root / "customers.csv").read_text()
    text = text.replace("c1,Name1,,n1@example.com,+37491000001,,en,yes", "c1,Name1,,n1@example.com,+37491000001,,en,no")
    text = text.replace("c2,Name2,,n2@example.com,+37491000002,,en,yes", "c2,Name2,,n2@example.com,+37491000002,,en,no")
    (shop.root / "customers.csv").write_text(text)
    mine = next(i for i in range(4) if Shard(i, 4).owns("c1"))
    rows: list = []
    _plan(shop, Shard(mine, 4), rows=rows, dry_run=True, due=[])
    withdrawn = {r.customer for r in rows if r.decision == "withdrawn"}
    assert "c1" in withdrawn
    assert ("c2" in withdrawn) == Shard(mine, 4).owns("c2")


def test_a_shard_given_the_due_campaigns_records_no_occurrence(shop):
    """The run decides due campaigns once for all its shards; a shard plans what it is given
    and leaves the occurrences to the run (completed when every shard has planned)."""
    plugins = get_plugins()
    project = shop.load(plugins)
    now = parse_now(NOW, project.tz)
    news = project.campaigns["news"]
    occurrence = datetime(2026, 11, 24, 18, tzinfo=timezone.utc)
    ledger = Ledger(project.ledger_url)
    try:
        report = RunReport(now=NOW)
        Planner(project, plugins, ledger, now, report, shard=Shard(0, 2),
                due=[(news, occurrence)], run_id="r1").run()
        assert report.campaign("news").queued > 0
        assert report.campaign("thanks").queued == 0  # not given: not planned
        assert ledger.campaign_states() == {}
    finally:
        ledger.close()
