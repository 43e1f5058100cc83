"""outreach against a plain sequential loop over the Twilio SDK: same messages, same fake provider
(its own process, answering after 20 ms).

    python bench/versus_loop.py [--messages 2000] [--latency 0.02] [--concurrency 64] [--small]

The loop is what one would write by hand: for each message, render its text with Jinja2 and call
``client.messages.create`` (the SDK's own client, pointed at the fake). outreach is the real
``outreach dispatch`` over the same messages queued in its ledger. Prints both rates and the ratio
(target: at least 20×).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FakeProcess, figure, machine_line  # noqa: E402
from _dispatch import SMS_BODY, build, dispatch, phone  # noqa: E402


def plain_loop(url: str, info: dict, n: int, start: int) -> float:
    """Messages per second of a sequential loop over the Twilio SDK."""
    import jinja2
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    class Local(TwilioHttpClient):  # the SDK's client, sent to the fake instead of api.twilio.com
        def request(self, method, url_, *args, **kwargs):
            return super().request(method, url_.replace("https://api.twilio.com", url), *args,
                                   **kwargs)

    client = Client(info["account_sid"], info["auth_token"], http_client=Local(timeout=10))
    template = jinja2.Environment().from_string(SMS_BODY)
    started = time.perf_counter()
    for i in range(start, start + n):
        variables = json.loads(json.dumps({"customer": {"first_name": "Ani"},
                                           "event": {"order_id": f"SS-{i}"}}))
        client.messages.create(to=phone(i), from_="+15005550006", body=template.render(**variables))
    return n / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--small", action="store_true", help="a tiny run for CI (40 messages)")
    a = p.parse_args(argv)
    n = 40 if a.small else a.messages
    print(machine_line())
    with FakeProcess("twilio", latency=a.latency) as fake, \
            tempfile.TemporaryDirectory(prefix="bench-versus-") as tmp:
        loop_rate = plain_loop(fake.url, fake.info, n, 0)
        out = build(Path(tmp), "twilio", n, fake.url, a.concurrency)
        mark = time.monotonic()
        result = dispatch(out, "twilio", fake.info)
        seen = fake.stats(after=mark)
    sent = result["report"]["totals"].get("sent", 0)
    outreach_rate = sent / ((seen["last"] - seen["first"]) + a.latency)
    print(f"plain loop: {loop_rate:,.0f} messages/s; outreach dispatch (concurrency "
          f"{a.concurrency}): {outreach_rate:,.0f} messages/s; {n:,} messages each")
    return figure("versus_loop", outreach_rate / loop_rate, "× a sequential SDK loop", ">= 20×",
                  loop=loop_rate, outreach=outreach_rate, sent=sent)


if __name__ == "__main__":
    main()
