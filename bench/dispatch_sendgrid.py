"""Dispatch through SendGrid batched personalizations (a dynamic template, 1000 recipients a request)
against a fake SendGrid answering after 20 ms, in its own process.

    python bench/dispatch_sendgrid.py [--messages 100000] [--latency 0.02] [--concurrency 4] [--small]

The figure is recipients per second as the provider saw them (first request received to last answer
sent). Target: at least 20,000 recipients/s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LAST_CPU, figure, machine_line  # noqa: E402
from dispatch_twilio import measure  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--small", action="store_true", help="a tiny run for CI (2,000 recipients)")
    a = p.parse_args(argv)
    n = 2000 if a.small else a.messages
    print(machine_line())
    r = measure(n, a.latency, a.concurrency, kind="sendgrid")
    print(f"sent {r['sent']:,} of {n:,} in {r['stats']['requests']} requests (concurrency "
          f"{a.concurrency}, provider latency {a.latency * 1000:.0f} ms); outreach dispatch took "
          f"{r['wall']:.2f} s in all, peak {r['peak_mb']:.0f} MB")
    # CPU seconds of the outreach process (start-up included): steadier than wall time on a
    # machine that other jobs share.
    cpu = LAST_CPU[0]
    print(f"outreach dispatch used {cpu:.2f} s of CPU: "
          f"{cpu / max(r['sent'], 1) * 1e6:.1f} µs per recipient")
    return figure("dispatch_sendgrid", r["rate"], "recipients/s", ">= 20,000", sent=r["sent"],
                  wall=r["wall"], peak_mb=r["peak_mb"], cpu=cpu)


if __name__ == "__main__":
    main()
