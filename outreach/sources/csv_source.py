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
import re
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping
from zoneinfo import ZoneInfo

from outreach import hookimpl
from outreach.audience import (Customer, Event, Report, RowProblem, Source, SourceDescription,
                               SourceProblem)
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
        if "\0" in str(path):
            return f"{str(self.config[key])!r} is not a file name (it holds a NUL character)"
        try:
            if path.is_dir():
                return f"{self._shown(key)} is a folder, not a CSV file"
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

            def problem(line: int, message: str) -> None:
                report(RowProblem(path, line, message))

            records = self._records("events", reader, path, report)
            for event in bound.rows(records, types, problem):
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


@hookimpl
def outreach_register_sources(register):
    register(CSVSource)
