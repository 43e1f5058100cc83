"""Consent changed through outreach outranks the audience export.

A customer who unsubscribes (a one-click link, the preference page, an SMS STOP, a spam complaint)
has that recorded in the ledger's ``consent_changes``; the next audience export will usually still
say ``yes``, because the CRM never heard of it. The latest change per consent key (``email``,
``sms``: a channel's ``consent``) or per campaign category (``category:marketing``) decides:

* ``withdrawn`` removes that consent from what the audience says (or, for a category, refuses the
  category's campaigns on every channel), whatever the export says;
* ``granted`` only undoes an earlier ``withdrawn`` recorded by outreach: it never creates consent
  the audience does not give. A customer who clicked "unsubscribe" and later ticks the box again
  on the preference page gets the channel back only if the export still says ``yes``; someone the
  CRM records as ``no`` stays at no, as the business asked.

The planner applies this to each batch of the audience before any policy step sees it (so consent
refusals, the consent re-check and caps all read the same answer), and the dispatcher reads the
changes again just before sending, so a message planned before the customer said no (an SMS
waiting out quiet hours) does not leave.

Transactional messages are exempt from category withdrawals only in the sense that ``marketing``
is the only category a customer can leave from the preference page; a channel withdrawn is
withdrawn for every category, as the audience's own consent columns are.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from outreach.audience import Customer

#: The prefix of a category's key in :meth:`outreach.ledger.Ledger.consent_overrides`.
CATEGORY = "category:"


def withdrawn_keys(changes: Mapping[str, str]) -> tuple[frozenset[str], frozenset[str]]:
    """(consent keys, categories) whose latest change is ``withdrawn``."""
    consents: set[str] = set()
    categories: set[str] = set()
    for key, action in changes.items():
        if action != "withdrawn":
            continue
        if key.startswith(CATEGORY):
            categories.add(key[len(CATEGORY):])
        else:
            consents.add(key)
    return frozenset(consents), frozenset(categories)


def apply(customers: Sequence[Customer], overrides: Mapping[str, Mapping[str, str]]
          ) -> dict[str, frozenset[str]]:
    """Take the withdrawn consent keys out of these customers' consent (in place); returns
    customer id -> the categories they left, for those who left any."""
    left: dict[str, frozenset[str]] = {}
    if not overrides:
        return left
    for c in customers:
        changes = overrides.get(c.id)
        if not changes:
            continue
        consents, categories = withdrawn_keys(changes)
        if consents and consents & c.consent:
            c.consent = c.consent - consents
        if categories:
            left[c.id] = categories
    return left


def refusal(changes: Mapping[str, str] | None, consent: str, category: str) -> str | None:
    """Why a message needing ``consent`` in ``category`` must not go, given one customer's latest
    changes, or None."""
    if not changes:
        return None
    if changes.get(consent) == "withdrawn":
        return f"consent for {consent} was withdrawn by the customer"
    if changes.get(CATEGORY + category) == "withdrawn":
        return f"the customer unsubscribed from {category} messages"
    return None
