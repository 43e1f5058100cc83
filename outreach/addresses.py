"""Addresses in one form: what the planner sends to, what a suppression stores, what they compare.

Every address outreach compares goes through :func:`normalize` first: a customer's address read
from the audience (the planner, the address step of the policy chain), an address given to
``outreach suppress`` (one or an imported file), the suppression check, and the dispatcher's
re-check of the list before a send. A suppression of ``(503) 555-0104`` therefore holds for the
customer whose audience row says ``+1 503-555-0104``: both are ``+15035550104``.

* **Phone numbers** become E.164 (``+15035550104``) through phonenumbers. A number written
  without its ``+country`` code is read in a region: ``phone_region`` in ``outreach.toml`` (the
  deployment's), or ``[audience] phone_region`` for the audience. Without one, such a number is
  refused, naming the setting.
* **Email addresses** are trimmed of surrounding white space, checked by email-validator, and
  lower-cased whole. The domain is case-insensitive by definition; the local part is compared
  case-insensitively too, as every common mailbox provider (Gmail, Outlook, Yahoo, iCloud) treats
  it, though RFC 5321 would allow a server to tell ``Jane`` from ``jane``. For a suppression list
  that errs the safe way: ``JANE@example.com`` suppressed never receives mail as
  ``jane@example.com``. Provider-specific aliases (Gmail's dots and ``+tags``) are kept apart:
  they are different addresses to every other provider.

Email addresses of the common shape (an ASCII dot-atom before the @-sign) take a fast path that
gives exactly email-validator's answer: for such a local part email-validator's verdict is "valid,
unchanged", so only the domain needs its full check, and a domain is checked once per process
(a million customers share a handful of domains). Everything else, and every address the fast
path would refuse, goes through ``validate_email`` itself, so error messages are its own. Results
are cached per raw address, as the same address is checked once per campaign in a run.
"""

from __future__ import annotations

import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import ATEXT as _ATEXT

#: An ASCII dot-atom local part (email-validator's DOT_ATOM_TEXT), an @-sign, a plain ASCII domain.
_SIMPLE_EMAIL = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([A-Za-z0-9.-]+)\Z")
_MAX_EMAIL = 254  # email-validator's EMAIL_MAX_LENGTH, in UTF-8 bytes

#: The two kinds of address a channel uses (``ChannelInfo.address_kind``).
KINDS = ("email", "phone")


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


def region_problem(region: str) -> str | None:
    """Why ``region`` is not a phone region phonenumbers knows, or None when it is one."""
    import phonenumbers  # here, not at the top: its metadata costs start-up to runs without phones

    if isinstance(region, str) and region.upper() in phonenumbers.SUPPORTED_REGIONS:
        return None
    return f"expected a region code such as \"US\" or \"AM\", got {region!r}"


def kind_of(address: str) -> str:
    """``"email"`` for an address with an @-sign, else ``"phone"``."""
    return "email" if "@" in address else "phone"


@lru_cache(maxsize=65536)
def normalize(kind: str, raw: str | None,
              region: str | None = None) -> tuple[str | None, str | None]:
    """(normalised address, None) or (None, why it is not usable) for an email or phone address.

    ``region`` reads phone numbers written without ``+country`` (``(503) 555-0104`` in "US").
    """
    if raw is not None:
        raw = raw.strip()
    if not raw:
        return None, f"no {'email address' if kind == 'email' else 'phone number'}"
    if kind == "email":
        fast = _fast_email(raw)
        if fast is not None:
            return fast, None
        try:
            return validate_email(raw, check_deliverability=False).normalized.lower(), None
        except EmailNotValidError as exc:
            return None, f"invalid email address {raw!r}: {exc}"
    national = not raw.startswith("+")
    if national and not region:
        return None, (f"invalid phone number {raw!r}: expected E.164 such as +37491234567 (or "
                      "set phone_region in outreach.toml to read national numbers)")
    import phonenumbers  # only a phone number needs it (see region_problem)

    try:
        number = phonenumbers.parse(raw, region.upper() if national and region else None)
    except phonenumbers.NumberParseException:
        return None, f"invalid phone number {raw!r}: expected E.164 such as +37491234567"
    if not phonenumbers.is_valid_number(number):
        where = f" in region {region.upper()}" if national and region else ""
        return None, f"invalid phone number {raw!r}: not a valid number{where}"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


__all__ = ["KINDS", "kind_of", "normalize", "region_problem"]
