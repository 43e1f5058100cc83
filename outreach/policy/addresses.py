"""Address validity: an email address must be well formed, a phone number valid in E.164.

phonenumbers and email-validator do the work; results are cached per raw address, as the same
address is checked once per campaign in a run.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from outreach import hookimpl
from outreach.decision import ChannelInfo, DecisionContext, Refusal
from outreach.rule import Candidate


@lru_cache(maxsize=65536)
def normalize(kind: str, raw: str | None) -> tuple[str | None, str | None]:
    """(normalised address, None) or (None, why it is not usable) for an email or phone address."""
    if not raw:
        return None, f"no {'email address' if kind == 'email' else 'phone number'}"
    if kind == "email":
        try:
            # Lower-cased whole: mailbox names are case-insensitive in practice, and a suppression
            # of ANI@example.com must hold for ani@example.com.
            return validate_email(raw, check_deliverability=False).normalized.lower(), None
        except EmailNotValidError as exc:
            return None, f"invalid email address {raw!r}: {exc}"
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return None, f"invalid phone number {raw!r}: expected E.164 such as +37491234567"
    if not phonenumbers.is_valid_number(number):
        return None, f"invalid phone number {raw!r}: not a valid number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


def raw_address(candidate: Candidate, kind: str) -> str | None:
    """The customer's address of ``kind`` as the audience has it."""
    return candidate.customer.email if kind == "email" else candidate.customer.phone


@hookimpl
def outreach_check_channel(candidate: Candidate, channel: ChannelInfo,
                           ctx: DecisionContext) -> Refusal | None:
    _, problem = normalize(channel.address_kind, raw_address(candidate, channel.address_kind))
    return Refusal(problem) if problem else None
