"""The audience: customers, their events, and the sources that stream them.

A source is a plugin (``outreach_register_sources``): the built-in one reads CSV files; a database or a
shop's API can follow without touching the core. Sources stream: the planner never holds the whole
customer list, only a batch at a time, so memory stays flat at a million customers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping

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

    def customers(self, report: Report) -> Iterator[Customer]:
        """Stream every customer once, reporting and skipping rows that are not valid."""
        raise NotImplementedError

    def events(self, types: frozenset[str], since: datetime | None, report: Report) -> Iterator[Event]:
        """Stream the events of ``types`` at or after ``since`` (all of them when ``since`` is None)."""
        raise NotImplementedError

    def customer(self, customer_id: str) -> Customer | None:
        """One customer by id (for ``preview`` and ``history``); sources with an index override this."""
        for c in self.customers(lambda p: None):
            if c.id == customer_id:
                return c
        return None

    def count_hint(self) -> int | None:
        """About how many customers :meth:`customers` will stream, for a progress bar's total;
        None when it cannot be known cheaply. Never relied on for anything else."""
        return None

    def columns(self) -> tuple[set[str] | None, set[str] | None]:
        """The names customers and events carry (standard fields and attributes), if known.

        Sample renders in ``outreach validate`` accept exactly these; None means unknown (any name).
        """
        return None, None

    def check(self) -> list[tuple[str, str]]:
        """Problems found without reading every row (missing files, missing columns): (key, message)."""
        return []
