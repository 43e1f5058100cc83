"""The dispatcher's pipeline: slots refilled as calls end, asyncio and blocking channels, retries,
rate limits, and what is recorded when.

Channels here are small in-test plugins that record what they were given and when, so the timing
of the pipeline itself is what is looked at (the providers' own behaviour is tested against their
fakes in the plugins' suites and in test_guarantees_*).
"""

from __future__ import annotations

import asyncio
import threading
import time
import types
from collections import Counter
from datetime import datetime, timezone

import pytest

from outreach import hookimpl
from outreach.channel import (Channel, ConfigurationError, Delivery, TemplateField,
                              TransientError)
from outreach.ratelimit import RateLimiter
from outreach.plugins import get_plugins

N = 24


def _plugin(*channels: type[Channel]):
    module = types.ModuleType("dispatch_test_plugin")
    module.outreach_register_channels = hookimpl(lambda register: [register(c) for c in channels])
    return module


class Recorder(Channel):
    """Blocking: sleeps like a provider answering after ``latency`` seconds, records each call.

    ``fail_first`` maps a phone number to how many of its calls answer 429 (with Retry-After
    ``retry_after``) before it is accepted.
    """

    type_name = "recorder"
    address = "phone"
    template_fields = {"body": TemplateField(required=True)}
    latency = 0.02
    retry_after: float | None = 0.3
    fail_first: Counter = Counter()
    calls: list = []
    lock = threading.Lock()
    in_flight = 0
    most_in_flight = 0

    @classmethod
    def reset(cls, **attrs) -> None:
        cls.calls, cls.fail_first, cls.in_flight, cls.most_in_flight = [], Counter(), 0, 0
        cls.latency, cls.retry_after = 0.02, 0.3
        for k, v in attrs.items():
            setattr(cls, k, v)

    def _enter(self) -> None:
        with Recorder.lock:
            Recorder.in_flight += 1
            Recorder.most_in_flight = max(Recorder.most_in_flight, Recorder.in_flight)

    def _leave(self, messages) -> list[Delivery]:
        with Recorder.lock:
            Recorder.in_flight -= 1
            [m] = messages
            Recorder.calls.append((m.address, time.monotonic(), threading.current_thread().name))
            if Recorder.fail_first[m.address] > 0:
                Recorder.fail_first[m.address] -= 1
                raise TransientError("slow down", code=429, retry_after=Recorder.retry_after)
        return [Delivery(m.key, provider_id=f"id-{m.key}")]

    def send(self, messages):
        self._enter()
        time.sleep(Recorder.latency)
        return self._leave(messages)


class AsyncRecorder(Recorder):
    """The same provider through an asyncio client."""

    type_name = "async-recorder"
    closed_on: list = []

    async def send_async(self, messages):
        self._enter()
        await asyncio.sleep(Recorder.latency)
        return self._leave(messages)

    async def aclose(self) -> None:
        AsyncRecorder.closed_on.append(asyncio.get_running_loop())


def _phone(i: int) -> str:
    return f"+3749100{i:04d}"


def _project(p, plugin: str, *, concurrency: int = 4, rate: float | None = None,
             tables: str = "", n: int = N):
    p.configure(channels=f'[channels.sms]\nplugin = "{plugin}"\nconcurrency = {concurrency}\n'
                + (f"rate_limit = {rate}\n" if rate else ""), caps=tables)
    p.customers("\n".join(f"c{i},Name{i},F,,{_phone(i)},UTC,en,no,yes," for i in range(n)))
    p.campaign("news", '''
        rule = "newsletter"
        schedule = "0 9 * * *"
        start = "2026-11-01"
        channels = ["sms"]
        [sms]
        body = "News for {{ customer.first_name }}"
    ''')
    return get_plugins(extra=[_plugin(Recorder, AsyncRecorder)])


@pytest.mark.parametrize("plugin", ["recorder", "async-recorder"])
def test_every_message_is_sent_once_with_at_most_concurrency_calls_in_flight(sqlite_project, plugin):
    Recorder.reset()
    plugins = _project(sqlite_project, plugin, concurrency=4)

    report = sqlite_project.run("2026-11-24T10:00", plugins=plugins)

    assert report.campaigns["news"].sent == N
    assert Counter(a for a, _, _ in Recorder.calls) == Counter(_phone(i) for i in range(N))
    assert Recorder.most_in_flight == 4
    assert {r["state"] for r in sqlite_project.messages()} == {"sent"}
    assert all(r["handed_at"] and r["provider_id"] for r in sqlite_project.messages())


def test_an_asyncio_channel_is_awaited_on_the_dispatch_loop_and_closed_there(sqlite_project):
    Recorder.reset()
    AsyncRecorder.closed_on = []
    plugins = _project(sqlite_project, "async-recorder", concurrency=8)

    sqlite_project.run("2026-11-24T10:00", plugins=plugins)

    # One thread made every call (no pool), and aclose() ran on a loop before it ended.
    assert len({thread for _, _, thread in Recorder.calls}) == 1
    assert len(AsyncRecorder.closed_on) == 1 and AsyncRecorder.closed_on[0].is_closed()


def test_a_blocking_channel_runs_in_a_pool_of_concurrency_threads(sqlite_project):
    Recorder.reset()
    plugins = _project(sqlite_project, "recorder", concurrency=3)

    sqlite_project.run("2026-11-24T10:00", plugins=plugins)

    threads = {thread for _, _, thread in Recorder.calls}
    assert len(threads) == 3 and all(t.startswith("outreach-sms") for t in threads)


@pytest.mark.parametrize("plugin", ["recorder", "async-recorder"])
def test_a_retry_waiting_out_retry_after_holds_one_slot_not_the_channel(sqlite_project, plugin):
    # Waves would stall every slot until the retried call ended; a pipeline keeps sending.
    # Retry-After is long next to the other calls' 23 × 20 ms, so a busy machine still fits them in.
    Recorder.reset(retry_after=2.0, fail_first=Counter({_phone(0): 1}))
    plugins = _project(sqlite_project, plugin, concurrency=2)

    report = sqlite_project.run("2026-11-24T10:00", plugins=plugins)

    assert report.campaigns["news"].sent == N
    first_try, second_try = [t for a, t, _ in Recorder.calls if a == _phone(0)]
    assert second_try - first_try >= 2.0  # Retry-After honoured
    others = [t for a, t, _ in Recorder.calls if a != _phone(0)]
    # All others went out meanwhile: 23 calls of 20 ms on the one free slot, well within 2 s.
    assert sum(1 for t in others if t < second_try) == N - 1
    row = next(r for r in sqlite_project.messages() if r["address"] == _phone(0))
    assert (row["state"], row["attempts"]) == ("sent", 1)


def test_attempts_per_run_bounds_in_process_retries_then_defers(sqlite_project):
    Recorder.reset(retry_after=0.05, fail_first=Counter({_phone(0): 5}))
    plugins = _project(sqlite_project, "async-recorder", tables="[retry]\nattempts_per_run = 2\n")

    report = sqlite_project.run("2026-11-24T10:00", plugins=plugins)

    assert sum(1 for a, _, _ in Recorder.calls if a == _phone(0)) == 2
    row = next(r for r in sqlite_project.messages() if r["address"] == _phone(0))
    assert row["state"] == "deferred" and row["attempts"] == 1
    assert report.campaigns["news"].sent == N - 1


def test_a_retry_after_longer_than_max_wait_defers_at_once(sqlite_project):
    Recorder.reset(retry_after=120, fail_first=Counter({_phone(0): 1}))
    plugins = _project(sqlite_project, "recorder", tables='[retry]\nmax_wait = "5s"\n')

    started = time.monotonic()
    sqlite_project.run("2026-11-24T10:00", plugins=plugins)

    assert time.monotonic() - started < 5
    assert sum(1 for a, _, _ in Recorder.calls if a == _phone(0)) == 1
    row = next(r for r in sqlite_project.messages() if r["address"] == _phone(0))
    assert row["state"] == "deferred"
    run_at = datetime(2026, 11, 24, 18, 0, tzinfo=timezone.utc).timestamp()  # 10:00 in Los Angeles
    assert row["due_at"] >= run_at + 120  # not before the provider's Retry-After


def test_a_rate_limit_spaces_calls_evenly_across_the_pipeline(sqlite_project):
    Recorder.reset(latency=0.001)
    plugins = _project(sqlite_project, "async-recorder", concurrency=8, rate=40, n=30)

    sqlite_project.run("2026-11-24T10:00", plugins=plugins)

    times = sorted(t for _, t, _ in Recorder.calls)
    assert len(times) == 30
    span = times[-1] - times[0]
    # 30 calls at 40/s: 29 gaps of 25 ms, less the limiter's 50 ms of slack at the start.
    assert 29 / 40 - 0.06 <= span <= 29 / 40 + 0.5


def test_the_rate_limiter_reserves_even_slots_and_allows_a_little_slack():
    now = [100.0]
    limiter = RateLimiter(10, clock=lambda: now[0], slack=0.05)

    waits = [limiter.delay() for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.05, 0.15, 0.25])  # the first slot starts 50 ms back
    now[0] += 10  # idle: no credit beyond the slack builds up
    assert [limiter.delay() for _ in range(2)] == pytest.approx([0.0, 0.05])
    assert RateLimiter(None).delay(1000) == 0.0


def test_dispatch_called_from_inside_a_running_event_loop(sqlite_project):
    """An async application (or a notebook) calling the blocking API still gets its messages sent."""
    from outreach.dispatch import Dispatcher
    from outreach.ledger import Ledger
    from outreach.report import RunReport

    Recorder.reset()
    plugins = _project(sqlite_project, "async-recorder")
    sqlite_project.run("2026-11-24T10:00", plugins=plugins, send=False)
    project = sqlite_project.load(plugins)
    now = datetime(2026, 11, 24, 18, 0, tzinfo=timezone.utc)
    report = RunReport(now=now.isoformat())

    async def app() -> None:
        ledger = Ledger(project.ledger_url)
        try:
            Dispatcher(project, plugins, ledger, now, report).run()
        finally:
            ledger.close()

    asyncio.run(app())
    assert report.campaigns["news"].sent == N


class Refusing(AsyncRecorder):
    """An asyncio provider that refuses the deployment on the call to ``refuse_to`` (quickly),
    while the calls already in flight beside it take longer and are accepted."""

    type_name = "refusing"
    refuse_to: str | None = None

    async def send_async(self, messages):
        [m] = messages
        if m.address == Refusing.refuse_to:
            await asyncio.sleep(0.01)
            raise ConfigurationError("the provider refused the credentials", code=401)
        self._enter()
        await asyncio.sleep(0.2)
        return self._leave(messages)


def test_a_refused_configuration_stops_the_lane_and_in_flight_calls_settle_as_they_end(
        sqlite_project):
    Recorder.reset()
    Refusing.refuse_to = _phone(1)
    _project(sqlite_project, "refusing", concurrency=4)
    plugins = get_plugins(extra=[_plugin(Recorder, AsyncRecorder, Refusing)])

    report = sqlite_project.run("2026-11-24T10:00", plugins=plugins)

    # The first window of four was in flight: three were accepted and are sent; the refused one
    # and the twenty never started are queued again, with no attempt counted.
    assert sorted(a for a, _, _ in Recorder.calls) == [_phone(0), _phone(2), _phone(3)]
    rows = {r["address"]: r for r in sqlite_project.messages()}
    assert Counter(r["state"] for r in rows.values()) == {"sent": 3, "queued": N - 3}
    assert {r["attempts"] for r in rows.values() if r["state"] == "queued"} == {0}
    assert {r["handed_at"] for r in rows.values() if r["state"] == "queued"} == {None}
    assert report.campaigns["news"].sent == 3 and report.campaigns["news"].failed == 0
    assert not report.ok
    [stopped] = report.stopped_channels.values()
    assert (stopped.channel, stopped.released) == ("sms", N - 3)
    assert stopped.reason == "the provider refused the credentials (code 401)"

    Refusing.refuse_to = None  # the operator fixed the key
    again = sqlite_project.run("2026-11-24T10:05", plugins=plugins)

    assert again.ok and again.campaigns["news"].sent == N - 3
    assert Counter(a for a, _, _ in Recorder.calls) == Counter(_phone(i) for i in range(N))
