"""The Twilio SMS channel: one message per call to ``POST /2010-04-01/Accounts/{sid}/Messages.json``.

It goes through the official ``twilio`` SDK with an HTTP client of its own (:class:`_HttpClient`)
that never retries by itself (the core owns retries, and a silent resend after the request left could
message someone twice), always has a timeout, can point at another host (``api_base``: a local test
server), keeps the last answer's headers (for Retry-After) and never logs a secret.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
from collections import Counter
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Iterable, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.retry import Retry

from outreach.channel import (
    Channel,
    ChannelError,
    Delivery,
    OutgoingMessage,
    PermanentError,
    TemplateField,
    TransientError,
    UnknownOutcomeError,
)
from outreach.settings import Secret, Setting
from outreach.sms import count_segments, segment_problems

_log = logging.getLogger("outreach_twilio")

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")

#: Twilio error codes that mean "never text this number again" (added to the suppression list).
SUPPRESS_CODES: Mapping[int, str] = {
    21610: "recipient replied STOP",
    21211: "not a valid phone number",
    21614: "not a mobile number",
}
#: Twilio's own "Too Many Requests" code (it comes with HTTP 429).
RATE_LIMITED = 20429


# -- secrets never in a log line ------------------------------------------------------------------

class _Redact(logging.Filter):
    """Replaces every live channel's Account SID and auth token in a log record by ``***``.

    The SDK and urllib3 log request URLs (``/Accounts/AC.../Messages.json``) at INFO / DEBUG; a filter
    on those loggers is the one place that sees every such record before any handler does.
    """

    def __init__(self) -> None:
        super().__init__("outreach_twilio")
        self._lock = threading.Lock()
        self._secrets: Counter[str] = Counter()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            self._secrets.update(v for v in values if v)

    def remove(self, values: Iterable[str]) -> None:
        with self._lock:
            self._secrets.subtract(v for v in values if v)
            self._secrets = +self._secrets  # drop the ones no channel holds any more

    def scrub(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot be formatted is the logging module's business
            return True
        clean = self.scrub(text)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


_REDACT = _Redact()
#: Loggers that may write a request URL (which holds the Account SID).
_GUARDED_LOGGERS = ("twilio.http_client", "urllib3.connectionpool", "urllib3.connection",
                    "urllib3.util.retry", "urllib3.poolmanager", "urllib3.response", "outreach_twilio")
_installed = False
_install_lock = threading.Lock()


def _guard_loggers() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            for name in _GUARDED_LOGGERS:
                logging.getLogger(name).addFilter(_REDACT)
            _installed = True


# -- the HTTP client ------------------------------------------------------------------------------

class _HttpClient(TwilioHttpClient):
    """The SDK's requests-based client, made safe for sending messages.

    * no retries at any layer: urllib3 ``Retry(total=0, read=False)`` on both schemes (a read error
      is raised as itself, so a read timeout stays a ``ReadTimeout``);
    * a timeout on every call;
    * ``api_base`` rewrites scheme and host (and prefixes its path) in :meth:`request`, after the SDK
      applied TWILIO_REGION / TWILIO_EDGE, so it works whatever those say;
    * :attr:`last_response` keeps the answer of the last call made through it, headers included: the
      SDK's exceptions do not carry headers, and Retry-After lives there. One client per thread.
    """

    def __init__(self, *, timeout: float, api_base: str | None) -> None:
        super().__init__(pool_connections=True, timeout=timeout, logger=_log)
        adapter = HTTPAdapter(max_retries=Retry(total=0, read=False, redirect=False))
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self._base = urlsplit(api_base) if api_base else None
        self.last_response: Response | None = None
        # requests reads the proxy and CA-bundle variables from the environment on every call
        # (scanning all of os.environ twice); a client lives for one dispatch, so read them once
        # per host and proxy setting.
        merge = self.session.merge_environment_settings
        known: dict[Any, dict[str, Any]] = {}

        def merged(url: str, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
            parts = urlsplit(url)
            key = (parts.scheme, parts.netloc, tuple(sorted((proxies or {}).items())), stream,
                   verify, cert)
            found = known.get(key)
            if found is None:
                found = known[key] = merge(url, proxies, stream, verify, cert)
            return {k: (dict(v) if isinstance(v, dict) else v) for k, v in found.items()}

        self.session.merge_environment_settings = merged  # type: ignore[method-assign]

    def rewrite(self, url: str) -> str:
        """``url`` with the scheme and host of ``api_base`` (unchanged when there is none)."""
        if self._base is None:
            return url
        parts = urlsplit(url)
        path = self._base.path.rstrip("/") + parts.path
        return urlunsplit((self._base.scheme, self._base.netloc, path, parts.query, ""))

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        self.last_response = None
        response = super().request(method, self.rewrite(url), *args, **kwargs)
        self.last_response = response
        return response

    def log_request(self, kwargs: dict[str, Any]) -> None:
        # The SDK's own version logs the URL at INFO; here the path only, scrubbed, at DEBUG, and
        # never a header or the form (phone numbers and message text are personal data).
        _log.debug("Twilio request: %s %s", kwargs["method"],
                   _REDACT.scrub(urlsplit(kwargs["url"]).path))

    def log_response(self, status_code: int, response: Any) -> None:
        _log.debug("Twilio answered HTTP %s", status_code)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


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
        "status_callback": Setting("str", help="https URL Twilio posts delivery status to"),
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
        _guard_loggers()
        _REDACT.add((self._sid, self._token))
        self._local = threading.local()
        self._clients: list[_HttpClient] = []
        self._lock = threading.Lock()
        self._closed = False

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
        if hasattr(sid, "reveal") and sid.reveal() and not ACCOUNT_SID.match(sid.reveal()):
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

    def _client(self) -> tuple[Client, _HttpClient]:
        """This thread's SDK client (a requests session is not safe to share between threads)."""
        pair = getattr(self._local, "pair", None)
        if pair is None:
            http = _HttpClient(timeout=self._timeout, api_base=self.config.get("api_base"))
            pair = (Client(self._sid, self._token, http_client=http), http)
            with self._lock:
                self._clients.append(http)
            self._local.pair = pair
        return pair

    def send(self, messages: Sequence[OutgoingMessage]) -> Sequence[Delivery]:
        """Send each message in its own request (``batch_size`` is 1).

        A failure of a single-message call is raised; were several messages handed over, each
        failure would be set on its own :class:`Delivery` so that the sent ones are not resent.
        """
        out = []
        for message in messages:
            try:
                out.append(self._send_one(message))
            except ChannelError as exc:
                if len(messages) == 1:
                    raise
                out.append(Delivery(message.key, error=exc))
        return out

    def _send_one(self, message: OutgoingMessage) -> Delivery:
        body = message.content.get("body", "")
        limit = message.options.get("max_segments")
        # Counted only when needed: for the guard, or when Twilio does not say (gsm0338 encodes
        # character by character, a noticeable share of a call's CPU at a thousand a second).
        count = count_segments(body) if limit else None
        if count is not None and count.segments > limit:  # a cost guard, also when validation was skipped
            raise PermanentError(f"the text takes {count.segments} {count.encoding} segments, "
                                 f"more than max_segments = {limit}", code="max_segments")
        params: dict[str, Any] = {"to": message.address, "body": body}
        if self.config.get("from_number"):
            params["from_"] = self.config["from_number"]
        else:
            params["messaging_service_sid"] = self.config["messaging_service_sid"]
        if self.config.get("status_callback"):
            params["status_callback"] = self.config["status_callback"]
        client, http = self._client()
        # The SDK's and requests' exceptions hold the request URL, and so the Account SID: the
        # error raised is built from them but raised outside the handler, so it chains to none.
        error: ChannelError
        try:
            created = client.messages.create(**params)
        except (TwilioRestException, TwilioServiceException) as exc:
            error = self._classify_refusal(exc, http.last_response)
        except requests.RequestException as exc:
            error = self._classify_network(exc)
        except TwilioException as exc:
            error = UnknownOutcomeError(self._scrub(f"Twilio client error: {type(exc).__name__}"))
        except ValueError:  # the request went through but the answer could not be read
            error = UnknownOutcomeError("Twilio's answer could not be read; the message may have "
                                        "been sent", code="answer")
        else:
            return Delivery(message.key, provider_id=created.sid,
                            segments=_segments(created.num_segments)
                            or (count or count_segments(body)).segments)
        raise error

    # -- classification -----------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in (self._sid, self._token):
            text = text.replace(secret, "***")
        return text

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
        detail = self._scrub(f"({shown}): {text}" if text else f"({shown})")
        report = code if code and code != status else status
        if status == 429 or code == RATE_LIMITED:
            return TransientError(f"Twilio is rate limiting {detail}", code=report,
                                  retry_after=_retry_after(response))
        if status >= 500:
            return TransientError(f"Twilio could not take the message now {detail}", code=report,
                                  retry_after=_retry_after(response))
        if code in SUPPRESS_CODES:
            return PermanentError(f"Twilio refused the number {detail}", code=code, suppress=True,
                                  reason=SUPPRESS_CODES[code])
        return PermanentError(f"Twilio refused the message {detail}", code=report)

    def _classify_network(self, exc: requests.RequestException) -> ChannelError:
        """A request that got no answer: was it sent?"""
        host = self._where()
        if isinstance(exc, requests.ConnectTimeout) or _never_left(exc):
            return TransientError(f"could not connect to {host} ({_root_reason(exc)}); "
                                  "the message was not sent", code="connect")
        if isinstance(exc, requests.Timeout):
            return UnknownOutcomeError(f"no answer from {host} within {self._timeout:g} s; the "
                                       "message may have been sent", code="timeout")
        if isinstance(exc, requests.ConnectionError):
            return UnknownOutcomeError(f"the connection to {host} was lost after the request was "
                                       f"sent ({_root_reason(exc)}); the message may have been "
                                       "sent", code="connection")
        # Invalid URL, missing schema...: raised before anything is sent, and never heals.
        return PermanentError(self._scrub(f"cannot call {host}: {type(exc).__name__}"),
                              code="request")

    def _where(self) -> str:
        base = self.config.get("api_base")
        return urlsplit(base).netloc if base else "Twilio"

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
            closing = not self._closed
            self._closed = True
        for http in clients:
            http.close()
        self._local = threading.local()
        if closing:
            _REDACT.remove((self._sid, self._token))


# -- helpers --------------------------------------------------------------------------------------

def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _segments(value: Any) -> int | None:
    """Twilio's ``num_segments`` ("2"), or None when absent or ``0`` (a messaging service's
    message has no sender yet when it is queued, so Twilio has not counted it)."""
    number = _int(value)
    return number if number and number > 0 else None


def _retry_after(response: Response | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), else None."""
    headers = getattr(response, "headers", None) or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and everything it wraps (args, urllib3's ``reason``, ``__cause__``, ``__context__``)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend(a for a in getattr(item, "args", ()) if isinstance(a, BaseException))
        for attr in ("reason", "__cause__", "__context__"):
            inner = getattr(item, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)


def _never_left(exc: BaseException) -> bool:
    """Whether the connection failed before a byte of the request was sent (refused, DNS,
    connect timeout, a TLS certificate refused in the handshake): then it is safe to try again."""
    return any(isinstance(e, (NewConnectionError, ConnectTimeoutError, ssl.SSLCertVerificationError))
               for e in _causes(exc))


def _root_reason(exc: BaseException) -> str:
    """A short reason without the URL (requests' own messages hold the path and so the SID)."""
    for item in _causes(exc):
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
    for item in _causes(exc):
        if isinstance(item, (ConnectionError, TimeoutError)):
            return type(item).__name__
    return type(exc).__name__
