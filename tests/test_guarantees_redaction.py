"""Security: credentials a provider echoes back never reach the ledger, a command's output or a log.

A provider (or a proxy in front of it) may quote the request's ``Authorization`` header in its
error: Twilio's is ``Basic`` + base64 of ``sid:token``, SendGrid's ``Bearer`` + the API key. Every
message of this run is refused with such an echo; afterwards neither the secrets nor the base64 of
the pair show in any ledger table, in ``status`` or ``history`` (as text or JSON), or in the DEBUG
log of the real process that sent.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys

from guarantees_support import all_table_text, audience, newsletter, provider_channels

from outreach.testing import Project
from outreach_sendgrid.testing import FakeSendGrid
from outreach_twilio.testing import FakeTwilio

N = 3


def test_credentials_echoed_in_provider_errors_are_stored_and_shown_redacted(tmp_path):
    sid, token = "AC" + secrets.token_hex(16), "tok" + secrets.token_hex(14)
    key = "SG.key" + secrets.token_hex(14)
    basic = base64.b64encode(f"{sid}:{token}".encode()).decode()
    forbidden = {"account sid": sid, "auth token": token, "api key": key, "basic pair": basic,
                 "basic pair unpadded": basic.rstrip("=")}
    env = {"TWILIO_ACCOUNT_SID": sid, "TWILIO_AUTH_TOKEN": token, "SENDGRID_API_KEY": key}
    with FakeTwilio(sid, token) as twilio, FakeSendGrid(api_key=key) as sendgrid:
        p = Project(tmp_path / "shop")
        p.environ.update(env)
        p.configure(channels=provider_channels(sendgrid, twilio, sms_concurrency=1))
        p.customers(audience(N))
        p.campaign("text", newsletter())
        p.campaign("letter", newsletter(channel="email"))
        twilio.echo_next(N)
        sendgrid.echo_next(N)

        debug = [sys.executable, "-c", "import logging, sys; logging.basicConfig(level=logging.DEBUG);"
                 " from outreach.cli import main; sys.argv[0] = 'outreach'; main()"]
        run = subprocess.run([*debug, "run", "--json", "--now", "2026-11-24T00:10"], cwd=p.root,
                             text=True, capture_output=True, env={**os.environ, **env}, timeout=120)

        assert run.returncode == 1, run.stderr
        errors = [r["error"] for r in p.messages()]
        assert len(errors) == 2 * N and all(r["state"] == "failed" for r in p.messages())
        # The echo did reach the ledger (so the check below is not void), with the credentials
        # masked: Twilio's Basic pair and SendGrid's bearer key alike.
        assert sum("Basic ***" in e for e in errors) == N
        assert sum("Bearer ***" in e for e in errors) == N
        assert "DEBUG" in run.stderr and "Twilio request" in run.stderr

        shown = [run.stdout, run.stderr, all_table_text(p)]
        for args in (("status",), ("status", "--json"), ("history", "--customer", "c0"),
                     ("history", "--customer", "c1", "--json"), ("resend", "--failed"),
                     ("resend", "--failed", "--json")):
            result = p.cli(*args)
            assert result.code == 0, (args, result.stderr)
            shown += [result.stdout, result.stderr]

    text = "\n".join(shown)
    assert [name for name, value in forbidden.items() if value in text] == []
