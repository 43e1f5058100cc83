"""What the SendGrid channel sends, checked with the real SDK against FakeSendGrid."""

from __future__ import annotations

import re
from dataclasses import replace

from outreach_sendgrid.channel import html_to_text


def test_plain_transactional_email(fake, make_channel, email):
    channel = make_channel(from_name="Corner Shop", reply_to="help@example.com",
                           categories=["welcome"], asm_group_id=42,
                           unsubscribe_url="https://example.com/u?k={key}")
    [delivery] = channel.send([email()])

    sent = fake.by_key("welcome:c1")
    assert delivery.key == "welcome:c1" and delivery.error is None
    assert delivery.provider_id == sent.message_id
    assert (sent.address, sent.name) == ("ada@example.com", "Ada Lovelace")
    assert sent.subject == "Welcome, Ada"
    assert sent.content_types == ["text/plain", "text/html"]
    assert sent.content["text/plain"] == "Hello Ada, thank you for joining."
    assert sent.custom_args == {"outreach_key": "welcome:c1", "campaign": "welcome"}
    assert (sent.from_email, sent.from_name, sent.reply_to) == (
        "shop@example.com", "Corner Shop", "help@example.com")
    assert sent.categories == ["welcome"] and sent.asm_group_id == 42
    # Transactional mail carries no List-Unsubscribe, even with an unsubscribe link configured.
    assert not {h.lower() for h in sent.headers} & {"list-unsubscribe", "list-unsubscribe-post"}
    assert len(fake.mail_requests) == 1
    assert fake.mail_requests[0].headers["authorization"] == "Bearer SG.test-key-9f8e7d6c5b4a"
    assert fake.spec_errors == []


def test_html_only_gets_a_plain_text_alternative(fake, make_channel, email):
    html = '<p>Hello <b>Ada</b>,</p><p>see <a href="https://example.com/o/1">your order</a>.</p>'
    make_channel().send([email(content={"subject": "Your order", "html": html})])
    sent = fake.by_key("welcome:c1")
    assert sent.content_types == ["text/plain", "text/html"]
    assert sent.content["text/plain"] == "Hello Ada,\n\nsee your order (https://example.com/o/1)."
    assert fake.spec_errors == []


def test_text_only_email(fake, make_channel, email):
    make_channel().send([email(content={"subject": "Hi", "body": "Բարև Անի"})])
    assert fake.by_key("welcome:c1").content == {"text/plain": "Բարև Անի"}
    assert fake.spec_errors == []


def _check_rfc8058(headers: dict[str, str]) -> list[str]:
    """RFC 2369 / RFC 8058: <URI> list with one https URI, and the exact one-click POST body."""
    uris = re.findall(r"<([^>]*)>", headers["List-Unsubscribe"])
    assert re.fullmatch(r"\s*<[^>]+>(\s*,\s*<[^>]+>)*\s*", headers["List-Unsubscribe"])
    assert [u for u in uris if u.startswith("https://")], "one-click needs an https URI"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    return uris


def test_marketing_email_carries_one_click_unsubscribe(fake, make_channel, email):
    channel = make_channel(
        unsubscribe_url="https://example.com/unsubscribe?c={customer_id}&k={key}&from={campaign}",
        unsubscribe_mailto="unsubscribe@example.com")
    message = email(key="spring sale/2024:c 7", campaign="spring sale", customer_id="c 7",
                    category="marketing")
    channel.send([message])

    sent = fake.by_key("spring sale/2024:c 7")
    uris = _check_rfc8058(sent.headers)
    # Placeholders are URL-encoded, so a key with spaces, slashes or colons stays one value.
    assert uris == ["https://example.com/unsubscribe?c=c%207&k=spring%20sale%2F2024%3Ac%207"
                    "&from=spring%20sale", "mailto:unsubscribe@example.com"]
    assert fake.spec_errors == []


def test_mailto_only_unsubscribe_has_no_one_click_post(fake, make_channel, email):
    make_channel(unsubscribe_mailto="mailto:leave@example.com?subject=unsubscribe%20{key}").send(
        [email(category="marketing")])
    headers = fake.by_key("welcome:c1").headers
    assert headers == {"List-Unsubscribe": "<mailto:leave@example.com?subject=unsubscribe%20"
                                           "welcome%3Ac1>"}
    assert fake.spec_errors == []


def test_dynamic_template_batch_of_1000_is_one_request(fake, make_channel, template_batch):
    channel = make_channel(unsubscribe_url="https://example.com/u/{key}")
    messages = template_batch(1000)
    assert len({channel.batch_key(m) for m in messages}) == 1

    deliveries = channel.send(messages)

    assert len(fake.mail_requests) == 1
    body = fake.mail_requests[0].json()
    assert body["template_id"] == "d-0123456789abcdef"
    assert "subject" not in body and "content" not in body
    assert len(body["personalizations"]) == 1000
    p = body["personalizations"][7]
    assert p["to"] == [{"email": "reader7@example.com", "name": "Reader 7"}]
    assert p["dynamic_template_data"] == {"first_name": "Reader 7", "points": 7}
    assert p["custom_args"] == {"outreach_key": "newsletter:2024-06:c7"}
    assert body["custom_args"] == {"campaign": "newsletter"}
    _check_rfc8058(p["headers"])
    assert p["headers"]["List-Unsubscribe"] == "<https://example.com/u/newsletter%3A2024-06%3Ac7>"
    assert [d.key for d in deliveries] == [m.key for m in messages]
    assert {d.provider_id for d in deliveries} == {fake.sent[0].message_id}
    assert all(d.error is None for d in deliveries)
    assert len(fake.sent) == 1000 and fake.by_key("newsletter:2024-06:c999").personalization_index == 999
    assert fake.spec_errors == []


def test_batch_keys_split_templates_and_locales(make_channel, template_batch, email):
    channel = make_channel()
    a, b = template_batch(2)
    other = template_batch(1, template_id="d-ffff")[0]
    assert channel.batch_key(a) == channel.batch_key(b) != channel.batch_key(other)
    assert channel.batch_key(a) != channel.batch_key(replace(a, locale="hy"))


def test_one_refused_address_does_not_sink_the_batch(fake, make_channel, template_batch):
    fake.refuse = {"reader3@example.com"}
    messages = template_batch(5, category="transactional")
    deliveries = {d.key: d for d in make_channel().send(messages)}

    assert len(deliveries) == 5
    refused = deliveries["newsletter:2024-06:c3"]
    assert refused.error is not None and type(refused.error).__name__ == "PermanentError"
    assert "Does not contain a valid address" in str(refused.error)
    assert all(d.error is None for k, d in deliveries.items() if k != "newsletter:2024-06:c3")
    assert len(fake.mail_requests) == 2 and len(fake.sent) == 4
    assert fake.spec_errors == []


def test_without_template_each_message_is_its_own_request(fake, make_channel, email):
    messages = [email(key=f"welcome:c{i}", address=f"c{i}@example.com") for i in range(3)]
    deliveries = make_channel().send(messages)
    assert [d.key for d in deliveries] == [m.key for m in messages]
    assert len(fake.mail_requests) == 3
    assert fake.spec_errors == []


def test_html_to_text_skips_styles_and_keeps_lines():
    assert html_to_text("<style>p{}</style><h1>Hi</h1><ul><li>one</li><li>two</li></ul>") == \
        "Hi\n\none\n\ntwo"


def test_fake_enforces_sendgrid_rules_the_spec_cannot_say(fake, api_key):
    from sendgrid import SendGridAPIClient
    from python_http_client.exceptions import BadRequestsError

    client = SendGridAPIClient(api_key, host=fake.url)
    body = {"personalizations": [{"to": [{"email": "ada@example.com"}]}],
            "from": {"email": "shop@example.com"}, "subject": "Hi",
            "content": [{"type": "text/html", "value": "<p>x</p>"},
                        {"type": "text/plain", "value": "x"}]}
    try:
        client.send(body)
    except BadRequestsError as exc:
        assert "The text/plain content type must be first." in exc.body.decode()
    else:
        raise AssertionError("html before text was accepted")
    assert fake.spec_errors == [
        "POST /v3/mail/send: SendGrid rule: content: The text/plain content type must be first."]
    assert fake.sent == []
