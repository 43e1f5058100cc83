"""The ledger itself: the planner lock, versions, and set-wise queries, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from outreach.errors import LedgerBusy
from outreach.ledger import Ledger


def test_the_planner_lock_is_exclusive(ledger_url):
    a, b = Ledger(ledger_url), Ledger(ledger_url)
    try:
        with a.planner_lock():
            with pytest.raises(LedgerBusy, match="another outreach run is in progress"):
                with b.planner_lock():
                    pass
        with b.planner_lock():  # released when the holder is done
            pass
    finally:
        a.close()
        b.close()


def test_two_ledgers_in_one_postgresql_database_do_not_block_each_other(pg_schema):
    a, b = Ledger(pg_schema()), Ledger(pg_schema())
    try:
        with a.planner_lock(), b.planner_lock():
            pass
    finally:
        a.close()
        b.close()


def test_many_processes_can_open_a_new_ledger_at_once(ledger_url):
    """Creating the tables is serialised: four openers of a fresh ledger all succeed."""
    from concurrent.futures import ThreadPoolExecutor

    def open_close(_):
        Ledger(ledger_url).close()
        return True

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(open_close, range(4)))


def test_a_campaign_version_is_stored_once(ledger_url):
    ledger = Ledger(ledger_url)
    try:
        first = ledger.store_version("news", "abc", {"templates": {"email": {"fields": {"a": "1"}}}})
        assert ledger.store_version("news", "abc", {"ignored": True}) == first
        assert ledger.store_version("news", "def", {"templates": {}}) != first
        assert ledger.version_content(first) == {"templates": {"email": {"fields": {"a": "1"}}}}
    finally:
        ledger.close()


def test_inserting_a_planned_key_twice_is_a_no_op(ledger_url):
    ledger = Ledger(ledger_url)
    row = {"key": "news:1:c1", "campaign": "news", "version_id": 1, "customer_id": "c1",
           "channel": "email", "address": "a@example.com", "name": "A", "locale": "en",
           "variables": "{}", "category": "marketing", "priority": 0, "state": "queued",
           "not_before": 100, "due_at": 100, "run_id": None}
    try:
        assert ledger.insert_messages([row]) == 1
        assert ledger.insert_messages([row, {**row, "key": "news:1:c2"}]) == 1
        assert ledger.existing_keys(["news:1:c1", "news:1:c2", "news:1:c3"]) == {"news:1:c1",
                                                                                "news:1:c2"}
        assert ledger.state_counts() == {"queued": 2}
    finally:
        ledger.close()


def test_unreachable_postgresql_is_a_clear_error():
    from outreach.errors import OutreachError

    with pytest.raises(OutreachError, match=r"cannot open the ledger postgresql\+psycopg://u:\*\*\*@"):
        Ledger("postgresql://u:secret-pw@127.0.0.1:1/none")
