"""thank_you: once per purchase (or any event type), soon after it; with a delay, a feedback request."""

from __future__ import annotations

from datetime import timedelta

from outreach import hookimpl
from outreach.rules._events import EventRule
from outreach.settings import Setting


class ThankYou(EventRule):
    """Write once per event of type ``event``, ``delay`` after it, and never later than ``within``."""

    name = "thank_you"
    default_priority = 60
    params = {
        "event": Setting("list", default=["purchase"], help="event types to thank for"),
        "delay": Setting("duration", default=timedelta(0), help="wait this long after the event"),
        "within": Setting("duration", default=timedelta(days=2), minimum=60,
                          help="give up this long after the delay"),
    }


@hookimpl
def outreach_register_rules(register):
    register(ThankYou)
