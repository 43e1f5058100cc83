"""Twilio's status callbacks and inbound SMS.

``POST /webhooks/twilio/status/<token>``: Twilio reports what happened to one message (queued,
sent, delivered, undelivered, failed, with an ``ErrorCode``). The token in the path is the
message's ledger key, signed with ``[serve]``'s token secret (outreach.serve.tokens), so the URL names its message and
cannot be made up; the Twilio channel sets it as each message's ``status_callback``. A failure with
one of the Twilio channel's suppressing codes (21610: the recipient replied STOP; not a mobile or
not a valid number) suppresses the number, as the same failure at send time does.

``POST /webhooks/twilio/inbound``: a message a customer sent to the sending number. An opt-out
keyword (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT: the whole body, any case,
or Advanced Opt-Out's ``OptOutType=STOP``) withdraws SMS consent for every customer the ledger has
texted at that number (the consent ledger outranks the next audience export) and suppresses the
number itself, so it also holds for a customer the next export brings in with it. START, YES
and UNSTOP undo only that: the consent changes a STOP recorded and a suppression a STOP (or a
21610 refusal) caused; an operator's suppression stays. HELP and INFO record nothing (Twilio
answers them itself). The answer is always empty TwiML, so nothing is texted back from here.

Both check ``X-Twilio-Signature`` with the ``twilio`` SDK's :class:`RequestValidator` against
``[serve] public_url`` followed by the path: what Twilio was told to call, not what a proxy hands
the server.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote

from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import RequestValidator, get_signature_algorithm

from outreach.ledger import ConsentByEvent
from outreach.policy.addresses import normalize
from outreach.serve import tokens
from outreach.serve.context import ServeContext, ServeSettings
from outreach.serve.providers import Handler, Refused, in_thread, read_body

log = logging.getLogger("outreach.serve.twilio")

STATUS_PATH = "/webhooks/twilio/status/"
OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE",
                     "OPTOUT"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
#: The consent-change source of an SMS keyword.
STOP_SOURCE = "stop"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


# -- the signed message token -------------------------------------------------------------------

def status_callback_url(settings: ServeSettings, customer_id: str, key: str) -> str:
    """Where Twilio reports the delivery of the message ``key`` (as the dispatcher gives it to
    the Twilio channel, in ``message.variables["status_callback_url"]``)."""
    return tokens.links(settings.public_url, settings.token_secret, customer_id, key, "sms",
                        "")["status_callback_url"]


def message_key(settings: ServeSettings, token: str) -> str:
    """The key a status token names; :class:`Refused` unless we signed it for a status."""
    try:
        return tokens.read(settings.token_secret, unquote(token), tokens.STATUS).key
    except tokens.BadToken as exc:
        raise Refused(400 if exc.malformed else 403, f"the callback token is not valid: {exc}") from None


# -- reading and proving a request ----------------------------------------------------------------

async def proven_form(request: web.Request, settings: ServeSettings,
                      validator: RequestValidator | None) -> MultiDict[str]:
    """The form Twilio posted, once ``X-Twilio-Signature`` proves it; :class:`Refused` if not."""
    body = await read_body(request, settings.max_body)
    if validator is None:
        raise Refused(403, "no Twilio auth token is configured")
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        raise Refused(403, "the request is not signed")
    kind = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Refused(400, "expected an application/x-www-form-urlencoded body")
    try:
        form = MultiDict(parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                   strict_parsing=bool(body), errors="strict"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(400, f"the form cannot be read: {type(exc).__name__}") from None
    url = settings.public_url.rstrip("/") + request.rel_url.path_qs
    algorithm = get_signature_algorithm(request.headers.get("X-Twilio-Webhooks-Signature-Settings"))
    if not validator.validate(url, form, signature, algorithm):
        raise Refused(403, "the signature does not match")
    return form


def _validator(settings: ServeSettings) -> RequestValidator | None:
    return RequestValidator(settings.twilio_auth_token) if settings.twilio_auth_token else None


def _suppress_codes() -> Mapping[int, str]:
    """The Twilio channel's codes that mean "never text this number again"."""
    from outreach_twilio.channel import SUPPRESS_CODES

    return SUPPRESS_CODES


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# -- status callbacks -----------------------------------------------------------------------------

def record_status(ctx: ServeContext, key: str, form: Mapping[str, str]) -> dict[str, int]:
    sid, status = form["MessageSid"], form["MessageStatus"]
    code = _int(form.get("ErrorCode"))
    why = _suppress_codes().get(code) if code is not None else None
    detail = f"ErrorCode {code}" + (f": {why}" if why else "") if code else ""
    event_id = f"{sid}:{status}"
    blocks = []
    if why and status in ("failed", "undelivered"):
        number, _ = normalize("phone", form.get("To") or "")
        if number:
            blocks.append((event_id, "phone", number, why, f"twilio:{code}"))
    batch = ctx.ledger.record_delivery_events(
        [{"provider": "twilio", "provider_event_id": event_id, "kind": status[:32],
          "message_key": key, "detail": detail, "occurred_at": int(time.time())}],
        suppress=blocks)
    return {"new": len(batch.new), "unmatched": batch.unmatched, "settled": batch.settled}


def status_handler(ctx: ServeContext) -> Handler:
    """The ``POST /webhooks/twilio/status/{token}`` handler of this context."""
    validator = _validator(ctx.settings)

    async def handle(request: web.Request) -> web.Response:
        form = await proven_form(request, ctx.settings, validator)
        key = message_key(ctx.settings, request.match_info["token"])
        for field in ("MessageSid", "MessageStatus"):
            if not form.get(field):
                raise Refused(400, f"the form has no {field}")
        counts = await in_thread(ctx.ledger, record_status, ctx, key, form)
        log.info("twilio status %s: %d new, %d settled", form["MessageStatus"][:32],
                 counts["new"], counts["settled"])
        return web.Response(status=204)

    return handle


# -- inbound SMS ----------------------------------------------------------------------------------

def keyword(form: Mapping[str, str]) -> str | None:
    """"stop", "start" or None for what an inbound message asks."""
    opt = (form.get("OptOutType") or "").strip().upper()
    if opt in ("STOP", "START"):
        return opt.lower()
    word = (form.get("Body") or "").strip().upper()
    if word in OPT_OUT:
        return "stop"
    if word in OPT_IN:
        return "start"
    return None


def record_inbound(ctx: ServeContext, form: Mapping[str, str], number: str, word: str) -> dict[str, int]:
    sid = form["MessageSid"]
    channels = {name: cfg.consent for name, cfg in ctx.project.channels.items()
                if cfg.cls.address == "phone"}
    people = ctx.ledger.customers_at(number, sorted(channels))
    latest = max(people, key=lambda p: p[2], default=None)
    pairs = sorted({(cid, channels[channel]) for cid, channel, _ in people})
    now = int(time.time())
    event_id = f"inbound:{sid}"
    reason = "the recipient texted an opt-out keyword"
    batch = ctx.ledger.record_delivery_events(
        [{"provider": "twilio", "provider_event_id": event_id, "kind": f"inbound_{word}",
          "message_key": latest[2] if latest else None,
          "detail": (form.get("Body") or form.get("OptOutType") or "").strip()[:32].upper(),
          "occurred_at": int(time.time())}],
        suppress=[(event_id, "phone", number, reason, STOP_SOURCE)] if word == "stop" else (),
        consent=[ConsentByEvent(event_id, "withdrawn", STOP_SOURCE, f"twilio:{sid}", now,
                                customer_id=cid, consent=consent)
                 for cid, consent in pairs] if word == "stop" else ())
    if word == "stop":
        return {"new": len(batch.new), "consent_changes": batch.consent_changes}
    changed = 0
    for cid, consent in pairs:  # a redelivered START finds the grant already the latest change
        last = [c for c in ctx.ledger.consent_history(cid)
                if c["consent"] == consent and c["category"] is None]
        if last and last[-1]["action"] == "withdrawn" and last[-1]["source"] == STOP_SOURCE:
            changed += ctx.ledger.record_consent_change(
                cid, consent=consent, action="granted", source=STOP_SOURCE,
                evidence=f"twilio:{sid}", at=now)
    source = ctx.ledger.suppression_source("phone", number)
    if source == STOP_SOURCE or (source or "").endswith(":21610"):
        ctx.ledger.unsuppress("phone", number)
    return {"new": len(batch.new), "consent_changes": changed}


def inbound_handler(ctx: ServeContext) -> Handler:
    """The ``POST /webhooks/twilio/inbound`` handler of this context."""
    validator = _validator(ctx.settings)

    async def handle(request: web.Request) -> web.Response:
        form = await proven_form(request, ctx.settings, validator)
        if not form.get("MessageSid") or not form.get("From"):
            raise Refused(400, "the form has no MessageSid or From")
        word = keyword(form)
        number, _ = normalize("phone", form["From"])
        if word is not None and number:
            counts = await in_thread(ctx.ledger, record_inbound, ctx, form, number, word)
            log.info("twilio inbound %s: %d new, %d consent change(s)", word, counts["new"],
                     counts["consent_changes"])
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

    return handle
