"""Incremental planning: an event-only run reads the new events and the customers they name.

Real files, a real SQLite ledger (and PostgreSQL/MariaDB for the SQL source), real subprocesses
for what a run reads from disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import datetime

import pytest

from outreach.ledger import Ledger

CUSTOMERS = """
c1,Ani,Petrosyan,ani@example.com,+37491234567,Asia/Yerevan,hy,yes,yes,
c2,Juan,Cruz,juan@example.com,+639171234567,Asia/Manila,tl,yes,yes,
c3,Leyla,Mammadova,leyla@example.com,+994501234567,Asia/Baku,az,yes,no,
"""

THANKS = """
rule = "thank_you"
channels = ["email"]
category = "transactional"
[email]
subject = "Thank you, {{ customer.first_name }}"
body = "Thank you for order {{ event.id }}."
"""


@pytest.fixture
def shop(sqlite_project):
    sqlite_project.customers(CUSTOMERS)
    sqlite_project.events("e1,c1,purchase,2026-11-24T09:00")
    sqlite_project.campaign("thanks", THANKS)
    return sqlite_project


def append(p, *rows: str) -> None:
    with open(p.root / "events.csv", "a", encoding="utf-8") as fh:
        fh.write("".join(r + "\n" for r in rows))


def keys(p) -> Counter:
    return Counter(m["key"] for m in p.messages())


def test_appended_events_are_planned_from_the_cursor(shop):
    first = shop.run("2026-11-24T10:00")
    assert first.planning == {"mode": "full", "reason": "no event cursor yet"}
    append(shop, "e2,c2,purchase,2026-11-24T10:01", "e3,c3,complaint,2026-11-24T10:02")
    second = shop.run("2026-11-24T10:05")
    # Only the appended rows were read (two), and only the one purchase's customer looked up.
    assert second.planning == {"mode": "incremental", "events": 1, "customers": 1}
    assert second.campaigns["thanks"].queued == 1
    third = shop.run("2026-11-24T10:10")
    assert third.planning == {"mode": "incremental", "events": 0, "customers": 0}
    assert keys(shop) == {"thanks:e1": 1, "thanks:e2": 1}
    assert [m["subject"] for m in shop.outbox("email")] == ["Thank you, Ani", "Thank you, Juan"]


def test_a_rewritten_or_rotated_events_file_means_a_full_pass_without_duplicates(shop):
    shop.run("2026-11-24T10:00")
    append(shop, "e2,c2,purchase,2026-11-24T10:01")
    shop.run("2026-11-24T10:05")
    # Rewritten: same rows in another order, one more; the line the cursor ends on has moved.
    shop.events("e2,c2,purchase,2026-11-24T10:01\ne1,c1,purchase,2026-11-24T09:00\n"
                "e3,c3,purchase,2026-11-24T10:06")
    report = shop.run("2026-11-24T10:10")
    assert report.planning == {"mode": "full",
                               "reason": "the events were rewritten, not appended to"}
    # Rotated: a new file with only the newest rows (shorter than the cursor's offset).
    shop.events("e4,c1,purchase,2026-11-24T10:11")
    report = shop.run("2026-11-24T10:15")
    assert report.planning["mode"] == "full"
    assert keys(shop) == {"thanks:e1": 1, "thanks:e2": 1, "thanks:e3": 1, "thanks:e4": 1}
    assert len(shop.outbox("email")) == 4
    append(shop, "e5,c2,purchase,2026-11-24T10:16")
    assert shop.run("2026-11-24T10:20").planning["mode"] == "incremental"
    assert keys(shop)["thanks:e5"] == 1


def test_a_changed_campaign_means_a_full_pass(shop):
    shop.run("2026-11-24T10:00")
    assert shop.run("2026-11-24T10:05").planning["mode"] == "incremental"
    shop.campaign("thanks", THANKS.replace("Thank you for order", "Thanks for order"))
    report = shop.run("2026-11-24T10:10")
    assert report.planning == {"mode": "full", "reason": "an event-driven campaign was added, "
                                                         "removed or changed"}
    assert shop.run("2026-11-24T10:15").planning["mode"] == "incremental"
    shop.campaign("sorry", THANKS.replace("thank_you", "apology").replace(
        "[email]", "[params]\nevents = [\"complaint\"]\n[email]"))
    assert shop.run("2026-11-24T10:20").planning["mode"] == "full"


def test_a_scheduled_campaign_due_or_the_periodic_full_pass_reads_everything(shop):
    shop.configure(extra='full_pass_every = "6h"')
    shop.campaign("news", """
        rule = "newsletter"
        schedule = "0 12 * * *"
        start = "2026-11-24"
        channels = ["email"]
        [email]
        subject = "News"
        body = "News."
    """)
    shop.run("2026-11-24T10:00")
    assert shop.run("2026-11-24T11:00").planning["mode"] == "incremental"
    noon = shop.run("2026-11-24T12:01")
    assert noon.planning == {"mode": "full", "reason": "scheduled campaign 'news' is due"}
    assert shop.run("2026-11-24T17:00").planning["mode"] == "incremental"
    late = shop.run("2026-11-24T18:02")
    assert late.planning == {"mode": "full",
                             "reason": "the periodic full pass is due (full_pass_every)"}


def test_full_pass_every_is_a_checked_setting(shop):
    shop.configure(extra='full_pass_every = "often"')
    result = shop.cli("validate")
    assert result.code == 2
    assert "full_pass_every" in result.stderr + result.stdout


def test_a_crash_before_the_commit_leaves_the_cursor_behind(shop, monkeypatch):
    shop.configure(extra="batch_size = 1")
    shop.run("2026-11-24T10:00")
    append(shop, "e2,c2,purchase,2026-11-24T10:01", "e3,c3,purchase,2026-11-24T10:02")

    real = Ledger._store_cursor_on

    def crash(self, conn, source, stream, state):
        real(self, conn, source, stream, state)
        raise RuntimeError("killed after planning, before the commit")

    monkeypatch.setattr(Ledger, "_store_cursor_on", crash)
    with pytest.raises(RuntimeError):
        shop.run("2026-11-24T10:05")
    # The first batch's messages were committed on their own; the last batch's went down with
    # the cursor they share a transaction with.
    assert set(keys(shop)) == {"thanks:e1", "thanks:e2"}
    monkeypatch.setattr(Ledger, "_store_cursor_on", real)
    again = shop.run("2026-11-24T10:06")
    assert again.planning == {"mode": "incremental", "events": 2, "customers": 2}
    assert again.campaigns["thanks"].already_planned == 1
    assert keys(shop) == {"thanks:e1": 1, "thanks:e2": 1, "thanks:e3": 1}
    assert sorted(m["subject"] for m in shop.outbox("email")) == [
        "Thank you, Ani", "Thank you, Juan", "Thank you, Leyla"]


def test_the_customers_copy_is_rebuilt_when_the_file_changes(shop):
    shop.run("2026-11-24T10:00")
    append(shop, "e2,c2,purchase,2026-11-24T10:01")
    shop.run("2026-11-24T10:05")
    assert list((shop.root / ".outreach-cache").glob("customers-*.sqlite"))
    # Juan withdraws email consent; Leyla moves address. Same file size for Juan's row.
    shop.customers(CUSTOMERS.replace("juan@example.com,+639171234567,Asia/Manila,tl,yes",
                                     "juan@example.com,+639171234567,Asia/Manila,tl,no")
                   .replace("leyla@example.com", "leyla@example.net"))
    append(shop, "e3,c2,purchase,2026-11-24T10:06", "e4,c3,purchase,2026-11-24T10:07")
    report = shop.run("2026-11-24T10:10")
    assert report.planning["mode"] == "incremental"
    assert report.campaigns["thanks"].queued == 1
    assert "thanks:e3" not in keys(shop)
    assert [m["to"] for m in shop.outbox("email") if m["key"] == "thanks:e4"] == [
        "leyla@example.net"]


def test_a_rule_with_a_delay_falls_back_to_a_full_pass_and_loses_nothing(shop):
    shop.campaign("thanks", THANKS.replace("[email]", "[params]\ndelay = \"1h\"\n[email]"))
    shop.run("2026-11-24T10:00")
    append(shop, "e2,c2,purchase,2026-11-24T10:01")
    early = shop.run("2026-11-24T10:05")
    assert early.planning == {"mode": "full",
                              "reason": "the rule of 'thanks' needs more than the new events"}
    assert "thanks:e2" not in keys(shop)
    shop.run("2026-11-24T11:02")
    assert keys(shop)["thanks:e2"] == 1


def test_an_event_read_ahead_of_its_time_holds_the_cursor_back(shop):
    shop.run("2026-11-24T10:00")
    append(shop, "e2,c2,purchase,2026-11-24T10:01", "e8,c1,purchase,2026-11-24T10:30",
           "e3,c3,purchase,2026-11-24T10:02")
    report = shop.run("2026-11-24T10:05")
    assert report.planning == {"mode": "incremental", "events": 3, "customers": 2}
    assert set(keys(shop)) == {"thanks:e1", "thanks:e2", "thanks:e3"}
    # The cursor stopped before e8: the rows from there are read again, and e8 is planned now.
    report = shop.run("2026-11-24T10:31")
    assert report.planning == {"mode": "incremental", "events": 2, "customers": 2}
    assert report.campaigns["thanks"].already_planned == 1
    assert keys(shop) == {"thanks:e1": 1, "thanks:e2": 1, "thanks:e3": 1, "thanks:e8": 1}


def test_an_event_a_full_pass_saw_ahead_of_its_time_is_planned_when_it_happens(shop):
    shop.events("e1,c1,purchase,2026-11-24T09:00\ne9,c3,purchase,2026-11-24T11:00")
    shop.run("2026-11-24T10:00")  # the full pass reads e9 before it happened
    append(shop, "e2,c2,purchase,2026-11-24T10:01")
    assert shop.run("2026-11-24T10:05").planning["mode"] == "incremental"
    assert "thanks:e9" not in keys(shop)
    report = shop.run("2026-11-24T11:01")
    assert report.planning == {"mode": "full", "reason": "an event dated after the last full "
                                                         "pass has come due"}
    assert keys(shop)["thanks:e9"] == 1
    assert shop.run("2026-11-24T11:05").planning["mode"] == "incremental"


def test_a_waiting_message_is_rechecked_by_id_in_an_incremental_run(shop):
    shop.run("2026-11-24T10:00")
    append(shop, "e2,c2,purchase,2026-11-24T10:01")
    report = shop.run("2026-11-24T10:05", send=False)  # e2's message waits to be sent
    assert report.planning["mode"] == "incremental"
    shop.customers(CUSTOMERS.replace("tl,yes,yes", "tl,no,yes"))
    report = shop.run("2026-11-24T10:10")
    assert report.planning == {"mode": "incremental", "events": 0, "customers": 1}
    [e2] = [m for m in shop.messages() if m["key"] == "thanks:e2"]
    assert e2["state"] == "failed" and e2["stopped_by"] == "consent"


def test_dry_runs_and_single_campaign_runs_keep_no_cursor(shop):
    shop.run("2026-11-24T10:00", dry_run=True)
    shop.run("2026-11-24T10:00", campaigns=["thanks"])
    ledger = shop.ledger()
    try:
        with ledger.reader.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM event_cursors").scalar() == 0
    finally:
        ledger.close()
    assert shop.run("2026-11-24T10:05").planning["mode"] == "full"
    assert shop.run("2026-11-24T10:06").planning["mode"] == "incremental"


# ---------------------------------------------------------------------- what a run reads
_MEASURED = textwrap.dedent("""
    import sys
    from outreach.cli import main
    from outreach.plugins import get_plugins

    def rchar():
        with open("/proc/self/io") as fh:
            return int(next(l for l in fh if l.startswith("rchar")).split()[1])

    get_plugins()
    # What every run imports on first use (the ledger's database dialect): start-up, too.
    import sqlalchemy.dialects.sqlite.pysqlite, encodings.utf_8_sig, outreach.sources.presets
    start = rchar()
    try:
        main()
    finally:
        sys.stderr.write(f"\\nREAD {rchar() - start}\\n")
""")


def _measured_run(p, now: str) -> int:
    # Built-in channels only: no installed plugin's metadata is read (what start-up costs is not
    # what this measures).
    env = {**os.environ, **p.environ, "OUTREACH_PLUGINS": ""}
    env.pop("OUTREACH_CONFIG", None)
    proc = subprocess.run([sys.executable, "-c", _MEASURED, "run", "--json", "--now", now],
                          cwd=p.root, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"]
    return int(proc.stderr.rsplit("READ ", 1)[1])


def test_an_event_only_run_reads_a_small_part_of_the_audience_files(sqlite_project):
    p = sqlite_project
    n = 20_000
    # Rows as long as a shop's export's (~110 and ~80 bytes).
    rows = [f"c{i:06d},Name{i},Hovsepian-Dela Cruz,customer{i}@mail.example.com,+374910{i:05d},"
            f"America/Los_Angeles,en,yes,no,vip;cake-club" for i in range(n)]
    p.customers("\n".join(rows))
    p.events("id,customer_id,type,time,order_id,items\n" + "\n".join(
        f"e{i:06d},c{i % n:06d},purchase,2026-{1 + i % 10:02d}-0{1 + i % 9}T12:00:00-08:00,"
        f"SS-{i:07d},2 lavash; 1 gata; 1 pakhlava box" for i in range(2 * n)))
    p.campaign("thanks", THANKS)
    files = (p.root / "customers.csv").stat().st_size + (p.root / "events.csv").stat().st_size
    full = _measured_run(p, "2026-11-24T10:00")
    assert full > files  # the measure sees the files being read
    # The first incremental run builds the keyed copy of the customers: one read of the file.
    append(p, "x0,c000001,purchase,2026-11-24T10:01,SS-x0,1 gata")
    _measured_run(p, "2026-11-24T10:05")
    append(p, *(f"x{i},c{i * 97:06d},purchase,2026-11-24T10:0{i % 4 + 6},SS-x{i},1 gata"
                for i in range(1, 11)))
    read = _measured_run(p, "2026-11-24T10:10")
    assert read < 0.10 * files, (read, files)
    assert len(p.outbox("email")) == 11


# ---------------------------------------------------------------------- the SQL source
def _engine(url: str):
    from sqlalchemy import create_engine

    for scheme, driver in (("postgresql://", "postgresql+psycopg://"),
                           ("mysql://", "mysql+pymysql://")):
        if url.startswith(scheme):
            url = driver + url[len(scheme):]
    return create_engine(url)


def _sql_shop(p, url: str):
    engine = _engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS inc_events")
        conn.exec_driver_sql("DROP TABLE IF EXISTS inc_customers")
        conn.exec_driver_sql("CREATE TABLE inc_customers (id VARCHAR(20) PRIMARY KEY, "
                             "first_name VARCHAR(50), email VARCHAR(100), consent_email "
                             "VARCHAR(5))")
        conn.exec_driver_sql("CREATE TABLE inc_events (id VARCHAR(20) PRIMARY KEY, customer_id "
                             "VARCHAR(20), type VARCHAR(20), time VARCHAR(40))")
        for i in range(1, 4):
            conn.exec_driver_sql(f"INSERT INTO inc_customers VALUES ('c{i}', 'Name{i}', "
                                 f"'c{i}@example.com', 'yes')")
        conn.exec_driver_sql("INSERT INTO inc_events VALUES ('e1', 'c1', 'purchase', "
                             "'2026-11-24T09:00:00-08:00')")
    engine.dispose()
    p.configure()
    toml = (p.root / "outreach.toml").read_text()
    toml = toml.replace('source = "csv"\ncustomers = "customers.csv"\nevents = "events.csv"',
                        f'source = "sql"\nurl = "{url}"\ncustomers = "inc_customers"\n'
                        'events = "inc_events"\nevents_overlap = "5m"')
    (p.root / "outreach.toml").write_text(toml)
    p.campaign("thanks", THANKS)
    return p


def _sql_event(url: str, eid: str, cid: str, when: str) -> None:
    engine = _engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO inc_events VALUES ('{eid}', '{cid}', 'purchase', "
                             f"'{when}')")
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def sql_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return request.getfixturevalue("mysql_url")


def test_the_sql_source_reads_rows_after_its_cursor(sqlite_project, sql_url):
    p = _sql_shop(sqlite_project, sql_url)
    first = p.run("2026-11-24T10:00")
    assert first.planning["mode"] == "full"
    _sql_event(sql_url, "e2", "c2", "2026-11-24T10:01:00-08:00")
    # Committed late with an earlier time, inside the overlap: still planned.
    _sql_event(sql_url, "e0", "c3", "2026-11-24T09:58:00-08:00")
    second = p.run("2026-11-24T10:05")
    assert second.planning["mode"] == "incremental"
    assert second.planning["customers"] == 2
    assert keys(p) == {"thanks:e1": 1, "thanks:e2": 1, "thanks:e0": 1}
    _sql_event(sql_url, "e3", "c1", "2026-11-24T10:06:00-08:00")
    third = p.run("2026-11-24T10:08")
    # The overlap (5 minutes before e2, the last event read) reads e0 and e2 again: dedupe keys
    # make that harmless; e1 is behind it.
    assert third.planning == {"mode": "incremental", "events": 3, "customers": 3}
    assert third.campaigns["thanks"].already_planned == 2
    assert keys(p) == {"thanks:e1": 1, "thanks:e2": 1, "thanks:e0": 1, "thanks:e3": 1}


def test_an_incremental_run_honours_consent_changed_through_outreach(shop):
    """A customer who unsubscribed through outreach (the consent ledger) is not planned by an
    event-only run either, though the export still says yes."""
    shop.run("2026-11-24T10:00")
    led = shop.ledger()
    try:
        led.record_consent_change("c2", consent="email", action="withdrawn", source="sendgrid",
                                  evidence="sendgrid:u-1", at=1_790_000_000)
    finally:
        led.close()
    append(shop, "e2,c2,purchase,2026-11-24T10:01")
    second = shop.run("2026-11-24T10:05")
    assert second.planning["mode"] == "incremental"
    assert keys(shop) == {"thanks:e1": 1}
