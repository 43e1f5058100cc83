"""Frequency caps: rolling windows over what a customer was sent or is due to get, all campaigns together.

A cap ``max = 3, per = "7d"`` holds when no window of seven days around a planned send contains
more than three marketing messages for that customer (failed ones do not count; transactional
campaigns neither count nor are held back). Windows are checked both ways around the planned time,
because a message deferred by quiet hours to tomorrow morning is as real as one sent yesterday.

The planner asks about all of a customer's candidates at once, highest ``priority`` first, so when
campaigns compete for the last slot the more important one wins, whatever order they were read in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from outreach.config import CapRule
from outreach.settings import format_duration


@dataclass
class Usage:
    """A customer's counted messages: (channel, planned time in epoch seconds)."""

    items: list[tuple[str, int]]

    def count(self, cap: CapRule, channel: str, at: int) -> int:
        """How many counted messages fall within ``cap.per`` of ``at`` on the cap's channel(s)."""
        width = cap.per.total_seconds()
        if cap.channel is None:
            return sum(1 for _, t in self.items if abs(t - at) < width)
        only = cap.channel
        return sum(1 for ch, t in self.items if ch == only and abs(t - at) < width)


def applicable(caps: Sequence[CapRule], channel: str) -> list[CapRule]:
    """The caps that limit a message on ``channel``."""
    return [c for c in caps if c.channel is None or c.channel == channel]


def check(caps: Sequence[CapRule], usage: Usage, channel: str, at: int) -> str | None:
    """The reason a marketing message on ``channel`` at ``at`` would break a cap, or None."""
    if not usage.items:  # nothing counted: only a cap of zero can be reached
        if all(c.max > 0 for c in caps):
            return None
    for cap in applicable(caps, channel):
        if usage.count(cap, channel, at) >= cap.max:
            return _reason(cap)
    return None


class Limits:
    """The caps prepared for checking many sends: :meth:`check` answers exactly as :func:`check`.

    Caps allocation runs for every marketing candidate of a run (over a million at a million
    customers); the caps that apply to each channel, their windows and their refusal reasons are
    worked out once instead of on every call.
    """

    def __init__(self, caps: Sequence[CapRule]) -> None:
        self.caps = list(caps)
        #: The longest window in seconds (how far around a send the ledger must be read).
        self.width = widest(self.caps)
        #: With nothing counted, one message breaks no cap (none allows zero).
        self.one_is_free = all(c.max >= 1 for c in self.caps)
        self._positive = all(c.max > 0 for c in self.caps)
        self._by_channel: dict[str, list[tuple[str | None, float, int, str]]] = {}
        self._scoped = {_reason(c) for c in self.caps if c.channel is not None}

    def scoped(self, reason: str) -> bool:
        """Whether ``reason`` (from :meth:`check`) is a cap on one channel, which another channel
        may escape; a cap on all channels holds whatever the channel."""
        return reason in self._scoped

    def _for(self, channel: str) -> list[tuple[str | None, float, int, str]]:
        found = self._by_channel.get(channel)
        if found is None:
            found = self._by_channel[channel] = [
                (cap.channel, cap.per.total_seconds(), cap.max, _reason(cap))
                for cap in applicable(self.caps, channel)]
        return found

    def check(self, items: Sequence[tuple[str, int]], channel: str, at: int) -> str | None:
        """The reason a marketing message on ``channel`` at ``at`` would break a cap, given the
        customer's counted ``items`` ((channel, epoch seconds)), or None."""
        if not items and self._positive:
            return None
        for only, width, most, reason in self._for(channel):
            n = 0
            for ch, t in items:  # a customer has a few items: a plain loop beats sum(generator)
                if (only is None or ch == only) and abs(t - at) < width:
                    n += 1
            if n >= most:
                return reason
        return None


def _reason(cap: CapRule) -> str:
    scope = f"{cap.channel} " if cap.channel else ""
    return f"cap of {cap.max} {scope}message{'s' if cap.max != 1 else ''} per " \
           f"{format_duration(cap.per)} reached"


def widest(caps: Sequence[CapRule]) -> int:
    """The longest window in seconds (how far around a send the ledger must be read)."""
    return int(max((c.per.total_seconds() for c in caps), default=0))
