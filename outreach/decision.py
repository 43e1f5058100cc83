"""The vocabulary of the policy chain: what a step is asked about and what it may answer.

Every candidate goes through the same chain (consent → suppression → address → channel choice →
quiet hours → caps). The first three are asked per channel, in the campaign's order, through
``outreach_check_channel``, before any other plugin's implementation; the first channel nobody
refuses is chosen. Then ``outreach_decide`` may veto or defer the chosen send; a deferral is asked
of quiet hours again at its new time. Caps come last, set-wise over everything a customer is due
to get, at each send's final time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping
from zoneinfo import ZoneInfo


#: Where a refusal is counted in the run report.
OUTCOMES = ("skipped", "suppressed", "capped")


@dataclass(frozen=True)
class Refusal:
    """A policy step says no. ``outcome`` is the report column (skipped, suppressed, capped)."""

    reason: str
    outcome: str = "skipped"


@dataclass(frozen=True)
class Defer:
    """A policy step says not yet: send at ``until`` instead (quiet hours). Never a drop."""

    until: datetime
    reason: str


@dataclass(frozen=True)
class ChannelInfo:
    """A configured channel, as policy steps see it."""

    name: str
    #: ``"email"`` or ``"phone"``: which customer address it uses.
    address_kind: str
    #: The consent a customer must have given (``customer.consent``), usually the channel name.
    consent: str
    #: Quiet hours in the recipient's local time, as (start, end) times of day, or None.
    quiet_hours: tuple[Any, Any] | None = None
    #: The channel type (its ``plugin`` in ``outreach.toml``: ``"twilio"``, ``"outbox-email"``).
    type: str = ""


@dataclass(frozen=True)
class CampaignInfo:
    """The campaign a candidate belongs to, as policy steps see it."""

    name: str
    #: ``"marketing"`` or ``"transactional"`` (transactional sends are exempt from caps).
    category: str = "marketing"
    #: The higher wins the last slot under a cap.
    priority: int = 0


@dataclass(frozen=True)
class Choice:
    """The channel and address chosen for a candidate, and when it would be sent."""

    channel: ChannelInfo
    address: str
    send_at: datetime


@dataclass
class DecisionContext:
    """What policy steps may know: the instant, the time zone, and set-wise facts for the batch."""

    now: datetime
    tz: ZoneInfo
    #: Suppressed (address kind, normalised address) pairs among this batch's addresses.
    suppressed: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: The region of phone numbers written without ``+country`` (``phone_region``), or None.
    phone_region: str | None = None
    #: Each plugin's validated ``[plugins.NAME]`` settings, by plugin name.
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def plugin_settings(self, name: str) -> Mapping[str, Any]:
        """Plugin ``name``'s validated ``[plugins.NAME]`` settings (defaults filled in)."""
        return self.settings.get(name, {})

    def suppression_reason(self, kind: str, address: str) -> str | None:
        """Why an address is suppressed, or None."""
        return self.suppressed.get((kind, address))
