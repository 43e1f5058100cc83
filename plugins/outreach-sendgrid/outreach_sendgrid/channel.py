"""The SendGrid email channel: the official ``sendgrid`` SDK, v3 Mail Send.

One request per message, except with a SendGrid dynamic template (``template_id``), where up to
1000 recipients share one request as personalizations, each with its own ``to``,
``dynamic_template_data``, ``custom_args`` and headers. Every message carries its ledger key in
``custom_args.outreach_key`` so SendGrid's event webhook can be matched back to the ledger.

How failures are classified (the core retries, fails, marks unknown or stops the channel on that
basis):

* HTTP 429: :class:`TransientError`, ``retry_after`` from ``Retry-After`` or ``X-RateLimit-Reset``
  (epoch seconds, turned into seconds from now);
* HTTP 5xx: :class:`TransientError`;
* HTTP 401 and 403 (the API key refused or lacking Mail Send permission, the sender not a verified
  Sender Identity), 404 (``api_host`` is not SendGrid's API), and a 400 whose every error is about
  the sender (``from``, ``reply_to``, ``asm``: the channel's settings, not the message):
  :class:`ConfigurationError`, so the messages stay queued until the deployment is fixed;
* the connection could not be made or was refused before the request was sent (urllib raises
  ``URLError`` only while connecting and sending): :class:`TransientError`;
* any other HTTP 4xx: :class:`PermanentError`, with SendGrid's own error messages;
* a read timeout or a connection closed after the request was sent (urllib lets ``TimeoutError``,
  ``RemoteDisconnected`` and other ``OSError``/``HTTPException`` through from ``getresponse``):
  :class:`UnknownOutcomeError`, since SendGrid may have accepted the mail.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
import urllib.error
from html.parser import HTMLParser
from typing import Any, ClassVar, Hashable, Mapping, Sequence
from urllib.parse import quote

import python_http_client.exceptions as http_errors
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Asm, Category, Content, CustomArg, From, Header, Mail, Personalization, ReplyTo, TemplateId, To,
)

from outreach.channel import (LIVE_SECRETS, Channel, ChannelError, ConfigurationError, Delivery,
                              OutgoingMessage, PermanentError, TemplateField, TransientError,
                              UnknownOutcomeError, connection_reason, retry_after)
from outreach.settings import Setting

log = logging.getLogger(__name__)

#: The placeholders an unsubscribe link may hold, URL-encoded when substituted.
PLACEHOLDERS = ("key", "customer_id", "campaign")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\b")
#: Request fields that come from the channel's settings: a 400 about them alone is the deployment's.
_SENDER_FIELD = re.compile(r"^(from|reply_to|asm)\b")
#: SendGrid's documented limit of categories per message.
MAX_CATEGORIES = 10

# python_http_client logs every request's headers (Authorization included) and every answer's
# body at DEBUG: the core's redactor masks bearer tokens and every open channel's API key there.
LIVE_SECRETS.guard("python_http_client.client", __name__)


class _TextOf(HTMLParser):
    """Plain text of an HTML body, for the text/plain alternative when a campaign writes only html."""

    _SKIP = {"script", "style", "head", "title"}
    _BREAK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self._links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAK:
            self.parts.append("\n")
        if tag == "a":
            self._links.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BREAK:
            self.parts.append("\n")
        elif tag == "a" and self._links:
            href = self._links.pop()
            if href and href.startswith(("http://", "https://")):
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """A readable plain-text version of ``html`` (links kept in brackets)."""
    parser = _TextOf()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _fill(template: str, message: OutgoingMessage) -> str:
    values = {"key": message.key, "customer_id": message.customer_id, "campaign": message.campaign}
    return _PLACEHOLDER.sub(lambda m: quote(values[m.group(1)], safe=""), template)


#: The types JSON holds as they are (exactly these: a subclass may serialise otherwise).
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> bool:
    """Whether ``value`` is made only of JSON's own types (exactly: no subclasses, str keys), so
    that it serialises as :func:`_json_safe` would leave it.

    Called for every recipient of a dynamic-template batch: scalars are checked inline, and only
    containers recurse.
    """
    kind = type(value)
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str or (type(v) not in _JSON_SCALARS and not _plain(v)):
                return False
        return True
    if kind is list:
        for v in value:
            if type(v) not in _JSON_SCALARS and not _plain(v):
                return False
        return True
    return kind in _JSON_SCALARS


def _json_safe(value: Mapping[str, Any]) -> dict[str, Any]:
    # Template variables may hold dates or decimals; SendGrid takes JSON, so they go as text.
    return json.loads(json.dumps(dict(value), default=str))


class SendGridChannel(Channel):
    """Email through SendGrid's v3 Mail Send API."""

    type_name: ClassVar[str] = "sendgrid"
    address: ClassVar[str] = "email"
    batch_size: ClassVar[int] = 1000
    settings: ClassVar[Mapping[str, Setting]] = {
        "api_key": Setting("str", required=True, secret=True, env="SENDGRID_API_KEY",
                           help="SendGrid API key with Mail Send permission (from the environment)"),
        "from_email": Setting("str", required=True, help="sender address (a verified sender)"),
        "from_name": Setting("str", help="sender display name"),
        "reply_to": Setting("str", help="Reply-To address"),
        "categories": Setting("list", help=f"SendGrid categories (at most {MAX_CATEGORIES})"),
        "asm_group_id": Setting("int", minimum=1, help="SendGrid unsubscribe group id"),
        "unsubscribe_url": Setting("str", help="https one-click unsubscribe link; may hold "
                                               "{key}, {customer_id}, {campaign}"),
        "unsubscribe_mailto": Setting("str", help="address that unsubscribes whoever writes to it"),
        "api_host": Setting("str", default="https://api.sendgrid.com",
                            help="API base URL (https://api.eu.sendgrid.com for EU subusers)"),
    }
    template_fields: ClassVar[Mapping[str, TemplateField]] = {
        "subject": TemplateField(help="the subject line (required unless template_id)"),
        "body": TemplateField(help="plain-text body"),
        "html": TemplateField(help="HTML body (a plain-text alternative is always sent with it)"),
    }
    campaign_options: ClassVar[Mapping[str, Setting]] = {
        "template_id": Setting("str", help="SendGrid dynamic template id (d-...); the message's "
                                           "variables go as dynamic_template_data"),
    }

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        cfg = self.config
        self.timeout = float(cfg.get("timeout") or 10.0)
        self.api_host = str(cfg.get("api_host") or "https://api.sendgrid.com").rstrip("/")
        if not self.api_host.startswith(("https://", "http://")):
            raise ValueError(f"api_host must be an https:// URL, got {self.api_host!r}")
        if "@" not in str(cfg.get("from_email") or ""):
            raise ValueError(f"from_email is not an email address: {cfg.get('from_email')!r}")
        self.categories = list(cfg.get("categories") or [])
        if len(self.categories) > MAX_CATEGORIES:
            raise ValueError(f"categories: SendGrid takes at most {MAX_CATEGORIES}, got "
                             f"{len(self.categories)}")
        self.unsubscribe_url = cfg.get("unsubscribe_url") or None
        if self.unsubscribe_url:
            if not self.unsubscribe_url.startswith("https://"):
                raise ValueError("unsubscribe_url must be an https:// link (RFC 8058 one-click "
                                 f"unsubscribe), got {self.unsubscribe_url!r}")
            self._check_placeholders("unsubscribe_url", self.unsubscribe_url)
        mailto = cfg.get("unsubscribe_mailto") or None
        if mailto:
            mailto = mailto if mailto.lower().startswith("mailto:") else f"mailto:{mailto}"
            if "@" not in mailto:
                raise ValueError(f"unsubscribe_mailto is not an email address: {mailto!r}")
            self._check_placeholders("unsubscribe_mailto", mailto)
        self.unsubscribe_mailto = mailto
        self._local = threading.local()

    @staticmethod
    def _check_placeholders(setting: str, value: str) -> None:
        unknown = sorted({m for m in _PLACEHOLDER.findall(value) if m not in PLACEHOLDERS})
        if unknown:
            raise ValueError(f"{setting} holds unknown placeholders {', '.join(unknown)} (known: "
                             + ", ".join("{" + p + "}" for p in PLACEHOLDERS) + ")")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, from_email="
                f"{self.config.get('from_email')!r}, api_host={self.api_host!r})")

    # campaign checks ---------------------------------------------------------------------------
    def check_campaign(self, fields: set[str], options: Mapping[str, Any],
                       category: str) -> list[str]:
        problems: list[str] = []
        template_id = options.get("template_id")
        if template_id:
            if not str(template_id).startswith("d-"):
                problems.append(f"template_id must be a dynamic template id (d-...), got "
                                f"{template_id!r}")
            written = sorted(fields & {"subject", "body", "html"})
            if written:
                problems.append(f"{', '.join(written)} cannot be used with template_id: the dynamic "
                                "template holds the subject and content (the message's variables "
                                "are passed to it)")
        else:
            if "subject" not in fields:
                problems.append("subject is required (unless template_id names a SendGrid "
                                "dynamic template)")
            if not fields & {"body", "html"}:
                problems.append("body or html is required (unless template_id names a SendGrid "
                                "dynamic template)")
        if category == "marketing" and not (self.unsubscribe_url or self.unsubscribe_mailto
                                            or self.links_served):
            problems.append(f"marketing email needs a List-Unsubscribe header: set unsubscribe_url "
                            f"(https, one-click) or unsubscribe_mailto in [channels.{self.name}], "
                            "or add [serve] to outreach.toml (outreach serve then signs one "
                            "per message)")
        return problems

    def check_rendered(self, content: Mapping[str, str], options: Mapping[str, Any]) -> list[str]:
        if options.get("template_id"):
            return []
        problems = []
        subject = content.get("subject", "")
        if not subject.strip():
            problems.append("the subject renders empty")
        elif "\n" in subject or "\r" in subject:
            problems.append("the subject holds a line break")
        if not (content.get("body", "").strip() or content.get("html", "").strip()):
            problems.append("the body renders empty")
        return problems

    def batch_key(self, message: OutgoingMessage) -> Hashable:
        template_id = message.options.get("template_id")
        if template_id:
            return (message.campaign, template_id, message.locale)
        # Without a template each message is its own request; group by campaign to keep batches.
        return (message.campaign, None, message.locale)

    # sending -----------------------------------------------------------------------------------
    def _client(self) -> SendGridAPIClient:
        # One client per thread: python_http_client mutates its shared header dict on each call.
        client = getattr(self._local, "client", None)
        if client is None:
            client = SendGridAPIClient(self.config["api_key"].reveal(), host=self.api_host)
            # The SDK waits forever by default; every Client it derives copies this timeout.
            client.client.timeout = self.timeout
            self._local.client = client
        return client

    def _unsubscribe_headers(self, message: OutgoingMessage) -> dict[str, str]:
        if message.category != "marketing":
            return {}
        links = []
        # Without a link of its own, the one outreach serve signs for this message ([serve]).
        served = (message.variables.get("unsubscribe_url")
                  if self.links_served and not self.unsubscribe_url else None)
        if self.unsubscribe_url:
            links.append(f"<{_fill(self.unsubscribe_url, message)}>")
        elif served:
            links.append(f"<{served}>")
        if self.unsubscribe_mailto:
            links.append(f"<{_fill(self.unsubscribe_mailto, message)}>")
        if not links:
            return {}
        headers = {"List-Unsubscribe": ", ".join(links)}
        if self.unsubscribe_url or (served and str(served).startswith("https://")):
            # RFC 8058: one-click only with an https URI, which receives this POST body.
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return headers

    def _mail(self, messages: Sequence[OutgoingMessage]) -> Mail:
        """The request as the SDK's helper objects (what :meth:`_body` reproduces, kept as the
        reference the plugin's tests compare it with)."""
        first = messages[0]
        template_id = first.options.get("template_id")
        mail = self._envelope(first)
        for index, message in enumerate(messages):
            p = Personalization()
            to = To()
            to.email = message.address
            if message.name:
                to.name = message.name
            p.add_to(to)
            p.add_custom_arg(CustomArg("outreach_key", message.key))
            for name, value in self._unsubscribe_headers(message).items():
                p.add_header(Header(name, value))
            if template_id:
                data = _json_safe(message.variables)
                if data:
                    p.dynamic_template_data = data
            # The SDK inserts at index 0 by default, which would reverse the batch.
            mail.add_personalization(p, index=index)
        return mail

    def _envelope(self, first: OutgoingMessage) -> Mail:
        """Everything of the request but its personalizations, as the SDK's helper objects."""
        template_id = first.options.get("template_id")
        mail = Mail()
        mail.from_email = From(self.config["from_email"], self.config.get("from_name"))
        if self.config.get("reply_to"):
            mail.reply_to = ReplyTo(self.config["reply_to"])
        mail.add_custom_arg(CustomArg("campaign", first.campaign))
        if template_id:
            mail.template_id = TemplateId(template_id)
        else:
            mail.subject = first.content.get("subject", "")
            text = first.content.get("body", "")
            html = first.content.get("html", "")
            if html and not text.strip():
                text = html_to_text(html)
            # text/plain first, then text/html: what SendGrid requires and mail clients expect.
            if text.strip():
                mail.add_content(Content("text/plain", text))
            if html.strip():
                mail.add_content(Content("text/html", html))
        for category in self.categories:
            mail.add_category(Category(category))
        if self.config.get("asm_group_id"):
            mail.asm = Asm(int(self.config["asm_group_id"]))
        return mail

    def _body(self, messages: Sequence[OutgoingMessage]) -> dict[str, Any]:
        """The v3 mail/send request body: the same JSON as ``self._mail(messages).get()``.

        The parts shared by the whole request still come from the SDK's helpers (built once); each
        recipient's personalization is written as the plain dict ``Personalization.get()`` returns,
        in the same key order. Building a thousand helper objects (and a JSON round trip of each
        recipient's variables) cost ~50 ms a request; this costs a few.
        """
        first = messages[0]
        template_id = first.options.get("template_id")
        has_unsubscribe = bool(self.unsubscribe_url or self.unsubscribe_mailto or self.links_served)
        personalizations: list[dict[str, Any]] = []
        append = personalizations.append
        for message in messages:
            p: dict[str, Any] = {"to": [{"name": message.name, "email": message.address}
                                        if message.name else {"email": message.address}]}
            if template_id:
                variables = message.variables
                # Variables read back from the ledger are plain JSON already: no copy needed.
                data = variables if type(variables) is dict and _plain(variables) \
                    else _json_safe(variables)
                if data:
                    p["dynamic_template_data"] = data
            if has_unsubscribe and message.category == "marketing":
                headers = self._unsubscribe_headers(message)
                if headers:
                    p["headers"] = headers
            p["custom_args"] = {"outreach_key": message.key}
            append(p)
        envelope = self._envelope(first).get()
        body: dict[str, Any] = {}
        for key in ("from", "subject"):  # Mail.get()'s order: from, subject, personalizations, ...
            if key in envelope:
                body[key] = envelope.pop(key)
        body["personalizations"] = personalizations
        body.update(envelope)
        return body

    def _post(self, messages: Sequence[OutgoingMessage]) -> str | None:
        """Send one request for ``messages``; the X-Message-Id SendGrid answered with."""
        body = self._body(messages)
        try:
            # What SendGridAPIClient.send does with a dict (the SDK serialises it once).
            response = self._client().client.mail.send.post(request_body=body)
        except Exception as exc:  # noqa: BLE001 - classified, or re-raised untouched
            error = self._classify(exc)
            if error is None:
                raise
            raise error from None
        message_id = response.headers.get("X-Message-Id") if response.headers else None
        log.debug("sendgrid %s: %d message(s) accepted (%s), X-Message-Id %s", self.name,
                  len(messages), response.status_code, message_id)
        return message_id

    def send(self, messages: Sequence[OutgoingMessage]) -> Sequence[Delivery]:
        """Deliver ``messages``: one request for a dynamic-template batch, else one per message.

        A dynamic-template batch is one request, so a failure fails the call, except a 400 whose
        errors all name particular personalizations (an address SendGrid refuses): those messages
        get a :class:`PermanentError` and the rest are sent again once, so one bad address does not
        sink a thousand.

        Without a template, each message is its own request. A :class:`TransientError` (the
        provider asked to slow down) or a :class:`ConfigurationError` (it refused the deployment)
        stops the loop and is given to every message not yet sent; other
        failures are per message. When every message failed with the same class and message, that
        error is raised for the call (a single message always raises); otherwise the failures are
        reported per message in :attr:`Delivery.error`.
        """
        if not messages:
            return []
        if messages[0].options.get("template_id"):
            return self._send_batch(list(messages))
        out: list[Delivery] = []
        for i, message in enumerate(messages):
            try:
                out.append(Delivery(message.key, provider_id=self._post([message])))
            except (TransientError, ConfigurationError) as exc:
                # Later, or never with this configuration: the rest would meet the same answer.
                out += [Delivery(m.key, error=exc) for m in messages[i:]]
                break
            except ChannelError as exc:
                out.append(Delivery(message.key, error=exc))
        errors = [d.error for d in out if d.error is not None]
        if len(errors) == len(messages) and len({(type(e), str(e)) for e in errors}) == 1:
            raise errors[0]
        return out

    def _send_batch(self, messages: list[OutgoingMessage]) -> list[Delivery]:
        try:
            message_id = self._post(messages)
        except PermanentError as exc:
            by_index = getattr(exc, "by_index", None) or {}
            bad = {i for i in by_index if i < len(messages)}
            if len(messages) == 1 or not bad or len(bad) == len(messages):
                raise
            out = [Delivery(messages[i].key, error=PermanentError(
                f"SendGrid refused this recipient: {by_index[i]}", code=exc.code))
                for i in sorted(bad)]
            rest = [m for i, m in enumerate(messages) if i not in bad]
            try:
                rest_id = self._post(rest)
            except ChannelError as again:
                return out + [Delivery(m.key, error=again) for m in rest]
            return out + [Delivery(m.key, provider_id=rest_id) for m in rest]
        return [Delivery(m.key, provider_id=message_id) for m in messages]

    # errors ------------------------------------------------------------------------------------
    def _classify(self, exc: BaseException) -> ChannelError | None:
        """The channel error for an exception the SDK raised, or None to let it through."""
        if isinstance(exc, http_errors.HTTPError):
            return self._http_error(exc)
        if isinstance(exc, urllib.error.URLError):
            # urllib raises URLError only while connecting and sending: nothing reached SendGrid.
            return TransientError(self.redact(f"could not reach SendGrid at {self.api_host}: "
                                              f"{connection_reason(exc)}"))
        if isinstance(exc, TimeoutError):
            return UnknownOutcomeError(f"no answer from SendGrid within {self.timeout:g}s after "
                                       "the request was sent: it may have been accepted")
        if isinstance(exc, (OSError, http.client.HTTPException)):
            return UnknownOutcomeError(self.redact(
                f"the connection to SendGrid failed after the request was sent "
                f"({type(exc).__name__}: {exc}): it may have been accepted"))
        return None

    def _http_error(self, exc: http_errors.HTTPError) -> ChannelError:
        status = int(exc.status_code)
        headers = exc.headers
        details, fields = _sendgrid_errors(exc.body)
        what = self.redact("; ".join(details) or str(getattr(exc, "reason", "")) or "no details")
        message = f"SendGrid answered {status}: {what}"
        if status == 429:
            return TransientError(message, code=status, retry_after=retry_after(headers))
        if status >= 500:
            return TransientError(message, code=status, retry_after=retry_after(headers))
        if status in (401, 403):
            env = getattr(self.config.get("api_key"), "env", None)
            where = f" ${env}" if env else ""
            return ConfigurationError(
                f"{message} (check the API key{where}, its Mail Send permission and that "
                f"{self.config.get('from_email')} is a verified Sender Identity)", code=status)
        if status == 404:
            return ConfigurationError(f"{message} (api_host {self.api_host} does not serve "
                                      "SendGrid's v3 Mail Send API)", code=status)
        if fields and all(_SENDER_FIELD.match(name or "") for name, _ in fields):
            return ConfigurationError(f"{message} (the sender settings of [channels.{self.name}])",
                                      code=status)
        indices: dict[int, str] = {}
        for field_name, detail in fields:
            match = _PERSONALIZATION_FIELD.match(field_name or "")
            if match is None:
                indices = {}
                break
            indices[int(match.group(1))] = self.redact(detail)
        error = PermanentError(message, code=status)
        if status == 400 and indices and len(indices) == len(fields):
            # Every error names a recipient: _send_batch fails those and resends the rest.
            error.by_index = indices  # type: ignore[attr-defined]
        return error


def _sendgrid_errors(body: bytes | str | None) -> tuple[list[str], list[tuple[str | None, str]]]:
    """SendGrid's ``{"errors": [{"message", "field"}]}`` as readable lines and (field, message)."""
    if not body:
        return [], []
    try:
        doc = json.loads(body.decode("utf-8", "replace") if isinstance(body, bytes) else body)
    except ValueError:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        return [text.strip()[:300]] if text.strip() else [], []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return [], []
    lines, fields = [], []
    for item in errors[:20]:
        if not isinstance(item, dict):
            continue
        msg = str(item.get("message") or "").strip()
        field_name = item.get("field")
        field_name = None if field_name in (None, "null", "") else str(field_name)
        lines.append(f"{msg} (field {field_name})" if field_name else msg)
        fields.append((field_name, msg))
    return lines, fields
