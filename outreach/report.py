"""What a run reports: per campaign, how many were selected, queued, sent, deferred, refused, failed.

The same counters feed the human table, ``--json`` and the ``runs`` table in the ledger.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: The counters every campaign reports, in the order they are shown.
COUNTERS = ("selected", "queued", "sent", "deferred", "capped", "suppressed", "skipped", "failed",
            "unknown")


@dataclass
class CampaignReport:
    """One campaign's share of a run.

    selected: candidates its rule chose that were not planned before; queued: new messages written
    to the outbox; sent: messages its provider accepted in this run; deferred: messages planned or
    pushed back to a later time (quiet hours, a delay, a retry backoff); capped / suppressed /
    skipped: candidates refused by frequency caps / the suppression list / consent, address or
    another policy; failed: messages that will not be sent; unknown: messages that may have been
    sent (never resent without an operator's word).

    A message planned earlier and stopped by policy before it was sent is counted where a
    candidate refused for the same reason would be, not as ``failed`` (which sets the exit code):
    a late suppression as ``suppressed``, a consent withdrawn meanwhile (or a customer gone from
    the audience) as ``skipped`` (see :mod:`outreach.recheck`). In the ledger both are ``failed``
    with their reason, so caps stop counting them.
    """

    name: str
    due: bool = False
    note: str = ""
    selected: int = 0
    queued: int = 0
    sent: int = 0
    deferred: int = 0
    capped: int = 0
    suppressed: int = 0
    skipped: int = 0
    failed: int = 0
    unknown: int = 0
    #: Candidates already in the outbox from an earlier run (re-planning is a no-op).
    already_planned: int = 0
    #: Refusal and failure reasons with their counts.
    reasons: Counter = field(default_factory=Counter)
    #: Set when the campaign could not be evaluated at all (a rule plugin raised).
    error: str | None = None

    def refuse(self, outcome: str, reason: str) -> None:
        """Count a refused candidate under its outcome and reason."""
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.reasons[reason] += 1

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out: dict[str, Any] = {"name": self.name, "due": self.due, "note": self.note}
        out.update({c: getattr(self, c) for c in COUNTERS})
        out["already_planned"] = self.already_planned
        out["reasons"] = dict(self.reasons.most_common())
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class StoppedChannel:
    """A channel stopped for the rest of a run because its configuration was refused (credentials,
    sender identity, an outbox folder): its messages were left queued for the next run."""

    channel: str
    #: The provider's reason, as the channel's :class:`~outreach.channel.ConfigurationError` put it.
    reason: str
    #: Messages given back to the outbox untouched (claimed, then released; no attempt counted).
    released: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"channel": self.channel, "reason": self.reason, "released": self.released}


@dataclass
class RunReport:
    """A whole run: the campaigns, bad audience rows, and what the exit code should be."""

    now: str
    dry_run: bool = False
    campaigns: dict[str, CampaignReport] = field(default_factory=dict)
    row_problems: list[str] = field(default_factory=list)
    row_problem_count: int = 0
    skipped_campaigns: list[str] = field(default_factory=list)
    #: Recovered claims of crashed processes: (queued again, marked unknown).
    recovered: tuple[int, int] = (0, 0)
    run_id: str | None = None
    #: Channels stopped by a configuration the provider refused, by channel name.
    stopped_channels: dict[str, StoppedChannel] = field(default_factory=dict)
    #: How planning read the audience (outreach.incremental): ``mode`` is ``incremental`` or
    #: ``full``, with ``reason`` for a full pass, and for an incremental one the ``events`` read
    #: and ``customers`` looked up by id.
    planning: dict[str, Any] = field(default_factory=dict)

    def campaign(self, name: str) -> CampaignReport:
        """The report of one campaign, made on first use."""
        if name not in self.campaigns:
            self.campaigns[name] = CampaignReport(name)
        return self.campaigns[name]

    def stop_channel(self, name: str, reason: str) -> StoppedChannel:
        """Record that channel ``name`` stopped for ``reason`` (the first reason is kept)."""
        if name not in self.stopped_channels:
            self.stopped_channels[name] = StoppedChannel(name, reason)
        return self.stopped_channels[name]

    def add_row_problem(self, text: str, keep: int = 50) -> None:
        """Count a bad audience row; keep the first ``keep`` for the report."""
        self.row_problem_count += 1
        if len(self.row_problems) < keep:
            self.row_problems.append(text)

    @property
    def totals(self) -> dict[str, int]:
        """Every counter summed over campaigns."""
        return {c: sum(getattr(r, c) for r in self.campaigns.values()) for c in COUNTERS}

    @property
    def ok(self) -> bool:
        """False when a message failed or has an unknown outcome, a campaign could not run, or a
        channel was stopped by its configuration."""
        t = self.totals
        return not (t["failed"] or t["unknown"] or self.stopped_channels
                    or any(r.error for r in self.campaigns.values()))

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of ``outreach run --json``."""
        return {
            "run_id": self.run_id, "now": self.now, "dry_run": self.dry_run, "ok": self.ok,
            "campaigns": [r.as_dict() for r in self.campaigns.values()],
            "totals": self.totals,
            "invalid_rows": {"count": self.row_problem_count, "first": self.row_problems},
            "invalid_campaigns": self.skipped_campaigns,
            "recovered": {"requeued": self.recovered[0], "unknown": self.recovered[1]},
            "stopped_channels": [c.as_dict() for c in self.stopped_channels.values()],
            "planning": self.planning,
        }
