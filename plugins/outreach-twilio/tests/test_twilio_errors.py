"""Each failure classified as Twilio means it, against real sockets (the SDK never retries by itself)."""

from __future__ import annotations

import asyncio
import ssl
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from outreach.channel import (ConfigurationError, PermanentError, TransientError,
                              UnknownOutcomeError)
from outreach.testing import closed_port_url


def test_429_with_retry_after_is_transient_and_honours_the_hint(twilio, make_channel, sms):
    twilio.rate_limit_next(retry_after=7)

    with pytest.raises(TransientError) as caught:
        make_channel().send([sms("hello")])

    assert caught.value.retry_after == 7
    assert caught.value.code == "20429"
    assert len(twilio.requests) == 1 and twilio.messages == []  # not retried behind our back


def test_429_retry_after_as_an_http_date(twilio, make_channel, sms):
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    twilio.fail_next(status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})

    with pytest.raises(TransientError) as caught:
        make_channel().send([sms("hello")])

    assert 25 <= caught.value.retry_after <= 31
    assert caught.value.code == "429"


def test_code_20429_is_transient_whatever_the_status(twilio, make_channel, sms):
    twilio.error_for("+37491000001", status=400, code=20429)

    with pytest.raises(TransientError) as caught:
        make_channel().send([sms("hello", to="+37491000001")])

    assert caught.value.retry_after is None and caught.value.code == "20429"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_transient_and_sent_once(twilio, make_channel, sms, status):
    twilio.fail_next(status=status, body=twilio.error_body(status, "Service Unavailable"))

    with pytest.raises(TransientError):
        make_channel().send([sms("hello")])

    assert len(twilio.requests) == 1


def test_503_with_retry_after(twilio, make_channel, sms):
    twilio.fail_next(status=503, headers={"Retry-After": "2"})

    with pytest.raises(TransientError) as caught:
        make_channel().send([sms("hello")])

    assert caught.value.retry_after == 2


def test_stop_reply_21610_suppresses(twilio, make_channel, sms):
    twilio.error_for("+37491000002", status=400, code=21610)

    with pytest.raises(PermanentError) as caught:
        make_channel().send([sms("hello", to="+37491000002")])

    error = caught.value
    assert (error.suppress, error.reason, error.code) == (True, "recipient replied STOP", "21610")
    assert twilio.messages == []


@pytest.mark.parametrize("code, reason", [(21211, "not a valid phone number"),
                                          (21614, "not a mobile number")])
def test_unreachable_numbers_are_suppressed(twilio, make_channel, sms, code, reason):
    twilio.error_for("+15005550009", status=400, code=code)

    with pytest.raises(PermanentError) as caught:
        make_channel().send([sms("hello", to="+15005550009")])

    assert (caught.value.suppress, caught.value.reason, caught.value.code) == (True, reason, str(code))


def test_invalid_to_is_refused_by_the_fake_as_twilio_does(twilio, make_channel, sms):
    with pytest.raises(PermanentError) as caught:
        make_channel().send([sms("hello", to="+0123")])
    assert caught.value.code == "21211" and caught.value.suppress


def test_other_400_is_permanent_without_suppression(twilio, make_channel, sms):
    twilio.error_for("+37491000003", status=400, code=21408)

    with pytest.raises(PermanentError) as caught:
        make_channel().send([sms("hello", to="+37491000003")])

    assert not caught.value.suppress and caught.value.code == "21408"
    assert "Permission to send an SMS" in str(caught.value)


def test_a_wrong_auth_token_is_the_configurations_fault_not_the_messages(twilio, make_channel,
                                                                          sms):
    channel = make_channel()
    twilio.auth_token = "0" * 32  # the token was rotated at Twilio, not in the environment

    with pytest.raises(ConfigurationError) as caught:
        channel.send([sms("hello")])

    assert caught.value.code == "20003" and "Account SID and auth token" in str(caught.value)


@pytest.mark.parametrize("status, code", [(403, 20003), (400, 21659), (400, 21212), (401, 20005)])
def test_account_and_sender_refusals_are_the_configurations_fault(twilio, make_channel, sms,
                                                                  status, code):
    twilio.error_for("+37491000007", status=status, code=code)

    with pytest.raises(ConfigurationError) as caught:
        make_channel().send([sms("hello", to="+37491000007")])

    assert caught.value.code == str(code)


def test_a_403_without_a_known_code_is_still_the_configurations_fault(twilio, make_channel, sms):
    twilio.fail_next(status=403, body={"message": "Forbidden", "status": 403})

    with pytest.raises(ConfigurationError):
        make_channel().send([sms("hello")])


def test_slow_answer_beyond_the_timeout_is_unknown(twilio, make_channel, sms):
    twilio.slow_next(seconds=3)
    channel = make_channel(timeout=0.5)

    start = time.monotonic()
    with pytest.raises(UnknownOutcomeError):
        channel.send([sms("hello")])

    assert time.monotonic() - start < 1.5
    assert len(twilio.messages) == 1  # Twilio did take it: resending would double-send
    assert len(twilio.requests) == 1


def test_connection_dropped_after_handling_is_unknown(twilio, make_channel, sms):
    twilio.drop_next(after_handling=True)

    with pytest.raises(UnknownOutcomeError):
        make_channel(timeout=0.5).send([sms("hello")])

    assert len(twilio.messages) == 1 and len(twilio.requests) == 1


def test_connection_dropped_before_handling_is_still_unknown(twilio, make_channel, sms):
    # The client cannot tell whether the provider handled it: only a refused connection is safe.
    twilio.drop_next()

    with pytest.raises(UnknownOutcomeError):
        make_channel(timeout=0.5).send([sms("hello")])

    assert len(twilio.requests) == 1


def test_closed_port_is_transient(make_channel, sms):
    channel = make_channel(api_base=closed_port_url(), timeout=0.5)

    with pytest.raises(TransientError) as caught:
        channel.send([sms("hello")])

    assert "not sent" in str(caught.value)


def test_the_channel_still_works_after_a_failure(twilio, make_channel, sms):
    channel = make_channel(timeout=0.5)
    twilio.drop_next(after_handling=True)
    with pytest.raises(UnknownOutcomeError):
        channel.send([sms("first")])

    [delivery] = channel.send([sms("second")])

    assert delivery.provider_id == twilio.messages[-1].sid
    assert [m.body for m in twilio.messages] == ["first", "second"]
    assert twilio.spec_errors == []


def test_twilio_edge_and_region_do_not_escape_api_base(twilio, make_channel, sms, monkeypatch):
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")

    [delivery] = make_channel().send([sms("hello")])

    assert delivery.provider_id == twilio.messages[0].sid


#: Where aiohttp says it was connecting to when a connection fails, as in production.
_KEY = ConnectionKey("api.twilio.com", 443, True, True, None, None, None, None)


@pytest.mark.parametrize("exc, expected", [
    (aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(111, "Connection refused")),
     TransientError),
    (aiohttp.ClientConnectorDNSError(_KEY, OSError(-2, "Name or service not known")),
     TransientError),
    (aiohttp.ConnectionTimeoutError("Connection timeout to host https://api.twilio.com"),
     TransientError),
    (aiohttp.ClientConnectorCertificateError(
        _KEY, ssl.SSLCertVerificationError("certificate verify failed")), TransientError),
    (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), UnknownOutcomeError),
    (asyncio.TimeoutError(), UnknownOutcomeError),
    (aiohttp.ServerDisconnectedError(), UnknownOutcomeError),
    (aiohttp.ClientOSError(104, "Connection reset by peer"), UnknownOutcomeError),
    (aiohttp.InvalidUrlClientError("bad url"), PermanentError),
], ids=["refused", "dns", "connect-timeout", "tls-certificate", "read-timeout", "timeout",
        "disconnected-after-send", "reset-after-send", "invalid-url"])
def test_network_failures_are_classified_by_whether_the_request_left(make_channel, exc, expected):
    error = make_channel()._classify_network(exc)
    assert type(error) is expected
