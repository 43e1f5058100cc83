"""Dispatch benchmarks' shared part: a project whose outbox holds N queued messages for a channel
pointed at a fake provider in another process, and a measured ``outreach dispatch`` over it."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUTREACH, base_env, run_measured  # noqa: E402

SMS_BODY = ("Thank you for order {{ event.order_id }}{% if customer.first_name %}, "
            "{{ customer.first_name }}{% endif %}! We hope it tastes like home. - Saffron & Sourdough")
TEMPLATE_ID = "d-0123456789abcdef0123456789abcdef"

TOML = """\
timezone = "UTC"
ledger = "sqlite:///outreach.db"

[audience]
source = "csv"
customers = "data/customers.csv"

{channel}
"""

TWILIO = """\
[channels.sms]
plugin = "twilio"
from_number = "+15005550006"
api_base = "{url}"
{concurrency}
timeout = 10
{rate}
[quiet_hours]
sms = false
"""

SENDGRID = """\
[channels.email]
plugin = "sendgrid"
from_email = "hello@example.com"
api_host = "{url}"
{concurrency}
timeout = 30
{rate}"""

CAMPAIGN_SMS = f'''\
name = "bench"
rule = "thank_you"
channels = ["sms"]
category = "transactional"

[sms]
body = "{SMS_BODY}"

[sample.event]
order_id = "SS-1"
'''

CAMPAIGN_EMAIL = f'''\
name = "bench"
rule = "thank_you"
channels = ["email"]
category = "transactional"

[email]
template_id = "{TEMPLATE_ID}"
'''


def phone(i: int) -> str:
    return f"+1818{200 + i // 10000 % 800}{i % 10000:04d}"


def email(i: int) -> str:
    return f"customer{i}@example.com"


def build(out: Path, kind: str, n: int, url: str, concurrency: int | None,
          rate: float | None = None) -> Path:
    """A project in ``out`` with ``n`` queued messages for the ``kind`` channel (twilio/sendgrid)."""
    from outreach.config import load_project
    from outreach.ledger import Ledger
    from outreach.plugins import get_plugins

    out.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    (out / "campaigns").mkdir(exist_ok=True)
    for stale in ("outreach.db", "outreach.db-wal", "outreach.db-shm"):
        (out / stale).unlink(missing_ok=True)
    (out / "data" / "customers.csv").write_text("id,first_name,email,phone,consent_email,consent_sms\n")
    limit = f"rate_limit = {rate}\n" if rate else ""
    # No concurrency: the channel's default (what bench/concurrency.py compares with the best).
    inflight = f"concurrency = {concurrency}" if concurrency else ""
    channel = (TWILIO if kind == "twilio" else SENDGRID).format(url=url, concurrency=inflight,
                                                                rate=limit)
    (out / "outreach.toml").write_text(TOML.format(channel=channel))
    (out / "campaigns" / "bench.toml").write_text(CAMPAIGN_SMS if kind == "twilio" else CAMPAIGN_EMAIL)
    env = env_for(kind, {})
    old = dict(os.environ)
    os.environ.update(env)
    try:
        project = load_project(out / "outreach.toml", get_plugins())
    finally:
        os.environ.clear()
        os.environ.update(old)
    ledger = Ledger(project.ledger_url)
    campaign = project.campaigns["bench"]
    version = ledger.store_version(campaign.name, campaign.version, campaign.content)
    ledger.close()
    fill(out / "outreach.db", kind, n, version)
    return out


def fill(db: Path, kind: str, n: int, version: int, start: int = 0) -> None:
    """Queue ``n`` messages straight into the ledger (due now, never attempted)."""
    t = int(time.time()) - 60
    channel, address = ("sms", phone) if kind == "twilio" else ("email", email)
    rows = [(f"bench:e{i}", "bench", version, f"c{i}", channel, address(i), "Ani Petrosyan", "en",
             json.dumps({"customer": {"first_name": "Ani"}, "event": {"order_id": f"SS-{i}"}}),
             "transactional", 60, "queued", t, t, 0, t, t) for i in range(start, start + n)]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO messages (key, campaign, version_id, customer_id, channel, address, "
                     "name, locale, variables, category, priority, state, not_before, due_at, "
                     "attempts, created_at, updated_at) VALUES "
                     "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    conn.close()


def env_for(kind: str, info: dict[str, Any]) -> dict[str, str]:
    from outreach_twilio.testing import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

    return {"TWILIO_ACCOUNT_SID": info.get("account_sid", TEST_ACCOUNT_SID),
            "TWILIO_AUTH_TOKEN": info.get("auth_token", TEST_AUTH_TOKEN),
            "SENDGRID_API_KEY": info.get("api_key", "SG.bench")}


def dispatch(out: Path, kind: str, info: dict[str, Any]) -> dict[str, Any]:
    """Run the real ``outreach dispatch --json`` on the project; its report, wall time and peak."""
    wall, peak, code, stdout, stderr = run_measured([OUTREACH, "dispatch", "--json"], cwd=out,
                                                    env=base_env(**env_for(kind, info)))
    try:
        report = json.loads(stdout)
    except ValueError:
        raise SystemExit(f"outreach dispatch failed ({code}):\n{stdout}\n{stderr}") from None
    return {"wall": wall, "peak_mb": peak, "code": code, "report": report}
