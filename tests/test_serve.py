"""``outreach serve``: signed links, RFC 8058 one-click unsubscribe, the preference and feedback
endpoints over real HTTP on loopback, and what bad input gets (403, 400, 413, 503)."""

from __future__ import annotations

import json

import aiohttp
import asyncio
import pytest

from outreach.serve import tokens
from outreach.serve.pages import mask
from serve_support import (
    ENV, NEWS, SECRET, Server, serve_project, start_command, stop_command, token_for, url_in,
)


def post(url: str, *, data=None, multipart: dict | None = None, headers=None,
         raw: bytes | None = None) -> tuple[int, str, dict]:
    """One real HTTP request, as a mail provider's one-click POST is made (no cookies, no
    redirects followed)."""

    async def go():
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
            body: object = data
            if multipart is not None:
                form = aiohttp.FormData()
                for k, v in multipart.items():
                    form.add_field(k, v)
                body = form
            if raw is not None:
                body = raw
            async with s.post(url, data=body, headers=headers, allow_redirects=False) as r:
                return r.status, await r.text(), dict(r.headers)

    return asyncio.run(go())


def get(url: str) -> tuple[int, str]:
    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.get(url, allow_redirects=False) as r:
                return r.status, await r.text()

    return asyncio.run(go())


@pytest.fixture
def planned(project):
    """Ani and Jose each with a newsletter sent and the next one queued for later."""
    p = serve_project(project)
    p.campaign("news", NEWS)
    p.run("2026-11-24T09:30")  # first sighting: the 10:00 issue is the first
    p.run("2026-11-24T10:00")
    p.run("2026-11-24T11:00", send=False)  # the 11:00 issue waits in the outbox
    return p


@pytest.fixture
def server(planned):
    s = Server(planned)
    yield s
    s.close()


def sent_link(p, customer: str, kind: str = "u") -> str:
    [m] = [m for m in p.outbox("email") if m["key"] == f"news:20261124T180000Z:{customer}"]
    return url_in(json.dumps(m, ensure_ascii=False), kind)


def changes(p, customer: str) -> list[dict]:
    led = p.ledger()
    try:
        return led.consent_history(customer)
    finally:
        led.close()


def waiting(p) -> dict[str, str]:
    return {m["key"]: m["state"] for m in p.messages()}


# ---------------------------------------------------------------------------------- tokens
def test_tokens_are_signed_and_scoped():
    secret = b"k" * 32
    text = tokens.make(secret, tokens.Token("u", "c1", "news:1:c1", consent="email"))
    got = tokens.read(secret, text, "u")
    assert (got.customer_id, got.key, got.consent, got.category) == ("c1", "news:1:c1", "email", None)
    with pytest.raises(tokens.BadToken):
        tokens.read(b"x" * 32, text, "u")  # another deployment's secret
    with pytest.raises(tokens.BadToken):
        tokens.read(secret, text, "f")  # an unsubscribe token is no feedback token
    payload, tag = text.split(".")
    other = tokens.make(secret, tokens.Token("u", "c2", "news:1:c1", consent="email"))
    with pytest.raises(tokens.BadToken):  # another customer's payload under this tag
        tokens.read(secret, other.split(".")[0] + "." + tag, "u")
    with pytest.raises(tokens.BadToken) as garbled:
        tokens.read(secret, "not a token", "u")
    assert garbled.value.malformed
    assert "c1" not in text and "news" not in text.split(".")[1]


def test_masked_addresses_show_no_more_than_a_letter():
    assert mask("ani.petrosyan@example.com") == "a•••@e•••.com"
    assert mask("+18185550101") == "•••• 01"


# ---------------------------------------------------------------------------------- one-click
@pytest.mark.parametrize("shape", ["urlencoded", "multipart"])
def test_one_click_unsubscribe_as_a_mail_provider_posts_it(planned, server, shape):
    p = planned
    path = sent_link(p, "c1")
    body = {"List-Unsubscribe": "One-Click"}
    status, text, headers = post(server.url + path, data=body if shape == "urlencoded" else None,
                                 multipart=body if shape == "multipart" else None)

    assert status == 200 and "Location" not in headers and "Set-Cookie" not in headers
    [change] = changes(p, "c1")
    assert (change["consent"], change["action"], change["source"]) == ("email", "withdrawn", "link")
    states = waiting(p)
    assert states["news:20261124T190000Z:c1"] == "failed"  # the queued 11:00 issue is withdrawn
    assert states["news:20261124T190000Z:c2"] == "queued"  # Jose's is not
    # a second click (mail clients retry) records nothing new
    assert post(server.url + path, data=body)[0] == 200
    assert len(changes(p, "c1")) == 1


def test_a_get_changes_nothing(planned, server):
    status, html = get(server.url + sent_link(planned, "c1"))
    assert status == 200 and "Ani" in html
    assert changes(planned, "c1") == []


# ---------------------------------------------------------------------------------- bad input
def test_forged_missing_and_foreign_tokens_are_refused_and_nothing_recorded(planned, server):
    p = planned
    real = sent_link(p, "c1")
    body = {"List-Unsubscribe": "One-Click"}
    forged = token_for("news:20261124T180000Z:c1", "c1", secret="someone-else-secret-0123456789abc")
    assert post(server.url + f"/u/{forged}", data=body)[0] == 403
    assert post(server.url + "/u/", data=body)[0] == 403
    tampered = real[:-3] + ("AAA" if not real.endswith("AAA") else "BBB")
    assert post(server.url + tampered, data=body)[0] == 403
    # a token for a message the ledger does not hold (signed, but stale)
    stale = token_for("news:19000101T000000Z:c1", "c1")
    assert post(server.url + f"/u/{stale}", data=body)[0] == 403
    # a feedback token cannot unsubscribe
    feedback = token_for("news:20261124T180000Z:c1", "c1", purpose="f")
    assert post(server.url + f"/u/{feedback}", data=body)[0] == 403
    assert changes(p, "c1") == [] and waiting(p)["news:20261124T190000Z:c1"] == "queued"


def test_malformed_bodies_get_400_with_a_reason(planned, server):
    url = server.url + sent_link(planned, "c1")
    status, text, _ = post(url, data={"List-Unsubscribe": "Two-Clicks"})
    assert status == 400 and "List-Unsubscribe=One-Click" in text
    status, text, _ = post(url, raw=b"--broken\r\nnot multipart",
                           headers={"Content-Type": "multipart/form-data; boundary=zzz"})
    assert status == 400
    assert post(server.url + "/u/a.b.c", data={"List-Unsubscribe": "One-Click"})[0] == 400
    assert changes(planned, "c1") == []


def test_a_body_over_the_limit_is_413(planned, server):
    big = b"List-Unsubscribe=One-Click&x=" + b"a" * 2_000_000
    status, _, _ = post(server.url + sent_link(planned, "c1"), raw=big,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413
    assert changes(planned, "c1") == []


def test_a_ledger_outage_is_503_and_nothing_is_lost(planned):
    from sqlalchemy import create_engine

    s = Server(planned)
    try:
        path = sent_link(planned, "c1")
        real = (s.ledger.engine, s.ledger.reader)
        dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none",
                             connect_args={"connect_timeout": 2})
        s.ledger.engine = s.ledger.reader = dead
        status, text, headers = post(s.url + path, data={"List-Unsubscribe": "One-Click"})
        assert status == 503 and headers.get("Retry-After")
        assert get(s.url + "/healthz")[0] == 503
        s.ledger.engine, s.ledger.reader = real  # the provider retries once it is back
        assert post(s.url + path, data={"List-Unsubscribe": "One-Click"})[0] == 200
        assert [c["action"] for c in changes(planned, "c1")] == ["withdrawn"]
    finally:
        s.close()


# ---------------------------------------------------------------------------------- feedback
def test_feedback_is_stored_as_an_event_and_a_rating_is_required(planned, server):
    fb = token_for("news:20261124T180000Z:c2", "c2", purpose="f")
    status, text, _ = post(server.url + f"/f/{fb}", data={"comment": "?"})
    assert status == 400 and "1 hanggang 5" in text  # Jose reads Tagalog (tl-PH → tl)
    status, text, _ = post(server.url + f"/f/{fb}", data={"rating": "2", "comment": "late"})
    assert status == 200 and "Salamat" in text
    led = planned.ledger()
    try:
        [event] = list(led.customer_events(["feedback"]))
    finally:
        led.close()
    assert event[1:3] == ("c2", "feedback") and event[4]["rating"] == 2
    assert event[4]["comment"] == "late" and event[4]["message"] == "news:20261124T180000Z:c2"


# ---------------------------------------------------------------------------------- the command
def test_outreach_serve_runs_as_a_command_and_keeps_tokens_out_of_its_log(planned):
    proc, base = start_command(planned)
    try:
        path = sent_link(planned, "c1")
        assert post(base + path, data={"List-Unsubscribe": "One-Click"})[0] == 200
        assert get(base + "/healthz")[0] == 200
    finally:
        log = stop_command(proc)
    assert "POST /u/…" in log
    token = path.split("/u/")[1]
    assert token not in log and SECRET not in log and "ani.petrosyan@example.com" not in log
    assert [c["action"] for c in changes(planned, "c1")] == ["withdrawn"]


def test_serve_without_a_serve_table_is_a_configuration_error(sqlite_project):
    r = sqlite_project.cli("serve", "--port", "0", env=ENV)
    assert r.code == 2 and "[serve]" in r.stderr and "Traceback" not in r.stderr


def test_serve_table_without_its_secret_names_the_variable(sqlite_project):
    sqlite_project.configure(extra='[serve]\npublic_url = "https://mail.example.com"\n')
    r = sqlite_project.cli("validate")
    assert r.code == 2 and "OUTREACH_TOKEN_SECRET" in r.stderr


def test_a_template_with_links_needs_the_serve_table(sqlite_project):
    p = sqlite_project
    p.customers("c1,Ani,P,ani@example.com,,America/Los_Angeles,hy,yes,no,")
    p.campaign("news", '''
rule = "newsletter"
schedule = "0 * * * *"
channels = ["email"]
[email]
subject = "News"
body = "Leave: {{ unsubscribe_url }}"
''')
    r = p.cli("validate")
    assert r.code == 2 and "unsubscribe_url is undefined" in r.stderr
    assert "add [serve] to outreach.toml" in r.stderr
    p.configure(extra='[serve]\npublic_url = "https://mail.example.com"\n')
    assert p.cli("validate", env=ENV).code == 0
    shown = p.cli("preview", "news", env=ENV)
    assert shown.code == 0 and "https://mail.example.com/u/SAMPLE-TOKEN" in shown.stdout
