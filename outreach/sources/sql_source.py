"""The SQL audience source: customers and events from a database, where the business keeps them.

``source = "sql"`` reads a table or a query per role (``customers``, ``events``) through a
SQLAlchemy URL, mapped like any source (:mod:`outreach.sources.mapping`). The password never sits
in the file: ``password_env`` names the environment variable that holds it. Rows stream in
batches through a server-side cursor (PostgreSQL, MySQL/MariaDB; SQLite reads lazily anyway), so a
table is never loaded whole.

Drivers are extras: ``pip install 'outreach[postgresql]'`` (psycopg) or ``'outreach[mysql]'``
(PyMySQL); a URL whose driver is missing is refused naming the extra.

Events support the incremental read of :meth:`Source.events_after`: only rows at or after the
cursor's time (less the overlap) are asked for, ordered by time and id, so an event-only run reads
the new rows, not the table (give the events table an index on its time column). Customers of
those events come by id, one query per batch (:meth:`SQLSource.customers_by_ids`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar, Collection, Iterator, Mapping, Sequence
from zoneinfo import ZoneInfo

from outreach import hookimpl
from outreach.audience import (Customer, Event, EventCursor, Report, RowProblem, Source,
                               SourceDescription, SourceProblem)
from outreach.errors import OutreachError
from outreach.settings import Setting
from outreach.sources.mapping import (MAPPING_SETTINGS, CustomerReader, EventReader, as_text,
                                      columns_of, describe, email_index, from_settings)

#: URL scheme → (the SQLAlchemy driver outreach uses, the extra that installs it).
_DRIVERS = {
    "postgresql": ("postgresql+psycopg", "postgresql"),
    "postgres": ("postgresql+psycopg", "postgresql"),
    "mysql": ("mysql+pymysql", "mysql"),
    "mariadb": ("mysql+pymysql", "mysql"),
    "sqlite": ("sqlite", None),
}
_EXTRA_OF = {"psycopg": "postgresql", "psycopg2": "postgresql", "pymysql": "mysql",
             "mysqldb": "mysql"}
_ROLES = ("customers", "events")


class SQLSourceError(OutreachError):
    """A problem with the SQL source's settings or database, naming the setting it concerns.

    Found by :meth:`SQLSource.check` before a run plans anything; raised as itself (exit 2) when
    the database fails while rows are read.
    """

    def __init__(self, key: str, message: str, role: str = "customers") -> None:
        super().__init__(f"{key}: {message}")
        self.problem = SourceProblem(key, message, role)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SQLSource(Source):
    """Customers and events from a SQL database (PostgreSQL, MySQL/MariaDB, SQLite)."""

    type_name = "sql"
    settings: ClassVar[Mapping[str, Setting]] = {
        "url": Setting("str", required=True, help="SQLAlchemy URL, without the password"),
        "password": Setting("str", secret=True, help="the database password (password_env = VAR)"),
        "customers": Setting("str", help="table of customers (schema.table allowed)"),
        "customers_query": Setting("str", help="or a query whose rows are the customers"),
        "events": Setting("str", help="table of events"),
        "events_query": Setting("str", help="or a query whose rows are the events"),
        "fetch_size": Setting("int", default=5000, minimum=1, help="rows fetched at a time"),
        "events_overlap": Setting("duration", default=timedelta(minutes=10),
                                  help="an event-only run reads the events of this long before "
                                       "the last one it read again, for rows committed late "
                                       "with an earlier time (dedupe keys make them harmless)"),
        **MAPPING_SETTINGS,
    }

    def __init__(self, settings: Mapping[str, Any], root: Path, timezone: str) -> None:
        super().__init__(settings, root, timezone)
        self.config.setdefault("fetch_size", 5000)
        self._tz = ZoneInfo(timezone) if timezone else ZoneInfo("UTC")
        self.mapping, self._mapping_problems = from_settings(self.config)
        self._engine: Any = None
        self._tables: dict[str, Any] = {}
        self._headers: dict[str, list[str]] = {}
        self._event_reader: EventReader | None = None
        self._email_ids: dict[str, str] | None = None
        #: Rows fetched from the database by this source object, per role (what an incremental
        #: read costs, counted where it happens).
        self.rows_read: dict[str, int] = {"customers": 0, "events": 0}

    # ------------------------------------------------------------------ connection
    def _url(self) -> Any:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(self.config["url"])
        except (ArgumentError, ValueError) as exc:
            raise SQLSourceError("audience.url", f"not a database URL such as "
                                 f"postgresql://user@host/db: {_first_line(exc)}") from None
        if url.password:
            raise SQLSourceError("audience.url", "holds a password: do not write it in a file; "
                                 "name the environment variable that holds it with "
                                 "password_env = \"VARIABLE\"")
        scheme = url.drivername.split("+", 1)[0]
        if scheme not in _DRIVERS:
            raise SQLSourceError("audience.url", f"unsupported database {scheme!r} (expected "
                                 "postgresql://, mysql://, mariadb:// or sqlite:///)")
        if "+" not in url.drivername:
            url = url.set(drivername=_DRIVERS[scheme][0])
        if scheme == "sqlite" and url.database and url.database != ":memory:" \
                and not Path(url.database).is_absolute():
            url = url.set(database=str(self.root / url.database))
        secret = self.config.get("password")
        if secret is not None:
            url = url.set(password=secret.reveal())
        return url

    def _shown_url(self) -> str:
        try:
            return self._url().render_as_string(hide_password=True)
        except SQLSourceError:
            return "the database"

    def engine(self) -> Any:
        """The SQLAlchemy engine (made on first use); SQLSourceError when it cannot be made."""
        if self._engine is None:
            from sqlalchemy import create_engine
            from sqlalchemy.exc import NoSuchModuleError

            url = self._url()
            args: dict[str, Any] = {}
            if url.drivername.startswith(("postgresql", "mysql")):
                args["connect_timeout"] = 10
            try:
                self._engine = create_engine(url, connect_args=args, pool_pre_ping=False)
            except (ModuleNotFoundError, NoSuchModuleError) as exc:
                scheme = url.drivername.split("+", 1)[0]
                extra = _DRIVERS.get(scheme, (None, None))[1] or _EXTRA_OF.get(
                    getattr(exc, "name", "") or "", scheme)
                raise SQLSourceError("audience.url", f"the driver for {scheme} is not installed "
                                     f"({_first_line(exc)}): pip install 'outreach[{extra}]'"
                                     ) from None
        return self._engine

    def close(self) -> None:
        """Release the database connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _connect(self) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return self.engine().connect()
        except SQLAlchemyError as exc:
            raise SQLSourceError("audience.url", f"cannot connect to {self._shown_url()}: "
                                 f"{_first_line(exc)}") from None

    def _quote(self, name: str) -> str:
        return self.engine().dialect.identifier_preparer.quote(name)

    # ------------------------------------------------------------------ roles
    def _role_key(self, role: str) -> str:
        return f"audience.{role}_query" if self.config.get(f"{role}_query") else f"audience.{role}"

    def _origin(self, role: str) -> str:
        if self.config.get(f"{role}_query"):
            return f"{role} query"
        return f"table {self.config[role]}"

    def _has(self, role: str) -> bool:
        return bool(self.config.get(role) or self.config.get(f"{role}_query"))

    def _table(self, role: str, conn: Any) -> Any:
        """The reflected table of a role (None for a query); SQLSourceError when it is missing."""
        if role in self._tables:
            return self._tables[role]
        from sqlalchemy import MetaData, Table, inspect
        from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

        name = self.config[role]
        schema, _, table = name.rpartition(".")
        try:
            found = Table(table, MetaData(), schema=schema or None, autoload_with=conn)
        except NoSuchTableError:
            try:
                tables = ", ".join(sorted(inspect(conn).get_table_names(schema=schema or None)))
            except SQLAlchemyError:
                tables = "?"
            raise SQLSourceError(f"audience.{role}", f"no table {name!r} in "
                                 f"{self._shown_url()} (tables: {tables or 'none'})", role) from None
        except SQLAlchemyError as exc:
            raise SQLSourceError(f"audience.{role}", f"table {name!r} cannot be read: "
                                 f"{_first_line(exc)}", role) from None
        self._tables[role] = found
        return found

    def _base(self, role: str, conn: Any) -> Any:
        """A selectable of the role's rows: the table, or the query as a subquery."""
        from sqlalchemy import column, text

        query = self.config.get(f"{role}_query")
        if not query:
            return self._table(role, conn)
        header = self._header(role, conn)
        return text(query.strip().rstrip(";")).columns(*[column(h) for h in header]).subquery("q")

    def _header(self, role: str, conn: Any | None = None) -> list[str]:
        """The role's column names (a query is run with no rows wanted to learn them)."""
        if role in self._headers:
            return self._headers[role]
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        own = conn is None
        conn = conn if conn is not None else self._connect()
        try:
            query = self.config.get(f"{role}_query")
            if query:
                try:
                    result = conn.execute(text(f"SELECT * FROM ({query.strip().rstrip(';')}) "
                                               f"AS q WHERE 1 = 0"))
                    header = list(result.keys())
                    result.close()
                except SQLAlchemyError as exc:
                    conn.rollback()
                    raise SQLSourceError(f"audience.{role}_query", f"the query failed: "
                                         f"{_first_line(exc)}", role) from None
            else:
                header = [c.name for c in self._table(role, conn).columns]
        finally:
            if own:
                conn.close()
        self._headers[role] = header
        return header

    @staticmethod
    def _column(base: Any, name: str) -> Any:
        return base.c[name]

    # ------------------------------------------------------------------ checks
    def check(self) -> list[SourceProblem]:
        problems = list(self._mapping_problems)
        for role in _ROLES:
            if self.config.get(role) and self.config.get(f"{role}_query"):
                problems.append(SourceProblem(f"audience.{role}_query", f"give {role} (a table) "
                                              f"or {role}_query, not both", role))
        if not self._has("customers"):
            problems.append(SourceProblem("audience.customers", "expected the customers table "
                                          "(customers = \"...\") or customers_query"))
        if problems:
            return problems
        try:
            conn = self._connect()
        except SQLSourceError as exc:
            return [exc.problem]
        try:
            for role in _ROLES:
                if not self._has(role):
                    continue
                try:
                    header = self._header(role, conn)
                except SQLSourceError as exc:
                    problems.append(exc.problem)
                    continue
                problems += self._reader(role, header).problems
        finally:
            conn.close()
        return problems

    def _reader(self, role: str, header: list[str]) -> Any:
        if role == "customers":
            return CustomerReader(self.mapping, header, self._origin(role), self.dates,
                                  key=self._role_key(role))
        return EventReader(self.mapping, header, self._origin(role), self._tz,
                           key=self._role_key(role))

    def _bound(self, role: str) -> Any | None:
        if not self._has(role):
            return None
        return self._reader(role, self._header(role))

    def describe(self) -> SourceDescription:
        return describe({role: (f"{self._origin(role)} in {self._shown_url()}"
                                if self._has(role) else "", self._bound(role)) for role in _ROLES})

    def consents(self) -> set[str] | None:
        reader = self._bound("customers")
        return None if reader is None else set(reader.binding.consents)

    def columns(self) -> tuple[set[str] | None, set[str] | None]:
        return columns_of(self._bound("customers"), self._bound("events"))

    def count_hint(self) -> int | None:
        from sqlalchemy import func, select
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self._connect() as conn:
                base = self._base("customers", conn)
                return int(conn.execute(select(func.count()).select_from(base)).scalar() or 0)
        except (SQLSourceError, SQLAlchemyError):
            return None

    # ------------------------------------------------------------------ streaming
    def _stream(self, role: str, statement: Any, conn: Any) -> Iterator[Sequence[Any]]:
        """The rows of ``statement`` in batches through a server-side cursor; a failure names
        the role's setting."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            result = conn.execution_options(yield_per=self.config["fetch_size"]).execute(statement)
            for row in result:
                self.rows_read[role] += 1
                yield row
        except SQLAlchemyError as exc:
            raise SQLSourceError(self._role_key(role), f"reading {self._origin(role)} failed: "
                                 f"{_first_line(exc)}", role) from None

    def _customer_rows(self, statement_of: Any, report: Report) -> Iterator[Customer]:
        from sqlalchemy import select

        with self._connect() as conn:
            base = self._base("customers", conn)
            header = self._header("customers", conn)
            reader = self._reader("customers", header)
            origin = self._origin("customers")
            if reader.problems:
                report(RowProblem(origin, 1, reader.problems[0].message))
                return
            statement = statement_of(base, select(*[self._column(base, h) for h in header]))
            read, issues = reader.read, reader.issues
            id_index = header.index(reader.binding.mapped["id"])
            for n, row in enumerate(self._stream("customers", statement, conn), 1):
                cells = [as_text(v) for v in row]
                customer = read(cells)
                if issues:
                    for message in issues:
                        report(RowProblem(origin, n, f"id {cells[id_index]!r}: {message}"))
                    issues.clear()
                if customer is not None:
                    yield customer

    def customers(self, report: Report) -> Iterator[Customer]:
        yield from self._customer_rows(lambda base, stmt: stmt, report)

    def customers_by_ids(self, ids: Collection[str], report: Report) -> Iterator[Customer]:
        """The customers among ``ids``: one ``WHERE id IN (...)`` query per call (chunked only
        past a database's limit on parameters)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return
        from sqlalchemy import String, cast

        header = self._header("customers")
        id_column = self._reader("customers", header).binding.mapped.get("id")
        if id_column is None:
            return
        table = None if self.config.get("customers_query") else True
        chunk = 900 if self.engine().dialect.name == "sqlite" else 10_000
        for i in range(0, len(wanted), chunk):
            part = wanted[i:i + chunk]

            def where(base: Any, stmt: Any, part: list[str] = part) -> Any:
                col = self._column(base, id_column)
                if table:
                    values = _typed(col, part)
                    return stmt.where(col.in_(values))
                return stmt.where(cast(col, String).in_(part))

            yield from self._customer_rows(where, report)

    # ------------------------------------------------------------------ events
    def events(self, types: frozenset[str], since: datetime | None, report: Report) -> Iterator[Event]:
        for row in self._event_rows(types, since, None, report):
            yield Event(row.id, row.customer_id, row.type, row.time, self.event_attributes(row.cells))

    def events_after(self, cursor: EventCursor | None, types: frozenset[str], report: Report, *,
                     overlap: timedelta = timedelta(0)) -> Iterator[Event]:
        """Only the rows at or after the cursor's time less ``overlap`` are fetched, ordered by
        (time, id); :attr:`rows_read` counts them."""
        since = None if cursor is None else cursor.time - overlap
        for row in self._event_rows(types, since, cursor if not overlap else None, report,
                                    ordered=True):
            yield Event(row.id, row.customer_id, row.type, row.time, self.event_attributes(row.cells))

    def events_overlap(self) -> timedelta:
        return self.config.get("events_overlap", timedelta(minutes=10))

    def event_attributes(self, cells: list[str]) -> dict[str, Any]:
        """The attributes of an event's cells (empty ones left out)."""
        assert self._event_reader is not None
        return self._event_reader.attributes(cells)

    def _event_rows(self, types: frozenset[str], since: datetime | None,
                    after: EventCursor | None, report: Report, ordered: bool = False) -> Iterator[Any]:
        if not self._has("events"):
            return
        from sqlalchemy import select

        ids = email_index(self.customers(lambda p: None)) \
            if self.mapping.event_customer == "email" else None
        with self._connect() as conn:
            base = self._base("events", conn)
            header = self._header("events", conn)
            reader = self._event_reader = self._reader("events", header)
            origin = self._origin("events")
            if reader.problems:
                report(RowProblem(origin, 1, reader.problems[0].message))
                return
            mapped = reader.binding.mapped
            stmt = select(*[self._column(base, h) for h in header])
            time_col = self._column(base, mapped["time"])
            if types and "type" in mapped and mapped["type"] in header:
                stmt = stmt.where(self._column(base, mapped["type"]).in_(sorted(types)))
            if since is not None:
                stmt = stmt.where(time_col >= self._time_param(conn, base, time_col, since))
            if ordered or self.mapping.group_events:
                stmt = stmt.order_by(time_col, self._column(base, mapped["id"]))

            def problem(line: int, message: str) -> None:
                report(RowProblem(origin, line, message))

            rows = ((n, [as_text(v) for v in row])
                    for n, row in enumerate(self._stream("events", stmt, conn), 1))
            for event in reader.rows(rows, types, problem):
                if since is not None and event.time < since:
                    continue  # the database's filter is a superset for times stored as text
                if after is not None and (event.time, _key(event.id)) <= (after.time, _key(after.id)):
                    continue
                if ids is not None:
                    event.customer_id = ids.get(event.customer_id.lower(), "")
                    if not event.customer_id:
                        continue
                yield event

    def _time_param(self, conn: Any, base: Any, col: Any, since: datetime) -> Any:
        """``since`` in the form the time column compares with: aware for a column with a zone,
        the deployment's wall time for one without, text (a day earlier, as times stored as text
        may carry any offset; rows are filtered exactly afterwards) for text."""
        from sqlalchemy import DateTime, select

        kind: Any = getattr(col, "type", None)
        if isinstance(kind, DateTime):
            aware = bool(kind.timezone)
        else:
            sample = conn.execute(select(col).select_from(base).where(col.is_not(None)).limit(1)
                                  ).scalar()
            if isinstance(sample, datetime):
                aware = sample.tzinfo is not None
            else:
                local = (since - timedelta(days=1)).astimezone(self._tz).replace(tzinfo=None)
                return local.isoformat(sep=" ")
        if aware:
            return since.astimezone(timezone.utc)
        return since.astimezone(self._tz).replace(tzinfo=None)


def _typed(col: Any, ids: list[str]) -> list[Any]:
    """Ids as the column's own type (an integer key compared with integers), dropping any that
    cannot be one."""
    try:
        python_type = col.type.python_type
    except (NotImplementedError, AttributeError):
        return ids
    if python_type is int:
        return [int(i) for i in ids if i.strip().lstrip("-").isdigit()]
    return ids


def _key(event_id: str) -> tuple[int, int | str]:
    """Orders event ids as a database orders them: numbers by value, before text."""
    return (0, int(event_id)) if event_id.isdigit() else (1, event_id)


@hookimpl
def outreach_register_sources(register):
    register(SQLSource)
