"""The built-in sources keep the source contract, and the SQL source reads where customers live.

Both built-ins go through ``outreach.testing.check_source``, the contract plugin authors run; the
SQL source on SQLite and on the real PostgreSQL and MariaDB servers. An incremental read of events
asks the database for the new rows only (counted), customers come by id in one query, and every
way a SQL setting can be wrong is refused before anything is planned, naming the setting.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from outreach.audience import EventCursor
from outreach.sources.csv_source import CSVSource
from outreach.sources.sql_source import SQLSource
from outreach.testing import SourceData, check_source
from outreach.testing.source_contract import CUSTOMER_COLUMNS, EVENT_COLUMNS

NOW = "2026-11-24T10:00"


def _csv(rows: list[dict[str, str]], columns: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_the_csv_source_keeps_the_source_contract(tmp_path):
    def build(data: SourceData) -> CSVSource:
        (tmp_path / "c.csv").write_text(_csv(data.customers, CUSTOMER_COLUMNS), encoding="utf-8")
        (tmp_path / "e.csv").write_text(_csv(data.events, EVENT_COLUMNS), encoding="utf-8")
        return CSVSource({"customers": str(tmp_path / "c.csv"), "events": str(tmp_path / "e.csv")},
                         tmp_path, "UTC")

    report = check_source(build, type_name="csv")
    assert "events_after" in report.passed and not report.failures


# ---------------------------------------------------------------------------------------- SQL
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres),
                        "mariadb"])
def db_url(request, tmp_path):
    """A URL of an empty database on each backend the SQL source supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return request.getfixturevalue("mysql_url")


def _engine(url: str) -> sa.Engine:
    url = url.replace("postgresql://", "postgresql+psycopg://", 1).replace(
        "mysql://", "mysql+pymysql://", 1)
    return sa.create_engine(url)


def _tables(meta: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    customers = sa.Table("customers", meta, *[sa.Column(c, sa.String(80)) for c in CUSTOMER_COLUMNS])
    events = sa.Table("events", meta, sa.Column("id", sa.String(20)),
                      sa.Column("customer_id", sa.String(20)), sa.Column("type", sa.String(20)),
                      sa.Column("time", sa.DateTime(timezone=True)), sa.Column("total", sa.String(20)),
                      sa.Index("ix_events_time", "time", "id"))
    return customers, events


def _store(url: str, data: SourceData) -> None:
    engine = _engine(url)
    meta = sa.MetaData()
    customers, events = _tables(meta)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(customers.insert(), data.customers)
        if data.events:
            conn.execute(events.insert(), [
                {**e, "time": datetime.fromisoformat(e["time"]).astimezone(timezone.utc)
                 .replace(tzinfo=None if engine.dialect.name != "postgresql" else timezone.utc)}
                for e in data.events])
    engine.dispose()


def _sql_source(url: str, tmp_path, **settings) -> SQLSource:
    return SQLSource({"url": url, "customers": "customers", "events": "events", **settings},
                     tmp_path, "UTC")


def test_the_sql_source_keeps_the_source_contract(db_url, tmp_path):
    def build(data: SourceData) -> SQLSource:
        _store(db_url, data)
        return _sql_source(db_url, tmp_path)

    report = check_source(build, type_name="sql")
    assert not report.failures


def test_the_sql_source_keeps_the_contract_with_queries(db_url, tmp_path):
    def build(data: SourceData) -> SQLSource:
        _store(db_url, data)
        return SQLSource({"url": db_url, "customers_query": "SELECT * FROM customers",
                          "events_query": "SELECT * FROM events"}, tmp_path, "UTC")

    check_source(build)


def test_an_incremental_read_fetches_only_the_new_rows(db_url, tmp_path):
    """Of 2,000 events, a cursor 30 from the end with a 10-minute overlap reads those 30 plus
    the 10 in the overlap window (events one minute apart), counted where rows are fetched."""
    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    events = [{"id": f"e{i:05d}", "customer_id": f"c{i % 7}", "type": "purchase",
               "time": (t0 + timedelta(minutes=i)).isoformat(), "total": "1"} for i in range(2000)]
    customers = [{c: "" for c in CUSTOMER_COLUMNS} | {"id": f"c{i}", "consent_email": "yes"}
                 for i in range(7)]
    _store(db_url, SourceData(customers, events))
    source = _sql_source(db_url, tmp_path)
    cursor = EventCursor(t0 + timedelta(minutes=1969), "e01969")
    got = list(source.events_after(cursor, frozenset({"purchase"}), lambda p: None))
    assert [e.id for e in got] == [f"e{i:05d}" for i in range(1970, 2000)]
    assert source.rows_read["events"] == 31  # the cursor's own time is asked for again (>=)
    source.rows_read["events"] = 0
    late = list(source.events_after(cursor, frozenset(), lambda p: None,
                                    overlap=timedelta(minutes=10)))
    assert [e.id for e in late][0] == "e01959" and len(late) == 41
    assert source.rows_read["events"] == 41
    source.close()


def test_customers_of_new_events_come_in_one_query(db_url, tmp_path):
    customers = [{c: "" for c in CUSTOMER_COLUMNS} | {"id": f"c{i}", "consent_email": "yes"}
                 for i in range(500)]
    _store(db_url, SourceData(customers, []))
    source = _sql_source(db_url, tmp_path)
    statements: list[str] = []
    sa.event.listen(source.engine(), "before_cursor_execute",
                    lambda conn, cursor, statement, *a: statements.append(statement))
    ids = [f"c{i}" for i in range(0, 500, 5)] + ["nobody"]
    got = sorted(c.id for c in source.customers_by_ids(ids, lambda p: None))
    assert got == sorted(ids[:-1])
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")
               and "customers" in s and " IN " in s.upper()]
    assert len(selects) == 1, statements
    source.close()


def test_integer_ids_and_typed_columns(db_url, tmp_path):
    """A real schema: integer ids, a boolean consent, a date birthday, a timestamp; mapped."""
    engine = _engine(db_url)
    meta = sa.MetaData()
    t = sa.Table("members", meta, sa.Column("member_no", sa.Integer, primary_key=True),
                 sa.Column("given", sa.String(40)), sa.Column("mail", sa.String(80)),
                 sa.Column("newsletter_ok", sa.Boolean), sa.Column("born", sa.Date),
                 sa.Column("Total Spent", sa.Numeric(10, 2)))
    meta.create_all(engine)
    from datetime import date
    from decimal import Decimal

    with engine.begin() as conn:
        conn.execute(t.insert(), [
            {"member_no": 7, "given": "Ani", "mail": "ani@example.com", "newsletter_ok": True,
             "born": date(1990, 11, 24), "Total Spent": Decimal("12.50")},
            {"member_no": 8, "given": "Aram", "mail": "aram@example.com", "newsletter_ok": False,
             "born": None, "Total Spent": Decimal("0")}])
    engine.dispose()
    source = SQLSource({"url": db_url, "customers": "members",
                        "columns": {"id": "member_no", "first_name": "given", "email": "mail",
                                    "consent_email": "newsletter_ok", "birthday": "born"}},
                       tmp_path, "UTC")
    assert source.check() == []
    by_id = {c.id: c for c in source.customers(lambda p: None)}
    assert by_id["7"].consent == {"email"} and by_id["8"].consent == frozenset()
    assert by_id["7"].attributes == {"birthday": "1990-11-24", "total_spent": "12.50"}
    assert [c.id for c in source.customers_by_ids(["8", "x"], lambda p: None)] == ["8"]
    source.close()


# ---------------------------------------------------------------------------------------- bad input
def _project_with_sql(p, url: str, extra: str = "") -> None:
    p.configure(extra="")
    text = (p.root / "outreach.toml").read_text()
    text = text.replace('source = "csv"\ncustomers = "customers.csv"\nevents = "events.csv"\n',
                        f'source = "sql"\nurl = "{url}"\n{extra}\n')
    (p.root / "outreach.toml").write_text(text)
    p.campaign("news", '''
        rule = "newsletter"
        schedule = "0 9 * * *"
        start = "2026-11-01"
        channels = ["email"]
        [email]
        subject = "News for {{ customer.first_name }}"
        body = "Hello"
    ''')


@pytest.mark.parametrize("extra, key, words", [
    ('customers = "customers"\nevents = "events"', "", ""),
    ('customers = "shoppers"', "audience.customers", "no table 'shoppers'"),
    ('customers_query = "SELECT * FROM nowhere"', "audience.customers_query", "the query failed"),
    ('customers = "customers"\n[audience.columns]\nemail = "E-mail"', "audience.columns.email",
     "has no column 'E-mail'"),
    ('customers = "customers"\nconsent_default = { email = "perhaps" }',
     "audience.consent_default.email", "expected yes or no"),
])
def test_bad_sql_settings_are_refused_before_planning(sqlite_project, extra, key, words):
    """A missing table, a failing query, a column that is not there, a value outside the
    vocabulary: exit 2 naming the setting, from validate and run alike, nothing sent."""
    p = sqlite_project
    _store(f"sqlite:///{p.root / 'shop.db'}", SourceData([
        {c: "" for c in CUSTOMER_COLUMNS} | {"id": "c1", "first_name": "Ani",
                                            "email": "ani@example.com", "consent_email": "yes"}],
        []))
    _project_with_sql(p, "sqlite:///shop.db", extra)
    validate = p.cli("validate")
    run = p.cli("run", "--now", NOW)
    if not key:
        assert validate.code == 0 and run.code == 0, validate.stderr + run.stderr
        assert "customers: 1 from table customers" in validate.stdout
        assert len(p.outbox("email")) == 1
        return
    for result in (validate, run):
        assert result.code == 2, result.stdout + result.stderr
        assert key in result.stderr and words in result.stderr, result.stderr
    assert p.outbox("email") == []


def test_a_wrong_url_a_password_in_it_and_a_server_that_is_not_there(sqlite_project):
    p = sqlite_project
    for url, words in (("nonsense", "not a database URL"),
                       ("oracle://me@db/shop", "unsupported database 'oracle'"),
                       ("postgresql://me:s3cret@127.0.0.1/shop", "holds a password"),
                       ("postgresql://me@127.0.0.1:1/shop", "cannot connect to")):
        _project_with_sql(p, url, 'customers = "customers"')
        result = p.cli("validate")
        assert result.code == 2 and "audience.url" in result.stderr and words in result.stderr, \
            result.stderr
        assert "s3cret" not in result.stderr + result.stdout


def test_a_missing_driver_names_the_extra_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pymysql", None)  # as if PyMySQL were not installed
    source = SQLSource({"url": "mysql://root@127.0.0.1/test", "customers": "c"}, tmp_path, "UTC")
    [problem] = source.check()
    assert problem.key == "audience.url"
    assert "pip install 'outreach[mysql]'" in problem.message


def test_the_password_comes_from_the_environment(pg_url, tmp_path):
    """The URL in the file has no password; password_env names where it is read from."""
    from outreach.settings import resolve

    resolved = resolve(SQLSource.settings, {"url": pg_url, "customers": "c",
                                            "password_env": "SHOP_DB_PASSWORD"},
                       file="outreach.toml", prefix="audience",
                       environ={"SHOP_DB_PASSWORD": "trust-ignores-it"})
    assert not resolved.problems
    source = SQLSource(resolved.values, tmp_path, "UTC")
    assert source._url().password == "trust-ignores-it"
    assert "trust-ignores-it" not in source._shown_url()


def test_a_sql_audience_plans_like_the_same_csv_audience(db_url, sqlite_project):
    """The same customers and events through both sources give the same plan."""
    from outreach.testing import sample_data

    p = sqlite_project
    data = sample_data()
    _store(db_url, data)
    (p.root / "customers.csv").write_text(_csv(data.customers, CUSTOMER_COLUMNS))
    (p.root / "events.csv").write_text(_csv(data.events, EVENT_COLUMNS))
    p.campaign("news", '''
        rule = "newsletter"
        schedule = "0 9 * * *"
        start = "2026-11-01"
        channels = ["email", "sms"]
        [email]
        subject = "News"
        body = "Hello {{ customer.first_name }}"
        [sms]
        body = "Hello {{ customer.first_name }}"
    ''')
    p.campaign("thanks", '''
        rule = "thank_you"
        channels = ["email"]
        [params]
        within = "30d"
        [email]
        subject = "Thank you"
        body = "For {{ event.total }}"
    ''')
    csv_plan = p.cli("plan", "--json", "--now", "2026-11-26T10:00")
    text = (p.root / "outreach.toml").read_text()
    text = text.replace('source = "csv"\ncustomers = "customers.csv"\nevents = "events.csv"\n',
                        f'source = "sql"\nurl = "{db_url}"\ncustomers = "customers"\n'
                        'events = "events"\n')
    (p.root / "outreach.toml").write_text(text)
    sql_plan = p.cli("plan", "--json", "--now", "2026-11-26T10:00")
    assert csv_plan.code == sql_plan.code == 0, csv_plan.stderr + sql_plan.stderr

    def rows(result):
        return sorted((c["campaign"], c["customer"], c["key"], c["channel"], c["decision"])
                      for c in result.json()["candidates"])

    assert rows(csv_plan) == rows(sql_plan)
    assert len(rows(sql_plan)) >= 4
