"""The contract every channel plugin keeps, checked against the plugin itself.

The core trusts a channel on a few points it cannot verify at run time: that an error is classified
the way the provider meant it (a 429 retried after the provider's hint, a 400 never retried, a read
timeout never resent, a 401 stopping the channel rather than burning the message), that secrets
never leave the :class:`~outreach.settings.Secret` that holds them (not even when the provider
echoes them back), that a batch answers once per message, that an asyncio channel never blocks the
event loop and closes what it opened, and that the plugin is found through its entry point the way
users will install it. :func:`check_channel` exercises all of that against a
:class:`~outreach.testing.server.FakeProvider`, with the real plugin manager and the real settings
resolver, so a plugin's own test suite proves it in one call::

    def test_contract(fake):
        check_channel(MyChannel, settings={"from_email": "shop@example.com"},
                      environ={"MY_API_KEY": "k-123"}, provider=fake, url_setting="api_host")

Every check runs even when an earlier one fails, and one AssertionError lists every failure.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import threading
import time
import traceback
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from outreach.channel import (Channel, ChannelError, ConfigurationError, Delivery,
                              OutgoingMessage, PermanentError, TemplateField, TransientError,
                              UnknownOutcomeError, causes)
from outreach.settings import Resolved, Secret, Setting, resolve
from outreach.testing.server import FakeProvider

__all__ = ["ContractReport", "check_channel", "closed_port_url", "sample_content", "sample_message"]

def sample_message(**overrides: Any) -> OutgoingMessage:
    """A rendered transactional email to Ada, with every field filled; override what a test needs.

    ``sample_message(address="+37491234567", content={"body": "Բարև"})`` makes an SMS.
    """
    fields: dict[str, Any] = {
        "key": "welcome:c1",
        "campaign": "welcome",
        "category": "transactional",
        "customer_id": "c1",
        "address": "ada@example.com",
        "name": "Ada Lovelace",
        "locale": "en",
        "content": {"subject": "Welcome, Ada", "body": "Hello Ada, thank you for joining.",
                    "html": "<p>Hello Ada, thank you for joining.</p>"},
        "options": {},
        "variables": {"first_name": "Ada"},
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


def closed_port_url() -> str:
    """``http://127.0.0.1:PORT`` where nothing listens, for connection-refused checks.

    The port was free a moment ago and is closed again; the OS does not hand it out again at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class ContractReport:
    """What :func:`check_channel` checked: names of passed checks, failures (empty on success),
    and checks that could not run here, each with why (``spec (no API description given)``)."""

    passed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class _Capture(logging.Handler):
    """Every log record, formatted with its traceback, from every logger that propagates to root."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._lock2 = threading.Lock()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a broken log call is not this check's business
            text = str(record.msg)
        with self._lock2:
            self.lines.append(text)


def sample_content(channel_cls: type[Channel]) -> dict[str, str]:
    """A rendered text for every template field ``channel_cls`` declares (HTML for a field whose
    name says html), as a campaign written for the channel would give it."""
    content = {}
    for name in channel_cls.template_fields:
        text = f"{name.replace('_', ' ').capitalize()} for Ada: thank you for joining."
        content[name] = f"<p>{text}</p>" if "html" in name.lower() else text
    return content


def _default_messages(channel_cls: type[Channel]) -> Callable[[int], list[OutgoingMessage]]:
    content = sample_content(channel_cls)

    def make(n: int) -> list[OutgoingMessage]:
        out = []
        for i in range(n):
            address = (f"customer{i}@example.com" if channel_cls.address == "email"
                       else f"+1202555{i % 10000:04d}")
            out.append(sample_message(key=f"contract:{i}", customer_id=f"c{i}", address=address,
                                      name=f"Customer {i}", content=dict(content)))
        return out

    return make


#: How long :func:`check_channel` lets a held answer wait for the event loop to release it: a
#: channel that blocks the loop keeps it this long.
LOOP_PROBE_HOLD = 5.0


def check_channel(
    channel_cls: type[Channel],
    *,
    settings: Mapping[str, Any],
    environ: Mapping[str, str],
    provider: FakeProvider,
    url_setting: str | Callable[[dict[str, Any], str], dict[str, Any]],
    make_messages: Callable[[int], list[OutgoingMessage]] | None = None,
    secret_values: Sequence[str] = (),
    name: str = "contract",
    timeout: float = 0.5,
    max_batch: int = 1000,
    check_entry_point: bool = True,
) -> ContractReport:
    """Check ``channel_cls`` keeps the channel contract; raise one AssertionError listing failures.

    ``settings`` is the channel's table as a user writes it in ``outreach.toml`` (without ``plugin``;
    secrets named through ``<name>_env`` or left to their default variable) and ``environ`` the
    environment it is resolved with. ``url_setting`` says how to point the channel at a URL: the
    name of the setting holding the provider's base URL (``"api_host"``), or a function
    ``(settings, url) -> settings``. The channel is pointed at ``provider.url``, and at a closed port
    for the connection-refused check. ``provider`` must be started; its faults are used and cleared.

    ``make_messages(n)`` returns ``n`` messages sharing one :meth:`Channel.batch_key`, shaped so the
    channel batches them (a SendGrid dynamic template, say); by default, transactional sample
    messages to ``customerN@example.com`` or ``+1202555NNNN`` with a text for every one of the
    channel's ``template_fields`` (:func:`sample_content`). ``secret_values`` adds strings that
    must never show (the values of secret settings found in ``environ`` are always included).

    Checked, each by name in the report: ``class`` (declared attributes), ``entry point``
    (registered under ``type_name`` through the real plugin manager, from an installed
    distribution), ``settings`` (resolve cleanly; each required setting missing is a problem; a
    secret written literally is refused; secrets arrive as :class:`Secret`), ``sample messages``
    (the channel accepts a campaign writing all its template fields; without ``make_messages``),
    ``send one`` and ``send batch`` (one :class:`Delivery` per key), ``concurrent sends``; for a
    channel with ``send_async``: ``concurrent sends on one event loop``, ``send_async leaves the
    event loop free`` (the provider holds its answer until the caller's loop releases it) and
    ``aclose closes what it opened`` (no unclosed-session warning or ResourceWarning); ``429 ->
    transient with retry_after``, ``503 -> transient``, ``400 -> permanent``, ``401 ->
    configuration`` and ``403 -> configuration`` (:class:`ConfigurationError`: the deployment, not
    the message), ``slow answer -> unknown`` (and the call ends near ``timeout``), ``dropped after
    handling -> unknown``, ``connection refused -> transient``, ``echoed credentials redacted``
    (an error quoting the request's headers shows no credential), ``secrets hidden`` (repr, str,
    describe(), every raised error and its causes, every log line at DEBUG) and ``spec`` (the
    provider saw no request its API description rejects; skipped, and listed in
    :attr:`ContractReport.skipped`, when the provider has no description or does not validate).
    """
    report = ContractReport()
    make = make_messages or _default_messages(channel_cls)
    secrets: list[str] = [s for s in secret_values if s]
    for sname, setting in channel_cls.settings.items():
        if setting.secret:
            var = settings.get(f"{sname}_env") or setting.env
            if isinstance(var, str) and environ.get(var):
                secrets.append(environ[var])
    short = [s for s in secrets if len(s) < 8]
    if short:
        # The leak check looks for the value as a substring: "k" would be found in every word.
        raise ValueError("check_channel needs secret values of at least 8 characters to tell a "
                         f"leak from a coincidence; got {len(short)} shorter one(s)")
    raised: list[BaseException] = []

    def check(title: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except AssertionError as exc:
            report.failures.append(f"{title}: {exc}")
        except Exception as exc:  # noqa: BLE001 - an unexpected crash is a failure of that check
            report.failures.append(f"{title}: unexpected {type(exc).__name__}: {exc}\n"
                                   + "".join(traceback.format_exception(exc)[-3:]))
        else:
            report.passed.append(title)
        finally:
            provider.clear_faults()

    def pointed(url: str, **extra: Any) -> dict[str, Any]:
        table = dict(settings)
        if callable(url_setting):
            table = dict(url_setting(table, url))
        else:
            table[url_setting] = url
        table.update(extra)
        return table

    def build(url: str, channel_timeout: float = 10.0) -> Channel:
        table = {"plugin": channel_cls.type_name, **pointed(url), "timeout": channel_timeout}
        resolved = _resolve(channel_cls, table, environ)
        assert not resolved.problems, (
            "settings do not resolve: " + "; ".join(str(p) for p in resolved.problems))
        values = {k: v for k, v in resolved.values.items() if k not in Channel.CORE_SETTINGS}
        # As the core does: the channel's own settings plus the project folder and the timeout.
        values["project_root"] = "."
        values["timeout"] = float(resolved.values["timeout"])
        return channel_cls(name, values)

    def expect(exc_type: type[ChannelError], channel: Channel,
               messages: list[OutgoingMessage]) -> ChannelError:
        try:
            answer = channel.send(messages)
        except ChannelError as exc:
            raised.append(exc)
            assert isinstance(exc, exc_type), (
                f"raised {type(exc).__name__}({exc}), expected {exc_type.__name__}")
            assert str(exc).strip(), f"{type(exc).__name__} has an empty message"
            return exc
        except Exception as exc:
            raised.append(exc)
            raise AssertionError(f"raised {type(exc).__name__}({exc}), not a ChannelError: "
                                 f"classify it as TransientError, PermanentError or "
                                 f"UnknownOutcomeError") from exc
        raise AssertionError(f"returned {answer!r} instead of raising {exc_type.__name__} (the whole "
                             "call failed; a channel must not retry by itself, the core does)")

    capture = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    channels: list[Channel] = []
    try:
        check("class", lambda: _check_class(channel_cls))
        if check_entry_point:
            check("entry point", lambda: _check_entry_point(channel_cls))
        check("settings", lambda: _check_settings(channel_cls, pointed(provider.url), environ,
                                                  secrets))

        def channel_at(url: str, channel_timeout: float = 10.0) -> Channel:
            ch = build(url, channel_timeout)
            channels.append(ch)
            return ch

        def send_one() -> None:
            ch = channel_at(provider.url)
            msgs = make(1)
            before = len(provider.requests)
            _check_deliveries(ch.send(msgs), msgs)
            assert len(provider.requests) > before, "no request reached the provider"

        def send_batch() -> None:
            size = max(1, min(channel_cls.batch_size, max_batch))
            ch = channel_at(provider.url)
            msgs = make(size)
            assert len(msgs) == size, f"make_messages({size}) returned {len(msgs)} messages"
            keys = {ch.batch_key(m) for m in msgs}
            assert len(keys) == 1, (f"make_messages({size}) returned messages with {len(keys)} "
                                    "different batch keys; the core only batches equal keys")
            _check_deliveries(ch.send(msgs), msgs)

        def concurrent() -> None:
            ch = channel_at(provider.url)
            msgs = make(8)
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda m: ch.send([m]), msgs))
            _check_deliveries([d for a in answers for d in a], msgs)

        def concurrent_async() -> None:
            # As the dispatcher calls it: many calls in flight on one loop, then aclose() on it.
            ch = channel_at(provider.url)
            msgs = make(8)

            async def all_at_once() -> list[Sequence[Delivery]]:
                try:
                    return await asyncio.gather(*(ch.send_async([m]) for m in msgs))
                finally:
                    await ch.aclose()

            answers = asyncio.run(all_at_once())
            _check_deliveries([d for a in answers for d in a], msgs)

        def on_429() -> None:
            provider.fail_next(status=429, headers={"Retry-After": "7"},
                               body=provider.error_body(429, "too many requests"))
            exc = expect(TransientError, channel_at(provider.url), make(1))
            assert isinstance(exc, TransientError) and exc.retry_after is not None, (
                "a 429 with Retry-After: 7 gave retry_after=None")
            assert abs(exc.retry_after - 7) <= 1, f"Retry-After: 7 gave retry_after={exc.retry_after}"

        def on_503() -> None:
            provider.fail_next(status=503, body=provider.error_body(503, "service unavailable"))
            expect(TransientError, channel_at(provider.url), make(1))

        def on_400() -> None:
            provider.fail_next(status=400, body=provider.error_body(400, "invalid request"))
            expect(PermanentError, channel_at(provider.url), make(1))

        def on_refused_deployment(status: int) -> Callable[[], None]:
            def run() -> None:
                provider.fail_next(status=status, body=provider.error_body(
                    status, "authentication failed" if status == 401 else "forbidden"))
                expect(ConfigurationError, channel_at(provider.url), make(1))
            return run

        def on_echo() -> None:
            provider.echo_next(status=400)
            before = len(provider.requests)
            exc = expect(PermanentError, channel_at(provider.url), make(1))
            echoed = {value for r in provider.requests[before:]
                      for name, value in r.headers.items() if name == "authorization"}
            credentials = {part for value in echoed for part in (value, *value.split()[1:])}
            shown = " ".join(f"{link} {link!r}" for link in causes(exc))
            leaked = [c for c in credentials | set(secrets) if len(c) >= 8 and c in shown]
            assert not leaked, (
                "the provider's error quoted the request's Authorization header and the raised "
                "error shows the credential: pass provider text through outreach.channel.redact "
                "(or Channel.redact) before putting it in an error")

        def loop_free() -> None:
            ch = channel_at(provider.url, channel_timeout=LOOP_PROBE_HOLD + 5)
            msgs = make(1)
            hold = provider.hold_next(timeout=LOOP_PROBE_HOLD)

            async def probe() -> Sequence[Delivery]:
                task = asyncio.ensure_future(ch.send_async(msgs))
                try:
                    deadline = time.monotonic() + LOOP_PROBE_HOLD + 10
                    while (not hold.arrived.is_set() and not task.done()
                           and time.monotonic() < deadline):
                        await asyncio.sleep(0.005)
                    # Only a loop left free while the call is in flight gets here in time.
                    hold.release()
                    return await task
                finally:
                    await ch.aclose()

            answer = asyncio.run(probe())
            assert hold.arrived.is_set(), "no request reached the provider"
            assert not hold.timed_out, (
                f"send_async blocked the event loop while its request was in flight (the loop "
                f"could not run for {LOOP_PROBE_HOLD:g} s): await an asyncio client, or implement "
                "send() instead and let the core run it in threads")
            _check_deliveries(answer, msgs)

        def closes_what_it_opened() -> None:
            gc.collect()  # what earlier checks left is not this check's business
            complaints: list[str] = []
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ResourceWarning)
                ch = build(provider.url)

                async def once() -> None:
                    asyncio.get_running_loop().set_exception_handler(
                        lambda _loop, context: complaints.append(str(context.get("message"))))
                    try:
                        await ch.send_async(make(1))
                    except ChannelError:
                        pass  # sending is checked elsewhere; only what is left open matters here
                    finally:
                        await ch.aclose()

                asyncio.run(once())
                ch.close()
                del ch
                gc.collect()
            unclosed = complaints + [str(w.message) for w in caught
                                     if issubclass(w.category, ResourceWarning)]
            assert not unclosed, ("aclose() left open what send_async() opened on its loop: "
                                  + "; ".join(unclosed[:3]))

        def on_slow() -> None:
            provider.slow_next(seconds=timeout * 4 + 1.0)
            ch = channel_at(provider.url, timeout)
            start = time.monotonic()
            expect(UnknownOutcomeError, ch, make(1))
            took = time.monotonic() - start
            assert took < timeout * 3 + 0.5, (
                f"the call took {took:.2f}s with timeout = {timeout}: the timeout setting does not "
                "bound the network call")

        def on_drop() -> None:
            provider.drop_next(after_handling=True)
            expect(UnknownOutcomeError, channel_at(provider.url), make(1))

        def on_refused() -> None:
            expect(TransientError, channel_at(closed_port_url(), timeout), make(1))

        def samples_accepted() -> None:
            ch = channel_at(provider.url)
            content = sample_content(channel_cls)
            problems = (ch.check_campaign(set(content), {}, "transactional")
                        + ch.check_rendered(content, {}))
            assert not problems, (
                f"a campaign writing every template field ({', '.join(content) or 'none'}) is "
                f"refused: {'; '.join(problems)}; pass make_messages to check_channel")

        if make_messages is None:
            check("sample messages", samples_accepted)
        check("send one", send_one)
        check("send batch", send_batch)
        check("concurrent sends", concurrent)
        if channel_cls.send_async is not Channel.send_async:
            check("concurrent sends on one event loop", concurrent_async)
            check("send_async leaves the event loop free", loop_free)
            check("aclose closes what it opened", closes_what_it_opened)
        check("429 -> transient with retry_after", on_429)
        check("503 -> transient", on_503)
        check("400 -> permanent", on_400)
        check("401 -> configuration", on_refused_deployment(401))
        check("403 -> configuration", on_refused_deployment(403))
        check("slow answer -> unknown", on_slow)
        check("dropped after handling -> unknown", on_drop)
        check("connection refused -> transient", on_refused)
        check("echoed credentials redacted", on_echo)
    finally:
        for ch in channels:
            try:
                ch.close()
            except Exception as exc:  # noqa: BLE001
                report.failures.append(f"close: raised {type(exc).__name__}: {exc}")
        root.removeHandler(capture)
        root.setLevel(old_level)

    def hidden() -> None:
        shown: list[tuple[str, str]] = []
        for ch in channels[:1]:
            shown += [("repr(channel)", repr(ch)), ("str(channel)", str(ch)),
                      ("describe()", json.dumps(ch.describe(), default=str)),
                      ("repr(channel.config)", repr(ch.config))]
        for exc in raised:
            for link in causes(exc):
                shown.append((f"error {type(link).__name__}", f"{link} {link!r}"))
        shown += [("log", line) for line in capture.lines]
        leaks = sorted({where for where, text in shown for s in secrets if s in text})
        assert not leaks, "a secret value shows in: " + ", ".join(leaks)

    if secrets:
        check("secrets hidden", hidden)
    if provider.validate:
        check("spec", provider.assert_valid)
    else:
        report.skipped.append("spec (the provider has no API description, or validate=False)")
    if report.failures:
        raise AssertionError(f"{channel_cls.__name__} breaks the channel contract:\n- "
                             + "\n- ".join(report.failures)
                             + f"\n(passed: {', '.join(report.passed) or 'none'})")
    return report


def _resolve(channel_cls: type[Channel], table: Mapping[str, Any],
             environ: Mapping[str, str]) -> Resolved:
    declared = {**Channel.CORE_SETTINGS, **channel_cls.settings}
    return resolve(declared, table, file="outreach.toml", prefix="channels.contract",
                   environ=environ)


def _check_class(cls: type[Channel]) -> None:
    assert isinstance(cls, type) and issubclass(cls, Channel), "is not a subclass of Channel"
    assert cls.type_name and isinstance(cls.type_name, str), "type_name is empty"
    assert cls.address in ("email", "phone"), f"address is {cls.address!r}, not 'email' or 'phone'"
    assert isinstance(cls.batch_size, int) and cls.batch_size >= 1, "batch_size must be >= 1"
    for kind, table, want in (("settings", cls.settings, Setting),
                              ("campaign_options", cls.campaign_options, Setting),
                              ("template_fields", cls.template_fields, TemplateField)):
        for key, value in table.items():
            assert isinstance(value, want), f"{kind}[{key!r}] is not a {want.__name__}"
    clash = set(cls.settings) & set(Channel.CORE_SETTINGS)
    assert not clash, f"settings redeclare core settings: {', '.join(sorted(clash))}"
    assert cls.send is not Channel.send or cls.send_async is not Channel.send_async, (
        "neither send() nor send_async() is implemented")


def _check_entry_point(cls: type[Channel]) -> None:
    from outreach.plugins import get_plugins

    plugins = get_plugins()
    registry = plugins.registry
    found = registry.channels.get(cls.type_name)
    assert found is not None, (
        f"no channel type {cls.type_name!r} is registered: is the distribution installed "
        "(pip install -e .) with [project.entry-points.outreach] naming the module whose "
        f"outreach_register_channels registers it?{registry.failure_hint()}")
    assert found is cls, (f"{cls.type_name!r} is registered as {found.__module__}."
                          f"{found.__qualname__}, not {cls.__module__}.{cls.__qualname__}")
    origin = registry.origin[("channels", cls.type_name)]
    assert origin in plugins.distributions, (
        f"{cls.type_name!r} is registered by {origin!r}, which is not an installed entry point")


def _check_settings(cls: type[Channel], table: Mapping[str, Any], environ: Mapping[str, str],
                    secrets: Sequence[str]) -> None:
    full = {"plugin": cls.type_name, **table}
    ok = _resolve(cls, full, environ)
    assert not ok.problems, "settings do not resolve: " + "; ".join(map(str, ok.problems))
    for name, setting in cls.settings.items():
        if setting.secret:
            value = ok.values.get(name)
            assert value is None or isinstance(value, Secret), (
                f"secret {name!r} resolved to a {type(value).__name__}, not a Secret")
            literal = _resolve(cls, {**full, name: "literal-secret-value"}, environ)
            assert any(p.key.endswith(f".{name}") for p in literal.problems), (
                f"secret {name!r} written literally in the file was accepted")
            if setting.required:
                var = full.get(f"{name}_env") or setting.env
                empty_env = {k: v for k, v in environ.items() if k != var}
                missing = _resolve(cls, full, empty_env)
                assert missing.problems, f"required secret {name!r} missing from the environment " \
                                         "was accepted"
        elif setting.required:
            without = {k: v for k, v in full.items() if k != name}
            missing = _resolve(cls, without, environ)
            assert any(p.key.endswith(f".{name}") for p in missing.problems), (
                f"required setting {name!r} left out was accepted")


def _check_deliveries(answer: Sequence[Delivery], messages: Sequence[OutgoingMessage]) -> None:
    answer = list(answer)
    assert all(isinstance(d, Delivery) for d in answer), (
        f"send() returned {[type(d).__name__ for d in answer][:3]}..., not Delivery objects")
    want = [m.key for m in messages]
    got = [d.key for d in answer]
    missing = set(want) - set(got)
    extra = set(got) - set(want)
    dupes = {k for k, n in Counter(got).items() if n > 1}
    assert not (missing or extra or dupes) and len(got) == len(want), (
        f"send() of {len(want)} messages answered {len(got)} deliveries "
        f"(missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}, twice {sorted(dupes)[:3]})")
    failed = [(d.key, d.error) for d in answer if d.error is not None]
    assert not failed, f"{len(failed)} deliveries carry an error, e.g. {failed[0]}"
