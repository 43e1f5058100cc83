"""Settings as a user writes them in outreach.toml, resolved by the core's resolver."""

from __future__ import annotations

import pytest

from outreach.channel import Channel
from outreach.settings import Secret, resolve
from outreach_twilio import TwilioSettingsError, TwilioSMS
from outreach_twilio.testing import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    TEST_FROM_NUMBER,
    TEST_MESSAGING_SERVICE_SID,
)

ENVIRON = {"TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN}


def build(table: dict, environ: dict = ENVIRON) -> TwilioSMS:
    """Resolve ``[channels.sms]`` as the core does, then make the channel."""
    declared = {**Channel.CORE_SETTINGS, **TwilioSMS.settings}
    resolved = resolve(declared, {"plugin": "twilio", **table}, file="outreach.toml",
                       prefix="channels.sms", environ=environ)
    assert resolved.problems == []
    values = {k: v for k, v in resolved.values.items() if k not in ("plugin", "consent")}
    return TwilioSMS("sms", values)


def test_secrets_come_from_the_default_environment_variables():
    channel = build({"from_number": TEST_FROM_NUMBER})
    assert isinstance(channel.config["account_sid"], Secret)
    assert channel.config["account_sid"].env == "TWILIO_ACCOUNT_SID"
    assert channel.config["auth_token"].reveal() == TEST_AUTH_TOKEN
    channel.close()


def test_secrets_from_named_environment_variables():
    environ = {"SHOP_TWILIO_SID": TEST_ACCOUNT_SID, "SHOP_TWILIO_TOKEN": TEST_AUTH_TOKEN}
    channel = build({"from_number": TEST_FROM_NUMBER, "account_sid_env": "SHOP_TWILIO_SID",
                     "auth_token_env": "SHOP_TWILIO_TOKEN"}, environ)
    assert channel.describe()["auth_token"] == "$SHOP_TWILIO_TOKEN"
    channel.close()


def test_a_secret_written_in_the_file_is_refused():
    declared = {**Channel.CORE_SETTINGS, **TwilioSMS.settings}
    resolved = resolve(declared, {"plugin": "twilio", "auth_token": "abc"}, file="outreach.toml",
                       prefix="channels.sms", environ=ENVIRON)
    assert [p.key for p in resolved.problems] == ["channels.sms.auth_token"]


@pytest.mark.parametrize("table, problem", [
    ({"from_number": TEST_FROM_NUMBER, "messaging_service_sid": TEST_MESSAGING_SERVICE_SID},
     "set either from_number or messaging_service_sid, not both"),
    ({}, "from_number or messaging_service_sid is required"),
    ({"from_number": "015005550006"}, "from_number must be an E.164 number"),
    ({"messaging_service_sid": "MG123"}, "messaging_service_sid must be MG followed by 32"),
    ({"from_number": TEST_FROM_NUMBER, "status_callback": "http://hooks.example.com/s"},
     "status_callback must be an https URL"),
    ({"from_number": TEST_FROM_NUMBER, "api_base": "localhost:8080"},
     "api_base must be an http(s) URL"),
], ids=["both", "neither", "not-e164", "bad-service-sid", "http-callback", "bad-api-base"])
def test_invalid_settings_are_refused_with_a_clear_error(table, problem):
    with pytest.raises(TwilioSettingsError) as caught:
        build(table)
    assert problem in str(caught.value)
    assert "channel 'sms' (twilio)" in str(caught.value)
    assert TEST_ACCOUNT_SID not in str(caught.value) and TEST_AUTH_TOKEN not in str(caught.value)


def test_check_settings_lists_every_problem():
    problems = TwilioSMS.check_settings({
        "account_sid": Secret("not-a-sid", "TWILIO_ACCOUNT_SID"),
        "auth_token": Secret(TEST_AUTH_TOKEN, "TWILIO_AUTH_TOKEN"),
    })
    assert problems == [
        "account_sid (from $TWILIO_ACCOUNT_SID) is not an Account SID: expected AC followed by "
        "32 hexadecimal digits",
        "from_number or messaging_service_sid is required",
    ]


def test_missing_secret_is_reported_by_the_resolver():
    declared = {**Channel.CORE_SETTINGS, **TwilioSMS.settings}
    resolved = resolve(declared, {"plugin": "twilio", "from_number": TEST_FROM_NUMBER},
                       file="outreach.toml", prefix="channels.sms",
                       environ={"TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID})
    assert [p.key for p in resolved.problems] == ["channels.sms.auth_token_env"]
