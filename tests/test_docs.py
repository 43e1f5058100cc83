"""The documentation builds without a warning and documents every hook, setting, filter and
command, with their exact argument names (as datasette's documentation tests do)."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import click
import pytest

from outreach import hookspecs
from outreach.localise import FILTERS
from outreach.plugins import get_plugins
from outreach.reference import cli_reference, missing_help, undocumented_tables

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _hooks() -> list[tuple[str, list[str]]]:
    return [(name, list(inspect.signature(fn).parameters))
            for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if name.startswith("outreach_")]


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    try:
        import material  # noqa: F401
        import mkdocs  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("mkdocs and mkdocs-material are not installed: pip install -e '.[docs]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr
    toml = (tmp_path / "site" / "reference" / "outreach-toml" / "index.html").read_text()
    assert "send_at" in (tmp_path / "site" / "reference" / "campaigns" / "index.html").read_text()
    assert "claim_ttl" in toml and "<!-- generated" not in toml


@pytest.mark.parametrize("hook, args", _hooks(), ids=[h for h, _ in _hooks()])
def test_every_hook_has_a_heading_with_its_exact_arguments_and_a_working_example(hook, args):
    page = _page("reference/hooks.md")
    heading = f"## {hook}({', '.join(args)})"
    assert heading in page.splitlines(), (
        f"docs/reference/hooks.md has no heading {heading!r}: document the hook with its exact "
        "arguments, and an example")
    section = page.split(heading, 1)[1].split("\n## ", 1)[0]
    examples = re.findall(r"```python\n(.*?)```", section, re.S)
    assert examples, f"the {hook} section of docs/reference/hooks.md has no python example"
    plugin = types.ModuleType(f"docs_example_{hook}")
    exec(compile(examples[0], f"hooks.md: {hook}", "exec"), plugin.__dict__)
    assert hasattr(plugin, hook), f"the {hook} example does not define {hook}"
    plugins = get_plugins(extra=[plugin], load_entry_points=False)
    assert plugins.registry.failures == [], plugins.registry.failures
    assert plugin in [p for _, p in plugins.pm.list_name_plugin()]  # pluggy took its signature


def test_every_documented_hook_exists():
    known = {h for h, _ in _hooks()}
    documented = set(re.findall(r"^## (outreach_\w+)\(", _page("reference/hooks.md"), re.M))
    assert documented - known == set()


def test_every_setting_says_what_it_does():
    assert missing_help(get_plugins()) == [], (
        "these settings have no help text, so the generated reference cannot say what they do: "
        "give each Setting(...) a help=")
    assert undocumented_tables() == [], (
        "outreach.toml accepts these tables but the reference does not describe them: add them "
        "to outreach.config.reference_tables()")


def test_every_command_and_option_says_what_it_does():
    from outreach.cli import cli

    missing = []
    for name, command in cli.commands.items():
        if not (command.help or "").strip():
            missing.append(f"outreach {name}")
        missing += [f"outreach {name} {p.opts[0]}" for p in command.params
                    if isinstance(p, click.Option) and not p.help]
    assert missing == [], "these commands or options have no help text for the CLI reference"
    reference = cli_reference(cli)
    assert [n for n in cli.commands if f"### `outreach {n}`" not in reference] == []


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_every_template_filter_is_documented_with_its_exact_arguments(name):
    params = list(inspect.signature(FILTERS[name]).parameters.values())[2:]  # context, value
    args = ", ".join(p.name if p.default is inspect.Parameter.empty
                     else f"{p.name}={p.default!r}".replace("'", '"') for p in params)
    usage = f"{{{{ value | {name}({args}) }}}}"
    page = _page("reference/templates.md")
    assert f"### {name}\n" in page and usage in page, (
        f"docs/reference/templates.md should have a heading '### {name}' and the usage {usage!r}")


def test_every_page_is_in_the_navigation():
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert [p for p in pages if f": {p}" not in nav] == []


def test_the_tutorial_shows_what_init_prints(tmp_path):
    shown = re.search(r"```text\n(wrote .*?)```", _page("tutorial.md"), re.S).group(1)
    result = subprocess.run([sys.executable, "-m", "outreach", "init", "shop"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout == shown


def test_the_tutorials_campaign_is_valid_in_the_bakery(tmp_path):
    subprocess.run([sys.executable, "-m", "outreach", "init", "shop"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    campaign = re.search(r'```toml\n(name = "welcome-back".*?)```', _page("tutorial.md"), re.S)
    (tmp_path / "shop" / "campaigns" / "welcome-back.toml").write_text(campaign.group(1),
                                                                       encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "outreach", "validate"], cwd=tmp_path / "shop",
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "welcome-back" in result.stdout


def test_shell_completion_works_as_documented(tmp_path):
    assert "_OUTREACH_COMPLETE=bash_source outreach" in _page("how-to/shell-completion.md")
    outreach = shutil.which("outreach", path=str(Path(sys.executable).parent))
    assert outreach, "the outreach command is not installed beside this Python"
    script = subprocess.run([outreach], env={**os.environ, "_OUTREACH_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "complete -o nosort -F" in script.stdout
    words = subprocess.run(
        [outreach], capture_output=True, text=True, timeout=60,
        env={**os.environ, "_OUTREACH_COMPLETE": "bash_complete", "COMP_WORDS": "outreach ne",
             "COMP_CWORD": "1"})
    assert "plain,new-plugin" in words.stdout.split()


def test_the_filter_examples_read_as_documented():
    from outreach import templates

    page = _page("reference/templates.md")
    header = re.search(r"^\| template \| (.*) \|$", page, re.M).group(1).split(" | ")
    rows = re.findall(r"^\| <code>(\{\{.*?\}\})</code> \| (.*) \|$", page, re.M)
    assert len(rows) == 3
    for source, cells in rows:
        source = source.replace("&#124;", "|")
        for locale, shown in zip(header, cells.split(" | ")):
            got = templates.render("body", source, {
                "customer": {"locale": locale.strip("`"), "timezone": "America/Los_Angeles"},
                "event": {"time": "2026-12-01T09:00:00-08:00"}})
            assert got.replace("\u00a0", " ") == shown, (source, locale)
