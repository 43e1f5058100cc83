"""Rate limits: a channel's ``rate_limit`` held by one process, or by every process of a ledger.

:class:`RateLimiter` spaces one process's sends evenly. :class:`SharedRateLimiter` holds the same
limit across every process that sends through a PostgreSQL ledger (several ``outreach worker`` or
``outreach dispatch`` processes on any number of hosts): the budget is one row per channel in the
ledger's database, a virtual clock (the generic cell-rate algorithm):

* ``next_at`` is the time (the database's clock, in seconds) from which the channel's next send
  slot is free. A process that needs slots reserves a block of ``k`` of them in one statement:
  the block starts at ``max(next_at, now)`` and ``next_at`` moves ``k / rate`` on.
* The statement answers how far the block's start is from the database's ``now``, so a host
  waits by its own monotonic clock: hosts' wall clocks never have to agree.
* Within a block, the process spaces its ``k`` sends ``1 / rate`` apart, as one process always
  has. Blocks are ``rate × 0.1 s`` long (10 slots at 100/s): each process makes about ten small
  updates a second while it sends, whatever the rate.
* A block never starts in the past (the budget lends no idle time: with several processes, idle
  time lent to each would add up), and a slot is used at most ``slack`` late (a process busy for
  a moment) or not at all: neither an idle process nor one whose event loop was held up comes
  back with a burst.

Every slot is handed to one process, and slots are ``1 / rate`` apart: in any window of ``w``
seconds at most ``rate × (w + slack) + 1`` messages leave, whichever processes send them (at
100/s, a burst of 6 at most; providers meter with a bucket of about a tenth of a second's worth).
The README's "Scaling out" section has the figures and the model.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Callable

from sqlalchemy import Column, Float, MetaData, String, Table, text
from sqlalchemy.engine import Engine

from outreach.ledger import SCHEMA_LOCK

#: The budget: one row per channel (its configured name), in the ledger's schema.
_metadata = MetaData()
budget = Table(
    "outreach_rate_budget", _metadata,
    Column("channel", String(64), primary_key=True),
    Column("next_at", Float, nullable=False),
)

#: Seconds of a channel's rate one reservation takes.
BLOCK_SECONDS = 0.1

_RESERVE = (
    "INSERT INTO outreach_rate_budget AS b (channel, next_at) "
    "VALUES (%(channel)s, extract(epoch FROM clock_timestamp()) + %(span)s) "
    "ON CONFLICT (channel) DO UPDATE SET next_at = "
    "greatest(b.next_at, extract(epoch FROM clock_timestamp())) + %(span)s "
    "RETURNING next_at - %(span)s - extract(epoch FROM clock_timestamp())")


class RateLimiter:
    """Spaces sends evenly so that at most ``rate`` messages a second leave this process.

    Even spacing (rather than a burst then a pause) is what keeps a provider from answering 429.
    A slot missed while the loop was busy elsewhere (writing outcomes) may be used up to ``slack``
    seconds late, so short pauses do not pull the rate under what is configured: at most
    ``rate × slack`` messages (5 at 100/s) ever leave closer together than the even spacing.
    Used from one event loop (no lock needed): :meth:`delay` reserves the slots and says how long
    to wait for them.
    """

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 slack: float = 0.05) -> None:
        self.rate = rate
        self.slack = slack
        self._clock = clock
        self._next = 0.0

    def delay(self, n: int = 1) -> float:
        """Reserve the next ``n`` slots; seconds until the first of them (0 when it is now)."""
        if not self.rate:
            return 0.0
        now = self._clock()
        start = max(now - self.slack, self._next)
        self._next = start + n / self.rate
        return max(0.0, start - now)

    async def acquire(self, n: int = 1) -> None:
        """Wait until ``n`` more messages may leave."""
        wait = self.delay(n)
        if wait > 0:
            await asyncio.sleep(wait)


class SharedRateLimiter(RateLimiter):
    """:class:`RateLimiter` with the budget shared by every process of a PostgreSQL ledger.

    ``reserve(k)`` is one statement in the ledger's database (see the module's docstring); the
    slots it returns are handed out here, in order, ``1 / rate`` apart.
    """

    def __init__(self, engine: Engine, channel: str, rate: float | None,
                 clock: Callable[[], float] = time.monotonic, slack: float = 0.05) -> None:
        super().__init__(rate, clock, slack)
        self.engine = engine
        self.channel = channel
        #: The current block: the local time of its next free slot, and how many are left.
        self._slot = 0.0
        self._left = 0
        self._turn: asyncio.Lock | None = None

    def reserve(self, k: int) -> float:
        """Reserve ``k`` consecutive slots of the shared budget; the local (monotonic) time of
        the first."""
        assert self.rate
        with self.engine.begin() as conn:
            ahead = conn.exec_driver_sql(_RESERVE, {"channel": self.channel,
                                                    "span": k / self.rate}).scalar_one()
        # Timed from the answer, not the question: a slow round trip makes the block look later
        # than it is (a slot used a little late), never earlier (two processes at once).
        return self._clock() + float(ahead)

    def delay(self, n: int = 1) -> float:
        """Take the next ``n`` slots (reserving a block when this one has too few); seconds until
        the first of them."""
        if not self.rate:
            return 0.0
        now = self._clock()
        if self._left and self._slot < now - self.slack:
            # Slots that passed unused are gone: skip to the first one still in time.
            passed = min(self._left, math.ceil((now - self.slack - self._slot) * self.rate))
            self._slot += passed / self.rate
            self._left -= passed
        if self._left < n:
            k = max(n, math.ceil(self.rate * BLOCK_SECONDS))
            self._slot, self._left = self.reserve(k), k
        start = self._slot
        self._slot += n / self.rate
        self._left -= n
        return max(0.0, start - now)

    async def acquire(self, n: int = 1) -> None:
        """Wait until ``n`` more messages may leave.

        Callers take their turn one at a time, each waiting for the next slot: a slot is given to
        a caller only when it is due, not handed out ahead to every caller in flight. A wait that
        overran its slot by more than ``slack`` (the event loop was held up: a long statement,
        another thread) takes the slot due now instead: callers waking late together would
        otherwise leave at once, and slots handed out ahead would all be lost to one pause.
        """
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            while True:
                wait = self.delay(n)
                slot = self._clock() + wait
                if wait > 0:
                    await asyncio.sleep(wait)
                if self._clock() - slot <= self.slack:
                    return


def ensure_budget(engine: Engine) -> None:
    """Create the budget table when it is missing (safe when several processes start at once)."""
    with engine.begin() as conn:
        conn.execute(text(SCHEMA_LOCK))
        budget.create(conn, checkfirst=True)


def limiter_for(engine: Engine | None) -> Callable[[str, float | None], RateLimiter]:
    """What a dispatcher makes each channel's limiter with: shared through ``engine`` (a
    PostgreSQL ledger's), or per process (no engine: SQLite, one host)."""
    if engine is None:
        return lambda channel, rate: RateLimiter(rate)
    ready: list[bool] = []

    def make(channel: str, rate: float | None) -> RateLimiter:
        if not rate:
            return RateLimiter(None)
        if not ready:
            ensure_budget(engine)
            ready.append(True)
        return SharedRateLimiter(engine, channel, rate)

    return make
