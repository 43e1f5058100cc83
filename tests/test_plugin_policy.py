"""Policy plugins never fail open: the built-in steps answer first, a plugin whose hooks would
silently not run stops the run, a wrong answer or a crash names the plugin, and a deferral never
moves a send into quiet hours."""

from __future__ import annotations

import json
import textwrap
import types
from datetime import timedelta
from pathlib import Path

import pytest

from outreach import CampaignInfo, Defer, Refusal, hookimpl
from outreach.plugins import get_plugins

#: An event-driven thank-you by email: evaluated on every run, one message per purchase.
THANKS = '''
    rule = "thank_you"
    channels = ["email"]
    [email]
    subject = "Thank you"
    body = "..."
'''

THANKS_SMS = '''
    rule = "thank_you"
    channels = ["sms"]
    [sms]
    body = "Thank you"
'''


def plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return module


def install(site: Path, name: str, source: str, entry: str) -> None:
    """A real distribution on disk (dist-info with an entry point), as pip would leave it."""
    (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{name}-1.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text(f"[outreach]\n{entry} = {name}\n")


def purchases(p, *customers: str) -> None:
    p.customers("\n".join(customers))
    ids = [c.split(",")[0] for c in customers]
    p.events("id,customer_id,type,time\n" + "\n".join(
        f"e{i},{cid},purchase,2026-11-24T09:00:00-08:00" for i, cid in enumerate(ids, 1)))


# ------------------------------------------------------------------------------- order
@pytest.mark.parametrize("tryfirst", [False, True], ids=["plain", "tryfirst"])
def test_consent_refuses_before_a_third_party_policy_is_asked(sqlite_project, tryfirst):
    asked = []

    def outreach_check_channel(candidate, channel, ctx):
        asked.append(candidate.customer.id)
        return Refusal("the third party says no")

    module = types.ModuleType("third_party")
    module.outreach_check_channel = hookimpl(tryfirst=tryfirst)(outreach_check_channel)
    plugins = get_plugins(extra=[module])
    p = sqlite_project
    purchases(p, "c1,Ani,P,ani@example.com,,,hy,no,no,",  # no consent for email
              "c2,Bo,Q,bo@example.com,,,en,yes,no,")
    p.campaign("thanks", THANKS)
    rows: list = []
    report = p.run("2026-11-24T10:00", plugins=plugins, rows=rows)
    assert {r.customer: r.reason for r in rows} == {"c1": "no consent for email",
                                                   "c2": "the third party says no"}
    # Never consulted about a customer the built-in steps refused (validating the project asked
    # it about the sample customer, to check the type of its answer).
    assert [c for c in asked if c != "sample"] == ["c2"]
    assert dict(report.campaigns["thanks"].reasons) == {"no consent for email": 1,
                                                        "the third party says no": 1}


def test_a_suppressed_address_is_refused_as_suppressed_before_a_third_party_is_asked(sqlite_project):
    asked = []

    def outreach_check_channel(candidate, channel, ctx):
        asked.append(candidate.customer.id)
        return None

    plugins = get_plugins(extra=[plugin("third_party", outreach_check_channel=outreach_check_channel)])
    p = sqlite_project
    purchases(p, "c1,Ani,P,ani@example.com,,,hy,yes,no,")
    p.campaign("thanks", THANKS)
    ledger = p.ledger()
    try:
        ledger.suppress("email", "ani@example.com", "bounced", "operator")
    finally:
        ledger.close()
    report = p.run("2026-11-24T10:00", plugins=plugins)
    assert report.campaigns["thanks"].suppressed == 1 and "c1" not in asked


# ------------------------------------------------------------------------------- what a policy sees
def test_policy_hooks_see_the_campaign_and_the_channel_type(sqlite_project):
    seen = []

    def outreach_check_channel(candidate, channel, ctx, campaign):
        seen.append(("check", campaign, channel.name, channel.type))
        return None

    def outreach_decide(choice, campaign):  # a subset of the arguments is enough
        seen.append(("decide", campaign.name, campaign.category, choice.channel.type))
        if campaign.category == "marketing":
            return Refusal("no marketing this week")
        return None

    plugins = get_plugins(extra=[plugin("looks", outreach_check_channel=outreach_check_channel,
                                        outreach_decide=outreach_decide)])
    p = sqlite_project
    purchases(p, "c1,Ani,P,ani@example.com,,,hy,yes,no,")
    p.campaign("thanks", '''
        rule = "thank_you"
        category = "transactional"
        priority = 70
        channels = ["email"]
        [email]
        subject = "Thank you"
        body = "..."
    ''')
    p.campaign("news", '''
        rule = "newsletter"
        schedule = "0 9 * * *"
        start = "2026-11-01"
        channels = ["email"]
        [email]
        subject = "News"
        body = "..."
    ''')
    report = p.run("2026-11-24T10:00", plugins=plugins)
    assert ("check", CampaignInfo("thanks", "transactional", 70), "email", "outbox-email") in seen
    assert ("check", CampaignInfo("news", "marketing", 10), "email", "outbox-email") in seen
    assert ("decide", "thanks", "transactional", "outbox-email") in seen
    assert report.campaigns["thanks"].sent == 1
    assert dict(report.campaigns["news"].reasons) == {"no marketing this week": 1}


# ------------------------------------------------------------------------------- nothing silent
BROKEN = {
    "nohook": ('''
        from outreach import Refusal

        def check(candidate, channel, ctx):
            return Refusal("never asked")
    ''', "implements no outreach hook"),
    "undecorated": ('''
        from outreach import Refusal

        def outreach_check_channel(candidate, channel, ctx):
            return Refusal("never asked")
    ''', "outreach_check_channel is not decorated with @outreach.hookimpl"),
    "misspelt": ('''
        from outreach import Refusal, hookimpl

        @hookimpl
        def outreach_check_channels(candidate, channel, ctx):
            return Refusal("never asked")
    ''', "outreach_check_channels"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_policy_plugin_that_would_silently_not_run_stops_validate_and_run(sqlite_project,
                                                                             tmp_path, kind):
    source, why = BROKEN[kind]
    site = tmp_path / "site"
    site.mkdir()
    install(site, f"outreach_{kind}", source, kind)
    env = {"PYTHONPATH": str(site)}
    p = sqlite_project
    purchases(p, "c1,Ani,P,ani@example.com,,,hy,yes,no,")
    p.campaign("thanks", THANKS)
    where = f"plugin {kind} (distribution outreach_{kind}, entry point {kind} = outreach_{kind})"
    for command in (["validate"], ["run", "--now", "2026-11-24T10:00"]):
        result = p.cli(*command, env=env)
        assert result.code == 2, (command, result.stdout, result.stderr)
        assert where in result.stderr and why in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert p.outbox("email") == []
    listing = p.cli("plugins", "--json", env=env)
    assert listing.code == 2
    assert why in {r["name"]: r for r in listing.json()}[kind]["error"]


def test_a_policy_answer_of_the_wrong_type_stops_the_run_naming_the_plugin(sqlite_project, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install(site, "outreach_sloppy", '''
        from outreach import hookimpl

        @hookimpl
        def outreach_check_channel(candidate, channel, ctx):
            return "no"
    ''', "sloppy")
    p = sqlite_project
    purchases(p, "c1,Ani,P,ani@example.com,,,hy,yes,no,")
    p.campaign("thanks", THANKS)
    where = "plugin sloppy (distribution outreach_sloppy, entry point sloppy = outreach_sloppy)"
    for command in (["validate"], ["run", "--now", "2026-11-24T10:00"]):
        result = p.cli(*command, env={"PYTHONPATH": str(site)})
        assert result.code == 2, result.stderr
        assert (f"{where}: outreach_check_channel returned 'no' for the sample customer; "
                "expected Refusal (from outreach) or None") in result.stderr
        assert "Traceback" not in result.stderr and p.outbox("email") == []


def test_a_decide_answer_of_the_wrong_type_is_refused_in_the_run(sqlite_project):
    """Right for the sample customer of ``validate``, wrong for a real one: the run stops there."""
    def outreach_decide(candidate):
        return True if candidate.customer.id == "c1" else None

    plugins = get_plugins(extra=[plugin("sloppy", outreach_decide=outreach_decide)])
    p = sqlite_project
    purchases(p, "c1,Ani,P,ani@example.com,,,hy,yes,no,")
    p.campaign("thanks", THANKS)
    p.load(plugins)  # validates
    from outreach.plugins import PluginError

    with pytest.raises(PluginError, match="plugin sloppy: outreach_decide returned True; expected "
                                          "Refusal or Defer"):
        p.run("2026-11-24T10:00", plugins=plugins)
    assert p.outbox("email") == []


def test_a_plugin_that_raises_is_named_in_the_error(sqlite_project, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install(site, "outreach_crashy", '''
        from outreach import hookimpl

        def lookup(customer):
            return {"c1": "gold"}[customer.id + "x"]

        @hookimpl
        def outreach_decide(candidate, choice, ctx):
            lookup(candidate.customer)
    ''', "crashy")
    p = sqlite_project
    purchases(p, "c1,Ani,P,ani@example.com,,,hy,yes,no,")
    p.campaign("thanks", THANKS)
    result = p.cli("run", "--now", "2026-11-24T10:00", env={"PYTHONPATH": str(site)})
    assert result.code == 4, result.stderr
    assert ("plugin crashy (distribution outreach_crashy, entry point crashy = outreach_crashy) "
            "failed in outreach_decide: KeyError: 'c1x'") in result.stderr
    assert "Traceback" not in result.stderr and p.outbox("email") == []


def test_an_observer_that_raises_is_named_too(sqlite_project):
    def outreach_template_context(customer, campaign):
        raise RuntimeError("the CRM is down")

    plugins = get_plugins(extra=[plugin("enrich", outreach_template_context=outreach_template_context)])
    from outreach.plugins import PluginCrashed

    with pytest.raises(PluginCrashed, match="plugin enrich failed in outreach_template_context: "
                                            "RuntimeError: the CRM is down"):
        plugins.template_context(None, "thanks")


# ------------------------------------------------------------------------------- time
def test_a_deferral_into_quiet_hours_moves_on_to_their_end(sqlite_project):
    """A plugin holds texts for 15 minutes; at 20:50 in Yerevan that is 21:05, inside the quiet
    hours: the send moves on to 08:00 there, and is never due at 21:05."""
    def outreach_decide(choice):
        return Defer(choice.send_at + timedelta(minutes=15), "the oven timer")

    plugins = get_plugins(extra=[plugin("oven", outreach_decide=outreach_decide)])
    p = sqlite_project
    p.configure(quiet_hours='[quiet_hours]\nsms = { start = "21:00", end = "08:00" }\n')
    purchases(p, "c1,Ani,P,ani@example.com,+37491234567,Asia/Yerevan,hy,yes,yes,")
    p.events("id,customer_id,type,time\ne1,c1,purchase,2026-11-24T20:40:00+04:00")
    p.campaign("thanks", THANKS_SMS)
    rows: list = []
    p.run("2026-11-24T20:50:00+04:00", plugins=plugins, rows=rows)
    [row] = rows
    assert row.decision == "defer"
    assert row.not_before == "2026-11-25T04:00:00+00:00"  # 08:00 in Yerevan
    assert row.reason == "the oven timer, then quiet hours 21:00–08:00 in Asia/Yerevan"
    assert p.run("2026-11-24T21:10:00+04:00", plugins=plugins).campaigns["thanks"].sent == 0
    assert p.outbox("sms") == []
    assert p.run("2026-11-25T08:01:00+04:00", plugins=plugins).campaigns["thanks"].sent == 1


def test_a_deferral_is_capped_at_its_final_time(sqlite_project):
    """Caps count a deferred send at the time it will go: the thank-you held into the night goes
    at 08:00, so the morning newsletter at 08:00 finds the one-per-6-hours cap spent."""
    def outreach_decide(choice, campaign):
        if campaign.name == "thanks":
            return Defer(choice.send_at + timedelta(minutes=15), "the oven timer")
        return None

    plugins = get_plugins(extra=[plugin("oven", outreach_decide=outreach_decide)])
    p = sqlite_project
    p.configure(quiet_hours='[quiet_hours]\nsms = { start = "21:00", end = "08:00" }\n',
                caps='[[caps]]\nmax = 1\nper = "6h"\n')
    purchases(p, "c1,Ani,P,ani@example.com,+37491234567,Asia/Yerevan,hy,yes,yes,")
    p.events("id,customer_id,type,time\ne1,c1,purchase,2026-11-24T20:40:00+04:00")
    p.campaign("thanks", THANKS_SMS)
    p.campaign("morning", '''
        rule = "newsletter"
        schedule = "0 20 * * *"
        start = "2026-11-24"
        channels = ["sms"]
        [sms]
        body = "Good morning"
    ''')  # 20:00 in Los Angeles is 08:00 in Yerevan
    rows: list = []
    p.run("2026-11-24T20:50:00+04:00", plugins=plugins, rows=rows)
    assert [(r.campaign, r.decision, r.not_before) for r in rows] == [
        ("thanks", "defer", "2026-11-25T04:00:00+00:00")]
    rows = []
    p.run("2026-11-25T08:00:00+04:00", plugins=plugins, rows=rows)
    assert [(r.campaign, r.decision) for r in rows] == [("thanks", "already planned"),
                                                        ("morning", "capped")]


# ------------------------------------------------------------------------------- introspection
def test_plugins_lists_each_channel_types_settings_and_fails_when_a_plugin_did(sqlite_project, tmp_path):
    ok = sqlite_project.cli("plugins", "--json", env={"OUTREACH_PLUGINS": ""})
    assert ok.code == 0, ok.stderr
    outbox = next(r for r in ok.json() if r["name"] == "outbox")
    path = next(s for s in outbox["settings"]["outbox-email"] if s["name"] == "path")
    assert path == {"name": "path", "type": "path", "required": False, "secret": False,
                    "help": path["help"]} and path["help"]
    text = sqlite_project.cli("plugins", env={"OUTREACH_PLUGINS": ""})
    assert text.code == 0 and "outbox-email.path (path)" in text.stdout

    site = tmp_path / "site"
    site.mkdir()
    install(site, "outreach_gone", "import does_not_exist\n", "gone")
    failed = sqlite_project.cli("plugins", env={"PYTHONPATH": str(site), "OUTREACH_PLUGINS": "gone"})
    assert failed.code == 2
    assert "gone" in failed.stdout and "ModuleNotFoundError" in failed.stdout
    assert json.loads(sqlite_project.cli("plugins", "--json", env={
        "PYTHONPATH": str(site), "OUTREACH_PLUGINS": "gone"}).stdout)[-1]["name"] == "gone"


# ------------------------------------------------------------------------------- plugin settings
NO_CONTACT = '''
    from outreach import Refusal, Setting, hookimpl


    @hookimpl
    def outreach_plugin_settings():
        return {"blocked_tags": Setting("list", default=["do-not-contact"],
                                        help="customers with any of these tags get nothing"),
                "strict": Setting("bool", default=False, help="also refuse transactional sends")}


    @hookimpl
    def outreach_check_channel(candidate, ctx, campaign):
        mine = ctx.plugin_settings("no_contact")
        if campaign.category == "transactional" and not mine["strict"]:
            return None
        if set(mine["blocked_tags"]) & set(candidate.customer.tags):
            return Refusal("tagged do-not-contact")
        return None
'''


def test_outreach_plugin_settings_are_validated_and_reach_the_policy(sqlite_project, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install(site, "outreach_no_contact", NO_CONTACT, "no_contact")
    env = {"PYTHONPATH": str(site), "OUTREACH_PLUGINS": "no_contact"}
    p = sqlite_project
    purchases(p, "c1,Ani,P,ani@example.com,,,hy,yes,no,legal-hold",
              "c2,Bo,Q,bo@example.com,,,en,yes,no,do-not-contact")
    p.campaign("thanks", THANKS)

    # The defaults apply without a table: c2's tag is blocked.
    ran = p.cli("run", "--json", "--dry-run", "--now", "2026-11-24T10:00", env=env)
    assert ran.code == 0, ran.stderr
    [thanks] = ran.json()["campaigns"]
    assert thanks["reasons"] == {"tagged do-not-contact": 1}

    config = p.root / "outreach.toml"
    base = config.read_text()
    config.write_text(base + '\n[plugins.no_contact]\nblocked_tags = ["legal-hold"]\n')
    rows = p.cli("plan", "--json", "--now", "2026-11-24T10:00", env=env).json()
    assert {r["customer"]: r["decision"] for r in rows["candidates"]} == {"c1": "skipped",
                                                                     "c2": "send"}

    config.write_text(base + '\n[plugins.no_contact]\nblocked_tag = ["x"]\nstrict = "yes"\n'
                             '\n[plugins.no_such]\nx = 1\n')
    bad = p.cli("validate", env=env)
    assert bad.code == 2
    assert "outreach.toml: plugins.no_contact.blocked_tag: unknown key" in bad.stderr
    assert "outreach.toml: plugins.no_contact.strict: expected true or false, got 'yes'" in bad.stderr
    assert ("outreach.toml: plugins.no_such: no loaded plugin named 'no_such' declares settings "
            "(plugins with settings: no_contact)") in bad.stderr
    listing = p.cli("plugins", env=env)
    assert "plugins.no_contact.blocked_tags (list): customers with any of these tags get nothing" \
        in listing.stdout


def test_plugin_settings_are_in_the_project_and_the_reference(sqlite_project):
    module = types.ModuleType("no_contact")
    exec(compile(textwrap.dedent(NO_CONTACT), "no_contact", "exec"), module.__dict__)
    plugins = get_plugins(extra=[module], load_entry_points=False)
    p = sqlite_project
    p.configure(extra="")
    (p.root / "outreach.toml").write_text((p.root / "outreach.toml").read_text()
                                          + "\n[plugins.no_contact]\nstrict = true\n")
    project = p.load(plugins)
    assert project.plugin_settings("no_contact") == {"blocked_tags": ["do-not-contact"],
                                                     "strict": True}
    from outreach.reference import deployment_reference

    reference = deployment_reference(plugins)
    assert "### `[plugins.no_contact]`" in reference and "blocked_tags" in reference


def test_a_plugin_setting_without_help_is_refused_at_load():
    from outreach import Setting

    module = plugin("quiet", outreach_plugin_settings=lambda: {"level": Setting("int")})
    [failure] = get_plugins(extra=[module], load_entry_points=False).registry.failures
    assert failure.name == "quiet" and "settings without help=: level" in failure.error


# ------------------------------------------------------------------------------- a delay that a later event cancels
def test_a_delay_that_a_purchase_cancels_is_decided_when_due(sqlite_project):
    """Written as the plugin guide says: the reminder is selected only once the delay has passed,
    when the rule can see whether the customer bought meanwhile (a ``not_before`` is not asked
    again when it comes due)."""
    from outreach import Candidate, Rule
    from outreach.rule import EventNeeds

    class AbandonedCart(Rule):
        """One reminder an hour after a cart is left, unless the customer bought since."""

        name = "abandoned_cart"

        def event_needs(self, now):
            return EventNeeds(types=frozenset({"cart", "purchase"}), since=now - timedelta(days=2))

        def select(self, profiles, ctx):
            for p in profiles:
                for cart in (e for e in p.events if e.type == "cart"):
                    due = cart.time + timedelta(hours=1)
                    bought = any(e.type == "purchase" and e.time >= cart.time for e in p.events)
                    if due <= ctx.now and not bought:
                        yield Candidate(f"{self.campaign}:{cart.id}", p.customer)

    plugins = get_plugins(extra=[plugin("carts", outreach_register_rules=lambda register:
                                        register(AbandonedCart))], load_entry_points=False)
    p = sqlite_project
    p.customers("c1,Ani,P,ani@example.com,,,hy,yes,no,\nc2,Bo,Q,bo@example.com,,,en,yes,no,")
    p.events("id,customer_id,type,time\n"
             "k1,c1,cart,2026-11-24T09:00:00-08:00\n"
             "k2,c2,cart,2026-11-24T09:00:00-08:00")
    p.campaign("cart", '''
        rule = "abandoned_cart"
        channels = ["email"]
        [email]
        subject = "You left something behind"
        body = "..."
    ''')
    assert p.run("2026-11-24T09:30", plugins=plugins).campaigns["cart"].queued == 0
    # Bo buys during the delay; Ani does not.
    p.events("id,customer_id,type,time\n"
             "k1,c1,cart,2026-11-24T09:00:00-08:00\n"
             "k2,c2,cart,2026-11-24T09:00:00-08:00\n"
             "o1,c2,purchase,2026-11-24T09:40:00-08:00")
    p.run("2026-11-24T10:05", plugins=plugins)
    assert [m["to"] for m in p.outbox("email")] == ["ani@example.com"]


def test_validate_asks_a_policy_about_the_sample_customer_with_its_settings(sqlite_project):
    """The check of a policy's answers runs with the plugin's settings, as the run would."""
    from outreach import Setting
    from outreach.errors import ConfigError

    def outreach_check_channel(ctx):
        return "nope" if ctx.plugin_settings("strict")["on"] else None

    module = plugin("strict", outreach_check_channel=outreach_check_channel,
                    outreach_plugin_settings=lambda: {"on": Setting("bool", default=True,
                                                                    help="refuse wrongly")})
    plugins = get_plugins(extra=[module], load_entry_points=False)
    p = sqlite_project
    p.campaign("thanks", THANKS)
    with pytest.raises(ConfigError, match="plugin strict: outreach_check_channel returned 'nope' "
                                          "for the sample customer"):
        p.load(plugins)
    p.configure(extra="[plugins.strict]\non = false\n")
    assert p.load(plugins).plugin_settings("strict") == {"on": False}
