"""Presets for the exports people have: ``format = "shopify"`` and ``format = "mailchimp"``.

A preset is a :class:`~outreach.sources.mapping.Mapping` written in advance: which of the export's
columns fill which field, how it writes consent, tags and dates. Anything in ``outreach.toml``
(``[audience.columns]``, ``tag_separator``...) overrides it. The layouts are the vendors' own; the
fixtures in ``tests/fixtures/exports/`` are files in exactly these layouts.
"""

from __future__ import annotations

from typing import Callable

from outreach.sources.mapping import Column, Mapping


def shopify() -> Mapping:
    """Shopify's customers export, and its orders export as ``purchase`` events.

    Customers, as Shopify admin exports them (Customers → Export; the columns are described in
    Shopify's Help Center, "Using CSV files to import and export customers"): ``Customer ID, First
    Name, Last Name, Email, Accepts Email Marketing, Default Address Company, Default Address
    Address1, ..., Default Address Phone, Phone, Accepts SMS Marketing, Total Spent, Total Orders,
    Note, Tax Exempt, Tags``. The older layout (``First Name, Last Name, Email, Accepts Marketing,
    Company, Address1, ...``, no Customer ID) is read too, with the email as the id. Consent cells
    are ``yes``/``no``; tags are separated by commas.

    Orders (Orders → Export; Help Center, "Exporting orders"): one line per line item, ``Name``
    (``#1001``) on every line, the order's own columns (``Email``, ``Created at`` as
    ``2026-11-20 14:30:00 +0400``, ``Total``, ``Currency``...) on its first. Each order is one
    ``purchase`` event keyed by the customer's email, with ``items`` listing its line items. An
    order with ``Cancelled at`` filled in is no purchase: it makes no event.
    """
    return Mapping(
        customer={
            "id": Column(("Customer ID", "Email")),
            "first_name": Column(("First Name",)),
            "last_name": Column(("Last Name",)),
            "email": Column(("Email",)),
            "phone": Column(("Phone", "Default Address Phone")),
            "tags": Column(("Tags",)),
            "consent_email": Column(("Accepts Email Marketing", "Accepts Marketing")),
            "consent_sms": Column(("Accepts SMS Marketing",)),
        },
        event={
            "id": Column(("Name",)),
            "customer_id": Column(("Email",)),
            "time": Column(("Created at",)),
        },
        tag_separator=",",
        event_type="purchase",
        event_customer="email",
        group_events=True,
        item_columns=("Lineitem name", "Lineitem quantity"),
        event_cancelled_by=("Cancelled at",),
        preset="shopify",
    )


def mailchimp() -> Mapping:
    """Mailchimp's audience export (Audience → Export Audience: a zip of one CSV per status).

    The layout of each file, as Mailchimp writes it: ``Email Address, First Name, Last Name,
    Address, Phone Number, Birthday`` (the audience's merge fields, by their labels), then
    ``MEMBER_RATING, OPTIN_TIME, OPTIN_IP, CONFIRM_TIME, CONFIRM_IP, LATITUDE, LONGITUDE, GMTOFF,
    DSTOFF, TIMEZONE, CC, REGION, LAST_CHANGED, LEID, EUID, NOTES, TAGS``; the unsubscribed file
    adds ``UNSUB_TIME, UNSUB_CAMPAIGN_TITLE, UNSUB_CAMPAIGN_ID, UNSUB_REASON, UNSUB_REASON_OTHER``
    and the cleaned file ``CLEAN_TIME, CLEAN_CAMPAIGN_TITLE, CLEAN_CAMPAIGN_ID``. ``LEID`` is the
    member's id in the audience; ``TIMEZONE`` an IANA zone; a birthday merge field is ``MM/DD``;
    ``TAGS`` a quoted list (``"VIP","Bakery club"``).

    The subscribed file has no consent column (everyone in it subscribed): say so with
    ``consent_default = { email = "yes" }``. The unsubscribed and cleaned files give nobody email
    consent, whatever the default says.
    """
    return Mapping(
        customer={
            "id": Column(("LEID",)),
            "first_name": Column(("First Name",)),
            "last_name": Column(("Last Name",)),
            "email": Column(("Email Address",)),
            "phone": Column(("Phone Number",)),
            "timezone": Column(("TIMEZONE",)),
            "tags": Column(("TAGS",)),
            "birthday": Column(("Birthday",), "%m/%d"),
        },
        consent_refused_by={"email": ("UNSUB_TIME", "CLEAN_TIME")},
        tag_separator=",",
        preset="mailchimp",
    )


#: ``format = NAME`` → the preset's mapping (a fresh one each call: settings change it).
PRESETS: dict[str, Callable[[], Mapping]] = {"shopify": shopify, "mailchimp": mailchimp}
