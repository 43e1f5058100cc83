"""Incremental planning: an event-only run reads the new events, not the whole audience.

A cron run every few minutes finds, most of the time, only event-driven campaigns due (a
thank-you for each purchase). Planning them needs the events that arrived since the last run and
the customers those events name, not a pass over every customer. So the ledger keeps, per audience
source and event stream, a cursor (``event_cursors``): where the last run stopped reading. A run
plans incrementally when all of this holds:

* it is a real run of every campaign (not ``--dry-run``/``outreach plan``, not ``--campaign``,
  not a planning shard of the workers);
* every due campaign is event-driven (no ``schedule``) and its rule needs nothing but new events
  (:meth:`Rule.new_events_suffice`: ``thank_you`` and ``apology`` without a ``delay``);
* a cursor is stored and still holds: the source accepts it (:meth:`Source.cursor_usable`: a CSV
  events file that was rewritten or rotated rather than appended to does not), no event-driven
  campaign was added or changed since (their content hashes are kept with the cursor), the last
  full pass is less than ``full_pass_every`` old (a day by default), the clock did not go back,
  and no event the last full pass saw dated in the future has come due since;
* the messages waiting to be sent are few enough for their consent to be re-checked by id
  (:data:`outreach.recheck.WAITING_IN_MEMORY`).

Otherwise the run makes a full pass, as it always did, and stores a cursor taken just before it
read the events. Whatever was read twice is harmless: dedupe keys make re-planning a no-op.

An incremental run reads the events after the cursor (:meth:`Source.events_with_cursors`), looks
up by id the customers they name and those with waiting messages (:meth:`Source.customers_by_ids`),
re-checks the waiting messages' consent, and plans the new events' customers through the same
policy chain, caps and dedupe as a full pass. The messages and refusals it decides are recorded
in the same transaction as the cursor past their events (:meth:`Ledger.record_planned`), so a
crash leaves the cursor behind what was recorded, never ahead. An event dated after the run's
``now`` is planned when it happens: the cursor stops before it.

What only a full pass reconciles (daily, by default): a customer who was refused (no consent, a
cap, a ``where`` filter) and changed before the event's window closed; an event whose customer was
not yet in the customers file when the event was read.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Sequence, cast

from outreach.audience import Customer, Event, EventCursor, Profile, Source

if TYPE_CHECKING:
    from outreach.config import Campaign
    from outreach.ledger import Ledger
    from outreach.planner import Planner

#: The stream of a source's events (one per source today).
STREAM = "events"


def _campaigns_hash(planner: "Planner") -> dict[str, str]:
    """The content hash of each event-driven campaign: a change to one calls for a full pass."""
    return {c.name: c.version for c in planner.project.campaigns.values() if c.schedule is None}


def _applies(planner: "Planner") -> bool:
    """Whether this run keeps a cursor at all: a real run of every campaign, not a shard."""
    return not planner.dry_run and planner.shard is None and planner._given_due is None \
        and planner.only is None


def _rule_reason(campaign: "Campaign", now: datetime) -> str | None:
    """Why a due campaign needs a full pass, or None when its new events suffice."""
    if campaign.schedule is not None:
        return f"scheduled campaign {campaign.name!r} is due"
    rule = campaign.rule
    if not rule.new_events_suffice():
        return f"the rule of {campaign.name!r} needs more than the new events"
    needs = rule.event_needs(now)
    if needs is None or not needs.types or needs.latest:
        return f"the rule of {campaign.name!r} needs more than the new events"
    return None


class _HeldWrites:
    """The ledger as the planner sees it during an incremental run: what it plans is held and
    written with the cursor (:meth:`Ledger.record_planned`), every other call goes through."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger
        self.messages: list[dict[str, Any]] = []
        self.skips: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def insert_messages(self, rows: Sequence[dict[str, Any]]) -> int:
        self.messages.extend(rows)
        return len(rows)

    def record_skips(self, rows: Sequence[dict[str, Any]]) -> None:
        self.skips.extend(rows)

    def flush(self, cursor: tuple[str, str, dict[str, Any] | None] | None = None) -> None:
        self._ledger.record_planned(self.messages, self.skips, cursor)
        self.messages, self.skips = [], []


def plan_incrementally(planner: "Planner", due: Sequence[tuple["Campaign", datetime | None]]) -> bool:
    """Plan this run from the new events alone when it can (see the module); False leaves it to
    the full pass (whose reason is in the run report's ``planning``)."""
    if not due or not _applies(planner):
        return False
    now = planner.now
    reason = next((r for r in (_rule_reason(c, now) for c, _ in due) if r), None)
    source = planner.project.source()
    ident = state = cursor = None
    if reason is None:
        ident = source.cursor_identity()
        state = planner.ledger.event_cursor(ident, STREAM)
        reason = _state_reason(planner, source, state)
    if reason is not None:
        planner.report.planning = {"mode": "full", "reason": reason}
        return False
    assert state is not None and ident is not None
    cursor = EventCursor.from_json(state["cursor"])
    recheck = planner._recheck()
    try:
        recheck.start()
        waiting = recheck.waiting_customers
        if waiting is None:
            planner.report.planning = {"mode": "full", "reason": "many messages wait: their "
                                       "consent is re-checked by a pass over the audience"}
            return False
        _run(planner, due, source, ident, state, cursor, recheck, waiting)
    finally:
        recheck.close()
    return True


def _state_reason(planner: "Planner", source: Source, state: dict[str, Any] | None) -> str | None:
    """Why the stored cursor cannot be used, or None."""
    now = planner.now
    if state is None:
        return "no event cursor yet"
    try:
        cursor = EventCursor.from_json(state["cursor"])
        full_at = datetime.fromisoformat(state["full_pass_at"])
        last_now = datetime.fromisoformat(state["now"])
        replan = state.get("replan_at")
        replan_at = datetime.fromisoformat(replan) if replan else None
    except (KeyError, TypeError, ValueError):
        return "the event cursor is unreadable"
    if state.get("campaigns") != _campaigns_hash(planner):
        return "an event-driven campaign was added, removed or changed"
    if now < last_now:
        return "the run's time is before the last run's"
    if now >= full_at + planner.project.full_pass_every:
        return "the periodic full pass is due (full_pass_every)"
    if replan_at is not None and now >= replan_at:
        return "an event dated after the last full pass has come due"
    if not source.cursor_usable(cursor):
        return "the events were rewritten, not appended to"
    return None


def _run(planner: "Planner", due: Sequence[tuple["Campaign", datetime | None]], source: Source,
         ident: str, state: dict[str, Any], cursor: EventCursor, recheck: Any,
         waiting: list[str]) -> None:
    now, ledger, report = planner.now, planner.ledger, planner.report
    for campaign, _ in due:
        planner._versions[campaign.name] = ledger.store_version(campaign.name, campaign.version,
                                                                campaign.content)
    needs = [c.rule.event_needs(now) for c, _ in due]
    types = frozenset().union(*(n.types for n in needs if n))
    dated = [n.since for n in needs if n and n.since is not None]
    since = min(dated) if len(dated) == len(needs) else None
    events: dict[str, list[Event]] = {}
    last = None
    held_back = False  # an event dated after now: the cursor stays before it
    read = 0
    for event, after in source.events_with_cursors(cursor, types, planner._row_problem,
                                                   overlap=source.events_overlap()):
        if event is not None:
            read += 1
            if event.time > now:
                held_back = True
                continue
            if event.type in types and (since is None or event.time >= since):
                events.setdefault(event.customer_id, []).append(event)
        if not held_back:
            last = after
    # Events customers made through outreach (a feedback rating) are in the ledger, not in the
    # source's stream: read within the rules' window (a second read plans nothing twice).
    for event in planner.own_events(types, since):
        events.setdefault(event.customer_id, []).append(event)
    for evs in events.values():
        evs.sort(key=lambda e: e.time)
    wanted = list(dict.fromkeys([*events, *waiting]))
    source.index_customers = True
    size = planner.project.batch_size
    batches: list[list[Customer]] = []
    seen: set[str] = set()
    batch: list[Customer] = []
    for customer in source.customers_by_ids(wanted, planner._row_problem):
        if customer.id in seen:
            continue  # listed twice: the first row counts, as in a pass
        seen.add(customer.id)
        batch.append(customer)
        if len(batch) >= size:
            batches.append(batch)
            batch = []
    if batch or not batches:
        batches.append(batch)
    report.planning = {"mode": "incremental", "events": read, "customers": len(seen)}
    if planner.progress:
        planner.progress(0, len(seen))
    held = _HeldWrites(ledger)
    planner.ledger = cast("Ledger", held)
    try:
        for n, customers in enumerate(batches, 1):
            planner.consent_changes(customers)  # before the re-check and the policy chain
            recheck.batch(customers, planner._left)
            profiles = [Profile(c, events[c.id]) for c in customers if c.id in events]
            if profiles:
                planner._plan_batch(profiles, list(due))
            if n < len(batches):
                held.flush()
        recheck.finish()
        failed = any(report.campaign(c.name).error for c, _ in due)
        new_state = None
        if not failed:
            new_state = dict(state, now=now.isoformat())
            if last is not None:
                new_state["cursor"] = last.as_json()
        held.flush((ident, STREAM, new_state) if new_state is not None else None)
    finally:
        planner.ledger = ledger
    if planner.progress:
        planner.progress(len(seen), len(seen))


class FullPass:
    """The cursor a full pass stores once it is done: taken before it reads the events."""

    def __init__(self, planner: "Planner", source: Source, ident: str,
                 snapshot: EventCursor | None) -> None:
        self.planner, self.source, self.ident, self.snapshot = planner, source, ident, snapshot

    @classmethod
    def begin(cls, planner: "Planner", source: Source) -> "FullPass | None":
        """Before the pass reads anything: None when the run keeps no cursor."""
        if not _applies(planner):
            return None
        source.horizon = planner.now
        return cls(planner, source, source.cursor_identity(), source.snapshot_cursor(planner.now))

    def finish(self, due: Sequence[tuple["Campaign", datetime | None]]) -> None:
        """After every batch was recorded: store the snapshot (or forget the cursor when a
        campaign failed, so the next run passes over everything again)."""
        planner = self.planner
        if not planner.report.planning:
            planner.report.planning = {"mode": "full", "reason": "a campaign that needs the "
                                       "whole audience is due"}
        failed = any(planner.report.campaign(c.name).error for c, _ in due)
        state: dict[str, Any] | None = None
        if self.snapshot is not None and not failed:
            now = planner.now.isoformat()
            after = self.source.first_after_horizon
            state = {"cursor": self.snapshot.as_json(), "full_pass_at": now, "now": now,
                     "campaigns": _campaigns_hash(planner),
                     "replan_at": after.isoformat() if after is not None else None}
        planner.ledger.record_planned([], [], (self.ident, STREAM, state))

