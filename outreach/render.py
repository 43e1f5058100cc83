"""Rendering a planned message from what the ledger holds: the campaign version and the variables.

Messages are rendered when they are sent, not when they are planned, so the ledger stays small and
any process that can read it can deliver. Because the version's templates and the message's
variables are both stored, ``preview`` and ``history`` render exactly what the customer got.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

from outreach import templates


class RenderError(Exception):
    """A message's templates could not be rendered with its variables (the message fails)."""


def render_stored(content: Mapping[str, Any], channel: str, locale: str,
                  variables: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """(rendered fields, channel options) of a stored campaign version for one message.

    Dispatch calls this once per message, thousands of times a second, mostly with a handful of
    locales: the choice of locale is cached, and a campaign with nothing to render here (a
    provider-side template) costs a few dictionary lookups.
    """
    spec = content.get("templates", {}).get(channel)
    if spec is None:
        raise RenderError(f"the campaign version has no templates for channel {channel!r}")
    fields = spec["fields"]
    locales = spec.get("locales")
    if locales and locale:
        chain = _chain(locale, tuple(locales))
        if chain:
            fields = dict(fields)
            for variant in chain:  # general first, so each field comes from the most specific
                fields.update(locales[variant])
    out = {}
    for name, source in fields.items():
        try:
            out[name] = templates.render(name, source, variables)
        except Exception as exc:  # noqa: BLE001 - any template failure fails this message only
            raise RenderError(f"{name}: {templates.describe_error(exc)}") from None
    options = spec.get("options")
    return out, dict(options) if options else {}


@lru_cache(maxsize=1024)
def _chain(locale: str, available: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`outreach.templates.locale_chain`, remembered per (locale, locales written)."""
    return templates.locale_chain(locale, available)
