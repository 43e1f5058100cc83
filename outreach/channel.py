"""What a channel plugin is: the class it subclasses, what it is handed and what it answers.

A channel delivers rendered messages to one provider. It is configured in ``outreach.toml``::

    [channels.email]
    plugin = "sendgrid"              # the channel type a plugin registered
    from_email = "shop@example.com"  # the channel type's own settings...
    api_key_env = "SENDGRID_API_KEY" # ...secrets only through the environment
    rate_limit = 100                 # core settings every channel has (messages per second)

The core owns batching, concurrency, rate limits and retries; a channel only says how large a batch
it takes and classifies each failure as the provider means it, by raising one of the four errors
below. That classification decides whether a message is retried, failed, marked unknown or left
queued while the channel stops, so it is part of the plugin's contract (``outreach.testing``
checks it).

Every channel needs a few things done the same way, so they live here once: :func:`redact` for any
provider text that is stored, shown or logged (credentials echoed back by a provider or a proxy),
:func:`retry_after` for a provider's wait hint, and :func:`causes` to look through an exception's
chain (a connect error wrapped in a client error).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import math
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any, ClassVar, Hashable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote

from outreach.settings import Setting


class ChannelError(Exception):
    """A delivery failed. The message must make sense to an operator and never hold a secret."""

    #: A provider's own error code (``"21610"``, ``"429"``) for reports and tests.
    code: str | None

    def __init__(self, message: str, *, code: str | int | None = None) -> None:
        super().__init__(message)
        self.code = None if code is None else str(code)


class TransientError(ChannelError):
    """The provider did not accept the request and asked to try again (429, 5xx, refused connection).

    Safe to retry: the request did not take effect. ``retry_after`` (seconds) is the provider's own
    hint (Retry-After, X-RateLimit-Reset) and is honoured over the computed backoff.
    """

    def __init__(self, message: str, *, code: str | int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class PermanentError(ChannelError):
    """The provider refused the message for good (other 4xx). Never retried.

    ``suppress`` asks the core to add the address to the suppression list (a STOP reply, a number
    that cannot receive SMS), with ``reason`` recorded there.
    """

    def __init__(self, message: str, *, code: str | int | None = None, suppress: bool = False,
                 reason: str | None = None) -> None:
        super().__init__(message, code=code)
        self.suppress = suppress
        self.reason = reason or message


class UnknownOutcomeError(ChannelError):
    """The request may have reached the provider (read timeout, connection dropped after sending).

    Never resent automatically: the message is recorded as ``unknown`` for an operator to decide.
    """


class ConfigurationError(ChannelError):
    """The provider refused the deployment, not the message: credentials refused (HTTP 401/403),
    a sender identity missing or unverified, an account suspended, a folder that cannot be written.

    No message can go through this channel until an operator fixes its configuration, so the core
    stops the channel for the rest of the run: its messages stay queued (their claims are released
    and no attempt is counted), the run reports the channel with this error's text and exits 1, and
    the first run after the fix sends them. Raise it only when nothing was sent (the provider
    answered with a refusal, or the call never started); a request that may have been accepted is an
    :class:`UnknownOutcomeError`, and a refusal of one message (a bad address, an opted-out
    number) a :class:`PermanentError`.
    """


@dataclass(frozen=True)
class OutgoingMessage:
    """One rendered message, as handed to :meth:`Channel.send`."""

    #: The ledger's unique key. Providers should carry it (SendGrid ``custom_args``) so delivery
    #: events can be matched back to the ledger.
    key: str
    campaign: str
    #: ``"marketing"`` or ``"transactional"``; marketing email needs List-Unsubscribe headers.
    category: str
    customer_id: str
    #: The address on this channel's kind: an email address or an E.164 phone number.
    address: str
    #: The recipient's display name, for an email ``To`` header.
    name: str
    locale: str
    #: The campaign's rendered template fields for this channel (``subject``, ``body``, ``html``).
    content: Mapping[str, str]
    #: The campaign's non-template options for this channel (a provider template id, say).
    options: Mapping[str, Any] = field(default_factory=dict)
    #: The variables the templates were rendered with, for provider-side dynamic templates.
    variables: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Delivery:
    """The provider's answer for one message of a batch."""

    key: str
    provider_id: str | None = None
    #: SMS segments billed (or any channel's unit of cost); ``None`` when not meaningful.
    segments: int | None = None
    #: A failure of this one message when the batch as a whole went through.
    error: ChannelError | None = None


@dataclass(frozen=True)
class TemplateField:
    """A template a campaign writes in this channel's section (``subject``, ``body``...)."""

    required: bool = False
    help: str = ""


class Channel:
    """Base class of every channel type. Subclass it, declare the class attributes, implement
    :meth:`send` or :meth:`send_async`.

    One instance is made per configured channel (``[channels.NAME]``) per process, with the settings
    already validated.

    * A channel whose SDK is blocking implements ``send``. It may be called from several threads at
      once (``concurrency``), so keep per-call state local and make the SDK client thread-safe or
      per-thread.
    * A channel whose SDK has an asyncio client implements ``send_async`` instead (and gets ``send``
      for free). The dispatcher then keeps ``concurrency`` calls in flight on one event loop, which
      costs far less CPU per call than a thread each: through Twilio's SDK, about 0.3 ms a message
      against 2.5 ms with requests in threads, which decides how many messages one process can send
      a second. Its calls run concurrently on one loop: keep per-call state local (a
      :class:`contextvars.ContextVar` follows one call).
    """

    #: The name ``plugin = "..."`` uses in ``outreach.toml``.
    type_name: ClassVar[str] = ""
    #: Which customer address this channel delivers to: ``"email"`` or ``"phone"``.
    address: ClassVar[str] = "email"
    #: The channel type's own settings (secrets marked ``secret=True``).
    settings: ClassVar[Mapping[str, Setting]] = {}
    #: The templates a campaign writes for this channel.
    template_fields: ClassVar[Mapping[str, TemplateField]] = {}
    #: Non-template keys a campaign may set in this channel's section.
    campaign_options: ClassVar[Mapping[str, Setting]] = {}
    #: The most messages one :meth:`send` call takes. The core groups by :meth:`batch_key`.
    batch_size: ClassVar[int] = 1

    #: Calls in flight at once when ``concurrency`` is not set, for a blocking channel (each call
    #: holds a thread) and for an asyncio one (each call is a coroutine on one event loop: enough
    #: in flight that a process is held by its CPU, not by the provider's answer time; the
    #: README's Performance section has the measurements). A channel type may set its own.
    THREADED_CONCURRENCY: ClassVar[int] = 8
    ASYNC_CONCURRENCY: ClassVar[int] = 64

    #: True when the deployment has ``[serve]``: every message then carries signed
    #: ``unsubscribe_url``, ``preferences_url`` and ``feedback_url`` in ``message.variables``
    #: (an email channel can fill ``List-Unsubscribe`` from them with no setting of its own).
    links_served: bool = False

    #: Settings the core adds to every channel; ``timeout`` (seconds) is also passed in ``config``
    #: and must bound every network call (an unbounded wait would hold a claim forever).
    CORE_SETTINGS: ClassVar[Mapping[str, Setting]] = {
        "plugin": Setting("str", required=True, help="the channel type"),
        "consent": Setting("str", help="consent a customer must have given (default: channel name)"),
        "rate_limit": Setting("number", minimum=0.001, help="messages per second at most"),
        "concurrency": Setting("int", minimum=1,
                               help="calls in flight at once (default: the channel type's)"),
        "timeout": Setting("number", default=10.0, minimum=0.001, help="seconds for one call"),
    }

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        #: The configured channel's name (``email`` in ``[channels.email]``).
        self.name = name
        #: Validated settings; secret ones are :class:`outreach.settings.Secret`.
        self.config = dict(settings)
        # Masked in every guarded log line and every redacted text until close().
        self.__dict__["_outreach_secrets"] = self.secret_values()
        LIVE_SECRETS.add(self.__dict__["_outreach_secrets"])

    def secret_values(self) -> list[str]:
        """The secret values this channel holds (its settings declared ``secret=True``), in every
        form a provider's text may echo them.

        :func:`redact` masks them while the channel is open. Override to add derived forms (the
        Twilio channel adds the base64 of ``sid:token``, which a proxy echoing the
        ``Authorization`` header would show); call ``super()``. It is called from
        ``Channel.__init__``, so it may read only :attr:`config`.
        """
        values = []
        for key, setting in self.settings.items():
            if setting.secret:
                value = _reveal(self.config.get(key))
                if value:
                    values.append(value)
        return values

    def redact(self, text: str) -> str:
        """``text`` (a provider's answer, an exception's message) with every credential masked:
        this channel's secrets, every open channel's, and ``Authorization`` values.

        Call it on every provider text a channel puts in an error, a log line or a delivery:
        the core stores and prints error texts as they are.
        """
        return redact(text, self.__dict__.get("_outreach_secrets", ()))

    def check_campaign(self, fields: set[str], options: Mapping[str, Any],
                       category: str) -> list[str]:
        """Problems with a campaign's section for this channel (which fields it writes, its options).

        ``category`` is the campaign's (``marketing`` or ``transactional``): marketing email, say,
        cannot go out without an unsubscribe link configured.

        The default requires every ``required`` template field. Override to allow alternatives (a
        provider template id instead of a subject, say); call ``super()`` for the common checks.
        """
        return [f"{name} is required" for name, spec in self.template_fields.items()
                if spec.required and name not in fields]

    def check_rendered(self, content: Mapping[str, str], options: Mapping[str, Any]) -> list[str]:
        """Problems with one rendered message (too many SMS segments, say). Used by validate/preview."""
        return []

    def batch_key(self, message: OutgoingMessage) -> Hashable:
        """Messages with equal keys may share one :meth:`send` call (same campaign and template)."""
        return (message.campaign, message.locale)

    def send(self, messages: Sequence[OutgoingMessage]) -> Sequence[Delivery]:
        """Deliver ``messages`` (at most :attr:`batch_size`, one batch key) and say what happened.

        Raise :class:`TransientError`, :class:`PermanentError` or :class:`UnknownOutcomeError` when the
        whole call failed; return a :class:`Delivery` per message otherwise (in any order), with
        ``error`` set on the ones the provider refused individually.

        A channel that implements :meth:`send_async` inherits this: the call runs on an event loop
        of the channel's own, in a background thread, so any thread may call it.
        """
        if not self.is_async:
            raise NotImplementedError(f"{type(self).__name__} implements neither send nor send_async")
        return self._own_loop().run(self.send_async(messages))

    async def send_async(self, messages: Sequence[OutgoingMessage]) -> Sequence[Delivery]:
        """:meth:`send` for an asyncio SDK: the same contract, awaited on the dispatcher's loop."""
        raise NotImplementedError

    @classmethod
    def default_concurrency(cls) -> int:
        """Calls in flight at once when a deployment does not say (see ``ASYNC_CONCURRENCY``)."""
        return cls.ASYNC_CONCURRENCY if cls.send_async is not Channel.send_async \
            else cls.THREADED_CONCURRENCY

    @property
    def is_async(self) -> bool:
        """Whether this channel type implements :meth:`send_async` (the dispatcher then awaits it
        rather than calling :meth:`send` in threads)."""
        return type(self).send_async is not Channel.send_async

    async def aclose(self) -> None:
        """Release what :meth:`send_async` opened on the running event loop (an HTTP session).

        The core calls it on each loop that sent, before that loop ends; clients bound to a loop
        cannot be closed from another one.
        """

    def _own_loop(self) -> "_LoopThread":
        lock = self.__dict__.setdefault("_outreach_loop_lock", threading.Lock())
        with lock:
            loop = self.__dict__.get("_outreach_loop")
            if loop is None:
                loop = self.__dict__["_outreach_loop"] = _LoopThread(f"outreach-{self.name}")
            return loop

    def describe(self) -> dict[str, Any]:
        """What ``outreach plugins`` and logs may show of this channel: settings with secrets masked."""
        return {k: (f"${v.env}" if hasattr(v, "reveal") else v) for k, v in self.config.items()}

    def close(self) -> None:
        """Release connections. Called once when dispatch ends.

        Subclasses that override it call ``super().close()``: for a channel with
        :meth:`send_async`, it closes what :meth:`send` opened on the channel's own loop.
        """
        loop = self.__dict__.pop("_outreach_loop", None)
        try:
            if loop is not None:
                try:
                    loop.run(self.aclose())
                finally:
                    loop.stop()
        finally:
            LIVE_SECRETS.remove(self.__dict__.pop("_outreach_secrets", ()))


class _LoopThread:
    """An event loop running in a daemon thread, for calling coroutines from blocking code."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the loop and wait for its result (or exception)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _reveal(value: Any) -> str | None:
    """The text of a secret setting, whether it is a :class:`~outreach.settings.Secret` or not."""
    if value is None:
        return None
    if hasattr(value, "reveal"):
        return str(value.reveal())
    return value if isinstance(value, str) else None


# -- redaction -------------------------------------------------------------------------------------

#: An ``Authorization`` value (``Basic <base64>``, ``Bearer <token>``) wherever it shows: a header
#: echoed in an error body, a proxy's page, a log line of request headers.
_AUTHORIZATION = re.compile(r"(?i)\b(basic|bearer)(\s+)([A-Za-z0-9._~+/-]{8,}=*)")
MASK = "***"


def basic_credentials(user: str, password: str) -> list[str]:
    """The forms HTTP basic authentication puts ``user:password`` in (base64, with and without
    its padding), to add to a channel's :meth:`Channel.secret_values`."""
    encoded = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
    return [encoded, encoded.rstrip("=")]


class Redactor(logging.Filter):
    """The secrets to mask in this process, and a :class:`logging.Filter` that masks them.

    Values are counted, so two channels holding one key keep it masked until both are closed. Each
    value is masked as written and URL-encoded (a URL in a library's message may carry it so).
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._values: Counter[str] = Counter()
        self._pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str]) -> None:
        """Mask ``values`` (empty ones are ignored) until :meth:`remove`."""
        with self._lock:
            self._values.update(form for v in values if v for form in _forms(v))
            self._pattern = None

    def remove(self, values: Iterable[str]) -> None:
        """Stop masking ``values`` once every holder removed them."""
        with self._lock:
            self._values.subtract(form for v in values if v for form in _forms(v))
            self._values = +self._values  # drop the ones nobody holds any more
            self._pattern = None

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._values:
                # Longest first, so a value containing another is masked whole.
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, ordered)))
            return self._pattern

    def redact(self, text: str, extra: Iterable[str] = ()) -> str:
        """``text`` with ``Authorization`` values, the registered secrets and ``extra`` masked."""
        text = _AUTHORIZATION.sub(rf"\1\2{MASK}", text)
        pattern = self._compiled()
        if pattern is not None:
            text = pattern.sub(MASK, text)
        for value in extra:
            if value:
                for form in _forms(value):
                    text = text.replace(form, MASK)
        return text

    __call__ = redact

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask secrets in a log record (its formatted message) before any handler sees it."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is logging's business
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True

    def guard(self, *loggers: str) -> None:
        """Filter every record of these loggers (a logger's filters see only its own records, not
        its children's: name each one that may log a request, its headers or its URL)."""
        for name in loggers:
            logger = logging.getLogger(name)
            if self not in logger.filters:
                logger.addFilter(self)


def _forms(value: str) -> set[str]:
    return {value, quote(value, safe="")}


#: The secrets of every open channel of this process (added when a channel is made, removed when it
#: is closed). Plugins guard the loggers of their SDK with it: ``LIVE_SECRETS.guard("sdk.http")``.
LIVE_SECRETS = Redactor()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` safe to store, print or log: ``Authorization`` values (``Basic ...``,
    ``Bearer ...``), the secrets of every open channel (with the base64 forms channels add, see
    :meth:`Channel.secret_values`) and ``secrets`` are replaced by ``***``.

    The ledger, ``outreach status`` and ``outreach history`` show error texts as channels wrote
    them: a channel passes every provider text through this (or :meth:`Channel.redact`) first.
    """
    return LIVE_SECRETS.redact(str(text), secrets)


# -- a provider's wait hint ------------------------------------------------------------------------

def _header(headers: Any, name: str) -> str | None:
    """The value of header ``name`` in any mapping of headers, ignoring case."""
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except (AttributeError, TypeError):
        value = None
    if value is None:
        items = headers.items() if hasattr(headers, "items") else headers
        try:
            value = next((v for k, v in items if str(k).lower() == name.lower()), None)
        except (TypeError, ValueError):
            return None
    return None if value is None else str(value).strip()


#: An ``X-RateLimit-Reset`` below this is a number of seconds, above it a Unix time (SendGrid's).
_EPOCH_FROM = 1_000_000_000


def retry_after(headers: Any, *, now: float | None = None) -> float | None:
    """Seconds a provider asked to wait before trying again, or None when it did not say.

    ``Retry-After`` as delta-seconds (``"7"``) or an HTTP date (RFC 9110), else
    ``X-RateLimit-Reset`` as a Unix time (SendGrid's; a small number is taken as seconds). Never
    negative; a value that cannot be read is ignored. ``headers`` is any mapping of header names
    (looked up ignoring case); ``now`` is the Unix time to count from (default: the clock).
    """
    clock = time.time() if now is None else now
    value = _header(headers, "Retry-After")
    if value:
        seconds = _number(value)
        if seconds is not None:
            return max(0.0, seconds)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            if when.tzinfo is None:  # an HTTP date is GMT by definition
                when = when.replace(tzinfo=timezone.utc)
            return max(0.0, when.timestamp() - clock)
    reset = _number(_header(headers, "X-RateLimit-Reset") or "")
    if reset is not None:
        return max(0.0, reset - clock if reset >= _EPOCH_FROM else reset)
    return None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# -- an exception's chain --------------------------------------------------------------------------

def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` then every exception it wraps, each once, nearest first: ``__cause__``,
    ``__context__``, and the exceptions libraries keep in ``args`` or ``reason`` (urllib's
    ``URLError``, aiohttp's connector errors).

    A channel tells a connect error (nothing was sent: retry) from a read error (it may have been
    sent: unknown) by what it finds here, and the contract check looks for secrets in all of it.
    """
    seen: set[int] = set()
    todo: deque[BaseException] = deque([exc])
    while todo:
        item = todo.popleft()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        for inner in (*getattr(item, "args", ()), getattr(item, "reason", None),
                      item.__cause__, item.__context__):
            if isinstance(inner, BaseException) and id(inner) not in seen:
                todo.append(inner)


def connection_reason(exc: BaseException) -> str:
    """A short reason a connection failed (``Connection refused``), from the innermost error that
    says, else the name of its type: never the libraries' own messages, which may hold the request
    URL and so a secret in it."""
    chain = list(causes(exc))
    for item in chain:
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
    for item in chain:
        if isinstance(item, (ConnectionError, TimeoutError)):
            return type(item).__name__
    return type(exc).__name__
