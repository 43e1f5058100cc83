"""Sending through the real twilio SDK to FakeTwilio: what Twilio receives and what the channel returns."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from outreach.channel import PermanentError
from outreach.plugins import get_plugins
from outreach_twilio import TwilioSMS
from outreach_twilio.testing import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    TEST_FROM_NUMBER as SENDER,
    TEST_MESSAGING_SERVICE_SID as SERVICE,
    FakeTwilio,
)

ARMENIAN_71 = "Շնորհակալություն" * 4 + "Բարև" + "ա" * 3  # 64 + 4 + 3 = 71 letters


def test_gsm7_sms_is_one_segment_from_the_number(twilio, make_channel, sms):
    channel = make_channel()
    message = sms("Thanks for your order, Ani! Your parcel ships today.", to="+15551234567")

    [delivery] = channel.send([message])

    assert delivery.key == message.key
    assert delivery.provider_id.startswith("SM") and len(delivery.provider_id) == 34
    assert delivery.segments == 1 and delivery.error is None
    [sent] = twilio.messages
    assert (sent.to, sent.from_, sent.messaging_service_sid) == ("+15551234567", SENDER, None)
    assert sent.body == message.content["body"] and sent.sid == delivery.provider_id
    assert sent.status_callback is None
    assert twilio.spec_errors == []


def test_armenian_sms_is_ucs2_and_71_letters_take_two_segments(twilio, make_channel, sms):
    assert len(ARMENIAN_71) == 71
    [delivery] = make_channel().send([sms(ARMENIAN_71)])

    assert delivery.segments == 2
    assert twilio.messages[0].body == ARMENIAN_71  # arrives intact, not mangled by an encoding
    assert twilio.spec_errors == []


def test_basic_auth_carries_the_account_sid_and_token(twilio, make_channel, sms):
    make_channel().send([sms("hi")])

    [request] = twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
    expected = base64.b64encode(f"{TEST_ACCOUNT_SID}:{TEST_AUTH_TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"


def test_messaging_service_instead_of_a_number(twilio, make_channel, sms):
    channel = make_channel(messaging_service_sid=SERVICE)

    [delivery] = channel.send([sms("Բարև, Անի")])

    form = twilio.requests[0].form()
    assert form["MessagingServiceSid"] == [SERVICE] and "From" not in form
    # Twilio answers num_segments "0" until the service has picked a sender: the local count is used.
    assert twilio.messages[0].num_segments == 0
    assert delivery.segments == 1
    assert twilio.spec_errors == []


def test_status_callback_is_passed(twilio, make_channel, sms):
    channel = make_channel(status_callback="https://hooks.example.com/twilio/status")

    channel.send([sms("hello")])

    assert twilio.messages[0].status_callback == "https://hooks.example.com/twilio/status"
    assert twilio.spec_errors == []


def test_with_serve_each_message_gets_its_own_status_callback(twilio, make_channel, sms):
    channel = make_channel(status_callback="https://hooks.example.com/twilio/status")
    channel.links_served = True  # the deployment has [serve]: the core signs a URL per message
    own = sms("hello")
    own = dataclasses.replace(own, variables={
        "status_callback_url": "https://shop.example/webhooks/twilio/status/abc.def"})

    channel.send([own, sms("no url given")])

    assert [m.status_callback for m in twilio.messages] == [
        "https://shop.example/webhooks/twilio/status/abc.def",
        "https://hooks.example.com/twilio/status"]
    assert twilio.spec_errors == []


def test_without_serve_a_variable_does_not_set_the_callback(twilio, make_channel, sms):
    message = dataclasses.replace(sms("hello"), variables={"status_callback_url": "https://x.example/s"})

    make_channel().send([message])

    assert twilio.messages[0].status_callback is None


def test_twilio_segment_count_wins_over_the_local_one(sms):
    class Counting(FakeTwilio):
        def segments(self, body):
            return 3

    with Counting() as fake:
        channel = TwilioSMS("sms", fake.channel_settings(from_number=SENDER))
        try:
            [delivery] = channel.send([sms("short")])
        finally:
            channel.close()
    assert delivery.segments == 3


@pytest.mark.parametrize("body, limit, problem", [
    ("a" * 160, 1, None),
    ("a" * 161, 1, "the text takes 2 GSM-7 segments, more than max_segments = 1"),
    (ARMENIAN_71[:70], 1, None),
    (ARMENIAN_71, 1, "the text takes 2 UCS-2 segments, more than max_segments = 1"),
    ("Təşəkkür edirik! " * 5, 1, "the text takes 2 UCS-2 segments, more than max_segments = 1"),
    (ARMENIAN_71, 2, None),
    ("a" * 500, None, None),
], ids=["gsm7-160", "gsm7-161", "armenian-70", "armenian-71", "azerbaijani-85", "limit-2",
        "no-limit"])
def test_max_segments_check(make_channel, body, limit, problem):
    options = {} if limit is None else {"max_segments": limit}
    problems = make_channel().check_rendered({"body": body}, options)
    assert problems == ([] if problem is None else [problem])


def test_a_text_over_max_segments_is_not_sent(twilio, make_channel, sms):
    with pytest.raises(PermanentError) as caught:
        make_channel().send([sms(ARMENIAN_71, max_segments=1)])
    assert "2 UCS-2 segments" in str(caught.value)
    assert twilio.requests == []


def test_campaign_must_write_a_body(make_channel):
    channel = make_channel()
    assert channel.check_campaign(set(), {}, "marketing") == ["body is required"]
    assert channel.check_campaign({"body"}, {"max_segments": 2}, "marketing") == []


def test_registered_through_the_entry_point():
    plugins = get_plugins()
    assert plugins.registry.channels["twilio"] is TwilioSMS
    assert plugins.registry.origin[("channels", "twilio")] == "twilio"
    assert TwilioSMS.address == "phone" and TwilioSMS.batch_size == 1
