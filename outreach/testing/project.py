"""A throwaway outreach project for tests: a deployment, campaign files, customers, events, runs.

Tests read like the README: write a campaign file and a customer list, run at a given time, look
at what was sent::

    def test_thanks(outreach_project):
        p = outreach_project
        p.customers("id,first_name,email,consent_email\\nc1,Ani,ani@example.com,yes")
        p.events("id,customer_id,type,time\\ne1,c1,purchase,2026-11-24T09:00:00-08:00")
        p.campaign("thanks", '''
            rule = "thank_you"
            channels = ["email"]
            [email]
            subject = "Thank you, {{ customer.first_name }}"
            body = "..."
        ''')
        p.run("2026-11-24T10:00")
        assert [m["to"] for m in p.outbox("email")] == ["ani@example.com"]

Channels default to the built-in outbox channels, so nothing leaves the machine; pass ``channels``
to :meth:`Project.configure` to use a plugin's channel against a local fake provider.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

DEFAULT_CUSTOMERS_HEADER = ("id,first_name,last_name,email,phone,timezone,locale,consent_email,"
                            "consent_sms,tags")


@dataclass
class CLIResult:
    """What a real ``outreach`` subprocess did."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.stdout)


class Project:
    """A project folder with an ``outreach.toml``, ``campaigns/`` and CSV audience files."""

    def __init__(self, root: Path, ledger_url: str | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "campaigns").mkdir(exist_ok=True)
        self.ledger_url = ledger_url or "sqlite:///outreach.db"
        self.environ: dict[str, str] = {}
        self.configure()
        self.customers("")
        self.events("id,customer_id,type,time\n")

    # ------------------------------------------------------------------ writing files
    def configure(self, *, timezone: str = "America/Los_Angeles", caps: str = "",
                  quiet_hours: str | None = None, channels: str | None = None,
                  extra: str = "") -> "Project":
        """Write ``outreach.toml``. ``caps``, ``quiet_hours``, ``channels`` and ``extra`` are TOML.

        Without ``quiet_hours``, every channel's quiet hours are off, so a test's times are free.
        """
        if channels is None:
            channels = textwrap.dedent("""
                [channels.email]
                plugin = "outbox-email"
                path = "outbox/email"

                [channels.sms]
                plugin = "outbox-sms"
                path = "outbox/sms"
            """)
        if quiet_hours is None:  # tests pick their times freely: no quiet hours unless asked for
            import tomllib

            names = tomllib.loads(textwrap.dedent(channels)).get("channels", {})
            quiet_hours = "[quiet_hours]\n" + "".join(f"{n} = false\n" for n in names)
        text = textwrap.dedent(f"""
            timezone = "{timezone}"
            ledger = "{self.ledger_url}"
            {extra}

            [audience]
            source = "csv"
            customers = "customers.csv"
            events = "events.csv"
        """) + textwrap.dedent(channels) + "\n" + textwrap.dedent(caps) + "\n" + \
            textwrap.dedent(quiet_hours) + "\n"
        (self.root / "outreach.toml").write_text(text, encoding="utf-8")
        return self

    def customers(self, rows: str, header: str = DEFAULT_CUSTOMERS_HEADER) -> "Project":
        """Write ``customers.csv``; ``rows`` may include its own header line starting with ``id,``."""
        body = textwrap.dedent(rows).strip()
        if not body.startswith("id,"):
            body = header + ("\n" + body if body else "")
        (self.root / "customers.csv").write_text(body + "\n", encoding="utf-8")
        return self

    def events(self, rows: str) -> "Project":
        """Write ``events.csv`` (``rows`` with or without the header line)."""
        body = textwrap.dedent(rows).strip()
        if not body.startswith("id,"):
            body = "id,customer_id,type,time\n" + body
        (self.root / "events.csv").write_text(body + "\n", encoding="utf-8")
        return self

    def campaign(self, name: str, body: str) -> Path:
        """Write ``campaigns/NAME.toml``; ``name = ...`` is added unless the body has one."""
        text = textwrap.dedent(body).strip() + "\n"
        if not any(line.startswith("name") for line in text.splitlines()):
            text = f'name = "{name}"\n' + text
        path = self.root / "campaigns" / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    def file(self, relative: str, text: str) -> Path:
        """Write any file in the project (a template, say)."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    # ------------------------------------------------------------------ running
    def load(self, plugins=None, only_valid: bool = False):
        """The validated project (raises ConfigError)."""
        from outreach.config import load_project
        from outreach.plugins import get_plugins

        return load_project(self.root / "outreach.toml", plugins or get_plugins(),
                            only_valid=only_valid, environ={**os.environ, **self.environ})

    def run(self, now: str | datetime, *, dry_run: bool = False, campaigns: Sequence[str] = (),
            plugins=None, send: bool = True, rows: list | None = None):
        """Run in-process at ``now`` (ISO text in the project's time zone, or a datetime)."""
        from outreach.ledger import Ledger
        from outreach.plugins import get_plugins
        from outreach.run import execute, parse_now

        plugins = plugins or get_plugins()
        project = self.load(plugins)
        when = parse_now(now, project.tz) if isinstance(now, str) else now
        ledger = Ledger(project.ledger_url)
        try:
            return execute(project, plugins, ledger, when, dry_run=dry_run,
                           campaigns=list(campaigns) or None, send=send,
                           on_row=rows.append if rows is not None else None)
        finally:
            ledger.close()

    def cli(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120,
            input: str | None = None) -> CLIResult:
        """Run the real ``outreach`` command in a subprocess, in the project folder."""
        environ = {**os.environ, **self.environ, **(env or {})}
        environ.pop("OUTREACH_CONFIG", None)
        proc = subprocess.run([sys.executable, "-m", "outreach", *args], cwd=self.root,
                              capture_output=True, text=True, env=environ, timeout=timeout,
                              input=input)
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)

    def ledger(self):
        """A ledger connection (close it after use)."""
        from outreach.config import _ledger_url
        from outreach.ledger import Ledger

        return Ledger(_ledger_url(self.ledger_url, self.root.resolve(), "outreach.toml", []))

    # ------------------------------------------------------------------ looking at what happened
    def outbox(self, channel: str) -> list[dict[str, Any]]:
        """Messages the outbox channel ``channel`` wrote, sorted by key."""
        folder = self.root / "outbox" / channel
        if not folder.is_dir():
            return []
        return sorted((json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("*.json")),
                      key=lambda m: m["key"])

    def messages(self) -> list[dict[str, Any]]:
        """Every ledger message row, oldest first."""
        from sqlalchemy import select

        from outreach.ledger import messages

        ledger = self.ledger()
        try:
            with ledger.reader.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(select(messages).order_by(messages.c.id))]
        finally:
            ledger.close()
