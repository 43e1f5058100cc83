"""From a source's own columns to outreach's customers and events: ``[audience.columns]``.

Every built-in source reads rows whose columns carry the source's names (``Customer ID``,
``Accepts Email Marketing``, ``TIMEZONE``). A :class:`Mapping` says which column fills which of
outreach's fields, how consent, tags and dates are written there, and what else is assumed (a
phone region for national numbers, a consent every row has). Bound to one header it becomes a
:class:`CustomerReader` or an :class:`EventReader`, which turn rows into customers and events and
say what they did with every column (``outreach validate`` shows it).

A mapping is declared in ``outreach.toml`` (or by a preset, :mod:`outreach.sources.presets`, which
the declaration may override)::

    [audience]
    tag_separator = ","
    date_format = "%m/%d"
    phone_region = "US"
    consent_default = { email = "yes" }
    [audience.columns]
    id = "Customer ID"
    consent_email = "Accepts Email Marketing"
    birthday = { column = "Birthday", date_format = "%m/%d" }

A field left out is found by name: a column called ``email`` or ``Email`` fills ``email``, one
called ``consent_sms`` fills the ``sms`` consent. Every other column becomes an attribute under a
name a template can use (``Total Spent`` is ``customer.total_spent``).

Rows come as lists of text (SQL values are turned into text first, :func:`as_text`), so both
sources share one reader and one set of answers.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator, Mapping as TMapping, Sequence

import phonenumbers

from outreach.audience import Customer, SourceDescription, SourceProblem
from outreach.settings import Setting
from outreach.sources.dates import DateError, check_format, parse_date

#: The customer fields a column can fill (``tags`` is split into a tuple).
CUSTOMER_FIELDS = ("id", "first_name", "last_name", "email", "phone", "timezone", "locale", "tags")
#: The event fields a column can fill; every other event column is an attribute.
EVENT_FIELDS = ("id", "customer_id", "type", "time")

#: Consent values understood without a ``consent_values`` table: yes/no, true/false, 1/0, opt-in
#: words, and the states Shopify and Mailchimp write (subscribed / not_subscribed / unsubscribed /
#: pending / cleaned / redacted / invalid / transactional / archived). Pending is an unconfirmed
#: double opt-in: not consent yet.
YES = frozenset({"yes", "y", "true", "t", "1", "on", "opt-in", "opted-in", "opted_in", "optin",
                 "subscribed", "confirmed_opt_in", "single_opt_in"})
NO = frozenset({"no", "n", "false", "f", "0", "off", "", "opt-out", "opted-out", "opted_out",
                "optout", "unsubscribed", "not_subscribed", "cleaned", "pending", "redacted",
                "invalid", "transactional", "archived", "none", "null"})

#: The settings every built-in source accepts for its mapping (declared once, listed by each).
MAPPING_SETTINGS: dict[str, Setting] = {
    "format": Setting("str", help="a preset for an export: shopify, mailchimp"),
    "columns": Setting("table", help="outreach field = the source's column for customers"),
    "event_columns": Setting("table", help="outreach field = the source's column for events"),
    "event_type": Setting("str", help="the type of every event when the events have no type column"),
    "event_customer": Setting("str", choices=("id", "email"), help="how events name their customer"),
    "consent_values": Setting("table", help="{ yes = [...], no = [...] }: consent words"),
    "consent_default": Setting("table", help="{ email = \"yes\" }: consent of a list without a column"),
    "tag_separator": Setting("str", help="what separates tags in a cell (default ;)"),
    "date_format": Setting("str", help="strftime layout of date attributes (\"%d/%m/%Y\")"),
    "phone_region": Setting("str", help="region of phone numbers written without +country code"),
}

_SAFE = re.compile(r"\W+")


def safe_name(column: str) -> str:
    """A name a template can use for a column: ``Total Spent`` → ``total_spent``, ``2FA`` → ``c_2fa``."""
    name = _SAFE.sub("_", column.strip().lower()).strip("_")
    if not name:
        return "column"
    return f"c_{name}" if name[0].isdigit() else name


def as_text(value: Any) -> str:
    """A SQL value as the text a CSV cell would hold: None is empty, times are ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


@dataclass(frozen=True)
class Column:
    """Which column fills a field: the first of ``names`` the source has; a date layout for it."""

    names: tuple[str, ...]
    date_format: str | None = None
    #: Set for a mapping written in outreach.toml: a column that is missing is then an error.
    declared: bool = False


@dataclass
class Mapping:
    """A source's mapping, checked (see the module docstring). Build it with :func:`from_settings`."""

    customer: dict[str, Column] = field(default_factory=dict)
    event: dict[str, Column] = field(default_factory=dict)
    yes: frozenset[str] = YES
    no: frozenset[str] = NO
    tag_separator: str = ";"
    date_format: str | None = None
    phone_region: str | None = None
    #: Consent keys every customer has (or is refused) when the source has no column for them.
    consent_default: dict[str, bool] = field(default_factory=dict)
    #: Consent keys a preset refuses for the whole file when it has one of these columns
    #: (Mailchimp's export of unsubscribed members carries UNSUB_TIME).
    consent_refused_by: dict[str, tuple[str, ...]] = field(default_factory=dict)
    event_type: str | None = None
    event_customer: str = "id"
    #: Consecutive event rows with the same id are one event (an order written one line per item).
    group_events: bool = False
    #: (item name column, quantity column) whose cells over a group make the ``items`` attribute.
    item_columns: tuple[str, str | None] | None = None
    #: Columns that, filled in on an event's first row, mean the event was undone (Shopify's
    #: ``Cancelled at``): such an event is no event, and rules never see it.
    event_cancelled_by: tuple[str, ...] = ()
    preset: str | None = None


def _column_spec(value: Any, key: str, declared: bool,
                 problems: list[SourceProblem], role: str) -> Column | None:
    if isinstance(value, str) and value.strip():
        return Column((value.strip(),), declared=declared)
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return Column(tuple(v.strip() for v in value), declared=declared)
    if isinstance(value, dict):
        column = value.get("column")
        fmt = value.get("date_format")
        unknown = sorted(set(value) - {"column", "date_format"})
        if unknown:
            problems.append(SourceProblem(key, f"unknown key(s) {', '.join(unknown)} (known: column, "
                                               "date_format)", role))
            return None
        if not isinstance(column, str) or not column.strip():
            problems.append(SourceProblem(key, "expected column = \"the source's column name\"", role))
            return None
        if fmt is not None:
            why = check_format(fmt) if isinstance(fmt, str) else "expected a strftime layout"
            if why:
                problems.append(SourceProblem(f"{key}.date_format", why, role))
                return None
        return Column((column.strip(),), fmt, declared)
    problems.append(SourceProblem(key, "expected the source's column name (a string), or "
                                       "{ column = \"...\", date_format = \"...\" }", role))
    return None


def _yes_no(text: Any, yes: frozenset[str], no: frozenset[str]) -> bool | None:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    return True if value in yes else False if value in no else None


def from_settings(config: TMapping[str, Any]) -> tuple[Mapping, list[SourceProblem]]:
    """The mapping a source's settings declare (over its preset's), and every problem with it."""
    from outreach.sources.presets import PRESETS

    problems: list[SourceProblem] = []
    preset_name = config.get("format")
    mapping = Mapping()
    if preset_name is not None:
        preset = PRESETS.get(preset_name)
        if preset is None:
            problems.append(SourceProblem("audience.format", f"unknown format {preset_name!r} "
                                          f"(formats: {', '.join(sorted(PRESETS))})"))
        else:
            mapping = preset()
    words = config.get("consent_values")
    if words is not None:
        yes, no = words.get("yes"), words.get("no")
        ok = all(isinstance(v, list) and all(isinstance(w, str) for w in v) for v in (yes, no))
        if not ok or set(words) - {"yes", "no"}:
            problems.append(SourceProblem("audience.consent_values",
                                          "expected { yes = [\"...\"], no = [\"...\"] }"))
        else:
            mapping.yes = frozenset(w.strip().lower() for w in yes)
            mapping.no = frozenset(w.strip().lower() for w in no) | {""}
            both = sorted(mapping.yes & mapping.no)
            if both:
                problems.append(SourceProblem("audience.consent_values",
                                              f"{', '.join(both)} cannot mean both yes and no"))
    for name, target, role in (("columns", mapping.customer, "customers"),
                               ("event_columns", mapping.event, "events")):
        table = config.get(name) or {}
        for key, value in table.items():
            where = f"audience.{name}.{key}"
            if role == "events" and key not in EVENT_FIELDS:
                problems.append(SourceProblem(where, f"unknown event field (fields: "
                                                     f"{', '.join(EVENT_FIELDS)}; every other "
                                                     "column is an attribute)", role))
                continue
            if role == "customers" and not (key in CUSTOMER_FIELDS or key.startswith("consent_")) \
                    and safe_name(key) != key:
                problems.append(SourceProblem(where, f"an attribute name must be usable in a "
                                                     f"template, such as {safe_name(key)!r}", role))
                continue
            spec = _column_spec(value, where, True, problems, role)
            if spec is not None:
                target[key] = spec
    for key, value in (config.get("consent_default") or {}).items():
        verdict = _yes_no(value, mapping.yes, mapping.no) if isinstance(value, (str, bool)) else None
        if verdict is None:
            problems.append(SourceProblem(f"audience.consent_default.{key}",
                                          f"expected yes or no, got {value!r}"))
        else:
            mapping.consent_default[key] = verdict
    if config.get("tag_separator") is not None:
        if not config["tag_separator"]:
            problems.append(SourceProblem("audience.tag_separator", "expected one or more characters"))
        else:
            mapping.tag_separator = config["tag_separator"]
    if config.get("date_format") is not None:
        why = check_format(config["date_format"])
        if why:
            problems.append(SourceProblem("audience.date_format", why))
        else:
            mapping.date_format = config["date_format"]
    region = config.get("phone_region")
    if region is not None:
        if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            problems.append(SourceProblem("audience.phone_region", f"expected a region code such "
                                                                   f"as \"US\" or \"AM\", got {region!r}"))
        else:
            mapping.phone_region = region.upper()
    if config.get("event_type") is not None:
        mapping.event_type = config["event_type"]
    if config.get("event_customer") is not None:
        mapping.event_customer = config["event_customer"]
    return mapping, problems


# ---------------------------------------------------------------------------------------- binding
@dataclass
class Binding:
    """What a reader made of a header: for ``outreach validate`` and for the checks before a run."""

    #: outreach field (``email``, ``consent sms``, ``attribute total_spent``) → the column it reads.
    mapped: dict[str, str] = field(default_factory=dict)
    #: attribute name → column, for every column kept as an attribute.
    attributes: dict[str, str] = field(default_factory=dict)
    #: Consent keys and where they come from (a column, a default, a preset's reading of the file).
    consents: dict[str, str] = field(default_factory=dict)
    problems: list[SourceProblem] = field(default_factory=list)


def _find(spec: Column | None, field_name: str, header: Sequence[str],
          by_safe: dict[str, int]) -> int | None:
    """The index of the column filling ``field_name``: as declared, else by its name."""
    if spec is not None:
        for name in spec.names:
            if name in header:
                return header.index(name)
        return None
    if field_name in header:
        return header.index(field_name)
    return by_safe.get(field_name)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def listed(header: Sequence[str]) -> str:
    """A header's columns for a message: the first 30, control characters written as escapes
    (a tab-separated header read with commas is one cell full of tabs)."""
    names = [_CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), h)
             for h in header[:30]]
    return (", ".join(names) + (", …" if len(header) > 30 else "")) or "none"


def _missing(spec: Column, header: Sequence[str], shown: str) -> str:
    names = " or ".join(repr(n) for n in spec.names)
    return f"{shown} has no column {names} (its columns: {listed(header)})"


class CustomerReader:
    """Rows of one header → :class:`Customer` objects (or the problem with a row)."""

    def __init__(self, mapping: Mapping, header: Sequence[str], shown: str,
                 dates: Iterable[str] = (), key: str = "audience.customers") -> None:
        self.mapping = mapping
        self.header = [h.strip() for h in header]
        self.width = len(self.header)
        binding = self.binding = Binding()
        header = self.header
        by_safe: dict[str, int] = {}
        for n, name in enumerate(header):
            by_safe.setdefault(safe_name(name), n)
        i: int | None
        used: set[int] = set()
        std: list[int | None] = []
        for name in CUSTOMER_FIELDS:
            spec = mapping.customer.get(name)
            i = _find(spec, name, header, by_safe)
            if i is None and spec is not None and spec.declared:
                binding.problems.append(SourceProblem(f"audience.columns.{name}",
                                                      _missing(spec, header, shown)))
            std.append(i)
            if i is not None:
                used.add(i)
                binding.mapped[name] = header[i]
        if std[0] is None and not any(p.key == "audience.columns.id" for p in binding.problems):
            binding.problems.append(SourceProblem(key, f"{shown} has no id column (its columns: "
                                                  f"{listed(header)}); name it "
                                                  "with [audience.columns] id = \"...\""))
        # Consent: declared columns, then columns named consent_<key>.
        consent_cols: dict[str, int] = {}
        for name, spec in mapping.customer.items():
            if name.startswith("consent_"):
                i = _find(spec, name, header, by_safe)
                if i is None:
                    if spec.declared:
                        binding.problems.append(SourceProblem(f"audience.columns.{name}",
                                                              _missing(spec, header, shown)))
                    continue
                consent_cols[name[len("consent_"):]] = i
        for i, name in enumerate(header):
            safe = safe_name(name)
            if i not in used and safe.startswith("consent_") and safe[8:] not in consent_cols \
                    and f"consent_{safe[8:]}" not in mapping.customer:
                consent_cols[safe[8:]] = i
        refused = {k for k, cols in mapping.consent_refused_by.items()
                   if any(c in header for c in cols)}
        for k in refused:
            consent_cols.pop(k, None)
        self.consent_keys = [k for k in consent_cols]
        self.consent_index = [consent_cols[k] for k in self.consent_keys]
        used.update(self.consent_index)
        for k, i in consent_cols.items():
            binding.consents[k] = f"column {header[i]!r}"
            binding.mapped[f"consent {k}"] = header[i]
        base: set[str] = set()
        for k, yes in mapping.consent_default.items():
            if k in consent_cols or k in refused:
                continue
            binding.consents[k] = f"consent_default ({'yes' if yes else 'no'} for every customer)"
            if yes:
                base.add(k)
        for k in refused:
            cols = [c for c in mapping.consent_refused_by[k] if c in header]
            binding.consents[k] = (f"no for every customer: a {mapping.preset} export with "
                                   f"{cols[0]} lists people who left the list")
        self.base_consent = frozenset(base)
        # Attributes: declared ones first (a rename, or a date layout), then every other column.
        attrs: list[tuple[str, int]] = []
        self.date_formats: dict[str, str | None] = {}
        taken = set(CUSTOMER_FIELDS) | {"name", "consent"}
        for name, spec in mapping.customer.items():
            if name in CUSTOMER_FIELDS or name.startswith("consent_"):
                continue
            i = _find(spec, name, header, {})
            if i is None:
                if spec.declared:
                    binding.problems.append(SourceProblem(f"audience.columns.{name}",
                                                          _missing(spec, header, shown)))
                continue
            if i in used:
                continue
            used.add(i)
            attrs.append((name, i))
            taken.add(name)
            if spec.date_format:
                self.date_formats[name] = spec.date_format
        for i, column in enumerate(header):
            if i in used:
                continue
            name = safe_name(column)
            if name in taken:
                binding.problems.append(SourceProblem(
                    key, f"{shown}: column {listed([column])!r} would be the attribute {name!r}, which "
                         "another column already fills; rename one in [audience.columns]"))
                continue
            taken.add(name)
            attrs.append((name, i))
        for name, i in attrs:
            binding.attributes[name] = header[i]
        for name in dates:
            if name in binding.attributes:
                self.date_formats.setdefault(name, None)
        self._parse = _row_parser(std, attrs)
        self._consent_of: dict[tuple[str, ...], frozenset[str] | str] = {}
        self._tags_of: dict[str, tuple[str, ...]] = {}
        self._phone_of: dict[str, str] = {}
        self._dates_of: dict[tuple[str, str], str | DateError] = {}
        self._zones: dict[str, bool] = {}
        #: Problems of the rows read since the caller last cleared it.
        self.issues: list[str] = []

    @property
    def problems(self) -> list[SourceProblem]:
        """What makes this header unusable (a declared column missing, no id)."""
        return self.binding.problems

    def _consent(self, cells: tuple[str, ...]) -> frozenset[str] | str:
        found = self._consent_of.get(cells)
        if found is not None:
            return found
        consent = set(self.base_consent)
        bad = None
        for key, raw in zip(self.consent_keys, cells):
            verdict = _yes_no(raw, self.mapping.yes, self.mapping.no)
            if verdict:
                consent.add(key)
            elif verdict is None:
                column = self.header[self.consent_index[self.consent_keys.index(key)]]
                bad = f"{column} is {raw!r}; expected yes or no"
        result: frozenset[str] | str = bad if bad else frozenset(consent)
        if len(self._consent_of) > 10_000:
            self._consent_of.clear()
        self._consent_of[cells] = result
        return result

    def _tags(self, cell: str) -> tuple[str, ...]:
        tags = self._tags_of.get(cell)
        if tags is None:
            sep = self.mapping.tag_separator
            parts: Iterable[str] = (next(csv.reader([cell], skipinitialspace=True), [])
                                    if sep == "," else cell.split(sep))
            tags = tuple(t.strip() for t in parts if t.strip())
            if len(self._tags_of) > 10_000:
                self._tags_of.clear()
            self._tags_of[cell] = tags
        return tags

    def _phone(self, raw: str) -> str:
        """A national number in the source's phone region as E.164; anything else as it is (the
        address step of the policy chain judges it)."""
        if raw.startswith("+") or not self.mapping.phone_region:
            return raw
        known = self._phone_of.get(raw)
        if known is None:
            try:
                number = phonenumbers.parse(raw, self.mapping.phone_region)
                known = (phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                         if phonenumbers.is_valid_number(number) else raw)
            except phonenumbers.NumberParseException:
                known = raw
            if len(self._phone_of) > 100_000:
                self._phone_of.clear()
            self._phone_of[raw] = known
        return known

    def _valid_zone(self, name: str) -> bool:
        known = self._zones.get(name)
        if known is None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(name)
                known = True
            except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a folder: OSError
                known = False
            self._zones[name] = known
        return known

    def read(self, row: Sequence[str]) -> Customer | None:
        """The customer of one row, or None when the row is blank or cannot be used.

        What is wrong with a row is appended to :attr:`issues` (the caller reports and clears
        it): a row that cannot be used gives None; a date attribute that cannot be read is left
        out while the customer is kept.
        """
        report = self.issues.append
        if len(row) != self.width:
            if not row or (len(row) == 1 and not row[0].strip()):
                return None
            report(f"expected {self.width} columns, found {len(row)}")
            return None
        (cid, first, last, email, phone, tz, locale, tags), attributes = self._parse(row)
        if not cid:
            if self.width == 1 or not any(c.strip() for c in row):
                return None
            report("id is empty")
            return None
        if tz and not self._valid_zone(tz):
            report(f"timezone {tz!r} is not an IANA time zone (such as Europe/London)")
            return None
        consent = self._consent(tuple(row[i] for i in self.consent_index)) \
            if self.consent_index else self.base_consent
        if isinstance(consent, str):
            report(consent)
            return None
        for name, fmt in self.date_formats.items():
            value = attributes.get(name)
            if value:
                parsed = self._dates_of.get((name, value))
                if parsed is None:
                    try:
                        parsed = parse_date(value, fmt or self.mapping.date_format)
                    except DateError as exc:
                        parsed = exc
                    if len(self._dates_of) > 100_000:
                        self._dates_of.clear()
                    self._dates_of[(name, value)] = parsed
                if isinstance(parsed, DateError):
                    report(f"{self.binding.attributes[name]}: {parsed}; the customer is kept "
                           f"without {name}")
                    attributes[name] = ""
                else:
                    attributes[name] = parsed
        if phone:
            phone = self._phone(phone)
        return Customer(cid, first, last, email or None, phone or None, tz, locale or "en",
                        consent, self._tags(tags) if tags else (), attributes)


def describe(readers: TMapping[str, tuple[str, "CustomerReader | EventReader | None"]]
             ) -> SourceDescription:
    """What a source's readers made of its data, for ``outreach validate``: role → (where it is
    read from, the role's reader, or None when the source has no such role)."""
    out = SourceDescription()
    for role, (origin, reader) in readers.items():
        if reader is None:
            continue
        out.origins[role] = origin
        out.mapped[role] = dict(reader.binding.mapped)
        out.attributes[role] = dict(reader.binding.attributes)
        if isinstance(reader, CustomerReader):
            out.consents = dict(reader.binding.consents)
    return out


def columns_of(customers: "CustomerReader | None",
               events: "EventReader | None") -> tuple[set[str] | None, set[str] | None]:
    """The names customers and events carry (what :meth:`Source.columns` answers) from readers."""
    std = {"name", "consent", *CUSTOMER_FIELDS}
    cust = None if customers is None else set(customers.binding.attributes) | std
    ev = set(EVENT_FIELDS) | (set(events.binding.attributes) if events is not None else set())
    return cust, ev


def email_index(customers: Iterable[Customer]) -> dict[str, str]:
    """Email (lower case) → customer id, for events that name their customer by email (Shopify's
    orders): the first customer with an address keeps it. Held in memory, one entry a customer."""
    ids: dict[str, str] = {}
    for c in customers:
        if c.email:
            ids.setdefault(c.email.strip().lower(), c.id)
    return ids


def _row_parser(columns: list[int | None], extra: list[tuple[str, int]]) -> Callable[..., Any]:
    """A function from a row to (its standard cells, stripped, in field order; its attributes).

    Generated for the header (as namedtuple does), so a row costs one call of straight-line code
    rather than a loop per cell. Every other column is an attribute, an empty cell an empty string:
    a filter such as customer.tier != 'gold' must see the customer without a tier.
    """
    cells = ", ".join("''" if i is None else f"row[{int(i)}].strip()" for i in columns)
    attrs = ", ".join(f"{name!r}: row[{int(i)}].strip()" for name, i in extra)
    namespace: dict[str, Any] = {}
    exec(f"def parse(row):\n    return ({cells}), {{{attrs}}}\n", namespace)  # noqa: S102
    return namespace["parse"]


_OFFSET_AFTER_SPACE = re.compile(r"\s+([+-]\d{2}):?(\d{2})\Z")


def parse_time(text: str, tz: tzinfo) -> datetime:
    """An event time: ISO 8601, or the ``2026-11-20 14:30:00 +0400`` exports write; in ``tz``
    when it has no offset. ValueError when it is neither."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fixed = _OFFSET_AFTER_SPACE.sub(r"\1:\2", text)
        if fixed == text:
            raise
        when = datetime.fromisoformat(fixed)
    return when if when.tzinfo is not None else when.replace(tzinfo=tz)


@dataclass(slots=True)
class EventRow:
    """One usable event row: its fields, and the cells its attributes come from."""

    id: str
    customer_id: str
    type: str
    time: datetime
    cells: list[str]


class EventReader:
    """Rows of one events header → :class:`EventRow` (or the problem with a row)."""

    def __init__(self, mapping: Mapping, header: Sequence[str], shown: str, tz: tzinfo,
                 key: str = "audience.events") -> None:
        self.mapping = mapping
        self.header = [h.strip() for h in header]
        self.width = len(self.header)
        self.tz = tz
        binding = self.binding = Binding()
        header = self.header
        by_safe: dict[str, int] = {}
        for n, name in enumerate(header):
            by_safe.setdefault(safe_name(name), n)
        i: int | None
        index: dict[str, int | None] = {}
        for name in EVENT_FIELDS:
            spec = mapping.event.get(name)
            i = _find(spec, name, header, by_safe)
            if i is None and spec is not None and spec.declared:
                binding.problems.append(SourceProblem(f"audience.event_columns.{name}",
                                                      _missing(spec, header, shown), "events"))
            index[name] = i
            if i is not None:
                binding.mapped[name] = header[i]
        needed = [n for n in EVENT_FIELDS if index[n] is None
                  and not (n == "type" and mapping.event_type)
                  and not any(p.key == f"audience.event_columns.{n}" for p in binding.problems)]
        if needed:
            binding.problems.append(SourceProblem(
                key, f"{shown} lacks the column(s) {', '.join(needed)} (its columns: "
                     f"{listed(header)}); name them with [audience.event_columns]",
                "events"))
        if index["type"] is None and mapping.event_type:
            binding.mapped["type"] = f"(every event is a {mapping.event_type!r})"
        self.index = index
        used = {i for i in index.values() if i is not None}
        self.extra = [(safe_name(name), i) for i, name in enumerate(header) if i not in used]
        for name, i in self.extra:
            binding.attributes[name] = header[i]
        self.cancelled = [header.index(c) for c in mapping.event_cancelled_by if c in header]
        if self.cancelled:
            binding.mapped["cancelled"] = ", ".join(header[i] for i in self.cancelled)
        self.items = None
        if mapping.item_columns and mapping.item_columns[0] in header:
            name_col, qty_col = mapping.item_columns
            self.items = (header.index(name_col),
                          header.index(qty_col) if qty_col and qty_col in header else None)
            binding.attributes["items"] = f"{name_col} of every line of the event"

    @property
    def problems(self) -> list[SourceProblem]:
        return self.binding.problems

    def rows(self, records: Iterable[tuple[int, Sequence[str]]], types: frozenset[str],
             report: Callable[[int, str], None]) -> Iterator[EventRow]:
        """The usable events of ``records`` ((line, cells) pairs) whose type is in ``types`` (all
        when empty); ``report(line, message)`` for each row that cannot be used."""
        rows = self._single(records, types, report)
        return self._grouped(rows) if self.mapping.group_events else rows

    def _single(self, records: Iterable[tuple[int, Sequence[str]]], types: frozenset[str],
                report: Callable[[int, str], None]) -> Iterator[EventRow]:
        i_id, i_cust, i_type, i_time = (self.index[n] for n in EVENT_FIELDS)
        fixed_type = self.mapping.event_type or ""
        width, tz = self.width, self.tz
        group = self.mapping.group_events
        last_id = None
        for line, row in records:
            if len(row) != width:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                report(line, f"expected {width} columns, found {len(row)}")
                continue
            etype = row[i_type].strip() if i_type is not None else fixed_type
            if types and etype not in types:
                continue
            eid = row[i_id].strip()  # type: ignore[index]
            if group and eid and eid == last_id:
                # A further line of the event before (an order's next item): its cells only.
                yield EventRow(eid, "", etype, _EPOCH, list(row))
                continue
            last_id = eid
            if self.cancelled and any(row[i].strip() for i in self.cancelled):
                continue  # undone (a cancelled order): its further lines are dropped with it
            cid = row[i_cust].strip()  # type: ignore[index]
            if not eid or not cid:
                report(line, f"{self.header[i_id]} and {self.header[i_cust]} must not be empty")  # type: ignore[index]
                continue
            raw_time = row[i_time].strip()  # type: ignore[index]
            try:
                when = parse_time(raw_time, tz)
            except ValueError:
                report(line, f"{self.header[i_time]} {raw_time!r} is not an ISO 8601 time such "  # type: ignore[index]
                             "as 2026-11-20T14:30:00+04:00")
                continue
            yield EventRow(eid, cid, etype, when, list(row))

    def _grouped(self, rows: Iterator[EventRow]) -> Iterator[EventRow]:
        """One event per run of rows with the same id: the first row's fields and attributes,
        and the ``items`` of every row (``2 × Sourdough loaf; 1 × Lavash``)."""
        current: EventRow | None = None
        items: list[str] = []
        for row in rows:
            if current is not None and row.id == current.id and row.time is _EPOCH:
                items.append(self._item(row.cells))
                continue
            if current is not None:
                yield self._finish(current, items)
            if row.time is _EPOCH:
                current = None  # a continuation whose first line was not usable (reported)
                continue
            current, items = row, [self._item(row.cells)]
        if current is not None:
            yield self._finish(current, items)

    def _item(self, cells: Sequence[str]) -> str:
        if self.items is None:
            return ""
        name_i, qty_i = self.items
        name = cells[name_i].strip()
        qty = cells[qty_i].strip() if qty_i is not None else ""
        return f"{qty} × {name}" if qty and name else name

    def _finish(self, row: EventRow, items: list[str]) -> EventRow:
        if self.items is not None:
            row.cells.append("; ".join(i for i in items if i))
        return row

    def attributes(self, cells: Sequence[str]) -> dict[str, Any]:
        """The attributes of an event's cells (empty cells left out)."""
        out = {name: cells[i].strip() for name, i in self.extra if cells[i].strip()}
        if self.items is not None and len(cells) > self.width and cells[-1]:
            out["items"] = cells[-1]
        return out


_EPOCH = datetime(1970, 1, 1)
