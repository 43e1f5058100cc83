"""Consent: a customer is written to on a channel only if they agreed to it.

Asked first, so a customer who never agreed is reported as such, whatever else is true of them.
Consent applies to every category: a customer who said no to SMS gets no SMS, apology or not.
"""

from __future__ import annotations

from outreach import hookimpl
from outreach.decision import CampaignInfo, ChannelInfo, DecisionContext, Refusal
from outreach.rule import Candidate


@hookimpl(tryfirst=True)
def outreach_check_channel(candidate: Candidate, channel: ChannelInfo, ctx: DecisionContext,
                           campaign: CampaignInfo) -> Refusal | None:
    if channel.consent in candidate.customer.consent:
        return None
    return Refusal(f"no consent for {channel.consent}")
