"""outreach.testing: the fake provider server and the channel contract check, tested on themselves.

A tiny channel ("mini") speaking a tiny JSON API stands in for a real plugin, so these tests need no
provider SDK.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

import aiohttp
import pytest

from outreach.channel import (Channel, ChannelError, ConfigurationError, Delivery, OutgoingMessage,
                              PermanentError, TemplateField, TransientError, UnknownOutcomeError,
                              retry_after)
from outreach.settings import Setting
from outreach.testing import (FakeProvider, RecordedRequest, Reply, check_channel, closed_port_url,
                              load_spec, sample_message)

MINI_SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "Mini", "version": "1"},
    "servers": [{"url": "https://api.mini.example"}],
    "security": [{"bearer": []}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/v1/messages": {
            "post": {
                "parameters": [{"name": "dry_run", "in": "query", "required": False,
                                "schema": {"type": "boolean"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["messages"], "additionalProperties": False,
                    "properties": {"messages": {"type": "array", "maxItems": 50, "items": {
                        "type": "object", "required": ["to", "text", "ref"],
                        "properties": {"to": {"type": "string", "format": "email"},
                                       "text": {"type": "string", "minLength": 1},
                                       "ref": {"type": "string"}}}}}}}}},
                "responses": {"202": {"description": "accepted"}},
            },
        },
        "/v1/form": {
            "post": {
                "security": [],
                "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object", "properties": {"To": {"type": "string"}}}}}},
                "responses": {"200": {"description": "ok"}},
            },
        },
    },
}


@pytest.fixture(scope="module")
def mini_spec_path(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("spec") / "mini.json"
    path.write_text(json.dumps(MINI_SPEC))
    return path


class FakeMini(FakeProvider):
    """The mini API: accepts messages, answers one id per message."""

    def __init__(self, spec: dict | None, **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self.accepted: list[dict] = []
        self._lock2 = threading.Lock()

    def handle(self, request: RecordedRequest) -> Reply:
        if request.path == "/v1/form":
            return Reply(200, body={"form": request.form()})
        with self._lock2:
            ids = []
            for message in request.json()["messages"]:
                self.accepted.append(message)
                ids.append({"ref": message["ref"], "id": f"m{len(self.accepted)}"})
        return Reply(202, body={"ids": ids})


@pytest.fixture
def mini(mini_spec_path) -> FakeMini:
    with FakeMini(load_spec(mini_spec_path)) as fake:
        yield fake


def post(url: str, body: Any = None, *, token: str | None = "t0ken-abcdef", timeout: float = 5,
         headers: dict[str, str] | None = None, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {}),
        **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


GOOD = {"messages": [{"to": "ada@example.com", "text": "hi", "ref": "k1"}]}


# --- the server ------------------------------------------------------------------------------------

def test_records_every_request(mini):
    status, headers, body = post(f"{mini.url}/v1/messages?dry_run=false&dry_run=true", GOOD,
                                 headers={"X-Trace": "abc"})
    assert status == 202 and json.loads(body) == {"ids": [{"ref": "k1", "id": "m1"}]}
    assert headers["Content-Type"] == "application/json"
    [req] = mini.requests
    assert (req.method, req.path, req.query) == ("POST", "/v1/messages",
                                                 {"dry_run": ["false", "true"]})
    assert req.headers["x-trace"] == "abc" and req.headers["authorization"] == "Bearer t0ken-abcdef"
    assert req.json() == GOOD and req.received_at > 0

    status, _, body = post(f"{mini.url}/v1/form", raw=b"To=%2B374&Body=&To=x", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and json.loads(body) == {"form": {"To": ["+374", "x"], "Body": [""]}}
    assert mini.spec_errors == []


def test_reply_bodies_are_encoded():
    assert Reply(body={"a": 1}).encode() == (
        {"Content-Type": "application/json", "Content-Length": "8"}, b'{"a": 1}')
    assert Reply(body="Բ").encode()[1] == "Բ".encode()
    headers, body = Reply(201, {"Content-Type": "text/xml"}, b"<x/>").encode()
    assert headers == {"Content-Type": "text/xml", "Content-Length": "4"} and body == b"<x/>"


def test_requests_the_spec_rejects_are_answered_400_and_recorded(mini):
    bad = {"messages": [{"to": "not-an-address", "text": "", "ref": "k1"}], "extra": 1}
    status, _, body = post(f"{mini.url}/v1/messages", bad)
    assert status == 400 and json.loads(body)["errors"]
    assert len(mini.spec_errors) == 1
    line = mini.spec_errors[0]
    assert line.startswith("POST /v1/messages: body: ")
    assert "messages[0].to: 'not-an-address' is not a 'email'" in line
    assert "messages[0].text" in line and "extra" in line
    assert mini.accepted == []  # handle() never sees an invalid request

    post(f"{mini.url}/v1/nowhere", GOOD)
    post(f"{mini.url}/v1/messages", GOOD, token=None)
    post(f"{mini.url}/v1/messages", GOOD, headers={"Content-Type": "text/plain"})
    assert "Path not found" in mini.spec_errors[1]
    assert "Security" in mini.spec_errors[2]
    assert "text/plain" in mini.spec_errors[3]
    with pytest.raises(AssertionError, match="4 request.s. do not match"):
        mini.assert_valid()


def test_validation_can_be_turned_off(mini_spec_path):
    with FakeMini(load_spec(mini_spec_path), validate=False) as fake:
        status, _, _ = post(f"{fake.url}/v1/messages", {"messages": [
            {"to": "nobody", "text": "", "ref": "1"}]})
        assert status == 202 and fake.spec_errors == []
        fake.assert_valid()


def test_load_spec_is_cached_and_patched(mini_spec_path):
    assert load_spec(mini_spec_path) is load_spec(str(mini_spec_path))
    pointer = "/paths/~1v1~1messages/post/requestBody/content/application~1json/schema/properties/messages/maxItems"
    patched = load_spec(mini_spec_path, {pointer: 1000})
    assert patched is load_spec(mini_spec_path, {pointer: 1000})
    assert patched["paths"]["/v1/messages"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["messages"]["maxItems"] == 1000
    assert load_spec(mini_spec_path)["paths"]["/v1/messages"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["messages"]["maxItems"] == 50
    with pytest.raises(KeyError, match="nope"):
        load_spec(mini_spec_path, {"/paths/nope/x": 1})

    def retitle(doc: dict) -> None:
        doc["info"]["title"] = "Patched"

    assert load_spec(mini_spec_path, retitle)["info"]["title"] == "Patched"


def test_fail_next_answers_in_order_then_handles(mini):
    mini.fail_next(2, status=429, headers={"Retry-After": "3"}, body={"errors": [{"message": "slow"}]})
    mini.fail_next(status=500)
    answers = [post(f"{mini.url}/v1/messages", GOOD) for _ in range(4)]
    assert [a[0] for a in answers] == [429, 429, 500, 202]
    assert answers[0][1]["Retry-After"] == "3" and json.loads(answers[0][2])["errors"]
    assert len(mini.accepted) == 1 and len(mini.requests) == 4


def test_slow_next_accepts_then_answers_late(mini):
    mini.slow_next(seconds=2)
    start = time.monotonic()
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        post(f"{mini.url}/v1/messages", GOOD, timeout=0.3)
    assert time.monotonic() - start < 1.5
    assert len(mini.accepted) == 1  # the provider did take the message
    assert post(f"{mini.url}/v1/messages", GOOD)[0] == 202


@pytest.mark.parametrize("after_handling, accepted", [(False, 0), (True, 1)])
def test_drop_next_closes_without_answer(mini, after_handling, accepted):
    mini.drop_next(after_handling=after_handling)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        post(f"{mini.url}/v1/messages", GOOD)
    assert len(mini.accepted) == accepted
    assert post(f"{mini.url}/v1/messages", GOOD)[0] == 202


def _statuses(spec_path, seed: int) -> list[int]:
    with FakeMini(load_spec(spec_path), seed=seed) as fake:
        fake.fault_rate(rate_429=0.3, rate_503=0.2, retry_after=0.05)
        statuses = [post(f"{fake.url}/v1/messages", GOOD)[0] for _ in range(40)]
        fake.fault_rate()
        assert post(f"{fake.url}/v1/messages", GOOD)[0] == 202
        return statuses


def test_fault_rate_is_random_but_seeded(mini_spec_path, mini):
    first = _statuses(mini_spec_path, seed=7)
    assert first == _statuses(mini_spec_path, seed=7)
    assert first != _statuses(mini_spec_path, seed=8)
    assert {429, 503, 202} == set(first)
    mini.fault_rate(rate_429=1.0, retry_after=0.05)
    assert post(f"{mini.url}/v1/messages", GOOD)[1]["Retry-After"] == "0.05"


def test_latency_delays_every_answer(mini_spec_path):
    with FakeMini(load_spec(mini_spec_path), latency=0.2) as fake:
        start = time.monotonic()
        post(f"{fake.url}/v1/messages", GOOD)
        assert time.monotonic() - start >= 0.2


def test_concurrent_requests_are_all_recorded(mini):
    threads = [threading.Thread(target=post, args=(f"{mini.url}/v1/messages", GOOD))
               for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(mini.requests) == 20 and len(mini.accepted) == 20 and mini.spec_errors == []


def test_stop_is_prompt_with_an_answer_pending(mini_spec_path):
    fake = FakeMini(load_spec(mini_spec_path)).start()
    fake.slow_next(seconds=30)
    client = threading.Thread(target=lambda: pytest.raises(Exception, post,
                                                           f"{fake.url}/v1/messages", GOOD))
    client.start()
    while not fake.requests:
        time.sleep(0.01)
    start = time.monotonic()
    fake.stop()
    assert time.monotonic() - start < 2
    client.join(5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(fake_port(fake))), timeout=1).close()


def fake_port(fake: FakeProvider) -> str:
    return fake.url.rsplit(":", 1)[1]


def test_handle_crash_is_a_500_and_a_recorded_error(mini):
    mini.handle = lambda request: 1 / 0
    status, _, body = post(f"{mini.url}/v1/messages", GOOD)
    assert status == 500 and "ZeroDivisionError" in body.decode()
    assert "handle() raised ZeroDivisionError" in mini.spec_errors[0]


def test_closed_port_url_refuses():
    url = closed_port_url()
    with pytest.raises(urllib.error.URLError) as info:
        post(f"{url}/v1/messages", GOOD)
    assert isinstance(info.value.reason, ConnectionRefusedError)


def test_sample_message_takes_overrides():
    message = sample_message(address="+37491234567", content={"body": "Բարև"}, category="marketing")
    assert (message.address, message.content, message.category) == (
        "+37491234567", {"body": "Բարև"}, "marketing")
    assert sample_message().key == "welcome:c1" and sample_message().content["subject"]


# --- the contract check ----------------------------------------------------------------------------

class MiniChannel(Channel):
    """A well-behaved channel for the mini API: batches of 50, errors classified as meant."""

    type_name = "mini"
    address = "email"
    batch_size = 50
    settings = {
        "token": Setting("str", required=True, secret=True, env="MINI_TOKEN", help="API token"),
        "api_base": Setting("str", default="https://api.mini.example", help="API base URL"),
        "sender": Setting("str", required=True, help="who it is from"),
    }
    template_fields = {"body": TemplateField(required=True)}

    def send(self, messages: Sequence[OutgoingMessage]) -> Sequence[Delivery]:
        body = {"messages": [{"to": m.address, "text": m.content.get("body", "x"), "ref": m.key}
                             for m in messages]}
        req = urllib.request.Request(
            f"{self.config['api_base']}/v1/messages", data=json.dumps(body).encode(),
            method="POST", headers={"Content-Type": "application/json",
                                    "Authorization": f"Bearer {self.config['token'].reveal()}"})
        try:
            with urllib.request.urlopen(req, timeout=self.config["timeout"]) as resp:
                ids = json.loads(resp.read())["ids"]
        except urllib.error.HTTPError as err:
            return self.http_error(err.code, err.read().decode(), err.headers)
        except urllib.error.URLError as err:
            raise TransientError(f"could not connect: {err.reason}") from err
        except (OSError, http.client.HTTPException) as err:
            raise UnknownOutcomeError(f"no answer after sending: {err}") from err
        return [Delivery(i["ref"], provider_id=i["id"]) for i in ids]

    def http_error(self, status: int, text: str, headers: Any) -> Any:
        if status == 429:
            raise TransientError("rate limited", code=429, retry_after=retry_after(headers))
        if status >= 500:
            raise TransientError(f"server error {status}", code=status)
        if status in (401, 403):
            raise ConfigurationError(f"the token was refused ({status})", code=status)
        raise PermanentError(f"refused: {self.redact(text[:2000])}", code=status)


class AsyncMiniChannel(MiniChannel):
    """The mini API through aiohttp, one session per event loop, closed by aclose()."""

    type_name = "async-mini"

    def __init__(self, name: str, settings: Any) -> None:
        super().__init__(name, settings)
        self.sessions: dict[Any, aiohttp.ClientSession] = {}

    async def send_async(self, messages: Sequence[OutgoingMessage]) -> Sequence[Delivery]:
        loop = asyncio.get_running_loop()
        session = self.sessions.get(loop)
        if session is None:
            session = self.sessions[loop] = aiohttp.ClientSession()
        body = {"messages": [{"to": m.address, "text": m.content.get("body", "x"), "ref": m.key}
                             for m in messages]}
        timeout = aiohttp.ClientTimeout(total=None, connect=self.config["timeout"],
                                        sock_read=self.config["timeout"])
        try:
            async with session.post(f"{self.config['api_base']}/v1/messages", json=body,
                                    timeout=timeout, headers={
                                        "Authorization": f"Bearer {self.config['token'].reveal()}"
                                    }) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    return self.http_error(resp.status, text, resp.headers)
                ids = json.loads(text)["ids"]
        except aiohttp.ClientConnectorError as err:
            raise TransientError(f"could not connect: {err.os_error.strerror}") from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise UnknownOutcomeError(f"no answer after sending: {type(err).__name__}") from None
        return [Delivery(i["ref"], provider_id=i["id"]) for i in ids]

    async def aclose(self) -> None:
        session = self.sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    def close(self) -> None:
        super().close()
        self.sessions.clear()


CONTRACT = dict(settings={"sender": "shop@example.com"}, environ={"MINI_TOKEN": "t0ken-abcdef"},
                url_setting="api_base", timeout=0.3)


def test_a_good_channel_passes_the_contract(mini):
    report = check_channel(MiniChannel, provider=mini, check_entry_point=False, **CONTRACT)
    assert report.failures == [] and report.skipped == []
    assert report.passed == [
        "class", "settings", "sample messages", "send one", "send batch", "concurrent sends",
        "429 -> transient with retry_after", "503 -> transient", "400 -> permanent",
        "401 -> configuration", "403 -> configuration", "slow answer -> unknown",
        "dropped after handling -> unknown", "connection refused -> transient",
        "echoed credentials redacted", "secrets hidden", "spec"]
    assert max(len(mini.requests[i].json()["messages"]) for i in range(len(mini.requests))) == 50


def test_a_good_asyncio_channel_passes_the_contract_and_its_own_checks(mini):
    report = check_channel(AsyncMiniChannel, provider=mini, check_entry_point=False, **CONTRACT)
    assert {"concurrent sends on one event loop", "send_async leaves the event loop free",
            "aclose closes what it opened"} <= set(report.passed)


class BlockingAsyncMini(MiniChannel):
    """send_async in name only: it makes a blocking call on the event loop."""

    type_name = "blocking-mini"

    async def send_async(self, messages: Sequence[OutgoingMessage]) -> Sequence[Delivery]:
        return MiniChannel.send(self, messages)


class LeakyMini(AsyncMiniChannel):
    """Forgets to close its HTTP session."""

    type_name = "leaky-mini"

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("channel, failure", [
    (BlockingAsyncMini, "send_async leaves the event loop free: send_async blocked the event loop "
                        "while its request was in flight"),
    (LeakyMini, "aclose closes what it opened: aclose() left open what send_async() opened on "
                "its loop: Unclosed client session"),
], ids=["blocking", "leaky"])
def test_the_contract_catches_a_blocked_loop_and_an_unclosed_session(mini, channel, failure):
    with pytest.raises(AssertionError) as info:
        check_channel(channel, provider=mini, check_entry_point=False, **CONTRACT)
    assert failure in str(info.value)
    assert str(info.value).count("\n- ") == 1  # that one breach, nothing else


class TitledChannel(MiniChannel):
    """Declares its own template fields (no subject, no body): the samples must write them."""

    type_name = "titled"
    template_fields = {"title": TemplateField(required=True), "text": TemplateField(required=True)}

    def send(self, messages: Sequence[OutgoingMessage]) -> Sequence[Delivery]:
        for m in messages:
            assert set(m.content) == {"title", "text"}, m.content
        return super().send([OutgoingMessage(**{**m.__dict__, "content": {
            "body": f"{m.content['title']}: {m.content['text']}"}}) for m in messages])


def test_sample_messages_follow_the_channels_template_fields(mini):
    report = check_channel(TitledChannel, provider=mini, check_entry_point=False, **CONTRACT)
    assert "sample messages" in report.passed and "send batch" in report.passed
    assert mini.accepted[0]["text"] == ("Title for Ada: thank you for joining.: "
                                        "Text for Ada: thank you for joining.")


def test_the_spec_check_is_skipped_not_passed_without_a_spec():
    with FakeMini(None) as fake:
        report = check_channel(MiniChannel, provider=fake, check_entry_point=False, **CONTRACT)
    assert "spec" not in report.passed
    assert report.skipped == ["spec (the provider has no API description, or validate=False)"]


def test_the_contract_requires_the_entry_point(mini):
    with pytest.raises(AssertionError) as info:
        check_channel(MiniChannel, provider=mini, **CONTRACT)
    assert "entry point: no channel type 'mini' is registered" in str(info.value)
    assert "[project.entry-points.outreach]" in str(info.value)


class SloppyChannel(MiniChannel):
    """Everything a channel must not do: misclassify, leak the token, log it, show what the
    provider echoed."""

    type_name = "sloppy"

    def http_error(self, status: int, text: str, headers: Any) -> Any:
        token = self.config["token"].reveal()
        if status == 429:
            raise TransientError("rate limited", code=429)  # drops Retry-After
        import logging
        logging.getLogger("sloppy").debug("failed with token %s", token)
        # 503 is not permanent, 401 is the deployment's fault, and the echo is not redacted.
        raise PermanentError(f"failed with token {token}: {text}", code=status)


def test_the_contract_names_every_breach(mini):
    with pytest.raises(AssertionError) as info:
        check_channel(SloppyChannel, provider=mini, check_entry_point=False, **CONTRACT)
    text = str(info.value)
    assert "SloppyChannel breaks the channel contract" in text
    assert "429 -> transient with retry_after: a 429 with Retry-After: 7 gave retry_after=None" in text
    assert "503 -> transient: raised PermanentError(" in text and "expected TransientError" in text
    assert "401 -> configuration: raised PermanentError(" in text
    assert "expected ConfigurationError" in text
    assert "echoed credentials redacted: the provider's error quoted the request's Authorization" \
        in text
    assert "secrets hidden: a secret value shows in: error PermanentError, log" in text
    assert "send one" in text.split("(passed:")[1]


def test_the_contract_refuses_short_secrets(mini):
    with pytest.raises(ValueError, match="at least 8 characters"):
        check_channel(MiniChannel, provider=mini, check_entry_point=False,
                      **{**CONTRACT, "environ": {"MINI_TOKEN": "abc"}})


def test_channel_errors_are_channel_errors():
    # check_channel relies on the four classes sharing ChannelError, and the dispatcher on a
    # ConfigurationError never being taken for a message's failure.
    assert all(issubclass(c, ChannelError)
               for c in (TransientError, PermanentError, UnknownOutcomeError, ConfigurationError))
    assert not issubclass(ConfigurationError, PermanentError)
