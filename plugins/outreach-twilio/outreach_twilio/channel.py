"""The Twilio SMS channel: one message per call to ``POST /2010-04-01/Accounts/{sid}/Messages.json``.

It goes through the official ``twilio`` SDK's asyncio path (``messages.create_async``) with an HTTP
client of its own (:class:`_HttpClient`, aiohttp underneath, as the SDK's own async client) that
never retries by itself (the core owns retries, and a silent resend after the request left could
message someone twice), always has a timeout, can point at another host (``api_base``: a local test
server), keeps each call's answer headers (for Retry-After) and never logs a secret. The asyncio
path is what lets one process keep many calls in flight cheaply: about 0.3 ms of CPU a message,
against 2.5 ms through the SDK's requests client in threads.

Failures are classified as Twilio means them: 429 (or code 20429) and 5xx are transient; an
answer that refuses the account or the sender rather than the message (HTTP 401/403, and the codes
in :data:`ACCOUNT_CODES`: authentication, a suspended account, a ``From`` that is not the
account's) is a :class:`ConfigurationError`, so the channel stops and its messages stay queued
until the deployment is fixed; other 4xx fail the message (and :data:`SUPPRESS_CODES` suppress its
number).
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
import re
import ssl
import threading
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from outreach.channel import (
    LIVE_SECRETS,
    Channel,
    ChannelError,
    ConfigurationError,
    Delivery,
    OutgoingMessage,
    PermanentError,
    TemplateField,
    TransientError,
    UnknownOutcomeError,
    basic_credentials,
    causes,
    connection_reason,
    redact,
    retry_after,
)
from outreach.settings import Secret, Setting
from outreach.sms import count_segments, segment_problems

if TYPE_CHECKING:  # imported where used: aiohttp costs every run's start-up, sending or not
    import aiohttp

_log = logging.getLogger("outreach_twilio")

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")

#: Twilio error codes that mean "never text this number again" (added to the suppression list).
SUPPRESS_CODES: Mapping[int, str] = {
    21610: "recipient replied STOP",
    21211: "not a valid phone number",
    21614: "not a mobile number",
    # Reported later, by a status callback (outreach serve), for a message Twilio accepted:
    30005: "the number does not exist",
    30006: "a landline or a carrier that cannot receive SMS",
}
#: Twilio's own "Too Many Requests" code (it comes with HTTP 429).
RATE_LIMITED = 20429
#: Twilio error codes that refuse the account or the sender, not the message: nothing can be sent
#: until the deployment is fixed (the channel stops, its messages stay queued).
ACCOUNT_CODES: Mapping[int, str] = {
    20003: "authentication failed: check the Account SID and auth token",
    20005: "the account is not active",
    20008: "test credentials cannot send messages",
    20404: "the account or the API address is wrong (resource not found)",
    21212: "from_number is not a valid sending number",
    21606: "from_number cannot send messages (to this destination)",
    21659: "from_number is not a Twilio number of this account",
    21660: "from_number does not belong to this account",
}


# -- secrets never in a log line ------------------------------------------------------------------

#: Loggers that may write a request URL (which holds the Account SID) or its headers; the core's
#: redactor masks every open channel's secrets in their records before any handler sees them.
_GUARDED_LOGGERS = ("twilio.http_client", "twilio.async_http_client", "aiohttp.client",
                    "aiohttp.internal", "asyncio", "outreach_twilio")
LIVE_SECRETS.guard(*_GUARDED_LOGGERS)


# -- the HTTP client ------------------------------------------------------------------------------

#: The answer of the call running in this asyncio task (headers included): the SDK's exceptions do
#: not carry headers, and Retry-After lives there. A context variable, because many calls share
#: one client at once.
_ANSWER: contextvars.ContextVar[Response | None] = contextvars.ContextVar("twilio_answer",
                                                                       default=None)


class _HttpClient(AsyncHttpClient):
    """The SDK's asynchronous HTTP client interface over aiohttp, made safe for sending messages.

    * no retries (aiohttp has none of its own; the SDK's client would add aiohttp-retry);
    * a timeout on every call, for connecting and for each read, as the requests client had;
    * ``api_base`` rewrites scheme and host (and prefixes its path) in :meth:`request`, after the SDK
      applied TWILIO_REGION / TWILIO_EDGE, so it works whatever those say;
    * the answer of each call is kept in :data:`_ANSWER` for the task that made it;
    * credentials go in an ``Authorization`` header built here, so no library logs them.

    One per event loop: an aiohttp session belongs to the loop it was made on.
    """

    def __init__(self, *, timeout: float, api_base: str | None) -> None:
        import aiohttp

        super().__init__(logger=_log, is_async=True, timeout=timeout)
        self._base = urlsplit(api_base) if api_base else None
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    def rewrite(self, url: str) -> str:
        """``url`` with the scheme and host of ``api_base`` (unchanged when there is none)."""
        if self._base is None:
            return url
        parts = urlsplit(url)
        path = self._base.path.rstrip("/") + parts.path
        return urlunsplit((self._base.scheme, self._base.netloc, path, parts.query, ""))

    async def request(self, method: str, url: str, params: Mapping[str, Any] | None = None,
                      data: Mapping[str, Any] | None = None,
                      headers: Mapping[str, str] | None = None,
                      auth: tuple[str, str] | None = None, timeout: float | None = None,
                      allow_redirects: bool = False) -> Response:
        import aiohttp

        _ANSWER.set(None)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        sent = dict(headers or {})
        if auth is not None:
            # Built here rather than with aiohttp's helpers, which changed between releases.
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            sent["Authorization"] = f"Basic {token}"
        # Repeated form keys (a list value, as requests would send them) become repeated pairs.
        form = None if data is None else [
            (k, str(item)) for k, v in data.items()
            for item in (v if isinstance(v, (list, tuple)) else (v,))]
        call_timeout = self._timeout if timeout is None else aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_read=timeout)
        target = self.rewrite(url)
        if _log.isEnabledFor(logging.DEBUG):  # the scrubbing is not free, at a thousand a second
            _log.debug("Twilio request: %s %s", method, redact(urlsplit(target).path))
        async with self._session.request(method.upper(), target, params=params or None,
                                         data=form, headers=sent, timeout=call_timeout,
                                         allow_redirects=allow_redirects) as answer:
            text = await answer.text()
            response = Response(answer.status, text, answer.headers)
        _log.debug("Twilio answered HTTP %s", answer.status)
        _ANSWER.set(response)
        return response

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# -- the channel ----------------------------------------------------------------------------------

class TwilioSettingsError(ValueError):
    """The channel's settings contradict each other or are malformed (never shows a secret)."""


class TwilioSMS(Channel):
    """SMS through Twilio's Programmable Messaging, sent from a number or a messaging service."""

    type_name = "twilio"
    address = "phone"
    #: Twilio has no batch endpoint: one message per request.
    batch_size = 1
    settings: ClassVar[Mapping[str, Setting]] = {
        "account_sid": Setting("str", required=True, secret=True, env="TWILIO_ACCOUNT_SID",
                               help="Account SID (AC...), read from the environment"),
        "auth_token": Setting("str", required=True, secret=True, env="TWILIO_AUTH_TOKEN",
                              help="auth token, read from the environment"),
        "from_number": Setting("str", help="sending number in E.164 (+15551234567); "
                                           "exactly one of from_number, messaging_service_sid"),
        "messaging_service_sid": Setting("str", help="messaging service (MG...) Twilio picks the "
                                                     "sender from; exactly one of the two"),
        "status_callback": Setting("str", help="https URL Twilio posts delivery status to "
                                               "(with [serve], each message gets outreach "
                                               "serve's own signed one instead)"),
        "api_base": Setting("str", help="send to this base URL instead of https://api.twilio.com "
                                        "(a local test server)"),
    }
    template_fields = {"body": TemplateField(required=True, help="the text message")}
    campaign_options = {
        "max_segments": Setting("int", minimum=1,
                                help="most SMS segments one message may take (GSM-7 160/153, "
                                     "UCS-2 70/67 characters)"),
    }

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        for key in ("account_sid", "auth_token"):  # a plain string is wrapped so it never shows
            value = self.config.get(key)
            if isinstance(value, str):
                self.config[key] = Secret(value, self.settings[key].env or key)
        problems = self.check_settings(self.config)
        if problems:
            raise TwilioSettingsError(f"channel {name!r} (twilio): " + "; ".join(problems))
        self._sid = self.config["account_sid"].reveal()
        self._token = self.config["auth_token"].reveal()
        self._timeout = float(self.config.get("timeout") or self.CORE_SETTINGS["timeout"].default)
        self._clients: dict[asyncio.AbstractEventLoop, Client] = {}
        self._lock = threading.Lock()

    def secret_values(self) -> list[str]:
        """The SID and token, and the base64 of ``sid:token`` that basic authentication sends (a
        proxy or a provider echoing the ``Authorization`` header would show that form)."""
        values = super().secret_values()
        sid, token = (_plain(self.config.get(k)) for k in ("account_sid", "auth_token"))
        if sid and token:
            values += basic_credentials(sid, token)
        return values

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> list[str]:
        """Problems with resolved settings that single keys cannot show, as sentences.

        Exactly one of ``from_number`` and ``messaging_service_sid`` is required; each must be well
        formed, ``status_callback`` must be an https URL and ``api_base`` an http(s) URL.
        """
        problems = []
        for key in ("account_sid", "auth_token"):
            value = settings.get(key)
            if value is None or (hasattr(value, "reveal") and not value.reveal()):
                problems.append(f"{key} is required (set {key}_env or "
                                f"${cls.settings[key].env})")
        sid = settings.get("account_sid")
        if (sid is not None and hasattr(sid, "reveal") and sid.reveal()
                and not ACCOUNT_SID.match(sid.reveal())):
            problems.append(f"account_sid (from ${sid.env}) is not an Account SID: expected AC "
                            "followed by 32 hexadecimal digits")
        sender, service = settings.get("from_number"), settings.get("messaging_service_sid")
        if sender and service:
            problems.append("set either from_number or messaging_service_sid, not both")
        elif not sender and not service:
            problems.append("from_number or messaging_service_sid is required")
        if sender and not E164.match(str(sender)):
            problems.append(f"from_number must be an E.164 number such as +15551234567, "
                            f"got {sender!r}")
        if service and not MESSAGING_SERVICE_SID.match(str(service)):
            problems.append("messaging_service_sid must be MG followed by 32 hexadecimal digits, "
                            f"got {service!r}")
        callback = settings.get("status_callback")
        if callback:
            parts = urlsplit(str(callback))
            if parts.scheme != "https" or not parts.hostname:
                problems.append(f"status_callback must be an https URL, got {callback!r}")
        base = settings.get("api_base")
        if base:
            parts = urlsplit(str(base))
            if parts.scheme not in ("http", "https") or not parts.hostname:
                problems.append(f"api_base must be an http(s) URL, got {base!r}")
        return problems

    def __repr__(self) -> str:
        sender = self.config.get("from_number") or self.config.get("messaging_service_sid")
        return f"<TwilioSMS {self.name!r} from {sender!r}>"

    # -- campaign checks ----------------------------------------------------------------------

    def check_rendered(self, content: Mapping[str, str], options: Mapping[str, Any]) -> list[str]:
        return segment_problems(content.get("body", ""), options.get("max_segments"))

    # -- sending ------------------------------------------------------------------------------

    def _client(self) -> Client:
        """The SDK client of the running event loop (an aiohttp session belongs to one loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                http = _HttpClient(timeout=self._timeout, api_base=self.config.get("api_base"))
                client = self._clients[loop] = Client(self._sid, self._token, http_client=http)
        return client

    async def send_async(self, messages: Sequence[OutgoingMessage]) -> Sequence[Delivery]:
        """Send each message in its own request (``batch_size`` is 1).

        A failure of a single-message call is raised; were several messages handed over, each
        failure would be set on its own :class:`Delivery` so that the sent ones are not resent.
        """
        out = []
        for message in messages:
            try:
                out.append(await self._send_one(message))
            except ChannelError as exc:
                if len(messages) == 1:
                    raise
                out.append(Delivery(message.key, error=exc))
        return out

    async def _send_one(self, message: OutgoingMessage) -> Delivery:
        import aiohttp

        body = message.content.get("body", "")
        limit = message.options.get("max_segments")
        # Counted only when needed: for the guard, or when Twilio does not say (gsm0338 encodes
        # character by character, a noticeable share of a call's CPU at a thousand a second).
        count = None
        if limit:
            count = count_segments(body)
            if count.segments > limit:  # a cost guard, also when validation was skipped
                raise PermanentError(f"the text takes {count.segments} {count.encoding} segments, "
                                     f"more than max_segments = {limit}", code="max_segments")
        params: dict[str, Any] = {"to": message.address, "body": body}
        if self.config.get("from_number"):
            params["from_"] = self.config["from_number"]
        else:
            params["messaging_service_sid"] = self.config["messaging_service_sid"]
        # With [serve], each message carries its own signed callback (outreach serve records the
        # delivery and settles an unknown outcome by it); otherwise the configured one, if any.
        callback = (message.variables.get("status_callback_url") if self.links_served else None
                    ) or self.config.get("status_callback")
        if callback:
            params["status_callback"] = callback
        client = self._client()
        # The SDK's and aiohttp's exceptions may hold the request URL, and so the Account SID: the
        # error raised is built from them but raised outside the handler, so it chains to none.
        error: ChannelError
        try:
            created = await client.messages.create_async(**params)
        except (TwilioRestException, TwilioServiceException) as exc:
            error = self._classify_refusal(exc, _ANSWER.get())
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            error = self._classify_network(exc)
        except TwilioException as exc:
            error = UnknownOutcomeError(self.redact(f"Twilio client error: {type(exc).__name__}"))
        except ValueError:  # the request went through but the answer could not be read
            error = UnknownOutcomeError("Twilio's answer could not be read; the message may have "
                                        "been sent", code="answer")
        else:
            return Delivery(message.key, provider_id=created.sid,
                            segments=_segments(created.num_segments)
                            or (count or count_segments(body)).segments)
        raise error

    # -- classification -----------------------------------------------------------------------

    def _classify_refusal(self, exc: TwilioRestException | TwilioServiceException,
                          response: Response | None) -> ChannelError:
        """An HTTP error answer, classified as Twilio means it."""
        status = int(exc.status)
        code = exc.code if isinstance(exc.code, int) else _int(exc.code)
        if isinstance(exc, TwilioServiceException):
            text = exc.detail or exc.title
        else:
            text = str(exc.msg).removeprefix("Unable to create record").lstrip(": ")
        shown = f"HTTP {status}" + (f", code {code}" if code and code != status else "")
        detail = self.redact(f"({shown}): {text}" if text else f"({shown})")
        report = code if code and code != status else status
        headers = getattr(response, "headers", None)
        if status == 429 or code == RATE_LIMITED:
            return TransientError(f"Twilio is rate limiting {detail}", code=report,
                                  retry_after=retry_after(headers))
        if status >= 500:
            return TransientError(f"Twilio could not take the message now {detail}", code=report,
                                  retry_after=retry_after(headers))
        if status in (401, 403) or (code is not None and code in ACCOUNT_CODES):
            why = ACCOUNT_CODES.get(code or 0) or "the account's credentials or permissions"
            return ConfigurationError(f"Twilio refused the account {detail}: {why}", code=report)
        if code is not None and code in SUPPRESS_CODES:
            return PermanentError(f"Twilio refused the number {detail}", code=code, suppress=True,
                                  reason=SUPPRESS_CODES[code])
        return PermanentError(f"Twilio refused the message {detail}", code=report)

    def _classify_network(self, exc: BaseException) -> ChannelError:
        """A request that got no answer: was it sent?"""
        import aiohttp

        host = self._where()
        if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
            # Raised before anything is sent, and never heals.
            return PermanentError(self.redact(f"cannot call {host}: {type(exc).__name__}"),
                                  code="request")
        if _never_left(exc):
            return TransientError(f"could not connect to {host} ({connection_reason(exc)}); "
                                  "the message was not sent", code="connect")
        if isinstance(exc, asyncio.TimeoutError):
            return UnknownOutcomeError(f"no answer from {host} within {self._timeout:g} s; the "
                                       "message may have been sent", code="timeout")
        return UnknownOutcomeError(f"the connection to {host} was lost after the request was "
                                   f"sent ({connection_reason(exc)}); the message may have been "
                                   "sent", code="connection")

    def _where(self) -> str:
        base = self.config.get("api_base")
        return urlsplit(base).netloc if base else "Twilio"

    async def aclose(self) -> None:
        """Close the running loop's HTTP session."""
        with self._lock:
            client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.http_client.close()

    def close(self) -> None:
        super().close()  # the session of the loop that served blocking send() calls
        with self._lock:
            # Any left belong to loops that ended without aclose(); nothing can close them now.
            self._clients.clear()


# -- helpers --------------------------------------------------------------------------------------

def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _plain(value: Any) -> str | None:
    """A setting's text, whether it is still a plain string or already a Secret."""
    value = value.reveal() if hasattr(value, "reveal") else value
    return value if isinstance(value, str) else None


def _segments(value: Any) -> int | None:
    """Twilio's ``num_segments`` ("2"), or None when absent or ``0`` (a messaging service's
    message has no sender yet when it is queued, so Twilio has not counted it)."""
    number = _int(value)
    return number if number and number > 0 else None


def _never_left(exc: BaseException) -> bool:
    """Whether the connection failed before a byte of the request was sent (refused, DNS,
    connect timeout, a TLS certificate refused in the handshake): then it is safe to try again."""
    import aiohttp

    return any(isinstance(e, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError,
                              ssl.SSLCertVerificationError))
               for e in causes(exc))

