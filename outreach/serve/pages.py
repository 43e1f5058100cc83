"""The pages a customer reaches from a message: one-click unsubscribe (RFC 8058), the preference
page, and the one-question feedback page.

``GET /u/<token>`` shows the preference page; ``POST /u/<token>`` with ``List-Unsubscribe=One-Click``
(what Gmail, Yahoo and Apple Mail send, urlencoded or multipart, no cookies) withdraws the consent
the token names and answers 200 at once, never a redirect; the same URL takes the page's own form.
A GET never changes anything (mail scanners open links). ``GET``/``POST /f/<token>`` ask for and
store a 1–5 rating with an optional comment, as a ``feedback`` event rules read.

Pages are rendered on the server by a sandboxed, autoescaping Jinja environment, in the message's
language, with no script and no external asset. They show the first name and a masked address,
nothing else about the customer. A token that is not ours, or that names a message the ledger does
not hold, is a 403 and nothing is recorded; a body that is not a form we know is a 400.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Mapping

from aiohttp import web
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from outreach.consent import CATEGORY
from outreach.serve import tokens
from outreach.serve.context import ServeContext
from outreach.serve.texts import texts_for

log = logging.getLogger("outreach.serve")

#: The categories a customer can leave from the preference page (transactional messages, such as
#: receipts, follow the channels only).
CATEGORIES = ("marketing",)
#: "Fewer messages": the choice's name -> (at most this many marketing messages, per seconds).
FEWER = {"week": (1, 7 * 86400), "month": (1, 30 * 86400)}
#: The longest comment kept on a feedback answer.
MAX_COMMENT = 2000

_env = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)

_LAYOUT = """<!doctype html>
<html lang="{{ lang }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, "Noto Sans", "Noto Sans Armenian", "DejaVu Sans", sans-serif;
       max-width: 36rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; color: #1d1d1f; }
h1 { font-size: 1.5rem; } fieldset { border: 1px solid #ccc; border-radius: .5rem; margin: 1rem 0; }
label { display: block; margin: .3rem 0; } .note { color: #555; font-size: .9rem; }
.done { background: #e8f5e9; border-radius: .5rem; padding: .75rem 1rem; }
.problem { background: #fdecea; border-radius: .5rem; padding: .75rem 1rem; }
button { font: inherit; padding: .5rem 1rem; margin: .3rem 0; border-radius: .4rem;
         border: 1px solid #888; background: #f5f5f5; cursor: pointer; }
button.main { background: #1d1d1f; color: #fff; border-color: #1d1d1f; }
textarea { width: 100%; min-height: 6rem; font: inherit; }
</style>
</head>
<body>
<main>
<h1>{{ title }}</h1>
{% block content %}{% endblock %}
</main>
</body>
</html>
"""

_PREFS = _env.from_string("""{% extends layout %}{% block content %}
<p>{{ greeting }}</p>
{% if done %}<p class="done" role="status">{{ done }}</p>{% endif %}
<p class="note">{{ address_line }}</p>
<form method="post" id="preferences">
{% if unsubscribe_label %}
<p><button type="submit" name="action" value="unsubscribe" class="main" id="unsubscribe">{{ unsubscribe_label }}</button></p>
{% endif %}
<fieldset><legend>{{ t.channels }}</legend>
{% for c in channels %}
<label><input type="checkbox" name="channel" value="{{ c.key }}"{% if c.on %} checked{% endif %}> {{ c.label }}</label>
{% endfor %}
</fieldset>
<fieldset><legend>{{ t.categories }}</legend>
{% for c in categories %}
<label><input type="checkbox" name="category" value="{{ c.key }}"{% if c.on %} checked{% endif %}> {{ c.label }}</label>
{% endfor %}
<p class="note">{{ t.transactional_note }}</p>
</fieldset>
<fieldset><legend>{{ t.fewer }}</legend>
{% for value, label in fewer %}
<label><input type="radio" name="fewer" value="{{ value }}"{% if value == fewer_now %} checked{% endif %}> {{ label }}</label>
{% endfor %}
</fieldset>
<p><button type="submit" name="action" value="save" id="save">{{ t.save }}</button></p>
<p><button type="submit" name="action" value="everything" id="everything">{{ t.everything }}</button></p>
</form>
{% endblock %}""")

_FEEDBACK = _env.from_string("""{% extends layout %}{% block content %}
{% if done %}<p class="done" role="status">{{ done }}</p>{% else %}
<p>{{ greeting }}</p>
{% if problem %}<p class="problem" role="alert">{{ problem }}</p>{% endif %}
<form method="post" id="feedback">
<fieldset><legend>{{ t.feedback_question }}</legend>
{% for n in [1, 2, 3, 4, 5] %}
<label><input type="radio" name="rating" value="{{ n }}"{% if rating == n %} checked{% endif %}> {{ n }} — {{ t["rating_" ~ n] }}</label>
{% endfor %}
</fieldset>
<label for="comment">{{ t.comment }}</label>
<textarea name="comment" id="comment" maxlength="{{ max_comment }}">{{ comment }}</textarea>
<p><button type="submit" class="main" id="send">{{ t.send }}</button></p>
</form>
{% endif %}
{% endblock %}""")

_MESSAGE = _env.from_string("""{% extends layout %}{% block content %}
<p class="{{ kind }}" role="status">{{ text }}</p>
{% endblock %}""")

_LAYOUT_T = _env.from_string(_LAYOUT)


def routes(ctx: ServeContext) -> list[web.RouteDef]:
    """The customer pages' routes."""
    pages = _Pages(ctx)
    return [web.get("/u/{token}", pages.preferences), web.post("/u/{token}", pages.unsubscribe),
            web.get("/f/{token}", pages.feedback), web.post("/f/{token}", pages.answer),
            web.get("/healthz", pages.health),
            # A link cut short by a mail client: no token, nothing to do, nothing recorded.
            web.route("*", "/u/", pages.missing), web.route("*", "/f/", pages.missing)]


def mask(address: str) -> str:
    """An address as a page shows it: enough to recognise, not enough to learn it.
    ``ani.petrosyan@example.com`` → ``a•••@e•••.com``; ``+18185550101`` → ``•••• 01``."""
    if "@" in address:
        local, _, domain = address.rpartition("@")
        name, dot, tld = domain.rpartition(".")
        masked_domain = (name[:1] + "•••" + dot + tld) if name else domain[:1] + "•••"
        return f"{local[:1]}•••@{masked_domain}"
    digits = [ch for ch in address if ch.isdigit()]
    return "•••• " + "".join(digits[-2:])


class _Pages:
    def __init__(self, ctx: ServeContext) -> None:
        self.ctx = ctx
        self.secret = ctx.settings.token_secret
        # Channels by consent key, in the order configured (a key shared by two channels is one
        # choice for the customer).
        self.consents: dict[str, list[str]] = {}
        for name, cfg in ctx.project.channels.items():
            self.consents.setdefault(cfg.consent, []).append(name)

    # ------------------------------------------------------------------ plumbing
    def _token(self, request: web.Request, purpose: str) -> tokens.Token:
        try:
            return tokens.read(self.secret, request.match_info.get("token", ""), purpose)
        except tokens.BadToken as exc:
            lang, t = texts_for(request.headers.get("Accept-Language", "en")[:2])
            status = 400 if exc.malformed else 403
            log.info("refused a link (%s): %s", status, exc)
            raise _page_error(status, t, lang, str(exc)) from None

    def _message(self, token: tokens.Token, request: web.Request) -> dict[str, Any]:
        msg = self.ctx.ledger.message_by_key(token.key)
        if msg is None or msg["customer_id"] != token.customer_id:
            lang, t = texts_for("en")
            log.info("refused a link (403): it names a message the ledger does not hold")
            raise _page_error(403, t, lang, "the message this link came in is unknown")
        return msg

    @staticmethod
    def _first_name(msg: Mapping[str, Any]) -> str:
        try:
            import json

            customer = json.loads(msg["variables"]).get("customer") or {}
            first = customer.get("first_name")
        except (ValueError, AttributeError):
            first = None
        return str(first or (msg.get("name") or "").split(" ")[0])

    def _channel_label(self, t: Mapping[str, str], key: str) -> str:
        return t.get(f"channel_{key}", key)

    # ------------------------------------------------------------------ preferences
    async def preferences(self, request: web.Request) -> web.Response:
        token = self._token(request, tokens.UNSUBSCRIBE)
        msg, changes, cap = await asyncio.to_thread(self._state, token, request)
        return self._prefs_page(token, msg, changes, cap, done=None)

    def _state(self, token: tokens.Token, request: web.Request
               ) -> tuple[dict[str, Any], dict[str, str], tuple[int, int] | None]:
        msg = self._message(token, request)
        cid = token.customer_id
        changes = self.ctx.ledger.consent_overrides([cid]).get(cid, {})
        cap = self.ctx.ledger.customer_caps([cid]).get(cid)
        return msg, changes, cap

    def _prefs_page(self, token: tokens.Token, msg: Mapping[str, Any], changes: Mapping[str, str],
                    cap: tuple[int, int] | None, done: str | None, status: int = 200
                    ) -> web.Response:
        lang, t = texts_for(msg.get("locale") or "")
        first = self._first_name(msg)
        fewer_now = next((k for k, v in FEWER.items() if cap == v), "")
        unsubscribe_label = None
        if token.consent is not None and changes.get(token.consent) != "withdrawn":
            unsubscribe_label = t["unsubscribe_one"].format(
                channel=self._channel_label(t, token.consent))
        html = _PREFS.render(
            layout=_LAYOUT_T, lang=lang, t=t, title=t["prefs_title"],
            greeting=t["hello"].format(name=first) if first else t["hello_anonymous"],
            address_line=t["address"].format(address=mask(msg["address"])),
            unsubscribe_label=unsubscribe_label, done=done,
            channels=[{"key": k, "label": _initial(self._channel_label(t, k)),
                       "on": changes.get(k) != "withdrawn"} for k in self.consents],
            categories=[{"key": c, "label": t[f"category_{c}"],
                         "on": changes.get(CATEGORY + c) != "withdrawn"} for c in CATEGORIES],
            fewer=[("", t["fewer_none"]), ("week", t["fewer_week"]), ("month", t["fewer_month"])],
            fewer_now=fewer_now)
        return _html(html, status)

    async def unsubscribe(self, request: web.Request) -> web.Response:
        """RFC 8058 one-click, or the preference page's form."""
        token = self._token(request, tokens.UNSUBSCRIBE)
        try:
            form = await request.post()
        except web.HTTPException:
            raise  # 413 above max_body
        except (ValueError, UnicodeDecodeError, AssertionError) as exc:
            raise web.HTTPBadRequest(text=f"the body is not a form: {type(exc).__name__}\n")
        one_click = form.get("List-Unsubscribe") == "One-Click"
        action = form.get("action")
        if not one_click and action not in ("unsubscribe", "save", "everything"):
            raise web.HTTPBadRequest(text="expected List-Unsubscribe=One-Click (RFC 8058) or a "
                                          "choice from the preference page\n")
        channels = [str(v) for v in form.getall("channel", [])]
        categories = [str(v) for v in form.getall("category", [])]
        fewer = str(form.get("fewer") or "")
        if fewer and fewer not in FEWER:
            raise web.HTTPBadRequest(text=f"fewer must be one of {', '.join(FEWER)} or empty\n")
        now = int(time.time())

        def work() -> tuple[dict[str, Any], dict[str, str], tuple[int, int] | None, str]:
            msg = self._message(token, request)
            cid = token.customer_id
            before = self.ctx.ledger.consent_overrides([cid]).get(cid, {})
            _, t = texts_for(msg.get("locale") or "")
            if one_click or action == "unsubscribe":
                self._apply(token, before, withdraw=self._named(token), grant=[],
                            source="link", now=now)
                label = self._channel_label(t, token.consent) if token.consent else \
                    t.get(f"category_{token.category}", str(token.category))
                done = t["unsubscribed_one"].format(channel=label)
            elif action == "everything":
                self._apply(token, before, withdraw=list(self.consents), grant=[],
                            source="preferences", now=now)
                done = t["everything_done"]
            else:
                keep = set(channels) | {CATEGORY + c for c in categories}
                every = list(self.consents) + [CATEGORY + c for c in CATEGORIES]
                self._apply(token, before, withdraw=[k for k in every if k not in keep],
                            grant=[k for k in every if k in keep], source="preferences", now=now)
                most = FEWER.get(fewer)
                self.ctx.ledger.set_customer_cap(cid, *(most if most else (None, 0)))
                done = t["saved"]
            changes = self.ctx.ledger.consent_overrides([cid]).get(cid, {})
            cap = self.ctx.ledger.customer_caps([cid]).get(cid)
            return msg, changes, cap, done

        msg, changes, cap, done = await asyncio.to_thread(work)
        if one_click:
            return web.Response(text="unsubscribed\n", content_type="text/plain")
        return self._prefs_page(token, msg, changes, cap, done=done)

    @staticmethod
    def _named(token: tokens.Token) -> list[str]:
        if token.consent is not None:
            return [token.consent]
        if token.category is not None:
            return [CATEGORY + token.category]
        return []

    def _apply(self, token: tokens.Token, before: Mapping[str, str], *, withdraw: list[str],
               grant: list[str], source: str, now: int) -> None:
        """Record what changed (a key already in the state asked for records nothing: a second
        click is no new change) and withdraw the waiting messages a withdrawal stops."""
        ledger, cid = self.ctx.ledger, token.customer_id
        # Each request is its own evidence (two saves in one second are two changes); a repeated
        # click is made idempotent by the state read above, not by the evidence.
        evidence = f"{token.key} request {uuid.uuid4().hex[:16]}"
        for key in withdraw:
            if before.get(key) == "withdrawn":
                continue
            consent, category = _split(key)
            ledger.record_consent_change(cid, consent=consent, category=category,
                                         action="withdrawn", source=source, evidence=evidence,
                                         at=now)
            if consent is not None:
                channels = self.consents.get(consent, [])
                ledger.withdraw([cid], channels, f"consent for {consent} was withdrawn by the "
                                                 "customer after it was planned")
            else:
                ledger.withdraw([cid], list(self.ctx.project.channels),
                                f"the customer unsubscribed from {category} messages after it "
                                "was planned", categories=[str(category)])
        for key in grant:
            if before.get(key) != "withdrawn":
                continue  # granting restores only what was withdrawn through outreach
            consent, category = _split(key)
            ledger.record_consent_change(cid, consent=consent, category=category,
                                         action="granted", source=source, evidence=evidence,
                                         at=now)

    # ------------------------------------------------------------------ feedback
    async def feedback(self, request: web.Request) -> web.Response:
        token = self._token(request, tokens.FEEDBACK)
        msg = await asyncio.to_thread(self._message, token, request)
        return self._feedback_page(msg, done=None)

    def _feedback_page(self, msg: Mapping[str, Any], *, done: str | None, problem: str = "",
                       rating: int | None = None, comment: str = "", status: int = 200
                       ) -> web.Response:
        lang, t = texts_for(msg.get("locale") or "")
        first = self._first_name(msg)
        html = _FEEDBACK.render(
            layout=_LAYOUT_T, lang=lang, t=t, title=t["feedback_title"],
            greeting=t["hello"].format(name=first) if first else t["hello_anonymous"],
            done=done, problem=problem, rating=rating, comment=comment, max_comment=MAX_COMMENT)
        return _html(html, status)

    async def answer(self, request: web.Request) -> web.Response:
        token = self._token(request, tokens.FEEDBACK)
        try:
            form = await request.post()
        except web.HTTPException:
            raise
        except (ValueError, UnicodeDecodeError, AssertionError) as exc:
            raise web.HTTPBadRequest(text=f"the body is not a form: {type(exc).__name__}\n")
        comment = str(form.get("comment") or "").strip()[:MAX_COMMENT]
        raw = str(form.get("rating") or "")
        msg = await asyncio.to_thread(self._message, token, request)
        if raw not in ("1", "2", "3", "4", "5"):
            _, t = texts_for(msg.get("locale") or "")
            return self._feedback_page(msg, done=None, problem=t["choose_rating"],
                                       comment=comment, status=400)
        rating = int(raw)
        now = int(time.time())
        await asyncio.to_thread(
            self.ctx.ledger.record_customer_event, f"feedback:{token.key}", token.customer_id,
            "feedback", now, {"rating": rating, "comment": comment, "message": token.key,
                              "campaign": msg["campaign"]})
        _, t = texts_for(msg.get("locale") or "")
        return self._feedback_page(msg, done=t["thanks"])

    async def missing(self, request: web.Request) -> web.Response:
        lang, t = texts_for("en")
        raise _page_error(403, t, lang, "the link has no token")

    async def health(self, request: web.Request) -> web.Response:
        """For a load balancer: 200 when the ledger answers (503 from the middleware if not)."""
        await asyncio.to_thread(self.ctx.ledger.last_message_id)
        return web.Response(text="ok\n")


def _initial(text: str) -> str:
    """``text`` with a capital first letter, the rest as written ("SMS" stays "SMS")."""
    return text[:1].upper() + text[1:]


def _split(key: str) -> tuple[str | None, str | None]:
    if key.startswith(CATEGORY):
        return None, key[len(CATEGORY):]
    return key, None


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'none'; style-src "
                                 "'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
                                 "Referrer-Policy": "no-referrer"})


def _page_error(status: int, t: Mapping[str, str], lang: str, reason: str) -> web.HTTPException:
    html = _MESSAGE.render(layout=_LAYOUT_T, lang=lang, title=t["bad_link"], kind="problem",
                           text=reason)
    cls = web.HTTPBadRequest if status == 400 else web.HTTPForbidden
    return cls(text=html, content_type="text/html")
