"""A fake provider in a process of its own, for the dispatch benchmarks.

    python bench/_fake.py --kind twilio|sendgrid [--latency 0.02] [--rate 100]

prints one JSON line ({"url": ...}) when it listens, serves until its standard input closes, and
answers ``GET /__stats`` with what it received (requests, messages, first and last request times,
429s). Spec validation is off (it serialises requests); everything else is the plugins' own fakes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

from outreach.testing import RecordedRequest, Reply


def _with_stats(base: type) -> type:
    class Measured(base):  # type: ignore[misc, valid-type]
        def _respond(self, request: RecordedRequest):
            if request.path == "/__stats":
                after = float(request.query.get("after", ["0"])[0])
                return 0.0, Reply(200, body=self.stats(after))
            return super()._respond(request)

        def stats(self, after: float = 0.0) -> dict[str, Any]:
            """What was received since ``after`` (time.monotonic(), the same clock in every
            process on the machine)."""
            with self._lock:
                times = [r.received_at for r in self.requests
                         if r.path != "/__stats" and r.received_at >= after]
                limited = [t for t in self.rate_limited if t >= after]
            received = getattr(self, "messages", None) or getattr(self, "sent", None) or []
            messages = len(received)
            # Twilio's messages: how many (to, body) pairs came more than once (a duplicate).
            seen = Counter((m.to, m.body) for m in received if hasattr(m, "to"))
            duplicates = sum(1 for k in seen.values() if k > 1)
            return {"requests": len(times), "messages": messages,
                    "first": min(times) if times else None, "last": max(times) if times else None,
                    "latency": self.latency, "rate_limited": limited,
                    "duplicates": duplicates, "distinct": len(seen),
                    "times": sorted(times) if len(times) <= 100_000 else [],
                    "now": time.monotonic()}

    return Measured


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kind", choices=("twilio", "sendgrid"), required=True)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--rate", type=float, default=None)
    a = p.parse_args()
    if a.kind == "twilio":
        from outreach_twilio.testing import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilio

        fake = _with_stats(FakeTwilio)(latency=a.latency, validate=False)
        info = {"account_sid": TEST_ACCOUNT_SID, "auth_token": TEST_AUTH_TOKEN}
    else:
        from outreach_sendgrid.testing import FakeSendGrid

        fake = _with_stats(FakeSendGrid)(api_key="SG.bench", latency=a.latency, validate=False)
        info = {"api_key": "SG.bench"}
    if a.rate:
        fake.enforce_rate(a.rate)
    fake.start()
    print(json.dumps({"url": fake.url, **info}), flush=True)
    try:
        sys.stdin.read()  # until the parent closes it (or dies)
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
