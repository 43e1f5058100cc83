"""The ``outreach serve`` application: customers' links (unsubscribe, preferences, feedback) and
the providers' webhooks, on aiohttp.

aiohttp is the asyncio HTTP server the Twilio SDK's asyncio path already installs, with a
production-grade server of its own (``outreach serve``) and a plain WSGI-free application object
that can be mounted in another aiohttp server (``app.add_subapp("/outreach", create_app(ctx))``)
or run by ``gunicorn -k aiohttp.GunicornWebWorker``.

Every request is answered from the ledger alone: the audience is never read. A ledger that cannot
be reached answers 503 (providers retry; a customer can click again), a body over
``[serve] max_body`` 413, and the access log never holds a link's token (it names the customer).
"""

from __future__ import annotations

import importlib
import logging
import re
import signal
import time
from typing import TYPE_CHECKING, Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from sqlalchemy.exc import SQLAlchemyError

from outreach.errors import OutreachError
from outreach.serve.context import ServeContext, ServeSettings

if TYPE_CHECKING:
    from outreach.config import Project
    from outreach.ledger import Ledger

log = logging.getLogger("outreach.serve")

#: The key under which the application holds its :class:`ServeContext`.
CONTEXT = web.AppKey("outreach_context", ServeContext)

#: Path segments that are tokens or provider secrets: the access log shows ``…`` instead.
_TOKEN_PATH = re.compile(r"^(/[uf]/|/webhooks/twilio/status/)[^/?]+")


def settings_of(project: Project) -> ServeSettings:
    """The ``[serve]`` table as the endpoints take it (secrets revealed once, here)."""
    cfg = project.serve
    if cfg is None:
        raise OutreachError("outreach serve needs a [serve] table in outreach.toml (public_url "
                            "and the environment variable of the token secret)")
    return ServeSettings(
        public_url=cfg.public_url,
        token_secret=cfg.token_secret.reveal().encode("utf-8"),
        sendgrid_verification_key=(cfg.sendgrid_verification_key.reveal()
                                   if cfg.sendgrid_verification_key else None),
        twilio_auth_token=cfg.twilio_auth_token.reveal() if cfg.twilio_auth_token else None,
        max_body=cfg.max_body,
        replay_window=int(cfg.replay_window.total_seconds()))


def create_app(ctx: ServeContext) -> web.Application:
    """The application: the customer pages, and the providers' webhooks when that module is
    installed. Importable, to be mounted in a server of the user's own."""
    from outreach.serve import pages

    app = web.Application(client_max_size=ctx.settings.max_body,
                          middlewares=[_errors])
    app[CONTEXT] = ctx
    app.add_routes(pages.routes(ctx))
    try:
        providers = importlib.import_module("outreach.serve.providers")
    except ModuleNotFoundError as exc:
        if exc.name != "outreach.serve.providers":
            raise
    else:
        app.add_routes(providers.provider_routes(ctx))
    return app


@web.middleware
async def _errors(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    """A ledger that cannot be reached is a 503 (retry later), never a 500 with a traceback."""
    try:
        return await handler(request)
    except (SQLAlchemyError, OutreachError) as exc:
        log.error("ledger unavailable for %s %s: %s", request.method, redact(request.path),
                  type(exc).__name__)
        return web.Response(status=503, text="the ledger is unavailable; try again later\n",
                            headers={"Retry-After": "30"})


def redact(path: str) -> str:
    """A request path as logs show it: a link's token replaced by ``…``."""
    return _TOKEN_PATH.sub(r"\1…", path)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log without tokens in paths, and without query strings (which may carry
    provider signatures or addresses)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %s %.3fs", request.remote, request.method,
                         redact(request.path), response.status, time)


def serve(project: Project, ledger: Ledger, host: str, port: int,
          announce: Callable[[str], None] | None = None) -> None:
    """Run the application until interrupted (``outreach serve``)."""
    import asyncio

    ctx = ServeContext(project=project, ledger=ledger, settings=settings_of(project))
    app = create_app(ctx)

    async def main() -> None:
        runner = web.AppRunner(app, access_log_class=AccessLogger,
                               access_log=logging.getLogger("outreach.serve.access"))
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses
        actual = bound[0][1] if bound else port
        if announce is not None:
            announce(f"outreach serve listening on http://{host}:{actual} (public address "
                     f"{ctx.settings.public_url})")
        # systemd stops a service with SIGTERM, a terminal with Ctrl-C: either finishes the
        # requests in flight, closes the listener and returns (exit 0).
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Windows
                pass
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            log.info("stopped")

    started = time.monotonic()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        log.info("stopped after %.0fs", time.monotonic() - started)
