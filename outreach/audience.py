"""The audience: customers, their events, and the sources that stream them.

A source is a plugin (``outreach_register_sources``): the built-in one reads CSV files; a database or a
shop's API can follow without touching the core. Sources stream: the planner never holds the whole
customer list, only a batch at a time, so memory stays flat at a million customers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, ClassVar, Collection, Iterator, Mapping, NamedTuple

from outreach.settings import Setting

#: The customer fields every source fills; anything else a source knows goes in ``attributes``.
CUSTOMER_FIELDS = ("id", "first_name", "last_name", "email", "phone", "timezone", "locale")


@dataclass(slots=True)
class Customer:
    """One customer, as a source delivers it."""

    id: str
    first_name: str = ""
    last_name: str = ""
    email: str | None = None
    phone: str | None = None
    #: IANA time zone (``Asia/Yerevan``); empty means the deployment's time zone.
    timezone: str = ""
    #: BCP 47 language tag (``hy``, ``tl-PH``, ``az``); picks the template variant.
    locale: str = "en"
    #: The channels (by consent key, usually the channel name) this customer agreed to receive.
    consent: frozenset[str] = frozenset()
    tags: tuple[str, ...] = ()
    #: Free attributes (birthday, renewal_date, city...), strings unless the source knows better.
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The full name as a person would write it."""
        return " ".join(p for p in (self.first_name, self.last_name) if p)

    def template_view(self) -> dict[str, Any]:
        """What templates and ``where`` expressions see as ``customer``."""
        view: dict[str, Any] = dict(self.attributes)
        view.update(
            id=self.id, first_name=self.first_name, last_name=self.last_name, name=self.name,
            email=self.email, phone=self.phone, timezone=self.timezone, locale=self.locale,
            tags=list(self.tags), consent=sorted(self.consent),
        )
        return view


@dataclass(slots=True)
class Event:
    """Something a customer did or that happened to them: a purchase, a complaint, a late order."""

    id: str
    customer_id: str
    type: str
    #: When it happened, timezone-aware.
    time: datetime
    attributes: dict[str, Any] = field(default_factory=dict)

    def template_view(self) -> dict[str, Any]:
        """What templates see as ``event``."""
        view = dict(self.attributes)
        view.update(id=self.id, type=self.type, time=self.time.isoformat())
        return view


@dataclass(slots=True)
class Profile:
    """A customer with the events the due campaigns asked for, as rules receive them."""

    customer: Customer
    #: Events of the requested types, oldest first.
    events: list[Event] = field(default_factory=list)
    #: The latest time of each requested activity type (``{"purchase": datetime}``).
    latest: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class RowProblem:
    """A row a source could not use. It is reported with file and line and skipped; the rest go on."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


Report = Callable[[RowProblem], None]


class SourceProblem(NamedTuple):
    """Something that makes a source unusable before any row is read (a missing file, table or
    column, a query that fails, a mapping that names nothing): ``outreach validate`` and
    ``outreach run`` refuse it alike, naming ``key`` (the setting, ``audience.customers``)."""

    key: str
    message: str
    #: ``customers`` (nothing can be planned) or ``events`` (only campaigns that read events
    #: cannot be: ``run --skip-invalid`` runs the others).
    role: str = "customers"


@dataclass(frozen=True, order=True)
class EventCursor:
    """A position in a source's events: the (time, id) of the last event a run consumed.

    Events are ordered by time, then id; a run that needs only new events asks for those after
    its cursor (:meth:`Source.events_after`) and keeps the cursor of the last one it planned.
    """

    time: datetime
    id: str
    #: Where the source stopped, in its own terms (the CSV source: a byte offset in the events
    #: file with the hash of the line before it), JSON-able; None for a source that needs only
    #: (time, id). Not part of the order.
    position: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    def as_json(self) -> dict[str, Any]:
        """The form the ledger stores (``event_cursors.cursor``)."""
        return {"time": self.time.isoformat(), "id": self.id,
                "position": dict(self.position) if self.position is not None else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "EventCursor":
        """The cursor :meth:`as_json` stored."""
        return cls(datetime.fromisoformat(data["time"]), str(data["id"]), data.get("position"))


@dataclass
class SourceDescription:
    """What a source made of its data, for ``outreach validate``: each role's mapping."""

    #: role (customers, events) → where it is read from (a file, a table, a query).
    origins: dict[str, str] = field(default_factory=dict)
    #: role → {outreach field → the source's column}.
    mapped: dict[str, dict[str, str]] = field(default_factory=dict)
    #: role → {attribute name → the source's column} for the columns kept as attributes.
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    #: consent key → where it comes from (a column, ``consent_default``...).
    consents: dict[str, str] = field(default_factory=dict)


class Source:
    """Base class of audience sources. Configured in ``outreach.toml`` under ``[audience]``."""

    #: The name ``source = "..."`` uses in ``[audience]``.
    type_name: ClassVar[str] = ""
    settings: ClassVar[Mapping[str, Setting]] = {}

    def __init__(self, settings: Mapping[str, Any], root: Path, timezone: str) -> None:
        self.config = dict(settings)
        #: The project folder: relative paths in settings are relative to it.
        self.root = root
        #: The deployment's time zone, for times written without an offset.
        self.timezone = timezone

    #: Names of the customer attributes that hold dates (a birthday, a renewal date), set by the
    #: project from what its campaigns' rules read: a source reads them into ISO form
    #: (``2026-12-01``, ``--12-01``) and reports a value it cannot read.
    dates: frozenset[str] = frozenset()

    #: Set before a full pass by incremental planning (:mod:`outreach.incremental`): the run's
    #: now. A source whose cursor is a position rather than a time (the CSV source) then keeps in
    #: :attr:`first_after_horizon` the earliest event it read dated after it: an event that has
    #: not happened yet when the pass stores its cursor, which the run at that time must read.
    horizon: datetime | None = None
    first_after_horizon: datetime | None = None
    #: Set by a run that looks customers up by id run after run (incremental planning): the
    #: source may keep an index of its customers for :meth:`customers_by_ids` (the CSV source's
    #: keyed copy). Left False, a one-off lookup (``preview``) reads them as it always did.
    index_customers: bool = False

    def customers(self, report: Report) -> Iterator[Customer]:
        """Stream every customer once, reporting and skipping rows that are not valid."""
        raise NotImplementedError

    def events(self, types: frozenset[str], since: datetime | None, report: Report) -> Iterator[Event]:
        """Stream the events of ``types`` at or after ``since`` (all of them when ``since`` is None)."""
        raise NotImplementedError

    def customer(self, customer_id: str) -> Customer | None:
        """One customer by id (for ``preview`` and ``history``), through :meth:`customers_by_ids`."""
        return next(iter(self.customers_by_ids([customer_id], lambda p: None)), None)

    def count_hint(self) -> int | None:
        """About how many customers :meth:`customers` will stream, for a progress bar's total;
        None when it cannot be known cheaply. Never relied on for anything else."""
        return None

    def columns(self) -> tuple[set[str] | None, set[str] | None]:
        """The names customers and events carry (standard fields and attributes), if known.

        Sample renders in ``outreach validate`` accept exactly these; None means unknown (any name).
        """
        return None, None

    def check(self) -> list[SourceProblem]:
        """Problems found without reading every row (missing files, tables or columns, a failing
        query, a mapping that names nothing). ``outreach validate`` and ``outreach run`` both
        refuse them with the same message; a plain ``(key, message)`` pair is read as a problem
        with the customers."""
        return []

    def describe(self) -> SourceDescription:
        """What the source mapped, for ``outreach validate`` (call after :meth:`check` is clean)."""
        return SourceDescription()

    def consents(self) -> set[str] | None:
        """The consent keys the source can give a customer (a column or a default for each), or
        None when it cannot tell; a campaign none of whose channels' consents is among them
        could reach nobody, and is refused."""
        return None

    # ------------------------------------------------------------------ incremental reads
    def events_after(self, cursor: EventCursor | None, types: frozenset[str], report: Report, *,
                     overlap: timedelta = timedelta(0)) -> Iterator[Event]:
        """The events of ``types`` (all when empty) after ``cursor``, ordered by (time, id).

        With ``overlap``, the events of the ``overlap`` before the cursor's time are read again
        as well: a row committed late, with a time before the cursor, is not missed (dedupe keys
        make the ones already planned harmless). No cursor: every event. This default reads
        :meth:`events` whole and sorts; a source with an index reads only the new rows.
        """
        since = None if cursor is None else cursor.time - overlap
        found = [e for e in self.events(types, since, report)
                 if cursor is None or overlap or (e.time, e.id) > (cursor.time, cursor.id)]
        found.sort(key=lambda e: (e.time, e.id))
        return iter(found)

    def events_with_cursors(self, cursor: EventCursor | None, types: frozenset[str], report: Report,
                            *, overlap: timedelta = timedelta(0)
                            ) -> Iterator[tuple[Event | None, EventCursor]]:
        """:meth:`events_after`, each event with the cursor just past it: what a run stores once
        it has recorded what it planned from the events up to there. A pair whose event is None
        moves the cursor without an event (rows of other types, the end of what was read)."""
        for event in self.events_after(cursor, types, report, overlap=overlap):
            yield event, EventCursor(event.time, event.id)

    def events_overlap(self) -> timedelta:
        """How far before its cursor's time an incremental read reads events again, for rows
        that reach the source late with an earlier time (a database row committed after later
        ones). None by default; the SQL source's ``events_overlap``."""
        return timedelta(0)

    def cursor_identity(self) -> str:
        """What tells this source's event stream from another's, for the ledger's cursors: a
        hash of the source's type and where each role is read from. A project pointed at another
        file or table starts without a cursor (and so with a full pass)."""
        import hashlib
        import json

        origins = self.describe().origins
        return hashlib.sha256(json.dumps([self.type_name, origins], sort_keys=True)
                              .encode()).hexdigest()[:32]

    def cursor_usable(self, cursor: EventCursor) -> bool:
        """Whether events after ``cursor`` are still exactly the new events: False when the data
        behind it was rewritten (a CSV file replaced rather than appended to), which calls for a
        full pass. By (time, id) alone nothing can be checked: True."""
        return True

    def snapshot_cursor(self, now: datetime) -> EventCursor | None:
        """Taken before a full pass that plans at ``now`` reads the events: the cursor it stores
        once it is done (every event up to here was read). The default, (now, ""), leaves every
        event dated after ``now`` to be read again; None stores nothing."""
        return EventCursor(now, "")

    def customers_by_ids(self, ids: Collection[str], report: Report) -> Iterator[Customer]:
        """The customers among ``ids`` that exist, in any order (the customers of new events).

        This default streams :meth:`customers` once; a source with an index answers one query
        per call, so call it with a batch of ids, not one id at a time.
        """
        wanted = set(ids)
        if not wanted:
            return
        for c in self.customers(report):
            if c.id in wanted:
                yield c
