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

import csv
from datetime import datetime
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
        self._tz = ZoneInfo(timezone) if timezone else ZoneInfo("UTC")

    # ------------------------------------------------------------------ helpers
    def _open(self, key: str):
        path = Path(self.config[key])
        # Problems name the file as the user wrote it: relative to the project when inside it.
        shown = path.relative_to(self.root) if path.is_relative_to(self.root) else path
        return shown, path.open(newline="", encoding="utf-8-sig")

    def _header(self, key: str) -> list[str] | None:
        if not self.config.get(key):
            return None
        try:
            path, fh = self._open(key)
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
            except (ZoneInfoNotFoundError, ValueError):
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
            for line, row in enumerate(reader, start=2):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != width:
                    report(RowProblem(str(path), line, f"expected {width} columns, found {len(row)}"))
                    continue
                get = lambda name: row[std[name]].strip() if std[name] is not None else ""  # noqa: E731
                cid = get("id")
                if not cid:
                    report(RowProblem(str(path), line, "id is empty"))
                    continue
                tz = get("timezone")
                if tz and not self._valid_zone(tz):
                    report(RowProblem(str(path), line, f"timezone {tz!r} is not an IANA time zone "
                                                       "(such as Europe/London)"))
                    continue
                consent = set()
                bad = None
                for channel, i in consent_cols:
                    value = row[i].strip().lower()
                    if value in _YES:
                        consent.add(channel)
                    elif value not in _NO:
                        bad = f"consent_{channel} is {row[i]!r}; expected yes or no"
                if bad:
                    report(RowProblem(str(path), line, bad))
                    continue
                tags = tuple(t.strip() for t in get("tags").split(";") if t.strip())
                # Every column is an attribute, an empty cell an empty string: a filter such as
                # customer.tier != 'gold' must see the customer without a tier.
                attributes = {name: row[i].strip() for name, i in extra}
                yield Customer(
                    id=cid, first_name=get("first_name"), last_name=get("last_name"),
                    email=get("email") or None, phone=get("phone") or None, timezone=tz,
                    locale=get("locale") or "en", consent=frozenset(consent), tags=tags,
                    attributes=attributes,
                )

    # ------------------------------------------------------------------ events
    def events(self, types: frozenset[str], since: datetime | None, report: Report) -> Iterator[Event]:
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
            extra = [(name, i) for i, name in enumerate(header) if name not in _EVENT_STANDARD]
            width = len(header)
            for line, row in enumerate(reader, start=2):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != width:
                    report(RowProblem(str(path), line, f"expected {width} columns, found {len(row)}"))
                    continue
                etype = row[i_type].strip()
                if types and etype not in types:
                    continue
                eid, cid = row[i_id].strip(), row[i_cust].strip()
                if not eid or not cid:
                    report(RowProblem(str(path), line, "id and customer_id must not be empty"))
                    continue
                try:
                    when = datetime.fromisoformat(row[i_time].strip())
                except ValueError:
                    report(RowProblem(str(path), line, f"time {row[i_time]!r} is not an ISO 8601 time "
                                                       "such as 2026-11-20T14:30:00+04:00"))
                    continue
                if when.tzinfo is None:
                    when = when.replace(tzinfo=self._tz)
                if since is not None and when < since:
                    continue
                yield Event(eid, cid, etype, when,
                            {name: row[i].strip() for name, i in extra if row[i].strip()})


@hookimpl
def outreach_register_sources(register):
    register(CSVSource)
