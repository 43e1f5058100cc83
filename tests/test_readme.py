"""The README's examples work as written."""

from __future__ import annotations

import types
from pathlib import Path

from outreach.plugins import get_plugins

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _snippet(starting: str) -> str:
    start = README.index(starting)
    return README[start:README.index("```", start)]


def test_the_rule_example_registers_and_sends(sqlite_project):
    namespace: dict = {}
    exec(_snippet("from datetime import timedelta\n\nfrom outreach import hookimpl"), namespace)
    plugin = types.ModuleType("first_order_example")
    plugin.outreach_register_rules = namespace["outreach_register_rules"]
    p = sqlite_project
    p.customers("c1,Ani,P,ani@example.com,,,hy,yes,no,")
    p.events("e1,c1,purchase,2026-11-24T09:00:00-08:00")
    p.campaign("welcome", '''
        rule = "first_order"
        channels = ["email"]
        [email]
        subject = "Welcome {{ customer.first_name }}"
        body = "Order {{ event.id }}"
    ''')
    p.run("2026-11-24T10:00", plugins=get_plugins(extra=[plugin]))
    assert [(m["subject"], m["body"]) for m in p.outbox("email")] == [("Welcome Ani", "Order e1")]


def test_every_command_is_documented():
    from outreach.cli import cli

    assert [name for name in cli.commands if f"`outreach {name}" not in README] == []


def test_quick_start_commands_are_the_ones_ci_runs():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "python3 dev.py demo" in README and "python3 dev.py test" in README
    assert "python3 dev.py test" in ci


def _exit_code_table(text: str) -> dict[int, str]:
    start = text.index("| code | meaning |")
    rows = text[start:text.index("\n\n", start)].splitlines()[2:]
    return {int(row.split("|")[1]): row.split("|")[2].strip() for row in rows}


def test_the_exit_code_tables_are_the_exit_codes():
    from outreach.errors import ExitCode

    cli_page = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "cli.md").read_text(
        encoding="utf-8")
    for text in (README, cli_page):
        table = _exit_code_table(text)
        assert sorted(table) == sorted(int(c) for c in ExitCode)
        assert "ledger unreachable or unreadable" in table[ExitCode.INTERNAL]
        assert "another run holds the ledger" in table[ExitCode.LOCKED]
        assert "invalid configuration" in table[ExitCode.CONFIG]
    assert "`outreach.errors.ExitCode` (" + ", ".join(f"`{c.name}`" for c in ExitCode) + ")" \
        in README.replace("\n", " ")
