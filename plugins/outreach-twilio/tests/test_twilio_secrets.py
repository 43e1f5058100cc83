"""Neither the Account SID nor the auth token shows in a log line, an error, repr() or describe()."""

from __future__ import annotations

import base64
import logging

import pytest

from outreach.channel import ChannelError
from outreach.testing import closed_port_url
from outreach_twilio.testing import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

SECRETS = (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN,
           base64.b64encode(f"{TEST_ACCOUNT_SID}:{TEST_AUTH_TOKEN}".encode()).decode())


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def _chain(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_no_secret_in_debug_logs_errors_repr_or_describe(twilio, make_channel, sms, caplog):
    caplog.set_level(logging.DEBUG)
    channel = make_channel(timeout=0.5)
    # Twilio's message may echo the request URL, which holds the SID: it must be scrubbed too.
    twilio.error_for("+37491000004", status=404, code=20404,
                     message=f"The requested resource /2010-04-01/Accounts/{TEST_ACCOUNT_SID}/"
                             "Messages.json was not found")
    twilio.error_for("+37491000005", status=400, code=21610)
    errors: list[ChannelError] = []

    channel.send([sms("hello")])
    for fault, to in ((lambda: twilio.rate_limit_next(), "+37491000006"),
                      (lambda: twilio.fail_next(status=503), "+37491000006"),
                      (lambda: twilio.slow_next(seconds=3), "+37491000006"),
                      (lambda: twilio.drop_next(after_handling=True), "+37491000006"),
                      (lambda: None, "+37491000004"),
                      (lambda: None, "+37491000005")):
        fault()
        with pytest.raises(ChannelError) as caught:
            channel.send([sms("hello", to=to)])
        errors.append(caught.value)
    refused = make_channel(api_base=closed_port_url(), timeout=0.5)
    with pytest.raises(ChannelError) as caught:
        refused.send([sms("hello")])
    errors.append(caught.value)

    logged = [record.getMessage() for record in caplog.records]
    assert any(r.name == "outreach_twilio" for r in caplog.records), "nothing logged: test is void"
    assert any("/Accounts/***/Messages.json" in line for line in logged)
    assert [line for line in logged if _leaks(line)] == []
    assert _leaks(caplog.text) == []
    for error in errors:
        for link in _chain(error):
            assert _leaks(f"{link} {link!r} {link.args}") == [], type(link).__name__
    assert "***" in str(errors[4])  # the echoed SID was replaced
    for shown in (repr(channel), str(channel), repr(channel.describe()), repr(channel.config),
                  str(channel.config)):
        assert _leaks(shown) == []
    assert channel.describe()["account_sid"] == "$TWILIO_ACCOUNT_SID"
    assert channel.describe()["auth_token"] == "$TWILIO_AUTH_TOKEN"


def test_plain_string_secrets_are_wrapped(twilio):
    from outreach_twilio import TwilioSMS

    settings = twilio.channel_settings(from_number="+15005550006",
                                       account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN)
    channel = TwilioSMS("sms", settings)
    try:
        assert _leaks(repr(channel.describe())) == [] and _leaks(repr(channel.config)) == []
    finally:
        channel.close()
