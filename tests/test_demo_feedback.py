"""The demo closes the loop once ``[serve]`` is on: the feedback email carries a rating link, a
rating of 2 or less is stored as a ``feedback`` event, and the next run apologises to that customer
alone, in their language."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import aiohttp
import asyncio

from serve_support import SECRET, start_command, stop_command
from test_demo import demo, sent  # noqa: F401 - the demo fixture

ENV = {"OUTREACH_TOKEN_SECRET": SECRET}


def outreach(folder, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUTREACH_CONFIG"}
    return subprocess.run([sys.executable, "-m", "outreach", *args], cwd=folder,
                          capture_output=True, text=True, env={**env, **ENV}, timeout=120)


def answer(url: str, rating: str, comment: str) -> int:
    async def go() -> int:
        async with aiohttp.ClientSession() as s:
            async with s.post(url, data={"rating": rating, "comment": comment}) as r:
                return r.status

    return asyncio.run(go())


def test_a_low_rating_from_the_feedback_email_gets_an_apology(demo):  # noqa: F811
    toml = demo / "outreach.toml"
    text = toml.read_text(encoding="utf-8")
    assert '# [serve]\n# public_url = "http://127.0.0.1:8025"' in text  # shipped commented out
    toml.write_text(text.replace('# [serve]\n# public_url', '[serve]\npublic_url'),
                    encoding="utf-8")
    first = outreach(demo, "run", "--json", "--now", "2026-11-24T10:00")
    assert first.returncode == 0, first.stderr
    feedback = {m["customer"]: m for m in sent(demo, "email")["feedback"]}
    assert sorted(feedback) == ["c005", "c014", "c027", "c036"]
    links = {c: re.search(r"http://127\.0\.0\.1:8025(/f/\S+)", m["body"]).group(1)
             for c, m in feedback.items()}

    proc, base = start_command(SimpleNamespace(root=demo, environ=ENV))
    try:
        assert answer(base + links["c005"], "1", "The gata was dry.") == 200
        assert answer(base + links["c014"], "5", "Perfect, thank you!") == 200
    finally:
        stop_command(proc)

    # The answers were given now (wall clock): the next run, a few minutes on, reads them.
    later = (datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat(timespec="seconds")
    second = outreach(demo, "run", "--json", "--now", later, "--campaign", "feedback-apology")
    assert second.returncode == 0, second.stderr
    [apology] = sent(demo, "email")["feedback-apology"]
    assert apology["customer"] == "c005"
    assert apology["locale"] == "az"  # Rəşad reads Azerbaijani
    assert "The gata was dry." in apology["body"] and "5 üzərindən 1" in apology["body"]
    report = {c["name"]: c for c in json.loads(second.stdout)["campaigns"]}
    assert report["feedback-apology"]["sent"] == 1
