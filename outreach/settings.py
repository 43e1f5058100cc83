"""Declared settings: how plugins say what they accept, and how the core checks it.

Channels, rules and sources declare their settings as class attributes (the way apprise services
do), so the core can validate every table of every file in one place, produce errors that name the
file and the key, read secrets from the environment only, and list settings in ``outreach plugins``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from datetime import time as dtime
from datetime import timedelta
from typing import Any, Mapping

from outreach.errors import Problem

_DURATION_PART = re.compile(r"(\d+)\s*([wdhms])")
_DURATION_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str) -> timedelta:
    """Parse ``"90d"``, ``"12h"``, ``"1d12h"``, ``"30m"`` or ``"0"`` into a timedelta.

    Raises ValueError with a sentence a marketer understands.
    """
    if not isinstance(text, str):
        raise ValueError("expected a duration such as \"7d\", \"12h\" or \"30m\"")
    s = text.strip().lower()
    if s == "0":
        return timedelta(0)
    pos = 0
    total = timedelta(0)
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos and s[pos : m.start()].strip():
            break
        total += timedelta(**{_DURATION_UNITS[m.group(2)]: int(m.group(1))})
        pos = m.end()
    if pos == 0 or s[pos:].strip():
        raise ValueError(f"expected a duration such as \"7d\", \"12h\" or \"30m\", got {text!r}")
    return total


def format_duration(delta: timedelta) -> str:
    """The inverse of :func:`parse_duration`, for messages and reports."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)


def parse_clock(text: str) -> dtime:
    """Parse ``"21:00"`` into a time of day."""
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"expected a time of day such as \"21:00\", got {text!r}")
    return dtime(int(m.group(1)), int(m.group(2)))


class Secret:
    """A secret read from the environment. It never shows itself in a repr, a log line or JSON.

    Call :meth:`reveal` at the one place the provider's SDK needs the value.
    """

    __slots__ = ("_value", "env")

    def __init__(self, value: str, env: str) -> None:
        self._value = value
        self.env = env

    def reveal(self) -> str:
        """The secret value itself; pass it to the SDK and nowhere else."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret(env={self.env!r}, value='***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self.env)


#: The whole numbers an ``int`` setting may hold: a signed 32-bit integer, what the ledger's
#: integer columns (a campaign's priority) keep on PostgreSQL, and far past any count or size.
INT_RANGE = (-(2**31), 2**31 - 1)

_KINDS = ("str", "path", "int", "float", "bool", "duration", "clock", "list", "table", "number")


@dataclass(frozen=True)
class Setting:
    """One key a plugin accepts.

    ``kind`` is one of ``str``, ``path`` (a file or folder, relative to the project folder), ``int``, ``float``, ``number`` (int or float), ``bool``, ``duration``
    (``"7d"``, parsed to a timedelta), ``clock`` (``"21:00"``), ``list`` (of strings) or ``table``.
    A ``secret`` setting is never written in a file: the file names an environment variable with
    ``<name>_env = "VAR"`` (``env`` is the variable read when the file names none).
    """

    kind: str = "str"
    required: bool = False
    default: Any = None
    help: str = ""
    secret: bool = False
    env: str | None = None
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    #: The largest value allowed. An ``int`` setting is also bounded by :data:`INT_RANGE` (what a
    #: ledger column and every database the ledger runs on hold), whatever it declares.
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown setting kind {self.kind!r}")

    def describe(self) -> str:
        """A short phrase saying what a valid value looks like, for error messages."""
        what = {
            "str": "a string",
            "path": "a path (relative to the project folder)",
            "int": "a whole number",
            "float": "a number",
            "number": "a number",
            "bool": "true or false",
            "duration": 'a duration such as "7d" or "12h"',
            "clock": 'a time of day such as "21:00"',
            "list": "a list of strings",
            "table": "a table",
        }[self.kind]
        if self.choices:
            what = "one of " + ", ".join(repr(c) for c in self.choices)
        if self.minimum is not None and self.maximum is not None:
            what += f" from {self.minimum:g} to {self.maximum:g}"
        elif self.minimum is not None:
            what += f" of at least {self.minimum:g}"
        elif self.maximum is not None:
            what += f" of at most {self.maximum:g}"
        return what


def _coerce(setting: Setting, value: Any) -> Any:
    kind = setting.kind
    if kind in ("str", "path"):
        ok = isinstance(value, str) and (kind == "str" or bool(value.strip()))
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind in ("float", "number"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok and kind == "float" else value
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "duration":
        try:
            return _check_range(setting, parse_duration(value))
        except ValueError:
            ok = False
    elif kind == "clock":
        try:
            return parse_clock(value)
        except ValueError:
            ok = False
    elif kind == "list":
        if isinstance(value, str):
            value = [value]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:  # table
        ok = isinstance(value, dict)
    if not ok:
        raise ValueError(f"expected {setting.describe()}, got {_show(value)}")
    if setting.choices is not None and value not in setting.choices:
        raise ValueError(f"expected {setting.describe()}, got {_show(value)}")
    return _check_range(setting, value)


def _check_range(setting: Setting, value: Any) -> Any:
    number = value.total_seconds() if isinstance(value, timedelta) else value
    if not isinstance(number, (int, float)):
        return value
    if setting.minimum is not None and number < setting.minimum:
        raise ValueError(f"expected {setting.describe()}, got {_show(value)}")
    if setting.maximum is not None and number > setting.maximum:
        raise ValueError(f"expected {setting.describe()}, got {_show(value)}")
    if setting.kind == "int" and not INT_RANGE[0] <= number <= INT_RANGE[1]:
        low = INT_RANGE[0] if setting.minimum is None else max(INT_RANGE[0], int(setting.minimum))
        raise ValueError(f"expected {setting.describe()} from {low} to {INT_RANGE[1]}, got "
                         f"{_show(value)}")
    return value


def _show(value: Any) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return repr(value)


@dataclass
class Resolved:
    """The outcome of checking a table against declared settings."""

    values: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def resolve(
    declared: Mapping[str, Setting],
    table: Mapping[str, Any],
    *,
    file: str,
    prefix: str,
    environ: Mapping[str, str] | None = None,
    allow_unknown: bool = False,
    root: Path | None = None,
) -> Resolved:
    """Check ``table`` (read from ``file`` at key ``prefix``) against ``declared``.

    Unknown keys are errors (a typo in a setting must not be silently ignored). Secrets are only read
    from the environment; a secret written literally in the file is refused so it never lands in a
    repository.
    """
    env = os.environ if environ is None else environ
    out = Resolved()

    def key(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    for name, value in table.items():
        base = name[:-4] if name.endswith("_env") else None
        if name in declared:
            setting = declared[name]
            if setting.secret:
                out.problems.append(
                    Problem(file, key(name), "is a secret: do not write it in a file; name the "
                            f"environment variable that holds it with {name}_env = \"VARIABLE\"")
                )
                continue
            try:
                out.values[name] = _coerce(setting, value)
                if setting.kind == "path" and root is not None:
                    out.values[name] = str(root / out.values[name])
            except ValueError as exc:
                out.problems.append(Problem(file, key(name), str(exc)))
        elif base and base in declared and declared[base].secret:
            if not isinstance(value, str) or not value:
                out.problems.append(
                    Problem(file, key(name), "expected the name of an environment variable"))
        elif not allow_unknown:
            known = ", ".join(sorted(declared)) or "none"
            out.problems.append(Problem(file, key(name), f"unknown key (known keys: {known})"))

    for name, setting in declared.items():
        if setting.secret:
            var = table.get(f"{name}_env") or setting.env
            if isinstance(var, str) and var in env and env[var]:
                out.values[name] = Secret(env[var], var)
            elif setting.required:
                where = f"{name}_env = \"{var}\"" if var else f"{name}_env"
                out.problems.append(Problem(
                    file, key(name + "_env"),
                    f"the environment variable {var or '(not named)'} is not set ({where} names "
                    "where the secret is read from)"))
            else:
                out.values[name] = None
        elif name not in out.values and not any(p.key == key(name) for p in out.problems):
            if setting.required:
                out.problems.append(Problem(file, key(name), f"is required: {setting.describe()}"))
            else:
                out.values[name] = setting.default
    return out
