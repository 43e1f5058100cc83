"""The SendGrid channel's settings, checked the way the core checks outreach.toml."""

from __future__ import annotations

import pytest

from outreach.plugins import get_plugins
from outreach.settings import Secret
from outreach_sendgrid import SendGridChannel


def test_registered_through_the_entry_point():
    plugins = get_plugins()
    assert plugins.registry.channels["sendgrid"] is SendGridChannel
    assert plugins.distributions["sendgrid"][0] == "outreach-sendgrid"


def test_api_key_comes_from_the_environment(resolve_table, api_key):
    resolved = resolve_table({"from_email": "shop@example.com"})
    assert resolved.problems == []
    assert resolved.values["api_key"] == Secret(api_key, "SENDGRID_API_KEY")
    assert resolved.values["api_host"] == "https://api.sendgrid.com"

    other = resolve_table({"from_email": "shop@example.com", "api_key_env": "SG_EU"},
                          {"SG_EU": "SG.eu"})
    assert other.problems == [] and other.values["api_key"].reveal() == "SG.eu"


def test_api_key_written_in_the_file_is_refused(resolve_table):
    problems = resolve_table({"from_email": "shop@example.com", "api_key": "SG.oops"}).problems
    assert [p.key for p in problems] == ["channels.email.api_key"]
    assert "SG.oops" not in str(problems[0])


def test_missing_settings_are_problems(resolve_table):
    problems = resolve_table({}, {}).problems
    assert {p.key for p in problems} == {"channels.email.from_email", "channels.email.api_key_env"}
    assert "SENDGRID_API_KEY" in " ".join(map(str, problems))


def test_wrong_kinds_are_problems(resolve_table):
    problems = resolve_table({"from_email": "shop@example.com", "asm_group_id": "12",
                              "categories": [1]}).problems
    assert {p.key for p in problems} == {"channels.email.asm_group_id", "channels.email.categories"}


@pytest.mark.parametrize("settings, says", [
    ({"unsubscribe_url": "http://example.com/u"}, "https://"),
    ({"unsubscribe_url": "https://example.com/u?e={email}"}, "unknown placeholders email"),
    ({"categories": [str(i) for i in range(11)]}, "at most 10"),
    ({"from_email": "shop"}, "not an email address"),
    ({"api_host": "api.sendgrid.com"}, "api_host"),
])
def test_constructor_refuses_bad_combinations(make_channel, settings, says):
    with pytest.raises(ValueError, match=says):
        make_channel(**settings)


def test_check_campaign(make_channel):
    plain = make_channel()
    assert plain.check_campaign({"subject", "body"}, {}, "transactional") == []
    assert plain.check_campaign({"body"}, {}, "transactional") == [
        "subject is required (unless template_id names a SendGrid dynamic template)"]
    assert plain.check_campaign({"subject"}, {}, "transactional") == [
        "body or html is required (unless template_id names a SendGrid dynamic template)"]
    [problem] = plain.check_campaign({"subject", "html"}, {}, "marketing")
    assert "List-Unsubscribe" in problem and "unsubscribe_url" in problem
    assert plain.check_campaign(set(), {"template_id": "d-1"}, "transactional") == []
    assert "dynamic template id" in plain.check_campaign(set(), {"template_id": "42"},
                                                         "transactional")[0]
    assert "cannot be used with template_id" in plain.check_campaign(
        {"subject"}, {"template_id": "d-1"}, "transactional")[0]

    assert make_channel(unsubscribe_mailto="u@example.com").check_campaign(
        {"subject", "html"}, {}, "marketing") == []
    assert make_channel(unsubscribe_url="https://example.com/u").check_campaign(
        set(), {"template_id": "d-1"}, "marketing") == []


def test_check_rendered(make_channel):
    channel = make_channel()
    assert channel.check_rendered({"subject": "Hi", "body": "x"}, {}) == []
    assert channel.check_rendered({"subject": "Hi\nBcc: x", "body": "x"}, {}) == [
        "the subject holds a line break"]
    assert channel.check_rendered({"subject": " ", "html": ""}, {}) == [
        "the subject renders empty", "the body renders empty"]
    assert channel.check_rendered({}, {"template_id": "d-1"}) == []
