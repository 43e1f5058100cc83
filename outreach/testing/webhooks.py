"""Provider webhook requests signed the way SendGrid and Twilio sign them, for tests and the
webhook benchmark.

SendGrid signs the timestamp followed by the raw body with ECDSA P-256 / SHA-256 and sends the
DER signature in base64; its verification key is the base64 DER public key (what the SendGrid
console shows). Twilio's signature is computed by the ``twilio`` SDK's own
:meth:`RequestValidator.compute_signature` over the URL it was told to call and the form.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Mapping, Sequence
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


class SendGridSigner:
    """A fresh P-256 key pair standing in for an account's Event Webhook signing key."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        #: The verification key, as the SendGrid console shows it.
        self.public_key = base64.b64encode(der).decode("ascii")

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The signature headers SendGrid sends with ``body``."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"Content-Type": "application/json",
                "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": stamp}


def sendgrid_body(events: Sequence[Mapping[str, Any]]) -> bytes:
    """A request body as SendGrid posts it: a JSON array of events."""
    return json.dumps(list(events), separators=(",", ":")).encode()


def sendgrid_event(kind: str, key: str | None, event_id: str, email: str = "ani@example.com",
                   **fields: Any) -> dict[str, Any]:
    """One event as SendGrid sends it, with the ledger key as a top-level custom argument."""
    event = {"email": email, "timestamp": int(time.time()), "event": kind,
             "sg_event_id": event_id, "sg_message_id": f"m-{event_id}", **fields}
    if key is not None:
        event["outreach_key"] = key
    return event


def twilio_request(auth_token: str, url: str, form: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a Twilio webhook POST to ``url`` carrying ``form``."""
    from twilio.request_validator import RequestValidator

    signature = RequestValidator(auth_token).compute_signature(url, dict(form))
    return urlencode(form).encode(), {"Content-Type": "application/x-www-form-urlencoded",
                                      "X-Twilio-Signature": signature}
