"""reminder: bring back customers who went quiet, or remind them before a date that matters.

Two forms, one per campaign:

* ``inactive_for = "90d"``: customers whose latest ``activity`` event (purchase) is older than that;
  again every ``repeat_after`` while they stay quiet, at most ``max_times`` per quiet spell. A new
  purchase starts a new spell, so the count starts again.
* ``before = "club_renews_on"``: customers whose date attribute falls within ``lead`` from today,
  once per date.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from outreach import hookimpl
from outreach.audience import Profile
from outreach.rule import Candidate, EventNeeds, Rule, SelectContext, key_time
from outreach.settings import Setting


def parse_date(value: Any) -> date | None:
    """A date attribute as written in the audience (``2026-12-01`` or a full ISO time), or None."""
    if isinstance(value, date):
        return value if not isinstance(value, datetime) else value.date()
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None


class Reminder(Rule):
    """Inactivity win-back, or a reminder ahead of a date attribute."""

    name = "reminder"
    default_priority = 30
    attribute_params = {"before": "date"}
    params = {
        "inactive_for": Setting("duration", minimum=60, help="quiet this long before a reminder"),
        "activity": Setting("list", default=["purchase"], help="event types that count as activity"),
        "repeat_after": Setting("duration", minimum=60, help="remind again after this long"),
        "max_times": Setting("int", default=1, minimum=1, help="reminders per quiet spell"),
        "before": Setting("str", help="a date attribute of the customer (renewal, appointment)"),
        "lead": Setting("duration", default=timedelta(days=7), help="how long before the date"),
    }

    def check(self) -> list[tuple[str, str]]:
        inactive, before = self.config.get("inactive_for"), self.config.get("before")
        if (inactive is None) == (before is None):
            return [("inactive_for", "set either inactive_for (a win-back) or before (a date "
                                     "attribute), not both and not neither")]
        if before is not None and self.config.get("repeat_after") is not None:
            return [("repeat_after", "applies to inactive_for reminders only")]
        if self.config["max_times"] > 1 and self.config.get("repeat_after") is None and inactive:
            return [("repeat_after", "is needed when max_times is more than 1")]
        return []

    def event_needs(self, now: datetime) -> EventNeeds | None:
        if self.config.get("inactive_for") is None:
            return None
        return EventNeeds(latest=frozenset(self.config["activity"]))

    def select(self, profiles: Sequence[Profile], ctx: SelectContext) -> Iterable[Candidate]:
        if self.config.get("before"):
            yield from self._before(profiles, ctx)
        else:
            yield from self._inactive(profiles, ctx)

    def _inactive(self, profiles: Sequence[Profile], ctx: SelectContext) -> Iterable[Candidate]:
        quiet, every, most = (self.config["inactive_for"], self.config.get("repeat_after"),
                              self.config["max_times"])
        activity, now = self.config["activity"], ctx.now
        quiet_ones: list[tuple[Profile, datetime]] = []
        for p in profiles:
            latest = p.latest
            if not latest:
                continue  # never active: nothing to win back
            if len(latest) == 1:  # the usual case: one activity type (no list, no max)
                [(kind, last)] = latest.items()
                if kind not in activity:
                    continue
            else:
                times = [t for k, t in latest.items() if k in activity]
                if not times:
                    continue
                last = max(times)
            if now - last >= quiet:
                quiet_ones.append((p, last))
        # Earlier reminders matter only for the customers who went quiet: their history alone is read.
        history = ctx.load_history([p.customer.id for p, _ in quiet_ones])
        for p, last in quiet_ones:
            cid = p.customer.id
            spell = f"{self.campaign}:{cid}:{key_time(last)}:"
            past = history.get(cid)
            earlier = sorted((m for m in past if m.key.startswith(spell)),
                             key=lambda m: m.planned_at) if past else []
            if len(earlier) >= most:
                continue
            if earlier and (every is None or ctx.now - earlier[-1].planned_at < every):
                continue
            yield Candidate(spell + str(len(earlier) + 1), p.customer, {
                "last_activity": last.isoformat(), "days_inactive": (ctx.now - last).days,
                "reminder_number": len(earlier) + 1,
            })

    def _before(self, profiles: Sequence[Profile], ctx: SelectContext) -> Iterable[Candidate]:
        attribute, lead = self.config["before"], self.config["lead"]
        for p in profiles:
            when = parse_date(p.customer.attributes.get(attribute))
            if when is None:
                continue
            today = ctx.local_now(p.customer).date()
            if today <= when <= today + lead:
                yield Candidate(f"{self.campaign}:{p.customer.id}:{when.isoformat()}", p.customer,
                                {"date": when.isoformat(), "days_left": (when - today).days})

    def sample_variables(self, now: datetime, sample: Mapping[str, Any]) -> dict[str, Any]:
        if self.config.get("before"):
            return {"date": (now + self.config["lead"]).date().isoformat(),
                    "days_left": self.config["lead"].days}
        last = now - self.config["inactive_for"]
        return {"last_activity": last.isoformat(), "days_inactive": self.config["inactive_for"].days,
                "reminder_number": 1}


@hookimpl
def outreach_register_rules(register):
    register(Reminder)
