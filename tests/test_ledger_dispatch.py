"""The ledger's dispatch statements, on SQLite and PostgreSQL: the claim's order read level by level
from ``ix_messages_ready``, set-wise hand-overs and outcomes, and the index migration of an older
ledger. (The guarantees these rest on are in test_ledger_states.py.)"""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlalchemy import create_engine, inspect, select, text

from outreach.ledger import Ledger, messages, wall_clock

NOW = 1_795_000_000


def _row(key: str, *, priority: int = 0, due_at: int = NOW, state: str = "queued",
         channel: str = "sms", campaign: str = "news", version_id: int = 1) -> dict:
    return {"key": key, "campaign": campaign, "version_id": version_id, "customer_id": key,
            "channel": channel, "address": "+37491000000", "name": "Ani", "locale": "hy",
            "variables": json.dumps({"n": key}), "category": "marketing", "priority": priority,
            "state": state, "not_before": due_at, "due_at": due_at, "run_id": None}


def _rows(ledger: Ledger) -> dict[str, dict]:
    with ledger.reader.connect() as conn:
        return {r.key: dict(r._mapping) for r in conn.execute(select(messages))}


def test_claim_order_is_priority_then_due_time_then_age_across_states(ledger):
    v = ledger.version
    ledger.insert_messages([
        _row("low-old", priority=10, due_at=NOW - 500, version_id=v),
        _row("high-late", priority=90, due_at=NOW - 10, version_id=v),
        _row("high-early-deferred", priority=90, due_at=NOW - 20, state="deferred", version_id=v),
        _row("high-future", priority=90, due_at=NOW + 60, version_id=v),
        _row("mid", priority=50, due_at=NOW - 5, state="deferred", version_id=v),
        _row("high-late-2", priority=90, due_at=NOW - 10, version_id=v),
        _row("sent", priority=99, due_at=NOW - 999, state="sent", version_id=v),
        _row("sending", priority=99, due_at=NOW - 999, state="sending", version_id=v),
    ])
    got = ledger.claim("a", 100, NOW, 600)
    assert [c.key for c in got] == ["high-early-deferred", "high-late", "high-late-2", "mid",
                                    "low-old"]
    assert got[0].variables == {"n": "high-early-deferred"}
    assert ledger.claim("b", 100, NOW, 600) == []


def test_claim_stops_at_its_limit_within_and_across_levels(ledger):
    v = ledger.version
    ledger.insert_messages([_row(f"p{p}-{i}", priority=p, due_at=NOW - i, version_id=v,
                                 state=("queued", "deferred")[i % 2])
                            for p in (5, 7, 9) for i in range(4)])
    assert [c.key for c in ledger.claim("a", 3, NOW, 600)] == ["p9-3", "p9-2", "p9-1"]
    assert [c.key for c in ledger.claim("a", 3, NOW, 600)] == ["p9-0", "p7-3", "p7-2"]
    assert [c.key for c in ledger.claim("a", 100, NOW, 600)] == \
        ["p7-1", "p7-0", "p5-3", "p5-2", "p5-1", "p5-0"]
    assert ledger.claim("a", 0, NOW, 600) == []


def test_claim_filters_channels_and_campaigns(ledger):
    v = ledger.version
    ledger.insert_messages([_row("sms-news", version_id=v),
                            _row("email-news", channel="email", version_id=v),
                            _row("sms-promo", campaign="promo", priority=9, version_id=v)])
    assert ledger.claim("a", 10, NOW, 600, channels=[]) == []
    assert [c.key for c in ledger.claim("a", 10, NOW, 600, campaigns=["news"],
                                        channels=["sms"])] == ["sms-news"]
    assert [c.key for c in ledger.claim("a", 10, NOW, 600, channels=["email", "fax"])] == \
        ["email-news"]
    assert [c.key for c in ledger.claim("a", 10, NOW, 600, campaigns=[])] == ["sms-promo"]


def test_claim_records_the_owner_and_expiry_and_clears_a_stale_hand_over(ledger):
    ledger.insert_messages([_row("k", version_id=ledger.version)])
    before = wall_clock()
    [c] = ledger.claim("me", 10, NOW, 600)
    row = _rows(ledger)["k"]
    assert (row["state"], row["claim_owner"], row["handed_at"]) == ("sending", "me", None)
    assert before + 600 <= row["claim_expires"] <= wall_clock() + 600
    assert (c.id, c.key, c.campaign, c.version_id, c.channel, c.attempts) == \
        (row["id"], "k", "news", ledger.version, "sms", 0)


def test_mark_handed_and_release_take_many_ids_in_one_statement(ledger):
    ledger.insert_messages([_row(f"k{i:04d}", version_id=ledger.version) for i in range(1200)])
    claimed = ledger.claim("me", 1200, NOW, 600)
    ids = [c.id for c in claimed]
    assert ledger.mark_handed(ids[:1100], "other") == set()
    assert ledger.mark_handed(ids[:1100], "me", ttl=60) == set(ids[:1100])
    ledger.release(ids, "other")
    ledger.release(ids[1100:], "me")
    rows = _rows(ledger)
    handed = [r for r in rows.values() if r["handed_at"] is not None]
    assert len(handed) == 1100 and {r["state"] for r in handed} == {"sending"}
    assert all(r["claim_expires"] <= wall_clock() + 60 for r in handed)
    back = [r for r in rows.values() if r["state"] == "queued"]
    assert len(back) == 100 and all(r["claim_owner"] is None for r in back)
    assert ledger.mark_handed([], "me") == set()


def test_settle_writes_groups_and_singles_only_for_the_owner(ledger):
    ledger.insert_messages([_row(f"k{i:03d}", version_id=ledger.version) for i in range(30)])
    claimed = ledger.claim("me", 30, NOW, 600)
    t = wall_clock()
    outcomes = [{"id": c.id, "state": "sent", "provider_id": "batch-1", "segments": None,
                 "sent_at": t, "error": None, "attempts": 1} for c in claimed[:20]]
    outcomes += [{"id": c.id, "state": "sent", "provider_id": f"SM{i}", "segments": 2,
                  "sent_at": t, "error": None, "attempts": 1} for i, c in enumerate(claimed[20:25])]
    outcomes += [{"id": claimed[25].id, "state": "deferred", "due_at": NOW + 60, "attempts": 1,
                  "error": "attempt 1 of 5: 429"},
                 {"id": claimed[26].id, "state": "failed", "error": "refused", "attempts": 1},
                 {"id": claimed[27].id, "state": "unknown", "error": "timed out", "attempts": 1}]
    ledger.settle(outcomes, "intruder")  # not the owner: nothing is written
    assert {r["state"] for r in _rows(ledger).values()} == {"sending"}
    ledger.settle(outcomes, "me")
    rows = {r["id"]: r for r in _rows(ledger).values()}
    for c in claimed[:20]:
        r = rows[c.id]
        assert (r["state"], r["provider_id"], r["sent_at"], r["attempts"], r["claim_owner"],
                r["claim_expires"], r["error"]) == ("sent", "batch-1", t, 1, None, None, None)
    assert [rows[c.id]["provider_id"] for c in claimed[20:25]] == [f"SM{i}" for i in range(5)]
    assert rows[claimed[25].id]["state"] == "deferred" and rows[claimed[25].id]["due_at"] == NOW + 60
    assert (rows[claimed[26].id]["state"], rows[claimed[26].id]["error"]) == ("failed", "refused")
    assert rows[claimed[27].id]["state"] == "unknown"
    assert [rows[c.id]["state"] for c in claimed[28:]] == ["sending", "sending"]


def test_settle_accepts_values_that_cannot_be_grouped(ledger):
    """An outcome value that is not hashable (a plugin's odd provider id) is written on its own."""

    class Odd(str):
        __hash__ = None  # type: ignore[assignment]

    ledger.insert_messages([_row("k", version_id=ledger.version)])
    [c] = ledger.claim("me", 1, NOW, 600)
    ledger.settle([{"id": c.id, "state": "sent", "provider_id": Odd("SM-odd"), "attempts": 1}], "me")
    assert _rows(ledger)["k"]["provider_id"] == "SM-odd"


def test_an_older_sqlite_ledger_gets_the_claim_index(tmp_path):
    """A ledger made with ix_messages_due (state, due_at) is migrated when opened: the claim's index
    is built and the old one dropped; its messages are claimed as before."""
    path = tmp_path / "old.db"
    led = Ledger(f"sqlite:///{path}")
    led.insert_messages([_row(f"k{i}", priority=i % 3, version_id=1) for i in range(10)])
    led.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX ix_messages_ready")
    conn.execute("CREATE INDEX ix_messages_due ON messages (state, due_at)")
    conn.commit()
    conn.close()
    led = Ledger(f"sqlite:///{path}")
    try:
        names = {i["name"] for i in inspect(led.engine).get_indexes("messages")}
        assert "ix_messages_ready" in names and "ix_messages_due" not in names
        assert [c.key for c in led.claim("a", 3, NOW, 600)] == ["k2", "k5", "k8"]
    finally:
        led.close()


@pytest.mark.postgres
def test_an_older_postgresql_ledger_gets_the_claim_index_in_its_own_schema(pg_schema):
    """Migration on PostgreSQL drops the old index of the ledger's own table only, not that of
    another ledger further down the search path."""
    old, new = pg_schema(), pg_schema()
    Ledger(old).close()
    Ledger(new).close()
    engine = create_engine(old.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_messages_ready"))
        conn.execute(text("CREATE INDEX ix_messages_due ON messages (state, due_at)"))
    old_schema = old.rsplit("%3D", 1)[1]
    Ledger(f"{new}%2C{old_schema}").close()  # search_path: new, old
    with engine.connect() as conn:
        names = {i["name"] for i in inspect(conn).get_indexes("messages")}
    engine.dispose()
    assert "ix_messages_due" in names and "ix_messages_ready" not in names  # untouched
    led = Ledger(old)
    try:
        names = {i["name"] for i in inspect(led.engine).get_indexes("messages")}
        assert "ix_messages_ready" in names and "ix_messages_due" not in names
    finally:
        led.close()
