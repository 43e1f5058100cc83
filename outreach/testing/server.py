"""A local HTTP server that plays a provider's API, for plugin tests, end-to-end tests and benchmarks.

Channel plugins are tested with the provider's real SDK pointed at this server instead of mocks, so
what is exercised is what runs in production: the SDK's own serialisation, headers, timeouts and the
way it raises. Each request is checked against the provider's published OpenAPI description (a
request the real API would refuse is a bug even when the fake accepts it), and the server can answer
with the failures a provider really produces (429, 5xx, an answer that never comes, a dropped
connection, an error that echoes the request's credentials) so a channel's error classification
and redaction are tested against real sockets.

A provider subclasses :class:`FakeProvider` and implements :meth:`FakeProvider.handle`::

    class FakeMailer(FakeProvider):
        def handle(self, request):
            self.sent.append(request.json())
            return Reply(202, {"X-Message-Id": "abc"})

    with FakeMailer(load_spec("mail.json")) as fake:
        fake.fail_next(status=429, headers={"Retry-After": "3"})
        ...point the SDK at fake.url...
        assert fake.spec_errors == []
"""

from __future__ import annotations

import copy
import json
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeProvider", "Hold", "RecordedRequest", "Reply", "load_spec"]


@dataclass
class RecordedRequest:
    """One request as the provider received it (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    #: ``time.monotonic()`` when the request was read, for rate and retry-timing assertions.
    received_at: float = 0.0

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, list[str]]:
        """The body parsed as ``application/x-www-form-urlencoded`` (every key maps to a list)."""
        return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)


@dataclass
class Reply:
    """What the provider answers. A dict or list body is sent as JSON."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | dict | list = b""

    def encode(self) -> tuple[dict[str, str], bytes]:
        """Headers (with Content-Type and Content-Length filled in) and the body as bytes."""
        headers = dict(self.headers)
        names = {k.lower() for k in headers}
        body = self.body
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
            if "content-type" not in names:
                headers["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode("utf-8")
            if "content-type" not in names:
                headers["Content-Type"] = "text/plain; charset=utf-8"
        headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
        headers["Content-Length"] = str(len(body))
        return headers, body


# --- specs -----------------------------------------------------------------------------------------

_SPECS: dict[tuple[str, str], dict] = {}
#: id(spec dict) -> (the dict, its built OpenAPI object, a lock). The dict is kept so its id stays
#: unique for as long as the entry lives.
_APPS: dict[int, tuple[dict, Any, threading.Lock]] = {}
_CACHE_LOCK = threading.Lock()

Patch = Callable[[dict], "dict | None"] | Mapping[str, Any]


def load_spec(path: str | Path, patch: Patch | None = None) -> dict:
    """Read an OpenAPI document (JSON) once per process, with an optional correction applied.

    ``patch`` corrects a published spec's known defects without editing the vendored file, so the
    file stays byte-identical to its source. It is either a mapping of JSON Pointers to replacement
    values (``{"/components/schemas/Foo/properties/bar": {"type": "object"}}``) or a callable that
    edits the document in place (or returns a new one). Callables are cached by identity, so pass a
    module-level function rather than a fresh lambda each time.

    The same dict is returned for the same arguments, and :class:`FakeProvider` builds the (slow)
    validator once per distinct dict, so starting many providers in a test run stays cheap.
    """
    resolved = str(Path(path).resolve())
    if patch is None:
        pkey = ""
    elif callable(patch):
        pkey = f"callable:{id(patch)}"
    else:
        pkey = "pointers:" + json.dumps(patch, sort_keys=True, default=str)
    with _CACHE_LOCK:
        cached = _SPECS.get((resolved, pkey))
        if cached is not None:
            return cached
    with open(resolved, encoding="utf-8") as fh:
        doc = json.load(fh)
    if callable(patch):
        doc = patch(doc) or doc
    elif patch:
        for pointer, value in patch.items():
            _set_pointer(doc, pointer, copy.deepcopy(value))
    with _CACHE_LOCK:
        if callable(patch):
            _PATCH_REFS.append(patch)  # kept alive, so its id is never reused by another function
        return _SPECS.setdefault((resolved, pkey), doc)


_PATCH_REFS: list[Any] = []


def _set_pointer(doc: dict, pointer: str, value: Any) -> None:
    if not pointer.startswith("/"):
        raise ValueError(f"a patch key must be a JSON Pointer starting with '/', got {pointer!r}")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]
    node: Any = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        if last not in node:
            raise KeyError(f"patch {pointer!r}: {last!r} does not exist in the spec")
        node[last] = value


def _openapi_for(spec: dict) -> tuple[Any, threading.Lock]:
    """The built ``openapi_core.OpenAPI`` for ``spec``, built once per process per spec dict."""
    with _CACHE_LOCK:
        entry = _APPS.get(id(spec))
        if entry is not None and entry[0] is spec:
            return entry[1], entry[2]
    from openapi_core import OpenAPI  # imported lazily: building it is only needed with a spec

    app = OpenAPI.from_dict(spec)
    lock = threading.Lock()
    with _CACHE_LOCK:
        entry = _APPS.setdefault(id(spec), (spec, app, lock))
        return entry[1], entry[2]


class _SpecRequest:
    """openapi-core's ``Request`` protocol over a :class:`RecordedRequest`.

    ``host_url`` is the spec's own server, not the fake's ``127.0.0.1:PORT``: the request is checked
    as if it had been sent to the real provider.
    """

    def __init__(self, host_url: str, recorded: RecordedRequest) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        self.host_url = host_url
        self.path = recorded.path
        self.method = recorded.method.lower()
        self.body = recorded.body or None
        self.content_type = recorded.headers.get("content-type", "").lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict([(k, v) for k, vs in recorded.query.items() for v in vs]),
            header=Headers(list(recorded.headers.items())),
        )


def _describe_error(exc: BaseException) -> str:
    """One line for an openapi-core error, naming the JSON paths of schema failures."""
    cause = exc.__cause__
    schema_errors = getattr(cause, "schema_errors", None) or getattr(exc, "schema_errors", None)
    if schema_errors:
        where = getattr(exc, "name", None)
        parts = []
        for err in schema_errors:
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
            parts.append(f"{path.lstrip('.') or '(root)'}: {err.message}")
        prefix = f"parameter {where}" if where else "body"
        return f"{prefix}: " + "; ".join(parts)
    text = str(exc)
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return text


def _server_url(spec: dict) -> str:
    servers = spec.get("servers") or [{"url": "http://localhost"}]
    parts = urlsplit(servers[0]["url"])
    return f"{parts.scheme}://{parts.netloc}"


# --- faults ----------------------------------------------------------------------------------------


class Hold:
    """An answer the provider keeps until :meth:`release` is called (see
    :meth:`FakeProvider.hold_next`)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        #: Set when the held request reached the provider.
        self.arrived = threading.Event()
        self._gate = threading.Event()
        #: True once the answer left because ``timeout`` passed, not because it was released.
        self.timed_out = False

    def release(self) -> None:
        """Let the answer go (any thread may call it)."""
        self._gate.set()

    def _wait(self, stopping: threading.Event) -> bool:
        """Wait for the release; False when the server is stopping."""
        deadline = time.monotonic() + self.timeout
        while not self._gate.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                self.timed_out = True
                return True
            if stopping.wait(min(left, 0.01)):
                return False
        return True


@dataclass
class _Fault:
    kind: str  # "fail", "slow", "drop", "hold", "echo"
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = b""
    seconds: float = 0.0
    after_handling: bool = False
    hold: Hold | None = None


# --- the server ------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections under benchmark concurrency, and a
    # dropped SYN costs the client a one-second retransmission.
    request_queue_size = 1024
    provider: "FakeProvider"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is what the slow faults are for; keep quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real provider APIs allow
    # An answer leaves in one segment, at once: a buffered writer flushed once per request, and no
    # Nagle delay. Otherwise the body waits for the ACK of the headers, which a client delays by
    # up to 40 ms (delayed ACK), and a keep-alive connection manages ~25 requests a second.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        split = urlsplit(self.path)
        recorded = RecordedRequest(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self._read_body(),
            received_at=time.monotonic(),
        )
        provider = self.server.provider
        answer = provider._respond(recorded)
        if answer is None:  # drop: close the connection with no answer at all
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        delay, reply, *held = answer  # a subclass's _respond may still answer (delay, reply)
        hold = held[0] if held else None
        if delay and provider._stopping.wait(delay):
            self.close_connection = True
            return
        if hold is not None:
            hold.arrived.set()
            if not hold._wait(provider._stopping):
                self.close_connection = True
                return
        headers, body = reply.encode()
        try:
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:  # the client gave up (timed out) before the answer came
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


class FakeProvider:
    """A provider's API on ``127.0.0.1``: subclasses implement :meth:`handle`.

    The base does threading, recording (:attr:`requests`), spec validation (:attr:`spec_errors`),
    latency and faults. Faults queued with :meth:`fail_next`, :meth:`slow_next` and :meth:`drop_next`
    are consumed one per request, in the order queued, before :meth:`handle` is called; when none is
    queued, :meth:`fault_rate` may draw one at random (seeded, so a soak test is repeatable).

    ``spec`` is an OpenAPI document (see :func:`load_spec`); ``validate=False`` skips checking
    requests against it, for throughput benchmarks. ``server_url`` is the spec server requests are
    checked as if sent to (default: the spec's first server).
    """

    def __init__(self, spec: dict | None = None, *, seed: int = 0, latency: float = 0.0,
                 validate: bool = True, server_url: str | None = None) -> None:
        self.spec = spec
        self.validate = validate and spec is not None
        self.latency = latency
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self.spec_errors: list[str] = []
        self._server_url = server_url or (_server_url(spec) if spec else "http://localhost")
        self._lock = threading.Lock()
        self._faults: deque[_Fault] = deque()
        self._random = random.Random(seed)
        self._rates: dict[str, Any] | None = None
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._app: Any = None
        self._app_lock: threading.Lock | None = None
        #: ``time.monotonic()`` of every request answered 429 by :meth:`enforce_rate`.
        self.rate_limited: list[float] = []
        self._bucket: list[float] | None = None  # [rate, capacity, tokens, last refill]
        self._bucket_retry_after: float | None = None
        if self.validate:
            assert spec is not None
            self._app, self._app_lock = _openapi_for(spec)

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "FakeProvider":
        """Bind a free port on 127.0.0.1 and serve in a daemon thread; sets :attr:`url`."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.provider = self
        self._httpd = httpd
        port = httpd.server_port  # the free port bound (HTTPServer reads it back)
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}:{port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port; answers still being delayed are abandoned."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> "FakeProvider":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # the provider's logic ----------------------------------------------------------------------
    def handle(self, request: RecordedRequest) -> Reply:
        """Answer one valid request: accept the message, record the delivery. Subclasses implement it."""
        raise NotImplementedError

    def spec_error_reply(self, request: RecordedRequest, errors: list[str]) -> Reply:
        """The answer to a request the spec rejects (override to match the provider's error shape)."""
        return Reply(400, body={"errors": [{"message": e} for e in errors]})

    def error_body(self, status: int, message: str) -> bytes | str | dict | list:
        """The body this provider sends with an error ``status`` (override with its real shape).

        Tests and :func:`outreach.testing.check_channel` pass it to :meth:`fail_next`, so a
        channel's error parsing meets what the provider really sends.
        """
        return {"errors": [{"message": message}]}

    # faults ------------------------------------------------------------------------------------
    def fail_next(self, count: int = 1, status: int = 503, headers: dict | None = None,
                  body: bytes | str | dict | list = b"") -> None:
        """Answer the next ``count`` requests with ``status`` instead of handling them."""
        with self._lock:
            for _ in range(count):
                self._faults.append(_Fault("fail", status=status, headers=dict(headers or {}),
                                           body=body))

    def slow_next(self, count: int = 1, seconds: float = 5.0) -> None:
        """Handle the next ``count`` requests (the message IS accepted) but answer ``seconds`` late.

        A client whose timeout is shorter gives up after the provider accepted: the outcome is
        unknown to it, which is exactly the case a channel must not report as transient.
        """
        with self._lock:
            for _ in range(count):
                self._faults.append(_Fault("slow", seconds=seconds))

    def hold_next(self, timeout: float = 5.0) -> Hold:
        """Handle the next request (the message IS accepted) but keep its answer until the
        returned :class:`Hold` is released, or ``timeout`` seconds pass.

        For checking that a call in flight leaves its caller free: the test releases the answer
        from the caller's event loop, which can only happen while the call is not blocking it
        (:attr:`Hold.timed_out` says whether it had to wait the whole ``timeout``).
        """
        hold = Hold(timeout)
        with self._lock:
            self._faults.append(_Fault("hold", hold=hold))
        return hold

    def echo_next(self, count: int = 1, status: int = 400) -> None:
        """Answer the next ``count`` requests with ``status`` and an error (:meth:`error_body`)
        that quotes every request header, ``Authorization`` included, as a verbose provider or a
        proxy in front of it may: what a channel stores or shows of it must hold no credential."""
        with self._lock:
            for _ in range(count):
                self._faults.append(_Fault("echo", status=status))

    def drop_next(self, count: int = 1, after_handling: bool = False) -> None:
        """Close the connection of the next ``count`` requests without answering.

        ``after_handling=True`` accepts the message first, so the provider did send it: the
        ambiguous case. Either way the client only sees a connection closed after it sent.
        """
        with self._lock:
            for _ in range(count):
                self._faults.append(_Fault("drop", after_handling=after_handling))

    def fault_rate(self, *, rate_429: float = 0.0, rate_503: float = 0.0, rate_slow: float = 0.0,
                   slow_seconds: float = 5.0, retry_after: float | None = 1.0) -> None:
        """Fail a random share of requests (seeded by ``seed``), for soak and performance tests.

        429s carry ``Retry-After: retry_after`` (written with ``:g``, so ``0.05`` stays sub-second
        for fast tests; real providers send whole seconds). Call with no arguments to turn off.
        """
        with self._lock:
            if not (rate_429 or rate_503 or rate_slow):
                self._rates = None
                return
            self._rates = {"429": rate_429, "503": rate_503, "slow": rate_slow,
                           "slow_seconds": slow_seconds, "retry_after": retry_after}

    def enforce_rate(self, rate: float | None, *, burst: float | None = None,
                     retry_after: float | None = 1.0) -> None:
        """Answer 429 (with :meth:`error_body` and ``Retry-After``) above ``rate`` requests a second.

        A token bucket, as providers meter: ``burst`` requests may come at once (default a tenth of
        a second's worth, at least one), then ``rate`` a second. Requests refused are timed in
        :attr:`rate_limited`. ``None`` turns it off.
        """
        with self._lock:
            if not rate:
                self._bucket = None
                return
            capacity = max(1.0, burst if burst is not None else rate / 10)
            self._bucket = [float(rate), capacity, capacity, time.monotonic()]
            self._bucket_retry_after = retry_after

    def _over_rate(self, now: float) -> bool:
        with self._lock:
            bucket = self._bucket
            if bucket is None:
                return False
            rate, capacity, tokens, last = bucket
            tokens = min(capacity, tokens + (now - last) * rate)
            bucket[3] = now
            if tokens >= 1.0:
                bucket[2] = tokens - 1.0
                return False
            bucket[2] = tokens
            self.rate_limited.append(now)
            return True

    def clear_faults(self) -> None:
        """Forget queued faults and random fault rates."""
        with self._lock:
            self._faults.clear()
            self._rates = None

    # checks ------------------------------------------------------------------------------------
    def assert_valid(self) -> None:
        """Raise AssertionError listing every request the spec rejected."""
        if self.spec_errors:
            raise AssertionError(f"{len(self.spec_errors)} request(s) do not match the provider's "
                                 "API description:\n" + "\n".join(self.spec_errors))

    def record_spec_error(self, request: RecordedRequest, message: str) -> None:
        """Record a rule of the provider's API the request breaks that its OpenAPI text cannot say.

        For :meth:`handle`: SendGrid, say, needs ``text/plain`` before ``text/html``. Recorded in
        :attr:`spec_errors`, so the test's ``spec_errors == []`` catches it too.
        """
        with self._lock:
            self.spec_errors.append(f"{request.method} {request.path}: {message}")

    def check_request(self, request: RecordedRequest) -> list[str]:
        """What is wrong with ``request`` according to the spec (empty when valid)."""
        if not self.validate:
            return []
        assert self._app is not None and self._app_lock is not None
        # openapi-core's objects are not documented as thread-safe; validation is milliseconds.
        with self._app_lock:
            try:
                return [_describe_error(e) for e in
                        self._app.iter_request_errors(_SpecRequest(self._server_url, request))]
            except Exception as exc:  # a validator crash is reported, not raised into the server
                return [f"validator failed: {type(exc).__name__}: {exc}"]

    # internals ---------------------------------------------------------------------------------
    def _next_fault(self) -> _Fault | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            rates = self._rates
            if rates is None:
                return None
            draw = self._random.random()
        if draw < rates["429"]:
            headers = {}
            if rates["retry_after"] is not None:
                headers["Retry-After"] = f"{rates['retry_after']:g}"
            return _Fault("fail", status=429, headers=headers)
        if draw < rates["429"] + rates["503"]:
            return _Fault("fail", status=503)
        if draw < rates["429"] + rates["503"] + rates["slow"]:
            return _Fault("slow", seconds=rates["slow_seconds"])
        return None

    def _respond(self, request: RecordedRequest) -> tuple[float, Reply, Hold | None] | None:
        """The reply, how long to delay it and what holds it, or None to drop the connection."""
        with self._lock:
            self.requests.append(request)
        errors = self.check_request(request)
        if errors:
            with self._lock:
                self.spec_errors.append(f"{request.method} {request.path}: " + "; ".join(errors))
        if self._bucket is not None and self._over_rate(request.received_at):
            headers = {}
            if self._bucket_retry_after is not None:
                headers["Retry-After"] = f"{self._bucket_retry_after:g}"
            return self.latency, Reply(429, headers, self.error_body(429, "Too Many Requests")), None
        fault = self._next_fault()
        if fault is not None and fault.kind == "fail":
            return self.latency, Reply(fault.status, fault.headers, fault.body), None
        if fault is not None and fault.kind == "echo":
            quoted = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
            return self.latency, Reply(fault.status, body=self.error_body(
                fault.status, f"request refused; it came with these headers: {quoted}")), None
        if fault is not None and fault.kind == "drop" and not fault.after_handling:
            return None
        if errors:
            reply = self.spec_error_reply(request, errors)
        else:
            try:
                reply = self.handle(request)
            except Exception as exc:  # a bug in a fake must show in the test, not hang the client
                reply = Reply(500, body={"errors": [{"message": f"fake provider crashed: "
                                                                f"{type(exc).__name__}: {exc}"}]})
                self.record_spec_error(request, f"handle() raised {type(exc).__name__}: {exc}")
        if fault is not None and fault.kind == "drop":
            return None
        delay = self.latency + (fault.seconds if fault is not None and fault.kind == "slow" else 0.0)
        return delay, reply, (fault.hold if fault is not None else None)
