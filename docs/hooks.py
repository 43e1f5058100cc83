"""MkDocs hook: fills the reference pages from the code, at every build.

A page holds ``<!-- generated: NAME -->`` where the generated part goes; NAME is one of
:data:`GENERATORS`. The settings come from the installed outreach and its plugins, so the build
documents exactly what the code accepts (``mkdocs build --strict`` runs in the test suite).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


def _generators(root: Path) -> dict[str, Callable[[], str]]:
    from outreach.cli import _add_plugin_commands, cli
    from outreach.plugins import get_plugins
    from outreach.reference import campaign_reference, cli_reference, deployment_reference

    plugins = get_plugins()
    _add_plugin_commands()
    return {
        "outreach-toml": lambda: deployment_reference(plugins),
        "campaigns": lambda: campaign_reference(plugins),
        "cli": lambda: cli_reference(cli),
        # The project's CHANGELOG.md, without its own title (the page has one).
        "changelog": lambda: (root / "CHANGELOG.md").read_text(encoding="utf-8")
        .split("\n", 1)[1].strip() + "\n",
    }


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if "<!-- generated:" not in markdown:
        return markdown
    generators = _generators(Path(config["config_file_path"]).parent)

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in generators:
            raise ValueError(f"{page.file.src_path}: no generated reference named {name!r} "
                             f"(known: {', '.join(generators)})")
        return generators[name]()

    return MARKER.sub(fill, markdown)
