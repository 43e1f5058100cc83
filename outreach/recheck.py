"""Consent re-checked before dispatch: a waiting message whose customer withdrew consent is withdrawn.

Consent is decided when a message is planned, but many messages are sent later: an SMS deferred by
quiet hours until local morning, a message planned by ``run --no-send`` for a later dispatch, a
retry after a provider outage. A customer who says no to a channel in the meantime (``consent_sms`` turned to ``no`` in the
audience) must not get it. The suppression list is read again by the dispatcher just before each
send; consent lives in the audience, which only the planner reads, so every ``outreach run``
re-checks the messages still waiting (``queued`` and ``deferred``; never ``sending``, which a
dispatcher holds) against the audience before it dispatches:

* on the planner's own pass over the audience, batch by batch, for the customers of the batch that
  have waiting messages (the others cost one dictionary lookup, or nothing when nothing waits),
  before the batch is planned, so a withdrawn message no longer counts towards its caps;
* when no campaign is due (there is no planning pass), on a light pass of its own that only looks at
  ids and consent, and only when something waits at all.

The customers arrive with what they changed through outreach already applied (outreach.consent): a
consent withdrawn by an unsubscribe link or an SMS STOP is gone from ``customer.consent`` even when
the export still says ``yes``, and the categories a customer left are passed alongside.

A message whose channel's consent key (``ChannelInfo.consent``) is no longer among the customer's
consents, or whose campaign category the customer left, becomes ``failed``, with an error saying why, in one statement per channel and batch, and
only if it is still waiting at that moment (:meth:`Ledger.withdraw`). It is counted as ``skipped`` in
the run report, with its reason: a refusal by policy, as consent refusals are when a message is
planned (and as a late suppression is counted ``suppressed``), not a failure that sets the exit
code. ``--dry-run`` and ``outreach plan`` write nothing and report what would be withdrawn.

A customer with waiting messages who is not in the audience at all (deleted from the CRM export, or
whose row could not be read and was reported) has no consent the run can confirm, and their waiting
messages are withdrawn too: a message that may still go out is held to the same standard as one
about to be planned, which this customer would not get. That is decided only once the whole
audience has been read: a source that fails partway raises, the run fails as it always has, and
nobody is withdrawn for being absent (customers already seen with consent withdrawn stay
withdrawn: that was read, not inferred). An audience that yields no customer at all is taken for a
broken export rather than for everyone leaving, and withdraws nobody for being absent.

Up to :data:`WAITING_IN_MEMORY` waiting messages are read in one statement at the start of the
pass and matched against each batch in memory. A larger backlog (an SMS campaign to a million
customers waiting out the night) is streamed into a temporary SQLite file instead and matched
there, one local query per batch: memory stays flat however large the backlog. Either way the
waiting messages are read once, through ``ix_messages_ready``, whatever the history each customer
has in the ledger.

``outreach dispatch`` on its own does not read the audience: it re-checks suppressions only.
"""

from __future__ import annotations

import sqlite3
import tempfile
from typing import Callable, Iterable, Mapping, Sequence

from outreach.audience import Customer
from outreach.decision import ChannelInfo
from outreach.ledger import Ledger
from outreach.report import RunReport
from outreach.shard import Shard

#: Up to this many waiting messages are read once per run (customer id -> channels, a few MB) and
#: matched against each batch in memory; past that, they go to a temporary file (_WaitingFile).
WAITING_IN_MEMORY = 100_000

#: The ledger error (and report reason) of a message withdrawn for each cause.
WITHDRAWN = "consent for {consent} was withdrawn after it was planned"
LEFT = "the customer unsubscribed from {category} messages after it was planned"
ABSENT = "the customer is no longer in the audience, so their consent cannot be confirmed"

#: Customers withdrawn for being absent, per statement (the ids go as one parameter).
_ABSENT_CHUNK = 10_000


class ConsentRecheck:
    """One run's re-check of waiting messages: :meth:`start`, :meth:`batch` per batch of the
    audience (in the order read), then :meth:`finish` once every customer has been read.

    ``row`` is told of each withdrawn message (``outreach plan`` lists it): campaign, customer id,
    key, channel and reason.
    """

    def __init__(self, ledger: Ledger, channel_info: Mapping[str, ChannelInfo], report: RunReport,
                 *, campaigns: Sequence[str] | None = None, dry_run: bool = False,
                 row: Callable[[str, str, str, str, str], None] | None = None,
                 shard: Shard | None = None) -> None:
        self.ledger = ledger
        #: A sharded run re-checks the waiting messages of its own customers only: the others'
        #: customers are not in its audience, and must not be taken for absent.
        self.shard = shard
        self.channel_info = channel_info
        self.report = report
        self.campaigns = sorted(campaigns) if campaigns else None
        self.dry_run = dry_run
        self.row = row
        self.channels = sorted(channel_info)
        #: Small outbox: customer id -> channels waiting, each customer removed once read.
        self._waiting: dict[str, frozenset[str]] | None = None
        #: Large outbox: the same, in a temporary file.
        self._file: _WaitingFile | None = None
        self._started = False
        #: Messages with a higher id were planned by this run, with today's consent: left alone.
        self._top = 0
        #: Customers read (an audience of nobody withdraws nobody for being absent).
        self.customers_read = 0

    @property
    def active(self) -> bool:
        """Whether anything waits to be re-checked (known once :meth:`start` has run)."""
        return self._file is not None or bool(self._waiting)

    def start(self) -> bool:
        """Read what waits, before the audience is read; whether anything does.

        Few waiting messages (the usual case: the deferrals of one night, messages left for a
        later dispatch) are read in one statement and matched in memory; many are copied into a
        temporary file and matched there, so memory stays flat however large the backlog.
        """
        self._started = True
        self._top = self.ledger.last_message_id()
        if not self._top:
            self._waiting = {}
            return False
        waiting = self.ledger.waiting_all(WAITING_IN_MEMORY, self.channels, self.campaigns)
        shard = self.shard
        if waiting is None:
            chunks = self.ledger.waiting(self.channels, self.campaigns)
            if shard is not None:
                chunks = ([r for r in rows if shard.owns(r[0])] for rows in chunks)
            self._file = _WaitingFile(chunks)
        else:
            if shard is not None:
                waiting = {cid: chs for cid, chs in waiting.items() if shard.owns(cid)}
            self._waiting = waiting
        return self.active

    @property
    def waiting_customers(self) -> list[str] | None:
        """The customers with waiting messages not re-checked yet, when few enough to be held in
        memory (after :meth:`start`); None for a large backlog, which needs a pass over the
        audience."""
        if self._file is not None:
            return None
        return sorted(self._waiting or ())

    def batch(self, customers: Sequence[Customer],
              left: Mapping[str, frozenset[str]] | None = None) -> None:
        """Withdraw the waiting messages of these customers whose channel they no longer agree to,
        or whose category they left (``left``: customer id -> categories).

        A customer listed twice is judged by the first row read, as the planner plans for it.
        """
        self.customers_read += len(customers)
        if self._file is not None:
            # Taken out of the file as read: a customer listed twice is judged once.
            found = self._file.pop([c.id for c in customers])
            if not found:
                return
            mine: list[tuple[Customer, frozenset[str]]] = []
            for c in customers:
                channels = found.pop(c.id, None)
                if channels is not None:
                    mine.append((c, channels))
        else:
            waiting = self._waiting
            if not waiting:
                return
            mine = []
            for c in customers:
                channels = waiting.pop(c.id, None)
                if channels is not None:
                    mine.append((c, channels))
        refused: dict[str, list[str]] = {}
        info = self.channel_info
        gone: dict[str, list[str]] = {}
        for c, channels in mine:
            consent = c.consent
            for ch in channels:
                if info[ch].consent not in consent:
                    refused.setdefault(ch, []).append(c.id)
            if left:
                for category in left.get(c.id, ()):
                    gone.setdefault(category, []).append(c.id)
        for ch, ids in sorted(refused.items()):
            self._withdraw(ids, [ch], WITHDRAWN.format(consent=info[ch].consent))
        for category, ids in sorted(gone.items()):
            self._withdraw(ids, self.channels, LEFT.format(category=category),
                           categories=[category])

    def finish(self) -> None:
        """Withdraw the waiting messages of customers the audience no longer has (see above).

        Called only once the whole audience was read without an error.
        """
        if not self._started or not self.customers_read or not self.active:
            return
        if self._file is not None:
            absent = self._file.remaining()
        else:
            absent = sorted(self._waiting or ())
        for i in range(0, len(absent), _ABSENT_CHUNK):
            self._withdraw(absent[i:i + _ABSENT_CHUNK], self.channels, ABSENT)

    def close(self) -> None:
        """Remove the temporary file of a large re-check (whether or not the pass finished)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _withdraw(self, customer_ids: list[str], channels: list[str], reason: str, *,
                  categories: list[str] | None = None) -> None:
        rows = self.ledger.withdraw(customer_ids, channels, reason, campaigns=self.campaigns,
                                    up_to=self._top, dry_run=self.dry_run, categories=categories)
        report, row = self.report, self.row
        for key, campaign, cid, channel in rows:
            report.campaign(campaign).refuse("skipped", reason)
            if row is not None:
                row(campaign, cid, key, channel, reason)


class _WaitingFile:
    """A large outbox's waiting messages as (customer id, channel), in a temporary SQLite file:
    what :meth:`ConsentRecheck.batch` matches each batch against, one local query per batch, and
    memory stays flat (held in memory, a million customers waiting out the night would take
    ~100 MB). Built from one streamed read of the waiting messages through ``ix_messages_ready``:
    asking the ledger per batch instead would read every message of every customer of the
    audience through ``ix_messages_customer``, their whole history, to find the few waiting.
    """

    _IN = 500  # ids per statement

    def __init__(self, chunks: Iterable[list[tuple[str, str]]]) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="outreach-recheck-")
        self.db: sqlite3.Connection | None = None
        try:
            db = self.db = sqlite3.connect(f"{self._folder.name}/waiting.db", isolation_level=None)
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("CREATE TABLE waiting (cid TEXT NOT NULL, channel TEXT NOT NULL, "
                       "PRIMARY KEY (cid, channel)) WITHOUT ROWID")
            db.execute("BEGIN")
            for rows in chunks:
                db.executemany("INSERT OR IGNORE INTO waiting VALUES (?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            self.close()
            raise

    def pop(self, ids: list[str]) -> dict[str, frozenset[str]]:
        """customer id -> channels waiting, for those of ``ids`` still in the file; taken out."""
        found: dict[str, set[str]] = {}
        db = self.db
        assert db is not None, "closed"
        db.execute("BEGIN")
        for i in range(0, len(ids), self._IN):
            part = ids[i:i + self._IN]
            marks = ", ".join("?" * len(part))
            rows = db.execute(f"SELECT cid, channel FROM waiting WHERE cid IN ({marks})",
                              part).fetchall()
            if rows:
                for cid, channel in rows:
                    found.setdefault(cid, set()).add(channel)
                db.execute(f"DELETE FROM waiting WHERE cid IN ({marks})", part)
        db.execute("COMMIT")
        return {cid: frozenset(channels) for cid, channels in found.items()}

    def remaining(self) -> list[str]:
        """The customers never taken out (absent from the audience), sorted."""
        assert self.db is not None, "closed"
        return [r[0] for r in self.db.execute("SELECT DISTINCT cid FROM waiting ORDER BY cid")]

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        self._folder.cleanup()
