"""``outreach new-plugin``: a plugin distribution whose tests pass as generated.

The templates (``templates/common`` plus one folder per kind) are filled in with
:class:`string.Template` (``${name}``; ``MODULE`` in a path is the module's name), so the Python
and TOML they hold stay readable, and a Jinja template inside a generated test needs no escaping.
"""

from __future__ import annotations

import re
import string
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from outreach import __version__
from outreach.errors import UsageError
from outreach.scaffold.files import write_tree

#: What ``outreach new-plugin KIND`` makes, and the class name suffix of each.
PLUGIN_KINDS = {
    "channel": ("Channel", "a channel: delivers messages through a provider's API"),
    "rule": ("Rule", "a rule: decides who a campaign writes to, and under which dedupe key"),
    "policy": ("Policy", "a policy step: may refuse or defer any send of any campaign"),
    "source": ("Source", "an audience source: streams customers and their events"),
}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def core_bound(version: str = __version__) -> str:
    """The version range of outreach a new plugin declares: this minor version (``>=0.1,<0.2``)."""
    major, minor = (int(p) for p in version.split(".")[:2])
    if major == 0:
        return f">={major}.{minor},<{major}.{minor + 1}"
    return f">={major}.{minor},<{major + 1}"


def plugin_variables(kind: str, name: str) -> dict[str, str]:
    """What the templates are filled in with, for plugin ``name`` of ``kind``."""
    if kind not in PLUGIN_KINDS:
        raise UsageError(f"no plugin kind {kind!r} (kinds: {', '.join(PLUGIN_KINDS)})")
    if not _NAME.match(name):
        raise UsageError(f"a plugin name is lower-case letters, digits and _, starting with a "
                         f"letter (it names the {kind} in campaigns and outreach.toml), got {name!r}")
    title = "".join(part.capitalize() for part in name.split("_"))
    suffix, what = PLUGIN_KINDS[kind]
    summary = {
        "channel": f"Send outreach messages through {title}.",
        "rule": f"The {name} rule for outreach campaigns.",
        "policy": f"The {name} policy step for outreach.",
        "source": f"Read the outreach audience from {title}.",
    }[kind]
    usage = {
        "channel": f'```toml\n# outreach.toml\n[channels.sms]\nplugin = "{name}"\nsender = "Shop"\n'
                   f'# the API key is read from ${name.upper()}_API_KEY\n```',
        "rule": f'```toml\n# campaigns/welcome.toml\nname = "welcome"\nrule = "{name}"\n'
                'channels = ["email"]\n\n[params]\nwithin = "7d"\n\n[email]\n'
                'subject = "Welcome, {{ customer.first_name }}"\nbody = "..."\n```',
        "policy": "Every campaign's candidates pass through it once it is installed "
                  "(`OUTREACH_PLUGINS` lists the plugins to load when only some should). Its "
                  f"settings are a table of `outreach.toml`:\n\n```toml\n[plugins.{name}]\n"
                  'tags = ["staff", "test-account"]\ntransactional = false\n```',
        "source": f'```toml\n# outreach.toml\n[audience]\nsource = "{name}"\n'
                  'customers = "customers.jsonl"\nevents = "events.jsonl"\n```',
    }[kind]
    return {
        "kind": kind, "name": name, "title": title, "cls": title + suffix,
        "dist": "outreach-" + name.replace("_", "-"), "module": "outreach_" + name,
        "env": name.upper(), "summary": summary, "usage": usage, "core_bound": core_bound(),
        "test_note": " (`check_channel`, a fake provider, the `outreach_project` fixture)"
                     if kind == "channel" else " (the `outreach_project` fixture)",
    }


def plugin_files(kind: str, name: str) -> dict[str, bytes]:
    """The generated distribution's files (relative path → content)."""
    variables = plugin_variables(kind, name)
    root = files("outreach").joinpath("scaffold", "templates")
    out: dict[str, bytes] = {}
    for part in ("common", kind):
        _fill(root.joinpath(part), "", variables, out)
    return out


def _fill(node: Traversable, prefix: str, variables: dict[str, str], out: dict[str, bytes]) -> None:
    for child in node.iterdir():
        rel = prefix + child.name.replace("MODULE", variables["module"])
        if child.is_dir():
            _fill(child, rel + "/", variables, out)
        elif child.name.endswith(".tmpl"):
            text = string.Template(child.read_text(encoding="utf-8")).substitute(variables)
            out[rel.removesuffix(".tmpl")] = text.encode("utf-8")


def new_plugin(kind: str, name: str, dest: Path | None = None) -> tuple[Path, list[Path]]:
    """Write plugin ``name`` of ``kind`` into ``dest`` (default ``./outreach-NAME``).

    Returns (the folder, the files written); refuses, writing nothing, when any file exists.
    """
    variables = plugin_variables(kind, name)
    folder = Path(dest) if dest is not None else Path(variables["dist"])
    return folder, write_tree(folder, plugin_files(kind, name))
