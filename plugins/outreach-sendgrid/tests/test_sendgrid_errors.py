"""How the SendGrid channel classifies failures, against real sockets and the real SDK."""

from __future__ import annotations

import logging
import time

import pytest

from outreach.channel import (ConfigurationError, PermanentError, TransientError,
                              UnknownOutcomeError)
from outreach.testing import closed_port_url


def _raises(error_class, channel, messages):
    with pytest.raises(error_class) as info:
        channel.send(messages)
    assert type(info.value) is error_class
    return info.value


def test_429_with_retry_after_is_transient(fake, make_channel, email):
    fake.fail_next(status=429, headers={"Retry-After": "30"},
                   body=fake.error_body(429, "too many requests"))
    error = _raises(TransientError, make_channel(), [email()])
    assert error.retry_after == 30 and error.code == "429"
    assert "too many requests" in str(error)


def test_429_with_ratelimit_reset_is_transient(fake, make_channel, email):
    fake.fail_next(status=429, headers={"X-RateLimit-Reset": str(int(time.time()) + 60)})
    error = _raises(TransientError, make_channel(), [email()])
    assert 58 <= error.retry_after <= 60


def test_503_is_transient(fake, make_channel, email):
    fake.fail_next(status=503)
    error = _raises(TransientError, make_channel(), [email()])
    assert error.code == "503" and error.retry_after is None


def test_400_about_a_recipient_is_permanent_with_sendgrids_message(fake, make_channel, email,
                                                                   api_key):
    fake.fail_next(status=400, body={"errors": [{
        "message": "Does not contain a valid address.", "field": "personalizations.0.to.0.email",
        "help": None}]})
    error = _raises(PermanentError, make_channel(), [email()])
    assert str(error) == ("SendGrid answered 400: Does not contain a valid address. "
                          "(field personalizations.0.to.0.email)")
    assert error.code == "400" and api_key not in str(error)


def test_an_unverified_sender_is_the_configurations_fault(fake, make_channel, email):
    # The message is fine: the channel's from address is not a verified Sender Identity.
    fake.fail_next(status=400, body={"errors": [{
        "message": "The from address does not match a verified Sender Identity.",
        "field": "from", "help": None}]})
    error = _raises(ConfigurationError, make_channel(), [email()])
    assert "verified Sender Identity" in str(error) and "[channels.email]" in str(error)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_the_configurations_fault(fake, make_channel, email, status):
    fake.fail_next(status=status, body=fake.error_body(status, "access forbidden"))
    error = _raises(ConfigurationError, make_channel(), [email()])
    assert error.code == str(status)
    assert "$SENDGRID_API_KEY" in str(error) and "shop@example.com" in str(error)


def test_a_wrong_api_key_stops_the_channel_instead_of_failing_messages(fake, make_channel, email):
    fake.api_key = "SG.another-key"
    messages = [email(key=f"welcome:c{i}", address=f"c{i}@example.com") for i in range(3)]
    error = _raises(ConfigurationError, make_channel(), messages)
    assert error.code == "401" and "authorization grant is invalid" in str(error)
    assert len(fake.mail_requests) == 1  # the others would meet the same answer


def test_an_api_host_that_is_not_sendgrid_is_the_configurations_fault(fake, make_channel, email):
    fake.fail_next(status=404, body=fake.error_body(404, "resource not found"))
    error = _raises(ConfigurationError, make_channel(), [email()])
    assert fake.url in str(error)


def test_credentials_echoed_by_a_proxy_are_redacted(fake, make_channel, email, api_key):
    fake.fail_next(status=400, body=f"<html>Bad request. Headers: Authorization: Bearer {api_key}"
                                    f"; X-Api-Key: {api_key}</html>")
    error = _raises(PermanentError, make_channel(), [email()])
    assert api_key not in str(error) and "Bearer ***" in str(error)


def test_slow_answer_after_acceptance_is_unknown(fake, make_channel, email):
    fake.slow_next(seconds=3)
    channel = make_channel(timeout=0.5)
    start = time.monotonic()
    error = _raises(UnknownOutcomeError, channel, [email()])
    assert time.monotonic() - start < 1.5
    assert "0.5s" in str(error)
    assert len(fake.sent) == 1  # SendGrid did accept it: the reason never to resend blindly


def test_connection_dropped_after_handling_is_unknown(fake, make_channel, email):
    fake.drop_next(after_handling=True)
    _raises(UnknownOutcomeError, make_channel(), [email()])
    assert len(fake.sent) == 1


def test_closed_port_is_transient(make_channel, email):
    error = _raises(TransientError, make_channel(api_host=closed_port_url(), timeout=0.5), [email()])
    assert "could not reach SendGrid" in str(error)


def test_timeout_setting_bounds_the_sdk(make_channel):
    channel = make_channel(timeout=2.5)
    assert channel._client().client.timeout == 2.5


def test_per_message_failures_without_template(fake, make_channel, email):
    messages = [email(key=f"welcome:c{i}", address=f"c{i}@example.com") for i in range(3)]
    fake.fail_next(status=400, body=fake.error_body(400, "Invalid to address"))
    deliveries = {d.key: d for d in make_channel().send(messages)}
    # The first request is refused: only its message fails, the others still go out.
    assert isinstance(deliveries["welcome:c0"].error, PermanentError)
    assert "Invalid to address" in str(deliveries["welcome:c0"].error)
    assert all(deliveries[k].error is None and deliveries[k].provider_id
               for k in ("welcome:c1", "welcome:c2"))
    assert len(fake.mail_requests) == 3 and len(fake.sent) == 2


def test_transient_stops_the_loop_and_all_failed_raises(fake, make_channel, email):
    messages = [email(key=f"welcome:c{i}", address=f"c{i}@example.com") for i in range(3)]
    fake.fail_next(status=503)
    _raises(TransientError, make_channel(), messages)
    assert len(fake.mail_requests) == 1  # no point hammering a provider that said 'later'


def test_transient_after_some_were_sent_is_per_message(fake, make_channel, email):
    messages = [email(key=f"welcome:c{i}", address=f"c{i}@example.com") for i in range(3)]

    channel = make_channel()
    original = fake.handle
    calls = []

    def handle(request):
        calls.append(1)
        if len(calls) == 2:
            fake.fail_next(status=429, headers={"Retry-After": "5"})
        return original(request)

    fake.handle = handle
    deliveries = {d.key: d for d in channel.send(messages)}
    assert deliveries["welcome:c0"].error is None and deliveries["welcome:c1"].error is None
    assert isinstance(deliveries["welcome:c2"].error, TransientError)
    assert deliveries["welcome:c2"].error.retry_after == 5


def test_secret_never_shows(fake, make_channel, email, api_key, caplog):
    caplog.set_level(logging.DEBUG)
    channel = make_channel()
    assert api_key not in repr(channel) and api_key not in str(channel.describe())
    assert channel.describe()["api_key"] == "$SENDGRID_API_KEY"
    channel.send([email()])
    fake.fail_next(status=400, body={"errors": [{"message": f"bad key {api_key}"}]})
    with pytest.raises(PermanentError) as info:
        channel.send([email()])
    assert api_key not in str(info.value)
    assert "HEADERS" in caplog.text  # python_http_client did log its headers...
    assert api_key not in caplog.text  # ...with the Authorization value masked
