"""birthday: greet customers on their birthday, on their own calendar, once a year.

The date attribute may carry a year (``1990-11-24``, giving ``age``) or not (``--11-24``). People
born on 29 February are greeted on 28 February in other years.

The greeting is planned for ``at`` (09:00) on the customer's own clock on that day, so a campaign
evaluated on every run (no ``schedule``) greets someone in Yerevan and someone in Los Angeles each
on their own morning, and quiet hours never push a greeting to the day after.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, time
from typing import Any, Iterable, Mapping, Sequence

from outreach import hookimpl
from outreach.audience import Profile
from outreach.rule import Candidate, Rule, SelectContext
from outreach.schedule import at_local_time
from outreach.settings import Setting

_BIRTHDAY = re.compile(r"^(?:(\d{4})|-)-(\d{2})-(\d{2})$")


def parse_birthday(value: Any) -> tuple[int | None, int, int] | None:
    """(year or None, month, day) from ``1990-11-24`` or ``--11-24``; None when not a birthday."""
    m = _BIRTHDAY.match(value.strip()) if isinstance(value, str) else None
    if not m:
        return None
    year = int(m.group(1)) if m.group(1) else None
    month, day = int(m.group(2)), int(m.group(3))
    try:
        date(year or 2000, month, day)  # 2000 is a leap year: --02-29 is valid
    except ValueError:
        return None
    return year, month, day


class Birthday(Rule):
    """One greeting per customer per year, on the day of their birthday in their time zone."""

    name = "birthday"
    default_priority = 40
    attribute_params = {"attribute": "date"}
    params = {
        "attribute": Setting("str", default="birthday", help="the customer's date attribute"),
        "at": Setting("clock", default=time(9, 0), help="local time of day to send the greeting"),
    }

    def select(self, profiles: Sequence[Profile], ctx: SelectContext) -> Iterable[Candidate]:
        attribute = self.config["attribute"]
        # A million customers have a few thousand distinct birthdays and a few time zones: each is
        # parsed (or converted) once. The local clock depends only on the customer's zone name.
        parsed_of = self.__dict__.setdefault("_parsed", {})
        if len(parsed_of) > 100_000:
            parsed_of.clear()
        local_of: dict[str, datetime] = {}
        for p in profiles:
            value = p.customer.attributes.get(attribute)
            if type(value) is str:
                parsed = parsed_of.get(value, parsed_of)
                if parsed is parsed_of:
                    parsed = parsed_of[value] = parse_birthday(value)
            else:
                parsed = parse_birthday(value)
            if parsed is None:
                continue
            year, month, day = parsed
            local = local_of.get(p.customer.timezone)
            if local is None:
                local = local_of[p.customer.timezone] = ctx.local_now(p.customer)
            today = local.date()
            if month == 2 and day == 29 and not calendar.isleap(today.year):
                day = 28
            if (today.month, today.day) != (month, day):
                continue
            age = today.year - year if year else None
            send_at = at_local_time(today, self.config["at"], local.tzinfo or ctx.tz)
            yield Candidate(f"{self.campaign}:{p.customer.id}:{today.year}", p.customer, {"age": age},
                            not_before=send_at if send_at > ctx.now else None)

    def sample_variables(self, now: datetime, sample: Mapping[str, Any]) -> dict[str, Any]:
        return {"age": sample.get("age", 30)}


@hookimpl
def outreach_register_rules(register):
    register(Birthday)
