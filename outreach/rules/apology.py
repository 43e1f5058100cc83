"""apology: once per complaint or incident, quickly, ahead of everything else.

Transactional by default (an apology is owed, not marketing, so caps do not hold it back) and at
the highest default priority. The template says what happened and what changes, from the event's
attributes.
"""

from __future__ import annotations

from datetime import timedelta

from outreach import hookimpl
from outreach.rules._events import EventRule
from outreach.settings import Setting


class Apology(EventRule):
    """Write once per event of the configured types, within ``within`` of it."""

    name = "apology"
    types_param = "events"
    default_category = "transactional"
    default_priority = 100
    params = {
        "events": Setting("list", default=["complaint"], help="event types that call for an apology"),
        "delay": Setting("duration", default=timedelta(0), help="wait this long after the event"),
        "within": Setting("duration", default=timedelta(days=7), minimum=60,
                          help="an apology later than this is not sent"),
        "max_rating": Setting("int", minimum=1,
                              help="only events whose rating is at most this (a feedback answer "
                                   "of 1-5 from outreach serve's feedback page)"),
    }


@hookimpl
def outreach_register_rules(register):
    register(Apology)
