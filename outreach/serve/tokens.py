"""Signed links: a token names a customer, what the link acts on (a channel's consent key or a
campaign category) and the message it came in, and proves outreach made it.

A token is ``PAYLOAD.TAG``: the payload is compact JSON in unpadded base64url, the tag the
HMAC-SHA256 of the payload under the ``[serve]`` token secret (standard library ``hmac``,
compared in constant time). That is all a link needs: tokens never expire (CAN-SPAM wants an
unsubscribe link to work for at least 30 days after sending, and a customer may find an old email
years later), so itsdangerous's timestamps and key derivation would add a dependency for nothing.
Nobody without the secret can make a valid token, so ids cannot be enumerated by trying them;
changing one character of a token makes it invalid. The payload is readable (base64, not
encrypted): it holds the customer's id and the message's key, which its recipient already has,
and never an address or a name. A purpose (``u``: unsubscribe and
preferences, ``f``: feedback) is signed in, so a feedback link cannot unsubscribe anybody.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

#: The purposes a token is signed for.
UNSUBSCRIBE = "u"
FEEDBACK = "f"
#: A provider's delivery-status callback for one message (outreach.serve.twilio_callbacks).
STATUS = "s"
_VERSION = 1
#: A token longer than this is refused before any work (a message key is at most 255 characters).
MAX_TOKEN = 1024


class BadToken(Exception):
    """A token that is malformed (``malformed``: 400) or not signed by us (403)."""

    def __init__(self, reason: str, *, malformed: bool = False) -> None:
        super().__init__(reason)
        self.malformed = malformed


@dataclass(frozen=True)
class Token:
    """What a link is about."""

    purpose: str
    customer_id: str
    #: The message the link came in (its ledger key).
    key: str
    #: The channel's consent key ("email") an unsubscribe withdraws, or None.
    consent: str | None = None
    #: The campaign category ("marketing") an unsubscribe leaves, or None.
    category: str | None = None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(secret: bytes, payload: str) -> bytes:
    return hmac.new(secret, b"outreach-link\x00" + payload.encode("ascii"), hashlib.sha256).digest()


def make(secret: bytes, token: Token) -> str:
    """The signed text of ``token``."""
    body: dict[str, Any] = {"v": _VERSION, "p": token.purpose, "c": token.customer_id,
                            "k": token.key}
    if token.consent is not None:
        body["ch"] = token.consent
    if token.category is not None:
        body["cat"] = token.category
    payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{payload}.{_b64(_tag(secret, payload))}"


def read(secret: bytes, text: str, purpose: str) -> Token:
    """The token ``text`` names, checked: raises :class:`BadToken` unless we signed it for
    ``purpose``."""
    if not text or len(text) > MAX_TOKEN or text.count(".") != 1:
        raise BadToken("the link is not one outreach made", malformed=bool(text) and
                       len(text) <= MAX_TOKEN)
    payload, tag = text.split(".")
    try:
        given = _unb64(tag)
        payload.encode("ascii")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise BadToken("the link is garbled", malformed=True) from None
    if not hmac.compare_digest(given, _tag(secret, payload)):
        raise BadToken("the link's signature does not match")
    try:
        body = json.loads(_unb64(payload))
        if body.get("v") != _VERSION or not isinstance(body.get("c"), str):
            raise ValueError
        token = Token(purpose=body["p"], customer_id=body["c"], key=body["k"],
                      consent=body.get("ch"), category=body.get("cat"))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BadToken("the link names nothing we know")
    if token.purpose != purpose:
        raise BadToken("the link is not for this page")
    return token


def links(public_url: str, secret: bytes, customer_id: str, key: str, consent: str,
          category: str) -> dict[str, str]:
    """The template variables ``unsubscribe_url``, ``preferences_url`` and ``feedback_url`` of
    one message: an unsubscribe link withdraws the message's channel (its consent key); the
    preference page it opens offers every channel and category."""
    base = public_url.rstrip("/")
    unsub = make(secret, Token(UNSUBSCRIBE, customer_id, key, consent=consent))
    feedback = make(secret, Token(FEEDBACK, customer_id, key))
    status = make(secret, Token(STATUS, customer_id, key))
    return {"unsubscribe_url": f"{base}/u/{quote(unsub)}",
            # Where an SMS provider reports this message's delivery (the Twilio channel sets it
            # as the message's status_callback): the evidence that settles an unknown outcome.
            "status_callback_url": f"{base}/webhooks/twilio/status/{quote(status)}",
            "preferences_url": f"{base}/u/{quote(unsub)}",
            "feedback_url": f"{base}/f/{quote(feedback)}"}
