"""What the event-driven rules (thank_you, apology) share: one message per event, in a time window."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from outreach.audience import Profile
from outreach.rule import Candidate, EventNeeds, Rule, SelectContext


class EventRule(Rule):
    """One message per event of the configured types, ``delay`` after it, within ``within``.

    Events older than the window are never written about: a thank-you two weeks late is worse than
    none, and a ledger imported into a new deployment must not greet its whole history.
    """

    #: The parameter naming the event types.
    types_param = "event"

    def _types(self) -> frozenset[str]:
        return frozenset(self.config[self.types_param])

    def _delay(self) -> timedelta:
        return self.config.get("delay") or timedelta(0)

    def event_needs(self, now: datetime) -> EventNeeds:
        return EventNeeds(types=self._types(), since=now - self._delay() - self.config["within"])

    def new_events_suffice(self) -> bool:
        """Without a delay an event is due when it happens, so the new events are all a run
        needs; with one, the events that become due now happened ``delay`` ago, before the last
        run's cursor, and need a full pass."""
        return not self._delay()

    def check(self) -> list[tuple[str, str]]:
        if not self.config[self.types_param]:
            return [(self.types_param, "expected at least one event type")]
        return []

    def select(self, profiles: Sequence[Profile], ctx: SelectContext) -> Iterable[Candidate]:
        types, delay, window = self._types(), self._delay(), self.config["within"]
        most = self.config.get("max_rating")
        for p in profiles:
            for event in p.events:
                if event.type not in types:
                    continue
                if most is not None and not _rated_at_most(event.attributes.get("rating"), most):
                    continue
                due = event.time + delay
                # Decided when due, not ahead: consent and suppressions are those of that moment.
                if due <= ctx.now <= due + window:
                    yield Candidate(f"{self.campaign}:{event.id}", p.customer,
                                    {"event": event.template_view()})

    def sample_variables(self, now: datetime, sample: Mapping[str, Any]) -> dict[str, Any]:
        given = sample.get("event", {}) if isinstance(sample.get("event"), dict) else {}
        event = {"id": "e-sample", "type": sorted(self._types())[0] if self._types() else "event",
                 "time": now.isoformat()}
        event.update(given)
        return {"event": event}


def _rated_at_most(rating: Any, most: int) -> bool:
    """Whether an event's ``rating`` (a number, or its text from a CSV) is at most ``most``; an
    event without a readable rating is not."""
    try:
        return float(rating) <= most
    except (TypeError, ValueError):
        return False
