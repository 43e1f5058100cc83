"""The reference documentation, generated from what the code declares.

Every key of ``outreach.toml`` and of a campaign file is a :class:`~outreach.settings.Setting`
(the deployment's own tables in :func:`outreach.config.reference_tables`; the sources', channels'
and rules' on their classes), and every command is a click command: the reference pages are made
from those, when the documentation is built (``docs/hooks.py``), so they cannot drift from the
code. A setting without ``help`` is reported by :func:`missing_help` (a test fails on it).
"""

from __future__ import annotations

import html
from datetime import time, timedelta
from typing import Iterator, Mapping

import click

from outreach.channel import Channel
from outreach.config import DEPLOYMENT_TABLES, reference_tables
from outreach.plugins import Plugins
from outreach.settings import Setting, format_duration

_KIND = {"str": "string", "path": "path", "int": "integer", "float": "number", "number": "number",
         "bool": "true/false", "duration": "duration", "clock": "time of day", "list": "list",
         "table": "table"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """Inline code for a table cell: a ``|`` in backticks would end the cell (or show its escape)."""
    if "|" not in text:
        return f"`{text}`"
    return "<code>" + html.escape(text).replace("|", "&#124;") + "</code>"


def _default(setting: Setting) -> str:
    if setting.required:
        return "**required**"
    value = setting.default
    if value is None or value == "" or value == []:
        return "–"
    if isinstance(value, timedelta):
        return f'`"{format_duration(value)}"`'
    if isinstance(value, time):
        return f'`"{value:%H:%M}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, list):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    return f"`{value}`"


def _kind(setting: Setting) -> str:
    kind = _KIND[setting.kind]
    if setting.choices:
        kind += ": " + ", ".join(f"`{c}`" for c in setting.choices)
    if setting.minimum is not None:
        kind += f", at least {setting.minimum:g}" + (" s" if setting.kind == "duration" else "")
    return kind


def settings_table(declared: Mapping[str, Setting]) -> str:
    """A markdown table of settings: key, kind, default, what it does."""
    rows = ["| key | kind | default | what |", "|---|---|---|---|"]
    for name, setting in declared.items():
        if setting.secret:
            env = f"`{setting.env}`" if setting.env else "none"
            rows.append(f"| `{name}_env` | secret, read from the environment | {env} | "
                        f"{_cell(setting.help)}: the name of the environment variable holding it "
                        "(never the secret itself) |")
        else:
            rows.append(f"| `{name}` | {_kind(setting)} | {_default(setting)} | "
                        f"{_cell(setting.help)} |")
    return "\n".join(rows)


def _origin(plugins: Plugins, kind: str, name: str) -> str:
    plugin = plugins.registry.origin.get((kind, name), "")
    dist = plugins.distributions.get(plugin)
    return f"from the `{dist[0]}` distribution" if dist else "built in"


def _summary(cls: type) -> str:
    """The first line of a class's docstring, without its full stop."""
    return (cls.__doc__ or "").strip().splitlines()[0].rstrip(".") if cls.__doc__ else cls.__name__


def deployment_reference(plugins: Plugins) -> str:
    """The ``outreach.toml`` reference: every table and key, with the installed types' settings."""
    tables = reference_tables()
    registry = plugins.registry
    out = ["## Top level", "", settings_table(tables[""]), ""]
    out += ["## `[audience]`", "",
            "Where customers and their events come from. `source` names a registered source "
            "type (default `\"csv\"`); the other keys are that type's.", ""]
    for name, cls in sorted(registry.sources.items()):
        out += [f'### `source = "{name}"`', "", f"{_summary(cls)} ({_origin(plugins, 'sources', name)}).", "", settings_table(cls.settings), ""]
    out += ["## `[channels.NAME]`", "",
            "A channel named NAME, which campaigns refer to by that name. `plugin` names its type; "
            "every channel takes these keys, and its type's own below.", "",
            settings_table(Channel.CORE_SETTINGS), ""]
    for name, ch in sorted(registry.channels.items()):
        own = ch.settings or {}
        out += [f'### `plugin = "{name}"`', "",
                f"{_summary(ch)} ({_origin(plugins, 'channels', name)}; "
                f"delivers to the customer's {ch.address}).", ""]
        out += [settings_table(own) if own else "No settings of its own.", ""]
    out += ["## `[plugins.NAME]`", "",
            "Settings of the plugin NAME (its entry-point name, as `outreach plugins` lists it), "
            "declared by the plugin with the `outreach_plugin_settings` hook.", ""]
    for name, declared in sorted(registry.settings.items()):
        out += [f"### `[plugins.{name}]`", "", settings_table(declared), ""]
    out += ["## `[[caps]]`", "", "Frequency caps: each `[[caps]]` table is one rolling window, "
            "counted over every campaign (transactional ones are exempt).", "",
            settings_table(tables["caps"]), ""]
    out += ["## `[quiet_hours]`", "", "One key per channel name: `{ start = \"21:00\", end = "
            "\"08:00\" }` in the recipient's local time, or `false` for none. Phone channels "
            "default to 21:00–08:00.", "", settings_table(tables["quiet_hours"]), ""]
    out += ["## `[retry]`", "", "How transient failures (429, 5xx, a refused connection) are "
            "retried.", "", settings_table(tables["retry"]), ""]
    return "\n".join(out)


def campaign_reference(plugins: Plugins) -> str:
    """The campaign file reference: top-level keys, each rule's ``[params]``, each channel type's
    section."""
    tables = reference_tables()
    registry = plugins.registry
    out = ["## Top level", "", settings_table(tables["campaign"]), ""]
    out += ["## `[params]`: the rule's parameters", ""]
    for name, rule in sorted(registry.rules.items()):
        out += [f'### `rule = "{name}"`', "",
                f"{_summary(rule)} ({_origin(plugins, 'rules', name)}; default priority "
                f"{rule.default_priority}, {rule.default_category}"
                f"{'; needs a schedule' if rule.requires_schedule else ''}).", ""]
        out += [settings_table(rule.params) if rule.params else "No parameters.", ""]
    out += ["## `[CHANNEL]`: templates for a channel", "",
            "A table named after each channel the campaign sends on (`[email]`, `[sms]`), holding "
            "the channel type's template fields (Jinja; `FIELD_file = \"templates/x.html\"` reads "
            "one from a file) and options. `[CHANNEL.LOCALE]` tables (`[email.hy]`) override "
            "fields for customers of that locale.", ""]
    for name, ch in sorted(registry.channels.items()):
        out += [f'### A `plugin = "{name}"` channel', "", "| key | kind | what |", "|---|---|---|"]
        for field, spec in ch.template_fields.items():
            need = "template, **required**" if spec.required else "template"
            out.append(f"| `{field}` | {need} | {_cell(spec.help)} |")
        for key, setting in ch.campaign_options.items():
            out.append(f"| `{key}` | option: {_kind(setting)} | {_cell(setting.help)} |")
        out.append("")
    out += ["## `[[variants]]`: A/B variants", "",
            "Each `[[variants]]` table is one variant (at least two): a customer gets one by a hash "
            "of campaign and customer (sticky across runs and resends), recorded with each message. "
            "`[variants.CHANNEL]` (and `[variants.CHANNEL.LOCALE]`) hold only the template fields "
            "that differ from the campaign's.", "", settings_table(tables["campaign.variants"]), ""]
    out += ["## `conversion`", "",
            "What counts as success for `outreach report`'s variants and holdout: "
            "`conversion = { event = \"purchase\", within = \"14d\" }`.", "",
            settings_table(tables["campaign.conversion"]), ""]
    out += ["## `[sample]`", "",
            "Values for the sample render `outreach validate` checks templates with: "
            "`[sample.customer]` overrides the sample customer's fields, `[sample.event]` gives "
            "the event's attributes, and any other key is a template variable.", ""]
    return "\n".join(out)


def _walk(command: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from _walk(command.commands[name], [*path, name])


def cli_reference(root: click.Group) -> str:
    """The command-line reference: every command's usage, help and options, from click."""
    out: list[str] = []
    for path, command in _walk(root, ["outreach"]):
        ctx = click.Context(command, info_name=" ".join(path))
        heading = "#" * min(len(path) + 2, 4)
        out += [f"{heading} `{' '.join(path)}`", "", "```text",
                command.get_usage(ctx).replace("Usage: ", ""), "```", "",
                _help_text(command), ""]
        options = [p for p in command.get_params(ctx) if isinstance(p, click.Option)]
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        if arguments:
            out += ["| argument | values |", "|---|---|"]
            for a in arguments:
                values = (", ".join(f"`{c}`" for c in a.type.choices)
                          if isinstance(a.type, click.Choice) else a.type.name)
                out.append(f"| `{a.human_readable_name}` | {values}"
                           f"{'' if a.required else ' (optional)'} |")
            out.append("")
        if options:
            out += ["| option | what |", "|---|---|"]
            for o in options:
                record = o.get_help_record(ctx)
                if record is None or "--help" in o.opts:
                    continue
                names, text = record
                out.append(f"| {_code(names)} | {_cell(text)} |")
            out.append("")
    return "\n".join(out)


def _help_text(command: click.Command) -> str:
    """A command's help text as paragraphs (click's own formatting, without its indentation)."""
    return "\n".join(line.strip() for line in (command.help or "").strip().splitlines())


def missing_help(plugins: Plugins) -> list[str]:
    """Every declared setting or template field whose ``help`` is empty, by where it is declared."""
    missing = []
    for table, declared in reference_tables().items():
        missing += [f"{table or 'outreach.toml'}.{k}" for k, s in declared.items() if not s.help]
    registry = plugins.registry
    missing += [f"[channels.NAME].{k}" for k, s in Channel.CORE_SETTINGS.items() if not s.help]
    for name, cls in registry.sources.items():
        missing += [f"source {name}: {k}" for k, s in cls.settings.items() if not s.help]
    for name, ch in registry.channels.items():
        missing += [f"channel {name}: {k}" for k, s in {**ch.settings, **ch.campaign_options}.items()
                    if not s.help]
        missing += [f"channel {name}: template {k}" for k, t in ch.template_fields.items()
                    if not t.help]
    for name, rule in registry.rules.items():
        missing += [f"rule {name}: params.{k}" for k, s in rule.params.items() if not s.help]
    for name, declared in registry.settings.items():
        missing += [f"[plugins.{name}].{k}" for k, s in declared.items() if not s.help]
    return missing


def undocumented_tables() -> list[str]:
    """Tables ``outreach.toml`` accepts that :func:`deployment_reference` does not describe."""
    described = {"audience", "channels", "plugins", *reference_tables()}
    return [t for t in DEPLOYMENT_TABLES if t not in described]

