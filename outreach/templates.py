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

import contextvars
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from outreach.localise import FILTERS as LOCALISED_FILTERS

#: Fields whose templates produce HTML, rendered with autoescaping on.
HTML_FIELDS = frozenset({"html"})


#: The most characters one rendered field may have, and the most seconds its render may take.
MAX_OUTPUT = 100_000
MAX_SECONDS = 2.0
#: A format string asking for a field at least this wide (%999999d, {:999999}) is refused.
_WIDE = re.compile(r"[%:][^%{}a-zA-Z]*\d{6,}")


#: The variables of the render in progress: an undefined name's message says which variable it
#: was read from and what that variable has, in the template's own words.
_VARIABLES: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "outreach_render_variables", default=None)


def _names_of(value: Any) -> list[str] | None:
    """The names a template can read on ``value`` (a mapping's keys, and for a sample record the
    audience's columns too), or None for a value that is not a record."""
    if not isinstance(value, Mapping):
        return None
    names = {str(k) for k in value if not str(k).startswith("_")}
    known = value.__dict__.get("_known") if hasattr(value, "__dict__") else None
    if isinstance(known, (set, frozenset)):
        names |= {str(k) for k in known if not str(k).startswith("_")}
    return sorted(names)


def _label(value: Any, variables: Mapping[str, Any]) -> str:
    """How the template names ``value``: ``customer``, ``event.details``, or "the value"."""
    for name, top in variables.items():
        if top is value:
            return name
    for name, top in variables.items():
        if isinstance(top, Mapping):
            for key, inner in top.items():
                if inner is value:
                    return f"{name}.{key}"
    return "the value"


class _Undefined(StrictUndefined):
    """StrictUndefined whose message a marketer can act on: ``customer.frist_name is undefined;
    customer has: email, first_name, …`` rather than Python's class names."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        variables = _VARIABLES.get() or {}
        name = self._undefined_name
        if self._undefined_obj is missing:
            known = ", ".join(sorted(k for k in variables if not k.startswith("_")))
            return f"{name} is undefined" + (f"; the variables are: {known}" if known else "")
        label = _label(self._undefined_obj, variables)
        what = f"{label}.{name}" if isinstance(name, str) else f"{label}[{name!r}]"
        names = _names_of(self._undefined_obj)
        if names is None:
            return f"{what} is undefined"
        return f"{what} is undefined; {label} has: {', '.join(names) or 'nothing'}"


def locale_chain(locale: str, available: Iterable[str]) -> tuple[str, ...]:
    """The locale tables written (``available``) that apply to ``locale``, general first:
    ``hy-AM`` → ``("hy", "hy-AM")`` when both are written.

    Each field is taken from the most specific table that has it, then the next, then the default
    templates: a ``[email.hy-AM]`` that only sets the subject still gets ``[email.hy]``'s body,
    not the default one (an Armenian subject over an English body).
    """
    if not locale:
        return ()
    lowered = {k.lower(): k for k in available}
    wanted = locale.replace("_", "-").lower()
    found: list[str] = []
    while wanted:
        if wanted in lowered:
            found.append(lowered[wanted])
        wanted = wanted.rpartition("-")[0]
    return tuple(reversed(found))


def describe_error(exc: BaseException) -> str:
    """A render failure as a sentence for the person who wrote the template: an undefined name
    or a sandbox refusal as it is, other errors with their kind."""
    if isinstance(exc, (UndefinedError, SecurityError)):
        return str(exc)
    if isinstance(exc, TemplateSyntaxError):
        return f"template error (line {exc.lineno}): {exc.message or exc}"
    return f"{type(exc).__name__}: {exc}"


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, list, tuple)) else None


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, made safe for files written by people who are not programmers.

    Beyond what the sandbox refuses (attributes starting with ``_``, mutation, unsafe callables):

    * ``event.items`` reads the ``items`` column, not ``dict.items``: template data are mappings
      built from the audience's columns, and a column named like a dict method must read as the
      column, as a marketer expects.
    * Operations that would make a huge value are refused (``'a' * 10**9``, ``9**9**9``,
      ``'%999999999d' % 1``, ``'x'|center(10**9)``), and each field's output and render time are
      capped (:data:`MAX_OUTPUT`, :data:`MAX_SECONDS`), so a campaign file cannot exhaust memory.
    """

    intercepted_binops = frozenset({"*", "**", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and isinstance(left, (int, float)):
            bits = abs(right) * max(abs(int(left)).bit_length(), 1)
            if abs(left) > 1 and bits > 4096:
                raise SecurityError("power too large for a template")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                n = _size(seq)
                if n is not None and isinstance(times, int) and n * max(times, 0) > MAX_OUTPUT:
                    raise SecurityError("repetition would make a value too large for a template")
        if operator == "%" and isinstance(left, str) and _WIDE.search(left):
            raise SecurityError("format width too large for a template")
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any):
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in ("format", "format_map") \
                and _WIDE.search(owner):
            def refuse(*args: Any, **kwargs: Any) -> str:
                raise SecurityError("format width too large for a template")
            return refuse
        return super().wrap_str_format(value)


#: When the render in progress must end (``time.monotonic()``), for loops that print nothing.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("outreach_render_deadline",
                                                                       default=None)
#: The filter every ``{% for %}`` loop's sequence is passed through (see :func:`_bounded`).
_LOOP_GUARD = "outreach_bounded_loop"


def extend_deadline(seconds: float) -> None:
    """Give the render in progress ``seconds`` more: what loading Babel's locale data took, once
    per process, is not the template's doing and must not fail its message."""
    deadline = _DEADLINE.get()
    if deadline is not None:
        _DEADLINE.set(deadline + seconds)


def _bounded(value: Any) -> Iterator[Any]:
    """Iterate ``value``, ending the render with a SecurityError once its time is up.

    :func:`render` checks the time between output pieces, but loops that print nothing
    (``{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}``: ten
    billion turns) produce no pieces to check between. Every loop's sequence goes through here,
    so each turn checks the clock (about 0.1 µs); a loop outside :func:`render` gets
    :data:`MAX_SECONDS` of its own.
    """
    # Inside render() the deadline is read on every turn (it may be extended: extend_deadline).
    alone = None if _DEADLINE.get() is not None else time.monotonic() + MAX_SECONDS
    clock, current = time.monotonic, _DEADLINE.get
    for item in value:
        if clock() > (alone or current() or 0.0):
            raise SecurityError(f"a loop in the template ran longer than {MAX_SECONDS:g} s")
        yield item


class _GuardLoops:
    """Rewrites a parsed template so each ``{% for x in SEQ %}`` iterates ``SEQ|<guard>``."""

    @staticmethod
    def apply(tree: nodes.Template) -> nodes.Template:
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _LOOP_GUARD, [], [], None, None,
                                     lineno=loop.iter.lineno)
        return tree


def _env(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = _Sandbox(
        undefined=_Undefined, autoescape=autoescape, keep_trailing_newline=False,
        trim_blocks=True, lstrip_blocks=True,
    )
    # Campaign templates are self-contained: no {% include %} or {% import %} of other files.
    env.loader = None
    _cap_filters(env)
    env.filters[_LOOP_GUARD] = _bounded
    env.filters.update(LOCALISED_FILTERS)
    return env


def _cap_filters(env: ImmutableSandboxedEnvironment) -> None:
    """Filters that pad to a width or format a string get the same limits as the operators."""
    center, indent, fmt = env.filters["center"], env.filters["indent"], env.filters["format"]

    def safe_center(value: Any, width: int = 80) -> str:
        if isinstance(width, int) and width > MAX_OUTPUT:
            raise SecurityError("center width too large for a template")
        return center(value, width)

    def safe_indent(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> str:
        if isinstance(width, int) and width > 1000:
            raise SecurityError("indent width too large for a template")
        return indent(value, width, *args, **kwargs)

    def safe_format(value: Any, *args: Any, **kwargs: Any) -> str:
        if isinstance(value, str) and _WIDE.search(value):
            raise SecurityError("format width too large for a template")
        return fmt(value, *args, **kwargs)

    env.filters.update(center=safe_center, indent=safe_indent, format=safe_format)


TEXT_ENV = _env(False)
HTML_ENV = _env(True)


def env_for(field: str) -> ImmutableSandboxedEnvironment:
    """The environment a field's template is rendered in (HTML escaping for HTML fields only)."""
    return HTML_ENV if field in HTML_FIELDS or field.endswith("_html") else TEXT_ENV


@lru_cache(maxsize=4096)
def _compiled(source: str, html: bool):
    # Environment.from_string, with the loops guarded between parsing and code generation.
    env = HTML_ENV if html else TEXT_ENV
    code = env.compile(_GuardLoops.apply(env.parse(source)))
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def compile_template(field: str, source: str):
    """Compile (once per process) a template for ``field``; raises TemplateSyntaxError."""
    return _compiled(source, env_for(field) is HTML_ENV)


def render(field: str, source: str, variables: Mapping[str, Any]) -> str:
    """Render one field's template with ``variables``; raises jinja2.TemplateError on any problem.

    The output is produced piece by piece, so a render that grows past :data:`MAX_OUTPUT`
    characters or runs past :data:`MAX_SECONDS` stops there with a SecurityError; loops check
    the same deadline on every turn, so one that prints nothing stops too.
    """
    deadline = time.monotonic() + MAX_SECONDS
    parts: list[str] = []
    size = 0
    token = _DEADLINE.set(deadline)
    names = _VARIABLES.set(variables)
    try:
        for piece in compile_template(field, source).generate(**variables):
            size += len(piece)
            if size > MAX_OUTPUT:
                raise SecurityError(f"the rendered {field} is longer than {MAX_OUTPUT:,} characters")
            if time.monotonic() > (_DEADLINE.get() or deadline):
                raise SecurityError(f"rendering {field} took longer than {MAX_SECONDS:g} s")
            parts.append(piece)
    finally:
        _DEADLINE.reset(token)
        _VARIABLES.reset(names)
    return "".join(parts)


def check_syntax(field: str, source: str) -> str | None:
    """A sentence describing a syntax error in the template, or None."""
    try:
        compile_template(field, source)
    except TemplateError as exc:
        lineno = getattr(exc, "lineno", None)  # a TemplateSyntaxError's
        line = f" (line {lineno})" if lineno else ""
        return f"template error{line}: {exc.message or exc}"
    return None


@lru_cache(maxsize=512)
def compile_where(expression: str):
    """Compile an audience filter such as ``'vip' in customer.tags``; raises TemplateSyntaxError."""
    return TEXT_ENV.compile_expression(expression, undefined_to_none=False)


def evaluate_where(expression: str, customer_view: Mapping[str, Any]) -> bool:
    """True when ``customer_view`` passes the filter; raises jinja2.TemplateError when it cannot."""
    token = _VARIABLES.set({"customer": customer_view})
    try:
        return bool(compile_where(expression)(customer=customer_view))
    finally:
        _VARIABLES.reset(token)


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
        if name == "customer" and any(f.name in LOCALISED_FILTERS for f in tree.find_all(nodes.Filter)):
            # The localised filters read the customer's locale and time zone when rendered.
            found.update(("locale", "timezone"))
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
