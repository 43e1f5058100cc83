"""One ``outreach worker`` against a hand-written asyncio loop sending the same messages to the
same fake Twilio (its own process, answering after 20 ms).

    python bench/versus_aiohttp.py [--messages 10000] [--latency 0.02] [--inflight 64] [--small]

The hand-written loop is what one would write for speed: the Twilio SDK's own asyncio client
(``create_async``, aiohttp underneath) with a semaphore of ``--inflight`` calls, the text rendered
with Jinja2, no ledger. A plain aiohttp loop without the SDK (form posts by hand) is measured
too, to show what the SDK itself costs. The worker is the real ``outreach worker`` delivering
the same messages planned in its ledger, with the channel's default in-flight count.
Target: the worker reaches at least 90 % of the hand-written loop's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FakeProcess, figure, machine_line  # noqa: E402
from _dispatch import SMS_BODY, env_for, phone  # noqa: E402
from _workers import (  # noqa: E402
    Workers, drop_schema, fresh_schema, outreach, planned, project, settled, wait_until,
)


async def _sdk_loop(url: str, info: dict, n: int, inflight: int) -> float:
    import jinja2
    from twilio.http.async_http_client import AsyncTwilioHttpClient
    from twilio.rest import Client

    class Local(AsyncTwilioHttpClient):  # the SDK's asyncio client, sent to the fake
        async def request(self, method, url_, *args, **kwargs):
            return await super().request(method, url_.replace("https://api.twilio.com", url),
                                         *args, **kwargs)

    http = Local()
    client = Client(info["account_sid"], info["auth_token"], http_client=http)
    template = jinja2.Environment().from_string(SMS_BODY)
    gate = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        async with gate:
            await client.messages.create_async(to=phone(i), from_="+15005550006",
                                               body=template.render(customer={"first_name": "Ani"},
                                                                    event={"order_id": i}))

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    took = time.perf_counter() - started
    await http.close()
    return n / took


async def _aiohttp_loop(url: str, info: dict, n: int, inflight: int) -> float:
    import aiohttp
    import jinja2

    template = jinja2.Environment().from_string(SMS_BODY)
    auth = aiohttp.BasicAuth(info["account_sid"], info["auth_token"])
    endpoint = f"{url}/2010-04-01/Accounts/{info['account_sid']}/Messages.json"
    gate = asyncio.Semaphore(inflight)
    async with aiohttp.ClientSession(headers={"Authorization": auth.encode()},
                                     connector=aiohttp.TCPConnector(limit=inflight)) as session:
        async def one(i: int) -> None:
            async with gate:
                form = {"To": phone(i), "From": "+15005550006",
                        "Body": template.render(customer={"first_name": "Ani"},
                                                event={"order_id": i})}
                async with session.post(endpoint, data=form) as r:
                    await r.json()

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--small", action="store_true", help="a tiny run for CI (200 messages)")
    a = p.parse_args(argv)
    n = 200 if a.small else a.messages
    print(machine_line())
    url = fresh_schema()
    try:
        with FakeProcess("twilio", latency=a.latency) as fake, \
                tempfile.TemporaryDirectory(prefix="bench-versus-") as tmp:
            sdk = asyncio.run(_sdk_loop(fake.url, fake.info, n, a.inflight))
            raw = asyncio.run(_aiohttp_loop(fake.url, fake.info, n, a.inflight))
            out = project(Path(tmp), url, fake.url, n, shards=1, sweep="1s")
            env = env_for("twilio", fake.info)
            with Workers(out, env, 1, queues=("outreach-plan",)):
                run = outreach(out, env, "run", "--now", "2026-11-24T09:30", "--no-send")
                wait_until(lambda: planned(url, run["run_id"]))
            mark = time.monotonic()
            with Workers(out, env, 1, concurrency=1):
                wait_until(lambda: settled(url, run["run_id"]), step=0.2)
            seen = fake.stats(after=mark)
    finally:
        drop_schema(url)
    worker = seen["messages"] / ((seen["last"] - seen["first"]) + a.latency)
    print(f"hand-written loop over the SDK's asyncio client: {sdk:,.0f}/s; plain aiohttp without "
          f"the SDK: {raw:,.0f}/s; outreach worker: {worker:,.0f}/s; {n:,} messages each")
    return figure("versus_aiohttp", 100.0 * worker / sdk, "% of the hand-written loop",
                  ">= 90 %", worker=worker, sdk_loop=sdk, aiohttp_loop=raw)


if __name__ == "__main__":
    main()
