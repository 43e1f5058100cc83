"""The contract every audience source keeps, checked against the source itself.

The planner trusts a source on a few points it cannot verify at run time: every customer is
streamed once with their fields, consent and tags; a row it cannot use is reported, not raised
and not silently dropped; events come filtered by type and time; an incremental read after a
cursor returns exactly the newer events, oldest first; customers come by id. :func:`check_source`
exercises all of that through the interface the core uses, on data it hands the plugin to store::

    def test_contract(tmp_path):
        def build(data: SourceData) -> Source:
            ...  # write data.customers and data.events where the source reads (a table, an API fake)
            return MySource({...settings...}, tmp_path, "UTC")
        check_source(build)

The built-in CSV and SQL sources are checked by this same function (``tests/test_sources.py``).
Every check runs even when an earlier one fails, and one AssertionError lists every failure.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from outreach.audience import EventCursor, RowProblem, Source, SourceProblem
from outreach.settings import Setting
from outreach.testing.contract import ContractReport

#: The customers' columns, in the order :class:`SourceData` gives them.
CUSTOMER_COLUMNS = ("id", "first_name", "last_name", "email", "phone", "timezone", "locale",
                    "consent_email", "consent_sms", "tags", "birthday")
EVENT_COLUMNS = ("id", "customer_id", "type", "time", "total")

_T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


@dataclass
class SourceData:
    """What :func:`check_source` asks a source to hold: rows of text, with outreach's column names
    (tags separated by ``;``; times in ISO 8601 with an offset). ``bad_customer_ids`` are rows a
    source must report and skip (a consent that is neither yes nor no)."""

    customers: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, str]] = field(default_factory=list)
    bad_customer_ids: list[str] = field(default_factory=list)


def sample_data() -> SourceData:
    """Five customers (one with a consent of ``maybe``) and twelve events over six days."""
    customers = [
        {"id": "c1", "first_name": "Ani", "last_name": "Petrosyan", "email": "ani@example.com",
         "phone": "+37491234567", "timezone": "Asia/Yerevan", "locale": "hy", "consent_email": "yes",
         "consent_sms": "yes", "tags": "vip;cake-club", "birthday": "1990-11-24"},
        {"id": "c2", "first_name": "Maricel", "last_name": "Dela Cruz", "email": "mari@example.com",
         "phone": "", "timezone": "", "locale": "tl", "consent_email": "yes", "consent_sms": "no",
         "tags": "", "birthday": ""},
        {"id": "c3", "first_name": "Aynur", "last_name": "Mammadova", "email": "",
         "phone": "+994501234567", "timezone": "Asia/Baku", "locale": "az", "consent_email": "no",
         "consent_sms": "yes", "tags": "wholesale", "birthday": "--02-29"},
        {"id": "c4", "first_name": "Bad", "last_name": "Row", "email": "bad@example.com",
         "phone": "", "timezone": "", "locale": "en", "consent_email": "maybe", "consent_sms": "no",
         "tags": "", "birthday": ""},
        {"id": "c5", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
         "phone": "", "timezone": "Europe/London", "locale": "en", "consent_email": "yes",
         "consent_sms": "no", "tags": "", "birthday": ""},
    ]
    events = []
    for i in range(12):
        kind = "complaint" if i % 4 == 3 else "purchase"
        events.append({"id": f"e{i + 1:02d}", "customer_id": f"c{i % 3 + 1}", "type": kind,
                       "time": (_T0 + timedelta(hours=12 * i)).isoformat(),
                       "total": f"{10 + i}.50"})
    return SourceData(customers, events, ["c4"])


def check_source(build: Callable[[SourceData], Source], *, data: SourceData | None = None,
                 type_name: str | None = None) -> ContractReport:
    """Check the source ``build(data)`` returns keeps the source contract; raise one
    AssertionError listing every failure, or return what passed.

    Checked, each by name: ``class`` (a ``type_name``, settings declared with ``Setting``),
    ``check`` (no problem with good data), ``customers`` (each once, with fields, consent and
    tags; the bad row reported with a line and skipped), ``events`` (filtered by type and time),
    ``events_after`` (only newer events, ordered by time and id; an overlap reads the window
    again), ``customers_by_ids``, ``customer``, ``columns`` and ``consents``.
    """
    data = data or sample_data()
    report = ContractReport()

    def run(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except AssertionError as exc:
            report.failures.append(f"{name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a crash is a failure of that check
            report.failures.append(f"{name}: raised {type(exc).__name__}: {exc}\n"
                                   f"{traceback.format_exc(limit=4)}")
        else:
            report.passed.append(name)

    source = build(data)
    cls = type(source)
    good = [c for c in data.customers if c["id"] not in data.bad_customer_ids]

    def check_class() -> None:
        assert cls.type_name, "type_name is empty"
        assert type_name is None or cls.type_name == type_name, \
            f"type_name is {cls.type_name!r}, expected {type_name!r}"
        bad = [k for k, v in cls.settings.items() if not isinstance(v, Setting)]
        assert not bad, f"settings not declared with Setting: {bad}"

    def check_check() -> None:
        problems = [p if isinstance(p, SourceProblem) else SourceProblem(*p) for p in source.check()]
        assert not problems, f"problems with good data: {problems}"

    def check_customers() -> None:
        problems: list[RowProblem] = []
        got = list(source.customers(problems.append))
        ids = [c.id for c in got]
        assert sorted(ids) == sorted(c["id"] for c in good), f"customers {ids}"
        by_id = {c.id: c for c in got}
        for row in good:
            c = by_id[row["id"]]
            assert c.first_name == row["first_name"], f"{c.id}: first_name {c.first_name!r}"
            assert (c.email or "") == row["email"], f"{c.id}: email {c.email!r}"
            assert (c.phone or "") == row["phone"], f"{c.id}: phone {c.phone!r}"
            assert c.timezone == row["timezone"], f"{c.id}: timezone {c.timezone!r}"
            consent = {k for k in ("email", "sms") if row[f"consent_{k}"] == "yes"}
            assert set(c.consent) == consent, f"{c.id}: consent {set(c.consent)} not {consent}"
            tags = tuple(t for t in row["tags"].split(";") if t)
            assert tuple(c.tags) == tags, f"{c.id}: tags {c.tags} not {tags}"
            assert c.attributes.get("birthday", "") == row["birthday"], \
                f"{c.id}: birthday {c.attributes.get('birthday')!r}"
        reported = {p.message for p in problems}
        assert len(problems) == len(data.bad_customer_ids), f"reported {reported}"
        assert all(isinstance(p, RowProblem) and p.line >= 1 for p in problems), problems

    def check_events() -> None:
        problems: list[RowProblem] = []
        since = _T0 + timedelta(days=2)
        got = list(source.events(frozenset({"purchase"}), since, problems.append))
        want = sorted(e["id"] for e in data.events
                      if e["type"] == "purchase" and datetime.fromisoformat(e["time"]) >= since)
        assert sorted(e.id for e in got) == want, f"events {sorted(e.id for e in got)} not {want}"
        assert all(e.time.tzinfo is not None for e in got), "event times must be aware"
        first = next(e for e in got if e.id == want[0])
        row = next(e for e in data.events if e["id"] == want[0])
        assert first.customer_id == row["customer_id"], f"customer_id {first.customer_id!r}"
        assert first.attributes.get("total") == row["total"], f"attributes {first.attributes}"
        assert not problems, problems

    def check_after() -> None:
        ordered = sorted(data.events, key=lambda e: (datetime.fromisoformat(e["time"]), e["id"]))
        cut = ordered[7]
        cursor = EventCursor(datetime.fromisoformat(cut["time"]), cut["id"])
        got = [e.id for e in source.events_after(cursor, frozenset(), lambda p: None)]
        assert got == [e["id"] for e in ordered[8:]], f"after the cursor: {got}"
        everything = [e.id for e in source.events_after(None, frozenset(), lambda p: None)]
        assert everything == [e["id"] for e in ordered], f"without a cursor: {everything}"
        window = [e.id for e in source.events_after(cursor, frozenset(), lambda p: None,
                                                    overlap=timedelta(hours=12))]
        assert window == [e["id"] for e in ordered[6:]], f"with a 12h overlap: {window}"
        typed = [e.id for e in source.events_after(cursor, frozenset({"complaint"}),
                                                   lambda p: None)]
        assert typed == [e["id"] for e in ordered[8:] if e["type"] == "complaint"], typed

    def check_by_ids() -> None:
        wanted = [good[0]["id"], good[-1]["id"], "no-such-customer"]
        got = sorted(c.id for c in source.customers_by_ids(wanted, lambda p: None))
        assert got == sorted(wanted[:2]), f"by ids: {got}"
        assert list(source.customers_by_ids([], lambda p: None)) == [], "no ids: no customers"
        one = source.customer(good[0]["id"])
        assert one is not None and one.first_name == good[0]["first_name"], f"customer(): {one}"
        assert source.customer("no-such-customer") is None, "customer() of an unknown id"

    def check_columns() -> None:
        customers, events = source.columns()
        assert customers is None or {"birthday", "first_name"} <= customers, customers
        assert events is None or {"total", "time"} <= events, events
        consents = source.consents()
        assert consents is None or {"email", "sms"} <= consents, consents
        hint = source.count_hint()
        assert hint is None or isinstance(hint, int), f"count_hint {hint!r}"

    for name, fn in (("class", check_class), ("check", check_check), ("customers", check_customers),
                     ("events", check_events), ("events_after", check_after),
                     ("customers_by_ids", check_by_ids), ("columns", check_columns)):
        run(name, fn)
    close = getattr(source, "close", None)
    if callable(close):
        close()
    if report.failures:
        raise AssertionError(f"{cls.__name__} breaks the source contract:\n  "
                             + "\n  ".join(report.failures))
    return report
