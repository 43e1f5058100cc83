"""A survey of the whole audience, for ``outreach validate``: what a run would find in it.

Headers can be right while rows are not: a consent of ``maybe``, a birthday of ``04/12``, a date
attribute no row fills. Those rows are reported and skipped by every run, and a campaign can end
up reaching nobody without any error. The survey reads the audience the way the planner does
(streaming: memory stays flat) and reports every row problem with its file and line, what the
source mapped and which of its columns no campaign reads, how many customers each channel can
reach (consent and a valid address), every attribute a rule or template names that no row fills,
and every campaign that can reach nobody, with why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from outreach.audience import RowProblem, Source
from outreach.audience_check import reads_events
from outreach.config import Campaign, Project
from outreach.policy.addresses import normalize

#: Row problems kept word for word (all are counted); the rest are summed up.
KEEP_ROW_PROBLEMS = 1000
#: Customer fields a template may name that every customer has (never "missing").
_ALWAYS = {"id", "name", "consent", "locale", "tags", "timezone"}


@dataclass
class Survey:
    """What :func:`survey` found."""

    customers: int = 0
    events: int = 0
    events_by_type: Counter = field(default_factory=Counter)
    row_problems: list[str] = field(default_factory=list)
    row_problem_count: int = 0
    #: channel → customers with its consent and a valid address.
    reachable: dict[str, int] = field(default_factory=dict)
    #: role → {field → column}, role → {attribute → column}, consent key → origin.
    mapped: dict[str, dict[str, str]] = field(default_factory=dict)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    consents: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    #: role → columns kept as attributes that no campaign reads.
    unused: dict[str, list[str]] = field(default_factory=dict)
    #: Things that stop nobody but drop people: a campaign reaching nobody, an empty attribute.
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``outreach validate --json``, under ``audience``)."""
        return {
            "customers": self.customers, "events": self.events,
            "events_by_type": dict(self.events_by_type.most_common()),
            "origins": self.origins, "mapped": self.mapped, "attributes": self.attributes,
            "consents": self.consents, "unused_columns": self.unused, "reachable": self.reachable,
            "row_problems": {"count": self.row_problem_count, "first": self.row_problems},
            "warnings": self.warnings,
        }


def _referenced(campaign: Campaign) -> dict[str, str]:
    """Customer fields the campaign reads → who reads them (its rule's parameter, its templates)."""
    out: dict[str, str] = {}
    for field_name in sorted(campaign.customer_fields or ()):
        if field_name not in _ALWAYS:
            out[field_name] = "its templates"
    for param in campaign.rule.attribute_params:
        value = campaign.rule.config.get(param)
        if isinstance(value, str) and value:
            out[value] = f"params.{param}"
    return out


def survey(project: Project, source: Source, now: datetime,
           progress: Callable[[int, int | None], None] | None = None) -> Survey:
    """Read the whole audience once and say what a run would make of it (see the module)."""
    out = Survey()
    described = source.describe()
    out.mapped, out.attributes = described.mapped, described.attributes
    out.consents, out.origins = described.consents, described.origins

    def problem(p: RowProblem) -> None:
        out.row_problem_count += 1
        if len(out.row_problems) < KEEP_ROW_PROBLEMS:
            out.row_problems.append(str(p))

    channels = {name: (cfg.cls.address, cfg.consent) for name, cfg in project.channels.items()}
    reachable: Counter = Counter()
    with_consent: Counter = Counter()
    by_campaign: Counter = Counter()
    referenced = {name: _referenced(c) for name, c in project.campaigns.items()}
    wanted = {f for fields in referenced.values() for f in fields}
    filled: Counter = Counter()
    valid_cache: dict[tuple[str, str], bool] = {}
    total = source.count_hint() if progress else None
    if progress:
        progress(0, total)
    for customer in source.customers(problem):
        out.customers += 1
        view = None
        can: set[str] = set()
        for name, (kind, consent) in channels.items():
            if consent not in customer.consent:
                continue
            with_consent[name] += 1
            raw = customer.email if kind == "email" else customer.phone
            if not raw:
                continue
            ok = valid_cache.get((kind, raw))
            if ok is None:
                ok = normalize(kind, raw)[0] is not None
                if len(valid_cache) > 100_000:
                    valid_cache.clear()
                valid_cache[(kind, raw)] = ok
            if ok:
                reachable[name] += 1
                can.add(name)
        for name, campaign in project.campaigns.items():
            if any(ch in can for ch in campaign.channels):
                by_campaign[name] += 1
        if wanted:
            view = customer.template_view()
            for f in wanted:
                value = view.get(f)
                if value not in (None, "", [], ()):
                    filled[f] += 1
        if progress and out.customers % 5000 == 0:
            progress(out.customers, total)
    if progress:
        progress(out.customers, max(total or 0, out.customers))
    for event in source.events(frozenset(), None, problem):
        out.events += 1
        out.events_by_type[event.type] += 1
    out.reachable = {name: reachable[name] for name in channels}
    for role, attrs in out.attributes.items():
        used = wanted if role == "customers" else set()
        if role == "customers":
            out.unused[role] = [col for attr, col in attrs.items() if attr not in used]
    _warn(project, out, now, referenced, filled, with_consent, by_campaign)
    return out


def _warn(project: Project, out: Survey, now: datetime, referenced: dict[str, dict[str, str]],
          filled: Counter, with_consent: Counter, by_campaign: Counter) -> None:
    n = out.customers
    for name, campaign in project.campaigns.items():
        for attr, who in referenced[name].items():
            if n and not filled[attr]:
                out.warnings.append(f"campaign {name}: no customer has a value for {attr!r} "
                                    f"(read by {who})")
        if by_campaign[name] == 0:
            why = []
            for ch in campaign.channels:
                cfg = project.channels[ch]
                kind = "email address" if cfg.cls.address == "email" else "phone number"
                why.append(f"{ch}: {with_consent[ch]} of {n} have consent for {cfg.consent}, "
                           f"{out.reachable.get(ch, 0)} of those a valid {kind}")
            out.warnings.append(f"campaign {name} can reach nobody ({'; '.join(why)})")
            continue
        needs = campaign.rule.event_needs(now) if reads_events(campaign, now) else None
        if needs is not None and "feedback" in needs.types:
            # Feedback answers come from outreach serve (the ledger), not from the source's events.
            if project.serve is None and not out.events_by_type["feedback"]:
                out.warnings.append(f"campaign {name} reads feedback answers, which outreach "
                                    "serve records: add [serve] to outreach.toml to collect them")
            continue
        if needs is not None and needs.types and not any(out.events_by_type[t] for t in needs.types):
            out.warnings.append(f"campaign {name} can reach nobody: the events hold no "
                                f"{' or '.join(sorted(needs.types))} event")
