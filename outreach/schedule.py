"""When a scheduled campaign is due.

A campaign with a cron ``schedule`` (read in the deployment's time zone, so ``0 9 * * *`` is 09:00
there, across DST changes) is due when a fire time falls after its last fire time and at or before
now. Fire times missed while nothing ran collapse into the latest one: a week of downtime sends one
newsletter, not seven. An occurrence whose planning was interrupted is finished before a newer one
is considered, so a crash can neither skip nor double an occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Sequence
from zoneinfo import ZoneInfo

from croniter import croniter

from outreach.ledger import epoch, from_epoch
from outreach.rule import customer_zone

if TYPE_CHECKING:
    from outreach.rule import Candidate


@dataclass(frozen=True)
class Due:
    """Whether a campaign is due at a run, and which occurrence it serves."""

    due: bool
    #: The schedule occurrence (None for campaigns without a schedule).
    occurrence: datetime | None = None
    #: True when finishing an occurrence an earlier run began but did not complete.
    resumed: bool = False
    #: For reports: why it is or is not due.
    note: str = ""
    #: Set for a campaign seen for the first time: the planner records it as the last fire time,
    #: so the campaign's occurrences count from the moment it was first seen.
    baseline: datetime | None = None


def latest_fire(schedule: str, now: datetime, tz: ZoneInfo) -> datetime:
    """The latest fire time at or before ``now`` (croniter's get_prev is strictly before).

    Stepping back across a fall-back, croniter lands on the first of a repeated hour's fire
    times (at 01:30 PST it answers 01:00 PDT, not 01:00 PST); stepping forward it yields them
    all. So the answer is walked forward to the last fire time not after ``now``.
    """
    fire = croniter(schedule, now.astimezone(tz) + timedelta(seconds=1)).get_prev(datetime)
    ahead = croniter(schedule, fire)
    # Compared in UTC: two times in one zone compare by their wall clocks, fold ignored.
    limit = now.astimezone(timezone.utc)
    # Off a fall-back night this is one step; on it, at most the repeated hour's fire times.
    while (nxt := ahead.get_next(datetime)) <= limit:
        fire = nxt
    return fire


def _same_wall_time(a: datetime, b: datetime, tz: ZoneInfo) -> bool:
    """True when two instants read the same on the local clock (the repeated hour of a fall-back)."""
    return a.astimezone(tz).replace(tzinfo=None, fold=0) == b.astimezone(tz).replace(tzinfo=None,
                                                                                      fold=0)


def _every_hour(schedule: str) -> bool:
    """Whether the schedule fires in every hour of the day (a wildcard hour field).

    As cron does: a job at a fixed hour ("30 1 * * *") runs once when the clocks fall back and
    01:30 comes round again, but an hourly job runs in every real hour, the repeated one too.
    """
    return croniter(schedule).expanded[1] == ["*"]


def next_fire(schedule: str, after: datetime, tz: ZoneInfo) -> datetime:
    """The first fire time after ``after``."""
    return croniter(schedule, after.astimezone(tz)).get_next(datetime)


def due(schedule: str | None, start: datetime | None, state: tuple[int | None, int | None] | None,
        now: datetime, tz: ZoneInfo) -> Due:
    """Decide whether a campaign is due at ``now``.

    ``state`` is the ledger's (last fire, pending fire). A scheduled campaign seen for the first
    time without a ``start`` is due from its next fire time on: adding a campaign file never sends
    a message for an occurrence that was already past.
    """
    if schedule is None:
        return Due(True, note="event-driven: evaluated on every run")
    last, pending = state or (None, None)
    if pending is not None:
        return Due(True, from_epoch(pending), resumed=True, note="finishing an interrupted occurrence")
    fire = latest_fire(schedule, now, tz)
    if last is None:
        if start is None:
            return Due(False, note="new campaign: first occurrence at "
                                   f"{next_fire(schedule, now, tz).isoformat()}", baseline=now)
        floor = start
    else:
        floor = from_epoch(last)
    if last is not None and _same_wall_time(fire, floor, tz) and not _every_hour(schedule):
        # Clocks fell back and the fire time came round again: cron's "01:30" is one occurrence.
        return Due(False, note=f"next occurrence {next_fire(schedule, now, tz).isoformat()}")
    if fire > floor or (last is None and fire >= floor):
        return Due(True, fire, note=f"occurrence {fire.isoformat()}")
    return Due(False, note=f"next occurrence {next_fire(schedule, now, tz).isoformat()}")


def at_local_time(day: date, clock: time, zone: tzinfo) -> datetime:
    """``clock`` on ``day`` on a clock in ``zone``, as quiet hours read a wall time: a time that
    happens twice (clocks fall back) is the first, one that never happens (they spring forward
    past it) is the moment of the jump."""
    from outreach.policy.quiet_hours import first_instant

    return first_instant(datetime.combine(day, clock, tzinfo=zone)).astimezone(zone)


def next_local_time(clock: time, after: datetime, zone: ZoneInfo) -> datetime:
    """The first instant at or after ``after`` when a clock in ``zone`` shows ``clock``.

    What ``send_at`` gives each message of a campaign: a weekly newsletter whose occurrence fires
    on Sunday at 18:00 UTC with ``send_at = "09:00"`` reaches Yerevan at 09:00 on Monday their
    time and Los Angeles at 09:00 on Monday theirs.
    """
    day = after.astimezone(zone).date()
    for offset in range(3):  # today or tomorrow; a day skipped whole (Samoa, 2011) needs a third
        at = at_local_time(day + timedelta(days=offset), clock, zone)
        if at >= after:
            return at
    return at


def at_send_time(cands: Sequence["Candidate"], clock: time, base: datetime, tz: ZoneInfo) -> None:
    """A campaign's ``send_at``: each candidate leaves at ``clock`` on its customer's own clock,
    the first time it shows that at or after ``base`` (the occurrence, or now for a campaign
    without a schedule) or after the rule's own ``not_before``, if later. Dedupe keys are the
    rule's and do not change; quiet hours and caps then see this send time."""
    by_zone: dict[str, datetime] = {}
    for cand in cands:
        customer = cand.customer
        if cand.not_before is not None and cand.not_before > base:
            cand.not_before = next_local_time(clock, cand.not_before, customer_zone(customer, tz))
            continue
        at = by_zone.get(customer.timezone)
        if at is None:
            at = by_zone[customer.timezone] = next_local_time(clock, base, customer_zone(customer, tz))
        cand.not_before = at


__all__ = ["Due", "at_local_time", "at_send_time", "due", "epoch", "latest_fire", "next_fire",
           "next_local_time"]
