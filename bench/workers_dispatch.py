"""Delivery with 1, 2 and 4 ``outreach worker`` processes against a fake Twilio answering after
20 ms (its own process), on a PostgreSQL ledger.

    python bench/workers_dispatch.py [--messages 20000] [--workers 1,2,4] [--latency 0.02] [--small]

For each count of workers: a fresh schema, the messages planned by one run (``--no-send``), then
the workers send them (each sweep puts a delivery job on the queue for its worker) and the figure
is what the provider saw, first request to last answer. On the 2-core machine the workers share
two cores, so the figure says what a host's cores give, and the model in the README says what
more hosts give.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FakeProcess, figure, machine_line  # noqa: E402
from _dispatch import env_for  # noqa: E402
from _workers import drop_schema, fresh_schema, plan_then_send, project  # noqa: E402


def measure(messages: int, workers: int, latency: float) -> dict:
    url = fresh_schema()
    try:
        with FakeProcess("twilio", latency=latency) as fake, \
                tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
            out = project(Path(tmp), url, fake.url, messages, shards=4, sweep="1s")
            env = env_for("twilio", fake.info)
            seen = plan_then_send(out, env, url, workers, fake)
    finally:
        drop_schema(url)
    span = (seen["last"] - seen["first"]) + latency
    return {"rate": seen["messages"] / span, "sent": seen["messages"],
            "duplicates": seen["duplicates"]}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--small", action="store_true", help="a tiny run for CI (200 messages, 1 worker)")
    a = p.parse_args(argv)
    n = 200 if a.small else a.messages
    counts = [1] if a.small else [int(x) for x in a.workers.split(",")]
    print(machine_line())
    rows = []
    for w in counts:
        r = measure(n, w, a.latency)
        print(f"{w} worker(s): {r['sent']:,} messages at {r['rate']:,.0f}/s, "
              f"{r['duplicates']} duplicates")
        rows.append(figure(f"workers_dispatch_{w}", r["rate"], "messages/s",
                           "grows with workers until the host's cores are used", **r))
    return rows


if __name__ == "__main__":
    main()
