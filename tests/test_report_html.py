"""`outreach report --html`: one file that a real headless browser, with no network beyond
loopback, opens and draws every chart of.

The screenshot is kept as a test artefact: under ``$OUTREACH_TEST_ARTEFACTS`` when set (CI keeps
that folder), else in the test's own temporary folder.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import insert

from outreach.ledger import delivery_events

NEWS = '''
name = "news"
rule = "newsletter"
schedule = "0 9 * * *"
start = "2026-11-01"
channels = ["email"]
holdout = 0.2
conversion = { event = "purchase", within = "7d" }
[email]
subject = "Fresh bread, {{ customer.first_name }}"
body = "Come by."
[[variants]]
name = "plain"
[[variants]]
name = "urgent"
[variants.email]
subject = "Today only, {{ customer.first_name }}!"
'''


@pytest.fixture
def report_file(sqlite_project, tmp_path) -> Path:
    shop = sqlite_project
    n = 300
    shop.customers("\n".join(f"c{i:03d},N{i},L,c{i}@example.com,,UTC,en,{'yes' if i % 9 else 'no'},"
                             "no," for i in range(n)))
    shop.events("\n".join(f"p{i},c{i:03d},purchase,2026-11-26T12:00:00+00:00"
                          for i in range(0, n, 4)))
    shop.campaign("news", NEWS)
    for day in ("2026-11-23", "2026-11-24", "2026-11-25"):
        shop.run(f"{day}T10:00")
    rng = random.Random(1)
    rows = []
    for m in shop.messages():
        for kind, p in (("delivered", 0.97), ("open", 0.4), ("click", 0.1)):
            if rng.random() < p:
                rows.append({"message_key": m["key"], "provider": "sendgrid",
                             "provider_event_id": f"{m['key']}:{kind}", "kind": kind,
                             "detail": "", "machine_open": 0, "occurred_at": m["not_before"] + 60,
                             "received_at": m["not_before"] + 61})
    ledger = shop.ledger()
    with ledger.engine.begin() as conn:
        conn.execute(insert(delivery_events), rows)
    ledger.close()
    target = tmp_path / "report.html"
    result = shop.cli("report", "--since", "2026-11-01", "--until", "2026-11-30",
                      "--now", "2026-12-10T00:00", "--html", str(target))
    assert result.code == 0, result.stderr
    return target


def test_the_html_report_is_one_file_needing_no_network(report_file):
    page = report_file.read_text(encoding="utf-8")
    # Nothing loaded from elsewhere: plotly's JavaScript is inline (its source names a CDN for
    # geographic maps only, which this report does not draw).
    assert not re.search(r"<(script|link|img)[^>]*\b(src|href)=", page)
    assert "Plotly.newPlot" in page
    assert page.count('class="plotly-graph-div"') == 5  # over time, funnel, refusals, 2 experiments


def test_a_browser_without_network_draws_every_chart(report_file, browser, tmp_path):
    browser.get(report_file.as_uri())
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".plotly-graph-div svg.main-svg")) >= 5)
    charts = browser.find_elements(By.CSS_SELECTOR, ".plotly-graph-div")
    assert len(charts) == 5
    for chart in charts:
        svg = chart.find_element(By.CSS_SELECTOR, "svg.main-svg")
        assert svg.size["width"] > 300 and svg.size["height"] > 200
    # Bars and funnel steps drawn with data: three days, three funnel steps at least, each arm.
    over_time = charts[0].find_elements(By.CSS_SELECTOR, "g.trace.bars g.point")
    assert len(over_time) == 3
    funnel = charts[1].find_elements(By.CSS_SELECTOR, "g.point")
    assert len(funnel) >= 3
    variants = charts[3].find_elements(By.CSS_SELECTOR, "g.trace.bars g.point")
    assert len(variants) >= 2 * 3  # two variants × delivery, open, click (and conversion)
    assert "urgent" in browser.page_source and "held out" in browser.page_source
    folder = Path(os.environ.get("OUTREACH_TEST_ARTEFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "report.png"
    browser.set_window_size(1200, 3200)
    assert browser.save_screenshot(str(shot))
    # Compared with the same browser's picture of an empty page: the charts make it far larger.
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    browser.get(blank.as_uri())
    empty = tmp_path / "blank.png"
    browser.save_screenshot(str(empty))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10 * len(empty.read_bytes())
