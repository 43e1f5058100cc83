"""``rate_limit = 100`` held across 4 ``outreach worker`` processes, against a fake Twilio that
enforces 100 requests a second itself (a token bucket of a tenth of a second; above it, 429).

    python bench/workers_rate.py [--rate 100] [--seconds 10] [--workers 4] [--small]

Prints the aggregate rate the provider saw as a share of the limit, the busiest second, and the
429s after the first second. Target: at least 95 %, never above 105 %, no 429 after 1 s.
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--small", action="store_true", help="a tiny run for CI (2 seconds, 2 workers)")
    a = p.parse_args(argv)
    seconds, workers = (2.0, 2) if a.small else (a.seconds, a.workers)
    n = int(a.rate * seconds)
    print(machine_line())
    url = fresh_schema()
    try:
        with FakeProcess("twilio", latency=0.02, rate=a.rate) as fake, \
                tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp:
            out = project(Path(tmp), url, fake.url, n, shards=4, sweep="1s", rate=a.rate)
            env = env_for("twilio", fake.info)
            seen = plan_then_send(out, env, url, workers, fake)
    finally:
        drop_schema(url)
    first, last = seen["first"], seen["last"]
    times = seen.get("times") or []
    achieved = (seen["requests"] - 1) / (last - first) if seen["requests"] > 1 else 0.0
    late = [t for t in seen["rate_limited"] if t - first > 1.0]
    share = 100.0 * achieved / a.rate
    busiest = max((sum(1 for t in times if s <= t < s + 1.0) for s in times), default=0)
    if times:
        per_second = [0] * (int(times[-1] - times[0]) + 1)
        for t in times:
            per_second[int(t - times[0])] += 1
        print("requests in each second from the first:", per_second)
    print(f"{workers} workers sent {seen['messages']:,} of {n:,} at rate_limit = {a.rate:g}/s: "
          f"{achieved:.1f}/s in aggregate ({share:.1f} %), busiest second {busiest}; "
          f"429s: {len(seen['rate_limited'])} in all, {len(late)} after the first second")
    return figure("workers_rate", share, "% of the configured rate",
                  ">= 95 %, <= 105 %, no 429 after 1 s", rate=achieved, configured=a.rate,
                  late_429=len(late), all_429=len(seen["rate_limited"]), busiest=busiest)


if __name__ == "__main__":
    main()
