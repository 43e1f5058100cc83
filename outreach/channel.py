"""What a channel plugin is: the class it subclasses, what it is handed and what it answers.

A channel delivers rendered messages to one provider. It is configured in ``outreach.toml``::

    [channels.email]
    plugin = "sendgrid"              # the channel type a plugin registered
    from_email = "shop@example.com"  # the channel type's own settings...
    api_key_env = "SENDGRID_API_KEY" # ...secrets only through the environment
    rate_limit = 100                 # core settings every channel has (messages per second)

The core owns batching, concurrency, rate limits and retries; a channel only says how large a batch
it takes and classifies each failure as the provider means it, by raising one of the three errors
below. That classification decides whether a message is retried, failed or marked unknown, so it is
part of the plugin's contract (``outreach.testing`` checks it).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar, Hashable, Mapping, Sequence

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
        if loop is not None:
            try:
                loop.run(self.aclose())
            finally:
                loop.stop()


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
