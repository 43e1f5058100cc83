"""The outbox state machine, on SQLite and PostgreSQL: the ledger operations the guarantees rest on.

    queued ──claim──▶ sending ──settle──▶ sent | failed | deferred | unknown
    sending, claim expired, never handed ──recover──▶ queued
    sending, claim expired, handed over  ──recover──▶ unknown   (resent only by resend_unknown)

Each ledger here is its own engine, as each process has its own: what two of them do at once is
what two processes do at once.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from outreach.ledger import Ledger, messages, wall_clock

NOW = 1_795_000_000  # the run's --now, in epoch seconds (independent of the wall clock)


def _row(key: str, *, due_at: int = NOW, state: str = "queued", version_id: int = 1) -> dict:
    return {"key": key, "campaign": "news", "version_id": version_id, "customer_id": key,
            "channel": "sms", "address": "+37491000000", "name": "Ani", "locale": "hy",
            "variables": "{}", "category": "marketing", "priority": 0, "state": state,
            "not_before": due_at, "due_at": due_at, "run_id": None}


@pytest.fixture
def other(ledger, ledger_url):
    """A second connection to the same ledger: another process."""
    led = Ledger(ledger_url)
    yield led
    led.close()


def _plan(ledger: Ledger, n: int, **kw) -> list[str]:
    keys = [f"k{i:04d}" for i in range(n)]
    ledger.insert_messages([_row(k, version_id=ledger.version, **kw) for k in keys])
    return keys


def _state(ledger: Ledger, key: str) -> dict:
    with ledger.reader.connect() as conn:
        return dict(conn.execute(select(messages).where(messages.c.key == key)).one()._mapping)


def test_claim_is_atomic_between_two_claimers(ledger, other):
    """Handed-once guarantee: two claimers at once never get the same row, and together get all."""
    keys = _plan(ledger, 400)
    got: dict[str, list[str]] = {"a": [], "b": []}
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def claimer(name: str, led: Ledger) -> None:
        try:
            start.wait()
            while True:
                rows = led.claim(name, 9, NOW, 600)
                if not rows:
                    return
                got[name] += [r.key for r in rows]
                time.sleep(0.002)  # "sending" them, so the two claimers interleave
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=("a", ledger)),
               threading.Thread(target=claimer, args=("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert set(got["a"]).isdisjoint(got["b"])
    assert sorted(got["a"] + got["b"]) == keys  # nothing claimed twice, nothing left behind
    assert got["a"] and got["b"], "the two claimers did not overlap"
    for name in ("a", "b"):
        for key in got[name][:5]:
            row = _state(ledger, key)
            assert (row["state"], row["claim_owner"]) == ("sending", name)


def test_claim_takes_only_due_queued_or_deferred_rows(ledger):
    """Handed-once guarantee: sending, sent, failed and unknown rows are never claimed."""
    ledger.insert_messages([_row(f"{s}-row", state=s, version_id=ledger.version)
                            for s in ("sending", "sent", "failed", "unknown")])
    ledger.insert_messages([_row("later", due_at=NOW + 60, version_id=ledger.version),
                            _row("deferred-due", state="deferred", version_id=ledger.version),
                            _row("queued-due", version_id=ledger.version)])
    assert sorted(r.key for r in ledger.claim("a", 100, NOW, 600)) == ["deferred-due", "queued-due"]
    assert ledger.claim("b", 100, NOW, 600) == []


def test_expired_claim_never_handed_over_goes_back_to_queued(ledger, other):
    """Nothing-lost guarantee: a crashed process's never-handed rows are queued again, not lost."""
    [key] = _plan(ledger, 1)
    [claimed] = ledger.claim("crashed", 10, NOW, 1)
    assert other.recover() == (0, 0)  # the claim is still live: not taken back
    assert _state(ledger, key)["state"] == "sending"
    assert other.recover(wall_clock() + 5) == (1, 0)
    row = _state(ledger, key)
    assert (row["state"], row["claim_owner"], row["handed_at"]) == ("queued", None, None)
    assert [r.key for r in other.claim("next", 10, NOW, 600)] == [key]


def test_expired_claim_after_hand_over_becomes_unknown_and_is_not_resent(ledger, other):
    """Handed-once guarantee: a row that may have left is marked unknown, with a reason, never requeued."""
    [key] = _plan(ledger, 1)
    [claimed] = ledger.claim("crashed", 10, NOW, 1)
    ledger.mark_handed([claimed.id], "crashed")
    assert other.recover(wall_clock() + 5) == (0, 1)
    row = _state(ledger, key)
    assert row["state"] == "unknown" and "may have been sent" in row["error"]
    assert row["claim_owner"] is None
    assert other.claim("next", 10, NOW + 86400, 600) == []
    assert other.recover(wall_clock() + 5) == (0, 0)  # recovery is idempotent


def test_mark_handed_only_marks_the_owners_rows(ledger, other):
    """Handed-once guarantee: another process cannot mark (or unmark) rows it does not hold."""
    [key] = _plan(ledger, 1)
    [claimed] = ledger.claim("owner", 10, NOW, 600)
    other.mark_handed([claimed.id], "intruder")
    assert _state(ledger, key)["handed_at"] is None
    ledger.mark_handed([claimed.id], "owner")
    assert _state(ledger, key)["handed_at"] is not None


def test_settle_only_touches_the_owners_rows(ledger, other):
    """Handed-once guarantee: a process whose claim was taken over cannot overwrite the new owner's outcome."""
    [key] = _plan(ledger, 1)
    [old] = ledger.claim("old", 10, NOW, 1)
    assert other.recover(wall_clock() + 5) == (1, 0)
    [new] = other.claim("new", 10, NOW, 600)
    assert new.id == old.id
    ledger.settle([{"id": old.id, "state": "sent", "provider_id": "SM-old", "attempts": 1}], "old")
    row = _state(ledger, key)
    assert (row["state"], row["claim_owner"], row["provider_id"]) == ("sending", "new", None)
    other.settle([{"id": new.id, "state": "sent", "provider_id": "SM-new", "attempts": 1,
                   "sent_at": wall_clock()}], "new")
    row = _state(ledger, key)
    assert (row["state"], row["claim_owner"], row["provider_id"]) == ("sent", None, "SM-new")


def test_deferred_rows_become_due_at_their_due_at(ledger):
    """Nothing-lost guarantee: a deferred message keeps its time and attempts and is claimed when due."""
    [key] = _plan(ledger, 1)
    [c] = ledger.claim("a", 10, NOW, 600)
    ledger.settle([{"id": c.id, "state": "deferred", "due_at": NOW + 120, "attempts": 1,
                    "error": "attempt 1 of 5: HTTP 429"}], "a")
    row = _state(ledger, key)
    assert (row["state"], row["due_at"], row["attempts"]) == ("deferred", NOW + 120, 1)
    assert row["error"]
    assert ledger.claim("b", 10, NOW + 119, 600) == []
    [again] = ledger.claim("b", 10, NOW + 120, 600)
    assert (again.key, again.attempts) == (key, 1)


def test_resend_unknown_queues_only_unknown_rows(ledger):
    """Handed-once guarantee: only an operator's resend puts an unknown message back, and nothing else."""
    ledger.insert_messages([_row(k, state=s, version_id=ledger.version) for k, s in
                            (("u1", "unknown"), ("u2", "unknown"), ("s", "sent"), ("f", "failed"),
                             ("d", "deferred"))])
    assert ledger.resend_unknown(["u1"]) == 1
    assert [_state(ledger, k)["state"] for k in ("u1", "u2", "s", "f", "d")] == \
        ["queued", "unknown", "sent", "failed", "deferred"]
    assert ledger.resend_unknown(None) == 1
    row = _state(ledger, "u2")
    assert (row["state"], row["handed_at"], row["error"], row["due_at"]) == ("queued", None, None, NOW)
    assert sorted(r.key for r in ledger.claim("a", 10, NOW, 600)) == ["d", "u1", "u2"]


def test_a_key_is_planned_at_most_once(ledger, other):
    """Planned-once guarantee: inserting a key again (another run, a resumed occurrence) is a no-op."""
    keys = _plan(ledger, 10)
    assert other.insert_messages([_row(k, version_id=ledger.version) for k in keys[5:]] +
                                 [_row("new", version_id=ledger.version)]) == 1
    with ledger.reader.connect() as conn:
        stored = conn.execute(select(messages.c.key)).scalars().all()
    assert sorted(stored) == sorted(keys + ["new"])


def test_six_processes_opening_a_fresh_ledger_at_once_all_succeed(ledger_url):
    """Overlap guarantee: cron starting several runs on a brand-new ledger does not fail any of them."""
    start = threading.Barrier(6)
    errors: list[str] = []

    def open_it() -> None:
        start.wait()
        try:
            Ledger(ledger_url).close()
        except Exception as exc:  # noqa: BLE001 - what the test reports
            errors.append(str(exc).splitlines()[0])

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
