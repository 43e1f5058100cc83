"""Helpers for the ``outreach serve`` tests: a project with ``[serve]`` and planned messages, and
the application served on a real loopback port (in a thread, or as the real command)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from outreach.serve import tokens

SECRET = "s3cret-for-tests-only-0123456789abcdef"
ENV = {"OUTREACH_TOKEN_SECRET": SECRET}
SERVE = """
[serve]
public_url = "https://mail.example.com/outreach"
"""
ANI = "c1,Ani,Petrosyan,ani.petrosyan@example.com,+18185550101,America/Los_Angeles,hy,yes,yes,"
JOSE = "c2,Jose,Rizal,jose@example.com,+18185550102,America/Los_Angeles,tl-PH,yes,yes,"
QUIET = ('[quiet_hours]\nsms = { start = "21:00", end = "08:00" }\n'
         'email = { start = "21:00", end = "08:00" }\n')

NEWS = """
rule = "newsletter"
schedule = "0 * * * *"
channels = ["email"]
[email]
subject = "News for {{ customer.first_name }}"
body = "Unsubscribe: {{ unsubscribe_url }}\\nPreferences: {{ preferences_url }}"
"""
THANKS = """
rule = "thank_you"
channels = ["sms"]
[sms]
body = "Thank you, {{ customer.first_name }}! {{ feedback_url }}"
"""


def serve_project(p, *, quiet: bool = False) -> Any:
    """``p`` (an outreach.testing Project) with [serve], its token secret and two customers."""
    p.environ.update(ENV)
    p.configure(extra=SERVE, quiet_hours=QUIET if quiet else None)
    p.customers(ANI + "\n" + JOSE)
    return p


def token_for(key: str, customer: str, *, purpose: str = tokens.UNSUBSCRIBE,
              consent: str | None = "email", secret: str = SECRET) -> str:
    return tokens.make(secret.encode(), tokens.Token(purpose, customer, key,
                                                     consent=consent if purpose == "u" else None))


class Server:
    """``create_app`` on a free loopback port, in a thread with its own event loop."""

    def __init__(self, p, ledger=None) -> None:
        from outreach.plugins import get_plugins
        from outreach.serve.app import create_app, settings_of
        from outreach.serve.context import ServeContext

        self.project = p.load(get_plugins())
        self.ledger = ledger or p.ledger()
        self.ctx = ServeContext(project=self.project, ledger=self.ledger,
                                settings=settings_of(self.project))
        self.app = create_app(self.ctx)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()

        async def start() -> None:
            from aiohttp import web

            self.runner = web.AppRunner(self.app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = self.runner.addresses[0][1]

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10), "the server did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.ledger.close()


def start_command(p, *extra: str) -> tuple[subprocess.Popen, str]:
    """The real ``outreach serve --port 0`` in a subprocess; (process, base URL)."""
    import os

    env = {**os.environ, **p.environ}
    env.pop("OUTREACH_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "outreach", "serve", "--port", "0", *extra],
                            cwd=p.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        found = re.search(r"listening on (http://[\d.]+:\d+)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    out, err = proc.communicate()
    raise AssertionError(f"outreach serve did not start: {err}")


def stop_command(proc: subprocess.Popen) -> str:
    """Stop the server with SIGTERM, as systemd does; it exits 0. What it wrote to stderr."""
    import signal

    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"outreach serve did not stop on SIGTERM: {err}")
    assert proc.returncode == 0, err
    return err


def url_in(text: str, kind: str) -> str:
    found = re.search(r"https://mail\.example\.com/outreach(/" + kind + r"/[A-Za-z0-9_.%-]+)", text)
    assert found, f"no /{kind}/ link in {text!r}"
    return found.group(1)


def root_of(p) -> Path:
    return Path(p.root)
