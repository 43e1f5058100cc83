"""The provider webhooks of ``outreach serve`` on a real server on loopback: requests signed the
way SendGrid (ECDSA P-256) and Twilio (the SDK's own algorithm) sign them, verified by the SDKs'
own helpers in the server, recorded in the ledger on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from typing import Any, Sequence

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select, text

from outreach.ledger import SETTLED_BY_EVIDENCE, Ledger, delivery_events
from outreach.serve.context import ServeContext, ServeSettings
from outreach.serve import tokens
from outreach.serve.app import AccessLogger, create_app
from outreach.serve.twilio_callbacks import status_callback_url
from outreach.testing.webhooks import (SendGridSigner, sendgrid_body, sendgrid_event,
                                       twilio_request)

PUBLIC = "https://hooks.example.com/outreach"
TOKEN = "twilio-auth-token-for-tests"
SECRET = b"token-secret-for-tests-0123456789"
ANI = "c1,Ani,Petrosyan,ani@example.com,+18185550101,America/Los_Angeles,hy,yes,yes,"
TALIN = "c2,Talin,Kazarian,talin@example.com,+18185550102,America/Los_Angeles,en,yes,yes,"


def sent_project(p, channels: Sequence[str] = ("email", "sms")):
    """Ani and Talin each thanked on every channel of ``channels`` (outbox channels)."""
    p.customers(ANI + "\n" + TALIN)
    p.events("e1,c1,purchase,2026-11-24T10:00:00-08:00\ne2,c2,purchase,2026-11-24T10:00:00-08:00")
    for ch in channels:
        table = ('[email]\nsubject = "Thanks"\nbody = "Thanks!"\n' if ch == "email"
                 else '[sms]\nbody = "Thanks!"\n')
        p.campaign(f"thanks_{ch}", f'rule = "thank_you"\nchannels = ["{ch}"]\n'
                   f'category = "transactional"\n' + table)
    p.run("2026-11-24T12:00")
    return {(m["customer_id"], m["channel"]): m["key"] for m in p.messages()}


class Hooks:
    """The provider routes of a project served by a real aiohttp server on 127.0.0.1."""

    def __init__(self, p, signer: SendGridSigner | None = None, **settings: Any) -> None:
        self.p = p
        self.signer = signer or SendGridSigner()
        self.settings = ServeSettings(public_url=PUBLIC, token_secret=SECRET,
                                      sendgrid_verification_key=self.signer.public_key,
                                      twilio_auth_token=TOKEN, **settings)

    def post(self, requests: Sequence[tuple[str, bytes, dict[str, str]]],
             ledger: Ledger | None = None) -> list[tuple[int, str]]:
        led = ledger or self.p.ledger()
        ctx = ServeContext(self.p.load(), led, self.settings)

        async def go() -> list[tuple[int, str]]:
            app = create_app(ctx)
            runner = web.AppRunner(app, access_log_class=AccessLogger)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            out = []
            try:
                async with aiohttp.ClientSession() as http:
                    for path, body, headers in requests:
                        async with http.post(f"http://127.0.0.1:{port}{path}", data=body,
                                             headers=headers) as r:
                            out.append((r.status, await r.text()))
            finally:
                await runner.cleanup()
            return out

        try:
            return asyncio.run(go())
        finally:
            if ledger is None:
                led.close()

    def sendgrid(self, events, timestamp: int | None = None):
        body = sendgrid_body(events)
        return ("/webhooks/sendgrid", body, self.signer.headers(body, timestamp))

    def twilio(self, path: str, form: dict[str, str]):
        body, headers = twilio_request(TOKEN, PUBLIC + path, form)
        return (path, body, headers)

    def status(self, key: str, sid: str, status: str, **extra: str):
        url = status_callback_url(self.settings, "c1", key)
        return self.twilio(url[len(PUBLIC):], {"MessageSid": sid, "MessageStatus": status,
                                               "To": "+18185550101", **extra})

    def inbound(self, body: str, sid: str, number: str = "+18185550101", **extra: str):
        return self.twilio("/webhooks/twilio/inbound", {"MessageSid": sid, "From": number,
                                                        "To": "+15550001111", "Body": body,
                                                        **extra})


def events_of(p) -> list[dict[str, Any]]:
    led = p.ledger()
    try:
        with led.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(delivery_events).order_by(delivery_events.c.id))]
    finally:
        led.close()


def suppressed(p) -> dict[str, str]:
    led = p.ledger()
    try:
        return {r["address"]: r["source"] for r in led.suppression_list()}
    finally:
        led.close()


def consent(p, customer: str) -> list[tuple[str, str, str]]:
    led = p.ledger()
    try:
        return [(c["consent"], c["action"], c["source"]) for c in led.consent_history(customer)]
    finally:
        led.close()


def set_state(p, key: str, state: str) -> None:
    led = p.ledger()
    try:
        with led.engine.begin() as conn:
            conn.execute(text("UPDATE messages SET state = :s, error = 'no answer' WHERE key = :k"),
                         {"s": state, "k": key})
    finally:
        led.close()


# ---------------------------------------------------------------------------------- SendGrid
def test_sendgrid_events_are_recorded_once_and_act(project):
    keys = sent_project(project)
    hooks = Hooks(project)
    ani, talin = keys["c1", "email"], keys["c2", "email"]
    batch = [sendgrid_event("processed", ani, "ev-1"),
             sendgrid_event("delivered", ani, "ev-2"),
             sendgrid_event("open", ani, "ev-3", sg_machine_open=True),
             sendgrid_event("click", ani, "ev-4", url="https://bakery.example/menu"),
             sendgrid_event("unsubscribe", ani, "ev-5"),
             sendgrid_event("bounce", talin, "ev-6", email="Talin@Example.com", type="bounce",
                            status="5.1.1", reason="no such user"),
             sendgrid_event("delivered", "no-such-key", "ev-7", email="x@example.com")]
    request = hooks.sendgrid(batch)
    (status, body), (again, body2) = hooks.post([request, request])  # SendGrid redelivers
    assert status == 200 and again == 200
    assert json.loads(body) == {"received": 7, "new": 7, "duplicates": 0, "unmatched": 1,
                                "settled": 0, "consent_changes": 1}
    assert json.loads(body2)["new"] == 0 and json.loads(body2)["consent_changes"] == 0
    rows = events_of(project)
    assert [(r["message_key"], r["kind"]) for r in rows] == [
        (ani, "processed"), (ani, "delivered"), (ani, "open"), (ani, "click"),
        (ani, "unsubscribe"), (talin, "bounce"), (None, "delivered")]
    assert rows[2]["machine_open"] == 1 and rows[1]["machine_open"] == 0
    assert rows[3]["detail"] == "https://bakery.example/menu"
    assert rows[5]["detail"] == "bounce 5.1.1 no such user"
    assert rows[6]["detail"] == "unmatched key no-such-key"
    assert suppressed(project) == {"talin@example.com": "bounce"}
    assert consent(project, "c1") == [("email", "withdrawn", "sendgrid")]


def test_spam_reports_and_invalid_drops_suppress_and_resubscribe_grants(project):
    keys = sent_project(project, ("email",))
    hooks = Hooks(project)
    ani, talin = keys["c1", "email"], keys["c2", "email"]
    (status, _), = hooks.post([hooks.sendgrid([
        sendgrid_event("spamreport", ani, "s-1"),
        sendgrid_event("dropped", talin, "s-2", email="talin@example.com", reason="Invalid"),
        sendgrid_event("dropped", talin, "s-3", email="other@example.com",
                       reason="Invalid SMTPAPI header"),
        sendgrid_event("group_unsubscribe", talin, "s-4", asm_group_id=7),
        sendgrid_event("group_resubscribe", talin, "s-5", asm_group_id=7)])])
    assert status == 200
    assert suppressed(project) == {"ani@example.com": "complaint", "talin@example.com": "bounce"}
    assert consent(project, "c2") == [("email", "withdrawn", "sendgrid"),
                                      ("email", "granted", "sendgrid")]


def test_an_unknown_outcome_is_settled_by_a_provider_event(project):
    keys = sent_project(project)
    set_state(project, keys["c1", "email"], "unknown")
    set_state(project, keys["c2", "email"], "unknown")
    set_state(project, keys["c1", "sms"], "unknown")
    hooks = Hooks(project)
    out = hooks.post([hooks.sendgrid([sendgrid_event("delivered", keys["c1", "email"], "d-1"),
                                      sendgrid_event("open", keys["c1", "email"], "d-2")]),
                      hooks.status(keys["c1", "sms"], "SM1", "delivered")])
    assert [s for s, _ in out] == [200, 204]
    by_key = {m["key"]: m for m in project.messages()}
    assert by_key[keys["c1", "email"]]["state"] == "sent"
    assert by_key[keys["c1", "email"]]["error"].startswith(SETTLED_BY_EVIDENCE)
    assert "sendgrid delivered (d-1)" in by_key[keys["c1", "email"]]["error"]
    assert by_key[keys["c1", "sms"]]["state"] == "sent"
    assert by_key[keys["c2", "email"]]["state"] == "unknown"  # no evidence: still the operator's
    assert [r["settled"] for r in events_of(project)] == [1, 0, 1]
    status = project.cli("status", "--json")
    assert status.code == 0, status.stderr
    assert json.loads(status.stdout)["unknown_outcomes"] == {"settled_by_evidence": 2,
                                                          "need_an_operator": 1}
    assert ("unknown outcomes: 2 settled as sent by provider evidence, 1 still need an operator"
            in project.cli("status").stdout)
    history = project.cli("history", "--customer", "c1", "--json", "--no-render")
    deliveries = {m["key"]: [d["kind"] for d in m["deliveries"]]
                  for m in json.loads(history.stdout)["messages"]}
    assert deliveries == {keys["c1", "email"]: ["delivered", "open"],
                          keys["c1", "sms"]: ["delivered"]}
    shown = project.cli("history", "--customer", "c1", "--no-render").stdout
    assert "sendgrid delivered" in shown and "settled an unknown outcome" in shown


@pytest.mark.parametrize("case", ["missing", "forged", "stale", "other key", "body changed"])
def test_a_sendgrid_request_not_signed_by_the_key_is_refused(sqlite_project, case):
    keys = sent_project(sqlite_project, ("email",))
    hooks = Hooks(sqlite_project)
    events = [sendgrid_event("bounce", keys["c1", "email"], "b-1", type="bounce")]
    path, body, headers = hooks.sendgrid(events)
    if case == "missing":
        headers = {"Content-Type": "application/json"}
    elif case == "forged":
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "MEUCIQ" + "A" * 90
    elif case == "stale":
        path, body, headers = hooks.sendgrid(events, timestamp=int(time.time()) - 301)
    elif case == "other key":
        body = sendgrid_body(events)
        headers = SendGridSigner().headers(body)
    else:
        body = body.replace(b"bounce", b"deliver", 1)
    (status, reason), = hooks.post([(path, body, headers)])
    assert status == 403, reason
    assert events_of(sqlite_project) == [] and suppressed(sqlite_project) == {}


@pytest.mark.parametrize("body, reason", [
    (b"[{]", "not JSON"), (b'{"event": "open"}', "JSON array"), (b"[1]", "event 0 is not"),
    (b'[{"event": "open"}]', "event 0 has no sg_event_id"), (b"\xff[]", "not UTF-8")])
def test_a_malformed_sendgrid_body_is_400_with_a_reason(sqlite_project, body, reason):
    hooks = Hooks(sqlite_project)
    (status, text_), = hooks.post([("/webhooks/sendgrid", body, hooks.signer.headers(body))])
    assert status == 400 and reason in text_
    assert events_of(sqlite_project) == []


def test_a_body_over_the_limit_is_413(sqlite_project):
    hooks = Hooks(sqlite_project, max_body=2000)
    big = hooks.sendgrid([sendgrid_event("open", None, f"o-{i}") for i in range(40)])
    small = hooks.sendgrid([sendgrid_event("open", None, "o-x")])

    async def chunked():  # no Content-Length: the limit holds while reading
        for part in (big[1][:1000], big[1][1000:]):
            yield part

    led = sqlite_project.ledger()
    try:
        out = hooks.post([big, small], ledger=led)
    finally:
        led.close()
    assert [s for s, _ in out] == [413, 200]
    assert len(big[1]) > 2000

    settings = hooks.settings
    ctx = ServeContext(sqlite_project.load(), sqlite_project.ledger(), settings)

    async def go():
        app = create_app(ctx)
        runner = web.AppRunner(app, access_log_class=AccessLogger)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"http://127.0.0.1:{port}/webhooks/sendgrid",
                                     data=chunked(), headers=big[2]) as r:
                    return r.status
        finally:
            await runner.cleanup()
            ctx.ledger.close()

    assert asyncio.run(go()) == 413
    assert [r["provider_event_id"] for r in events_of(sqlite_project)] == ["o-x"]


# ---------------------------------------------------------------------------------- a ledger outage
class Gate:
    """A TCP forwarder on loopback to PostgreSQL that can be closed (the ledger unreachable)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open = True
        self.pairs: list[socket.socket] = []
        self.server.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.pairs += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open = False
        for s in self.pairs:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.pairs.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.server.close()


@pytest.mark.postgres
def test_a_ledger_outage_is_503_and_the_retry_loses_nothing(tmp_path, pg_url):
    from urllib.parse import urlsplit

    from outreach.testing.project import Project

    parts = urlsplit(pg_url)
    gate = Gate((parts.hostname, parts.port or 5432))
    try:
        gated = pg_url.replace(f"{parts.hostname}:{parts.port or 5432}",
                               f"127.0.0.1:{gate.port}")
        p = Project(tmp_path / "shop", gated)
        keys = sent_project(p, ("email",))
        hooks = Hooks(p)
        request = hooks.sendgrid([sendgrid_event("bounce", keys["c1", "email"], "o-1",
                                                 type="bounce"),
                                  sendgrid_event("unsubscribe", keys["c2", "email"], "o-2")])
        led = p.ledger()
        gate.cut()
        try:
            (status, reason), = hooks.post([request], ledger=led)
            assert status == 503, reason
            gate.restore()
            (status, _), = hooks.post([request], ledger=led)  # SendGrid retries
            assert status == 200
        finally:
            led.close()
        assert [r["provider_event_id"] for r in events_of(p)] == ["o-1", "o-2"]
        assert suppressed(p) == {"ani@example.com": "bounce"}
        assert consent(p, "c2") == [("email", "withdrawn", "sendgrid")]
    finally:
        gate.close()


# ---------------------------------------------------------------------------------- Twilio status
def test_a_twilio_message_carries_its_signed_callback_and_its_status_comes_back(project):
    """End to end: `outreach run` sends through the real Twilio channel to FakeTwilio with
    [serve]; the status_callback Twilio was given, signed by Twilio's algorithm, records the
    delivery of that very message and settles it after a crash left its outcome unknown."""
    from outreach_twilio.testing import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilio

    with FakeTwilio() as twilio:
        project.environ.update(OUTREACH_TOKEN_SECRET=SECRET.decode(),
                               TWILIO_ACCOUNT_SID=TEST_ACCOUNT_SID,
                               TWILIO_AUTH_TOKEN=TEST_AUTH_TOKEN)
        project.configure(
            extra=f'[serve]\npublic_url = "{PUBLIC}"\n',
            channels=f'[channels.sms]\nplugin = "twilio"\nfrom_number = "+15005550006"\n'
                     f'api_base = "{twilio.url}"\ntimeout = 5\n')
        keys = sent_project(project, ("sms",))
        sent = {m.to: m for m in twilio.messages}
    ani = keys["c1", "sms"]
    url = sent["+18185550101"].status_callback
    assert url.startswith(PUBLIC + "/webhooks/twilio/status/")
    assert tokens.read(SECRET, url.rsplit("/", 1)[1], tokens.STATUS).key == ani
    set_state(project, ani, "unknown")  # as recovery leaves a message handed over before a crash
    hooks = Hooks(project)
    hooks.settings = ServeSettings(public_url=PUBLIC, token_secret=SECRET,
                                   twilio_auth_token=TEST_AUTH_TOKEN)
    form = {"MessageSid": sent["+18185550101"].sid, "MessageStatus": "delivered",
            "To": "+18185550101", "AccountSid": TEST_ACCOUNT_SID}
    body, headers = twilio_request(TEST_AUTH_TOKEN, url, form)
    (status, _), = hooks.post([(url[len(PUBLIC):], body, headers)])
    assert status == 204
    [event] = events_of(project)
    assert (event["message_key"], event["kind"], event["settled"]) == (ani, "delivered", 1)
    assert {m["key"]: m["state"] for m in project.messages()}[ani] == "sent"


def test_twilio_status_callbacks_are_recorded_and_21610_suppresses(project):
    keys = sent_project(project, ("sms",))
    hooks = Hooks(project)
    ani, talin = keys["c1", "sms"], keys["c2", "sms"]
    requests = [hooks.status(ani, "SM1", "queued"), hooks.status(ani, "SM1", "sent"),
                hooks.status(ani, "SM1", "delivered"), hooks.status(ani, "SM1", "delivered"),
                hooks.status(talin, "SM2", "failed", ErrorCode="21610", To="+18185550102"),
                hooks.status(talin, "SM2", "undelivered", ErrorCode="30003", To="+18185550102"),
                hooks.status(ani, "SM3", "undelivered", ErrorCode="30006", To="+18185550101")]
    assert [s for s, _ in hooks.post(requests)] == [204] * 7
    rows = events_of(project)
    assert [(r["message_key"], r["kind"], r["provider_event_id"]) for r in rows] == [
        (ani, "queued", "SM1:queued"), (ani, "sent", "SM1:sent"),
        (ani, "delivered", "SM1:delivered"), (talin, "failed", "SM2:failed"),
        (talin, "undelivered", "SM2:undelivered"), (ani, "undelivered", "SM3:undelivered")]
    assert rows[3]["detail"] == "ErrorCode 21610: recipient replied STOP"
    # a callback signed for a message this ledger does not hold: kept, unmatched, never a 500
    assert [s for s, _ in hooks.post([hooks.status("gone:key", "SM9", "sent")])] == [204]
    assert events_of(project)[-1]["message_key"] is None
    assert events_of(project)[-1]["detail"] == "unmatched key gone:key"
    assert rows[4]["detail"] == "ErrorCode 30003"  # unreachable for now: not suppressed
    assert suppressed(project) == {"+18185550102": "twilio:21610",  # a landline: never again
                                   "+18185550101": "twilio:30006"}


@pytest.mark.parametrize("case", ["missing", "forged", "public url", "token"])
def test_a_twilio_status_not_signed_for_the_public_url_is_refused(sqlite_project, case):
    keys = sent_project(sqlite_project, ("sms",))
    hooks = Hooks(sqlite_project)
    path, body, headers = hooks.status(keys["c1", "sms"], "SM1", "failed", ErrorCode="21610")
    if case == "missing":
        del headers["X-Twilio-Signature"]
    elif case == "forged":
        from urllib.parse import parse_qsl

        _, headers = twilio_request("not the token", PUBLIC + path, dict(parse_qsl(body.decode())))
    elif case == "public url":  # signed for the address the server sees, not the public one
        body, headers = twilio_request(TOKEN, "http://127.0.0.1" + path,
                                       {"MessageSid": "SM1", "MessageStatus": "failed",
                                        "ErrorCode": "21610", "To": "+18185550101"})
    else:  # a validly signed request to a token that was not made with the secret, or not for this
        made = tokens.make(SECRET, tokens.Token(tokens.FEEDBACK, "c1", keys["c1", "sms"]))
        path = "/webhooks/twilio/status/" + made
        body, headers = twilio_request(TOKEN, PUBLIC + path, {"MessageSid": "SM1",
                                                              "MessageStatus": "failed"})
    (status, _), = hooks.post([(path, body, headers)])
    assert status == 403
    assert events_of(sqlite_project) == [] and suppressed(sqlite_project) == {}


def test_a_malformed_twilio_form_is_400(sqlite_project):
    hooks = Hooks(sqlite_project)
    path, body, headers = hooks.status("k", "SM1", "sent")
    out = hooks.post([(path, body, {**headers, "Content-Type": "application/json"}),
                      hooks.twilio(path, {"MessageSid": "SM1"}),
                      (path, b"a=%ZZ&&=", headers)])
    assert [s for s, _ in out] == [400, 400, 400]
    assert "MessageStatus" in out[1][1]


# ---------------------------------------------------------------------------------- Twilio inbound
@pytest.mark.parametrize("word", ["STOP", " stop ", "StopAll", "unsubscribe", "CANCEL", "end",
                                  "QUIT", "revoke", "OPTOUT"])
def test_an_opt_out_keyword_withdraws_sms_consent_and_suppresses(sqlite_project, word):
    sent_project(sqlite_project, ("sms",))
    hooks = Hooks(sqlite_project)
    (status, body), = hooks.post([hooks.inbound(word, "SMin1")])
    assert status == 200 and body.endswith("<Response/>")
    assert consent(sqlite_project, "c1") == [("sms", "withdrawn", "stop")]
    assert consent(sqlite_project, "c2") == []
    assert suppressed(sqlite_project) == {"+18185550101": "stop"}


def test_stop_start_and_help(project):
    keys = sent_project(project, ("sms",))
    hooks = Hooks(project)
    led = project.ledger()
    try:
        led.suppress("phone", "+18185550102", "asked by phone", "operator")
    finally:
        led.close()
    out = hooks.post([
        hooks.inbound("please stop texting me", "SMa"),  # not a keyword: nothing
        hooks.inbound("HELP", "SMb"), hooks.inbound("info", "SMc"),
        hooks.inbound("Stop", "SMd"), hooks.inbound("Stop", "SMd"),  # redelivered
        hooks.inbound("x", "SMe", number="+18185550102", OptOutType="STOP"),
        hooks.inbound("unstop", "SMf"),
        hooks.inbound("START", "SMg", number="+18185550102")])
    assert all(s == 200 for s, _ in out)
    assert {r.split("|")[0] for _, r in out} == {'<?xml version="1.0" encoding="UTF-8"?><Response/>'}
    assert consent(project, "c1") == [("sms", "withdrawn", "stop"), ("sms", "granted", "stop")]
    assert consent(project, "c2") == [("sms", "withdrawn", "stop"), ("sms", "granted", "stop")]
    # START lifts what STOP did, never the operator's own suppression
    assert suppressed(project) == {"+18185550102": "operator"}
    rows = events_of(project)
    assert [(r["kind"], r["message_key"]) for r in rows] == [
        ("inbound_stop", keys["c1", "sms"]), ("inbound_stop", keys["c2", "sms"]),
        ("inbound_start", keys["c1", "sms"]), ("inbound_start", keys["c2", "sms"])]


def test_start_does_not_grant_what_stop_did_not_withdraw(sqlite_project):
    sent_project(sqlite_project, ("sms",))
    led = sqlite_project.ledger()
    try:
        led.record_consent_change("c1", consent="sms", action="withdrawn", source="preferences",
                                  at=100)
    finally:
        led.close()
    hooks = Hooks(sqlite_project)
    assert [s for s, _ in hooks.post([hooks.inbound("YES", "SM1")])] == [200]
    assert consent(sqlite_project, "c1") == [("sms", "withdrawn", "preferences")]


def test_no_address_or_secret_in_the_logs(sqlite_project, caplog):
    keys = sent_project(sqlite_project)
    hooks = Hooks(sqlite_project)
    caplog.set_level(logging.DEBUG)
    path, body, headers = hooks.sendgrid([sendgrid_event("bounce", keys["c1", "email"], "l-1")])
    forged = hooks.status(keys["c1", "sms"], "SM1", "failed")
    hooks.post([(path, body, headers), (path, body, {}), hooks.inbound("STOP", "SM9"),
                (forged[0], forged[1], {**forged[2], "X-Twilio-Signature": "AAAA"})])
    logged = caplog.text
    assert "sendgrid: 1 event(s)" in logged and "refused: 403" in logged
    assert "POST /webhooks/twilio/status/… 403" in logged  # the access log hides the token
    for secret in ("ani@example.com", "+18185550101", "8185550101", TOKEN, SECRET.decode(),
                   forged[0].rsplit("/", 1)[1], hooks.signer.public_key[:40],
                   headers["X-Twilio-Email-Event-Webhook-Signature"][:20]):
        assert secret not in logged


def test_a_webhook_consent_change_is_the_row_record_consent_change_writes(ledger):
    """The webhook writes consent changes in its own transaction: the same evidence recorded
    through Ledger.record_consent_change afterwards is recognised as the same change."""
    from outreach.ledger import ConsentByEvent

    batch = ledger.record_delivery_events(
        [{"provider": "sendgrid", "provider_event_id": "u-1", "kind": "unsubscribe"}],
        consent=[ConsentByEvent("u-1", "withdrawn", "sendgrid", "sendgrid:u-1", 100,
                                customer_id="c1", consent="email")])
    assert batch.consent_changes == 1
    assert not ledger.record_consent_change("c1", consent="email", action="withdrawn",
                                            source="sendgrid", evidence="sendgrid:u-1", at=200)
    assert [(c["action"], c["evidence"]) for c in ledger.consent_history("c1")] == [
        ("withdrawn", "sendgrid:u-1")]


def test_an_unreadable_verification_key_is_503_so_sendgrid_keeps_the_events(sqlite_project,
                                                                             caplog):
    hooks = Hooks(sqlite_project)
    path, body, headers = hooks.sendgrid([sendgrid_event("open", None, "k-1")])
    hooks.settings = ServeSettings(public_url=PUBLIC, token_secret=SECRET,
                                   sendgrid_verification_key="bm90IGEga2V5")
    (status, reason), = hooks.post([(path, body, headers)])
    assert status == 503 and "verification key" in reason
    assert "bm90IGEga2V5" not in caplog.text and events_of(sqlite_project) == []


def test_an_older_ledger_gets_the_phone_index_when_opened(ledger_url):
    led = Ledger(ledger_url)
    try:
        with led.engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_messages_phone"))
    finally:
        led.close()
    led = Ledger(ledger_url)  # as the next version opens a ledger made before it
    try:
        with led.reader.connect() as conn:
            if led.is_sqlite:
                found = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = "
                                          "'ix_messages_phone'")).scalar()
            else:
                found = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = "
                                          "'ix_messages_phone' AND schemaname = current_schema()")
                                     ).scalar()
        assert found is not None and "'+%'" in found  # the partial index: SMS rows only
    finally:
        led.close()
