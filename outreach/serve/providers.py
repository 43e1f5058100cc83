"""The provider webhooks of ``outreach serve``: SendGrid's Event Webhook and Twilio's status
callbacks and inbound SMS.

Every request goes through the same gate before anything is recorded: a body over
``[serve] max_body`` is refused with 413 (by its Content-Length, and again while it is read), a
missing, forged or stale signature with 403, and a body that cannot be parsed with 400 and the
reason. Recording runs in a worker thread (the ledger's drivers block) and in one transaction per
request; when the ledger cannot be reached the answer is 503, which both providers retry, so an
event the server could not record was never acknowledged. Logs carry counts, never an address, a
signature or a secret.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from outreach.errors import OutreachError
from outreach.ledger import Ledger
from outreach.serve.context import ServeContext

log = logging.getLogger("outreach.serve.providers")

#: Seconds a provider is asked to wait before retrying after a ledger outage.
RETRY_AFTER = 30

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refused(Exception):
    """A request refused before anything was recorded: ``status`` and a reason for the sender."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, at most ``limit`` bytes (413 by the announced length, or once it is read:
    a chunked body has no Content-Length)."""
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, f"the body is larger than {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise Refused(413, f"the body is larger than {limit} bytes")
    return body


def guarded(handler: Handler) -> Handler:
    """Turn :class:`Refused` into its status and a ledger outage into 503 + Retry-After."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused as exc:
            log.info("%s %s refused: %s %s", request.method, _route(request), exc.status,
                     exc.reason)
            return web.Response(status=exc.status, text=exc.reason + "\n")
        except (SQLAlchemyError, OutreachError) as exc:
            log.warning("%s %s: the ledger is unavailable (%s); answered 503 so the provider "
                        "retries", request.method, _route(request), type(exc).__name__)
            return web.Response(status=503, text="the ledger is unavailable; retry later\n",
                                headers={"Retry-After": str(RETRY_AFTER)})

    return run


def _route(request: web.Request) -> str:
    """The route's pattern rather than the path (a path may hold a signed token)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


#: One thread per ledger writes the webhooks' events: SQLite takes one writer at a time, and
#: writers of one process queued in SQLite's busy handler sleep in steps of up to 100 ms, while a
#: queue in front of one thread hands over at once. (PostgreSQL gets a few.)
_WRITERS: weakref.WeakKeyDictionary[Ledger, ThreadPoolExecutor] = weakref.WeakKeyDictionary()
_WRITERS_LOCK = threading.Lock()


def _writer(ledger: Ledger) -> ThreadPoolExecutor:
    with _WRITERS_LOCK:
        pool = _WRITERS.get(ledger)
        if pool is None:
            pool = _WRITERS[ledger] = ThreadPoolExecutor(
                max_workers=1 if ledger.is_sqlite else 4, thread_name_prefix="outreach-webhooks")
        return pool


async def in_thread(ledger: Ledger, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run blocking ledger work off the event loop, on the ledger's writer thread(s)."""
    return await asyncio.get_running_loop().run_in_executor(
        _writer(ledger), functools.partial(fn, *args, **kwargs))


def provider_routes(ctx: ServeContext) -> list[web.RouteDef]:
    """The routes of the provider webhooks, bound to ``ctx``."""
    from outreach.serve.sendgrid_events import sendgrid_handler
    from outreach.serve.twilio_callbacks import inbound_handler, status_handler

    return [
        web.post("/webhooks/sendgrid", guarded(sendgrid_handler(ctx))),
        web.post("/webhooks/twilio/status/{token}", guarded(status_handler(ctx))),
        web.post("/webhooks/twilio/inbound", guarded(inbound_handler(ctx))),
    ]
