"""Plugins: registered through the same hooks as the built-ins, found by entry point, failures reported."""

from __future__ import annotations

import json
import textwrap
import types
from pathlib import Path

import pytest

from outreach import hookimpl
from outreach.channel import Channel, Delivery, TemplateField
from outreach.decision import Refusal
from outreach.plugins import get_plugins
from outreach.rule import Candidate, Rule


class Pigeon(Channel):
    """A channel that keeps what it was given, for tests."""

    type_name = "pigeon"
    address = "email"
    template_fields = {"body": TemplateField(required=True)}
    sent: list = []

    def send(self, messages):
        Pigeon.sent.extend(messages)
        return [Delivery(m.key, provider_id=f"p-{m.key}") for m in messages]


class Everyone(Rule):
    """A rule that selects everyone once."""

    name = "everyone"

    def select(self, profiles, ctx):
        for p in profiles:
            yield Candidate(f"{self.campaign}:{p.customer.id}", p.customer)


#: A newsletter due at 09:00 daily since 1 November, on email: the campaign most tests here need.
DAILY = '''
rule = "newsletter"
schedule = "0 9 * * *"
start = "2026-11-01"
channels = ["email"]
'''


def make_plugin(**hooks):
    module = types.ModuleType("test_plugin")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


#: A win-back by email after 30 quiet days (it reads each customer's latest purchase).
WINBACK = """
    rule = "reminder"
    channels = ["email"]
    [params]
    inactive_for = "30d"
    [email]
    subject = "We miss you"
    body = "..."
"""


def use_source(project, name: str) -> None:
    """Point the test project's audience at the source plugin ``name`` instead of its CSV files."""
    config = project.root / "outreach.toml"
    config.write_text(config.read_text().replace(
        'source = "csv"\ncustomers = "customers.csv"\nevents = "events.csv"', f'source = "{name}"'))


def test_a_plugin_registered_in_a_test_adds_a_channel_and_a_rule(sqlite_project):
    Pigeon.sent = []
    plugin = make_plugin(outreach_register_channels=lambda register: register(Pigeon),
                         outreach_register_rules=lambda register: register(Everyone))
    plugins = get_plugins(extra=[plugin])
    sqlite_project.configure(channels='[channels.coop]\nplugin = "pigeon"\n')
    sqlite_project.customers("c1,Ani,P,ani@example.com,,,hy,yes,no,", header="id,first_name,last_name,"
                             "email,phone,timezone,locale,consent_coop,consent_sms,tags")
    sqlite_project.campaign("all", '''
        rule = "everyone"
        channels = ["coop"]
        [coop]
        body = "Hi {{ customer.first_name }}"
    ''')
    report = sqlite_project.run("2026-11-24T10:00", plugins=plugins)
    assert report.campaigns["all"].sent == 1
    assert [(m.address, m.content["body"]) for m in Pigeon.sent] == [("ani@example.com", "Hi Ani")]
    row = next(r for r in plugins.describe() if r["name"] == "test_plugin")
    assert row["channels"] == ["pigeon"] and row["rules"] == ["everyone"]


def test_a_policy_plugin_can_veto(sqlite_project):
    def veto(candidate, channel, ctx):
        return Refusal("vegans get no butter news") if candidate.customer.id == "c1" else None

    plugins = get_plugins(extra=[make_plugin(outreach_check_channel=veto)])
    sqlite_project.customers("c1,Ani,P,ani@example.com,,,hy,yes,no,\nc2,Bo,Q,bo@example.com,,,en,yes,no,")
    sqlite_project.campaign("n", DAILY + '''
        [email]
        subject = "Butter"
        body = "..."
    ''')
    report = sqlite_project.run("2026-11-24T10:00", plugins=plugins)
    assert report.campaigns["n"].sent == 1
    assert report.campaigns["n"].reasons["vegans get no butter news"] == 1


def test_duplicate_registration_is_reported_and_the_rest_load():
    class Fake(Channel):
        type_name = "outbox-email"
        address = "email"

    plugins = get_plugins(extra=[make_plugin(outreach_register_channels=lambda register: register(Fake))])
    assert plugins.registry.channels["outbox-email"] is not Fake
    [failure] = plugins.registry.failures
    assert failure.name == "test_plugin"
    assert "registered twice: by outbox and by test_plugin" in failure.error


def test_a_misspelt_hook_is_an_error_not_silence():
    module = types.ModuleType("typo_plugin")
    module.outreach_register_channel = hookimpl(lambda register: None)  # missing "s"
    plugins = get_plugins(extra=[module])
    [failure] = plugins.registry.failures
    assert failure.name == "typo_plugin"
    assert "outreach_register_channel" in failure.error


def _install_fake_distribution(site: Path, name: str, module_source: str, entry: str) -> None:
    """A real distribution on disk (dist-info with entry points), as pip would leave it."""
    (site / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{name}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[outreach]\n{entry} = {name}\n")


def test_a_broken_entry_point_is_reported_and_only_its_campaigns_fail(sqlite_project, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _install_fake_distribution(site, "outreach_broken", "import does_not_exist\n", "broken")
    _install_fake_distribution(site, "outreach_fine", '''
        from outreach import hookimpl
        from outreach.rule import Candidate, Rule

        class Hello(Rule):
            name = "hello"
            def select(self, profiles, ctx):
                for p in profiles:
                    yield Candidate(f"{self.campaign}:{p.customer.id}", p.customer)

        @hookimpl
        def outreach_register_rules(register):
            register(Hello)
    ''', "fine")
    env = {"PYTHONPATH": str(site)}
    listing = sqlite_project.cli("plugins", "--json", env=env)
    assert listing.code == 2, listing.stderr  # a plugin failed to load
    rows = {r["name"]: r for r in listing.json()}
    assert rows["broken"]["error"] == "ModuleNotFoundError: No module named 'does_not_exist'"
    assert rows["fine"]["version"] == "1.2.3" and rows["fine"]["rules"] == ["hello"]
    assert rows["fine"]["hooks"] == ["outreach_register_rules"]

    sqlite_project.customers("c1,Ani,P,ani@example.com,,,hy,yes,no,")
    sqlite_project.campaign("hello", '''
        rule = "hello"
        channels = ["email"]
        [email]
        subject = "Hello"
        body = "Hello {{ customer.first_name }}"
    ''')
    ran = sqlite_project.cli("run", "--json", "--now", "2026-11-24T10:00", env=env)
    assert ran.code == 0, ran.stderr
    assert json.loads(ran.stdout)["totals"]["sent"] == 1

    sqlite_project.campaign("needs-broken", '''
        rule = "whatever_broken_adds"
        channels = ["email"]
        [email]
        subject = "x"
        body = "y"
    ''')
    failed = sqlite_project.cli("validate", env=env)
    assert failed.code == 2
    assert "campaigns/needs-broken.toml: rule: expected a registered rule" in failed.stderr
    assert "plugins that failed to load: broken (ModuleNotFoundError" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_plugins_can_be_restricted_by_environment(monkeypatch):
    monkeypatch.setenv("OUTREACH_PLUGINS", "")
    plugins = get_plugins()
    assert "twilio" not in plugins.registry.channels
    assert "outbox-sms" in plugins.registry.channels


def test_every_hook_has_a_test_named_after_it():
    """Keeps the plugin surface honest (datasette does the same): each hook is exercised by name."""
    from outreach import hookspecs

    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    hooks = [n for n in dir(hookspecs) if n.startswith("outreach_")]
    missing = [h for h in hooks if h not in tests.replace(f'"{h}"', "")]
    assert not missing, f"hooks without a test mentioning them: {missing}"


def test_every_hook_is_documented_in_the_readme():
    from outreach import hookspecs

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    hooks = [n for n in dir(hookspecs) if n.startswith("outreach_")]
    assert [h for h in hooks if h not in readme] == []


@pytest.fixture
def observed():
    seen: dict[str, list] = {"sent": [], "failed": [], "context": []}
    return seen


def test_observer_and_context_hooks(sqlite_project, observed):
    def outreach_message_sent(message, delivery):
        observed["sent"].append((message.key, delivery.provider_id))

    def outreach_message_failed(message, error, state):
        observed["failed"].append((message.key, state))

    def outreach_template_context(customer, campaign):
        observed["context"].append(customer.id)
        return {"shop": {"name": "Saffron & Sourdough"}}

    def outreach_register_commands(cli):
        import click

        @cli.command("hello-test")
        def hello():
            click.echo("hi")

    plugins = get_plugins(extra=[make_plugin(
        outreach_message_sent=outreach_message_sent, outreach_message_failed=outreach_message_failed,
        outreach_template_context=outreach_template_context,
        outreach_register_commands=outreach_register_commands)])
    sqlite_project.customers("c1,Ani,P,ani@example.com,,,hy,yes,no,\nc2,Bo,Q,bo@example.com,,,en,yes,no,")
    sqlite_project.campaign("n", DAILY + '''
        [email]
        subject = "News from {{ shop.name }}"
        body = "{% if customer.first_name == 'Bo' %}{{ missing.value }}{% endif %}Hi"
    ''')
    report = sqlite_project.run("2026-11-24T10:00", plugins=plugins)
    assert observed["context"] == ["sample", "c1", "c2"]  # the sample render at load, then each
    assert [k for k, _ in observed["sent"]] == ["n:20261124T170000Z:c1"]
    assert observed["failed"] == [("n:20261124T170000Z:c2", "failed")]
    assert report.campaigns["n"].failed == 1
    [failed] = [m for m in sqlite_project.messages() if m["state"] == "failed"]
    assert failed["error"].startswith("cannot render: body: UndefinedError: 'missing' is undefined")
    assert sqlite_project.outbox("email")[0]["subject"] == "News from Saffron & Sourdough"
    from click.testing import CliRunner

    from outreach.cli import cli as group

    plugins.pm.hook.outreach_register_commands(cli=group)
    try:
        assert CliRunner().invoke(group, ["hello-test"]).output == "hi\n"
    finally:
        group.commands.pop("hello-test", None)  # the CLI group is shared by every test


def test_a_decide_plugin_can_defer_and_veto(sqlite_project):
    from datetime import timedelta

    from outreach.decision import Defer

    def outreach_decide(candidate, choice, ctx):
        if candidate.customer.id == "c1":
            return Defer(choice.send_at + timedelta(hours=2), "the oven is being cleaned")
        return Refusal("closed for the holidays", "skipped")

    plugins = get_plugins(extra=[make_plugin(outreach_decide=outreach_decide)])
    sqlite_project.customers("c1,Ani,P,ani@example.com,,,hy,yes,no,\nc2,Bo,Q,bo@example.com,,,en,yes,no,")
    sqlite_project.campaign("n", DAILY + """
        [email]
        subject = "News"
        body = "..."
    """)
    rows: list = []
    sqlite_project.run("2026-11-24T10:00", plugins=plugins, rows=rows, dry_run=True)
    decisions = {r.customer: (r.decision, r.reason, r.not_before) for r in rows}
    assert decisions["c1"] == ("defer", "the oven is being cleaned", "2026-11-24T20:00:00+00:00")
    assert decisions["c2"] == ("skipped", "closed for the holidays", None)


def test_a_source_plugin_replaces_the_csv_files(sqlite_project):
    from outreach.audience import Customer, Source

    class Shop(Source):
        type_name = "shop-api"

        def customers(self, report):
            yield Customer("s1", "Nare", email="nare@example.com", consent=frozenset({"email"}))

        def events(self, types, since, report):
            return iter(())

    plugins = get_plugins(extra=[make_plugin(outreach_register_sources=lambda register: register(Shop))])
    use_source(sqlite_project, "shop-api")
    sqlite_project.campaign("n", DAILY + """
        [email]
        subject = "Hi {{ customer.first_name }}"
        body = "..."
    """)
    sqlite_project.run("2026-11-24T10:00", plugins=plugins)
    assert [(m["to"], m["subject"]) for m in sqlite_project.outbox("email")] == [
        ("nare@example.com", "Hi Nare")]


def test_a_source_plugins_events_reach_the_rules_as_it_made_them(sqlite_project):
    """Events from a source other than the CSV files go to the rules that asked for their type (an
    event after the run's time has not happened yet); the win-back reads their latest times."""
    from datetime import datetime, timezone

    from outreach.audience import Customer, Event, Source

    def at(hour: int) -> datetime:  # the project's time zone is America/Los_Angeles (UTC-8)
        return datetime(2026, 11, 24, hour + 8, tzinfo=timezone.utc)

    class Shop(Source):
        type_name = "shop-api"

        def customers(self, report):
            yield Customer("s1", "Nare", email="nare@example.com", consent=frozenset({"email"}))
            yield Customer("s2", "Aram", email="aram@example.com", consent=frozenset({"email"}))

        def events(self, types, since, report):
            yield Event("e1", "s1", "purchase", at(9), {"item": "bread"})
            yield Event("e2", "s1", "purchase", at(11), {"item": "cake"})  # after --now
            yield Event("e3", "s1", "visit", at(9), {})  # a type no campaign asked for
            yield Event("e4", "s2", "purchase", datetime(2026, 9, 1, tzinfo=timezone.utc), {})

    plugins = get_plugins(extra=[make_plugin(outreach_register_sources=lambda register: register(Shop))])
    use_source(sqlite_project, "shop-api")
    sqlite_project.campaign("thanks", """
        rule = "thank_you"
        channels = ["email"]
        [email]
        subject = "Thanks for the {{ event.item }}"
        body = "Order {{ event.id }}"
    """)
    sqlite_project.campaign("winback", WINBACK)
    sqlite_project.run("2026-11-24T10:00", plugins=plugins)
    assert sorted((m["to"], m["subject"]) for m in sqlite_project.outbox("email")) == [
        ("aram@example.com", "We miss you"), ("nare@example.com", "Thanks for the bread")]


def test_a_channel_whose_plugin_is_missing_fails_only_the_campaigns_using_it(sqlite_project):
    p = sqlite_project
    p.configure(channels='''
        [channels.email]
        plugin = "outbox-email"
        path = "outbox/email"

        [channels.wa]
        plugin = "whatsapp"
    ''')
    p.customers("c1,Ani,P,ani@example.com,,,hy,yes,no,")
    p.campaign("news", DAILY + '''
        [email]
        subject = "News"
        body = "..."
    ''')
    ok = p.cli("validate")
    assert ok.code == 0, ok.stderr
    assert "channels.wa.plugin: expected a registered channel type" in ok.stderr
    assert "(no campaign uses this channel)" in ok.stderr
    p.campaign("chat", '''
        rule = "newsletter"
        schedule = "0 9 * * *"
        channels = ["wa"]
        [wa]
        body = "hi"
    ''')
    bad = p.cli("validate")
    assert bad.code == 2
    assert "campaigns/chat.toml: channels[0]: channel 'wa' cannot be used: expected a registered " \
           "channel type" in bad.stderr
    ran = p.cli("run", "--skip-invalid", "--json", "--now", "2026-11-24T10:00")
    assert ran.code == 0 and ran.json()["totals"]["sent"] == 1


def test_plugin_authors_get_an_outreach_project_fixture(outreach_project):
    outreach_project.customers("c1,Ani,P,ani@example.com,,,hy,yes,no,")
    outreach_project.campaign("hi", DAILY + '''
        [email]
        subject = "Hi {{ customer.first_name }}"
        body = "..."
    ''')
    outreach_project.run("2026-11-24T10:00")
    assert [m["subject"] for m in outreach_project.outbox("email")] == ["Hi Ani"]


def test_a_source_failing_while_events_are_read_leaves_no_temporary_file(sqlite_project, monkeypatch,
                                                                         tmp_path):
    """The latest-activity index spills to a temporary SQLite file past a size; a source that
    fails half-way through its events must not leave that file behind."""
    import tempfile
    from datetime import datetime, timezone

    from outreach import planner
    from outreach.audience import Customer, Event, Source

    class Flaky(Source):
        type_name = "flaky"

        def customers(self, report):
            yield Customer("s1", "Nare", email="nare@example.com", consent=frozenset({"email"}))

        def events(self, types, since, report):
            for i in range(10):
                yield Event(f"e{i}", f"s{i}", "purchase", datetime(2026, 11, 1, tzinfo=timezone.utc), {})
            raise RuntimeError("the shop's API went away")

    class SmallActivity(planner._Activity):
        def __init__(self) -> None:
            super().__init__(limit=2, chunk=2)

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    monkeypatch.setattr(planner, "_Activity", SmallActivity)
    plugins = get_plugins(extra=[make_plugin(outreach_register_sources=lambda register: register(Flaky))])
    use_source(sqlite_project, "flaky")
    sqlite_project.campaign("winback", WINBACK)

    # The caller keeps the error (and its traceback, which holds the planner's frames) meanwhile,
    # as a report or a log handler would: the file must be gone by then, not at collection.
    with pytest.raises(RuntimeError, match="went away") as failure:
        sqlite_project.run("2026-11-24T10:00", plugins=plugins)
    assert list(temporary.iterdir()) == [], failure
