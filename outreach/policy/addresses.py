"""Address validity: an email address must be well formed, a phone number valid in E.164.

phonenumbers and email-validator do the work; results are cached per raw address, as the same
address is checked once per campaign in a run.

Email addresses of the common shape (an ASCII dot-atom before the @-sign) take a fast path that
gives exactly email-validator's answer: for such a local part email-validator's verdict is "valid,
unchanged", so only the domain needs its full check, and a domain is checked once per process
(a million customers share a handful of domains). Everything else, and every address the fast
path would refuse, goes through ``validate_email`` itself, so error messages are its own.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from outreach import hookimpl
from outreach.decision import CampaignInfo, ChannelInfo, DecisionContext, Refusal
from outreach.rule import Candidate


from email_validator.rfc_constants import ATEXT as _ATEXT  # noqa: E402

#: An ASCII dot-atom local part (email-validator's DOT_ATOM_TEXT), an @-sign, a plain ASCII domain.
_SIMPLE_EMAIL = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([A-Za-z0-9.-]+)\Z")
_MAX_EMAIL = 254  # email-validator's EMAIL_MAX_LENGTH, in UTF-8 bytes


@lru_cache(maxsize=4096)
def _domain(domain: str) -> tuple[str, str] | None:
    """(normalised domain, its IDNA ASCII form) as email-validator gives them, or None if refused."""
    try:
        v = validate_email("a@" + domain, check_deliverability=False)
    except EmailNotValidError:
        return None
    return v.domain, v.ascii_domain


def _fast_email(raw: str) -> str | None:
    """The normalised address when ``raw`` is of the common shape and valid, else None (unsure)."""
    m = _SIMPLE_EMAIL.match(raw)
    if m is None or len(raw) > _MAX_EMAIL:
        return None
    local, domain = m.groups()
    known = _domain(domain)
    if known is None:
        return None
    normalized = local + "@" + known[0]
    if len(normalized.encode("utf-8")) > _MAX_EMAIL or len(local) + 1 + len(known[1]) > _MAX_EMAIL:
        return None
    return normalized.lower()


@lru_cache(maxsize=65536)
def normalize(kind: str, raw: str | None) -> tuple[str | None, str | None]:
    """(normalised address, None) or (None, why it is not usable) for an email or phone address."""
    if not raw:
        return None, f"no {'email address' if kind == 'email' else 'phone number'}"
    if kind == "email":
        fast = _fast_email(raw)
        if fast is not None:
            return fast, None
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


@hookimpl(tryfirst=True)
def outreach_check_channel(candidate: Candidate, channel: ChannelInfo, ctx: DecisionContext,
                           campaign: CampaignInfo) -> Refusal | None:
    kind, customer = channel.address_kind, candidate.customer  # raw_address, inlined: hot path
    _, problem = normalize(kind, customer.email if kind == "email" else customer.phone)
    return Refusal(problem) if problem else None
