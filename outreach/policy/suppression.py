"""Suppression: addresses that must not be written to (STOP replies, bounces, an operator's word).

The planner loads the suppressed addresses of a whole batch in one query; this step only looks
them up. Suppressions apply to every campaign and every category.
"""

from __future__ import annotations

from outreach import hookimpl
from outreach.decision import CampaignInfo, ChannelInfo, DecisionContext, Refusal
from outreach.addresses import normalize
from outreach.policy.addresses import raw_address
from outreach.rule import Candidate


@hookimpl(tryfirst=True)
def outreach_check_channel(candidate: Candidate, channel: ChannelInfo, ctx: DecisionContext,
                           campaign: CampaignInfo) -> Refusal | None:
    if not ctx.suppressed:
        return None  # nothing is suppressed: no address needs normalising to find that out
    raw = raw_address(candidate, channel.address_kind)
    address, _ = normalize(channel.address_kind, raw, ctx.phone_region)
    reason = ctx.suppression_reason(channel.address_kind, address or raw or "")
    return Refusal(f"suppressed: {reason}", "suppressed") if reason else None
