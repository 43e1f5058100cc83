"""Shared fixtures: a throwaway project on each ledger backend, and PostgreSQL when it is there.

PostgreSQL tests use a real server (``OUTREACH_TEST_POSTGRES``, default the local one) and a fresh
schema per test. Without a server they skip with the reason; under ``CI=true`` they fail instead,
so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import uuid

import pytest

from outreach.testing.project import Project

PG_URL = os.environ.get("OUTREACH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("OUTREACH_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")


def _pg_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means: no server for these tests
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


_PG_PROBLEM: list[str | None] = []


def pg_problem() -> str | None:
    if not _PG_PROBLEM:
        _PG_PROBLEM.append(_pg_available())
    return _PG_PROBLEM[0]


@pytest.fixture
def pg_schema():
    """Make fresh PostgreSQL schemas: ``pg_schema()`` gives a URL whose search_path is a new, empty
    schema; all are dropped after the test. Skips (or fails under CI=true) without a server."""
    problem = pg_problem()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but PostgreSQL at {PG_URL} is not reachable: {problem}")
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable ({problem}); set "
                    "OUTREACH_TEST_POSTGRES to run these tests")
    import psycopg

    made: list[str] = []

    def make() -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        made.append(schema)
        sep = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"

    yield make
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for schema in made:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def pg_url(pg_schema):
    """A PostgreSQL URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    return pg_schema()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request, tmp_path):
    """Each test that asks for it runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def ledger(ledger_url):
    """A ledger on each backend with one campaign version stored (its id in ``ledger.version``)."""
    from outreach.ledger import Ledger

    led = Ledger(ledger_url)
    led.version = led.store_version("news", "v1", {"name": "news"})
    yield led
    led.close()


@pytest.fixture
def project(tmp_path, ledger_url) -> Project:
    """A fresh project folder (outbox channels, no caps, no quiet hours) on each ledger backend."""
    return Project(tmp_path / "shop", ledger_url)


@pytest.fixture
def sqlite_project(tmp_path) -> Project:
    """A fresh project on SQLite only, for tests about files, templates and the command line."""
    return Project(tmp_path / "shop")


def _server_problem(url: str) -> str | None:
    """None when the MySQL/MariaDB server at ``url`` answers, else why not."""
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url.replace("mysql://", "mysql+pymysql://", 1),
                                          connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means: no server for these tests
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


@pytest.fixture
def mysql_url():
    """A URL of a fresh, empty MariaDB/MySQL database (dropped after the test). Skips without a
    server, or fails under CI=true, as PostgreSQL tests do (``OUTREACH_TEST_MYSQL``)."""
    problem = _server_problem(MYSQL_URL)
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but MariaDB at {MYSQL_URL} is not reachable: {problem}")
        pytest.skip(f"MariaDB at {MYSQL_URL} is not reachable ({problem}); set "
                    "OUTREACH_TEST_MYSQL to run these tests")
    import sqlalchemy

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(MYSQL_URL.replace("mysql://", "mysql+pymysql://", 1))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    base = MYSQL_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}?charset=utf8mb4"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    admin.dispose()


def _browser_problem() -> str | None:
    import shutil

    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not found (apt install chromium chromium-driver)"
    return None


@pytest.fixture
def browser(tmp_path):
    """A real headless Chromium (Debian's, through its chromedriver) with no network beyond
    loopback. Skips without it, fails under CI=true."""
    problem = _browser_problem()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the browser is missing: {problem}")
        pytest.skip(problem)
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                # Only loopback answers: a page that reaches for a CDN fails visibly.
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
