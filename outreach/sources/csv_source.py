"""The built-in audience source: two CSV files, streamed row by row.

``customers`` has the columns ``id, first_name, last_name, email, phone, timezone, locale``,
``consent_<channel>`` (yes/no) for each consent, ``tags`` (separated by ``;``) and any other column
as a free attribute (``birthday``, ``club_renews_on``...). ``events`` has ``id, customer_id, type,
time`` and any other column as an attribute. A row that cannot be used is reported with its file and
line and skipped; the rest go on.

An empty customer cell is an empty string. An empty event cell is left out, so a template that
needs it (an apology's ``what_happened``) fails for that message instead of sending a hollow text.
"""

from __future__ import annotations

import codecs
import csv
import re
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from outreach import hookimpl
from outreach.audience import Customer, Event, Report, RowProblem, Source
from outreach.settings import Setting

_YES = {"yes", "y", "true", "1", "opt-in", "opted-in"}
_NO = {"no", "n", "false", "0", "", "opt-out", "opted-out"}
_STANDARD = ("id", "first_name", "last_name", "email", "phone", "timezone", "locale", "tags")
_EVENT_STANDARD = ("id", "customer_id", "type", "time")


_NOT_UTF8 = re.compile("[\udc80-\udcff]")


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


def _row_parser(columns: list[int | None], extra: list[tuple[str, int]]):
    """A function from a row to (its standard cells, stripped, in _STANDARD order; its attributes).

    Generated for the file's header (as namedtuple does), so a row costs one call of straight-line
    code rather than a loop per cell. Every other column is an attribute, an empty cell an empty
    string: a filter such as customer.tier != 'gold' must see the customer without a tier.
    """
    cells = ", ".join("''" if i is None else f"row[{int(i)}].strip()" for i in columns)
    attrs = ", ".join(f"{name!r}: row[{int(i)}].strip()" for name, i in extra)
    namespace: dict[str, Any] = {}
    exec(f"def parse(row):\n    return ({cells}), {{{attrs}}}\n", namespace)  # noqa: S102
    return namespace["parse"]


def _consent(channels: list[str], cells: tuple[str, ...]) -> frozenset[str] | str:
    """The consents a row's ``consent_*`` cells give, or the problem with them (a string)."""
    consent = set()
    bad = None
    for channel, raw in zip(channels, cells):
        value = raw.strip().lower()
        if value in _YES:
            consent.add(channel)
        elif value not in _NO:
            bad = f"consent_{channel} is {raw!r}; expected yes or no"
    return bad if bad else frozenset(consent)


class CSVSource(Source):
    """Customers and events from CSV files (UTF-8, header row)."""

    type_name = "csv"
    settings: ClassVar[Mapping[str, Setting]] = {
        "customers": Setting("path", required=True, help="CSV file of customers"),
        "events": Setting("path", help="CSV file of events (purchases, complaints...)"),
        "delimiter": Setting("str", default=",", help="column separator"),
    }

    def __init__(self, settings: Mapping[str, Any], root: Path, timezone: str) -> None:
        super().__init__(settings, root, timezone)
        self._zones: dict[str, bool] = {}
        self._clean: dict[str, bool] = {}
        self._tz = ZoneInfo(timezone) if timezone else ZoneInfo("UTC")

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
    def _open(self, key: str):
        path = Path(self.config[key])
        # Problems name the file as the user wrote it: relative to the project when inside it.
        shown = path.relative_to(self.root) if path.is_relative_to(self.root) else path
        # Bytes that are not UTF-8 become lone surrogates, so one bad row is reported and skipped
        # instead of ending the run; _records checks rows for them only when the file has any.
        self._clean[key] = _is_utf8(path)
        return shown, path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")

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
        except OSError:
            return None
        with fh:
            row = next(csv.reader(fh, delimiter=self.config["delimiter"]), None)
        return [c.strip() for c in row] if row else None

    def check(self) -> list[tuple[str, str]]:
        problems = []
        for key, required in (("customers", ("id",)), ("events", _EVENT_STANDARD)):
            if not self.config.get(key):
                continue
            path = Path(self.config[key])
            if not path.is_file():
                problems.append((f"audience.{key}", f"file {path} does not exist"))
                continue
            header = self._header(key) or []
            missing = [c for c in required if c not in header]
            if missing:
                problems.append((f"audience.{key}", f"{path} lacks the column(s) {', '.join(missing)}"))
        return problems

    def columns(self) -> tuple[set[str] | None, set[str] | None]:
        customer = self._header("customers")
        event = self._header("events")
        std_c = {"name", "consent", *_STANDARD}
        cust = None if customer is None else {c for c in customer if not c.startswith("consent_")} | std_c
        ev = set(_EVENT_STANDARD) if event is None else set(event) | set(_EVENT_STANDARD)
        return cust, ev

    def _valid_zone(self, name: str) -> bool:
        known = self._zones.get(name)
        if known is None:
            try:
                ZoneInfo(name)
                known = True
            except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a folder: OSError
                known = False
            self._zones[name] = known
        return known

    # ------------------------------------------------------------------ customers
    def customers(self, report: Report) -> Iterator[Customer]:
        path, fh = self._open("customers")
        with fh:
            reader = csv.reader(fh, delimiter=self.config["delimiter"])
            header = [c.strip() for c in next(reader, [])]
            if "id" not in header:
                report(RowProblem(str(path), 1, "the header has no id column"))
                return
            index = {name: i for i, name in enumerate(header)}
            consent_cols = [(name[len("consent_"):], i) for name, i in index.items()
                            if name.startswith("consent_")]
            std = {name: index.get(name) for name in _STANDARD}
            extra = [(name, i) for name, i in index.items()
                     if name not in _STANDARD and not name.startswith("consent_")]
            width = len(header)
            # The hot loop of a million-customer run: columns are picked by precomputed indexes,
            # and the few distinct consent and tag cells are parsed once each, not once per row
            # (consent cells that cannot be used are parsed again for each row they are reported on).
            parse = _row_parser([std[name] for name in _STANDARD], extra)
            consent_idx = [i for _, i in consent_cols]
            consent_names = [channel for channel, _ in consent_cols]
            consent_pick = (itemgetter(*consent_idx) if len(consent_idx) > 1 else
                            (lambda r, _i=consent_idx[0]: (r[_i],)) if consent_idx else (lambda r: ()))
            consent_of: dict[tuple[str, ...], frozenset[str]] = {}  # usable cells only
            tags_of: dict[str, tuple[str, ...]] = {}
            shown = str(path)
            for line, row in self._records("customers", reader, shown, report):
                if len(row) != width:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue
                    report(RowProblem(shown, line, f"expected {width} columns, found {len(row)}"))
                    continue
                (cid, first, last, email, phone, tz, locale, tags), attributes = parse(row)
                if not cid:
                    if width == 1 and not row[0].strip():
                        continue
                    report(RowProblem(shown, line, "id is empty"))
                    continue
                if tz and not self._valid_zone(tz):
                    report(RowProblem(shown, line, f"timezone {tz!r} is not an IANA time zone "
                                                   "(such as Europe/London)"))
                    continue
                cells = consent_pick(row)
                consent = consent_of.get(cells)
                if consent is None:
                    found = _consent(consent_names, cells)
                    if isinstance(found, str):
                        report(RowProblem(shown, line, found))
                        continue
                    if len(consent_of) > 10_000:
                        consent_of.clear()
                    consent = consent_of[cells] = found
                if tags:
                    tag_tuple = tags_of.get(tags)
                    if tag_tuple is None:
                        tag_tuple = tags_of[tags] = tuple(t.strip() for t in tags.split(";") if t.strip())
                        if len(tags_of) > 10_000:
                            tags_of.clear()
                else:
                    tag_tuple = ()
                yield Customer(cid, first, last, email or None, phone or None, tz, locale or "en",
                               consent, tag_tuple, attributes)

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
            header = [c.strip() for c in next(reader, [])]
            missing = [c for c in _EVENT_STANDARD if c not in header]
            if missing:
                report(RowProblem(str(path), 1, f"the header lacks {', '.join(missing)}"))
                return
            i_id, i_cust, i_type, i_time = (header.index(c) for c in _EVENT_STANDARD)
            self._event_extra = [(name, i) for i, name in enumerate(header)
                                 if name not in _EVENT_STANDARD]
            width = len(header)
            tz = self._tz
            parse_time = datetime.fromisoformat
            shown = str(path)
            for line, row in self._records("events", reader, shown, report):
                if len(row) != width:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue
                    report(RowProblem(shown, line, f"expected {width} columns, found {len(row)}"))
                    continue
                etype = row[i_type].strip()
                if types and etype not in types:
                    continue
                eid, cid = row[i_id].strip(), row[i_cust].strip()
                if not eid or not cid:
                    report(RowProblem(shown, line, "id and customer_id must not be empty"))
                    continue
                try:
                    when = parse_time(row[i_time].strip())
                except ValueError:
                    report(RowProblem(shown, line, f"time {row[i_time]!r} is not an ISO 8601 time "
                                                   "such as 2026-11-20T14:30:00+04:00"))
                    continue
                if when.tzinfo is None:
                    when = when.replace(tzinfo=tz)
                if since is not None and when < since:
                    continue
                yield eid, cid, etype, when, row

    def event_attributes(self, row: list[str]) -> dict[str, Any]:
        """The attributes of an event row from :meth:`event_rows` (empty cells left out)."""
        return {name: row[i].strip() for name, i in self._event_extra if row[i].strip()}


@hookimpl
def outreach_register_sources(register):
    register(CSVSource)
