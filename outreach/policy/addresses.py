"""Address validity: a channel whose customer address is not usable is refused, saying why.

The normalisation itself is the core's (:mod:`outreach.addresses`): the planner, ``outreach
suppress``, the suppression check and the dispatcher's re-check all use that one module, so an
address this step lets through is compared everywhere in the same form.
"""

from __future__ import annotations

from outreach import hookimpl
from outreach.addresses import normalize
from outreach.decision import CampaignInfo, ChannelInfo, DecisionContext, Refusal
from outreach.rule import Candidate

__all__ = ["normalize", "raw_address", "outreach_check_channel"]


def raw_address(candidate: Candidate, kind: str) -> str | None:
    """The customer's address of ``kind`` as the audience has it."""
    return candidate.customer.email if kind == "email" else candidate.customer.phone


@hookimpl(tryfirst=True)
def outreach_check_channel(candidate: Candidate, channel: ChannelInfo, ctx: DecisionContext,
                           campaign: CampaignInfo) -> Refusal | None:
    kind, customer = channel.address_kind, candidate.customer  # raw_address, inlined: hot path
    _, problem = normalize(kind, customer.email if kind == "email" else customer.phone,
                           ctx.phone_region)
    return Refusal(problem) if problem else None
