"""``outreach report``: what happened to each campaign's messages over time, and whether it worked.

Not to be confused with :mod:`outreach.report`, the report of one run. This package reads the
ledger only (set-wise, see :mod:`outreach.reporting.aggregate`), plus the audience's events for
experiments' conversions (:mod:`outreach.reporting.experiments`), and shows the result in the
terminal (:mod:`outreach.reporting.terminal`), as JSON, or as one self-contained HTML file with
charts (:mod:`outreach.reporting.html`, behind the ``outreach[report]`` extra).
"""

from __future__ import annotations

from typing import Any, Mapping

from outreach.audience import Source
from outreach.config import Campaign
from outreach.ledger import Ledger, from_epoch
from outreach.reporting.aggregate import Window, campaign_rows, refusal_reasons, totals
from outreach.reporting.experiments import experiments

__all__ = ["Window", "build_report"]


def build_report(ledger: Ledger, window: Window, campaigns: Mapping[str, Campaign],
                 channel_kinds: Mapping[str, str], source: Source | None,
                 now: int) -> dict[str, Any]:
    """The whole report as plain data (what ``--json`` prints and the views draw).

    ``channel_kinds`` maps each channel name to the kind of address it sends to (``email``,
    ``phone``); ``source`` is read for conversions only, when an experiment defines one.
    """
    kinds = dict(channel_kinds)
    rows = campaign_rows(ledger, window)
    ordered = sorted(rows.values(), key=lambda r: (r.campaign, r.period))
    return {
        "since": from_epoch(window.since).astimezone(window.tz).isoformat(),
        "until": from_epoch(window.until).astimezone(window.tz).isoformat(),
        "last_day": from_epoch(window.until - 1).astimezone(window.tz).date().isoformat(),
        "by": window.by,
        "timezone": str(window.tz.key),
        "rows": [r.as_dict(kinds) for r in ordered],
        "totals": [t.as_dict(kinds) for _, t in sorted(totals(ordered).items())],
        "refusals": refusal_reasons(ledger, window),
        "experiments": [e.as_dict() for e in experiments(ledger, window, campaigns, source, now)],
    }
