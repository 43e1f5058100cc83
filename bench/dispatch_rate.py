"""Dispatch at a configured rate: ``rate_limit = 100`` on a Twilio channel, against a fake Twilio that
enforces 100 requests a second itself (a token bucket; above it: 429 with Retry-After), in its own
process.

    python bench/dispatch_rate.py [--rate 100] [--seconds 10] [--latency 0.02] [--small]

Prints the sustained rate the provider saw (as a share of the configured rate) and the 429s after
the first second. Target: at least 95 % of the rate, no 429 after the first second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import figure, machine_line  # noqa: E402
from dispatch_twilio import measure  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--small", action="store_true", help="a tiny run for CI (one second)")
    a = p.parse_args(argv)
    seconds = 1.0 if a.small else a.seconds
    n = int(a.rate * seconds)
    print(machine_line())
    r = measure(n, a.latency, a.concurrency, rate=a.rate, channel_rate=a.rate)
    first = r["stats"]["first"]
    late = [t for t in r["stats"]["rate_limited"] if first is not None and t - first > 1.0]
    share = 100.0 * r["rate"] / a.rate
    print(f"sent {r['sent']:,} of {n:,} at rate_limit = {a.rate:g}/s: {r['rate']:.1f} messages/s "
          f"sustained; 429s: {len(r['stats']['rate_limited'])} in all, {len(late)} after the "
          "first second")
    return figure("dispatch_rate", share, "% of the configured rate", ">= 95 %, no 429 after 1 s",
                  rate=r["rate"], configured=a.rate, late_429=len(late),
                  all_429=len(r["stats"]["rate_limited"]))


if __name__ == "__main__":
    main()
