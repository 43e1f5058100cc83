"""Helpers for the delivery-guarantee tests: audiences, Twilio/SendGrid projects, real processes.

The guarantees (nobody messaged twice, nothing silently lost, caps across processes) are proved
against the real ``outreach`` command in subprocesses, talking to fake providers served from the
test process, so a SIGKILL hits exactly what cron would run. Imported by the ``test_guarantees_*``
modules as ``from guarantees_support import ...`` (tests/ is on sys.path through its conftest).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Iterable, Mapping

from sqlalchemy import select

from outreach.ledger import metadata
from outreach.testing import Project
from outreach_twilio.testing import TEST_FROM_NUMBER, FakeTwilio

#: States a message may rest in once no process holds it; ``queued``/``sending`` are not among them.
FINAL_STATES = {"sent", "failed", "deferred", "unknown"}
#: A newsletter at the top of every hour, for crash trials that each serve a new occurrence.
HOURLY = "0 * * * *"
BASE_DAY = "2026-11-24"


def phone(i: int) -> str:
    """A valid E.164 number (Armenian mobile range), distinct per ``i``."""
    return f"+3749100{i:04d}"


def email_of(i: int) -> str:
    return f"reader{i}@example.com"


def audience(n: int, *, consent_sms: str = "yes", consent_email: str = "yes") -> str:
    """``n`` customers with consent, a phone and an email, as rows for ``Project.customers``."""
    return "\n".join(f"c{i},Name{i},Family,{email_of(i)},{phone(i)},America/Los_Angeles,en,"
                     f"{consent_email},{consent_sms}," for i in range(n))


def twilio_channel(fake: FakeTwilio, *, timeout: float = 2.0, concurrency: int = 4,
                   extra: str = "") -> str:
    """A ``[channels.sms]`` table for the Twilio plugin pointed at ``fake`` (secrets from the env)."""
    return textwrap.dedent(f"""
        [channels.sms]
        plugin = "twilio"
        from_number = "{TEST_FROM_NUMBER}"
        api_base = "{fake.url}"
        timeout = {timeout}
        concurrency = {concurrency}
    """) + extra


def provider_channels(sendgrid: Any, twilio: FakeTwilio, *, timeout: float = 5.0,
                      sms_concurrency: int = 4) -> str:
    """``[channels.sms]`` on the Twilio plugin and ``[channels.email]`` on the SendGrid plugin (a
    ``FakeSendGrid``), pointed at the fakes; secrets come from the environment."""
    return twilio_channel(twilio, timeout=timeout, concurrency=sms_concurrency) + textwrap.dedent(f"""
        [channels.email]
        plugin = "sendgrid"
        from_email = "shop@example.com"
        api_host = "{sendgrid.url}"
        unsubscribe_url = "https://shop.example.com/unsubscribe?k={{key}}"
        timeout = {timeout}
    """)


def twilio_env(fake: FakeTwilio) -> dict[str, str]:
    """The environment the Twilio channel reads its secrets from."""
    return {"TWILIO_ACCOUNT_SID": fake.account_sid, "TWILIO_AUTH_TOKEN": fake.auth_token}


def newsletter(*, channel: str = "sms", schedule: str = HOURLY, start: str = BASE_DAY,
               priority: int | None = None, body: str | None = None) -> str:
    """A scheduled newsletter whose text names its occurrence (so deliveries can be told apart)."""
    lines = ['rule = "newsletter"', f'schedule = "{schedule}"', f'start = "{start}"',
             f'channels = ["{channel}"]']
    if priority is not None:
        lines.append(f"priority = {priority}")
    if channel == "sms":
        lines += ["[sms]", 'body = "' + (body or "News {{ occurrence }} for {{ customer.first_name }}")
                  + '"']
    else:
        lines += ["[email]", 'subject = "News {{ occurrence }}"',
                  'body = "' + (body or "Hello {{ customer.first_name }}") + '"']
    return "\n".join(lines) + "\n"


def twilio_project(root: Path, fake: FakeTwilio, n: int, *, ledger_url: str | None = None,
                   extra: str = "", caps: str = "", tables: str = "", timeout: float = 2.0,
                   concurrency: int = 4) -> Project:
    """A project whose SMS channel is the Twilio plugin on ``fake``, with ``n`` consenting customers.

    ``extra`` holds top-level keys of outreach.toml; ``caps`` and ``tables`` (``[retry]``...) are
    TOML tables written after the channels.
    """
    p = Project(root, ledger_url)
    p.environ.update(twilio_env(fake))
    p.configure(channels=twilio_channel(fake, timeout=timeout, concurrency=concurrency),
                extra=extra, caps=caps + "\n" + textwrap.dedent(tables))
    p.customers(audience(n))
    return p


# ---------------------------------------------------------------------------------------- processes
def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "outreach", *args]


def spawn(p: Project, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start the real ``outreach`` command in the project folder (stdout/stderr piped)."""
    environ = {**os.environ, **p.environ, **(env or {})}
    environ.pop("OUTREACH_CONFIG", None)
    return subprocess.Popen(command(*args), cwd=p.root, env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def stop(procs: Iterable[subprocess.Popen], timeout: float = 30) -> None:
    """Stop processes as a service manager would: SIGTERM, then SIGKILL after ``timeout``."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(predicate, timeout: float, step: float = 0.005) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def run_inprocess(p: Project, *args: str, capsys=None) -> tuple[int, str, str]:
    """``outreach -c PROJECT/outreach.toml ARGS`` through ``outreach.cli.main`` in this process.

    Cheaper than a subprocess (no interpreter start) and the same code path after it. Output is
    captured with ``capsys`` when given (rich's consoles write to the real sys streams).
    """
    from outreach.cli import main

    if capsys is not None:
        capsys.readouterr()
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(["-c", str(p.root / "outreach.toml"), *args])
        except SystemExit as exc:
            code = exc.code
    extra_out = extra_err = ""
    if capsys is not None:
        captured = capsys.readouterr()
        extra_out, extra_err = captured.out, captured.err
    code = 0 if code is None else code if isinstance(code, int) else 1
    return code, out.getvalue() + extra_out, err.getvalue() + extra_err


# ---------------------------------------------------------------------------------------- the ledger
def all_table_text(p: Project) -> str:
    """Every row of every ledger table, as text (for secret scans)."""
    ledger = p.ledger()
    try:
        chunks = []
        with ledger.reader.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(select(table)):
                    chunks.append(json.dumps(dict(row._mapping), default=str, ensure_ascii=False))
        return "\n".join(chunks)
    finally:
        ledger.close()


def stuck(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows not in a final or explicit state (or in one without what explains it)."""
    bad = []
    for r in rows:
        if r["state"] not in FINAL_STATES:
            bad.append(r)
        elif r["state"] in ("failed", "unknown") and not r["error"]:
            bad.append(r)
        elif r["state"] == "deferred" and not r["due_at"]:
            bad.append(r)
        elif r["state"] == "sent" and not r["provider_id"]:
            bad.append(r)
    return bad


def deliveries(fake: FakeTwilio) -> Counter:
    """How many times the fake accepted each (to, body)."""
    return Counter((m.to, m.body) for m in fake.messages)


def per_recipient(fake: FakeTwilio) -> Counter:
    return Counter(m.to for m in fake.messages)
