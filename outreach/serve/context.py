"""What every endpoint of ``outreach serve`` is given: the project, its ledger and the ``[serve]``
settings, so a handler never reads configuration or the environment itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from outreach.config import Project
    from outreach.ledger import Ledger


@dataclass(frozen=True)
class ServeSettings:
    """The ``[serve]`` table, with secrets already read from the environment."""

    #: The address customers and providers reach, e.g. ``https://mail.example.com/outreach``:
    #: links are built on it and signatures are computed against it (a proxy changes what the
    #: server itself sees).
    public_url: str
    #: Key for signing links (unsubscribe, preferences, feedback, per-message callbacks).
    token_secret: bytes = field(repr=False)
    #: SendGrid's Event Webhook verification key (base64 DER public key), None: endpoint refuses.
    sendgrid_verification_key: str | None = field(default=None, repr=False)
    #: Twilio's auth token, which signs its callbacks; None: the Twilio endpoints refuse.
    twilio_auth_token: str | None = field(default=None, repr=False)
    #: Largest accepted request body, in bytes (413 above it).
    max_body: int = 1_048_576
    #: Signed webhook timestamps older or newer than this many seconds are refused as replays.
    replay_window: int = 300


@dataclass
class ServeContext:
    project: Project
    ledger: Ledger
    settings: ServeSettings
