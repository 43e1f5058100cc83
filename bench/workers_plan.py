"""Planning wall time with 1 and 2 shard workers on a PostgreSQL ledger (planning only).

    python bench/workers_plan.py [--customers 200000] [--shards 8] [--workers 1,2] [--small]

For each count of workers: a fresh schema, ``outreach run --no-send`` of a newsletter to every
customer, and the time from the run's start to its last shard's end. Each shard reads the whole
audience file and plans its share of it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FakeProcess, figure, machine_line  # noqa: E402
from _dispatch import env_for  # noqa: E402
from _workers import (  # noqa: E402
    Workers, drop_schema, fresh_schema, outreach, planned, project, run_state, wait_until,
)


def measure(customers: int, shards: int, workers: int) -> dict:
    url = fresh_schema()
    try:
        with FakeProcess("twilio") as fake, \
                tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
            out = project(Path(tmp), url, fake.url, customers, shards=shards)
            env = env_for("twilio", fake.info)
            with Workers(out, env, workers, concurrency=1, queues=("outreach-plan",)) as procs:
                procs.ready(url)  # the workers are up (imports, schema) before the clock starts
                started = time.monotonic()
                run = outreach(out, env, "run", "--now", "2026-11-24T09:30", "--no-send")
                ended = wait_until(lambda: planned(url, run["run_id"]), step=0.1)
                state = run_state(url, run["run_id"])
    finally:
        drop_schema(url)
    return {"wall": ended - started, "messages": sum(state["messages"].values()),
            "shards": state["shards"]}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=200_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--small", action="store_true", help="a tiny run for CI (500 customers)")
    a = p.parse_args(argv)
    n = 500 if a.small else a.customers
    counts = [1] if a.small else [int(x) for x in a.workers.split(",")]
    print(machine_line())
    rows = []
    for w in counts:
        r = measure(n, a.shards, w)
        print(f"{w} worker(s): {r['messages']:,} messages planned in {a.shards} shards in "
              f"{r['wall']:.1f} s")
        rows.append(figure(f"workers_plan_{w}", r["wall"], "s", "2 workers < 1 worker", **r))
    return rows


if __name__ == "__main__":
    main()
