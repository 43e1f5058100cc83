"""Holdouts: a sticky share of a campaign's eligible customers is kept as a control group,
recorded as held_out, sent nothing and counted against no cap; the report shows the conversion
lift of the treated over them."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
import statsmodels.stats.proportion as statsmodels
from sqlalchemy import select, text

from outreach.errors import ConfigError
from outreach.experiments import held_out
from outreach.ledger import skips

NEWS = '''
name = "news"
rule = "newsletter"
schedule = "0 9 * * *"
start = "2026-11-01"
channels = ["email"]
priority = 10
holdout = 0.3
conversion = { event = "purchase", within = "14d" }
[email]
subject = "Fresh bread, {{ customer.first_name }}"
body = "Come by."
'''

PROMO = '''
name = "promo"
rule = "newsletter"
schedule = "0 9 * * *"
start = "2026-11-01"
channels = ["email"]
priority = 5
[email]
subject = "Two for one"
body = "This week."
'''


def _customers(n: int, consent: str = "yes") -> str:
    return "\n".join(f"c{i:04d},N{i},L,c{i}@example.com,,UTC,en,{consent},no," for i in range(n))


def _held(n: int, share: float = 0.3) -> set[str]:
    return {f"c{i:04d}" for i in range(n) if held_out("news", f"c{i:04d}", share)}


def _skips(project) -> dict[str, dict]:
    ledger = project.ledger()
    try:
        with ledger.reader.connect() as conn:
            return {r.customer_id: dict(r._mapping) for r in conn.execute(select(skips))}
    finally:
        ledger.close()


@pytest.fixture
def shop(project):
    project.customers(_customers(80))
    project.campaign("news", NEWS)
    return project


def test_held_out_customers_get_nothing_and_are_recorded(shop):
    report = shop.run("2026-11-24T10:00")
    held = _held(80)
    assert 10 < len(held) < 40
    sent_to = {m["customer_id"] for m in shop.messages()}
    assert sent_to == {f"c{i:04d}" for i in range(80)} - held
    assert {m["customer"] for m in shop.outbox("email")} == sent_to
    recorded = _skips(shop)
    assert {c for c, s in recorded.items() if s["outcome"] == "held_out"} == held
    assert report.campaigns["news"].reasons["held out as the control group (30%)"] == len(held)


def test_the_same_customers_are_held_out_on_every_run_and_in_a_new_ledger(shop, tmp_path):
    shop.run("2026-11-24T10:00")
    shop.run("2026-11-25T10:00")
    by_key = _skips(shop)
    held = _held(80)
    assert {c for c, s in by_key.items() if s["outcome"] == "held_out"} == held
    assert {m["customer_id"] for m in shop.messages()}.isdisjoint(held)
    other = type(shop)(tmp_path / "again")
    other.customers(_customers(80))
    other.campaign("news", NEWS)
    other.run("2026-11-24T10:00")
    assert {c for c, s in _skips(other).items() if s["outcome"] == "held_out"} == held


def test_held_out_customers_take_no_cap_slot(shop):
    """One marketing message a week: the treated get news and are capped for promo; the held-out
    customers' slot is still free, so promo reaches them."""
    shop.configure(caps='[[caps]]\nmax = 1\nper = "7d"\n')
    shop.campaign("promo", PROMO)
    shop.run("2026-11-24T10:00")
    held = _held(80)
    got = {}
    for m in shop.messages():
        got.setdefault(m["customer_id"], set()).add(m["campaign"])
    assert {c for c, camps in got.items() if camps == {"promo"}} == held
    assert {c for c, camps in got.items() if camps == {"news"}} == set(got) - held
    refused = _skips(shop)
    assert {c for c, s in refused.items() if s["outcome"] == "capped"} == set(got) - held


def test_a_held_out_decision_is_kept_with_its_first_time(shop):
    shop.run("2026-11-24T10:00")
    first = {c: s["decided_at"] for c, s in _skips(shop).items() if s["outcome"] == "held_out"}
    # The same occurrence planned again later (a rerun after a crash) and consent withdrawn.
    shop.customers(_customers(80, consent="no"))
    ledger = shop.ledger()
    try:
        with ledger.engine.begin() as conn:
            conn.execute(text("UPDATE campaign_state SET last_fire = NULL, pending_fire = NULL"))
    finally:
        ledger.close()
    shop.run("2026-11-24T12:00")
    again = {c: (s["outcome"], s["decided_at"]) for c, s in _skips(shop).items() if c in first}
    assert again == {c: ("held_out", t) for c, t in first.items()}


def test_holdout_settings_are_checked(sqlite_project):
    sqlite_project.campaign("news", NEWS.replace("holdout = 0.3", "holdout = 0.9"))
    with pytest.raises(ConfigError) as caught:
        sqlite_project.load()
    assert any(p.key == "holdout" and "0 to 0.5" in p.message for p in caught.value.problems)
    sqlite_project.campaign("news", NEWS.replace('within = "14d"', 'within = "soon"'))
    with pytest.raises(ConfigError) as caught:
        sqlite_project.load()
    assert any(p.key == "conversion.within" for p in caught.value.problems)


def _converting(project, n: int, treated_rate: float, control_rate: float, seed: int) -> None:
    """Purchases a few days after the send: each customer buys with their group's probability."""
    rng = random.Random(seed)
    when = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    rows = []
    for i in range(n):
        cid = f"c{i:04d}"
        rate = control_rate if held_out("news", cid, 0.3) else treated_rate
        if rng.random() < rate:
            rows.append(f"p{i},{cid},purchase,{when.isoformat()}")
        rows.append(f"v{i},{cid},visit,{(when + timedelta(days=1)).isoformat()}")  # never counts
        rows.append(f"late{i},{cid},purchase,{(when + timedelta(days=30)).isoformat()}")  # too late
    project.events("\n".join(rows))


def _lift(project) -> dict:
    result = project.cli("report", "--json", "--since", "2026-11-01", "--until", "2026-11-30",
                         "--now", "2026-12-20T00:00")
    assert result.code == 0, result.stderr
    [exp] = [e for e in result.json()["experiments"] if e["kind"] == "holdout"]
    return exp


def test_the_report_measures_a_known_lift(sqlite_project):
    n = 1500
    sqlite_project.customers(_customers(n))
    sqlite_project.campaign("news", NEWS)
    _converting(sqlite_project, n, treated_rate=0.30, control_rate=0.10, seed=5)
    sqlite_project.run("2026-11-24T10:00")
    exp = _lift(sqlite_project)
    control, treated = exp["groups"]
    assert control["name"] == "held out" and control["customers"] == len(_held(n))
    assert treated["customers"] == n - len(_held(n))
    [c] = exp["comparisons"]
    assert c["metric"] == "conversion" and c["significant"]
    assert c["difference_ci"][0] < 0.20 < c["difference_ci"][1]
    assert c["verdict"].startswith("treated beats held out on conversion")
    ref = statsmodels.confint_proportions_2indep(treated["converted"], treated["customers"],
                                                 control["converted"], control["customers"],
                                                 method="wald", compare="diff")
    assert tuple(c["difference_ci"]) == pytest.approx(ref)
    assert c["relative"] == pytest.approx(treated["conversion_rate"] / control["conversion_rate"] - 1)
    assert "open" not in {x["metric"] for x in exp["comparisons"]}  # never opens for a holdout


def test_the_report_claims_no_lift_where_there_is_none(sqlite_project):
    n = 600
    sqlite_project.customers(_customers(n))
    sqlite_project.campaign("news", NEWS)
    _converting(sqlite_project, n, treated_rate=0.2, control_rate=0.2, seed=9)
    sqlite_project.run("2026-11-24T10:00")
    [c] = _lift(sqlite_project)["comparisons"]
    assert not c["significant"]
    assert c["verdict"].startswith(("not yet significant", "not significant"))


def test_customers_still_in_their_window_are_not_counted_yet(sqlite_project):
    sqlite_project.customers(_customers(50))
    sqlite_project.campaign("news", NEWS)
    sqlite_project.run("2026-11-24T10:00")
    result = sqlite_project.cli("report", "--json", "--since", "2026-11-01", "--until",
                                "2026-11-30", "--now", "2026-11-30T00:00")
    [exp] = [e for e in result.json()["experiments"] if e["kind"] == "holdout"]
    assert [(g["customers"], g["still_in_window"]) for g in exp["groups"]] == [
        (0, len(_held(50))), (0, 50 - len(_held(50)))]
