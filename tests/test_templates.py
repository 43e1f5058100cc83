"""Templates are sandboxed and strict: a campaign file can never run code or read files."""

from __future__ import annotations

import time

import pytest
from jinja2 import TemplateError
from jinja2.exceptions import SecurityError, UndefinedError

from outreach import templates
from outreach.errors import ConfigError

ESCAPES = [
    "{{ customer.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ customer.update({'first_name': 'x'}) }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{{ range(10**9)|list|length }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_fail(source):
    with pytest.raises((SecurityError, TemplateError, OverflowError, TypeError)):
        templates.render("body", source, {"customer": {"first_name": "Ani"}})


@pytest.mark.parametrize("source", ESCAPES)
def test_a_campaign_with_an_escape_attempt_is_invalid(sqlite_project, source):
    sqlite_project.campaign("evil", f'''
        rule = "thank_you"
        channels = ["email"]
        [email]
        subject = "hi"
        body = """{source}"""
    ''')
    with pytest.raises(ConfigError) as info:
        sqlite_project.load()
    assert all(p.file == "campaigns/evil.toml" for p in info.value.problems)


def test_undefined_variables_are_errors_not_blanks():
    with pytest.raises(UndefinedError):
        templates.render("body", "Hi {{ customer.nickname }}", {"customer": {"first_name": "Ani"}})


def test_html_fields_are_escaped_text_fields_are_not():
    name = {"customer": {"first_name": "<b>Ani & Co</b>"}}
    assert templates.render("html", "<p>{{ customer.first_name }}</p>", name) == \
        "<p>&lt;b&gt;Ani &amp; Co&lt;/b&gt;</p>"
    assert templates.render("body", "{{ customer.first_name }}", name) == "<b>Ani & Co</b>"


def test_where_expression_is_sandboxed():
    with pytest.raises(SecurityError):
        templates.evaluate_where("customer.__class__.__mro__", {"tags": []})
    assert templates.evaluate_where("'vip' in customer.tags", {"tags": ["vip"]}) is True


def test_referenced_fields():
    found = templates.referenced_fields(["{{ customer.first_name }} {{ customer['city'] }}",
                                         "{% if customer.tags %}x{% endif %}"])
    assert found == {"first_name", "city", "tags"}
    assert templates.referenced_fields(["{% for k in customer %}{{ k }}{% endfor %}"]) is None


HUGE = [
    "{{ 'a' * 10**9 }}",
    "{{ 'a' * 1000000 }}",
    "{{ [1] * 10000000 }}",
    "{{ 10 ** 100000 }}",
    "{{ (9**9) ** (9**9) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '{:999999999}'.format(1) }}",
    "{{ '%999999999d'|format(1) }}",
    "{{ 'x'|center(999999999) }}",
    "{{ 'x'|indent(999999999, true) }}",
    "{% for i in range(99999) %}{{ 'aaaaaaaaaa' }}{% endfor %}",
]


@pytest.mark.parametrize("source", HUGE)
def test_templates_cannot_exhaust_memory(source):
    with pytest.raises(SecurityError):
        templates.render("body", source, {})


def test_ordinary_arithmetic_and_formatting_still_work():
    assert templates.render("body", "{{ '%.2f' % 42.5 }} {{ 2 ** 10 }} {{ '-' * 20 }}", {}) == \
        "42.50 1024 " + "-" * 20
    assert templates.render("body", "{{ '{:>6}'.format('ok') }}|{{ 'x'|center(5) }}", {}) == \
        "    ok|  x  "


SILENT_LOOPS = [
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "{% for i in range(99999) %}{% set x = range(99999)|list %}{% endfor %}",
    "{% macro spin() %}{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}"
    "{% endfor %}{% endmacro %}{{ spin() }}",
]


@pytest.mark.parametrize("source", SILENT_LOOPS)
def test_a_loop_that_prints_nothing_still_stops_at_the_time_limit(source, monkeypatch):
    monkeypatch.setattr(templates, "MAX_SECONDS", 0.3)
    started = time.monotonic()
    with pytest.raises(SecurityError, match="longer than 0.3 s"):
        templates.render("body", source, {})
    assert time.monotonic() - started < 2


def test_guarded_loops_keep_every_loop_feature():
    def render(source: str, **variables) -> str:
        return templates.render("body", source, variables)

    assert render("{% for x in xs %}{{ loop.index }}/{{ loop.length }}{{ x }}"
                  "{% if not loop.last %},{% endif %}{% else %}none{% endfor %}",
                  xs=["a", "b"]) == "1/2a,2/2b"
    assert render("{% for x in xs %}{{ x }}{% else %}none{% endfor %}", xs=[]) == "none"
    assert render("{% for k, v in d|dictsort %}{{ k }}={{ v }};{% endfor %}", d={"b": 2, "a": 1}) \
        == "a=1;b=2;"
    assert render("{% for x in xs if x > 1 %}{{ x }}{% endfor %}", xs=[1, 2, 3]) == "23"
    assert render("{% for n in tree recursive %}[{{ n.v }}{{ loop(n.kids) }}]{% endfor %}",
                  tree=[{"v": 1, "kids": [{"v": 2, "kids": []}]}]) == "[1[2]]"
