"""The request body is written as a plain dict: it must be the very JSON the SDK's helpers produce."""

from __future__ import annotations

import datetime
import decimal
import json
from dataclasses import replace

import pytest

FULL = {"from_name": "Corner Shop", "reply_to": "help@example.com",
        "categories": ["welcome", "spring", "shop"], "asm_group_id": 42,
        "unsubscribe_url": "https://example.com/u?k={key}&c={customer_id}",
        "unsubscribe_mailto": "leave@example.com"}


def _same(channel, messages) -> dict:
    """The plain body, after checking it serialises exactly as ``Mail.get()`` does."""
    body = channel._body(messages)
    reference = channel._mail(messages).get()
    assert json.dumps(body) == json.dumps(reference)
    assert list(body) == list(reference)
    return body


@pytest.mark.parametrize("settings", [{}, FULL, {"unsubscribe_mailto": "mailto:x@example.com"}],
                         ids=["bare", "full", "mailto"])
def test_marketing_email(make_channel, email, settings):
    channel = make_channel(**settings)
    body = _same(channel, [email(category="marketing", key="spring sale/2024:c 7")])
    assert body["personalizations"][0]["custom_args"] == {"outreach_key": "spring sale/2024:c 7"}


@pytest.mark.parametrize("content", [
    {"subject": "Welcome, Ada", "body": "Hello Ada", "html": "<p>Hello <b>Ada</b></p>"},
    {"subject": "Hi", "html": "<p>see <a href='https://example.com/o/1'>it</a></p>"},
    {"subject": "Hi", "body": "Բարև Անի"},
    {"subject": "", "body": "   ", "html": "<p>x</p>"},
], ids=["both", "html-only", "text-only", "blank-text"])
@pytest.mark.parametrize("settings", [{}, FULL], ids=["bare", "full"])
def test_transactional_email(make_channel, email, settings, content):
    channel = make_channel(**settings)
    _same(channel, [email(content=content)])
    _same(channel, [email(content=content, name="")])  # no display name


@pytest.mark.parametrize("category", ["marketing", "transactional"])
@pytest.mark.parametrize("settings", [{}, FULL], ids=["bare", "full"])
def test_dynamic_template_batch(make_channel, template_batch, settings, category):
    channel = make_channel(**settings)
    messages = template_batch(1000, category=category)
    # Variables of every kind: plain JSON (sent as is), empty, and values JSON cannot hold as such.
    messages[1] = replace(messages[1], variables={})
    messages[2] = replace(messages[2], variables={"when": datetime.date(2024, 6, 1),
                                                  "amount": decimal.Decimal("9.90"),
                                                  "tags": ("a", "b"), 3: "three"})
    messages[3] = replace(messages[3], variables={"nested": {"list": [1, 2.5, None, True, "x"]}})
    messages[4] = replace(messages[4], name="")
    body = _same(channel, messages)
    assert len(body["personalizations"]) == 1000
    assert body["personalizations"][2]["dynamic_template_data"] == {
        "when": "2024-06-01", "amount": "9.90", "tags": ["a", "b"], "3": "three"}
    assert "dynamic_template_data" not in body["personalizations"][1]


def test_plain_variables_are_not_copied_but_not_changed_either(make_channel, template_batch):
    channel = make_channel()
    messages = template_batch(3)
    before = json.dumps([m.variables for m in messages])
    channel._body(messages)
    assert json.dumps([m.variables for m in messages]) == before


def test_the_batch_goes_out_as_the_plain_body(fake, make_channel, template_batch):
    channel = make_channel(**FULL)
    messages = template_batch(50)
    channel.send(messages)
    [request] = fake.mail_requests
    assert request.json() == json.loads(json.dumps(channel._mail(messages).get()))
    assert fake.spec_errors == []
