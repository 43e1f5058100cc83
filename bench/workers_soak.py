"""The workers' guarantees at full size: 4 ``outreach worker`` processes, 200,000 customers in 8
shards, a fake Twilio (its own process, 20 ms) counting what it receives.

    python bench/workers_soak.py [--customers 200000] [--shards 8] [--workers 4] [--trials 20] [--small]

Run 0 is one full run with no kill: every customer planned once and every message delivered once.
Each further trial is a new occurrence of an hourly newsletter in which one worker is killed with
SIGKILL at a random moment (and another started): after it, no message was delivered twice, and
every message of the run is sent or ``unknown`` (it may have left when its worker died), never
missing; the killed worker's claims expire (``claim_ttl = "30s"``) and the others finish its work.
Exits 1 if any guarantee breaks.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FakeProcess, figure, machine_line  # noqa: E402
from _dispatch import env_for  # noqa: E402
from _workers import (  # noqa: E402
    Workers, drop_schema, fresh_schema, outreach, project, run_state, settled, wait_until,
)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=200_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--small", action="store_true", help="a tiny run for CI (300 customers, 1 kill)")
    a = p.parse_args(argv)
    n, trials = (300, 1) if a.small else (a.customers, a.trials)
    rng = random.Random(a.seed)
    print(machine_line())
    url = fresh_schema()
    broken: list[str] = []
    try:
        with FakeProcess("twilio", latency=0.02) as fake, \
                tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
            out = project(Path(tmp), url, fake.url, n, shards=a.shards, claim_ttl="30s",
                          sweep="2s")
            env = env_for("twilio", fake.info)
            with Workers(out, env, a.workers, concurrency=2) as workers:
                full = None
                for trial in range(trials + 1):
                    hour = 9 + trial
                    when = f"2026-11-{24 + hour // 24}T{hour % 24:02d}:05"
                    began = time.monotonic()
                    before = fake.stats()
                    run = outreach(out, env, "run", "--now", when)
                    if trial:
                        time.sleep(rng.uniform(0.0, (full or 10.0) * 0.8))
                        workers.kill(rng.randrange(len(workers.procs)))
                    wait_until(lambda: settled(url, run["run_id"]), step=1.0)
                    took = time.monotonic() - began
                    full = full or took
                    state = run_state(url, run["run_id"])["messages"]
                    after = fake.stats()
                    delivered = after["distinct"] - before["distinct"]
                    planned = sum(state.values())
                    problems = []
                    if planned != n:
                        problems.append(f"{planned:,} messages planned for {n:,} customers")
                    if after["duplicates"]:
                        problems.append(f"{after['duplicates']} messages delivered twice")
                    if set(state) - {"sent", "unknown"}:
                        problems.append(f"messages left {state}")
                    if delivered < state.get("sent", 0):
                        problems.append(f"{state.get('sent', 0):,} recorded sent, {delivered:,} "
                                        "received")
                    print(f"run {trial} ({'no kill' if not trial else 'one worker killed'}): "
                          f"{planned:,} planned, {state.get('sent', 0):,} sent, "
                          f"{state.get('unknown', 0)} unknown, {delivered:,} received, "
                          f"{took:.0f} s" + (f"  BROKEN: {'; '.join(problems)}" if problems else ""),
                          flush=True)
                    broken += [f"run {trial}: {x}" for x in problems]
    finally:
        drop_schema(url)
    row = figure("workers_soak", len(broken), "guarantees broken", "0", trials=trials,
                 customers=n, first_run_seconds=full)
    if broken:
        sys.exit(1)
    return row


if __name__ == "__main__":
    main()
