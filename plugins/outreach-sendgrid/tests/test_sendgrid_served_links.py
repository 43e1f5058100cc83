"""With ``[serve]`` in the deployment, each marketing email's List-Unsubscribe is the one-click link
outreach serve signed for that message: no unsubscribe setting of the channel's own is needed."""

from __future__ import annotations


def test_served_link_fills_list_unsubscribe_for_marketing(make_channel, email):
    channel = make_channel()
    assert channel.check_campaign({"subject", "body"}, {}, "marketing")  # no link: refused
    channel.links_served = True
    assert channel.check_campaign({"subject", "body"}, {}, "marketing") == []

    link = "https://mail.example.com/outreach/u/eyJ2IjoxfQ.c2lnbmF0dXJl"
    message = email(category="marketing", variables={"unsubscribe_url": link})
    body = channel._body([message])
    assert body == channel._mail([message]).get()
    assert body["personalizations"][0]["headers"] == {
        "List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}

    transactional = email(category="transactional", variables={"unsubscribe_url": link})
    assert "headers" not in channel._body([transactional])["personalizations"][0]


def test_a_link_of_the_channels_own_wins(make_channel, email):
    channel = make_channel(unsubscribe_url="https://example.com/u?k={key}")
    channel.links_served = True
    message = email(category="marketing", key="k1",
                    variables={"unsubscribe_url": "https://mail.example.com/outreach/u/x.y"})
    headers = channel._body([message])["personalizations"][0]["headers"]
    assert headers["List-Unsubscribe"] == "<https://example.com/u?k=k1>"
