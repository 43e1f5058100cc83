"""Every example in every README runs: each fenced block is claimed by one check below, and a new
block that none claims fails `test_every_example_is_checked`."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from outreach.config import load_project
from outreach.errors import ConfigError
from outreach.plugins import get_plugins

REPO = Path(__file__).resolve().parents[1]
READMES = ["README.md", "plugins/outreach-sendgrid/README.md", "plugins/outreach-twilio/README.md"]
SECRETS = {"SENDGRID_API_KEY": "SG.readme-example-key", "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
           "TWILIO_AUTH_TOKEN": "readme-token", "SHOP_TWILIO_SID": "AC" + "1" * 32,
           "SHOP_TWILIO_TOKEN": "readme-token-2", "WHATSAPP_TOKEN": "wa-readme-token",
           "OUTREACH_TOKEN_SECRET": "readme-token-secret-0123456789abcdef",
           "SENDGRID_WEBHOOK_VERIFICATION_KEY": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"}


def blocks(readme: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block."""
    text = (REPO / readme).read_text(encoding="utf-8")
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


def block(readme: str, starting: str) -> str:
    [code] = [c for _, c in blocks(readme) if c.lstrip().startswith(starting)]
    return code


# ------------------------------------------------------------------------------------ shell lines
def _outreach_commands() -> set[str]:
    from outreach.cli import cli

    return set(cli.commands)


def check_shell(code: str) -> None:
    """Each line runs a command that exists, with paths and distributions that exist."""
    dev = (REPO / "dev.py").read_text(encoding="utf-8")
    for raw in code.splitlines():
        line = raw.split("#", 1)[0].strip()
        for part in filter(None, (p.strip() for p in line.split("&&"))):
            words = shlex.split(part)
            if words[:2] == ["python3", "dev.py"]:
                assert f'"{words[2]}"' in dev, f"dev.py has no command {words[2]!r}: {raw}"
            elif words[0] == "outreach":
                assert words[1] in _outreach_commands(), f"no command outreach {words[1]}: {raw}"
            elif words[:2] == ["pip", "install"]:
                for target in words[2:]:
                    if target == "-e":
                        continue
                    name = target.split("[")[0]
                    if "/" in name or name == ".":
                        assert (REPO / name / "pyproject.toml").exists(), raw
                    else:
                        assert name in ("outreach", "outreach-sendgrid", "outreach-twilio"), raw
            elif words[0] in ("pytest", "python") and "pytest" in words:
                for path in (w for w in words if "/" in w):
                    assert (REPO / path).exists(), raw
            elif words[0] in ("export", "cd"):
                continue
            else:
                raise AssertionError(f"no check for this README command: {raw}")


# ------------------------------------------------------------------------------------ TOML
def project_with(tmp_path: Path, deployment: str, campaigns: dict[str, str] | None = None) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "customers.csv").write_text(
        "id,first_name,email,phone,consent_email,consent_sms,last_purchase\n", encoding="utf-8")
    (tmp_path / "data" / "events.csv").write_text("id,customer_id,type,time\n", encoding="utf-8")
    (tmp_path / "outreach.toml").write_text(deployment, encoding="utf-8")
    (tmp_path / "campaigns").mkdir(exist_ok=True)
    for name, text in (campaigns or {}).items():
        (tmp_path / "campaigns" / f"{name}.toml").write_text(text, encoding="utf-8")


def validates(tmp_path: Path, plugins=None):
    return load_project(tmp_path / "outreach.toml", plugins or get_plugins(), environ=SECRETS)


def test_root_deployment_reference_validates(tmp_path):
    """The reference as written validates on a PostgreSQL ledger; on SQLite `[workers]` is refused
    (it says so), and the rest validates without it."""
    reference = block("README.md", 'timezone = "America/Los_Angeles"')
    on_postgresql = reference.replace('ledger = "sqlite:///outreach.db"',
                                      'ledger = "postgresql://outreach@localhost/outreach"', 1)
    assert on_postgresql != reference
    project_with(tmp_path, on_postgresql)
    project = validates(tmp_path)
    assert set(project.channels) == {"email", "sms"} and len(project.caps) == 2
    assert project.workers is not None and project.workers.shards == 8
    assert project.serve is not None and project.serve.public_url.endswith("/outreach")

    project_with(tmp_path, reference)
    with pytest.raises(ConfigError, match="PostgreSQL"):
        validates(tmp_path)
    project_with(tmp_path, reference.split("[workers]")[0])
    assert validates(tmp_path).workers is None


def _serve_block() -> str:
    return block("README.md", "[serve]\npublic_url")


def test_root_serve_table_validates_and_the_app_serves_every_route_it_names(tmp_path):
    """The Listening section's [serve] table validates, and its endpoint table names the routes
    the application really has."""
    project_with(tmp_path, 'timezone = "UTC"\n[audience]\ncustomers = "data/customers.csv"\n'
                 '[channels.email]\nplugin = "outbox-email"\npath = "outbox"\n' + _serve_block())
    project = validates(tmp_path)
    cfg = project.serve
    assert cfg is not None and cfg.public_url == "https://mail.example.com/outreach"
    assert cfg.max_body == 1048576 and cfg.replay_window.total_seconds() == 300
    assert cfg.token_secret.env == "OUTREACH_TOKEN_SECRET"
    assert cfg.twilio_auth_token is not None and cfg.sendgrid_verification_key is not None

    from outreach.ledger import Ledger
    from outreach.serve.app import create_app, settings_of
    from outreach.serve.context import ServeContext

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        app = create_app(ServeContext(project, ledger, settings_of(project)))
        served = {(r.method, r.resource.canonical) for r in app.router.routes()
                  if r.resource is not None}
    finally:
        ledger.close()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Listening: `outreach serve`")[1].split("\n## ")[0]
    for method, path in [("POST", "/u/{token}"), ("GET", "/u/{token}"), ("GET", "/f/{token}"),
                         ("POST", "/f/{token}"), ("GET", "/healthz")]:
        assert (method, path) in served
        assert path.replace("{token}", "TOKEN") in section


def test_root_provider_webhook_addresses_are_routes_of_the_app(tmp_path):
    """The addresses the Provider webhooks part says to paste are public_url followed by a route
    the application really serves, with POST."""
    project_with(tmp_path, 'timezone = "UTC"\n[audience]\ncustomers = "data/customers.csv"\n'
                 '[channels.email]\nplugin = "outbox-email"\npath = "outbox"\n' + _serve_block())
    project = validates(tmp_path)
    from outreach.ledger import Ledger
    from outreach.serve.app import create_app, settings_of
    from outreach.serve.context import ServeContext

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        app = create_app(ServeContext(project, ledger, settings_of(project)))
        served = {(r.method, r.resource.canonical) for r in app.router.routes()
                  if r.resource is not None}
    finally:
        ledger.close()
    urls = [line.split()[-1] for line in block("README.md", "SendGrid  Settings").splitlines()]
    assert len(urls) == 3
    for url in urls:
        assert url.startswith(project.serve.public_url + "/")
        path = url[len(project.serve.public_url):].replace("TOKEN", "{token}")
        assert ("POST", path) in served, path


def test_root_systemd_unit_and_nginx_site_fit_together():
    """The unit runs a valid `outreach serve` command line; nginx proxies the path of
    public_url to the port the unit listens on and accepts the bodies max_body accepts."""
    import configparser

    from outreach.cli import serve

    unit = configparser.ConfigParser(interpolation=None)
    unit.read_string(block("README.md", "# /etc/systemd/system/outreach-serve.service"))
    words = shlex.split(unit["Service"]["ExecStart"])
    assert words[0].endswith("/outreach") and words[1] == "serve"
    ctx = serve.make_context("serve", words[2:])  # raises on an option serve does not have
    assert unit["Install"]["WantedBy"] == "multi-user.target" and unit["Service"]["Restart"]

    site = block("README.md", "# /etc/nginx/conf.d/outreach.conf")
    assert site.count("{") == site.count("}")
    for raw in site.splitlines():
        line = raw.split("#", 1)[0].strip()
        assert not line or line.endswith(("{", "}", ";")), f"not a directive: {raw}"
    serve_toml = tomllib.loads(_serve_block())["serve"]
    path = serve_toml["public_url"].split("mail.example.com", 1)[1]
    assert f"location {path}/ {{" in site
    assert f"proxy_pass http://{ctx.params['host']}:{ctx.params['port']}/;" in site
    size = re.search(r"client_max_body_size (\d+)m;", site)
    assert size and int(size.group(1)) * 1024 * 1024 == serve_toml["max_body"]
    assert "server_name mail.example.com;" in site


def test_root_rate_budget_sketch_matches_the_code():
    """The README's sketch of the shared rate budget names the table and statement the code uses."""
    sketch = block("README.md", "reserve k slots:")
    source = (REPO / "outreach" / "ratelimit.py").read_text(encoding="utf-8")
    assert "UPDATE" in sketch and "RETURNING" in sketch
    assert "outreach_rate_budget" in source and "RETURNING" in source


def test_root_campaign_reference_validates_in_the_bakery(tmp_path):
    subprocess.run([sys.executable, "-m", "outreach", "init", "shop"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    shop = tmp_path / "shop"
    (shop / "campaigns" / "win-back.toml").write_text(block("README.md", 'name = "win-back"'),
                                                      encoding="utf-8")
    campaign = load_project(shop / "outreach.toml", get_plugins()).campaigns["win-back"]
    assert campaign.send_at is not None and campaign.where


def test_root_channel_example_registers_and_sends(outreach_project):
    entry = tomllib.loads(block("README.md", "# pyproject.toml"))
    assert entry["project"]["entry-points"]["outreach"] == {"whatsapp": "outreach_whatsapp"}
    plugin = types.ModuleType("outreach_whatsapp")
    exec(block("README.md", "# outreach_whatsapp/__init__.py"), plugin.__dict__)
    p = outreach_project
    p.environ["WHATSAPP_TOKEN"] = SECRETS["WHATSAPP_TOKEN"]
    p.configure(channels='[channels.wa]\nplugin = "whatsapp"\nconsent = "sms"\n')
    p.customers("c1,Ani,P,,+37491234567,Asia/Yerevan,hy,no,yes,")
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("thanks", '''
        rule = "thank_you"
        channels = ["wa"]
        [wa]
        body = "Thank you, {{ customer.first_name }}"
    ''')
    report = p.run("2026-11-24T10:00", plugins=get_plugins(extra=[plugin]))
    assert report.campaigns["thanks"].sent == 1


CHANNEL = '[channels.email]\nplugin = "outbox-email"\n'


def test_root_audience_examples_validate(tmp_path):
    both = block("README.md", "[audience]                         # CSV")
    csv, sql = both.split("\n[audience]", 1)
    project_with(tmp_path, 'timezone = "UTC"\n' + csv + "\n" + CHANNEL)
    assert validates(tmp_path).source_settings["delimiter"] == ","
    project_with(tmp_path, 'timezone = "UTC"\n[audience]' + sql + "\n" + CHANNEL)
    project = load_project(tmp_path / "outreach.toml", get_plugins(),
                           environ={"SHOP_DB_PASSWORD": "readme-password"})
    assert project.source_cls.type_name == "sql"


def test_root_export_preset_example_validates(tmp_path):
    preset = block("README.md", '[audience]\nformat = "shopify"')
    # The example shows the keys a preset adds; the files are the CSV ones above.
    preset = preset.replace("[audience]\n", '[audience]\ncustomers = "data/customers.csv"\n', 1)
    project_with(tmp_path, 'timezone = "UTC"\n' + preset + "\n" + CHANNEL)
    assert validates(tmp_path).source_cls.type_name == "csv"


def test_root_rule_example_is_run_by_test_readme():
    assert "def test_the_rule_example_registers_and_sends" in \
        (REPO / "tests" / "test_readme.py").read_text(encoding="utf-8")


def test_sendgrid_channel_example_validates(tmp_path):
    table = block("plugins/outreach-sendgrid/README.md", "[channels.email]")
    project_with(tmp_path, 'timezone = "UTC"\n[audience]\ncustomers = "data/customers.csv"\n'
                 + table)
    assert validates(tmp_path).channels["email"].rate_limit == 50


def test_twilio_examples_validate_together(tmp_path):
    readme = "plugins/outreach-twilio/README.md"
    entry = tomllib.loads(block(readme, "[project.entry-points.outreach]"))
    pyproject = tomllib.loads((REPO / "plugins/outreach-twilio/pyproject.toml").read_text())
    assert entry["project"]["entry-points"] == pyproject["project"]["entry-points"]
    project_with(tmp_path, 'timezone = "UTC"\n[audience]\ncustomers = "data/customers.csv"\n'
                 'events = "data/events.csv"\n' + block(readme, "# outreach.toml"),
                 {"thank-you": block(readme, "# campaigns/thank-you.toml")})
    project = validates(tmp_path)
    assert project.campaigns["thank-you"].templates["sms"].options == {"max_segments": 2}


def test_root_experiment_campaign_validates_in_the_bakery(tmp_path):
    subprocess.run([sys.executable, "-m", "outreach", "init", "shop"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    shop = tmp_path / "shop"
    (shop / "campaigns" / "spring-sale.toml").write_text(block("README.md", 'name = "spring-sale"'),
                                                         encoding="utf-8")
    campaign = load_project(shop / "outreach.toml", get_plugins()).campaigns["spring-sale"]
    assert campaign.holdout == 0.1 and campaign.conversion.event == "purchase"
    assert [(v.name, v.weight) for v in campaign.variants] == [("plain", 1.0), ("discount", 2.0)]
    assert campaign.variants[1].templates["email"].fields["subject"].startswith("10 % off")


# ------------------------------------------------------------------------------------ Python
@pytest.mark.parametrize("readme, starting", [
    ("README.md", "from outreach.testing import FakeProvider"),
    ("README.md", "from outreach.testing import SourceData"),
    ("plugins/outreach-sendgrid/README.md", "from outreach.settings import Secret"),
    ("plugins/outreach-twilio/README.md", "from outreach_twilio import TwilioSMS"),
])
def test_python_examples_run(readme, starting):
    exec(compile(block(readme, starting), readme, "exec"), {})


@pytest.mark.parametrize("readme", READMES)
def test_shell_examples_name_real_commands(readme):
    for language, code in blocks(readme):
        if language == "sh":
            check_shell(code)


# ------------------------------------------------------------------------------------ coverage
CHECKED: dict[str, list[str]] = {
    "README.md": ["python3 dev.py demo", 'timezone = "America/Los_Angeles"', 'name = "win-back"',
                  "# pyproject.toml", "# outreach_whatsapp/__init__.py",
                  "from datetime import timedelta", "from outreach.testing import FakeProvider",
                  "from outreach.testing import SourceData", "[audience]                         # CSV",
                  '[audience]\nformat = "shopify"',
                  "python3 dev.py test", "pip install outreach outreach-sendgrid",
                  "pip install 'outreach[workers]'", "reserve k slots:",
                  "pip install 'outreach[serve]'", "[serve]\npublic_url",
                  "# /etc/systemd/system/outreach-serve.service",
                  "# /etc/nginx/conf.d/outreach.conf",
                  "outreach report --since", 'name = "spring-sale"',
                  "# outreach_no_contact/__init__.py", "SendGrid  Settings"],
    "plugins/outreach-sendgrid/README.md": ["pip install outreach-sendgrid", "[channels.email]",
                                            "from outreach.settings import Secret",
                                            'pip install -e "plugins/outreach-sendgrid[test]"'],
    "plugins/outreach-twilio/README.md": ["[project.entry-points.outreach]",
                                          "pip install outreach-twilio", "# outreach.toml",
                                          "# campaigns/thank-you.toml",
                                          "from outreach_twilio import TwilioSMS",
                                          'pip install -e "plugins/outreach-twilio[test]"'],
}


@pytest.mark.parametrize("readme", READMES)
def test_every_example_is_checked(readme):
    unclaimed = [code.splitlines()[0] for _, code in blocks(readme)
                 if not any(code.lstrip().startswith(s) for s in CHECKED[readme])]
    assert unclaimed == [], (f"{readme} has examples no test runs: add a check for each to "
                             "tests/test_readme_examples.py")


def test_the_policy_plugin_example_reads_its_settings(tmp_path):
    """The README's policy plugin: its settings table is validated and decides who is refused."""
    from outreach.testing import Project

    module = types.ModuleType("outreach_no_contact")
    exec(compile(block("README.md", "# outreach_no_contact/__init__.py"), "README.md", "exec"),
         module.__dict__)
    plugins = get_plugins(extra={"no_contact": module}, load_entry_points=False)
    p = Project(tmp_path)
    p.configure(extra='[plugins.no_contact]\ntags = ["legal-hold"]\n')
    p.customers("c1,Ani,P,ani@example.com,,,hy,yes,no,legal-hold\n"
                "c2,Bo,Q,bo@example.com,,,en,yes,no,do-not-contact")
    p.campaign("news", """
        rule = "newsletter"
        schedule = "0 9 * * *"
        start = "2026-11-01"
        channels = ["email"]
        [email]
        subject = "News"
        body = "..."
    """)
    report = p.run("2026-11-24T10:00", plugins=plugins)
    assert dict(report.campaigns["news"].reasons) == {"tagged legal-hold": 1}
    assert [m["to"] for m in p.outbox("email")] == ["bo@example.com"]
    p.configure(extra='[plugins.no_contact]\ntag = ["legal-hold"]\n')
    with pytest.raises(ConfigError, match=r"plugins\.no_contact\.tag: unknown key"):
        p.load(plugins)
