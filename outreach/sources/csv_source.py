"""The built-in audience source: two CSV files, streamed row by row.

``customers`` has one row per customer, ``events`` one per event (a purchase, a complaint); their
columns are mapped to outreach's fields by :mod:`outreach.sources.mapping` (by name, as declared in
``[audience.columns]``, or by a preset such as ``format = "shopify"``). A row that cannot be used is
reported with its file and line and skipped; the rest go on. A file that cannot be used at all (not
there, not UTF-8 text, another delimiter, a column the mapping needs missing) is a problem
:meth:`CSVSource.check` names before anything is planned.

An empty customer cell is an empty string. An empty event cell is left out, so a template that
needs it (an apology's ``what_happened``) fails for that message instead of sending a hollow text.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import os
import re
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Collection, Iterator, Mapping
from zoneinfo import ZoneInfo

from outreach import hookimpl
from outreach.audience import (Customer, Event, EventCursor, Report, RowProblem, Source,
                               SourceDescription, SourceProblem)
from outreach.settings import Setting
from outreach.sources.mapping import (MAPPING_SETTINGS, CustomerReader, EventReader, columns_of,
                                      describe, email_index, from_settings)

_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_OTHER_DELIMITERS = (";", "\t", "|", ",")


def _is_utf8(path: Path) -> bool:
    """Whether a whole file is valid UTF-8, read in chunks (fast; decides the careful path)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except (UnicodeDecodeError, OSError):
        return False
    return True


def _not_text(start: bytes) -> str | None:
    """Why a file that begins with ``start`` is not UTF-8 text, or None. Only the header line
    is judged: a later row that is not UTF-8 is reported and skipped like any bad row."""
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "is UTF-16 (or another encoding that is not UTF-8); save it as UTF-8 CSV"
    first = start.split(b"\n", 1)[0]
    if b"\x00" in first:
        return "is UTF-16 (or another encoding that is not UTF-8); save it as UTF-8 CSV"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(first, final=False)
    except UnicodeDecodeError:
        return "has a header that is not UTF-8 text; save it as UTF-8 CSV"
    return None


class CSVSource(Source):
    """Customers and events from CSV files (UTF-8, header row), mapped by ``[audience.columns]``."""

    type_name = "csv"
    settings: ClassVar[Mapping[str, Setting]] = {
        "customers": Setting("path", required=True, help="CSV file of customers"),
        "events": Setting("path", help="CSV file of events (purchases, complaints...)"),
        "delimiter": Setting("str", default=",", help="column separator"),
        **MAPPING_SETTINGS,
    }

    def __init__(self, settings: Mapping[str, Any], root: Path, timezone: str) -> None:
        super().__init__(settings, root, timezone)
        self.config.setdefault("delimiter", ",")
        self._clean: dict[str, bool] = {}
        self._tz = ZoneInfo(timezone) if timezone else ZoneInfo("UTC")
        self.mapping, self._mapping_problems = from_settings(self.config)
        self._event_reader: EventReader | None = None
        self._email_ids: dict[str, str] | None = None
        #: Bytes read from the audience files by the incremental reads (events after a cursor,
        #: customers by id), what an event-only run costs, counted where it happens.
        self.bytes_read = 0

    def count_hint(self) -> int | None:
        """The customers file's lines less its header: exact unless cells hold line breaks.

        Counting newlines in binary chunks reads a million-row file in a few tens of
        milliseconds, next to the tens of seconds it takes to plan for it.
        """
        lines = 0
        last = b"\n"
        try:
            with open(self.config["customers"], "rb") as f:
                while chunk := f.read(1 << 20):
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
        except OSError:
            return None
        lines += last != b"\n"  # a last line without its newline
        return max(0, lines - 1)

    # ------------------------------------------------------------------ helpers
    def _shown(self, key: str) -> str:
        """A file as the user wrote it: relative to the project when inside it."""
        path = Path(self.config[key])
        return str(path.relative_to(self.root) if path.is_relative_to(self.root) else path)

    def _open(self, key: str):
        path = Path(self.config[key])
        # Bytes that are not UTF-8 become lone surrogates, so one bad row is reported and skipped
        # instead of ending the run; _records checks rows for them only when the file has any.
        self._clean[key] = _is_utf8(path)
        return self._shown(key), path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")

    def _records(self, key: str, reader, shown: str, report: Report) -> Iterator[tuple[int, list[str]]]:
        """(line where the record starts, cells) for each readable record after the header.

        A record csv cannot read (a field over its size limit) or that holds bytes that are not
        UTF-8 is reported with its line and skipped; the rest go on.
        """
        clean = self._clean.get(key, True)
        while True:
            line = reader.line_num + 1
            try:
                if clean:
                    # The common case, a plain loop (no call to next() and no try set up per row);
                    # a csv.Error still lands below with the line its record starts on.
                    for row in reader:
                        yield line, row
                        line = reader.line_num + 1
                    return
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                report(RowProblem(shown, line, f"unreadable row: {exc}"))
                continue
            if not clean and any(_NOT_UTF8.search(cell) for cell in row):
                report(RowProblem(shown, line, "the row is not valid UTF-8 text"))
                continue
            yield line, row

    def _header(self, key: str) -> list[str] | None:
        if not self.config.get(key):
            return None
        try:
            # Not _open: the header needs no scan of the whole file for bytes that are not UTF-8.
            fh = Path(self.config[key]).open(newline="", encoding="utf-8-sig", errors="surrogateescape")
        except (OSError, ValueError):
            return None
        with fh:
            try:
                row = next(csv.reader(fh, delimiter=self.config["delimiter"]), None)
            except csv.Error:
                return None
        return [c.strip() for c in row] if row else None

    def _file_problem(self, key: str) -> str | None:
        """Why a file cannot be read as CSV at all: missing, empty, not UTF-8 text."""
        path = Path(self.config[key])
        try:
            if not path.is_file():
                return f"file {self._shown(key)} does not exist"
            with path.open("rb") as fh:
                start = fh.read(4096)
        except (OSError, ValueError) as exc:
            return f"file {self._shown(key)} cannot be read: {exc}"
        if not start.strip():
            return f"{self._shown(key)} is empty (expected a header row)"
        why = _not_text(start)
        return f"{self._shown(key)} {why}" if why else None

    def _delimiter_hint(self, header: list[str]) -> str:
        """When a header is one cell holding another separator: say which, and the setting."""
        if len(header) != 1:
            return ""
        ours = self.config["delimiter"]
        for other in _OTHER_DELIMITERS:
            if other != ours and other in header[0]:
                shown = "\\t" if other == "\t" else other
                return f"; it seems to use {shown!r} between columns: set delimiter = \"{shown}\""
        return ""

    def _customer_reader(self) -> CustomerReader | None:
        header = self._header("customers")
        if header is None:
            return None
        return CustomerReader(self.mapping, header, self._shown("customers"), self.dates)

    def _bound_event_reader(self) -> EventReader | None:
        header = self._header("events")
        if header is None:
            return None
        return EventReader(self.mapping, header, self._shown("events"), self._tz)

    def check(self) -> list[SourceProblem]:
        problems = list(self._mapping_problems)
        if len(self.config.get("delimiter") or "") != 1:
            problems.append(SourceProblem("audience.delimiter", "expected one character"))
            return problems
        for key in ("customers", "events"):
            role = key
            if not self.config.get(key):
                continue
            why = self._file_problem(key)
            if why:
                problems.append(SourceProblem(f"audience.{key}", why, role))
                continue
            header = self._header(key) or []
            if key == "customers":
                bound: Any = CustomerReader(self.mapping, header, self._shown(key), self.dates)
            else:
                bound = EventReader(self.mapping, header, self._shown(key), self._tz)
            hint = self._delimiter_hint(header)
            for problem in bound.problems:
                problems.append(problem._replace(message=problem.message + hint))
        return problems

    def describe(self) -> SourceDescription:
        return describe({key: (self._shown(key) if self.config.get(key) else "", reader)
                         for key, reader in (("customers", self._customer_reader()),
                                             ("events", self._bound_event_reader()))})

    def consents(self) -> set[str] | None:
        reader = self._customer_reader()
        return None if reader is None else set(reader.binding.consents)

    def columns(self) -> tuple[set[str] | None, set[str] | None]:
        return columns_of(self._customer_reader(), self._bound_event_reader())

    # ------------------------------------------------------------------ customers
    def customers(self, report: Report) -> Iterator[Customer]:
        path, fh = self._open("customers")
        with fh:
            reader = csv.reader(fh, delimiter=self.config["delimiter"])
            header = next(reader, [])
            bound = CustomerReader(self.mapping, header, path, self.dates)
            if bound.problems:
                report(RowProblem(path, 1, bound.problems[0].message))
                return
            read, issues = bound.read, bound.issues
            for line, row in self._records("customers", reader, path, report):
                customer = read(row)
                if issues:
                    for message in issues:
                        report(RowProblem(path, line, message))
                    issues.clear()
                if customer is not None:
                    yield customer

    # ------------------------------------------------------------------ events
    def events(self, types: frozenset[str], since: datetime | None, report: Report) -> Iterator[Event]:
        for eid, cid, etype, when, row in self.event_rows(types, since, report):
            yield Event(eid, cid, etype, when, self.event_attributes(row))

    def event_rows(self, types: frozenset[str], since: datetime | None,
                   report: Report) -> Iterator[tuple[str, str, str, datetime, list[str]]]:
        """(id, customer id, type, time, raw row) of each usable event, as :meth:`events` checks
        them, without building objects: the planner only needs the times of most events (the
        latest purchase per customer) and builds an :class:`Event` (:meth:`event_attributes`) for
        the few it hands to rules."""
        if not self.config.get("events"):
            return
        path, fh = self._open("events")
        with fh:
            reader = csv.reader(fh, delimiter=self.config["delimiter"])
            header = next(reader, [])
            bound = self._event_reader = EventReader(self.mapping, header, path, self._tz)
            if bound.problems:
                report(RowProblem(path, 1, bound.problems[0].message))
                return
            by_email = self.mapping.event_customer == "email"
            ids = self._emails() if by_email else None
            horizon = self.horizon

            def problem(line: int, message: str) -> None:
                report(RowProblem(path, line, message))

            records = self._records("events", reader, path, report)
            for event in bound.rows(records, types, problem):
                if horizon is not None and event.time > horizon and (
                        self.first_after_horizon is None or event.time < self.first_after_horizon):
                    self.first_after_horizon = event.time
                if since is not None and event.time < since:
                    continue
                cid = event.customer_id
                if ids is not None:
                    cid = ids.get(cid.lower(), "")
                    if not cid:
                        continue  # a guest's order: no customer to write to
                yield event.id, cid, event.type, event.time, event.cells

    def event_attributes(self, row: list[str]) -> dict[str, Any]:
        """The attributes of an event row from :meth:`event_rows` (empty cells left out)."""
        assert self._event_reader is not None
        return self._event_reader.attributes(row)

    def _emails(self) -> dict[str, str]:
        """Email (lower case) → customer id, for events that name their customer by email
        (Shopify's orders). Read once per source, from the customers file."""
        if self._email_ids is None:
            self._email_ids = email_index(self.customers(lambda p: None))
        return self._email_ids


    # ------------------------------------------------------------------ incremental reads
    def cursor_identity(self) -> str:
        """The events and customers files' absolute paths (and the mapping of their columns)."""
        parts = [self.type_name, str(Path(self.config.get("events") or "").resolve()),
                 str(Path(self.config["customers"]).resolve()), self.config["delimiter"]]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]

    def _incremental(self) -> bool:
        """Whether the events file can be read from an offset: each event on one row, naming
        its customer by id (grouped rows and events by email are read whole every run)."""
        return (bool(self.config.get("events")) and not self.mapping.group_events
                and self.mapping.event_customer != "email")

    def _head(self, fh: Any) -> tuple[int, str] | None:
        """(offset after the header line, hash of it) of an open events file."""
        fh.seek(0)
        first = fh.readline(1 << 20)
        self.bytes_read += len(first)
        if not first.endswith(b"\n"):
            return None
        return len(first), hashlib.sha256(first).hexdigest()

    def snapshot_cursor(self, now: datetime) -> EventCursor | None:
        """The events file up to its last complete line, as it is before a full pass reads it:
        rows appended while the pass runs are read again by the next run (dedupe keys make that
        harmless)."""
        if not self._incremental():
            return None
        try:
            with open(self.config["events"], "rb") as fh:
                head = self._head(fh)
                if head is None:
                    return None
                size = os.fstat(fh.fileno()).st_size
                # The last complete line: the bytes up to the last newline.
                end, pos = size, size
                while pos > head[0]:
                    step = min(1 << 16, pos - head[0])
                    fh.seek(pos - step)
                    block = fh.read(step)
                    self.bytes_read += len(block)
                    cut = block.rfind(b"\n")
                    if cut >= 0:
                        end = pos - step + cut + 1
                        break
                    pos -= step
                else:
                    end = head[0]
                return EventCursor(now, "", self._position(fh, head, end))
        except OSError:
            return None

    def _position(self, fh: Any, head: tuple[int, str], end: int,
                  line_start: int | None = None, line: bytes | None = None) -> dict[str, Any]:
        """The position after the line that ends at ``end``, with what proves it unchanged."""
        if line is None:
            # The line that ends at ``end``: read back to the newline before it.
            start = end
            while start > head[0]:
                step = min(1 << 16, start - head[0])
                fh.seek(start - step)
                block = fh.read(step)
                self.bytes_read += len(block)
                cut = block.rfind(b"\n", 0, len(block) - (1 if start == end else 0))
                if cut >= 0:
                    start = start - step + cut + 1
                    break
                start -= step
            fh.seek(start)
            line = fh.read(end - start)
            self.bytes_read += len(line)
            line_start = start
        return {"offset": end, "line_start": line_start, "line_hash": hashlib.sha256(line).hexdigest(),
                "header_hash": head[1]}

    def cursor_usable(self, cursor: EventCursor) -> bool:
        """The events file only grew since ``cursor``: it is at least as long, its header is
        the same and so is the last line read. Otherwise it was rewritten or rotated."""
        pos = cursor.position
        if not self._incremental() or not pos or "offset" not in pos:
            return False
        try:
            with open(self.config["events"], "rb") as fh:
                head = self._head(fh)
                if head is None or head[1] != pos["header_hash"]:
                    return False
                if os.fstat(fh.fileno()).st_size < pos["offset"]:
                    return False
                fh.seek(pos["line_start"])
                line = fh.read(pos["offset"] - pos["line_start"])
                self.bytes_read += len(line)
                return hashlib.sha256(line).hexdigest() == pos["line_hash"]
        except (OSError, KeyError, TypeError, ValueError):
            return False

    def events_with_cursors(self, cursor: EventCursor | None, types: frozenset[str], report: Report,
                            *, overlap: timedelta = timedelta(0)
                            ) -> Iterator[tuple[Event | None, EventCursor]]:
        """The rows after the cursor's byte offset, up to the last complete line (a row being
        written is read by the next run), each with the position after it. Call only with a
        cursor :meth:`cursor_usable` accepts; without one, every event (by :meth:`events`)."""
        if cursor is None or not cursor.position or not self._incremental():
            yield from super().events_with_cursors(cursor, types, report, overlap=overlap)
            return
        pos = cursor.position
        path = Path(self.config["events"])
        shown = self._shown("events")
        header = self._header("events") or []
        bound = self._event_reader = EventReader(self.mapping, header, shown, self._tz)
        if bound.problems:
            report(RowProblem(shown, 1, bound.problems[0].message))
            return
        with path.open("rb") as fh:
            head = self._head(fh)
            assert head is not None
            fh.seek(pos["offset"])
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        data = data[:cut]
        self.bytes_read += len(data)
        base = pos["offset"]
        # Line numbers are not kept in the cursor: a problem is reported by its line counted
        # from the start of what was read.
        state = {"consumed": 0, "line_start": base, "line": b""}

        def lines() -> Iterator[str]:
            at = 0
            while at < len(data):
                nl = data.index(b"\n", at) + 1
                raw = data[at:nl]
                state["line_start"], state["line"] = base + at, raw
                at = state["consumed"] = nl
                yield raw.decode("utf-8", errors="surrogateescape")

        reader = csv.reader(lines(), delimiter=self.config["delimiter"])
        self._clean["events"] = True
        records = ((n, [c for c in row]) for n, row in enumerate(reader, 2))

        def problem(line: int, message: str) -> None:
            report(RowProblem(shown, line, f"{message} (in the rows appended after byte {base})"))

        def checked() -> Iterator[tuple[int, list[str]]]:
            for n, row in records:
                if any(_NOT_UTF8.search(cell) for cell in row):
                    problem(n, "the row is not valid UTF-8 text")
                    continue
                yield n, row

        last = cursor
        for event in bound.rows(checked(), types, problem):
            here = self._position(None, head, base + state["consumed"], state["line_start"],
                                  state["line"])
            last = EventCursor(event.time, event.id, here)
            yield Event(event.id, event.customer_id, event.type, event.time,
                        bound.attributes(event.cells)), last
        if cut:
            here = self._position(None, head, base + state["consumed"], state["line_start"],
                                  state["line"])
            yield None, EventCursor(last.time, last.id, here)

    def events_after(self, cursor: EventCursor | None, types: frozenset[str], report: Report, *,
                     overlap: timedelta = timedelta(0)) -> Iterator[Event]:
        """With a cursor that holds a position, the rows appended after it (see
        :meth:`events_with_cursors`)."""
        if cursor is None or not cursor.position or not self._incremental():
            yield from super().events_after(cursor, types, report, overlap=overlap)
            return
        for event, _ in self.events_with_cursors(cursor, types, report, overlap=overlap):
            if event is not None:
                yield event

    def customers_by_ids(self, ids: Collection[str], report: Report) -> Iterator[Customer]:
        """From a keyed copy of the customers file (:class:`CustomerCache`), rebuilt when the
        file changed; by a pass over the file when no copy can be kept."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return
        reader = self._customer_reader()
        if not self.index_customers or reader is None or reader.problems:
            yield from super().customers_by_ids(wanted, report)
            return
        try:
            cache = CustomerCache.open(self, reader, report)
        except (OSError, sqlite3.Error):
            cache = None
        if cache is None:
            yield from super().customers_by_ids(wanted, report)
            return
        shown = self._shown("customers")
        read, issues = reader.read, reader.issues
        with cache:
            for line, cells in cache.rows(wanted):
                customer = read(cells)
                if issues:
                    for message in issues:
                        report(RowProblem(shown, line, message))
                    issues.clear()
                if customer is not None:
                    yield customer
            self.bytes_read += cache.bytes_read


class CustomerCache:
    """A keyed copy of the customers file: its rows by customer id, in a SQLite file in
    ``.outreach-cache/`` beside the project, so the customers of a few new events are read by
    id instead of by a pass over the file.

    The copy holds the file's raw cells (read into customers exactly as a pass would, so a
    change of mapping needs no rebuild) and is rebuilt whenever the file changed: another size or
    modification time, or other bytes at its start or end. It is built set-wise (rows inserted
    in batches) into a new file renamed over the old, so a run that stops halfway leaves the old
    copy or none. A customer listed twice keeps the first row, as a pass keeps it.
    """

    _BATCH = 10_000
    #: Bytes hashed at each end of the file: the header and first rows, the last rows.
    _BLOCK = 4096

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.bytes_read = 0

    @classmethod
    def folder(cls, source: CSVSource) -> Path:
        return source.root / ".outreach-cache"

    @classmethod
    def signature(cls, path: Path) -> dict[str, Any]:
        """What tells a changed file: size, modification time, hash of its first and last block."""
        st = path.stat()
        h = hashlib.sha256()
        with path.open("rb") as fh:
            h.update(fh.read(cls._BLOCK))
            if st.st_size > cls._BLOCK:
                fh.seek(max(cls._BLOCK, st.st_size - cls._BLOCK))
                h.update(fh.read(cls._BLOCK))
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": h.hexdigest(),
                "path": str(path.resolve())}

    @classmethod
    def open(cls, source: CSVSource, reader: CustomerReader,
             report: Report) -> "CustomerCache | None":
        path = Path(source.config["customers"])
        sig = cls.signature(path)
        name = hashlib.sha256(sig["path"].encode()).hexdigest()[:16]
        folder = cls.folder(source)
        file = folder / f"customers-{name}.sqlite"
        want = json.dumps([sig, source.config["delimiter"]], sort_keys=True)
        if file.exists():
            db = sqlite3.connect(file)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'signature'").fetchone()
            except sqlite3.Error:
                row = None
            if row is not None and row[0] == want:
                return cls(db)
            db.close()
        folder.mkdir(exist_ok=True)
        cls._build(source, reader, file, want, report)
        return cls(sqlite3.connect(file))

    @classmethod
    def _build(cls, source: CSVSource, reader: CustomerReader, file: Path, signature: str,
               report: Report) -> None:
        id_index = reader.header.index(reader.binding.mapped["id"])
        tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE customers (id TEXT PRIMARY KEY, line INTEGER NOT NULL, "
                       "cells TEXT NOT NULL) WITHOUT ROWID")
            db.execute("BEGIN")
            shown, fh = source._open("customers")
            dumps = json.dumps
            sql = "INSERT OR IGNORE INTO customers VALUES (?, ?, ?)"
            with fh:
                rows = csv.reader(fh, delimiter=source.config["delimiter"])
                next(rows, None)
                batch: list[tuple[str, int, str]] = []
                for line, row in source._records("customers", rows, shown, report):
                    if len(row) <= id_index:
                        continue  # no id to find it by (a pass reports the row)
                    batch.append((row[id_index].strip(), line, dumps(row, ensure_ascii=False)))
                    if len(batch) >= cls._BATCH:
                        db.executemany(sql, batch)
                        batch = []
                db.executemany(sql, batch)
            db.execute("INSERT INTO meta VALUES ('signature', ?)", (signature,))
            db.execute("COMMIT")
        except BaseException:
            db.close()
            tmp.unlink(missing_ok=True)
            raise
        db.close()
        os.replace(tmp, file)

    def rows(self, ids: list[str]) -> Iterator[tuple[int, list[str]]]:
        """(line, cells) of the customers among ``ids``, in file order."""
        found: list[tuple[int, str]] = []
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            found += self.db.execute(
                f"SELECT line, cells FROM customers WHERE id IN ({', '.join('?' * len(part))})",
                part).fetchall()
        found.sort()
        for line, cells in found:
            self.bytes_read += len(cells)
            yield line, json.loads(cells)

    def __enter__(self) -> "CustomerCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.db.close()


@hookimpl
def outreach_register_sources(register):
    register(CSVSource)
