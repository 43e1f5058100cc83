"""What ``outreach preview --customer ID`` renders with: that customer, as the campaign sees them.

The campaign's rule is asked about this one customer with their own events, as a run at that
instant would ask it; when it selects them, the preview shows exactly the variables a message would
carry. When it does not (no purchase in the window, not quiet long enough), the preview still shows
their real latest event of the types the rule reads, so a marketer sees real data, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from outreach.audience import Customer, Event, Profile, Source
from outreach.config import Campaign, Project, sample_variables
from outreach.plugins import Plugins
from outreach.rule import SelectContext
from outreach.schedule import latest_fire


@dataclass
class PreviewVariables:
    """Template variables for a preview, and a sentence saying where they come from."""

    variables: dict[str, Any]
    note: str


def customer_variables(campaign: Campaign, project: Project, plugins: Plugins, source: Source,
                       customer: Customer, now: datetime) -> PreviewVariables:
    """The variables ``campaign`` would render with for ``customer`` at ``now``."""
    needs = campaign.rule.event_needs(now)
    wanted = (needs.types | needs.latest) if needs else frozenset()
    events: list[Event] = []
    if wanted:
        events = sorted((e for e in source.events(wanted, None, lambda problem: None)
                         if e.customer_id == customer.id and e.time <= now), key=lambda e: e.time)
    latest: dict[str, datetime] = {}
    for event in events:
        if needs and event.type in needs.latest:
            latest[event.type] = event.time
    profile = Profile(customer, [e for e in events if needs and e.type in needs.types], latest)
    occurrence = latest_fire(campaign.schedule, now, project.tz) if campaign.schedule else None
    ctx = SelectContext(campaign.name, now, project.tz, occurrence)
    extra = plugins.template_context(customer, campaign.name) if plugins.has_template_context else {}
    when = now.astimezone(project.tz).isoformat(timespec="minutes")
    for candidate in campaign.rule.select([profile], ctx):
        variables = {"customer": customer.template_view(), **candidate.variables, **extra}
        return PreviewVariables(variables, f"as a run at {when} would "
                                           f"write to {customer.id} ({candidate.key})")
    variables = sample_variables(campaign, project.tz, now, plugins=plugins,
                                 default_locale=project.locale)
    variables["customer"] = customer.template_view()
    note = f"the {campaign.rule_name} rule would not write to {customer.id} at {when}"
    if "event" in variables:
        mine = [e for e in events if needs and e.type in needs.types]
        if mine:
            variables["event"] = mine[-1].template_view()
            note += f"; shown with their latest {mine[-1].type} event ({mine[-1].id})"
        else:
            note += "; they have no event it reads, so the sample event is shown"
    return PreviewVariables(variables, note)
