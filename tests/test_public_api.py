"""The public API is code: what the documentation imports from ``outreach`` is exported there."""

from __future__ import annotations

import re
from pathlib import Path

import outreach

REPO = Path(__file__).resolve().parents[1]


def _documented_imports() -> dict[str, set[str]]:
    """Names imported ``from outreach import ...`` in the READMEs, the docs and the scaffold."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")),
             *sorted((REPO / "outreach" / "scaffold" / "templates").rglob("*.tmpl"))]
    found: dict[str, set[str]] = {}
    pattern = re.compile(r"^\s*from outreach import (\([^)]*\)|[^\n]+)", re.M)
    for page in pages:
        for group in pattern.findall(page.read_text(encoding="utf-8")):
            for name in re.split(r"[\s,()]+", group.split("#", 1)[0]):
                if name and name != "\\":
                    found.setdefault(name, set()).add(str(page.relative_to(REPO)))
    return found


def test_everything_the_docs_import_from_outreach_is_exported():
    documented = _documented_imports()
    assert {"hookimpl", "Refusal", "Setting"} <= set(documented)  # the scan finds them
    missing = {name: sorted(pages) for name, pages in documented.items()
               if name not in outreach.__all__ or not hasattr(outreach, name)}
    assert missing == {}


def test_the_public_api_is_what_a_plugin_needs():
    needed = {"hookimpl", "Channel", "Rule", "Source", "Setting", "Refusal", "Defer",
              "CampaignInfo", "ChannelInfo", "Choice", "DecisionContext", "Candidate", "Customer",
              "Delivery", "TransientError", "PermanentError", "UnknownOutcomeError", "get_plugins"}
    assert needed <= set(outreach.__all__)
    assert [n for n in outreach.__all__ if not hasattr(outreach, n)] == []
    from outreach.decision import Refusal

    assert outreach.Refusal is Refusal
