"""The customer pages in a real headless browser (Debian's chromium through selenium): the
preference page, the feedback page, an Armenian render checked by a screenshot, and the whole loop
of an unsubscribe while a newsletter waits out the night."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from serve_support import (
    QUIET, Server, serve_project, start_command, stop_command, token_for, url_in,
)

NEWS = """
rule = "newsletter"
schedule = "0 8,20,22 * * *"
channels = ["email"]
[email]
subject = "News for {{ customer.first_name }}"
body = "Unsubscribe: {{ unsubscribe_url }}"
"""


@pytest.fixture
def planned(sqlite_project):
    """Ani (hy) and Jose (tl-PH) got the 20:00 newsletter."""
    p = serve_project(sqlite_project)
    p.campaign("news", NEWS)
    p.run("2026-11-24T19:30")
    p.run("2026-11-24T20:00")
    return p


@pytest.fixture
def server(planned):
    s = Server(planned)
    yield s
    s.close()


def link(p, customer: str, base: str) -> str:
    [m] = [m for m in p.outbox("email") if m["key"] == f"news:20261125T040000Z:{customer}"]
    return base + url_in(json.dumps(m, ensure_ascii=False), "u")


def history(p, customer: str) -> list[tuple]:
    led = p.ledger()
    try:
        return [(c["consent"], c["category"], c["action"], c["source"])
                for c in led.consent_history(customer)]
    finally:
        led.close()


def text_of(browser) -> str:
    return browser.find_element(By.TAG_NAME, "body").text


def shows(browser, text: str, timeout: float = 20) -> bool:
    """Wait until the page (a new one, after a form was sent) shows ``text``."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout, ignored_exceptions=(NoSuchElementException,
                                                        StaleElementReferenceException)).until(
        lambda d: text in d.find_element(By.TAG_NAME, "body").text)
    return True


def send(browser, button: str) -> None:
    """Click a form's button and wait for the page it answers with."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.ID, button).click()
    WebDriverWait(browser, 20).until(expected_conditions.staleness_of(page))


def png_rows(data: bytes) -> tuple[int, int, set[bytes]]:
    """(width, height, the distinct scanlines) of a non-interlaced 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 4
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            channels = {2: 3, 6: 4}[color]
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    return width, height, {raw[i * stride + 1:(i + 1) * stride] for i in range(height)}


# ---------------------------------------------------------------------------------- Armenian
def test_the_preference_page_renders_in_armenian(planned, server, browser, tmp_path):
    browser.get(link(planned, "c1", server.url))

    body = text_of(browser)
    assert browser.title == "Ձեր հաղորդագրությունների կարգավորումները"
    assert "Բարև, Ani" in body and "a•••@e•••.com" in body
    assert "ani.petrosyan@example.com" not in browser.page_source and "Petrosyan" not in body
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "hy"
    shot = tmp_path / "preferences-hy.png"
    assert browser.save_screenshot(str(shot))
    width, height, rows = png_rows(shot.read_bytes())
    assert (width, height) >= (800, 600)
    assert len(rows) > 40  # text on the page, not a blank or one-colour render
    assert shot.stat().st_size > 10_000


# ---------------------------------------------------------------------------------- preferences
def test_choices_on_the_preference_page_are_saved_and_confirmed(planned, server, browser):
    browser.get(link(planned, "c2", server.url))  # Jose reads Tagalog (tl-PH → tl)
    assert "Kumusta, Jose" in text_of(browser)

    browser.find_element(By.CSS_SELECTOR, "input[name=channel][value=sms]").click()
    browser.find_element(By.CSS_SELECTOR, "input[name=fewer][value=week]").click()
    send(browser, "save")

    assert shows(browser, "Na-save na ang iyong mga pinili.")
    assert history(planned, "c2") == [("sms", None, "withdrawn", "preferences")]
    led = planned.ledger()
    try:
        assert led.customer_caps(["c2"]) == {"c2": (1, 7 * 86400)}
    finally:
        led.close()
    # the page shows what is now true, and putting SMS back is a grant
    assert not browser.find_element(By.CSS_SELECTOR,
                                    "input[name=channel][value=sms]").is_selected()
    assert browser.find_element(By.CSS_SELECTOR, "input[name=fewer][value=week]").is_selected()
    browser.find_element(By.CSS_SELECTOR, "input[name=channel][value=sms]").click()
    browser.find_element(By.CSS_SELECTOR, "input[name=category][value=marketing]").click()
    send(browser, "save")
    assert set(history(planned, "c2")[1:]) == {("sms", None, "granted", "preferences"),
                                               (None, "marketing", "withdrawn", "preferences")}

    send(browser, "everything")
    assert shows(browser, "Naka-unsubscribe ka na sa lahat")
    after = history(planned, "c2")
    assert {(c, a) for c, _, a, _ in after[3:]} == {("email", "withdrawn"),
                                                    ("sms", "withdrawn")}, after


# ---------------------------------------------------------------------------------- feedback
def test_the_feedback_page_stores_a_rating_as_an_event(planned, server, browser):
    token = token_for("news:20261125T040000Z:c1", "c1", purpose="f")
    browser.get(f"{server.url}/f/{token}")
    assert browser.title == "Ինչպե՞ս էր"

    send(browser, "send")  # no rating chosen
    assert shows(browser, "Խնդրում ենք ընտրել գնահատական")

    browser.find_element(By.CSS_SELECTOR, "input[name=rating][value='2']").click()
    browser.find_element(By.ID, "comment").send_keys("Հացը սառն էր")
    send(browser, "send")

    assert shows(browser, "Շնորհակալություն")
    led = planned.ledger()
    try:
        [(eid, cid, etype, _, attrs)] = list(led.customer_events(["feedback"]))
    finally:
        led.close()
    assert (eid, cid, etype) == ("feedback:news:20261125T040000Z:c1", "c1", "feedback")
    assert attrs["rating"] == 2 and attrs["comment"] == "Հացը սառն էր"


# ---------------------------------------------------------------------------------- end to end
def test_an_unsubscribe_while_a_newsletter_waits_for_morning_stops_it_for_good(sqlite_project,
                                                                             browser):
    p = serve_project(sqlite_project, quiet=True)
    p.campaign("news", NEWS)
    p.run("2026-11-24T19:30")
    p.run("2026-11-24T20:00")  # sent before the quiet hours begin
    p.run("2026-11-24T22:00")  # the 22:00 issue waits for 08:00
    waiting = {m["key"]: m["state"] for m in p.messages() if "T060000Z" in m["key"]}
    assert waiting == {"news:20261125T060000Z:c1": "deferred",
                       "news:20261125T060000Z:c2": "deferred"}

    proc, base = start_command(p)  # the real `outreach serve`
    try:
        browser.get(link(p, "c1", base))  # Ani opens the link in the 20:00 issue at 23:00
        send(browser, "unsubscribe")
        assert shows(browser, "Պատրաստ է")
    finally:
        stop_command(proc)

    p.run("2026-11-25T08:05")  # the export still says yes for Ani

    sent = sorted(m["key"] for m in p.outbox("email"))
    assert "news:20261125T060000Z:c1" not in sent  # the waiting issue did not go
    assert "news:20261125T160000Z:c1" not in sent  # the morning issue was not planned for her
    assert {"news:20261125T060000Z:c2", "news:20261125T160000Z:c2"} <= set(sent)
    states = {m["key"]: (m["state"], m["stopped_by"]) for m in p.messages()}
    assert states["news:20261125T060000Z:c1"] == ("failed", "consent")
    assert history(p, "c1") == [("email", None, "withdrawn", "link")]
    r = p.cli("consent", "--customer", "c1", "--json")
    assert r.code == 0, r.stderr
    shown = json.loads(r.stdout)
    assert [(c["consent"], c["action"], c["source"]) for c in shown["changes"]] == [
        ("email", "withdrawn", "link")]
    assert Path(p.root).is_dir()
