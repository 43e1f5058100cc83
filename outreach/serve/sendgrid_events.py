"""SendGrid's Event Webhook: ``POST /webhooks/sendgrid``, a JSON array of events per request.

The signature (``X-Twilio-Email-Event-Webhook-Signature``, ECDSA P-256 over the timestamp header
followed by the exact body) is checked with the ``sendgrid`` SDK's own :class:`EventWebhook`
against ``[serve]``'s verification key, and a timestamp outside the replay window is refused.
Each event names its ledger message by ``outreach_key``, the custom argument the SendGrid channel
sets on every message (SendGrid returns custom arguments as top-level fields of the event).

What an event does besides being recorded (once: SendGrid redelivers, and ``sg_event_id``
deduplicates):

* ``bounce`` (a hard bounce or a block), ``dropped`` for an invalid or already-bounced address:
  the address is suppressed (source ``bounce``); ``spamreport``, ``dropped`` for an address that
  reported spam: suppressed with source ``complaint``;
* ``unsubscribe`` and ``group_unsubscribe`` withdraw the customer's email consent in the consent
  ledger, ``group_resubscribe`` grants it back (evidence: the event id, so a redelivery is one
  change);
* any event for a message whose outcome is ``unknown`` settles it as sent: SendGrid had it.
"""

from __future__ import annotations

import binascii
import json
import logging
import time
from typing import Any, Mapping, Sequence

from aiohttp import web
from cryptography.exceptions import UnsupportedAlgorithm
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader

from outreach.ledger import ConsentByEvent
from outreach.policy.addresses import normalize
from outreach.serve.context import ServeContext
from outreach.serve.providers import Handler, Refused, in_thread, read_body

log = logging.getLogger("outreach.serve.sendgrid")

#: The custom argument that carries the ledger key (set by the outreach-sendgrid channel).
KEY_ARG = "outreach_key"
#: ``dropped`` reasons that mean the address must not be written to again, and the source.
DROPPED_SUPPRESS = {"invalid": "bounce", "bounced address": "bounce",
                    "spam reporting address": "complaint"}
#: Events that change the customer's email consent, and how.
CONSENT_ACTIONS = {"unsubscribe": "withdrawn", "group_unsubscribe": "withdrawn",
                   "group_resubscribe": "granted"}


#: What the endpoint answers while the configured key cannot be read: 503, so SendGrid keeps
#: the events and retries until the deployment is fixed.
BAD_KEY = "the configured SendGrid verification key is not a base64 public key"


def verifier(key: str | None) -> EventWebhook | str | None:
    """The SDK's verifier for the configured public key; None without a key (every request is
    refused), :data:`BAD_KEY` when it cannot be read (logged once, never shown)."""
    if not key:
        return None
    try:
        return EventWebhook(key)
    except (ValueError, UnsupportedAlgorithm) as exc:
        log.error("[serve] sendgrid_verification_key: %s (%s); the SendGrid endpoint answers "
                  "503 until it is fixed", BAD_KEY, type(exc).__name__)
        return BAD_KEY


def check_signature(hook: EventWebhook | str | None, headers: Mapping[str, str], body: bytes,
                    window: int, now: float | None = None) -> str:
    """The body as text once its signature and timestamp are proven; :class:`Refused` if not."""
    if hook is None:
        raise Refused(403, "no SendGrid verification key is configured")
    if isinstance(hook, str):
        raise Refused(503, hook)
    signature = headers.get(EventWebhookHeader.SIGNATURE)
    stamp = headers.get(EventWebhookHeader.TIMESTAMP)
    if not signature or not stamp:
        raise Refused(403, "the request is not signed")
    try:
        at = int(stamp)
    except ValueError:
        raise Refused(403, "the signature timestamp is not a number") from None
    if abs((time.time() if now is None else now) - at) > window:
        raise Refused(403, "the signature timestamp is outside the replay window")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8") from None
    try:
        good = hook.verify_signature(text, signature, stamp)
    except (binascii.Error, ValueError):
        good = False
    if not good:
        raise Refused(403, "the signature does not match")
    return text


def parse_events(text: str) -> list[dict[str, Any]]:
    """The events of a body: a JSON array of objects, each with ``event`` and ``sg_event_id``."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise Refused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise Refused(400, "the body must be a JSON array of events")
    for i, e in enumerate(data):
        if not isinstance(e, dict):
            raise Refused(400, f"event {i} is not a JSON object")
        for field in ("event", "sg_event_id"):
            if not isinstance(e.get(field), str) or not e[field]:
                raise Refused(400, f"event {i} has no {field}")
    return data


def message_key(event: Mapping[str, Any]) -> str | None:
    """The ledger key an event carries (top-level, or inside ``custom_args``)."""
    key = event.get(KEY_ARG)
    if key is None and isinstance(event.get("custom_args"), dict):
        key = event["custom_args"].get(KEY_ARG)
    return str(key) if key else None


def _detail(e: Mapping[str, Any]) -> str:
    kind = e["event"]
    if kind == "bounce":
        return " ".join(str(p) for p in (e.get("type") or "bounce", e.get("status") or "",
                                         e.get("reason") or "") if p)
    if kind in ("dropped", "deferred"):
        return str(e.get("reason") or e.get("response") or "")
    if kind == "click":
        return str(e.get("url") or "")
    if kind in ("group_unsubscribe", "group_resubscribe"):
        return f"asm group {e.get('asm_group_id')}" if e.get("asm_group_id") else ""
    return ""


def _suppression(e: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, source) when this event means the address must not be written to again."""
    kind = e["event"]
    if kind == "bounce":
        return f"SendGrid {e.get('type') or 'bounce'}: {e.get('reason') or ''}".strip(), "bounce"
    if kind == "spamreport":
        return "the recipient reported the message as spam", "complaint"
    if kind == "dropped":
        reason = str(e.get("reason") or "")
        source = DROPPED_SUPPRESS.get(reason.strip().lower())
        if source:
            return f"SendGrid dropped the message: {reason}", source
    return None


def _time(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def record(ctx: ServeContext, events: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Record one request's events, suppress and change consent; the counts."""
    rows, blocks = [], []
    for e in events:
        rows.append({"provider": "sendgrid", "provider_event_id": e["sg_event_id"],
                     "kind": e["event"][:32], "message_key": message_key(e),
                     "detail": _detail(e), "machine_open": bool(e.get("sg_machine_open")),
                     "occurred_at": _time(e.get("timestamp"))})
        blocked = _suppression(e)
        if blocked:
            address, _ = normalize("email", str(e.get("email") or ""))
            if address:
                blocks.append((e["sg_event_id"], "email", address, blocked[0], blocked[1]))
    changes = [ConsentByEvent(e["sg_event_id"], CONSENT_ACTIONS[e["event"]], "sendgrid",
                              f"sendgrid:{e['sg_event_id']}",
                              _time(e.get("timestamp")) or int(time.time()),
                              message_key=message_key(e))
               for e in events if e["event"] in CONSENT_ACTIONS and message_key(e)]
    batch = ctx.ledger.record_delivery_events(
        rows, suppress=blocks, consent=changes,
        consent_keys={name: cfg.consent for name, cfg in ctx.project.channels.items()})
    return {"received": batch.received, "new": len(batch.new), "duplicates": batch.duplicates,
            "unmatched": batch.unmatched, "settled": batch.settled,
            "consent_changes": batch.consent_changes}


def sendgrid_handler(ctx: ServeContext) -> Handler:
    """The ``POST /webhooks/sendgrid`` handler of this context."""
    hook = verifier(ctx.settings.sendgrid_verification_key)

    async def handle(request: web.Request) -> web.Response:
        body = await read_body(request, ctx.settings.max_body)
        text = check_signature(hook, request.headers, body, ctx.settings.replay_window)
        events = parse_events(text)
        counts = await in_thread(ctx.ledger, record, ctx, events)
        log.info("sendgrid: %(received)d event(s), %(new)d new, %(duplicates)d redelivered, "
                 "%(unmatched)d unmatched, %(settled)d unknown outcome(s) settled", counts)
        return web.json_response(counts)

    return handle
