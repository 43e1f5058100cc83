"""FakeTwilio: Twilio's Messages API on 127.0.0.1, for this plugin's tests and anyone else's.

It plays ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` the way Twilio does: HTTP basic
auth with the Account SID and auth token, each request checked against Twilio's own OpenAPI
description (shipped in this package), a 201 with a Message resource (``sid`` "SM" + 32 hex digits,
``status`` "queued", ``num_segments``), and Twilio-shaped errors (``{"code", "message", "more_info",
"status"}``)::

    from outreach_twilio import TwilioSMS
    from outreach_twilio.testing import FakeTwilio

    with FakeTwilio() as twilio:
        channel = TwilioSMS("sms", twilio.channel_settings(from_number="+15005550006"))
        twilio.error_for("+15005550009", status=400, code=21614)
        twilio.rate_limit_next(retry_after=2)        # 429 with code 20429
        ...channel.send([...])...
        assert [m.to for m in twilio.messages] == [...]
        assert twilio.spec_errors == []

The faults of :class:`outreach.testing.FakeProvider` (``fail_next``, ``slow_next``, ``drop_next``,
``fault_rate``) work as there.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from outreach.settings import Secret
from outreach.sms import count_segments
from outreach.testing import FakeProvider, RecordedRequest, Reply, load_spec

#: Twilio's OpenAPI description of API 2010-04-01 (see the README for where it comes from).
SPEC_PATH = Path(__file__).parent / "spec" / "twilio_api_v2010.json"

#: Credentials the fake accepts unless told others (an Account SID must match ``AC`` + 32 hex).
TEST_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TEST_AUTH_TOKEN = "f" * 8 + "0123456789abcdef" + "e" * 8
#: A sender and a messaging service for tests (Twilio's magic "valid sender" test number).
TEST_FROM_NUMBER = "+15005550006"
TEST_MESSAGING_SERVICE_SID = "MG" + "9" * 32

_MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")

#: Twilio's own wording of the errors the fake produces.
ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    21211: "Invalid 'To' Phone Number",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
}


#: The code Twilio sends with an HTTP status when nothing more precise applies.
DEFAULT_CODES = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}


def twilio_error(status: int, code: int, message: str | None = None,
                 headers: dict[str, str] | None = None) -> Reply:
    """A Reply shaped as Twilio's error answers are."""
    return Reply(status, dict(headers or {}), {
        "code": code,
        "message": message or ERROR_MESSAGES.get(code, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    })


@dataclass
class SentMessage:
    """A message FakeTwilio accepted."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status_callback: str | None
    num_segments: int


class FakeTwilio(FakeProvider):
    """Twilio's Messages API, with the accepted messages in :attr:`messages`."""

    def __init__(self, account_sid: str = TEST_ACCOUNT_SID, auth_token: str = TEST_AUTH_TOKEN, *,
                 seed: int = 0, latency: float = 0.0, validate: bool = True) -> None:
        super().__init__(load_spec(SPEC_PATH), seed=seed, latency=latency, validate=validate)
        self.account_sid = account_sid
        self.auth_token = auth_token
        #: Every message accepted, in order (also those accepted before a slow or dropped answer).
        self.messages: list[SentMessage] = []
        self._errors: dict[str, Reply] = {}
        self._state = threading.Lock()

    # what a test sets up -----------------------------------------------------------------------
    def channel_settings(self, **settings: Any) -> dict[str, Any]:
        """Settings for :class:`~outreach_twilio.TwilioSMS` pointed at this fake (start it first).

        Credentials are :class:`~outreach.settings.Secret` as the core hands them over; ``timeout``
        defaults to 2 s. Keyword arguments add or override settings.
        """
        values: dict[str, Any] = {
            "plugin": "twilio",
            "account_sid": Secret(self.account_sid, "TWILIO_ACCOUNT_SID"),
            "auth_token": Secret(self.auth_token, "TWILIO_AUTH_TOKEN"),
            "from_number": None, "messaging_service_sid": None, "status_callback": None,
            "api_base": self.url, "timeout": 2.0, "concurrency": 8,
        }
        values.update(settings)
        return values

    def error_for(self, number: str, *, status: int = 400, code: int = 21614,
                  message: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Answer every message to ``number`` with Twilio error ``code`` (until :meth:`clear_errors`)."""
        with self._state:
            self._errors[number] = twilio_error(status, code, message, headers)

    def clear_errors(self) -> None:
        """Forget the numbers set up with :meth:`error_for`."""
        with self._state:
            self._errors.clear()

    def rate_limit_next(self, count: int = 1, retry_after: float | None = 1) -> None:
        """Answer the next ``count`` requests with HTTP 429, code 20429 (and a Retry-After)."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self.fail_next(count, status=429, headers=headers,
                       body=self.error_body(429, ERROR_MESSAGES[20429]))

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """Twilio's error shape, with the code Twilio uses for ``status`` (20429 for 429...)."""
        body = twilio_error(status, DEFAULT_CODES.get(status, status), message).body
        assert isinstance(body, dict)
        return body

    def segments(self, body: str) -> int:
        """The ``num_segments`` Twilio reports for ``body`` (override to make it disagree)."""
        return count_segments(body).segments

    # the API -----------------------------------------------------------------------------------
    def spec_error_reply(self, request: RecordedRequest, errors: list[str]) -> Reply:
        return twilio_error(400, 20001, "Invalid request (not what the API description allows): "
                            + "; ".join(errors))

    def handle(self, request: RecordedRequest) -> Reply:
        match = _MESSAGES.match(request.path)
        if match is None or request.method != "POST":
            return twilio_error(404, 20404)
        if not self._authorised(request):
            return twilio_error(401, 20003, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if match["sid"] != self.account_sid:
            return twilio_error(404, 20404)
        form = {k: v[-1] for k, v in request.form().items()}
        to, body = form.get("To", ""), form.get("Body", "")
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        with self._state:
            refusal = self._errors.get(to)
        if refusal is not None:
            return refusal
        if not body:
            return twilio_error(400, 21602)
        if not sender and not service:
            return twilio_error(400, 21603)
        if not _E164.match(to):
            return twilio_error(400, 21211)
        if len(body) > 1600:
            return twilio_error(400, 21617)
        sid = "SM" + secrets.token_hex(16)
        # A messaging service picks the sender after queueing: Twilio answers num_segments "0".
        segments = 0 if service and not sender else self.segments(body)
        sent = SentMessage(sid, self.account_sid, to, sender, service, body,
                           form.get("StatusCallback"), segments)
        with self._state:
            self.messages.append(sent)
        return Reply(201, body=self._resource(sent))

    def _authorised(self, request: RecordedRequest) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.account_sid) and \
            secrets.compare_digest(password, self.auth_token)

    def _resource(self, sent: SentMessage) -> dict[str, Any]:
        now = datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")
        uri = f"/2010-04-01/Accounts/{sent.account_sid}/Messages/{sent.sid}"
        return {
            "account_sid": sent.account_sid, "api_version": "2010-04-01", "body": sent.body,
            "date_created": now, "date_sent": None, "date_updated": now,
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": sent.from_, "messaging_service_sid": sent.messaging_service_sid,
            "num_media": "0", "num_segments": str(sent.num_segments), "price": None,
            "price_unit": "USD", "sid": sent.sid, "status": "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"}, "to": sent.to, "uri": f"{uri}.json",
        }
