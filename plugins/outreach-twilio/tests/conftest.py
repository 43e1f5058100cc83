"""Fixtures for the Twilio channel's tests: a FakeTwilio per test and channels pointed at it.

Helpers are fixtures (not imports from this file): another plugin's tests also have a conftest.py.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator

import pytest

from outreach.channel import OutgoingMessage
from outreach_twilio import TwilioSMS
from outreach_twilio.testing import TEST_FROM_NUMBER, FakeTwilio


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def make_channel(twilio: FakeTwilio) -> Iterator[Callable[..., TwilioSMS]]:
    """``make_channel(**settings)``: a TwilioSMS sending to ``twilio`` (from the test number)."""
    made: list[TwilioSMS] = []

    def make(**settings: Any) -> TwilioSMS:
        if "messaging_service_sid" not in settings:
            settings.setdefault("from_number", TEST_FROM_NUMBER)
        channel = TwilioSMS("sms", twilio.channel_settings(**settings))
        made.append(channel)
        return channel

    yield make
    for channel in made:
        channel.close()


@pytest.fixture
def sms() -> Callable[..., OutgoingMessage]:
    """``sms(body, to=..., **options)``: one rendered SMS of the spring campaign."""
    keys = itertools.count(1)

    def make(body: str, to: str = "+37491123456", **options: Any) -> OutgoingMessage:
        return OutgoingMessage(key=f"spring:{next(keys)}", campaign="spring",
                               category="marketing", customer_id="c1", address=to, name="Ani",
                               locale="hy", content={"body": body}, options=options)

    return make
