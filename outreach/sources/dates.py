"""Dates as exports write them, read into one form: ``2026-12-01``, or ``--12-01`` without a year.

Rules read date attributes (a birthday, a renewal date) in ISO form. Exports rarely write ISO:
Mailchimp writes birthdays as ``04/12``, spreadsheets ``12/01/2026``. A layout is accepted on its
own only where it cannot be misread: ``25/12/2026`` is a day first, ``12/25/2026`` a month first,
but ``12/01/2026`` could be either, so it is refused with a message asking for ``date_format``
rather than guessed. A declared ``date_format`` (``%d/%m/%Y``, ``%m/%d`` for a date without a
year) is used as it is.
"""

from __future__ import annotations

import re
from datetime import date, datetime

_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?\Z")
_NO_YEAR = re.compile(r"--(\d{2})-(\d{2})\Z")
#: Two numbers and an optional year, separated by /, . or - (``04/12``, ``12.01.2026``).
_NUMERIC = re.compile(r"(\d{1,2})([/.-])(\d{1,2})(?:\2(\d{4}))?\Z")
_YEAR_FIRST = re.compile(r"(\d{4})[/.](\d{1,2})[/.](\d{1,2})\Z")
#: Layouts with a month name, which are never ambiguous.
_NAMED = ("%d %b %Y", "%d %B %Y", "%b %d, %Y", "%B %d, %Y", "%b %d %Y", "%B %d %Y", "%d %b", "%d %B",
          "%b %d", "%B %d")


class DateError(ValueError):
    """A value that is not a date in a layout outreach can read without guessing."""


def _build(year: int | None, month: int, day: int, raw: str) -> str:
    try:
        date(year or 2000, month, day)  # 2000 is a leap year: --02-29 is a valid birthday
    except ValueError:
        raise DateError(f"{raw!r} is not a date") from None
    return f"{year:04d}-{month:02d}-{day:02d}" if year else f"--{month:02d}-{day:02d}"


def check_format(fmt: str) -> str | None:
    """Why ``fmt`` cannot be a ``date_format`` (None when it can): it needs a month and a day."""
    if "%m" not in fmt and "%b" not in fmt and "%B" not in fmt:
        return f"expected a strftime layout with a month and a day such as \"%d/%m/%Y\", got {fmt!r}"
    if "%d" not in fmt:
        return f"expected a strftime layout with a month and a day such as \"%d/%m/%Y\", got {fmt!r}"
    try:
        datetime(2000, 1, 2).strftime(fmt)
    except ValueError as exc:
        return f"{fmt!r} is not a strftime layout: {exc}"
    return None


def parse_date(value: object, fmt: str | None = None) -> str:
    """``value`` as ``YYYY-MM-DD`` (or ``--MM-DD`` when it has no year); DateError if it is not one.

    ``value`` may be a :class:`date` (a SQL column), or text in ISO form, in ``fmt`` when given, or
    in a layout that cannot be misread. An empty value is returned as ``""``.
    """
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raw = str(value).strip()
    if not raw:
        return ""
    m = _ISO.match(raw)
    if m:
        return _build(int(m.group(1)), int(m.group(2)), int(m.group(3)), raw)
    m = _NO_YEAR.match(raw)
    if m:
        return _build(None, int(m.group(1)), int(m.group(2)), raw)
    if fmt:
        try:
            parsed = datetime.strptime(raw, fmt)
        except ValueError:
            raise DateError(f"{raw!r} does not match date_format {fmt!r}") from None
        return _build(parsed.year if "%Y" in fmt or "%y" in fmt else None, parsed.month, parsed.day,
                      raw)
    m = _YEAR_FIRST.match(raw)
    if m:
        return _build(int(m.group(1)), int(m.group(2)), int(m.group(3)), raw)
    m = _NUMERIC.match(raw)
    if m:
        first, second = int(m.group(1)), int(m.group(3))
        year = int(m.group(4)) if m.group(4) else None
        if first > 12 >= second:
            return _build(year, second, first, raw)
        if second > 12 >= first:
            return _build(year, first, second, raw)
        raise DateError(f"{raw!r} could be day/month or month/day; declare date_format "
                        "(\"%d/%m/%Y\", or \"%m/%d\" for a date without a year)")
    for layout in _NAMED:
        try:
            parsed = datetime.strptime(raw, layout)
        except ValueError:
            continue
        return _build(parsed.year if "%Y" in layout else None, parsed.month, parsed.day, raw)
    raise DateError(f"{raw!r} is not a date such as 2026-12-01 (declare date_format for "
                    "another layout)")
