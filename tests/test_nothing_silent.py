"""Mistakes that used to pass without a word: a ledger path with a typo, a new ledger, an audience
path that is not a file, a number too large for the ledger. Through the real command line."""

from __future__ import annotations

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
