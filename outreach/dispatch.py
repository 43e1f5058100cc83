"""Dispatch: deliver due outbox messages through their channels, and record every outcome.

Messages are claimed atomically (queued → sending, with an owner and an expiry), rendered from the
stored campaign version, grouped into the channel's batches and sent with bounded concurrency and a
per-channel rate limit. Batches go out in waves of ``concurrency``: each wave is recorded as handed
over in one statement just before its calls are made, and its outcomes are written in one
statement after. A crash therefore leaves at most one wave per channel whose fate is unknown, and
those messages are marked ``unknown``, never silently resent.

Retries: a :class:`~outreach.channel.TransientError` is retried in-process by tenacity (exponential
backoff with jitter, or the provider's Retry-After) a few times; after that the message is deferred
to a later run with a backoff carried in the ledger, until ``retry.max_attempts`` is reached.
Permanent errors fail the message at once (and may suppress the address); ambiguous ones are
recorded as ``unknown``.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Sequence

from tenacity import (
    RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter,
)

from outreach.channel import (
    Channel, ChannelError, Delivery, OutgoingMessage, PermanentError, TransientError,
    UnknownOutcomeError,
)
from outreach.config import Project, RetryPolicy
from outreach.ledger import Claimed, Ledger, epoch, wall_clock
from outreach.plugins import Plugins
from outreach.render import RenderError, render_stored
from outreach.report import RunReport

CLAIM_CHUNK = 1000
#: At most this many messages are claimed at once, however wide a channel's waves are.
MAX_CLAIM = 10_000


class RateLimiter:
    """Spaces calls evenly so that at most ``rate`` messages a second leave, from any thread.

    Even spacing (rather than a burst then a pause) is what keeps a provider from answering 429.
    A slot missed while the caller was busy elsewhere (settling a wave) may be used up to ``slack``
    seconds late, so the pauses between waves do not pull the rate under what is configured: at
    most ``rate × slack`` messages (5 at 100/s) ever leave closer together than the even spacing.
    """

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, slack: float = 0.05) -> None:
        self.rate = rate
        self.slack = slack
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, n: int = 1) -> None:
        """Wait until ``n`` more messages may leave."""
        if not self.rate:
            return
        with self._lock:
            now = self._clock()
            start = max(now - self.slack, self._next)
            self._next = start + n / self.rate
        if start > now:
            self._sleep(start - now)


@dataclass
class _Work:
    message: OutgoingMessage
    claimed: Claimed


@dataclass
class _Outcome:
    work: _Work
    state: str
    delivery: Delivery | None = None
    error: ChannelError | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    #: The report column when it is not the state (a message stopped by a late suppression is
    #: failed in the ledger but reported as suppressed: policy working, not a failure).
    counted_as: str | None = None


class Dispatcher:
    """Delivers due messages for one process (``owner``); several may work one outbox at once."""

    def __init__(self, project: Project, plugins: Plugins, ledger: Ledger, now: datetime,
                 report: RunReport, *, campaigns: Sequence[str] | None = None,
                 owner: str | None = None, progress: Callable[[int], None] | None = None) -> None:
        self.project = project
        self.plugins = plugins
        self.ledger = ledger
        self.now = now
        self.report = report
        self.campaigns = list(campaigns) if campaigns else None
        self.owner = owner or f"{uuid.uuid4().hex[:12]}"
        self.progress = progress
        self.retry: RetryPolicy = project.retry
        self._ttl = int(project.claim_ttl.total_seconds())
        self._channels: dict[str, Channel] = {}
        self._limiters = {name: RateLimiter(cfg.rate_limit) for name, cfg in project.channels.items()}
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._done = 0

    # ------------------------------------------------------------------ main loop
    def run(self, limit: int | None = None) -> None:
        """Recover abandoned claims, then send until nothing due is left (or ``limit`` messages)."""
        self.report.recovered = self.ledger.recover()
        ttl = self._ttl
        configured = list(self.project.channels)
        # A claim feeds at least one full wave of every channel (concurrency × batch size: four
        # SendGrid requests of 1000 recipients each go out together, not one after the other).
        size = max([CLAIM_CHUNK] + [min(MAX_CLAIM, cfg.concurrency * max(1, cfg.cls.batch_size))
                                    for cfg in self.project.channels.values()])
        # Claim no more than a rate-limited channel can send in half a claim's lifetime, so claims
        # do not expire while their messages wait their turn.
        for cfg in self.project.channels.values():
            if cfg.rate_limit:
                size = min(size, max(1, int(cfg.rate_limit * ttl / 2)))
        try:
            while limit is None or self._done < limit:
                chunk = size if limit is None else min(size, limit - self._done)
                claimed = self.ledger.claim(self.owner, chunk, epoch(self.now), ttl,
                                            self.campaigns, configured)
                if not claimed:
                    break
                self._deliver(claimed)
        finally:
            for pool in self._pools.values():
                pool.shutdown(wait=True)
            for channel in self._channels.values():
                channel.close()

    def _channel(self, name: str) -> Channel:
        if name not in self._channels:
            self._channels[name] = self.project.channels[name].create()
        return self._channels[name]

    def _deliver(self, claimed: list[Claimed]) -> None:
        outcomes: list[_Outcome] = []
        by_channel: dict[str, list[_Work]] = {}
        # A STOP reply or a bounce may have come in since the message was planned (a deferral
        # through the night, a retry): the suppression list is read again just before sending.
        kinds = {name: cfg.cls.address for name, cfg in self.project.channels.items()}
        blocked = self.ledger.suppressed({(kinds[r.channel], r.address) for r in claimed
                                          if r.channel in kinds})
        for row in claimed:
            reason = blocked.get((kinds.get(row.channel, ""), row.address)) if blocked else None
            if reason is not None:
                message = self._message(row, {}, {})
                text = f"suppressed after it was planned: {reason}"
                outcomes.append(_Outcome(_Work(message, row), "failed", error=PermanentError(text),
                                         fields={"error": text, "attempts": row.attempts},
                                         counted_as="suppressed"))
                continue
            try:
                content, options = render_stored(self.ledger.version_content(row.version_id),
                                                 row.channel, row.locale, row.variables)
            except RenderError as exc:
                message = self._message(row, {}, {})
                outcomes.append(_Outcome(_Work(message, row), "failed",
                                         error=PermanentError(f"cannot render: {exc}"),
                                         fields={"error": f"cannot render: {exc}",
                                                 "attempts": row.attempts + 1}))
                continue
            message = self._message(row, content, options)
            by_channel.setdefault(row.channel, []).append(_Work(message, row))
        self._settle(outcomes)
        for name, works in by_channel.items():
            self._send_channel(name, works)

    @staticmethod
    def _message(row: Claimed, content: dict[str, str], options: dict[str, Any]) -> OutgoingMessage:
        return OutgoingMessage(
            key=row.key, campaign=row.campaign, category=row.category,
            customer_id=row.customer_id, address=row.address, name=row.name,
            locale=row.locale, content=content, options=options, variables=row.variables)

    def _send_channel(self, name: str, works: list[_Work]) -> None:
        channel = self._channel(name)
        cfg = self.project.channels[name]
        groups: dict[Any, list[_Work]] = {}
        for w in works:
            groups.setdefault(channel.batch_key(w.message), []).append(w)
        size = max(1, channel.batch_size)
        batches = [ws[i:i + size] for ws in groups.values() for i in range(0, len(ws), size)]
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = ThreadPoolExecutor(cfg.concurrency,
                                                          thread_name_prefix=f"outreach-{name}")
        wave = cfg.concurrency
        for i in range(0, len(batches), wave):
            group = batches[i:i + wave]
            mine = self.ledger.mark_handed([w.claimed.id for b in group for w in b], self.owner,
                                           self._ttl)
            # A message whose claim expired meanwhile may belong to another dispatcher now.
            group = [kept for kept in ([w for w in b if w.claimed.id in mine] for b in group) if kept]
            futures = [pool.submit(self._send_batch, channel, name, b) for b in group]
            outcomes = [o for f in futures for o in f.result()]
            self._settle(outcomes)

    # ------------------------------------------------------------------ one batch, with retries
    def _send_batch(self, channel: Channel, name: str, batch: list[_Work]) -> list[_Outcome]:
        limiter = self._limiters[name]
        max_wait = self.retry.max_wait.total_seconds()

        def stop(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            too_long = isinstance(exc, TransientError) and (exc.retry_after or 0) > max_wait
            return too_long or stop_after_attempt(self.retry.attempts_per_run)(state)

        backoff = wait_exponential_jitter(multiplier=0.5, max=max_wait)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, TransientError) and exc.retry_after is not None:
                return min(exc.retry_after, max_wait)
            return backoff(state)

        messages = [w.message for w in batch]
        try:
            for attempt in Retrying(stop=stop, wait=wait, reraise=True,
                                    retry=retry_if_exception_type(TransientError)):
                with attempt:
                    limiter.acquire(len(messages))
                    deliveries = channel.send(messages)
        except ChannelError as exc:
            return [self._failure(w, exc) for w in batch]
        except Exception as exc:  # noqa: BLE001 - a plugin bug: the call may have gone out
            err = UnknownOutcomeError(f"unexpected error in channel {name!r}: "
                                      f"{type(exc).__name__}: {exc}")
            return [self._failure(w, err) for w in batch]
        by_key = {d.key: d for d in deliveries}
        out = []
        for w in batch:
            d = by_key.get(w.message.key)
            if d is None:
                out.append(self._failure(w, UnknownOutcomeError(
                    f"channel {name!r} returned no result for this message")))
            elif d.error is not None:
                out.append(self._failure(w, d.error))
            else:
                out.append(_Outcome(w, "sent", delivery=d, fields={
                    "provider_id": d.provider_id, "segments": d.segments, "sent_at": wall_clock(),
                    "error": None, "attempts": w.claimed.attempts + 1}))
        return out

    def _failure(self, w: _Work, exc: ChannelError) -> _Outcome:
        attempts = w.claimed.attempts + 1
        text = _describe(exc)
        if isinstance(exc, TransientError):
            if attempts >= self.retry.max_attempts:
                return _Outcome(w, "failed", error=exc, fields={
                    "error": f"gave up after {attempts} attempts: {text}", "attempts": attempts})
            delay = self.retry.backoff.total_seconds() * (2 ** (attempts - 1))
            delay = min(delay, self.retry.max_backoff.total_seconds())
            delay = max(delay * random.uniform(0.8, 1.2), exc.retry_after or 0)
            return _Outcome(w, "deferred", error=exc, fields={
                "error": f"attempt {attempts} of {self.retry.max_attempts}: {text}",
                "attempts": attempts, "due_at": epoch(self.now) + int(delay) + 1})
        if isinstance(exc, PermanentError):
            return _Outcome(w, "failed", error=exc, fields={"error": text, "attempts": attempts})
        return _Outcome(w, "unknown", error=exc, fields={"error": text, "attempts": attempts})

    # ------------------------------------------------------------------ recording
    def _settle(self, outcomes: list[_Outcome]) -> None:
        if not outcomes:
            return
        self.ledger.settle([{"id": o.work.claimed.id, "state": o.state, **o.fields} for o in outcomes],
                           self.owner)
        for o in outcomes:
            row = o.work.claimed
            rep = self.report.campaign(row.campaign)
            column = o.counted_as or o.state
            setattr(rep, column, getattr(rep, column) + 1)
            if o.state != "sent":
                rep.reasons[f"{column}: {_describe(o.error)}"] += 1
            if isinstance(o.error, PermanentError) and o.error.suppress:
                kind = self.project.channels[row.channel].cls.address
                self.ledger.suppress(kind, row.address, o.error.reason,
                                     f"{row.channel}" + (f":{o.error.code}" if o.error.code else ""))
            if o.state == "sent":
                self.plugins.message_sent(o.work.message, o.delivery)
            else:
                self.plugins.message_failed(o.work.message, o.error, o.state)
        self._done += len(outcomes)
        if self.progress:
            self.progress(self._done)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    code = getattr(exc, "code", None)
    return f"{exc} (code {code})" if code and str(code) not in str(exc) else str(exc)
