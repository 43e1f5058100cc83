"""Invalid configuration: every error names the file, the key path and what was expected."""

from __future__ import annotations

import pytest

from outreach.errors import ConfigError

GOOD = '''
rule = "thank_you"
channels = ["email"]
[email]
subject = "Thank you, {{ customer.first_name }}"
body = "We got your order."
'''


def problems(p) -> list[str]:
    with pytest.raises(ConfigError) as info:
        p.load()
    return [str(x) for x in info.value.problems]


def test_a_valid_campaign_loads(sqlite_project):
    sqlite_project.campaign("thanks", GOOD)
    project = sqlite_project.load()
    assert list(project.campaigns) == ["thanks"]
    assert project.campaigns["thanks"].category == "marketing"
    assert project.campaigns["thanks"].priority == 60


def test_unknown_key_names_file_key_and_known_keys(sqlite_project):
    sqlite_project.campaign("thanks", GOOD.replace('channels', 'chanels'))
    found = problems(sqlite_project)
    assert any(p.startswith("campaigns/thanks.toml: chanels: unknown key") for p in found), found
    assert any("campaigns/thanks.toml: channels: is required" in p for p in found), found


def test_toml_syntax_error_names_the_file_and_line(sqlite_project):
    sqlite_project.campaign("broken", 'rule = "thank_you\nchannels = ["email"]')
    [problem] = problems(sqlite_project)
    assert problem.startswith("campaigns/broken.toml: not valid TOML")
    assert "line 2" in problem  # line 1 is the name the test adds


def test_unknown_rule_lists_the_registered_ones(sqlite_project):
    sqlite_project.campaign("x", GOOD.replace('"thank_you"', '"thankyou"'))
    [problem] = problems(sqlite_project)
    assert problem.startswith("campaigns/x.toml: rule: expected a registered rule")
    assert "thank_you" in problem and "newsletter" in problem and "'thankyou'" in problem


def test_rule_parameters_are_checked(sqlite_project):
    sqlite_project.campaign("x", GOOD + '[params]\nwithin = "two days"\nevent = 3\n')
    found = problems(sqlite_project)
    assert any("campaigns/x.toml: params.within: expected a duration" in p for p in found), found
    assert any("campaigns/x.toml: params.event: expected a list of strings" in p for p in found), found


def test_bad_cron_schedule(sqlite_project):
    sqlite_project.campaign("news", '''
        rule = "newsletter"
        schedule = "every monday"
        channels = ["email"]
        [email]
        subject = "News"
        body = "..."
    ''')
    [problem] = problems(sqlite_project)
    assert problem.startswith("campaigns/news.toml: schedule: expected a cron expression")


def test_template_syntax_error_names_the_locale_field(sqlite_project):
    sqlite_project.campaign("x", GOOD + '[email.hy]\nsubject = "Բարեւ {{ customer.first_name "\n')
    [problem] = problems(sqlite_project)
    assert problem.startswith("campaigns/x.toml: email.hy.subject: template error")


def test_misspelt_variable_fails_on_the_sample_customer(sqlite_project):
    sqlite_project.campaign("x", GOOD.replace("customer.first_name", "customer.frist_name"))
    [problem] = problems(sqlite_project)
    assert problem.startswith("campaigns/x.toml: email.subject: fails on a sample customer")
    assert "frist_name" in problem


def test_audience_columns_are_accepted_in_templates(sqlite_project):
    sqlite_project.customers("id,first_name,email,consent_email,favourite\nc1,Ani,a@example.com,yes,gata")
    sqlite_project.campaign("x", GOOD.replace("We got your order.", "Enjoy the {{ customer.favourite }}."))
    assert "x" in sqlite_project.load().campaigns


def test_missing_required_template_field(sqlite_project):
    sqlite_project.campaign("x", GOOD.replace('subject = "Thank you, {{ customer.first_name }}"', ""))
    [problem] = problems(sqlite_project)
    assert problem == "campaigns/x.toml: email: subject is required"


def test_channel_not_configured(sqlite_project):
    sqlite_project.campaign("x", GOOD.replace('["email"]', '["email", "whatsapp"]'))
    found = problems(sqlite_project)
    assert any(p.startswith("campaigns/x.toml: channels[1]: no channel named 'whatsapp'") for p in found)


def test_template_file_outside_the_project_is_refused(sqlite_project, tmp_path):
    (tmp_path / "secret.txt").write_text("top secret")
    sqlite_project.campaign("x", GOOD.replace('body = "We got your order."',
                                              'body_file = "../secret.txt"'))
    found = problems(sqlite_project)
    assert "campaigns/x.toml: email.body_file: '../secret.txt' is outside the project folder; " \
           "templates must live inside it" in found, found


def test_template_file_inside_the_project(sqlite_project):
    sqlite_project.file("templates/thanks.html", "<p>Thank you, {{ customer.first_name }}</p>")
    sqlite_project.campaign("x", GOOD + 'html_file = "templates/thanks.html"\n')
    camp = sqlite_project.load().campaigns["x"]
    assert camp.templates["email"].fields["html"].startswith("<p>Thank you")


def test_one_invalid_campaign_refuses_all_unless_asked(sqlite_project):
    sqlite_project.campaign("good", GOOD)
    sqlite_project.campaign("bad", GOOD.replace("thank_you", "nope"))
    with pytest.raises(ConfigError):
        sqlite_project.load()
    project = sqlite_project.load(only_valid=True)
    assert list(project.campaigns) == ["good"]
    assert str(project.skipped[0]).startswith("campaigns/bad.toml: rule:")


def test_duplicate_campaign_names(sqlite_project):
    sqlite_project.campaign("a", 'name = "same"\n' + GOOD)
    sqlite_project.campaign("b", 'name = "same"\n' + GOOD)
    [problem] = problems(sqlite_project)
    assert problem.startswith("campaigns/b.toml: name: campaign 'same' is already defined")


def test_deployment_errors_name_outreach_toml(sqlite_project):
    sqlite_project.configure(timezone="Mars/Olympus", caps='[[caps]]\nmax = "three"\nper = "7d"\n')
    found = problems(sqlite_project)
    assert any(p.endswith("outreach.toml: timezone: expected an IANA time zone such as "
                          "\"Europe/London\", got 'Mars/Olympus'") for p in found), found
    assert any(p.endswith("outreach.toml: caps[0].max: expected a whole number of at least 0, "
                          "got 'three'")
               for p in found), found


def test_secrets_cannot_be_written_in_the_file(sqlite_project):
    sqlite_project.configure(channels='''
        [channels.sms]
        plugin = "twilio"
        auth_token = "abc123"
        from_number = "+15005550006"
    ''')
    found = problems(sqlite_project)
    assert any("channels.sms.auth_token: is a secret: do not write it in a file" in p for p in found)
    assert not any("abc123" in p for p in found)


def test_missing_secret_environment_variable(sqlite_project, monkeypatch):
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    sqlite_project.configure(channels='''
        [channels.sms]
        plugin = "twilio"
        from_number = "+15005550006"
    ''')
    found = problems(sqlite_project)
    assert any("channels.sms.auth_token_env: the environment variable TWILIO_AUTH_TOKEN is not set"
               in p for p in found), found


def test_where_expression_must_compile(sqlite_project):
    sqlite_project.campaign("x", 'where = "customer.tags contains vip"\n' + GOOD)
    [problem] = problems(sqlite_project)
    assert problem.startswith("campaigns/x.toml: where: not a valid expression")


def test_campaign_version_changes_with_content_only(sqlite_project):
    sqlite_project.campaign("x", GOOD)
    first = sqlite_project.load().campaigns["x"].version
    assert sqlite_project.load().campaigns["x"].version == first
    sqlite_project.campaign("x", GOOD.replace("We got", "We have"))
    assert sqlite_project.load().campaigns["x"].version != first


def test_templates_store_only_the_customer_fields_they_read(sqlite_project):
    sqlite_project.campaign("x", GOOD)
    assert sqlite_project.load().campaigns["x"].customer_fields == {"first_name"}
    sqlite_project.campaign("x", GOOD.replace("We got your order.", "{{ customer }}"))
    assert sqlite_project.load().campaigns["x"].customer_fields is None
