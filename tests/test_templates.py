"""Templates are sandboxed and strict: a campaign file can never run code or read files."""

from __future__ import annotations

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
