"""Dispatch through the Twilio SDK path, unlimited, against a fake Twilio answering after 20 ms.

    python bench/dispatch_twilio.py [--messages 20000] [--latency 0.02] [--concurrency 64] [--small]

The fake runs in its own process. The figure is messages per second as the provider saw them
(first request received to last answer sent); the whole ``outreach dispatch`` process, start-up
included, is printed beside it. Target: at least 1,000 messages/s per process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FakeProcess, figure, machine_line  # noqa: E402
from _dispatch import build, dispatch  # noqa: E402


def measure(messages: int, latency: float, concurrency: int | None, kind: str = "twilio",
            rate: float | None = None, channel_rate: float | None = None) -> dict:
    with FakeProcess(kind, latency=latency, rate=rate) as fake, \
            tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        out = build(Path(tmp), kind, messages, fake.url, concurrency, channel_rate)
        result = dispatch(out, kind, fake.info)
        stats = fake.stats()
    totals = result["report"]["totals"]
    span = (stats["last"] - stats["first"]) + latency if stats["first"] is not None else float("nan")
    return {**result, "stats": stats, "sent": totals.get("sent", 0), "span": span,
            "rate": totals.get("sent", 0) / span if span else 0.0}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--small", action="store_true", help="a tiny run for CI (100 messages)")
    a = p.parse_args(argv)
    n = 100 if a.small else a.messages
    print(machine_line())
    r = measure(n, a.latency, a.concurrency)
    print(f"sent {r['sent']:,} of {n:,} through twilio (concurrency {a.concurrency}, provider "
          f"latency {a.latency * 1000:.0f} ms); outreach dispatch took {r['wall']:.2f} s in all, "
          f"peak {r['peak_mb']:.0f} MB")
    return figure("dispatch_twilio", r["rate"], "messages/s", ">= 1,000", sent=r["sent"],
                  wall=r["wall"], peak_mb=r["peak_mb"])


if __name__ == "__main__":
    main()
