"""The channel contract (outreach.testing.check_channel) run against the SendGrid channel."""

from __future__ import annotations

from outreach.testing import check_channel
from outreach_sendgrid import SendGridChannel


def test_sendgrid_keeps_the_channel_contract(fake, api_key, template_batch):
    report = check_channel(
        SendGridChannel,
        settings={"from_email": "shop@example.com",
                  "unsubscribe_url": "https://example.com/u/{key}"},
        environ={"SENDGRID_API_KEY": api_key},
        provider=fake,
        url_setting="api_host",
        make_messages=template_batch,
        timeout=0.5,
    )
    assert report.failures == []
    assert "send batch" in report.passed and "secrets hidden" in report.passed


def test_contract_also_holds_for_plain_messages(fake, api_key):
    check_channel(SendGridChannel, settings={"from_email": "shop@example.com"},
                  environ={"SENDGRID_API_KEY": api_key}, provider=fake, url_setting="api_host",
                  max_batch=5, timeout=0.5)
