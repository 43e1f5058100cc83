"""Localised filters: dates, times, numbers and money as each customer reads them."""

from __future__ import annotations

import time

import pytest
from jinja2 import TemplateError

from outreach import templates
from outreach.localise import Placeholder


def render(source: str, locale: str = "en", timezone: str = "", **variables) -> str:
    return templates.render("body", source, {"customer": {"locale": locale, "timezone": timezone},
                                             **variables})


@pytest.mark.parametrize("locale, expected", [
    ("en", "December 1, 2026"), ("en-GB", "1 December 2026"), ("hy", "2026 թ. դեկտեմբերի 1"),
    ("hy-AM", "2026 թ. դեկտեմբերի 1"), ("az", "1 dekabr 2026"), ("tl", "Disyembre 1, 2026"),
    ("xx-YY", "December 1, 2026"),  # a locale CLDR does not know reads as English
])
def test_date_reads_in_the_customers_language(locale, expected):
    assert render("{{ d | date }}", locale, d="2026-12-01") == expected


def test_a_pattern_gives_the_same_shape_in_every_language():
    source = '{{ d | date("d MMMM y") }}'
    assert render(source, "en", d="2026-12-01") == "1 December 2026"
    assert render(source, "hy", d="2026-12-01") == "1 դեկտեմբերի 2026"


def test_a_time_is_shown_on_the_customers_clock():
    # 23:30 in Los Angeles on 30 November is already 1 December in Yerevan.
    when = "2026-11-30T23:30:00-08:00"
    assert render("{{ t | date }}", "en", "America/Los_Angeles", t=when) == "November 30, 2026"
    assert render("{{ t | date }}", "en", "Asia/Yerevan", t=when) == "December 1, 2026"
    assert render("{{ t | time }}", "en-GB", "Asia/Yerevan", t=when) == "11:30"
    assert render("{{ t | datetime('short') }}", "en-GB", "Asia/Yerevan", t=when) == \
        "01/12/2026, 11:30"


def test_numbers_money_and_percentages():
    assert render("{{ n | number }}", "en", n="1234.5") == "1,234.5"
    assert render("{{ n | number }}", "az", n=1234.5) == "1.234,5"
    assert render("{{ n | number(2) }}", "en", n=3) == "3.00"
    assert render('{{ n | currency("USD") }}', "en", n="12.5") == "$12.50"
    assert render('{{ n | currency("AMD") }}', "hy", n=5000) == "5\u00a0000,00\u00a0֏"  # no-break spaces, as CLDR writes them
    assert render("{{ n | percent }}", "en", n=0.15) == "15%"
    assert render('{{ n | currency("EUR", locale="en-GB") }}', "hy", n=2) == "€2.00"


@pytest.mark.parametrize("source, value, message", [
    ("{{ v | date }}", "yesterday", "the date filter needs a date or time"),
    ("{{ v | number }}", "many", "the number filter needs a number"),
    ('{{ v | currency("DOLLARS") }}', 3, "ISO 4217"),
])
def test_a_value_that_cannot_be_formatted_is_an_error_not_a_guess(source, value, message):
    with pytest.raises((TemplateError, ValueError), match=message):
        render(source, v=value)


def test_a_sample_placeholder_passes_through_unchanged():
    assert render("{{ v | date }} {{ v | currency('USD') }}", v=Placeholder("<joined_on>")) == \
        "<joined_on> <joined_on>"


def test_messages_keep_the_locale_and_time_zone_the_filters_read():
    assert templates.referenced_fields(["{{ customer.first_name }}"]) == {"first_name"}
    assert templates.referenced_fields(["{{ event.time | date }}"]) == {"locale", "timezone"}


def test_a_planned_message_renders_its_dates_in_the_customers_language(outreach_project):
    p = outreach_project
    p.customers("""
        c1,Ani,P,ani@example.com,,Asia/Yerevan,hy,yes,no,
        c2,Ada,L,ada@example.com,,Europe/London,en-GB,yes,no,
    """)
    p.campaign("thanks", '''
        rule = "thank_you"
        channels = ["email"]
        [email]
        subject = "Thanks"
        body = "{{ event.time | date('d MMMM y') }} {{ event.total | currency('USD') }}"
        [sample.event]
        total = "10"
    ''')
    p.events("""id,customer_id,type,time,total
        e1,c1,purchase,2026-11-30T23:30:00-08:00,1250.5
        e2,c2,purchase,2026-11-30T23:30:00-08:00,1250.5
    """)
    p.run("2026-12-01T00:00")
    assert [m["body"] for m in p.outbox("email")] == [
        "1 դեկտեմբերի 2026 1\u00a0250,50\u00a0$", "1 December 2026 US$1,250.50"]


def test_loading_a_locale_slowly_does_not_fail_the_render(monkeypatch):
    """Babel's locale data is read once per process; on a busy machine that may outlast a
    render's time limit, which is for the template's own work."""
    import babel

    from outreach import localise

    parse = babel.Locale.parse

    def slow_parse(identifier, *args, **kwargs):
        if isinstance(identifier, str):  # reading a locale's data, not handing one back
            time.sleep(0.5)
        return parse(identifier, *args, **kwargs)

    monkeypatch.setattr(templates, "MAX_SECONDS", 0.2)
    monkeypatch.setattr(babel.Locale, "parse", slow_parse)
    localise.babel_locale.cache_clear()
    try:
        assert render("{{ d | date }}", "az", d="2026-12-01") == "1 dekabr 2026"
        with pytest.raises(TemplateError, match="longer than 0.2 s"):  # its own work still counts
            render("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}")
    finally:
        localise.babel_locale.cache_clear()
