"""Each experiment's result: A/B variants against the first one, treated customers against the
held-out control.

Variants are compared per message sent on delivery, (human) open and click, and per customer on
conversion. A holdout is compared on conversion only: a control cannot open what it never got.

Conversions are read from the audience source's events at report time, in one streaming pass, for
the customers of the report's experiments only (kept in memory as id → start time). Reading them
when the report asks, rather than recording them during planning runs, means no table to keep in
step, late events (a purchase imported a day late) counted, and no dependence on runs happening
after the conversion window; the cost is one pass over the events of the conversion's type.
A customer counts once the window after their planned send time (``within``) has closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from outreach.audience import Source
from outreach.config import Campaign
from outreach.ledger import Ledger
from outreach.reporting.aggregate import EVENT_FLAGS_SQL, Window, _run, has_delivery_events
from outreach.reporting.stats import Comparison, compare


@dataclass
class Group:
    """One arm of an experiment: a variant, or the treated or held-out customers."""

    name: str
    sent: int = 0
    delivered: int | None = None
    opened: int | None = None
    clicked: int | None = None
    #: customer id → the planned send time conversions count from
    starts: dict[str, int] = field(default_factory=dict)
    customers: int = 0
    converted: int = 0
    waiting: int = 0  # customers whose conversion window is still open

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"name": self.name, "sent": self.sent, "delivered": self.delivered,
                "opened": self.opened, "clicked": self.clicked, "customers": self.customers,
                "converted": self.converted, "still_in_window": self.waiting,
                "conversion_rate": self.converted / self.customers if self.customers else None}


@dataclass
class Experiment:
    """One campaign's experiment: its arms and the comparisons between them."""

    campaign: str
    kind: str  # "variants" or "holdout"
    groups: list[Group]
    comparisons: list[Comparison] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"campaign": self.campaign, "kind": self.kind, "note": self.note,
                "groups": [g.as_dict() for g in self.groups],
                "comparisons": [c.as_dict() for c in self.comparisons]}


def _starts(rows: Iterable[Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for group, customer, start in rows:
        out.setdefault(group, {})[customer] = int(start)
    return out


def variant_groups(ledger: Ledger, window: Window, campaign: str) -> list[Group]:
    """The variants of ``campaign`` that sent in the window, with their delivery figures."""
    params = {"lo": window.since, "hi": window.until, "c": campaign}
    scope = ("m.campaign = :c AND m.variant IS NOT NULL AND m.state = 'sent' "
             "AND m.not_before >= :lo AND m.not_before < :hi")
    groups: dict[str, Group] = {}
    for name, sent in _run(ledger, f"SELECT m.variant, COUNT(*) FROM messages m WHERE {scope} "
                                   "GROUP BY m.variant", params):
        groups[name] = Group(name, sent=sent)
    if groups and has_delivery_events(ledger):
        heard = _run(ledger, (
            "SELECT m.variant, COUNT(e.message_key), SUM(e.delivered), SUM(e.opened), "
            f"SUM(e.clicked) FROM messages m JOIN (SELECT message_key, {EVENT_FLAGS_SQL} "
            "FROM delivery_events WHERE message_key IS NOT NULL AND occurred_at >= :lo "
            f"GROUP BY message_key) e ON e.message_key = m.key WHERE {scope} GROUP BY m.variant"),
            params)
        for name, n, delivered, opened, clicked in heard:
            if n:
                g = groups[name]
                g.delivered, g.opened, g.clicked = int(delivered or 0), int(opened or 0), \
                    int(clicked or 0)
    starts = _starts(_run(ledger, (
        "SELECT m.variant, m.customer_id, MIN(m.not_before) FROM messages m "
        f"WHERE {scope} GROUP BY m.variant, m.customer_id"), params))
    for name, g in groups.items():
        g.starts = starts.get(name, {})
    return [groups[n] for n in sorted(groups)]


def holdout_groups(ledger: Ledger, window: Window, campaign: str) -> list[Group]:
    """Treated (a message planned in the window) and held-out customers of ``campaign``."""
    params = {"lo": window.since, "hi": window.until, "c": campaign}
    treated = _starts(("treated", c, t) for c, t in _run(ledger, (
        "SELECT customer_id, MIN(not_before) FROM messages WHERE campaign = :c "
        "AND not_before >= :lo AND not_before < :hi GROUP BY customer_id"), params)).get("treated", {})
    control = _starts(("held out", c, t) for c, t in _run(ledger, (
        "SELECT customer_id, MIN(decided_at) FROM skips WHERE campaign = :c "
        "AND outcome = 'held_out' AND decided_at >= :lo AND decided_at < :hi "
        "GROUP BY customer_id"), params)).get("held out", {})
    for customer in control.keys() & treated.keys():  # a share changed: count them as treated
        del control[customer]
    return [Group("held out", starts=control), Group("treated", starts=treated)]


def count_conversions(groups: list[Group], source: Source, event: str, within: int,
                      now: int) -> None:
    """Fill each group's customers / converted / waiting from one pass over ``event`` events.

    A customer converts with an event after their start and no later than ``within`` seconds
    after it; one whose window has not closed by ``now`` is left out (``waiting``).
    """
    starts: dict[str, tuple[Group, int]] = {}
    for g in groups:
        for customer, start in g.starts.items():
            if start + within <= now:
                starts[customer] = (g, start)
                g.customers += 1
            else:
                g.waiting += 1
    if not starts:
        return
    earliest = min(s for _, s in starts.values())
    since = datetime.fromtimestamp(earliest, timezone.utc)
    converted: set[str] = set()
    for e in source.events(frozenset([event]), since, lambda problem: None):
        hit = starts.get(e.customer_id)
        if hit is None or e.customer_id in converted or e.type != event:
            continue
        t = e.time.timestamp()
        if hit[1] < t <= hit[1] + within:
            converted.add(e.customer_id)
            hit[0].converted += 1


def experiments(ledger: Ledger, window: Window, campaigns: Mapping[str, Campaign],
                source: Source | None, now: int) -> list[Experiment]:
    """Every experiment among the report's campaigns, with its comparisons and verdicts."""
    out: list[Experiment] = []
    for name in sorted(campaigns):
        campaign = campaigns[name]
        if window.campaigns and name not in window.campaigns:
            continue
        if campaign.variants:
            out.append(_variants(ledger, window, campaign, source, now))
        if campaign.holdout > 0:
            groups = holdout_groups(ledger, window, name)
            exp = Experiment(name, "holdout", groups)
            out.append(exp)
            if campaign.conversion is None:
                exp.note = ("no conversion is defined: add conversion = { event = \"purchase\", "
                            "within = \"14d\" } to measure the lift")
                continue
            _conversions(exp, source, campaign, now)
            control, treated = groups
            exp.comparisons.append(compare("conversion", control.name, control.converted,
                                           control.customers, treated.name, treated.converted,
                                           treated.customers))
    return out


def _variants(ledger: Ledger, window: Window, campaign: Campaign, source: Source | None,
              now: int) -> Experiment:
    """Each variant against the campaign's first on delivery, open, click and conversion."""
    order = {v.name: i for i, v in enumerate(campaign.variants)}  # the campaign file's order
    groups = sorted(variant_groups(ledger, window, campaign.name),
                    key=lambda g: (order.get(g.name, len(order)), g.name))
    exp = Experiment(campaign.name, "variants", groups)
    _conversions(exp, source, campaign, now)
    if len(groups) < 2:
        exp.note = "fewer than two variants have sent in this period"
        return exp
    base = groups[0]
    for g in groups[1:]:
        for metric, attr in (("delivery", "delivered"), ("open", "opened"), ("click", "clicked")):
            a, b = getattr(base, attr), getattr(g, attr)
            if a is not None and b is not None:
                exp.comparisons.append(compare(metric, base.name, a, base.sent, g.name, b, g.sent))
        if campaign.conversion is not None:
            exp.comparisons.append(compare("conversion", base.name, base.converted,
                                           base.customers, g.name, g.converted, g.customers))
    return exp


def _conversions(exp: Experiment, source: Source | None, campaign: Campaign, now: int) -> None:
    conv = campaign.conversion
    if conv is None:
        return
    if source is None:
        exp.note = "conversions not counted: the audience source could not be read"
        return
    try:
        count_conversions(exp.groups, source, conv.event, int(conv.within.total_seconds()), now)
    except Exception as exc:  # noqa: BLE001 - a source failing leaves the other figures standing
        exp.note = f"conversions not counted: the audience's events could not be read ({exc})"
