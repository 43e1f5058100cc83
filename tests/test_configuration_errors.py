"""A deployment mistake burns no message: the channel stops, its messages wait, the run says so.

A wrong API key, a rotated auth token, an outbox folder that cannot be written: the provider (or the
disk) refuses the deployment, not the message. The channel stops for the rest of the run, its
messages stay queued with no attempt counted, the run exits 1 naming the channel and the provider's
reason, and the first run after the fix sends every one of them, once. Through the real ``outreach``
command, with the real SDKs against the local fake providers, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter

from guarantees_support import audience, email_of, newsletter, phone, provider_channels

from outreach.testing import Project
from outreach_sendgrid.testing import FakeSendGrid
from outreach_twilio.testing import FakeTwilio

GOOD_KEY = "SG.the-right-key-0123456789"
WRONG_KEY = "SG.a-revoked-key-9876543210"
N = 12


def _shop(p: Project, sendgrid: FakeSendGrid, twilio: FakeTwilio, *, key: str,
          token: str) -> dict[str, str]:
    """An email and an SMS newsletter to N customers through the two plugins; the environment
    with this API key and auth token."""
    p.configure(channels=provider_channels(sendgrid, twilio))
    p.customers(audience(N))
    p.campaign("letter", newsletter(channel="email"))
    p.campaign("text", newsletter(channel="sms"))
    return {"SENDGRID_API_KEY": key, "TWILIO_ACCOUNT_SID": twilio.account_sid,
            "TWILIO_AUTH_TOKEN": token}


def test_wrong_credentials_leave_every_message_queued_and_the_fix_sends_each_once(project):
    p = project
    with FakeSendGrid(api_key=GOOD_KEY) as sendgrid, FakeTwilio() as twilio:
        wrong = _shop(p, sendgrid, twilio, key=WRONG_KEY, token="0" * 32)

        first = p.cli("run", "--json", "--now", "2026-11-24T10:00", env=wrong)

        assert first.code == 1, first.stderr
        report = first.json()
        totals = report["totals"]
        assert (totals["queued"], totals["sent"], totals["failed"], totals["unknown"]) == (
            2 * N, 0, 0, 0)
        stopped = {c["channel"]: c for c in report["stopped_channels"]}
        assert set(stopped) == {"email", "sms"}
        assert "SendGrid answered 401" in stopped["email"]["reason"]
        assert "$SENDGRID_API_KEY" in stopped["email"]["reason"]
        assert "code 20003" in stopped["sms"]["reason"]
        assert stopped["email"]["released"] == N and stopped["sms"]["released"] == N
        rows = p.messages()
        assert Counter(r["state"] for r in rows) == {"queued": 2 * N}
        assert {r["attempts"] for r in rows} == {0}
        assert {r["handed_at"] for r in rows} == {None}
        # The channel stopped: one refused request for SendGrid, at most a window's for Twilio.
        assert len(sendgrid.mail_requests) == 1 and len(twilio.requests) <= 4
        assert sendgrid.sent == [] and twilio.messages == []

        # A human reading cron's mail sees which channel stopped and why.
        again = p.cli("run", "--now", "2026-11-24T10:05", env=wrong)
        assert again.code == 1
        assert "channel 'email' stopped: SendGrid answered 401" in again.stderr
        assert "channel 'sms' stopped: Twilio refused the account" in again.stderr
        assert f"{N} message(s) left queued, none failed" in again.stderr

        fixed = {**wrong, "SENDGRID_API_KEY": GOOD_KEY, "TWILIO_AUTH_TOKEN": twilio.auth_token}
        after = p.cli("run", "--json", "--now", "2026-11-24T10:10", env=fixed)

        assert after.code == 0, after.stderr
        assert after.json()["totals"]["sent"] == 2 * N
        assert after.json()["stopped_channels"] == []
        assert Counter(r["state"] for r in p.messages()) == {"sent": 2 * N}
        assert Counter(s.address for s in sendgrid.sent) == {email_of(i): 1 for i in range(N)}
        assert Counter(m.to for m in twilio.messages) == {phone(i): 1 for i in range(N)}

        assert p.cli("run", "--json", "--now", "2026-11-24T10:15", env=fixed).json()[
            "totals"]["sent"] == 0


def test_one_channel_stopping_does_not_hold_the_other(sqlite_project):
    p = sqlite_project
    with FakeSendGrid(api_key=GOOD_KEY) as sendgrid, FakeTwilio() as twilio:
        env = _shop(p, sendgrid, twilio, key=WRONG_KEY, token=twilio.auth_token)

        result = p.cli("run", "--json", "--now", "2026-11-24T10:00", env=env)

        assert result.code == 1
        report = result.json()
        assert [c["channel"] for c in report["stopped_channels"]] == ["email"]
        assert report["totals"]["sent"] == N and len(twilio.messages) == N
        states = Counter((r["channel"], r["state"]) for r in p.messages())
        assert states == {("email", "queued"): N, ("sms", "sent"): N}


def test_an_outbox_folder_that_cannot_be_made_stops_its_channel_until_it_can(sqlite_project):
    p = sqlite_project
    p.configure(channels="""
        [channels.email]
        plugin = "outbox-email"
        path = "mail/out"
    """)
    (p.root / "mail").write_text("a file where the folder should be", encoding="utf-8")
    p.customers(audience(3))
    p.campaign("letter", newsletter(channel="email"))

    first = p.cli("run", "--json", "--now", "2026-11-24T10:00")

    assert first.code == 1
    [stopped] = first.json()["stopped_channels"]
    assert stopped["channel"] == "email" and "cannot create the outbox folder" in stopped["reason"]
    assert first.json()["totals"]["failed"] == 0
    assert Counter(r["state"] for r in p.messages()) == {"queued": 3}
    status = p.cli("status")
    assert "messages: queued 3" in status.stdout
    assert "the last run stopped channel 'email': cannot create the outbox folder" in status.stderr
    assert p.cli("status", "--json").json()["runs"][0]["stopped_channels"][0]["released"] == 3

    (p.root / "mail").unlink()
    second = p.cli("dispatch", "--json")

    assert second.code == 0, second.stderr
    assert second.json()["totals"]["sent"] == 3
    assert len(list((p.root / "mail" / "out").glob("*.json"))) == 3
