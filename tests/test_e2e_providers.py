"""End to end: the demo's campaigns through SendGrid and Twilio, via the real `outreach run`.

The real SDKs talk to local servers that play the providers' APIs and check every request against
the providers' own OpenAPI descriptions. A second run sends nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from outreach_sendgrid.testing import FakeSendGrid
from outreach_twilio.testing import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilio

REPO = Path(__file__).resolve().parents[1]
SENDGRID_KEY = "SG.e2e-secret-key-0123456789"


@pytest.fixture
def providers():
    with FakeSendGrid(api_key=SENDGRID_KEY) as sendgrid, FakeTwilio() as twilio:
        yield sendgrid, twilio


@pytest.fixture
def live_demo(tmp_path, providers) -> Path:
    """The demo project with its outbox channels swapped for SendGrid and Twilio."""
    sendgrid, twilio = providers
    for name in ("campaigns", "data", "templates"):
        shutil.copytree(REPO / name, tmp_path / name)
    config = (REPO / "outreach.toml").read_text(encoding="utf-8")
    head, _, rest = config.partition("[channels.email]")
    _, _, tail = rest.partition("[[caps]]")
    channels = f'''[channels.email]
plugin = "sendgrid"
from_email = "hello@saffron-sourdough.example"
from_name = "Saffron & Sourdough"
unsubscribe_url = "https://saffron-sourdough.example/unsubscribe?c={{customer_id}}&k={{key}}"
unsubscribe_mailto = "leave@saffron-sourdough.example"
api_host = "{sendgrid.url}"
timeout = 5

[channels.sms]
plugin = "twilio"
from_number = "+15005550006"
api_base = "{twilio.url}"
timeout = 5

'''
    (tmp_path / "outreach.toml").write_text(head + channels + "[[caps]]" + tail, encoding="utf-8")
    return tmp_path


def outreach(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUTREACH_CONFIG"}
    env.update(SENDGRID_API_KEY=SENDGRID_KEY, TWILIO_ACCOUNT_SID=TEST_ACCOUNT_SID,
               TWILIO_AUTH_TOKEN=TEST_AUTH_TOKEN)
    return subprocess.run([sys.executable, "-m", "outreach", *args], cwd=folder, text=True,
                          capture_output=True, env=env, timeout=180)


def test_demo_through_sendgrid_and_twilio_then_nothing_twice(live_demo, providers):
    sendgrid, twilio = providers
    first = outreach(live_demo, "run", "--json", "--now", "2026-11-24T10:00")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    totals = report["totals"]
    assert totals["failed"] == 0 and totals["unknown"] == 0

    assert sendgrid.spec_errors == [] and twilio.spec_errors == []
    assert len(sendgrid.sent) + len(twilio.messages) == totals["sent"]
    by_campaign = Counter(m.custom_args["campaign"] for m in sendgrid.sent)
    assert by_campaign["newsletter"] == 43 and by_campaign["apology"] == 3

    # Every email carries its ledger key; marketing email carries one-click unsubscribe headers.
    c011 = json.loads(outreach(live_demo, "history", "--customer", "c011", "--json").stdout)
    ledger_keys = {m["key"] for m in c011["messages"] if m["channel"] == "email"}
    address = c011["messages"][0]["address"]
    assert {m.custom_args["outreach_key"] for m in sendgrid.to(address)} == ledger_keys
    assert any(k.startswith("apology:") for k in ledger_keys)
    for mail in sendgrid.sent:
        key = mail.custom_args["outreach_key"]
        assert key.split(":")[0] == mail.custom_args["campaign"]
        if mail.custom_args["campaign"] == "newsletter":
            assert mail.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            assert mail.headers["List-Unsubscribe"].startswith("<https://saffron-sourdough.example/")
        if mail.custom_args["campaign"] == "apology":
            assert "List-Unsubscribe" not in mail.headers
    # The Armenian birthday SMS is UCS-2, and its segments are recorded in the ledger.
    history = json.loads(outreach(live_demo, "history", "--customer", "c007", "--json").stdout)
    [greeting] = [m for m in history["messages"] if m["campaign"] == "birthday"]
    [sms] = [m for m in twilio.messages if m.to == greeting["address"]]
    assert any("\u0530" <= ch <= "\u058f" for ch in sms.body)  # Armenian script
    assert greeting["state"] == "sent" and greeting["provider_id"] == sms.sid
    from outreach.sms import count_segments

    assert greeting["segments"] == count_segments(sms.body).segments >= 2

    # The secrets appear nowhere in what the command printed.
    for text in (first.stdout, first.stderr):
        assert SENDGRID_KEY not in text and TEST_AUTH_TOKEN not in text

    emails, texts = len(sendgrid.sent), len(twilio.messages)
    second = outreach(live_demo, "run", "--json", "--now", "2026-11-24T10:05")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["totals"]["sent"] == 0
    assert (len(sendgrid.sent), len(twilio.messages)) == (emails, texts)
