"""Dispatch: deliver due outbox messages through their channels, and record every outcome.

Messages are claimed atomically (queued → sending, with an owner and an expiry), rendered from the
stored campaign version, grouped into the channel's batches and sent with bounded concurrency and a
per-channel rate limit, on one asyncio event loop: a channel with an asyncio SDK
(:meth:`~outreach.channel.Channel.send_async`) is awaited directly, a blocking one runs in a pool of
``concurrency`` threads.

Sending is a pipeline, not a series of waves: as soon as calls finish, the freed slots take the
next batches, so one slow answer or one retry waiting out a Retry-After holds its own slot and
nobody else's. Batches are recorded as handed over (``handed_at``) in one statement per group just
before their calls are made, and outcomes are written in one statement per group as they come back
(at least every :data:`SETTLE_EVERY` seconds). A crash therefore leaves at most the calls in flight
(``concurrency`` batches per channel) and the last moment's answers whose fate is unknown, and
those messages are marked ``unknown``, never silently resent. The next chunk of the outbox is
claimed while the last one is still being sent, so the pipeline does not drain between chunks.

Retries: a :class:`~outreach.channel.TransientError` is retried in-process by tenacity (exponential
backoff with jitter, or the provider's Retry-After) a few times; after that the message is deferred
to a later run with a backoff carried in the ledger, until ``retry.max_attempts`` is reached.
Permanent errors fail the message at once (and may suppress the address); ambiguous ones are
recorded as ``unknown``.

A :class:`~outreach.channel.ConfigurationError` says the deployment is wrong (credentials refused,
a sender not verified, a folder that cannot be written): the channel's lane stops taking work for
the rest of the run, the batches it still held and every message of that channel claimed later are
released (queued again, no attempt counted), the calls already in flight settle as they really end,
and the report names the channel and the provider's reason (exit 1). Nothing is burnt: the first
run after the fix sends them.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence
from zoneinfo import ZoneInfo

from tenacity import (
    AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt,
    wait_exponential_jitter,
)

from outreach.channel import (
    Channel, ChannelError, ConfigurationError, Delivery, OutgoingMessage, PermanentError,
    TransientError, UnknownOutcomeError,
)
from outreach.config import Project, RetryPolicy
from outreach.consent import refusal as consent_refusal
from outreach.serve.tokens import links
from outreach.ledger import Claimed, Ledger, epoch, wall_clock
from outreach.plugins import Plugins
from outreach.policy.quiet_hours import QUIET_WAIT, held_until
from outreach.ratelimit import RateLimiter, limiter_for
from outreach.render import RenderError, render_stored
from outreach.report import RunReport

CLAIM_CHUNK = 1000
#: At most this many messages are claimed at once, however wide a channel's window of calls is.
MAX_CLAIM = 10_000
#: Outcomes are written at least this often (seconds) while calls are in flight, and at once when
#: this many are waiting: few statements, and little to mark unknown after a crash.
SETTLE_EVERY = 0.1
SETTLE_BATCH = 2000


@dataclass(slots=True)
class _Work:
    message: OutgoingMessage
    claimed: Claimed


#: The outcome of a message given back untouched (its channel stopped): queued again by
#: :meth:`Ledger.release`, no attempt counted.
RELEASED = "released"


@dataclass
class _Outcome:
    work: _Work
    #: A ledger state, or :data:`RELEASED`.
    state: str
    delivery: Delivery | None = None
    error: ChannelError | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    #: The report column when it is not the state (a message stopped by a late suppression is
    #: failed in the ledger but reported as suppressed: policy working, not a failure).
    counted_as: str | None = None


@dataclass
class _Lane:
    """One channel's side of the pipeline: batches waiting, and how many calls are in flight."""

    name: str
    channel: Channel
    concurrency: int
    limiter: RateLimiter
    pool: ThreadPoolExecutor | None
    pending: deque = field(default_factory=deque)
    queued: int = 0
    in_flight: int = 0
    #: Why the lane stopped taking work (its channel's configuration was refused), or None.
    stopped: ConfigurationError | None = None

    @property
    def group(self) -> int:
        """Free slots worth filling at once: handing batches over one by one would cost one
        ledger statement per message at full speed; a quarter of the window keeps it full."""
        return max(1, self.concurrency // 4)


class Dispatcher:
    """Delivers due messages for one process (``owner``); several may work one outbox at once."""

    def __init__(self, project: Project, plugins: Plugins, ledger: Ledger, now: datetime,
                 report: RunReport, *, campaigns: Sequence[str] | None = None,
                 owner: str | None = None,
                 progress: Callable[[int, int | None], None] | None = None,
                 claim_seconds: float | None = None) -> None:
        self.project = project
        self.plugins = plugins
        self.ledger = ledger
        self.now = now
        self.report = report
        self.campaigns = list(campaigns) if campaigns else None
        self.owner = owner or f"{uuid.uuid4().hex[:12]}"
        self.progress = progress
        self.retry: RetryPolicy = project.retry
        #: With [serve]: (public URL, token secret) that sign each message's links.
        self._links = ((project.serve.public_url, project.serve.token_secret.reveal().encode())
                       if project.serve is not None else None)
        self._ttl = int(project.claim_ttl.total_seconds())
        #: A rate-limited channel's claims hold at most this many seconds of its rate (default:
        #: half a claim's lifetime). Processes sharing one rate (outreach.ratelimit) claim less,
        #: so that each takes its share of the work rather than one taking it all.
        self._claim_seconds = self._ttl / 2 if claim_seconds is None else min(claim_seconds,
                                                                               self._ttl / 2)
        # On PostgreSQL a channel's rate limit is one budget for every process of the ledger.
        self._limiter = limiter_for(None if ledger.is_sqlite else ledger.engine)
        self._channels: dict[str, Channel] = {}
        self._lanes: dict[str, _Lane] = {}
        self._done = 0
        self._total: int | None = None
        #: When this dispatcher started (monotonic): quiet hours are checked at ``now`` plus the
        #: time the run has taken, so a long run that reaches 21:00 stops there.
        self._started = time.monotonic()

    # ------------------------------------------------------------------ main loop
    def run(self, limit: int | None = None) -> None:
        """Recover abandoned claims, then send until nothing due is left (or ``limit`` messages).

        Blocking. Called from a thread that already runs an event loop (an async application, a
        notebook), the pipeline gets a thread and a loop of its own.
        """
        requeued, unknown = self.ledger.recover()
        before = self.report.recovered  # `outreach run` recovers before planning too
        self.report.recovered = (before[0] + requeued, before[1] + unknown)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self._run(limit))
            return
        failure: list[BaseException] = []

        def own_loop() -> None:
            try:
                asyncio.run(self._run(limit))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                failure.append(exc)

        thread = threading.Thread(target=own_loop, name="outreach-dispatch")
        thread.start()
        thread.join()
        if failure:
            raise failure[0]

    def _claim_size(self) -> int:
        # A claim feeds at least one full window of every channel (concurrency × batch size: four
        # SendGrid requests of 1000 recipients each go out together, not one after the other).
        size = max([CLAIM_CHUNK] + [min(MAX_CLAIM, cfg.concurrency * max(1, cfg.cls.batch_size))
                                    for cfg in self.project.channels.values()])
        # Claim no more than a rate-limited channel can send in half a claim's lifetime (or
        # ``claim_seconds``), so claims do not expire while their messages wait their turn (the
        # next chunk is claimed when half of this one is left: at most three quarters of a
        # lifetime's worth is ever waiting).
        for cfg in self.project.channels.values():
            if cfg.rate_limit:
                size = min(size, max(1, int(cfg.rate_limit * self._claim_seconds)))
        return size

    async def _run(self, limit: int | None) -> None:
        if self.progress:
            # A total for the bar: what is due now (others may take some; retries may add).
            due = self.ledger.due_count(epoch(self.now), self.campaigns, list(self.project.channels))
            self._total = due if limit is None else min(due, limit)
            self.progress(0, self._total)
        try:
            await self._pump(self._claim_size(), limit)
        finally:
            for lane in self._lanes.values():
                if lane.pool is not None:
                    lane.pool.shutdown(wait=True)
            for channel in self._channels.values():
                if channel.is_async:
                    await channel.aclose()
            for channel in self._channels.values():
                channel.close()

    async def _pump(self, size: int, limit: int | None) -> None:
        """Claim, hand over, send and settle until the outbox has nothing due (or ``limit``)."""
        tasks: dict[asyncio.Task, _Lane] = {}
        finished: list[_Outcome] = []
        claimed_count = 0
        exhausted = False
        last_settle = time.monotonic()
        while True:
            waiting = sum(lane.queued for lane in self._lanes.values())
            if not exhausted and waiting <= size // 2:
                chunk = size if limit is None else min(size, limit - claimed_count)
                # A stopped channel's messages are left where they are, for the next run.
                open_channels = [name for name in self.project.channels
                                 if name not in self._lanes or self._lanes[name].stopped is None]
                claimed = (self.ledger.claim(self.owner, chunk, epoch(self.now), self._ttl,
                                             self.campaigns, open_channels) if chunk > 0 else [])
                if claimed:
                    ready = self._hold_quiet(claimed)
                    claimed_count += len(ready)
                    finished.extend(self._prepare(ready))
                else:
                    exhausted = True
            for lane in self._lanes.values():
                self._launch(lane, tasks)
            if not tasks:
                finished.extend(self._drain_stopped())
                if finished:
                    self._settle(finished)
                    finished = []
                if exhausted and not any(lane.pending for lane in self._lanes.values()):
                    break
                continue
            done, _ = await asyncio.wait(tasks, timeout=SETTLE_EVERY,
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                tasks.pop(task).in_flight -= 1
                finished.extend(task.result())
                finished.extend(self._drain_stopped())
            now = time.monotonic()
            if finished and (not tasks or len(finished) >= SETTLE_BATCH
                             or now - last_settle >= SETTLE_EVERY):
                self._settle(finished)
                finished = []
                last_settle = now
        self._settle(finished)

    def _launch(self, lane: _Lane, tasks: dict[asyncio.Task, _Lane]) -> None:
        """Hand the lane's next batches over and start their calls, while it has free slots."""
        free = lane.concurrency - lane.in_flight
        if not lane.pending or free <= 0 or lane.stopped is not None:
            return
        if free < lane.group and lane.in_flight and len(lane.pending) > free:
            return  # wait for a few more slots: one statement for several batches
        group = [lane.pending.popleft() for _ in range(min(free, len(lane.pending)))]
        lane.queued -= sum(len(b) for b in group)
        mine = self.ledger.mark_handed([w.claimed.id for b in group for w in b], self.owner,
                                       self._ttl)
        # A message whose claim expired meanwhile may belong to another dispatcher now.
        for batch in group:
            kept = [w for w in batch if w.claimed.id in mine]
            if kept:
                lane.in_flight += 1
                tasks[asyncio.ensure_future(self._send_batch(lane, kept))] = lane

    def _lane(self, name: str) -> _Lane:
        lane = self._lanes.get(name)
        if lane is None:
            cfg = self.project.channels[name]
            channel = self._channels[name] = cfg.create()
            pool = None if channel.is_async else ThreadPoolExecutor(
                cfg.concurrency, thread_name_prefix=f"outreach-{name}")
            lane = self._lanes[name] = _Lane(name, channel, cfg.concurrency,
                                             self._limiter(name, cfg.rate_limit), pool)
        return lane

    def _hold_quiet(self, claimed: list[Claimed]) -> list[Claimed]:
        """The claimed rows free to go now; the others are given back, deferred to the end of
        their channel's quiet hours in the recipient's zone, in one ledger call.

        Planning checked the planned time, but a retry's backoff, a resend, a Retry-After or a
        channel stopped until the next day move the send: the rule is checked again here, at the
        moment of sending (the run's ``now``, plus the time the run has taken so far), by the
        planner's own code (:func:`~outreach.policy.quiet_hours.held_until`), once per zone and
        channel.
        """
        channels = self.project.channels
        if not any(cfg.quiet_hours for cfg in channels.values()):
            return claimed
        at = self.now + timedelta(seconds=time.monotonic() - self._started)
        verdicts: dict[tuple[str | None, str], tuple[int, str] | None] = {}
        held: dict[int, tuple[int, str]] = {}
        ready: list[Claimed] = []
        for row in claimed:
            key = (row.timezone, row.channel)
            try:
                verdict = verdicts[key]
            except KeyError:
                cfg = channels.get(row.channel)
                found = held_until(at, cfg.quiet_hours if cfg else None,
                                   self._zone(row.timezone))
                verdict = verdicts[key] = (None if found is None else
                                           (epoch(found[0]), f"{QUIET_WAIT}: {found[1]}"))
            if verdict is None:
                ready.append(row)
            else:
                held[row.id] = verdict
        if held:
            self.ledger.hold(held, self.owner)
            self.report.held_for_quiet_hours += len(held)
            for row in claimed:
                if row.id in held:
                    rep = self.report.campaign(row.campaign)
                    rep.deferred += 1
                    rep.reasons[f"deferred: {held[row.id][1]}"] += 1
            self._done += len(held)
        return ready

    def _zone(self, name: str | None) -> ZoneInfo:
        """A message's stored zone; the deployment's when it has none (planned before the column
        existed) or it no longer loads."""
        if name:
            try:
                return ZoneInfo(name)
            except (KeyError, ValueError, OSError):
                pass
        return self.project.tz

    def _stopped(self, row: Claimed, text: str, policy: str, counted_as: str) -> _Outcome:
        """A claimed message a policy stops before it leaves: failed in the ledger with the policy
        named (``resend --failed`` leaves it alone), reported under ``counted_as``."""
        return _Outcome(_Work(self._message(row, {}, {}), row), "failed",
                        error=PermanentError(text),
                        fields={"error": text, "attempts": row.attempts, "stopped_by": policy},
                        counted_as=counted_as)

    def _prepare(self, claimed: list[Claimed]) -> list[_Outcome]:
        """Render claimed rows into the lanes' batches; the outcomes of rows that cannot go."""
        outcomes: list[_Outcome] = []
        works: dict[str, list[_Work]] = {}
        # A STOP reply or a bounce may have come in since the message was planned (a deferral
        # through the night, a retry): the suppression list is read again just before sending.
        # (Consent lives in the audience, which the dispatcher does not read: `outreach run`
        # re-checks waiting messages against it before it dispatches, see outreach.recheck.)
        # What customers changed through outreach (an unsubscribe link clicked while an SMS waited
        # for the morning) is in the ledger, and read again here too (outreach.consent).
        kinds = {name: cfg.cls.address for name, cfg in self.project.channels.items()}
        blocked = self.ledger.suppressed({(kinds[r.channel], r.address) for r in claimed
                                          if r.channel in kinds})
        changes = self.ledger.consent_overrides([r.customer_id for r in claimed])
        for row in claimed:
            reason = blocked.get((kinds.get(row.channel, ""), row.address)) if blocked else None
            cfg = self.project.channels.get(row.channel)
            said_no = consent_refusal(changes.get(row.customer_id),
                                      cfg.consent if cfg else row.channel,
                                      row.category) if changes else None
            if reason is not None:
                outcomes.append(self._stopped(row, f"suppressed after it was planned: {reason}",
                                              "suppression", "suppressed"))
                continue
            if said_no is not None:
                outcomes.append(self._stopped(row, f"{said_no} after it was planned",
                                              "consent", "skipped"))
                continue
            if self._links is not None and cfg is not None:
                row.variables = {**row.variables, **links(*self._links, row.customer_id, row.key,
                                                          cfg.consent, row.category)}
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
            works.setdefault(row.channel, []).append(_Work(self._message(row, content, options),
                                                         row))
        for name, mine in works.items():
            lane = self._lane(name)
            if lane.stopped is not None:  # claimed in the same chunk as the call that stopped it
                outcomes += [self._released(w, lane.stopped) for w in mine]
                continue
            groups: dict[Any, list[_Work]] = {}
            for w in mine:
                groups.setdefault(lane.channel.batch_key(w.message), []).append(w)
            size = max(1, lane.channel.batch_size)
            for ws in groups.values():
                for i in range(0, len(ws), size):
                    lane.pending.append(ws[i:i + size])
            lane.queued += len(mine)
        return outcomes

    @staticmethod
    def _message(row: Claimed, content: dict[str, str], options: dict[str, Any]) -> OutgoingMessage:
        return OutgoingMessage(
            key=row.key, campaign=row.campaign, category=row.category,
            customer_id=row.customer_id, address=row.address, name=row.name,
            locale=row.locale, content=content, options=options, variables=row.variables)

    # ------------------------------------------------------------------ one batch, with retries
    async def _send_batch(self, lane: _Lane, batch: list[_Work]) -> list[_Outcome]:
        messages = [w.message for w in batch]
        channel = lane.channel

        async def attempt() -> Sequence[Delivery]:
            await lane.limiter.acquire(len(messages))
            if lane.pool is None:
                return await channel.send_async(messages)
            return await asyncio.get_running_loop().run_in_executor(lane.pool, channel.send,
                                                                    messages)

        try:
            try:
                deliveries = await attempt()
            except TransientError as first:
                # Only a failed first call pays for tenacity's machinery (~25 µs a call, a few
                # percent of a process's throughput when nearly every call succeeds at once).
                retrying = self._retrying(first)
                if retrying is None:
                    raise
                deliveries = await retrying(attempt)
        except ConfigurationError as exc:
            self._stop(lane, exc)
            return [self._released(w, exc) for w in batch]
        except ChannelError as exc:
            return [self._failure(w, exc) for w in batch]
        except Exception as exc:  # noqa: BLE001 - a plugin bug: the call may have gone out
            err = UnknownOutcomeError(f"unexpected error in channel {lane.name!r}: "
                                      f"{type(exc).__name__}: {exc}")
            return [self._failure(w, err) for w in batch]
        by_key = {d.key: d for d in deliveries}
        out = []
        sent_at = wall_clock()
        for w in batch:
            d = by_key.get(w.message.key)
            if d is None:
                out.append(self._failure(w, UnknownOutcomeError(
                    f"channel {lane.name!r} returned no result for this message")))
            elif isinstance(d.error, ConfigurationError):
                self._stop(lane, d.error)
                out.append(self._released(w, d.error))
            elif d.error is not None:
                out.append(self._failure(w, d.error))
            else:
                out.append(_Outcome(w, "sent", delivery=d, fields={
                    "provider_id": d.provider_id, "segments": d.segments, "sent_at": sent_at,
                    "error": None, "attempts": w.claimed.attempts + 1}))
        return out

    def _retrying(self, first: TransientError) -> AsyncRetrying | None:
        """Tenacity for the attempts of this run after a first one failed with ``first``; None when
        there are none to make (one attempt per run, or a Retry-After longer than ``max_wait``:
        the message is deferred to a later run instead).

        Backoff is exponential with jitter over the whole series (0.5 s, 1 s, 2 s... plus up to
        a second, at most ``max_wait``), and the provider's Retry-After wins when it gives one.
        """
        max_wait = self.retry.max_wait.total_seconds()
        attempts = self.retry.attempts_per_run

        def too_long(exc: BaseException | None) -> bool:
            return isinstance(exc, TransientError) and (exc.retry_after or 0) > max_wait

        if attempts <= 1 or too_long(first):
            return None
        # Tenacity counts from the second attempt: doubling the multiplier continues the series.
        backoff = wait_exponential_jitter(multiplier=1.0, max=max_wait)

        def stop(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            return too_long(exc) or stop_after_attempt(attempts - 1)(state)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, TransientError) and exc.retry_after is not None:
                return min(exc.retry_after, max_wait)
            return backoff(state)

        async def after_first(state: RetryCallState) -> None:
            if state.attempt_number == 1:
                pause = (first.retry_after if first.retry_after is not None
                         else 0.5 + random.uniform(0, 1))
                await asyncio.sleep(min(pause, max_wait))

        return AsyncRetrying(stop=stop, wait=wait, before=after_first, reraise=True,
                             retry=retry_if_exception_type(TransientError))

    def _stop(self, lane: _Lane, error: ConfigurationError) -> None:
        """Stop ``lane`` for the rest of the run: it takes no more work, and what it still held is
        given back (by :meth:`_drain_stopped`). The first error is the one reported."""
        if lane.stopped is None:
            lane.stopped = error
            self.report.stop_channel(lane.name, _describe(error))

    def _drain_stopped(self) -> list[_Outcome]:
        """The batches stopped lanes still hold, as released outcomes."""
        out: list[_Outcome] = []
        for lane in self._lanes.values():
            if lane.stopped is not None and lane.pending:
                out += [self._released(w, lane.stopped) for batch in lane.pending for w in batch]
                lane.pending.clear()
                lane.queued = 0
        return out

    @staticmethod
    def _released(w: _Work, error: ConfigurationError) -> _Outcome:
        return _Outcome(w, RELEASED, error=error)

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
            fields: dict[str, Any] = {"error": text, "attempts": attempts}
            if exc.suppress:  # the provider's STOP or bounce: a refusal, not a delivery failure
                fields["stopped_by"] = "suppression"
            return _Outcome(w, "failed", error=exc, fields=fields)
        return _Outcome(w, "unknown", error=exc, fields={"error": text, "attempts": attempts})

    # ------------------------------------------------------------------ recording
    def _settle(self, outcomes: list[_Outcome]) -> None:
        if not outcomes:
            return
        released = [o for o in outcomes if o.state == RELEASED]
        if released:
            outcomes = [o for o in outcomes if o.state != RELEASED]
            self.ledger.release([o.work.claimed.id for o in released], self.owner)
            for o in released:
                self.report.stopped_channels[o.work.claimed.channel].released += 1
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
            if o.delivery is not None:
                self.plugins.message_sent(o.work.message, o.delivery)
            elif o.error is not None:
                self.plugins.message_failed(o.work.message, o.error, o.state)
        self._done += len(outcomes) + len(released)
        if self.progress:
            self.progress(self._done, None if self._total is None else max(self._total, self._done))


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    code = getattr(exc, "code", None)
    return f"{exc} (code {code})" if code and str(code) not in str(exc) else str(exc)
