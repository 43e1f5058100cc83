"""A channel's in-flight count fits its kind when the deployment does not set one: an asyncio
channel keeps many calls in flight on one event loop (enough that a process is held by its CPU,
not by the provider's answer time), a blocking one a thread per call."""

from __future__ import annotations

import textwrap

from outreach.channel import Channel
from outreach.plugins import get_plugins


def _channels(p, extra: str = "") -> dict:
    p.configure(channels=textwrap.dedent(f"""
        [channels.email]
        plugin = "outbox-email"
        path = "outbox/email"

        [channels.sms]
        plugin = "twilio"
        from_number = "+15005550006"
        {extra}
    """))
    p.environ.update({"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "x" * 32})
    return p.load(get_plugins()).channels


def test_an_asyncio_channel_keeps_more_calls_in_flight_by_default(sqlite_project):
    channels = _channels(sqlite_project)
    assert channels["sms"].cls.default_concurrency() == Channel.ASYNC_CONCURRENCY
    assert channels["sms"].concurrency == Channel.ASYNC_CONCURRENCY == 64
    assert channels["email"].concurrency == Channel.THREADED_CONCURRENCY == 8


def test_a_configured_concurrency_wins(sqlite_project):
    assert _channels(sqlite_project, "concurrency = 3")["sms"].concurrency == 3
