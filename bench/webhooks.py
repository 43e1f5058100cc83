"""Provider webhooks under load: SendGrid event batches, each delivered three times, and inbound
SMS, over loopback to a real ``outreach serve`` process.

    python bench/webhooks.py [--events 10000] [--batch 200] [--inbound 1000] [--concurrency 8]
                             [--ledger-url URL] [--small]

A project with one message per event key is written to a temporary folder (SQLite ledger unless
``--ledger-url``); ``outreach serve`` is started on a free port. The client signs each batch like
SendGrid (ECDSA P-256 over timestamp + body) and each inbound SMS with Twilio's algorithm (the
SDK's ``compute_signature``), posts every SendGrid batch three times in a shuffled order and the
SMS alongside, ``--concurrency`` requests in flight. Then the ledger is read: every event must be
there once (0 lost, 0 double-counted), and the servers' own answers must add up to it. The figure
is events handled per second by the one server process (redeliveries included: each is verified
and checked against the ledger like a new one), first request sent to last answer received.
Target: at least 5,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUTREACH, figure, machine_line  # noqa: E402

import aiohttp  # noqa: E402

from outreach.ledger import Ledger, wall_clock  # noqa: E402
from outreach.testing.webhooks import (SendGridSigner, sendgrid_body,  # noqa: E402
                                       twilio_request)

PUBLIC = "https://hooks.bench.example"
AUTH_TOKEN = "bench-twilio-auth-token"
#: Event kinds in the mix, by weight: mostly what every message produces.
MIX = [("processed", 30), ("delivered", 30), ("open", 20), ("click", 10), ("deferred", 4),
       ("bounce", 3), ("unsubscribe", 2), ("spamreport", 1)]


def phone(i: int) -> str:
    return f"+1818555{i:04d}"


def build(folder: Path, messages: int, inbound: int, ledger_url: str | None) -> str:
    """A project whose ledger holds ``messages`` sent emails and ``inbound`` sent SMS."""
    (folder / "campaigns").mkdir(parents=True)
    (folder / "customers.csv").write_text("id,email,phone,timezone,locale,consent_email,"
                                          "consent_sms\n", encoding="utf-8")
    url = ledger_url or "sqlite:///outreach.db"
    (folder / "outreach.toml").write_text(f'''timezone = "America/Los_Angeles"
ledger = "{url}"

[audience]
source = "csv"
customers = "customers.csv"

[channels.email]
plugin = "outbox-email"

[channels.sms]
plugin = "outbox-sms"

[serve]
public_url = "{PUBLIC}"
''', encoding="utf-8")
    ledger = Ledger(url if ledger_url else f"sqlite:///{folder / 'outreach.db'}")
    try:
        version = ledger.store_version("bench", "v1", {"name": "bench"})
        now = wall_clock()
        rows = [{"key": f"bench:{i}", "campaign": "bench", "version_id": version,
                 "customer_id": f"c{i}", "channel": "email", "address": f"c{i}@example.com",
                 "name": "", "locale": "en", "variables": "{}", "category": "marketing",
                 "priority": 0, "state": "sent", "not_before": now, "due_at": now}
                for i in range(messages)]
        rows += [{**rows[0], "key": f"bench-sms:{i}", "customer_id": f"c{i}", "channel": "sms",
                  "address": phone(i)} for i in range(inbound)]
        for start in range(0, len(rows), 5000):
            ledger.insert_messages(rows[start:start + 5000])
    finally:
        ledger.close()
    return url


def sendgrid_events(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    kinds = [k for k, w in MIX for _ in range(w)]
    stamp = int(time.time())
    out = []
    for i in range(n):
        kind = rng.choice(kinds)
        e = {"email": f"c{i}@example.com", "timestamp": stamp, "event": kind,
             "sg_event_id": f"ev{i:07d}", "sg_message_id": f"m{i}", "outreach_key": f"bench:{i}"}
        if kind == "bounce":
            e.update(type="bounce", status="5.1.1", reason="no such user")
        elif kind == "click":
            e["url"] = "https://bakery.example/menu"
        elif kind == "open":
            e["sg_machine_open"] = i % 3 == 0
        out.append(e)
    return out


async def deliver(port: int, requests: list[tuple[str, bytes, dict]], concurrency: int
                  ) -> tuple[list[tuple[str, int, str]], float]:
    queue: asyncio.Queue = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    answers: list[tuple[str, int, str]] = []

    async def worker(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            path, body, headers = queue.get_nowait()
            async with http.post(f"http://127.0.0.1:{port}{path}", data=body,
                                 headers=headers) as r:
                answers.append((path, r.status, await r.text()))

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        took = time.perf_counter() - started
    return answers, took


def measure(events: int, batch: int, inbound: int, concurrency: int,
            ledger_url: str | None = None) -> dict:
    signer = SendGridSigner()
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        folder = Path(tmp)
        url = build(folder, events, inbound, ledger_url)
        env = {k: v for k, v in os.environ.items() if k != "OUTREACH_CONFIG"}
        env.update(OUTREACH_TOKEN_SECRET="bench-token-secret-" + "x" * 32,
                   SENDGRID_WEBHOOK_VERIFICATION_KEY=signer.public_key,
                   TWILIO_AUTH_TOKEN=AUTH_TOKEN)
        server = subprocess.Popen([OUTREACH, "serve", "--port", "0"], cwd=folder, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            port = None
            for line in server.stderr:
                found = re.search(r"listening on http://[^:]+:(\d+)", line)
                if found:
                    port = int(found.group(1))
                    break
            if port is None:
                raise RuntimeError("outreach serve did not start")
            # The server logs a line per request: read them so its pipe never fills.
            drain = subprocess.Popen(["cat"], stdin=server.stderr, stdout=subprocess.DEVNULL)
            all_events = sendgrid_events(events)
            batches = []
            for start in range(0, events, batch):
                body = sendgrid_body(all_events[start:start + batch])
                batches.append(("/webhooks/sendgrid", body, signer.headers(body)))
            sms = []
            for i in range(inbound):
                body, headers = twilio_request(AUTH_TOKEN, PUBLIC + "/webhooks/twilio/inbound", {
                    "MessageSid": f"SMin{i:06d}", "From": phone(i), "To": "+15005550006",
                    "Body": "STOP" if i % 2 else "stop "})
                sms.append(("/webhooks/twilio/inbound", body, headers))
            requests = batches * 3 + sms
            random.Random(11).shuffle(requests)
            cpu_before = _cpu(server.pid)
            answers, took = asyncio.run(deliver(port, requests, concurrency))
            cpu = _cpu(server.pid) - cpu_before
        finally:
            server.terminate()
            server.wait(timeout=30)
        bad = [(p, s, t[:200]) for p, s, t in answers if s not in (200, 204)]
        reported = [json.loads(t) for p, s, t in answers if p == "/webhooks/sendgrid" and s == 200]
        ledger = Ledger(url if ledger_url else f"sqlite:///{folder / 'outreach.db'}")
        try:
            with ledger.reader.connect() as conn:
                rows = dict(conn.exec_driver_sql(
                    "SELECT provider, COUNT(*) FROM delivery_events GROUP BY provider").all())
                distinct = conn.exec_driver_sql(
                    "SELECT COUNT(DISTINCT provider_event_id) FROM delivery_events").scalar()
                changes = conn.exec_driver_sql("SELECT COUNT(*) FROM consent_changes").scalar()
                blocked = conn.exec_driver_sql("SELECT COUNT(*) FROM suppressions").scalar()
        finally:
            ledger.close()
            if ledger_url:
                _drop(ledger_url)
    unsubscribes = sum(e["event"] == "unsubscribe" for e in all_events)
    suppressing = sum(e["event"] in ("bounce", "spamreport") for e in all_events)
    result = {
        "requests": len(requests), "refused": bad, "seconds": took, "server_cpu": cpu,
        "sendgrid_rows": rows.get("sendgrid", 0), "twilio_rows": rows.get("twilio", 0),
        "distinct": distinct, "new_reported": sum(r["new"] for r in reported),
        "duplicates_reported": sum(r["duplicates"] for r in reported),
        "consent_changes": changes, "suppressions": blocked,
        "expected": {"sendgrid_rows": events, "twilio_rows": inbound,
                     "duplicates_reported": 2 * events,
                     "consent_changes": unsubscribes + inbound,
                     "suppressions": suppressing + inbound},
        "handled": 3 * events + inbound,
    }
    result["lost"] = events + inbound - distinct
    result["double_counted"] = (result["sendgrid_rows"] - events) + (result["new_reported"] - events)
    result["rate"] = result["handled"] / took
    return result


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _drop(url: str) -> None:
    ledger = Ledger(url)
    try:
        with ledger.engine.begin() as conn:
            for table in ("delivery_events", "consent_changes", "suppressions", "messages",
                          "campaign_versions"):
                conn.exec_driver_sql(f"DELETE FROM {table}")
    finally:
        ledger.close()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=200, help="events per SendGrid request")
    p.add_argument("--inbound", type=int, default=1_000)
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    p.add_argument("--ledger-url", help="a PostgreSQL ledger (its tables are emptied after)")
    p.add_argument("--small", action="store_true", help="a tiny run for CI (300 events, 30 SMS)")
    a = p.parse_args(argv)
    events, inbound, batch = (300, 30, 50) if a.small else (a.events, a.inbound, a.batch)
    print(machine_line())
    r = measure(events, batch, inbound, a.concurrency, a.ledger_url)
    checks = {k: (r[k], v) for k, v in r["expected"].items()}
    print(f"{r['requests']:,} requests ({events:,} SendGrid events in batches of {batch}, each "
          f"batch three times; {inbound:,} inbound SMS) in {r['seconds']:.2f} s; server CPU "
          f"{r['server_cpu']:.2f} s; lost {r['lost']}, double-counted {r['double_counted']}, "
          f"refused {len(r['refused'])}")
    print("ledger against expected: " + ", ".join(f"{k} {got}/{want}"
                                                   for k, (got, want) in checks.items()))
    failed = r["lost"] or r["double_counted"] or r["refused"] or any(
        got != want for got, want in checks.values())
    per_cpu = r["handled"] / r["server_cpu"] if r["server_cpu"] else float("nan")
    print(f"the server process: {per_cpu:,.0f} events per second of its own CPU")
    fig = figure("webhooks", r["rate"], "events/s", ">= 5,000", lost=r["lost"],
                 double_counted=r["double_counted"], seconds=r["seconds"],
                 server_cpu=r["server_cpu"], per_cpu_second=per_cpu)
    if failed:
        print(f"FAILED: {r['refused'][:3]}", file=sys.stderr)
        sys.exit(1)
    return fig


if __name__ == "__main__":
    main()
