"""Localised template filters: dates, times, numbers and money as each customer reads them.

``{{ event.time | date }}`` is "December 1, 2026" for an ``en`` customer, "1 December 2026" for
``en-GB`` and "1 դեկտեմբերի 2026 թ." for ``hy``: Babel formats with the Unicode CLDR data of the
customer's ``locale``, and a time is shown on the customer's own clock (their ``timezone``). The
filters read both from the ``customer`` being rendered, so a campaign writes one template for every
language it serves; ``locale=`` on a filter overrides it.

The reference (names, arguments, examples) is in the documentation's templates page.
"""

from __future__ import annotations

from datetime import date as Date
from datetime import datetime as DateTime
from datetime import time as Time
from decimal import Decimal, InvalidOperation
import time
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Callable, Iterator, Mapping
from zoneinfo import ZoneInfo

from jinja2 import pass_context
from jinja2.runtime import Context

#: The locale used when a customer has none, or one that CLDR does not know.
FALLBACK_LOCALE = "en"


class Placeholder(str):
    """A sample render's stand-in for a column the sample customer does not have (``<birthday>``).

    Filters hand it back unchanged: a sample checks the template, not the data.
    """


@contextmanager
def _not_counted() -> Iterator[None]:
    """Loading Babel and a locale's CLDR data happens once per process and may take a while on a
    busy machine: that time is given back to the render in progress (its time limit is for the
    template's own work)."""
    start = time.monotonic()
    try:
        yield
    finally:
        from outreach.templates import extend_deadline  # templates imports this module

        extend_deadline(time.monotonic() - start)


@lru_cache(maxsize=256)
def babel_locale(tag: str) -> Any:
    """The Babel locale for a BCP 47 tag (``hy-AM``, ``en_GB``, ``tl``): the tag, then its
    language, then :data:`FALLBACK_LOCALE`; its CLDR data loaded."""
    with _not_counted():
        from babel import Locale, UnknownLocaleError

        wanted = (tag or "").replace("_", "-").strip()
        while wanted:
            try:
                found = Locale.parse(wanted, sep="-")
                break
            except (UnknownLocaleError, ValueError, TypeError):
                wanted = wanted.rpartition("-")[0]
        else:
            found = Locale.parse(FALLBACK_LOCALE)
        found.decimal_formats, found.date_formats  # noqa: B018 - load the data now, not in a filter
        _babel()
        return found


@lru_cache(maxsize=1)
def _babel() -> tuple[Any, Any]:
    """``babel.dates`` and ``babel.numbers``, imported on first use (most runs format nothing)."""
    import babel.dates
    import babel.numbers

    return babel.dates, babel.numbers


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (KeyError, ValueError, OSError):
        return None


def _reader(context: Context, locale: str | None) -> tuple[Any, ZoneInfo | None]:
    """The locale and time zone to format in: the filter's ``locale=``, else the customer's."""
    customer = context.get("customer")
    fields: Mapping[str, Any] = customer if isinstance(customer, Mapping) else {}
    tag = locale or fields.get("locale") or FALLBACK_LOCALE
    return babel_locale(str(tag)), _zone(str(fields.get("timezone") or ""))


def _instant(value: Any, what: str) -> DateTime | Date:
    """A date or datetime from a date, a datetime or ISO 8601 text (how variables are stored)."""
    if isinstance(value, (DateTime, Date)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return DateTime.fromisoformat(text) if "T" in text or " " in text or len(text) > 10 \
                else Date.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError(f"the {what} filter needs a date or time (ISO 8601 such as 2026-12-01), "
                     f"got {value!r}")


def _local(value: DateTime, zone: ZoneInfo | None) -> DateTime:
    """An aware time on the customer's clock; a naive one is taken as it is written."""
    return value.astimezone(zone) if zone is not None and value.tzinfo is not None else value


def _decimal(value: Any, what: str) -> Decimal | int | float:
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            pass
    raise ValueError(f"the {what} filter needs a number, got {value!r}")


@pass_context
def date_filter(context: Context, value: Any, format: str = "long",
                locale: str | None = None) -> str:
    """``{{ x | date }}``: the day, in the customer's language; ``format`` is ``short``,
    ``medium``, ``long`` (default), ``full`` or a CLDR pattern such as ``"d MMMM y"``."""
    if isinstance(value, Placeholder):
        return value
    loc, zone = _reader(context, locale)
    format_date = _babel()[0].format_date
    when = _instant(value, "date")
    day = _local(when, zone).date() if isinstance(when, DateTime) else when
    return format_date(day, format=format, locale=loc)


@pass_context
def time_filter(context: Context, value: Any, format: str = "short",
                locale: str | None = None) -> str:
    """``{{ x | time }}``: the time of day on the customer's clock (``short`` by default)."""
    return _on_clock(context, value, "time", format, locale, "format_time")


@pass_context
def datetime_filter(context: Context, value: Any, format: str = "medium",
                    locale: str | None = None) -> str:
    """``{{ x | datetime }}``: day and time on the customer's clock (``medium`` by default)."""
    return _on_clock(context, value, "datetime", format, locale, "format_datetime")


def _on_clock(context: Context, value: Any, what: str, format: str, locale: str | None,
              formatter: str) -> str:
    """A time (or a date at midnight) formatted by Babel on the customer's clock."""
    if isinstance(value, Placeholder):
        return value
    loc, zone = _reader(context, locale)
    when = _instant(value, what)
    if not isinstance(when, DateTime):
        if what == "time":
            raise ValueError(f"the time filter needs a time, got the date {value!r}")
        when = DateTime.combine(when, Time(0))
    # A naive time is shown as written; an aware one on the customer's clock.
    zone = zone if when.tzinfo is not None else None
    return getattr(_babel()[0], formatter)(when, format=format, locale=loc, tzinfo=zone)


@pass_context
def number_filter(context: Context, value: Any, decimals: int | None = None,
                  locale: str | None = None) -> str:
    """``{{ x | number }}``: grouping and decimal signs of the customer's language
    (``1,234.5``, ``1 234,5``); ``decimals`` fixes how many digits follow the point."""
    if isinstance(value, Placeholder):
        return value
    loc, _ = _reader(context, locale)
    format_decimal = _babel()[1].format_decimal
    number = _decimal(value, "number")
    if decimals is None:
        return format_decimal(number, locale=loc)
    pattern = "#,##0" + ("." + "0" * decimals if decimals > 0 else "")
    return format_decimal(number, format=pattern, locale=loc, decimal_quantization=True)


@pass_context
def currency_filter(context: Context, value: Any, currency: str,
                    locale: str | None = None) -> str:
    """``{{ x | currency("USD") }}``: an amount of money as the customer writes it
    (``$12.50``, ``12,50 $``, ``12,50 US$``); ``currency`` is an ISO 4217 code."""
    if isinstance(value, Placeholder):
        return value
    loc, _ = _reader(context, locale)
    numbers = _babel()[1]
    code = str(currency).upper()
    try:
        numbers.validate_currency(code)
    except numbers.UnknownCurrencyError:
        raise ValueError(f"the currency filter needs an ISO 4217 code such as \"USD\", "
                         f"got {currency!r}") from None
    return numbers.format_currency(_decimal(value, "currency"), code, locale=loc)


@pass_context
def percent_filter(context: Context, value: Any, locale: str | None = None) -> str:
    """``{{ 0.15 | percent }}``: a fraction as a percentage (``15%``, ``15 %``)."""
    if isinstance(value, Placeholder):
        return value
    loc, _ = _reader(context, locale)
    return _babel()[1].format_percent(_decimal(value, "percent"), locale=loc)


#: The filters, by the name templates use.
FILTERS: dict[str, Callable[..., str]] = {
    "date": date_filter,
    "time": time_filter,
    "datetime": datetime_filter,
    "number": number_filter,
    "currency": currency_filter,
    "percent": percent_filter,
}
