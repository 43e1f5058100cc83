"""The shared channel contract (outreach.testing.check_channel), run against this plugin."""

from __future__ import annotations

from outreach.testing import check_channel
from outreach_twilio import TwilioSMS
from outreach_twilio.testing import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    TEST_FROM_NUMBER,
    TEST_MESSAGING_SERVICE_SID,
)


def test_contract_sending_from_a_number(twilio):
    report = check_channel(
        TwilioSMS,
        settings={"from_number": TEST_FROM_NUMBER,
                  "status_callback": "https://hooks.example.com/twilio/status"},
        environ={"TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN},
        provider=twilio, url_setting="api_base")
    assert report.failures == []
    assert "secrets hidden" in report.passed


def test_contract_through_a_messaging_service_and_named_variables(twilio):
    check_channel(
        TwilioSMS,
        settings={"messaging_service_sid": TEST_MESSAGING_SERVICE_SID,
                  "account_sid_env": "SHOP_SID", "auth_token_env": "SHOP_TOKEN"},
        environ={"SHOP_SID": TEST_ACCOUNT_SID, "SHOP_TOKEN": TEST_AUTH_TOKEN},
        provider=twilio, url_setting="api_base")
