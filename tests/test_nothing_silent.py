"""Mistakes that used to pass without a word: a ledger path with a typo, a new ledger, an audience
path that is not a file, a number too large for the ledger. Through the real command line."""

from __future__ import annotations

import os

import pytest

NEWS = '''
rule = "newsletter"
schedule = "0 9 * * *"
start = "2026-11-01"
channels = ["email"]
{extra}
[email]
subject = "News"
body = "Fresh gata on Friday."
'''
NOW = "2026-11-24T10:00"


@pytest.fixture
def shop(sqlite_project):
    sqlite_project.customers(
        "c1,Ani,P,ani@example.com,+15035550104,America/Los_Angeles,en,yes,yes,")
    sqlite_project.campaign("news", NEWS.format(extra=""))
    return sqlite_project


def test_a_ledger_folder_that_does_not_exist_is_refused_not_created(shop):
    shop.configure(extra="")
    text = (shop.root / "outreach.toml").read_text().replace(
        'ledger = "sqlite:///outreach.db"', 'ledger = "sqlite:///dta/outreach.db"')
    (shop.root / "outreach.toml").write_text(text)
    for command in (["validate"], ["run", "--now", NOW], ["suppress", "--list"]):
        result = shop.cli(*command)
        assert result.code == 2, (command, result.stdout, result.stderr)
        assert "outreach.toml: ledger: the folder" in result.stderr
        assert str(shop.root / "dta") in result.stderr and "Traceback" not in result.stderr
    assert not (shop.root / "dta").exists() and shop.outbox("email") == []


def test_the_ledger_refuses_a_missing_folder_itself(tmp_path):
    from outreach.errors import OutreachError
    from outreach.ledger import Ledger

    with pytest.raises(OutreachError, match="dta.*does not exist"):
        Ledger(f"sqlite:///{tmp_path}/dta/outreach.db")
    assert not (tmp_path / "dta").exists()


def test_a_new_ledger_is_announced_once(shop):
    first = shop.cli("run", "--json", "--now", NOW)
    assert first.code == 0, first.stderr
    assert first.json()["ledger_created"] is True
    assert f"created a new ledger at {shop.root / 'outreach.db'}" in first.stderr
    second = shop.cli("run", "--json", "--now", "2026-11-25T10:00")
    assert second.json()["ledger_created"] is False
    assert "created a new ledger" not in second.stderr


@pytest.mark.postgres
def test_a_new_postgresql_ledger_is_announced(tmp_path, pg_url):
    from outreach.testing.project import Project

    pg_project = Project(tmp_path / "shop", ledger_url=pg_url)
    pg_project.customers("c1,Ani,P,ani@example.com,,America/Los_Angeles,en,yes,no,")
    pg_project.campaign("news", NEWS.format(extra=""))
    first = pg_project.cli("run", "--json", "--now", NOW)
    assert first.code == 0, first.stderr
    assert first.json()["ledger_created"] is True and "created a new ledger at postgresql" in first.stderr
    assert pg_project.cli("run", "--json", "--now", NOW).json()["ledger_created"] is False


@pytest.mark.parametrize("customers, expected", [
    ('"data/nope.csv"', "file data/nope.csv does not exist"),
    ('"data/no\\u0000pe.csv"', "is not a file name (it holds a NUL character)"),
    ('"campaigns"', "campaigns is a folder, not a CSV file"),
])
def test_an_audience_path_that_is_not_a_file_is_a_configuration_error(shop, customers, expected):
    text = (shop.root / "outreach.toml").read_text().replace('customers = "customers.csv"',
                                                             f"customers = {customers}")
    (shop.root / "outreach.toml").write_text(text)
    for command in (["validate"], ["run", "--now", NOW]):
        result = shop.cli(*command)
        assert result.code == 2, (command, result.stderr)
        assert "outreach.toml: audience.customers: " in result.stderr
        assert expected in result.stderr and "\0" not in result.stderr


@pytest.mark.parametrize("where, text, key", [
    ("campaign", "priority = 9223372036854775808", "campaigns/news.toml: priority"),
    ("campaign", "priority = 2147483648", "campaigns/news.toml: priority"),
    ("deployment", "batch_size = 9223372036854775807", "outreach.toml: batch_size"),
])
def test_a_whole_number_the_ledger_cannot_hold_is_refused(shop, where, text, key):
    if where == "campaign":
        shop.campaign("news", NEWS.format(extra=text))
    else:
        shop.configure(extra=text)
    for command in (["validate"], ["run", "--now", NOW]):
        result = shop.cli(*command)
        assert result.code == 2, (command, result.stderr)
        assert f"{key}: expected a whole number" in result.stderr
        assert "to 2147483647" in result.stderr and "Traceback" not in result.stderr
    assert shop.outbox("email") == []


def test_declared_bounds_are_checked():
    from outreach.settings import Setting, resolve

    settings = {"n": Setting("int", minimum=1, maximum=10, help="a count")}
    assert resolve(settings, {"n": 10}, file="f", prefix="").values["n"] == 10
    [problem] = resolve(settings, {"n": 11}, file="f", prefix="").problems
    assert str(problem) == "f: n: expected a whole number from 1 to 10, got 11"


# ---------------------------------------------------------------------------------------- a lost lock
PAUSING_RUN = '''
import os, sys, time
from pathlib import Path

from outreach import cli, hookimpl


class Pause:
    """Holds the first decision about a real customer until the test says go: the run is then
    mid-planning (loading the project asks policies about the sample customer first)."""

    @hookimpl
    def outreach_decide(self, candidate, choice, ctx):
        flags = Path(os.environ["PAUSE_FLAGS"])
        if candidate.customer.id != "sample" and not (flags / "paused").exists():
            (flags / "paused").write_text("1")
            deadline = time.monotonic() + 60
            while not (flags / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return None


real = cli.get_plugins
cli.get_plugins = lambda: real(extra=[Pause()])
cli.main(sys.argv[1:])
'''


@pytest.mark.postgres
def test_a_run_that_loses_its_planner_lock_stops_and_writes_nothing_more(tmp_path, pg_url):
    """The lock's session is ended (pg_terminate_backend) while the run plans: a second run is
    let in, and the first must not write a row after that: it stops with exit 4."""
    import subprocess
    import sys
    import time

    from sqlalchemy import select, text

    from outreach.ledger import PLANNER_LOCK_KEY, Ledger, messages, runs, skips
    from outreach.testing.project import Project

    p = Project(tmp_path / "shop", ledger_url=pg_url)
    p.customers("""
        c1,Ani,P,ani@example.com,,America/Los_Angeles,en,yes,no,
        c2,Bob,R,bob@example.com,,America/Los_Angeles,en,yes,no,
        c3,Cy,S,cy@example.com,,America/Los_Angeles,en,no,no,
    """)
    p.campaign("news", NEWS.format(extra=""))
    flags = tmp_path / "flags"
    flags.mkdir()
    script = tmp_path / "pausing_run.py"
    script.write_text(PAUSING_RUN, encoding="utf-8")
    ledger = Ledger(p.load().ledger_url)  # made before the run: its creation is not the point
    env = {**os.environ, **p.environ, "PAUSE_FLAGS": str(flags)}
    env.pop("OUTREACH_CONFIG", None)
    first = subprocess.Popen([sys.executable, str(script), "run", "--json", "--no-send",
                              "--now", NOW], cwd=p.root, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (flags / "paused").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the run never reached its first decision"
            time.sleep(0.05)
        with ledger.engine.connect() as conn:
            key = conn.execute(text(f"SELECT {PLANNER_LOCK_KEY}")).scalar() & (2**64 - 1)
            [pid] = conn.execute(text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                "classid::text::bigint = :hi AND objid::text::bigint = :lo"),
                {"hi": key >> 32, "lo": key & 0xFFFFFFFF}).scalars().all()
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
            conn.commit()
        second = p.cli("run", "--json", "--no-send", "--now", NOW)  # the lock is free: let in
        assert second.code == 0, second.stderr
        with ledger.reader.connect() as conn:
            before = {"messages": conn.execute(select(messages.c.key, messages.c.run_id)).all(),
                      "skips": conn.execute(select(skips.c.key, skips.c.run_id)).all()}
        (flags / "go").write_text("1")
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    try:
        assert first.returncode == 4, (out, err)
        assert "the planner lock on the ledger was lost while planning" in err
        assert "Traceback" not in err
        with ledger.reader.connect() as conn:
            after = {"messages": conn.execute(select(messages.c.key, messages.c.run_id)).all(),
                     "skips": conn.execute(select(skips.c.key, skips.c.run_id)).all()}
            statuses = sorted(conn.execute(select(runs.c.status)).scalars())
        assert after == before  # not one row of the first run, not even a refusal's update
        assert len(before["messages"]) == 2 and len(before["skips"]) == 1
        assert statuses == ["failed", "ok"]
    finally:
        ledger.close()
