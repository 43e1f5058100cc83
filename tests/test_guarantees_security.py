"""Security: templates stay in the sandbox, secrets never leave the environment, files stay inside.

* Known Jinja sandbox escapes, in a campaign's templates and in its ``where``: validation refuses the
  campaign (naming the file and key) and nothing is planned or sent.
* Unique marker values in TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN / SENDGRID_API_KEY: after runs that
  send, fail, retry and lose answers, they appear in no command's output, no ledger table and no
  DEBUG log line (in-process and in a real process with logging on).
* A campaign's ``*_file`` templates cannot be read from outside the project folder (``..``, an
  absolute path, a symlink out), and what such a file holds never shows up anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys

import pytest
from guarantees_support import (
    all_table_text, audience, newsletter, phone, provider_channels, run_inprocess,
)

from outreach.testing import Project
from outreach_sendgrid.testing import FakeSendGrid
from outreach_twilio.testing import FakeTwilio

NOW = "2026-11-24T00:10"

#: Each tries to reach Python objects behind the sandbox (classes, globals, builtins, the loader)
#: or to change the data it is given.
TEMPLATE_ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ customer.__class__.__init__.__globals__ }}",
    "{{ customer.first_name.__class__.__mro__ }}",
    "{{ occurrence.__class__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__['__builtins__'] }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ lipsum.__globals__.__builtins__.__import__('os') }}",
    "{{ range.__self__ }}",
    "{{ dict.__base__.__subclasses__() }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__ }}",
    "{{ ''|attr('__class__')|attr('__mro__') }}",
    "{{ customer|attr('__class__') }}",
    "{{ customer['__class__'] }}",
    "{{ customer.__dict__ }}",
    "{{ customer.items.__self__ }}",
    "{{ '{0.__class__.__mro__}'.format(customer) }}",
    "{{ '{0.__init__.__globals__}'.format(lipsum) }}",
    "{{ '%s'|format(customer.__class__) }}",
    "{{ customer.first_name.format_map.__self__ }}",
    "{{ customer.first_name.translate.__globals__ }}",
    "{{ customer.update({'first_name': 'x'}) }}",
    "{{ customer.pop('first_name') }}",
    "{{ customer.tags.append('x') }}",
    "{% set x = customer.__setitem__('a', 1) %}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{% extends '/etc/passwd' %}",
    "{{ config.items() }}",
    "{{ request.application.__globals__ }}",
    "{{ range(10**8)|list|length }}",
]

WHERE_ESCAPES = [
    "customer.__class__.__mro__",
    "customer.first_name.__class__.__base__.__subclasses__()|length > 0",
    "lipsum.__globals__.os",
    "cycler.__init__.__globals__",
    "namespace.__init__.__globals__",
    "'{0.__class__}'.format(customer)",
    "customer.update({'a': 1})",
    "customer.tags.append('x') or true",
    "(customer|attr('__class__')).__mro__",
    "range(10**6)|length > 1",
]


def _toml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _refused(p: Project, key: str, capsys) -> None:
    code, out, err = run_inprocess(p, "validate", capsys=capsys)
    assert code == 2 and "Traceback" not in err, (code, err)
    assert f"campaigns/news.toml: {key}" in err, err
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    assert code == 2 and "Traceback" not in err, (code, err)
    assert p.outbox("sms") == [] and p.messages() == []


@pytest.mark.parametrize("template", TEMPLATE_ESCAPES)
def test_sandbox_escape_in_a_template_is_refused(sqlite_project, template, capsys):
    """Security guarantee: a template reaching Python internals is refused at validation; nothing is sent."""
    p = sqlite_project
    p.customers(audience(2))
    p.campaign("news", newsletter(body="BODY").replace('"BODY"', _toml(template)))
    _refused(p, "sms.body", capsys)


@pytest.mark.parametrize("where", WHERE_ESCAPES)
def test_sandbox_escape_in_where_is_refused(sqlite_project, where, capsys):
    """Security guarantee: a `where` reaching Python internals is refused at validation; nothing is sent."""
    p = sqlite_project
    p.customers(audience(2))
    p.campaign("news", f"where = {_toml(where)}\n" + newsletter())
    _refused(p, "where", capsys)


@pytest.mark.parametrize("probe", ["customer.__class__ is defined",
                                   "(customer|attr('__class__')) is defined",
                                   "lipsum.__globals__ is defined"])
def test_probing_for_internals_finds_nothing(sqlite_project, probe, capsys):
    """Security guarantee: asking whether an internal exists only ever answers no (nobody selected)."""
    p = sqlite_project
    p.customers(audience(2))
    p.campaign("news", f"where = {_toml(probe)}\n" + newsletter())
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    assert code in (0, 2) and "Traceback" not in err
    assert p.outbox("sms") == [] and p.messages() == []


# ---------------------------------------------------------------------------------------- secrets
@pytest.fixture
def markers():
    return {
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "TWILIO_AUTH_TOKEN": "twtok" + secrets.token_hex(12),
        "SENDGRID_API_KEY": "SG.sgkey" + secrets.token_hex(12),
    }


def _secret_project(root, twilio: FakeTwilio, sendgrid: FakeSendGrid, env: dict) -> Project:
    p = Project(root)
    p.environ.update(env)
    p.configure(channels=provider_channels(sendgrid, twilio, timeout=0.5, sms_concurrency=1))
    p.customers(audience(6))
    p.campaign("news", newsletter())
    p.campaign("letter", newsletter(channel="email"))
    return p


def _faults(twilio: FakeTwilio, sendgrid: FakeSendGrid) -> None:
    """Every kind of outcome, so error texts (where a secret could slip in) are produced."""
    twilio.rate_limit_next(1, retry_after=0)       # 429, retried
    twilio.error_for(phone(1), status=400, code=21614)  # refused for good, suppressed
    twilio.error_for(phone(2), status=401, code=20003)  # "Authenticate"
    sendgrid.fail_next(1, status=401, body=sendgrid.error_body(401, "bad key"))


@pytest.mark.slow
def test_secrets_never_appear_in_output_ledger_or_debug_logs(tmp_path, markers, capsys, caplog,
                                                            monkeypatch):
    """Security guarantee: provider secrets never show in CLI output, the ledger or DEBUG logs."""
    for k, v in markers.items():
        monkeypatch.setenv(k, v)
    with FakeTwilio(markers["TWILIO_ACCOUNT_SID"], markers["TWILIO_AUTH_TOKEN"],
                    validate=False) as twilio, \
            FakeSendGrid(api_key=markers["SENDGRID_API_KEY"], validate=False) as sendgrid:
        p = _secret_project(tmp_path / "shop", twilio, sendgrid, markers)
        _faults(twilio, sendgrid)
        twilio.drop_next(1, after_handling=True)  # a lost answer: unknown
        seen: list[str] = []

        # A real process with every logger at DEBUG writing to stderr.
        debug = [sys.executable, "-c", "import logging, sys; logging.basicConfig(level=logging.DEBUG);"
                 " from outreach.cli import main; sys.argv[0] = 'outreach'; main()"]
        proc = subprocess.run([*debug, "run", "--json", "--now", NOW], cwd=p.root, text=True,
                              capture_output=True, env={**os.environ, **markers}, timeout=120)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
        assert "DEBUG" in proc.stderr  # logging really was on
        seen += [proc.stdout, proc.stderr]

        # The same again in this process, with the log captured at DEBUG, then every command.
        caplog.set_level(logging.DEBUG)
        _faults(twilio, sendgrid)
        commands = [
            ("run", "--json", "--now", "2026-11-24T01:10"),
            ("run", "--now", "2026-11-24T02:10"),
            ("plan", "--now", "2026-11-24T03:10"), ("plan", "--json", "--now", "2026-11-24T03:10"),
            ("dispatch", "--json"), ("plugins",), ("plugins", "--json"), ("validate",),
            ("validate", "--json"), ("status",), ("status", "--json"),
            ("history", "--customer", "c0", "--json"), ("history", "--customer", "c1"),
            ("history", "--customer", "c2", "--json"), ("resend", "--unknown"),
            ("resend", "--unknown", "--json"), ("suppress", "--list", "--json"),
            ("preview", "news", "--json"), ("preview", "letter"),
        ]
        for args in commands:
            code, out, err = run_inprocess(p, *args, capsys=capsys)
            assert "Traceback" not in err, (args, err)
            seen += [out, err]
        seen.append(caplog.text)
        seen.append(all_table_text(p))
        states = {r["state"] for r in p.messages()}

    assert {"sent", "failed", "unknown"} <= states, states  # the error paths really ran
    text = "\n".join(seen)
    for name, value in markers.items():
        assert value not in text, f"{name} leaked"
        assert value[4:20] not in text, f"part of {name} leaked"


def test_a_ledger_password_is_never_shown(sqlite_project, capsys):
    """Security guarantee: the ledger URL's password is masked in every error about the ledger."""
    p = sqlite_project
    password = "pw" + secrets.token_hex(10)
    p.ledger_url = f"postgresql://outreach:{password}@127.0.0.1:1/outreach"
    p.configure()
    p.customers(audience(1))
    p.campaign("news", newsletter())
    for args in (("run", "--json", "--now", NOW), ("status",), ("history", "--customer", "c0")):
        code, out, err = run_inprocess(p, *args, capsys=capsys)
        assert code in (2, 4) and "Traceback" not in err, (args, code, err)
        assert "cannot open the ledger" in err
        assert password not in out + err


# ---------------------------------------------------------------------------------------- files
@pytest.fixture
def outside(tmp_path):
    """A file outside the project whose content must never be read into a message."""
    secret = "OUTSIDE-" + secrets.token_hex(8)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "x.txt").write_text(secret + " {{ customer.first_name }}", encoding="utf-8")
    return folder, secret


def _body_file(p: Project, value: str, locale: bool = False) -> None:
    table = f"[sms]\nbody = \"Hi\"\n[sms.hy]\nbody_file = {_toml(value)}\n" if locale else \
        f"[sms]\nbody_file = {_toml(value)}\n"
    p.campaign("news", f'rule = "newsletter"\nschedule = "0 * * * *"\nstart = "2026-11-24"\n'
                       f'channels = ["sms"]\n{table}')


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink-file", "symlink-dir", "locale-dotdot"])
def test_a_campaign_cannot_read_files_outside_its_project(tmp_path, outside, how, capsys):
    """Security guarantee: `*_file` templates are read only from inside the project folder."""
    folder, secret = outside
    p = Project(tmp_path / "shop")
    p.customers(audience(2).replace(",en,", ",hy,"))
    if how == "dotdot":
        _body_file(p, "../elsewhere/x.txt")
    elif how == "absolute":
        _body_file(p, str(folder / "x.txt"))
    elif how == "symlink-file":
        (p.root / "templates").mkdir()
        (p.root / "templates" / "x.txt").symlink_to(folder / "x.txt")
        _body_file(p, "templates/x.txt")
    elif how == "symlink-dir":
        (p.root / "templates").symlink_to(folder, target_is_directory=True)
        _body_file(p, "templates/x.txt")
    else:
        _body_file(p, "../elsewhere/x.txt", locale=True)
    key = "sms.hy.body_file" if how == "locale-dotdot" else "sms.body_file"
    code, out, err = run_inprocess(p, "validate", capsys=capsys)
    assert code == 2 and f"campaigns/news.toml: {key}" in err and "outside the project" in err, err
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    assert code == 2 and p.outbox("sms") == [] and p.messages() == []
    assert secret not in out + err


def test_a_template_file_inside_the_project_is_used(sqlite_project, capsys):
    """Security guarantee (control): the same `body_file` inside the project folder works."""
    p = sqlite_project
    p.customers(audience(1))
    p.file("templates/x.txt", "Inside {{ customer.first_name }}")
    _body_file(p, "templates/x.txt")
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    assert code == 0, err
    assert [m["body"] for m in p.outbox("sms")] == ["Inside Name0"]
