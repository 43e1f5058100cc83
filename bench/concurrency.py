"""The in-flight count an asyncio channel gets by default, against the best one: the Twilio
channel over its asyncio path, against a fake Twilio answering after 20 ms (its own process).

    python bench/concurrency.py [--messages 10000] [--latency 0.02] [--settings 8,16,32,64,128,256] [--small]

Runs the real ``outreach dispatch`` once per setting, and once without ``concurrency`` in the
channel's table (the default); prints each rate and the default's share of the best one.
Target: the default reaches at least 90 % of the best setting.
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
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--settings", default="8,16,32,64,128,256")
    p.add_argument("--small", action="store_true", help="a tiny run for CI (200 messages, 2 settings)")
    a = p.parse_args(argv)
    n = 200 if a.small else a.messages
    settings = [8, 64] if a.small else [int(x) for x in a.settings.split(",")]
    print(machine_line())
    rates = {}
    for c in settings:
        rates[c] = measure(n, a.latency, c)["rate"]
        print(f"concurrency = {c}: {rates[c]:,.0f} messages/s", flush=True)
    default = measure(n, a.latency, None)["rate"]
    best = max(rates, key=rates.get)
    share = 100.0 * default / rates[best]
    print(f"default: {default:,.0f} messages/s; best: concurrency = {best}, {rates[best]:,.0f}/s")
    return figure("concurrency_default", share, "% of the best setting", ">= 90 %",
                  default=default, best=best, rates=rates)


if __name__ == "__main__":
    main()
