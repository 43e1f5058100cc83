"""What a rule plugin is: it decides who a campaign is for, and under which dedupe key.

A rule sees batches of customer profiles and yields :class:`Candidate` objects. It does not check
consent, caps or quiet hours (the policy chain does that for every rule alike) and it does not send.
Its one hard duty is the dedupe key: the same real-world reason to write (this purchase, this
newsletter occurrence, this birthday) must give the same key on every run, so re-planning is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

from outreach.audience import Customer, Profile
from outreach.settings import Setting


@dataclass(frozen=True)
class EventNeeds:
    """The events a rule wants attached to each profile."""

    #: Event types whose events are listed in ``Profile.events``.
    types: frozenset[str] = frozenset()
    #: Oldest event time wanted (None: all of them).
    since: datetime | None = None
    #: Event types whose latest time is wanted in ``Profile.latest`` (activity for reminders).
    latest: frozenset[str] = frozenset()


@dataclass
class Candidate:
    """A customer a rule wants to write to, before any policy has had its say."""

    #: Stable dedupe key: campaign + event id, or campaign + occurrence + customer.
    key: str
    customer: Customer
    #: Variables for the templates besides ``customer`` (``event``, ``occurrence``...).
    variables: dict[str, Any] = field(default_factory=dict)
    #: Earliest send time (a feedback request three days after a purchase).
    not_before: datetime | None = None


@dataclass(frozen=True)
class PastMessage:
    """A message this campaign already planned for a customer (any state), for rules that repeat."""

    key: str
    planned_at: datetime
    state: str


@dataclass
class SelectContext:
    """What a rule may know while selecting."""

    campaign: str
    #: The instant of the run (``--now``), timezone-aware UTC.
    now: datetime
    #: The deployment's time zone.
    tz: ZoneInfo
    #: The schedule occurrence being served (None for event-driven campaigns).
    occurrence: datetime | None = None
    #: This campaign's earlier messages per customer id, loaded set-wise for the batch when the
    #: rule sets ``needs_history``.
    history: Mapping[str, list[PastMessage]] = field(default_factory=dict)
    #: Reads this campaign's earlier messages of the given customers (what :meth:`load_history`
    #: calls); set by the planner.
    history_loader: Callable[[Sequence[str]], Mapping[str, list[PastMessage]]] | None = \
        field(default=None, repr=False)

    def load_history(self, customer_ids: Sequence[str]) -> Mapping[str, list[PastMessage]]:
        """This campaign's earlier messages (any state) of ``customer_ids``, in one set-wise query.

        For a rule that needs the history of a few of a batch's customers only (a win-back reads
        it for the customers who went quiet, not for everyone): call it once per batch with those
        ids, instead of setting ``needs_history``, which loads it for the whole batch.
        """
        if not customer_ids or self.history_loader is None:
            return {}
        return self.history_loader(customer_ids)

    def local_now(self, customer: Customer) -> datetime:
        """Now, on the customer's own clock."""
        return self.now.astimezone(customer_zone(customer, self.tz))


def customer_zone(customer: Customer, default: ZoneInfo) -> ZoneInfo:
    """The customer's time zone, or the deployment's when theirs is unknown."""
    if customer.timezone:
        try:
            return ZoneInfo(customer.timezone)
        except (KeyError, ValueError, OSError):  # a region ("America") is a folder: OSError
            pass
    return default


class Rule:
    """Base class of rules. Subclass it, declare ``name`` and ``params``, implement :meth:`select`."""

    #: The name ``rule = "..."`` uses in a campaign file.
    name: ClassVar[str] = ""
    #: Keys accepted in the campaign's ``[params]`` table.
    params: ClassVar[Mapping[str, Setting]] = {}
    #: True when the rule only makes sense on a cron schedule (a newsletter).
    requires_schedule: ClassVar[bool] = False
    #: Category and priority a campaign gets unless it says otherwise.
    default_category: ClassVar[str] = "marketing"
    default_priority: ClassVar[int] = 0
    #: True when :meth:`select` reads ``ctx.history`` (loaded for every customer of the batch);
    #: a rule that needs it for a few customers calls ``ctx.load_history`` with those instead.
    needs_history: ClassVar[bool] = False
    #: Parameters whose value names a customer attribute the rule reads, with what it holds
    #: (``"date"`` or ``"text"``): ``{"before": "date"}``. Declared, not discovered, so the core
    #: can tell before a run that the audience has no such attribute, and read dates for it.
    attribute_params: ClassVar[Mapping[str, str]] = {}

    def __init__(self, campaign: str, params: Mapping[str, Any]) -> None:
        self.campaign = campaign
        #: The campaign's validated ``[params]`` (``params`` on the class declares what is accepted).
        self.config: dict[str, Any] = dict(params)

    def check(self) -> list[tuple[str, str]]:
        """Problems across parameters, as (key under ``params``, message)."""
        return []

    def attributes(self) -> dict[str, str]:
        """The customer attributes this campaign's rule reads (name → ``date`` or ``text``): the
        values of its :attr:`attribute_params` that are set."""
        out: dict[str, str] = {}
        for param, kind in self.attribute_params.items():
            name = self.config.get(param)
            if isinstance(name, str) and name:
                out[name] = kind
        return out

    def event_needs(self, now: datetime) -> EventNeeds | None:
        """Which events the rule wants on each profile at ``now``; None for none."""
        return None

    def new_events_suffice(self) -> bool:
        """True when a run may show this rule only the customers of events new since the last
        run, each profile with only those events: :meth:`select` writes about the events in
        ``Profile.events`` alone, each due as soon as it happened (no delay), and about nothing
        else. Event-driven campaigns whose rules say so plan incrementally
        (:mod:`outreach.incremental`); the others need the whole audience every run."""
        return False

    def select(self, profiles: Sequence[Profile], ctx: SelectContext) -> Iterable[Candidate]:
        """Yield a candidate for each customer of the batch this campaign is for, right now."""
        raise NotImplementedError

    def sample_variables(self, now: datetime, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Template variables besides ``customer`` for a sample render (``outreach validate``).

        ``sample`` is the campaign's ``[sample]`` table, so a campaign can give the event attributes
        its templates use.
        """
        return {}


_UTC = ZoneInfo("UTC")


def key_time(value: datetime) -> str:
    """A compact, stable rendering of an instant for dedupe keys (UTC, seconds)."""
    u = value.astimezone(_UTC)
    return f"{u.year}{u.month:02d}{u.day:02d}T{u.hour:02d}{u.minute:02d}{u.second:02d}Z"


def within(value: datetime, start: datetime, length: timedelta) -> bool:
    """True when ``start <= value <= start + length``."""
    return start <= value <= start + length
