"""What the workers' benchmarks share: a fresh PostgreSQL schema, a project whose SMS channel is a
fake Twilio in another process, ``outreach worker`` processes, and a run followed to its end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from _common import OUTREACH, base_env
from _dispatch import phone

PG_URL = os.environ.get("OUTREACH_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

TOML = """\
timezone = "America/Los_Angeles"
ledger = "{url}"
claim_ttl = "{claim_ttl}"
batch_size = 2000

[audience]
source = "csv"
customers = "customers.csv"

[channels.sms]
plugin = "twilio"
from_number = "+15005550006"
api_base = "{fake}"
timeout = 10
{channel}

[quiet_hours]
sms = false

[workers]
shards = {shards}
sweep = "{sweep}"
"""

CAMPAIGN = """\
name = "news"
rule = "newsletter"
schedule = "0 * * * *"
start = "2026-11-24"
channels = ["sms"]

[sms]
body = "News {{ occurrence }} for {{ customer.first_name }}"
"""


def fresh_schema(url: str = PG_URL) -> str:
    """A new, empty schema; the URL whose search_path is it."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{name}"


def drop_schema(schema_url: str, url: str = PG_URL) -> None:
    import psycopg

    name = schema_url.rsplit("%3D", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def project(out: Path, url: str, fake_url: str, customers: int, *, shards: int = 8,
            claim_ttl: str = "10m", sweep: str = "2s", concurrency: int | None = None,
            rate: float | None = None) -> Path:
    """A project in ``out``: ``customers`` customers with SMS consent, an hourly newsletter."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "campaigns").mkdir(exist_ok=True)
    channel = "\n".join(([f"concurrency = {concurrency}"] if concurrency else [])
                        + ([f"rate_limit = {rate}"] if rate else []))
    (out / "outreach.toml").write_text(TOML.format(
        url=url, claim_ttl=claim_ttl, fake=fake_url, channel=channel, shards=shards, sweep=sweep))
    (out / "campaigns" / "news.toml").write_text(CAMPAIGN)
    with open(out / "customers.csv", "w", encoding="utf-8") as f:
        f.write("id,first_name,phone,consent_sms\n")
        for i in range(customers):
            f.write(f"c{i},Ani{i},{phone(i)},yes\n")
    return out


class Workers:
    """``outreach worker`` processes in a project folder (stopped on exit)."""

    def __init__(self, out: Path, env: dict[str, str], count: int = 0, *,
                 concurrency: int = 2, queues: tuple[str, ...] = ()) -> None:
        self.out, self.env, self.concurrency, self.queues = out, env, concurrency, queues
        self.procs: list[subprocess.Popen] = []
        for _ in range(count):
            self.start()

    def ready(self, url: str, timeout: float = 300) -> None:
        """Wait until every worker has said it is alive (imports and start-up done)."""
        from sqlalchemy import create_engine, text

        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            def alive() -> bool:
                with engine.connect() as conn:
                    if conn.execute(text("SELECT to_regclass('outreach_workers')")).scalar() is None:
                        return False
                    return conn.execute(text(
                        "SELECT count(*) FROM outreach_workers WHERE seen_at > :t"),
                        {"t": int(time.time()) - 10}).scalar() >= len(self.procs)
            wait_until(alive, timeout)
        finally:
            engine.dispose()

    def start(self) -> subprocess.Popen:
        args = [OUTREACH, "worker", "--concurrency", str(self.concurrency)]
        for q in self.queues:
            args += ["--queue", q]
        proc = subprocess.Popen(args, cwd=self.out, env=base_env(**self.env),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def kill(self, index: int) -> None:
        """SIGKILL one worker and start another in its place."""
        self.procs[index].send_signal(signal.SIGKILL)
        self.procs[index].wait()
        self.procs.pop(index)
        self.start()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def outreach(out: Path, env: dict[str, str], *args: str, timeout: float = 3600) -> dict[str, Any]:
    """Run an ``outreach`` command with ``--json``; its output."""
    done = subprocess.run([OUTREACH, *args, "--json"], cwd=out, env=base_env(**env),
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode not in (0, 1):
        raise SystemExit(f"outreach {' '.join(args)} failed ({done.returncode}):\n"
                         f"{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout)


def run_state(url: str, run_id: str) -> dict[str, Any]:
    """A run's shards and messages by state."""
    from outreach.ledger import Ledger
    from outreach.workers.runs import run_state as state

    ledger = Ledger(url)
    try:
        return state(ledger, run_id)
    finally:
        ledger.close()


def wait_until(predicate, timeout: float = 3600, step: float = 0.2) -> float:
    """Poll ``predicate``; the monotonic time it became true (SystemExit after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(step)
    raise SystemExit("timed out")


def planned(url: str, run_id: str) -> bool:
    state = run_state(url, run_id)
    return bool(state["shards"]) and set(state["shards"]) <= {"done", "failed"}


def settled(url: str, run_id: str) -> bool:
    state = run_state(url, run_id)
    return planned(url, run_id) and not set(state["messages"]) & {"queued", "sending"}


def plan_then_send(out: Path, env: dict[str, str], url: str, workers: int, fake: Any) -> dict:
    """Plan a run without sending (one planning worker), then let ``workers`` workers send it;
    what the provider saw from the moment they started."""
    with Workers(out, env, 1, queues=("outreach-plan",)):
        run = outreach(out, env, "run", "--now", "2026-11-24T09:30", "--no-send")
        wait_until(lambda: planned(url, run["run_id"]))
    mark = time.monotonic()
    with Workers(out, env, workers, concurrency=2):
        wait_until(lambda: settled(url, run["run_id"]), step=0.5)
    return fake.stats(after=mark)
