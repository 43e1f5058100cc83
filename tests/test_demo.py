"""The bundled demo: what the README's quick start runs, and the story data/README.md tells."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo(tmp_path) -> Path:
    """A copy of the demo project, so tests never touch the checkout's own ledger or outbox."""
    for name in ("outreach.toml", "campaigns", "data", "templates"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    return tmp_path


def outreach(demo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUTREACH_CONFIG"}
    return subprocess.run([sys.executable, "-m", "outreach", *args], cwd=demo, capture_output=True,
                          text=True, env=env, timeout=120)


def sent(demo: Path, channel: str) -> dict[str, list[dict]]:
    by_campaign: dict[str, list[dict]] = {}
    for path in sorted((demo / "outbox" / channel).glob("*.json")):
        message = json.loads(path.read_text(encoding="utf-8"))
        by_campaign.setdefault(message["campaign"], []).append(message)
    return by_campaign


def test_the_demo_validates(demo):
    result = outreach(demo, "validate")
    assert result.returncode == 0, result.stderr
    assert "8 campaign(s) valid" in result.stdout


def test_the_demo_story_of_24_november(demo):
    first = outreach(demo, "run", "--json", "--now", "2026-11-24T10:00")
    assert first.returncode == 0, first.stderr
    report = {c["name"]: c for c in json.loads(first.stdout)["campaigns"]}
    assert report["newsletter"]["sent"] == 43 and report["newsletter"]["skipped"] == 7
    assert report["apology"]["sent"] == 3
    assert report["thank-you"]["sent"] == 7 and report["thank-you"]["deferred"] == 1
    assert json.loads(first.stdout)["invalid_rows"]["count"] == 2

    email, sms = sent(demo, "email"), sent(demo, "sms")
    apologies = {m["customer"]: m for m in email["apology"]}
    assert sorted(apologies) == ["c011", "c023", "c028"]
    assert apologies["c011"]["locale"].startswith("hy")
    assert [m["customer"] for m in sms["birthday"]] == ["c007"]
    assert sms["birthday"][0]["encoding"] == "UCS-2"
    assert sorted(m["customer"] for m in email["club-renewal"]) == ["c010", "c026"]

    # The second run, five minutes later, sends nothing new.
    second = outreach(demo, "run", "--json", "--now", "2026-11-24T10:05")
    assert second.returncode == 0
    assert json.loads(second.stdout)["totals"]["sent"] == 0
    assert sum(len(v) for v in sent(demo, "email").values()) == sum(len(v) for v in email.values())

    # The next morning in Manila the SMS held back by quiet hours goes out.
    later = outreach(demo, "run", "--json", "--now", "2026-11-24T16:30")  # 08:30 in Manila
    assert json.loads(later.stdout)["totals"]["sent"] >= 1
    assert "c033" in [m["customer"] for m in sent(demo, "sms")["thank-you"]]


def test_the_quick_start_run_works_today_and_twice(demo):
    """`outreach run` at the real time, as the quick start does: exit 0, and the rerun sends nothing."""
    first = outreach(demo, "run", "--json")
    assert first.returncode == 0, first.stderr
    second = outreach(demo, "run", "--json")
    assert second.returncode == 0
    totals = json.loads(second.stdout)["totals"]
    assert totals["sent"] == 0 and totals["queued"] == 0
