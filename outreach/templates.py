"""Templates and audience filters: Jinja2, sandboxed, strict.

A campaign file must never run code, so every template and ``where`` expression is compiled in
Jinja's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no attribute starting with ``_``,
no mutation of the data it is given), with :class:`~jinja2.StrictUndefined` so a misspelt variable
is an error rather than an empty string in front of a customer. Files are loaded only from inside
the project folder.

This module also works out which customer fields a campaign's templates read, so a planned message
stores only those (the ledger stays small at a million recipients) and can still be rendered again
exactly.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Fields whose templates produce HTML, rendered with autoescaping on.
HTML_FIELDS = frozenset({"html"})


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with one change: ``event.items`` reads the ``items`` column, not ``dict.items``.

    Template data are mappings built from the audience's columns; a column named like a dict method
    (items, keys, values, get, update...) must read as the column, as a marketer expects.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _env(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = _Sandbox(
        undefined=StrictUndefined, autoescape=autoescape, keep_trailing_newline=False,
        trim_blocks=True, lstrip_blocks=True,
    )
    # Campaign templates are self-contained: no {% include %} or {% import %} of other files.
    env.loader = None
    return env


TEXT_ENV = _env(False)
HTML_ENV = _env(True)


def env_for(field: str) -> ImmutableSandboxedEnvironment:
    """The environment a field's template is rendered in (HTML escaping for HTML fields only)."""
    return HTML_ENV if field in HTML_FIELDS or field.endswith("_html") else TEXT_ENV


@lru_cache(maxsize=4096)
def _compiled(source: str, html: bool):
    return (HTML_ENV if html else TEXT_ENV).from_string(source)


def compile_template(field: str, source: str):
    """Compile (once per process) a template for ``field``; raises TemplateSyntaxError."""
    return _compiled(source, env_for(field) is HTML_ENV)


def render(field: str, source: str, variables: Mapping[str, Any]) -> str:
    """Render one field's template with ``variables``; raises jinja2.TemplateError on any problem."""
    return compile_template(field, source).render(**variables)


def check_syntax(field: str, source: str) -> str | None:
    """A sentence describing a syntax error in the template, or None."""
    try:
        compile_template(field, source)
    except TemplateError as exc:
        line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        return f"template error{line}: {exc.message or exc}"
    return None


@lru_cache(maxsize=512)
def compile_where(expression: str):
    """Compile an audience filter such as ``'vip' in customer.tags``; raises TemplateSyntaxError."""
    return TEXT_ENV.compile_expression(expression, undefined_to_none=False)


def evaluate_where(expression: str, customer_view: Mapping[str, Any]) -> bool:
    """True when ``customer_view`` passes the filter; raises jinja2.TemplateError when it cannot."""
    return bool(compile_where(expression)(customer=customer_view))


def referenced_fields(sources: Iterable[str], name: str = "customer") -> set[str] | None:
    """The attributes of ``name`` that the templates read (``customer.first_name`` → first_name).

    None when a template uses ``name`` as a whole (loops over it, prints it, indexes it with a
    variable), in which case all of it must be kept.
    """
    found: set[str] = set()
    for source in sources:
        tree = TEXT_ENV.parse(source)
        used = _walk(tree, name, found)
        if used is None:
            return None
    return found


def _walk(node: nodes.Node, name: str, found: set[str]) -> set[str] | None:
    for child in node.iter_child_nodes():
        if isinstance(child, nodes.Getattr) and _is_name(child.node, name):
            found.add(child.attr)
            continue
        if (isinstance(child, nodes.Getitem) and _is_name(child.node, name)
                and isinstance(child.arg, nodes.Const) and isinstance(child.arg.value, str)):
            found.add(child.arg.value)
            continue
        if _is_name(child, name):
            return None
        if _walk(child, name, found) is None:
            return None
    return found


def _is_name(node: nodes.Node, name: str) -> bool:
    return isinstance(node, nodes.Name) and node.name == name and node.ctx == "load"


def read_template_file(root: Path, relative: str) -> str:
    """Read a template file named in a campaign; it must lie inside the project folder.

    Raises ValueError with a user-facing sentence otherwise.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise ValueError("expected a path to a template file inside the project folder")
    base = root.resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise ValueError(f"{relative!r} is outside the project folder; templates must live inside it")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"template file {relative!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read template file {relative!r}: {exc}") from None
