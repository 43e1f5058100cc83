"""Quiet hours: nothing arrives at night on the recipient's own clock. Sends are deferred, not dropped.

Windows may cross midnight (21:00–08:00). Times are computed in the customer's IANA zone, so a
deferral to 08:00 is 08:00 for them on the day of a DST change too; an end time that does not exist
that day (inside a spring-forward gap) moves to the first instant that does, and one that happens
twice (in a fall-back hour) means the first time.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from outreach import hookimpl
from outreach.decision import CampaignInfo, Choice, DecisionContext, Defer, Refusal
from outreach.rule import Candidate, customer_zone


def quiet_until(when: datetime, start: time, end: time, zone) -> datetime | None:
    """When the quiet window containing ``when`` ends (UTC), or None if ``when`` is not in one."""
    local = when.astimezone(zone)
    t = local.timetz().replace(tzinfo=None)
    if start == end:
        return None
    if start < end:
        if not (start <= t < end):
            return None
        day = local.date()
    elif t >= start:
        day = local.date() + timedelta(days=1)
    elif t < end:
        day = local.date()
    else:
        return None
    return first_instant(datetime.combine(day, end, tzinfo=zone))


def first_instant(wall: datetime) -> datetime:
    """The first real instant (UTC) at or after a local wall time.

    An ambiguous wall time (it happens twice when clocks fall back) gives its first occurrence; a
    wall time that never happens (clocks spring forward past it) gives the moment of the jump.
    """
    early = int(wall.replace(fold=0).timestamp())
    late = int(wall.replace(fold=1).timestamp())
    if late >= early:
        return datetime.fromtimestamp(early, timezone.utc)
    zone = wall.tzinfo
    before = datetime.fromtimestamp(late, timezone.utc).astimezone(zone).utcoffset()
    lo, hi = late, early  # the jump lies between: bisect to the second
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, timezone.utc).astimezone(zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, timezone.utc)


#: The reason stored on a message held back at sending by its channel's quiet hours.
QUIET_WAIT = "waiting for quiet hours to end"


def held_until(when: datetime, hours: tuple[time, time] | None, zone) -> tuple[datetime, str] | None:
    """(when the quiet window ends, UTC; why) if a message of a channel with quiet ``hours`` may
    not go at ``when`` in ``zone``, else None.

    The one rule for planning (:func:`outreach_decide`) and for the send itself
    (:mod:`outreach.dispatch`, for a message a retry, a resend or a stopped channel moved).
    """
    if not hours:
        return None
    until = quiet_until(when, hours[0], hours[1], zone)
    if until is None:
        return None
    return until, f"quiet hours {hours[0]:%H:%M}–{hours[1]:%H:%M} in {getattr(zone, 'key', zone)}"


@hookimpl(tryfirst=True)
def outreach_decide(candidate: Candidate, choice: Choice, ctx: DecisionContext,
                    campaign: CampaignInfo) -> Defer | Refusal | None:
    hours = choice.channel.quiet_hours
    if not hours:
        return None
    held = held_until(choice.send_at, hours, customer_zone(candidate.customer, ctx.tz))
    return None if held is None else Defer(*held)
