"""newsletter: every customer the campaign is for (after ``where``), once per schedule occurrence."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from outreach import hookimpl
from outreach.audience import Profile
from outreach.rule import Candidate, Rule, SelectContext, key_time


class Newsletter(Rule):
    """One message per customer per occurrence of the campaign's cron schedule."""

    name = "newsletter"
    requires_schedule = True
    default_priority = 10

    def select(self, profiles: Sequence[Profile], ctx: SelectContext) -> Iterable[Candidate]:
        occurrence = ctx.occurrence or ctx.now
        stamp = key_time(occurrence)
        variables = {"occurrence": occurrence.astimezone(ctx.tz).isoformat()}
        for p in profiles:
            yield Candidate(f"{self.campaign}:{stamp}:{p.customer.id}", p.customer, dict(variables))

    def sample_variables(self, now: datetime, sample: Mapping[str, Any]) -> dict[str, Any]:
        return {"occurrence": sample.get("occurrence", now.isoformat())}


@hookimpl
def outreach_register_rules(register):
    register(Newsletter)
