"""A fake SendGrid v3 Mail Send API, for this plugin's tests and for end-to-end tests of outreach.

It checks every request against SendGrid's own OpenAPI description (vendored in ``spec/``, with the
published ``custom_args`` defect corrected at load time) and against the rules of the API that the
description cannot express, records each accepted message per recipient (:attr:`FakeSendGrid.sent`)
and answers ``202 Accepted`` with an ``X-Message-Id`` header, as SendGrid does::

    with FakeSendGrid(api_key="SG.test") as fake:
        channel = SendGridChannel("email", {..., "api_host": fake.url})
        channel.send([message])
        assert fake.by_key(message.key).subject == "Welcome"
        assert fake.spec_errors == []
"""

from __future__ import annotations

import base64
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outreach.testing import FakeProvider, RecordedRequest, Reply, load_spec

__all__ = ["FakeSendGrid", "SPEC_PATCH", "SPEC_PATH", "SentEmail", "sendgrid_spec"]

#: SendGrid's Mail Send OpenAPI description, byte-identical to github.com/twilio/sendgrid-oai.
SPEC_PATH = Path(__file__).parent / "spec" / "tsg_mail_v3.json"

#: The published spec types the top-level ``custom_args`` as a string; the API (and the SDK's
#: ``Mail.custom_arg``) send an object of strings, as the per-personalization one already is.
SPEC_PATCH = {
    "/components/requestBodies/PostMailSend/content/application~1json/schema/properties/custom_args": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "Values carried along with the email and its activity data "
                       "(corrected: the published spec says string).",
    },
}

#: Headers SendGrid refuses to let a request set.
RESERVED_HEADERS = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
                    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}


def sendgrid_spec() -> dict:
    """The corrected SendGrid spec, parsed once per process."""
    return load_spec(SPEC_PATH, SPEC_PATCH)


@dataclass
class SentEmail:
    """One recipient of one accepted request, with everything SendGrid would have used."""

    address: str
    name: str | None
    subject: str | None
    #: Message-level custom_args overlaid with the personalization's (SendGrid's own rule).
    custom_args: dict[str, str]
    #: Message-level headers overlaid with the personalization's.
    headers: dict[str, str]
    #: MIME type -> value, in the order sent.
    content: dict[str, str]
    template_id: str | None
    dynamic_template_data: dict[str, Any]
    from_email: str
    from_name: str | None
    reply_to: str | None
    categories: list[str]
    asm_group_id: int | None
    message_id: str
    #: Position of the recipient's personalization in the request.
    personalization_index: int
    #: The request it came in.
    request: RecordedRequest = field(repr=False, compare=False)

    @property
    def key(self) -> str | None:
        """The outreach ledger key carried in ``custom_args``."""
        return self.custom_args.get("outreach_key")

    @property
    def content_types(self) -> list[str]:
        """The MIME types of the content, in the order sent."""
        return list(self.content)


@dataclass
class _Refusal:
    where: str
    message: str


class FakeSendGrid(FakeProvider):
    """SendGrid's ``POST /v3/mail/send`` on 127.0.0.1.

    ``api_key``: when given, a request with another bearer token is answered 401 as SendGrid does.
    ``refuse``: addresses answered with a 400 naming their personalization (``Does not contain a
    valid address``), for tests of a batch with one bad recipient. ``validate=False`` skips the
    OpenAPI check (throughput benchmarks); the rest as :class:`outreach.testing.FakeProvider`.
    """

    def __init__(self, *, api_key: str | None = None, refuse: set[str] | frozenset[str] = frozenset(),
                 seed: int = 0, latency: float = 0.0, validate: bool = True) -> None:
        super().__init__(sendgrid_spec(), seed=seed, latency=latency, validate=validate)
        self.api_key = api_key
        self.refuse = {a.lower() for a in refuse}
        #: Every recipient of every accepted request, in order.
        self.sent: list[SentEmail] = []
        self._ids = random.Random(seed ^ 0x5E4D)
        self._sent_lock = threading.Lock()

    # reading what was sent ---------------------------------------------------------------------
    def by_key(self, key: str) -> SentEmail:
        """The one recipient whose ``custom_args.outreach_key`` is ``key`` (AssertionError if not one)."""
        found = [s for s in self.sent if s.key == key]
        assert len(found) == 1, f"{len(found)} accepted emails carry outreach_key {key!r}"
        return found[0]

    def to(self, address: str) -> list[SentEmail]:
        """Every accepted email to ``address`` (case-insensitive)."""
        return [s for s in self.sent if s.address.lower() == address.lower()]

    @property
    def mail_requests(self) -> list[RecordedRequest]:
        """The Mail Send requests received (accepted or not)."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/v3/mail/send"]

    # the API ------------------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> dict:
        """SendGrid's error shape."""
        return {"errors": [{"message": message, "field": None, "help": None}]}

    def spec_error_reply(self, request: RecordedRequest, errors: list[str]) -> Reply:
        return Reply(400, body={"errors": [{"message": e, "field": None, "help": None}
                                           for e in errors]})

    def handle(self, request: RecordedRequest) -> Reply:
        if request.method != "POST" or request.path != "/v3/mail/send":
            return Reply(404, body=self.error_body(404, "resource not found"))
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(401, body=self.error_body(
                401, "The provided authorization grant is invalid, expired, or revoked"))
        mail = request.json()
        broken = _rule_errors(mail)
        if broken:
            for err in broken:
                self.record_spec_error(request, f"SendGrid rule: {err.where}: {err.message}")
            return Reply(400, body={"errors": [{"message": e.message, "field": e.where, "help": None}
                                               for e in broken]})
        refused = [_Refusal(f"personalizations.{i}.to.{j}.email", "Does not contain a valid address.")
                   for i, p in enumerate(mail["personalizations"])
                   for j, to in enumerate(p.get("to", [])) if to["email"].lower() in self.refuse]
        if refused:
            return Reply(400, body={"errors": [{"message": e.message, "field": e.where, "help": None}
                                               for e in refused]})
        with self._sent_lock:
            message_id = base64.urlsafe_b64encode(self._ids.randbytes(16)).decode().rstrip("=")[:22]
            for i, p in enumerate(mail["personalizations"]):
                for to in p.get("to", []):
                    self.sent.append(SentEmail(
                        address=to["email"], name=to.get("name"),
                        subject=p.get("subject", mail.get("subject")),
                        custom_args={**mail.get("custom_args", {}), **p.get("custom_args", {})},
                        headers={**mail.get("headers", {}), **p.get("headers", {})},
                        content={c["type"]: c["value"] for c in mail.get("content", [])},
                        template_id=mail.get("template_id"),
                        dynamic_template_data=p.get("dynamic_template_data", {}),
                        from_email=mail["from"]["email"], from_name=mail["from"].get("name"),
                        reply_to=(mail.get("reply_to") or {}).get("email"),
                        categories=list(mail.get("categories", [])),
                        asm_group_id=(mail.get("asm") or {}).get("group_id"),
                        message_id=message_id, personalization_index=i, request=request,
                    ))
        return Reply(202, {"X-Message-Id": message_id})


def _rule_errors(mail: dict) -> list[_Refusal]:
    """What SendGrid refuses that its OpenAPI description does not say."""
    out: list[_Refusal] = []
    personalizations = mail.get("personalizations", [])
    template = mail.get("template_id")
    content = mail.get("content", [])
    types = [c.get("type", "").lower() for c in content]
    if not template and not content:
        out.append(_Refusal("content", "Unless a valid template_id is provided, the content "
                                       "parameter is required."))
    if len(types) != len(set(types)):
        out.append(_Refusal("content", "Each content type may only be provided once."))
    if "text/plain" in types and types[0] != "text/plain":
        out.append(_Refusal("content", "The text/plain content type must be first."))
    if "text/html" in types and "text/x-amp-html" in types and \
            types.index("text/x-amp-html") > types.index("text/html"):
        out.append(_Refusal("content", "text/x-amp-html must come before text/html."))
    if not template and not mail.get("subject") and \
            not all(p.get("subject") for p in personalizations):
        out.append(_Refusal("subject", "The subject is required. You can get around this "
                                       "requirement if you use a template with a subject defined or "
                                       "if every personalization has a subject defined."))
    recipients = 0
    for i, p in enumerate(personalizations):
        if not p.get("to"):
            out.append(_Refusal(f"personalizations.{i}.to", "The to array is required for all "
                                                             "personalization objects."))
        recipients += sum(len(p.get(k, [])) for k in ("to", "cc", "bcc"))
        for where, args in (("custom_args", p.get("custom_args", {})),
                            ("headers", p.get("headers", {}))):
            for k, v in args.items():
                if not isinstance(v, str):
                    out.append(_Refusal(f"personalizations.{i}.{where}.{k}",
                                        f"{where} values must be strings."))
        for k in p.get("headers", {}):
            if k.lower() in RESERVED_HEADERS:
                out.append(_Refusal(f"personalizations.{i}.headers.{k}",
                                    f"The header {k} cannot be set."))
        if p.get("dynamic_template_data") and not (template or "").startswith("d-"):
            out.append(_Refusal(f"personalizations.{i}.dynamic_template_data",
                                "dynamic_template_data needs a dynamic template (d-...)."))
    if recipients > 1000:
        out.append(_Refusal("personalizations", "The total number of recipients must be less than "
                                                "or equal to 1000."))
    for k in mail.get("headers", {}):
        if k.lower() in RESERVED_HEADERS:
            out.append(_Refusal(f"headers.{k}", f"The header {k} cannot be set."))
    if len(mail.get("categories", [])) > 10:
        out.append(_Refusal("categories", "Too many categories: at most 10."))
    return out
