"""Rendering a planned message from what the ledger holds: the campaign version and the variables.

Messages are rendered when they are sent, not when they are planned, so the ledger stays small and
any process that can read it can deliver. Because the version's templates and the message's
variables are both stored, ``preview`` and ``history`` render exactly what the customer got.
"""

from __future__ import annotations

from typing import Any, Mapping

from outreach import templates
from outreach.config import pick_locale


class RenderError(Exception):
    """A message's templates could not be rendered with its variables (the message fails)."""


def render_stored(content: Mapping[str, Any], channel: str, locale: str,
                  variables: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """(rendered fields, channel options) of a stored campaign version for one message."""
    spec = content.get("templates", {}).get(channel)
    if spec is None:
        raise RenderError(f"the campaign version has no templates for channel {channel!r}")
    fields = dict(spec["fields"])
    variant = pick_locale(locale, spec.get("locales", {}))
    if variant:
        fields.update(spec["locales"][variant])
    out = {}
    for name, source in fields.items():
        try:
            out[name] = templates.render(name, source, variables)
        except Exception as exc:  # noqa: BLE001 - any template failure fails this message only
            raise RenderError(f"{name}: {type(exc).__name__}: {exc}") from None
    return out, dict(spec.get("options", {}))
