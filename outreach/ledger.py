"""The ledger: every decision and every message, in SQLite or PostgreSQL, behind one interface.

SQLAlchemy Core keeps one set of queries for both databases. Times are stored as whole seconds since
the epoch (UTC): comparisons are plain integer comparisons on both databases, there is no time-zone
ambiguity, and rows stay small.

The outbox is a state machine::

    queued ──claim──▶ sending ──▶ sent | failed | deferred | unknown
      ▲                  │  (claim expired, never handed over) ──▶ queued
      └── deferred ◀─────┘  (claim expired after the hand-over)  ──▶ unknown

A claim has an owner and an expiry; ``handed_at`` is written just before a message is handed to
its provider, so a crashed process's rows are recovered exactly: never handed → queued again,
possibly handed → ``unknown``, never resent without an operator's word.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import re
from operator import itemgetter
import time as _time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, cast, overload

import filelock
from sqlalchemy import (
    BigInteger, Column, Index, Integer, MetaData, String, Table, Text, UniqueConstraint,
    create_engine, event, func, insert, inspect, select, text, update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError

from outreach.errors import LedgerBusy, LedgerUnavailable, LockLost, OutreachError
from outreach.rule import PastMessage

metadata = MetaData()
_ID = BigInteger().with_variant(Integer(), "sqlite")

messages = Table(
    "messages", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("key", String(255), nullable=False, unique=True),
    Column("campaign", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("address", String(320), nullable=False),
    Column("name", String(256), nullable=False, default=""),
    Column("locale", String(35), nullable=False, default=""),
    Column("variables", Text, nullable=False),
    Column("category", String(16), nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("state", String(16), nullable=False),
    Column("not_before", BigInteger, nullable=False),  # planned send time: what caps count
    Column("due_at", BigInteger, nullable=False),  # next time it may be attempted
    Column("attempts", Integer, nullable=False, default=0),
    Column("claim_owner", String(64)),
    Column("claim_expires", BigInteger),
    Column("handed_at", BigInteger),
    Column("provider_id", String(255)),
    Column("segments", Integer),
    Column("error", Text),
    Column("created_at", BigInteger, nullable=False),
    Column("sent_at", BigInteger),
    Column("updated_at", BigInteger, nullable=False),
    Column("run_id", String(64)),
    # The policy that stopped a planned message before it left ("suppression", "consent"): such a
    # failure is a decision, and `outreach resend --failed` leaves it alone unless named.
    Column("stopped_by", String(16)),
    # The recipient's IANA zone when it was planned: the dispatcher checks quiet hours in it at the
    # moment of sending. NULL (a message planned before the column existed): the deployment's zone.
    Column("timezone", String(64)),
    # The A/B variant of the campaign this message carries (None: the campaign has no variants).
    # Its templates are in the message's own campaign version (one version per variant).
    Column("variant", String(64)),
    # The claim's order, level by level (see Ledger.claim): within one state and priority, due
    # rows come first by due time, so a claim reads what it takes and never sorts the backlog.
    # It also serves recovery (state = 'sending') and the counts by state.
    Index("ix_messages_ready", "state", "priority", "due_at", "id"),
    # One index serves caps (customer, time range) and history (customer, then campaign): a
    # customer has few messages, and every index is paid for on each of a million inserts.
    Index("ix_messages_customer", "customer_id", "not_before"),
)

campaign_versions = Table(
    "campaign_versions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("content", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("campaign", "hash", name="uq_campaign_version"),
)

campaign_state = Table(
    "campaign_state", metadata,
    Column("campaign", String(64), primary_key=True),
    Column("last_fire", BigInteger),  # the last schedule occurrence fully planned
    Column("pending_fire", BigInteger),  # an occurrence being planned (finished first after a crash)
    Column("updated_at", BigInteger, nullable=False),
)

suppressions = Table(
    "suppressions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # "email" or "phone"
    Column("address", String(320), nullable=False),
    Column("reason", Text, nullable=False),
    Column("source", String(64), nullable=False),  # operator, provider (STOP, bounce), import
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("kind", "address", name="uq_suppression"),
)

skips = Table(
    "skips", metadata,
    Column("key", String(255), primary_key=True),
    Column("campaign", String(64), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("decided_at", BigInteger, nullable=False),
    Column("run_id", String(64)),
    Index("ix_skips_customer", "customer_id"),
)

runs = Table(
    "runs", metadata,
    Column("id", String(64), primary_key=True),
    Column("command", String(32), nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),
    Column("now", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("summary", Text),
)

# ---------------------------------------------------------------------- what customers told us
# Written by ``outreach serve`` (links, preference page, feedback, provider webhooks) and by
# operators; read by the planner, the consent re-check and the dispatcher (outreach.consent).

#: Every change of consent a customer made through outreach (or a provider reported), in order:
#: the latest change per consent key or category outranks the audience export (which will still
#: say ``yes`` after a customer unsubscribed).
consent_changes = Table(
    "consent_changes", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("customer_id", String(128), nullable=False),
    Column("consent", String(64)),  # a channel's consent key ("email", "sms"), or NULL
    Column("category", String(64)),  # a campaign category ("marketing"), or NULL
    Column("action", String(16), nullable=False),  # "withdrawn" or "granted"
    Column("source", String(32), nullable=False),  # link, stop, bounce, complaint, preferences...
    Column("evidence", String(255), nullable=False, default=""),  # event id, message key
    Column("created_at", BigInteger, nullable=False),
    # sha256 of (customer, consent, category, action, evidence) when evidence is given: the same
    # evidence (a webhook redelivered, a link clicked twice) records one change.
    Column("dedupe", String(64), unique=True),
    Index("ix_consent_changes_customer", "customer_id", "created_at", "id"),
)

#: Events the customers' own answers produce (a feedback rating), merged by the planner with the
#: source's events so rules read them like any other event.
customer_events = Table(
    "customer_events", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("event_id", String(255), nullable=False, unique=True),
    Column("customer_id", String(128), nullable=False),
    Column("type", String(64), nullable=False),
    Column("time", BigInteger, nullable=False),
    Column("attributes", Text, nullable=False),
    Index("ix_customer_events_type", "type", "time"),
)

#: A customer's own frequency cap ("fewer messages"), stricter than the deployment's.
customer_caps = Table(
    "customer_caps", metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("most", Integer, nullable=False),  # messages...
    Column("per", BigInteger, nullable=False),  # ...per this many seconds
    Column("updated_at", BigInteger, nullable=False),
)

#: The consent actions of :meth:`Ledger.record_consent_change`.
CONSENT_ACTIONS = ("withdrawn", "granted")


def consent_key(consent: str | None, category: str | None) -> str:
    """The key of a consent change in :meth:`Ledger.consent_overrides`: the channel's consent key
    itself ("email"), or ``category:NAME`` for a campaign category."""
    return consent if consent is not None else f"category:{category}"


# ---------------------------------------------------------------------- event cursors
# Where each audience source's event stream was read up to by the last run that planned from it
# (outreach.incremental): a run in which only event-driven campaigns are due reads the events
# after it. Written in the same transaction as the messages planned from those events, so a crash
# leaves the cursor behind what was recorded, never ahead.
event_cursors = Table(
    "event_cursors", metadata,
    Column("source", String(64), primary_key=True),  # Source.cursor_identity()
    Column("stream", String(64), primary_key=True),  # "events"
    Column("cursor", Text, nullable=False),  # JSON: outreach.incremental's state
    Column("updated_at", BigInteger, nullable=False),
)

#: Message states. ``sending`` is the only one a process holds; the last four are outcomes.
STATES = ("queued", "sending", "sent", "failed", "deferred", "unknown")
_IN_LIST = 500  # ids or keys per IN (...) clause: well under every driver's parameter limit


def epoch(value: datetime) -> int:
    """Seconds since the epoch of an aware datetime."""
    return int(value.timestamp())


@overload
def from_epoch(value: int) -> datetime: ...


@overload
def from_epoch(value: None) -> None: ...


def from_epoch(value: int | None) -> datetime | None:
    """An aware UTC datetime from stored seconds (None for a NULL column)."""
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


def wall_clock() -> int:
    """Real time, for claims and leases (a replayed ``--now`` must not make live claims expire)."""
    return int(_time.time())


def _chunks(items: Sequence[Any], size: int = _IN_LIST) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _by_shape(rows: Sequence[dict[str, Any]], leave_out: tuple[str, ...],
              ) -> list[tuple[list[str], list[tuple[Any, ...]]]]:
    """(columns, value tuples) for each shape of row (its keys, less ``leave_out``).

    The planner's rows all have the first row's keys: rows as wide as it from which those keys
    can all be read have no others, so that case costs no tuple of keys per row.
    """
    first = tuple(rows[0])
    if not set(first) & set(leave_out) and all(len(r) == len(first) for r in rows):
        try:
            return [(list(first), list(map(_getter(first), rows)))]
        except KeyError:  # as wide as the first, with other keys: grouped below
            pass
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        shapes.setdefault(tuple(r), []).append(r)
    out = []
    for names, same in shapes.items():
        cols = [n for n in names if n not in leave_out]
        out.append((cols, list(map(_getter(cols), same))))
    return out


def _getter(cols: Sequence[str]) -> Any:
    """A function from a row to the tuple of its ``cols`` values."""
    return itemgetter(*cols) if len(cols) > 1 else (lambda r, _c=cols[0]: (r[_c],))


def _marks(prefix: str, values: Sequence[Any], params: dict[str, Any]) -> str:
    """``:p0, :p1, ...`` for ``values``, added to ``params`` under those names."""
    names = [f"{prefix}{i}" for i in range(len(values))]
    params.update(zip(names, values))
    return ", ".join(":" + n for n in names)


#: Taken (on PostgreSQL) by whoever creates tables in the ledger's schema, for the length of its
#: transaction: two concurrent CREATE TABLEs would otherwise collide on the catalogue.
SCHEMA_LOCK = ("SELECT pg_advisory_xact_lock(hashtext(current_database() || '.' || current_schema() "
               "|| '.outreach-schema'))")

#: The planner lock's advisory key on PostgreSQL: one per ledger (two ledgers in different schemas
#: of one database do not block each other). Planning shards hold it shared (outreach.workers).
PLANNER_LOCK_KEY = "hashtext(current_database() || '.' || current_schema() || '.outreach-planner')"

#: Why a planning run stopped when its lock's session ended (LockLost).
_LOCK_LOST = ("the planner lock on the ledger was lost while planning (its database session "
              "ended): this run stopped and wrote nothing after the loss; another run may hold "
              "the lock now. Run again once it is done")


class OnConnection:
    """What a fenced ledger writes through instead of an engine: every transaction on the one
    connection that holds a lock (a transaction begun inside another is part of it).

    Once that connection is lost, so is the lock, and nothing is written through it again:
    SQLAlchemy would otherwise reconnect a lost connection on its next use, without the lock.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        if self.conn.invalidated or self.conn.closed:
            raise LockLost(_LOCK_LOST)
        if self.conn.in_transaction():
            yield self.conn
            return
        with self.conn.begin():
            yield self.conn


#: The states a claim takes messages from.
_CLAIMABLE = ("queued", "deferred")
#: What a claim returns, in the order of Claimed's fields.
_CLAIMED_COLUMNS = ("id, key, campaign, version_id, customer_id, channel, address, name, locale, "
                    "variables, category, attempts, timezone")
#: The columns an outcome may set besides its state (Ledger.settle).
_SETTLE_COLUMNS = ("provider_id", "segments", "error", "sent_at", "due_at", "attempts",
                   "stopped_by")
#: Outcomes with equal values are written by one UPDATE over their ids from this many on; fewer
#: (Twilio's, each with its own message id) go by primary key in one executemany.
_SETWISE = 4


def _settle_sets(present: Sequence[str]) -> str:
    """The SET list of a settle: the state, the claim given up, and the outcome's columns."""
    return ", ".join(["state = :state", "claim_owner = NULL", "claim_expires = NULL",
                      "updated_at = :t"] + [f"{c} = :{c}" for c in present])


#: Claim order within a level, on rows of Ledger._claimable: due time, then id.
_DUE_ORDER = itemgetter(0, 1)

_raw_decode = json.JSONDecoder().raw_decode


def _loads(raw: str) -> Any:
    """``json.loads`` for the ledger's own JSON text, at a third of its cost per call.

    The stored variables are written by ``json.dumps`` (no surrounding whitespace): the C scanner
    reads them directly. Anything else takes the ordinary path, which also raises as it did.
    """
    try:
        value, end = _raw_decode(raw)
        if end == len(raw):
            return value
    except (ValueError, TypeError):
        pass
    return json.loads(raw)


@dataclass(frozen=True)
class FailedSelection:
    """Which failed messages ``outreach resend --failed`` is about (every filter given must hold).

    ``since`` is a Unix time (the message failed at or after it); ``reason`` a piece of its error,
    compared ignoring case; ``keys`` names messages, including ones a policy stopped.
    """

    campaigns: tuple[str, ...] = ()
    since: int | None = None
    reason: str | None = None
    keys: tuple[str, ...] = ()


@dataclass(slots=True)
class Claimed:
    """A message claimed for sending (slotted: thousands are made per claim, and read often)."""

    id: int
    key: str
    campaign: str
    version_id: int
    customer_id: str
    channel: str
    address: str
    name: str
    locale: str
    variables: dict[str, Any]
    category: str
    attempts: int
    #: The recipient's zone (IANA name), or None for the deployment's.
    timezone: str | None = None


class Ledger:
    """One ledger, SQLite or PostgreSQL, shared safely by several processes."""

    def __init__(self, url: str) -> None:
        self.url = _driver_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        #: Whether opening made a new, empty ledger (no dedupe key, no suppression): the caller
        #: says so, as a mistyped path would otherwise forget everything without a word.
        self.created = False
        try:
            if self.is_sqlite:
                db = self.url.split("///", 1)[1] if "///" in self.url else ""
                if db and db != ":memory:" and not db.startswith("file:"):
                    folder = Path(db).parent
                    if not folder.is_dir():
                        raise OutreachError(f"the ledger's folder {folder} does not exist (ledger "
                                            f"{_safe_url(self.url)}): create it, or correct the "
                                            "path; no new ledger was made")
                self.engine = _sqlite_engine(self.url, immediate=True)
                self.reader = _sqlite_engine(self.url, immediate=False)
            else:
                self.engine = _postgresql_engine(self.url)
                self.reader = self.engine
            self._create_schema()
        except ArgumentError as exc:  # a URL SQLAlchemy cannot use: the configuration's mistake
            raise OutreachError(f"cannot open the ledger {_safe_url(self.url)}: "
                                f"{_first_line(exc)}") from None
        except SQLAlchemyError as exc:  # unreachable, refused, or not a ledger: exit 4
            raise LedgerUnavailable(f"cannot open the ledger {_safe_url(self.url)}: "
                                    f"{_first_line(exc)}") from None
        self._versions: dict[int, dict[str, Any]] = {}

    def _create_schema(self) -> None:
        """Create missing tables (and update an older ledger's indexes, see :func:`_migrate`); safe
        when several processes open a new ledger at once.

        SQLite serialises this through BEGIN IMMEDIATE; on PostgreSQL a transaction-scoped advisory
        lock does (two concurrent CREATE TABLEs would otherwise collide on the catalogue).
        """
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                conn.execute(text(SCHEMA_LOCK))
            self.created = not inspect(conn).has_table("messages")
            _phone_index_where(conn.dialect.name)
            metadata.create_all(conn, checkfirst=True)
            _migrate(conn)

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()
        if self.reader is not self.engine:
            self.reader.dispose()

    # ------------------------------------------------------------------ the planner lock
    @contextlib.contextmanager
    def planner_lock(self) -> Iterator["Ledger"]:
        """Hold the one-planner-at-a-time lock, or raise LedgerBusy at once; yields the ledger to
        plan with.

        SQLite: an OS file lock beside the database (released by the OS if the process dies).
        PostgreSQL: a session advisory lock on a dedicated connection (released when it closes).
        Every write of the ledger yielded goes through that connection (:class:`OnConnection`,
        the fencing planning shards use too): if the session ends (terminated, a network cut,
        a restart) the lock goes with it, every later write fails, and LockLost is raised.
        """
        if self.is_sqlite:
            db = self.url.split("///", 1)[1] if "///" in self.url else ""
            if not db or db == ":memory:":
                yield self
                return
            lock = filelock.FileLock(db + ".lock", timeout=0)
            try:
                lock.acquire()
            except filelock.Timeout:
                raise LedgerBusy("another outreach run is in progress on this ledger "
                                 f"({db}); nothing was done") from None
            try:
                yield self
            finally:
                lock.release()
            return
        with self.engine.connect() as conn:
            key = conn.execute(text(f"SELECT {PLANNER_LOCK_KEY}")).scalar()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            conn.commit()
            if not got:
                raise LedgerBusy("another outreach run is in progress on this ledger; nothing was done")
            fenced = self.on_connection(conn)
            try:
                yield fenced
            except SQLAlchemyError as exc:
                if conn.invalidated or conn.closed:
                    raise LockLost(_LOCK_LOST + f" ({_first_line(exc)})") from None
                raise
            finally:
                if not (conn.invalidated or conn.closed):
                    try:
                        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        conn.commit()
                    except SQLAlchemyError:  # the session ended here: so did its lock
                        conn.invalidate()

    def on_connection(self, conn: Connection) -> "Ledger":
        """This ledger, writing through ``conn`` only (reads go on as before): the writes of
        whoever holds a lock on that connection, which end when the lock does."""
        fenced = object.__new__(type(self))
        fenced.__dict__.update(self.__dict__)
        # Only ``begin()`` is used for writes: the connection stands in for the engine.
        fenced.engine = cast(Engine, OnConnection(conn))
        return fenced

    # ------------------------------------------------------------------ campaign versions and state
    def store_version(self, campaign: str, version: str, content: Mapping[str, Any]) -> int:
        """The id of this campaign version, storing its content the first time it is seen.

        Processes that store the same version at once (planning shards) all get its one id: the
        insert that loses the race on the unique (campaign, hash) reads the winner's.
        """
        wanted = select(campaign_versions.c.id).where(
            campaign_versions.c.campaign == campaign, campaign_versions.c.hash == version)
        try:
            with self.engine.begin() as conn:
                found = conn.execute(wanted).scalar()
                if found is not None:
                    return found
                key = conn.execute(insert(campaign_versions).values(
                    campaign=campaign, hash=version, created_at=wall_clock(),
                    content=json.dumps(content, ensure_ascii=False, sort_keys=True),
                )).inserted_primary_key
                assert key is not None  # a single-row INSERT without RETURNING: SQLAlchemy reads it
                return key[0]
        except IntegrityError:
            with self.engine.begin() as conn:
                return conn.execute(wanted).scalar_one()

    def version_content(self, version_id: int) -> dict[str, Any]:
        """The stored content of a campaign version (cached: versions never change)."""
        if version_id not in self._versions:
            with self.reader.connect() as conn:
                raw = conn.execute(select(campaign_versions.c.content).where(
                    campaign_versions.c.id == version_id)).scalar_one()
            self._versions[version_id] = json.loads(raw)
        return self._versions[version_id]

    def campaign_states(self) -> dict[str, tuple[int | None, int | None]]:
        """campaign -> (last fire, pending fire), as epoch seconds."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(campaign_state.c.campaign, campaign_state.c.last_fire,
                                       campaign_state.c.pending_fire)).all()
        return {r.campaign: (r.last_fire, r.pending_fire) for r in rows}

    def _upsert_state(self, campaign: str, **values: Any) -> None:
        values["updated_at"] = wall_clock()
        with self.engine.begin() as conn:
            done = conn.execute(update(campaign_state).where(
                campaign_state.c.campaign == campaign).values(**values)).rowcount
            if not done:
                conn.execute(insert(campaign_state).values(campaign=campaign, **values))

    def begin_occurrence(self, campaign: str, fire: int) -> None:
        """Record that ``fire`` is being planned: after a crash the next run finishes it first."""
        self._upsert_state(campaign, pending_fire=fire)

    def complete_occurrence(self, campaign: str, fire: int) -> None:
        """Record that ``fire`` was fully planned."""
        self._upsert_state(campaign, last_fire=fire, pending_fire=None)

    # ------------------------------------------------------------------ planning queries (set-wise)
    # These run once per planning batch with thousands of values, so they bypass SQL compilation:
    # one statement per batch, the values passed as ONE parameter (a JSON array read by json_each
    # on SQLite, an array with = ANY on PostgreSQL), whatever the batch size.
    def _in_query(self, sql: str, values: Sequence[Any], params: Mapping[str, Any] | None = None):
        """Rows of ``sql`` whose ``{IN}`` placeholder is the set ``values``; ``params`` by name."""
        if not values:
            return []
        with self.reader.connect() as conn:
            return self._in_rows(conn, sql, values, params)

    def _in_rows(self, conn, sql: str, values: Sequence[Any],
                 params: Mapping[str, Any] | None = None) -> list[Any]:
        """:meth:`_in_query` on a connection of the caller's (a writer's, inside its transaction).

        ``{TABLE}`` in ``sql`` names the messages table read through ``ix_messages_customer`` on
        SQLite (``INDEXED BY``): without statistics, SQLite would rather take ``ix_messages_ready``
        for a condition on the state, and read every message waiting in the outbox.
        """
        out: list[Any] = []
        if not values:
            return out
        if not self.is_sqlite:
            named = {"vals": list(values), **(params or {})}
            stmt = _NAMED.sub(r"%(\1)s", sql.replace("{IN}", "= ANY(:vals)")
                              .replace("{TABLE}", "messages"))
            return conn.exec_driver_sql(stmt, named).all()
        sql = sql.replace("{TABLE}", "messages INDEXED BY ix_messages_customer")
        if _sqlite_has_json(conn):
            stmt = sql.replace("{IN}", "IN (SELECT value FROM json_each(:vals))")
            # Straight through the sqlite3 connection: one SELECT is atomic on its own, and
            # plain tuples save SQLAlchemy's Row per row (~1 µs; a million rows a large plan).
            raw = _sqlite3_of(conn)
            return raw.execute(stmt, {"vals": json.dumps(list(values)), **(params or {})}
                               ).fetchall()
        for part in _chunks(list(values)):
            stmt = sql.replace("{IN}", "IN (" + ", ".join(f":v{i}" for i in range(len(part))) + ")")
            out += conn.exec_driver_sql(stmt, {**{f"v{i}": v for i, v in enumerate(part)},
                                               **(params or {})}).all()
        return out

    def existing_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` are already in the outbox."""
        return {r[0] for r in self._in_query("SELECT key FROM messages WHERE key {IN}", keys)}

    def history(self, campaign: str, customer_ids: Sequence[str]) -> dict[str, list[PastMessage]]:
        """This campaign's messages for these customers, any state."""
        out: dict[str, list[PastMessage]] = {}
        rows = self._in_query("SELECT customer_id, key, not_before, state FROM messages "
                              "WHERE campaign = :campaign AND customer_id {IN}", customer_ids,
                              {"campaign": campaign})
        for cid, key, not_before, state in rows:
            out.setdefault(cid, []).append(PastMessage(key, from_epoch(not_before), state))
        return out

    def cap_usage(self, customer_ids: Sequence[str], lo: int, hi: int) -> dict[str, list[tuple[str, int]]]:
        """Marketing messages planned for these customers between ``lo`` and ``hi`` (not failed).

        customer id -> [(channel, planned time)]: what frequency caps count.
        """
        out: dict[str, list[tuple[str, int]]] = {}
        rows = self._in_query("SELECT customer_id, channel, not_before FROM messages "
                              "WHERE customer_id {IN} AND not_before > :lo AND not_before < :hi "
                              "AND state != 'failed' AND category != 'transactional'",
                              customer_ids, {"lo": lo, "hi": hi})
        for cid, channel, not_before in rows:
            out.setdefault(cid, []).append((channel, not_before))
        return out

    def suppressed_all(self, limit: int) -> dict[tuple[str, str], str] | None:
        """The whole suppression list, or None when it holds more than ``limit`` addresses."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(suppressions.c.kind, suppressions.c.address,
                                       suppressions.c.reason).limit(limit + 1)).all()
        if len(rows) > limit:
            return None
        return {(kind, address): reason for kind, address, reason in rows}

    def suppressed(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Which (kind, address) pairs are suppressed, with the reason."""
        by_kind: dict[str, set[str]] = {}
        for kind, address in pairs:
            by_kind.setdefault(kind, set()).add(address)
        out: dict[tuple[str, str], str] = {}
        for kind, addresses in by_kind.items():
            for address, reason in self._in_query(
                    "SELECT address, reason FROM suppressions WHERE kind = :kind AND address {IN}",
                    sorted(addresses), {"kind": kind}):
                out[(kind, address)] = reason
        return out

    # ------------------------------------------------------------------ waiting messages (consent)
    # The planner re-checks the consent of messages still waiting (queued or deferred) against the
    # audience it reads, and withdraws those whose customer no longer agrees (outreach.recheck).
    @staticmethod
    def _waiting_filters(channels: Sequence[str], campaigns: Sequence[str] | None,
                         params: dict[str, Any]) -> str:
        """The conditions on channel and campaign of the waiting messages a run re-checks."""
        sql = " AND channel IN (" + _marks("ch", list(channels), params) + ")"
        if campaigns:
            sql += " AND campaign IN (" + _marks("ca", list(campaigns), params) + ")"
        return sql

    def _ready(self) -> str:
        """The messages table, read through ``ix_messages_ready`` on SQLite: where statistics say
        (rightly) that most messages share a state, SQLite would rather scan the whole outbox than
        seek the few waiting ones (94 ms against 0.1 ms at 200,000 sent messages)."""
        return "messages INDEXED BY ix_messages_ready" if self.is_sqlite else "messages"

    def last_message_id(self) -> int:
        """The highest message id so far (0 for an empty outbox): what was planned before now."""
        with self.reader.connect() as conn:
            return int(conn.execute(select(func.max(messages.c.id))).scalar() or 0)

    def waiting_all(self, limit: int, channels: Sequence[str],
                    campaigns: Sequence[str] | None = None) -> dict[str, frozenset[str]] | None:
        """customer id -> the channels of their waiting (queued or deferred) messages, read in one
        statement through ``ix_messages_ready``; None when more than ``limit`` messages wait (in
        any campaign or channel: counted in the index alone, before any row is read)."""
        if not channels:
            return {}
        params: dict[str, Any] = {"n": limit + 1}
        waiting = f"FROM {self._ready()} WHERE state IN ('queued', 'deferred')"
        sql = (f"SELECT customer_id, channel {waiting}"
               + self._waiting_filters(channels, campaigns, params) + " LIMIT :n")
        with self.reader.connect() as conn:
            many = conn.exec_driver_sql(self._paramstyle(
                f"SELECT count(*) FROM (SELECT 1 {waiting} LIMIT :n) AS w"), {"n": limit + 1})
            if many.scalar_one() > limit:
                return None
            if self.is_sqlite:  # plain tuples, as _in_rows reads them
                cur = conn.connection.cursor()
                try:
                    rows = cur.execute(sql, params).fetchall()
                finally:
                    cur.close()
            else:
                rows = conn.exec_driver_sql(self._paramstyle(sql), params).all()
        return _channels_by_customer(rows)

    def waiting(self, channels: Sequence[str], campaigns: Sequence[str] | None = None,
                chunk: int = 10_000) -> Iterator[list[tuple[str, str]]]:
        """Every waiting (queued or deferred) message as (customer id, channel), through
        ``ix_messages_ready``, in lists of up to ``chunk``: streamed (a server-side cursor on
        PostgreSQL), never held whole, for an outbox with too many to read at once."""
        if not channels:
            return
        params: dict[str, Any] = {}
        sql = (f"SELECT customer_id, channel FROM {self._ready()} "
               "WHERE state IN ('queued', 'deferred')" + self._waiting_filters(channels, campaigns, params))
        with self.reader.connect() as conn:
            if self.is_sqlite:  # the sqlite3 cursor reads as it is fetched from
                cur = conn.connection.cursor()
                try:
                    cur.execute(sql, params)
                    while rows := cur.fetchmany(chunk):
                        yield [(cid, channel) for cid, channel in rows]
                finally:
                    cur.close()
                return
            result = conn.execution_options(stream_results=True, yield_per=chunk).exec_driver_sql(
                self._paramstyle(sql), params)
            while rows := result.fetchmany(chunk):
                yield [(cid, channel) for cid, channel in rows]

    def withdraw(self, customer_ids: Sequence[str], channels: Sequence[str], error: str, *,
                 campaigns: Sequence[str] | None = None, up_to: int | None = None,
                 dry_run: bool = False, categories: Sequence[str] | None = None,
                 ) -> list[tuple[str, str, str, str]]:
        """Fail, with ``error``, the messages of these customers on these channels that are still
        waiting (queued or deferred) at this moment; ``(key, campaign, customer id, channel)``
        of each. With ``categories``, only messages of those campaign categories. With ``up_to``, only messages whose id is at most that. With ``dry_run``, only
        says which it would be.

        Atomic, and only for rows still waiting: a message a dispatcher has claimed meanwhile
        (``sending``) is its dispatcher's and is left alone. On SQLite the rows are read and
        failed inside one write transaction (BEGIN IMMEDIATE holds the write lock, so no claim
        can come between); on PostgreSQL one ``UPDATE ... RETURNING`` does both, and a row a
        claim is taking at that instant is waited for and then, being ``sending``, not touched.
        One statement (or two) for any number of customers, never one per customer.
        """
        if not customer_ids or not channels:
            return []
        params: dict[str, Any] = {}
        where = ("customer_id {IN} AND state IN ('queued', 'deferred')"
                 + self._waiting_filters(channels, campaigns, params))
        if categories:  # a customer who left a category (outreach.consent)
            where += " AND category IN (" + _marks("cat", list(categories), params) + ")"
        if up_to is not None:
            where += " AND id <= :top"
            params["top"] = up_to
        if dry_run:
            return _withdrawn(self._in_query(
                f"SELECT key, campaign, customer_id, channel FROM {{TABLE}} WHERE {where}",
                customer_ids, params))
        t = wall_clock()
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                rows = self._in_rows(
                    conn, "UPDATE messages SET state = 'failed', error = :error, updated_at = :t, "
                    f"stopped_by = 'consent' WHERE {where} "
                    "RETURNING key, campaign, customer_id, channel", customer_ids,
                    {**params, "error": error, "t": t})
                return _withdrawn(rows)
            rows = self._in_rows(
                conn, f"SELECT id, key, campaign, customer_id, channel FROM {{TABLE}} WHERE {where}",
                customer_ids, params)
            if rows:
                self._by_ids(conn, "UPDATE {MESSAGES} SET state = 'failed', error = :error, "
                             "updated_at = :t, stopped_by = 'consent' WHERE {IDS}",
                             [r[0] for r in rows], {"error": error, "t": t})
        return _withdrawn(r[1:] for r in rows)

    def insert_messages(self, rows: Sequence[dict[str, Any]]) -> int:
        """Add planned messages; a key already present is left alone. Returns how many were new.

        One ``INSERT … ON CONFLICT (key) DO NOTHING`` executemany'd per shape of row (the
        planner's rows all have one): the unique key itself makes re-planning a no-op, with no
        read before the write and no SQL compiled per row. The times and attempts every new row
        starts with are written into the statement, not bound a million times.
        """
        if not rows:
            return 0
        shaped = _by_shape(rows, ("created_at", "updated_at", "attempts"))  # before the write lock
        with self.engine.begin() as conn:
            return self._insert_messages_on(conn, rows, shaped)

    def _insert_messages_on(self, conn: Connection, rows: Sequence[dict[str, Any]],
                            shaped: Any = None) -> int:
        """:meth:`insert_messages` inside the caller's transaction."""
        stamp = wall_clock()
        if shaped is None:
            shaped = _by_shape(rows, ("created_at", "updated_at", "attempts"))
        written = 0
        for cols, values in shaped:
            marks = ", ".join(["?" if self.is_sqlite else "%s"] * len(cols))
            sql = (f"INSERT INTO messages ({', '.join(cols)}, created_at, updated_at, attempts) "
                   f"VALUES ({marks}, {int(stamp)}, {int(stamp)}, 0) "
                   "ON CONFLICT (key) DO NOTHING")
            if self.is_sqlite:
                raw = _sqlite3_of(conn)
                before = raw.total_changes
                raw.executemany(sql, values)
                written += raw.total_changes - before
            else:
                written += conn.exec_driver_sql(sql, values).rowcount
        return written

    def record_skips(self, rows: Sequence[dict[str, Any]]) -> None:
        """Record refused candidates with their reason (the latest decision per key is kept).

        One ``INSERT … ON CONFLICT (key) DO UPDATE`` executemany'd per shape of row: a candidate
        refused again (every run, until it consents) has its decision replaced in place, with no
        read of which keys exist first. A ``held_out`` decision is never replaced.
        """
        if not rows:
            return
        with self.engine.begin() as conn:
            self._record_skips_on(conn, rows)

    def _record_skips_on(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """:meth:`record_skips` inside the caller's transaction."""
        if not rows:
            return
        rows = list({r["key"]: r for r in rows}.values())  # the latest decision per key
        shaped = _by_shape(rows, ())
        for cols, values in shaped:
            marks = ", ".join(["?" if self.is_sqlite else "%s"] * len(cols))
            refreshed = [c for c in ("outcome", "reason", "decided_at", "run_id") if c in cols]
            # A held-out customer stays held out, from the first decision: the control group
            # and the time its conversions count from never move (see outreach.experiments).
            action = ("DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in refreshed)
                      + " WHERE skips.outcome <> 'held_out'"
                      if refreshed else "DO NOTHING")
            conn.exec_driver_sql(f"INSERT INTO skips ({', '.join(cols)}) VALUES ({marks}) "
                                 f"ON CONFLICT (key) {action}", values)

    # ------------------------------------------------------------------ event cursors
    def event_cursor(self, source: str, stream: str) -> dict[str, Any] | None:
        """The stored state of a source's event stream (see ``event_cursors``), or None."""
        with self.reader.connect() as conn:
            raw = conn.execute(select(event_cursors.c.cursor).where(
                event_cursors.c.source == source, event_cursors.c.stream == stream)).scalar()
        return None if raw is None else json.loads(raw)

    def record_planned(self, messages: Sequence[dict[str, Any]], skips: Sequence[dict[str, Any]],
                       cursor: tuple[str, str, Mapping[str, Any] | None] | None = None) -> int:
        """Messages and refusals planned from events, and the event cursor past those events
        (source, stream, state; a None state forgets the cursor), in ONE transaction: the cursor
        never gets ahead of what was recorded. Returns how many messages were new."""
        with self.engine.begin() as conn:
            written = self._insert_messages_on(conn, messages) if messages else 0
            self._record_skips_on(conn, skips)
            if cursor is not None:
                self._store_cursor_on(conn, *cursor)
        return written

    def _store_cursor_on(self, conn: Connection, source: str, stream: str,
                         state: Mapping[str, Any] | None) -> None:
        where = (event_cursors.c.source == source, event_cursors.c.stream == stream)
        if state is None:
            conn.execute(event_cursors.delete().where(*where))
            return
        raw = json.dumps(state, sort_keys=True)
        done = conn.execute(update(event_cursors).where(*where).values(
            cursor=raw, updated_at=wall_clock())).rowcount
        if not done:
            conn.execute(insert(event_cursors).values(source=source, stream=stream, cursor=raw,
                                                      updated_at=wall_clock()))

    # ------------------------------------------------------------------ dispatch
    def recover(self, now_wall: int | None = None) -> tuple[int, int]:
        """Take back claims whose process is gone (expired). Returns (requeued, marked unknown)."""
        t = now_wall or wall_clock()
        expired = (messages.c.state == "sending") & (messages.c.claim_expires < t)
        with self.engine.begin() as conn:
            unknown = conn.execute(update(messages).where(expired, messages.c.handed_at.is_not(None))
                                   .values(state="unknown", claim_owner=None, claim_expires=None,
                                           updated_at=t,
                                           error="the sending process stopped after handing the "
                                                 "message to the provider; it may have been sent")
                                   ).rowcount
            requeued = conn.execute(update(messages).where(expired, messages.c.handed_at.is_(None))
                                    .values(state="queued", claim_owner=None, claim_expires=None,
                                            updated_at=t)).rowcount
        return requeued, unknown

    def claim(self, owner: str, limit: int, now: int, ttl: int,
              campaigns: Sequence[str] | None = None, channels: Sequence[str] | None = None,
              ) -> list[Claimed]:
        """Atomically claim up to ``limit`` due messages for ``owner`` (queued/deferred → sending).

        Highest priority first, then the longest due, then the oldest; the rows come back in that
        order. They are read level by level from ``ix_messages_ready`` (:meth:`_claimable`) and
        taken by one UPDATE, in one transaction: SQLite serialises writers (BEGIN IMMEDIATE), and
        PostgreSQL locks what it read ``FOR UPDATE SKIP LOCKED``, so several dispatchers never wait
        on each other and never take the same row.
        """
        if limit <= 0 or (channels is not None and not channels):
            return []
        t = wall_clock()
        with self.engine.begin() as conn:
            rows = self._claimable(conn, limit, now, list(campaigns) if campaigns else None,
                                   None if channels is None else list(channels))
            if not rows:
                return []
            # By id alone: what was just read cannot have changed since (PostgreSQL holds the row
            # locks, SQLite the write lock), and a condition on the state could lead PostgreSQL,
            # with statistics older than the outbox's last batch, to read the state's whole index.
            taken = self._by_ids(
                conn, "UPDATE {MESSAGES} SET state = 'sending', claim_owner = :owner, "
                "claim_expires = :expires, handed_at = NULL, updated_at = :t WHERE {IDS}",
                [r[1] for r in rows], {"owner": owner, "expires": t + ttl, "t": t})
            if taken != len(rows):  # cannot happen (see above); never claim half of what was read
                raise OutreachError(f"claim: {len(rows)} messages read but {taken} taken; "
                                    "nothing was claimed")
        # Claimed(...) by position, not by name: a claim makes thousands of them.
        return [Claimed(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], _loads(r[10]), r[11],
                        r[12], r[13]) for r in rows]

    def _claimable(self, conn, limit: int, now: int, campaigns: list[str] | None,
                   channels: list[str] | None) -> list[tuple[Any, ...]]:
        """The rows a claim takes, in claim order (priority desc, due_at, id), as
        ``(due_at, *_CLAIMED_COLUMNS)``.

        One ``ORDER BY priority DESC, due_at, id`` over every due row sorts the whole backlog on
        each claim (taking 4,000 out of 100,000 cost ~10 µs per message, and grows with the
        backlog). Instead, one priority level at a time, highest first (an index seek per state
        finds the next level), each state's due rows of that level are read in index order, only
        as many as are still wanted, and the two short lists merged. Rows due later are never
        read: within their level they come after the due ones.
        """
        filters = ""
        params: dict[str, Any] = {"now": now}
        if channels is not None:
            filters += " AND channel IN (" + _marks("ch", channels, params) + ")"
        if campaigns:
            filters += " AND campaign IN (" + _marks("ca", campaigns, params) + ")"
        lock = "" if self.is_sqlite else " FOR UPDATE SKIP LOCKED"
        # The next level: the highest priority below the last one, in either state.
        level_sql = " UNION ALL ".join(
            f"SELECT max(priority) FROM messages WHERE state = '{s}'{{BELOW}}" for s in _CLAIMABLE)
        # One state's due rows of that level, in index order (a statement per state: a UNION of
        # the two would copy every row through a subquery).
        due_sql = [self._paramstyle(
            f"SELECT due_at, {_CLAIMED_COLUMNS} FROM messages WHERE state = '{s}' "
            f"AND priority = :level AND due_at <= :now{filters} ORDER BY due_at, id LIMIT :n{lock}")
            for s in _CLAIMABLE]
        cur = conn.connection.cursor()
        try:
            rows: list[tuple[Any, ...]] = []
            below: int | None = None
            while len(rows) < limit:
                sql = level_sql.replace("{BELOW}", "" if below is None else " AND priority < :below")
                cur.execute(self._paramstyle(sql), {"below": below})
                levels = [r[0] for r in cur.fetchall() if r[0] is not None]
                if not levels:
                    break
                below = max(levels)
                wanted = limit - len(rows)
                found: list[tuple[Any, ...]] = []
                for sql in due_sql:
                    cur.execute(sql, {**params, "level": below, "n": wanted})
                    if found:
                        found += cur.fetchall()
                        found.sort(key=_DUE_ORDER)  # merge the two states' rows
                    else:
                        found = cur.fetchall()
                rows += found[:wanted]
        finally:
            cur.close()
        return rows

    def mark_handed(self, ids: Sequence[int], owner: str, ttl: int | None = None) -> set[int]:
        """Record that these messages are about to be handed to their provider; returns the ids
        this owner may send.

        A message whose claim expired may already have been recovered and claimed by another
        process: its owner is no longer this one, so it is not marked, not returned, and must not
        be sent from here. One that expired but was not taken over is still this owner's (recovery
        clears the owner in the same statement that takes it back), so it is marked and its claim
        renewed, like the rest, for ``ttl`` seconds, for the calls about to be made.
        """
        wanted = set(ids)
        if not wanted:
            return set()
        t = wall_clock()
        renew = "" if ttl is None else ", claim_expires = :expires"
        mine = "{IDS} AND claim_owner = :owner AND state = 'sending'"
        params = {"t": t, "owner": owner, "expires": None if ttl is None else t + ttl}
        # The count of rows marked says whether all were (the usual case), not RETURNING: SQLite
        # returns each row with a step of its own, releasing and retaking the GIL from the sending
        # threads once per message. Only when some were taken over are the others read back.
        with self.engine.begin() as conn:
            marked = self._by_ids(conn, f"UPDATE {{MESSAGES}} SET handed_at = :t, "
                                  f"updated_at = :t{renew} WHERE {mine}", list(wanted), params)
            if marked == len(wanted):
                return wanted
            rows = self._by_ids_returning(conn, f"SELECT id FROM {{MESSAGES}} WHERE {mine}",
                                          list(wanted), params)
        return {r[0] for r in rows}

    def hold(self, until: Mapping[int, tuple[int, str]], owner: str) -> int:
        """Give claimed messages back as ``deferred`` until a given time, with the reason stored
        (quiet hours at the moment of sending); no attempt counted. ``until``: id -> (due_at,
        error). One statement per distinct (due_at, error) -- per zone and window, not per
        message -- in one transaction; how many were held."""
        groups: dict[tuple[int, str], list[int]] = {}
        for id_, key in until.items():
            groups.setdefault(key, []).append(id_)
        t = wall_clock()
        with self.engine.begin() as conn:
            return sum(self._by_ids(
                conn, "UPDATE {MESSAGES} SET state = 'deferred', due_at = :due, error = :error, "
                "claim_owner = NULL, claim_expires = NULL, handed_at = NULL, updated_at = :t "
                "WHERE {IDS} AND claim_owner = :owner", ids,
                {"due": due, "error": error, "t": t, "owner": owner})
                for (due, error), ids in groups.items())

    def release(self, ids: Sequence[int], owner: str) -> None:
        """Give claimed messages back untouched (a dispatcher stopping early)."""
        if not ids:
            return
        with self.engine.begin() as conn:
            self._by_ids(conn, "UPDATE {MESSAGES} SET state = 'queued', claim_owner = NULL, "
                         "claim_expires = NULL, handed_at = NULL, updated_at = :t "
                         "WHERE {IDS} AND claim_owner = :owner AND state = 'sending'",
                         list(ids), {"t": wall_clock(), "owner": owner})

    def settle(self, outcomes: Sequence[dict[str, Any]], owner: str) -> None:
        """Write what happened to claimed messages: state, provider id, error, next attempt.

        Each dict has ``id`` and ``state`` and any of ``provider_id``, ``segments``, ``error``,
        ``sent_at``, ``due_at``, ``attempts``. Only rows this owner still holds are touched, so a
        claim that expired and was recovered elsewhere is not overwritten.

        Outcomes that write the same values (a SendGrid request's thousand recipients share state,
        provider id and time) are written by one UPDATE over their ids; the rest by one UPDATE
        by primary key, executemany'd, per set of columns. (Values equal as Python compares them
        are one group: an ``attempts`` of 1 and of 1.0 are both written as the first one seen.)
        """
        if not outcomes:
            return
        t = wall_clock()
        # outcome shape (its keys) -> (the columns it sets, a getter of state and their values)
        getters: dict[tuple[str, ...], tuple[tuple[str, ...], Any]] = {}
        same: dict[tuple[tuple[str, ...], tuple[Any, ...]], list[int]] = {}
        by_id: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for o in outcomes:
            shape = tuple(o)
            got = getters.get(shape)
            if got is None:
                present = tuple(c for c in _SETTLE_COLUMNS if c in o)
                got = getters[shape] = (present, itemgetter("state", *present))
            present, values = got[0], got[1](o)
            try:
                same.setdefault((present, values), []).append(o["id"])
            except TypeError:  # a value that cannot be a dict key: written on its own
                by_id.setdefault(present, []).append(
                    {"id": o["id"], "t": t, "owner": owner, **dict(zip(("state", *present), values))})
        with self.engine.begin() as conn:
            for (present, values), ids in same.items():
                row = dict(zip(("state", *present), values))
                if len(ids) < _SETWISE:
                    by_id.setdefault(present, []).extend(
                        {"id": id_, "t": t, "owner": owner, **row} for id_ in ids)
                    continue
                self._by_ids(conn, "UPDATE {MESSAGES} SET " + _settle_sets(present)
                             + " WHERE {IDS} AND claim_owner = :owner", ids,
                             {**row, "t": t, "owner": owner})
            for present, rows in by_id.items():
                sql = ("UPDATE messages SET " + _settle_sets(present)
                       + " WHERE id = :id AND claim_owner = :owner")
                conn.exec_driver_sql(self._paramstyle(sql), rows)

    def _paramstyle(self, sql: str) -> str:
        """``sql`` written with ``:name`` parameters, as this ledger's driver takes them."""
        return sql if self.is_sqlite else _NAMED.sub(r"%(\1)s", sql)

    def _by_ids(self, conn, sql: str, ids: list[int], params: Mapping[str, Any]) -> int:
        """Run ``sql`` whose ``{IDS}`` stands for ``id IN ids``; how many rows it changed."""
        return sum(cur.rowcount for cur in self._ids_statements(conn, sql, ids, params))

    def _by_ids_returning(self, conn, sql: str, ids: list[int],
                          params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run ``sql`` whose ``{IDS}`` stands for ``id IN ids``; the rows of its RETURNING."""
        return [r for cur in self._ids_statements(conn, sql, ids, params) for r in cur.fetchall()]

    def _ids_statements(self, conn, sql: str, ids: list[int],
                        params: Mapping[str, Any]) -> Iterator[Any]:
        """Execute ``sql`` (``:name`` parameters) with its ``{IDS}`` standing for ``id IN ids``,
        yielding the cursor after each statement.

        The ids go as ONE parameter (a JSON array read by json_each on SQLite, an array with
        = ANY on PostgreSQL): one statement for thousands of ids, and no SQL compiled per call.
        A SQLite without the JSON functions gets them in chunks of bound parameters.

        ``{MESSAGES}`` names the table. On SQLite it says NOT INDEXED, so that the ids drive the
        statement by primary key: without statistics, SQLite's planner would rather use
        ``ix_messages_ready`` for a ``state = ...`` condition and read every row in that state.
        """
        cur = conn.connection.cursor()
        try:
            if not self.is_sqlite:
                # An array of the column's own type: PostgreSQL then matches the ids by hash (an
                # array of int2 or int4, as psycopg may send small ids, is searched one by one).
                sql = sql.replace("{MESSAGES}", "messages").replace(
                    "{IDS}", "id = ANY(CAST(:ids AS BIGINT[]))")
                cur.execute(_NAMED.sub(r"%(\1)s", sql), {**params, "ids": ids})
                yield cur
                return
            sql = sql.replace("{MESSAGES}", "messages NOT INDEXED")
            if _sqlite_has_json(conn):
                cur.execute(sql.replace("{IDS}", "id IN (SELECT value FROM json_each(:ids))"),
                            {**params, "ids": json.dumps(ids)})
                yield cur
            else:
                for part in _chunks(ids):
                    named = dict(params)
                    cur.execute(sql.replace("{IDS}", "id IN (" + _marks("id", part, named) + ")"),
                                named)
                    yield cur
        finally:
            cur.close()

    def resend_unknown(self, keys: Sequence[str] | None) -> int:
        """Queue messages whose outcome is unknown again, on an operator's explicit word.

        Each stays due as it was when it was last tried (so at once, for the next run whatever its
        ``--now``: a replayed run is not held back by the wall clock of the resend), and keeps its
        planned time, what caps count. Quiet hours are checked again when it is sent.
        """
        with self.engine.begin() as conn:
            stmt = update(messages).where(messages.c.state == "unknown")
            if keys is not None:
                stmt = stmt.where(messages.c.key.in_(list(keys)))
            return conn.execute(stmt.values(state="queued", handed_at=None,
                                            error=None, updated_at=wall_clock())).rowcount

    # ------------------------------------------------------------------ suppressions
    # Addresses are stored normalised (outreach.addresses): callers normalise before they call.
    def suppress(self, kind: str, address: str, reason: str, source: str) -> bool:
        """Add an address to the suppression list. False when it was already there.

        An address that normalises without a region (a provider's ``+15035550104``, a bounce's
        ``Jane@Example.com``) is stored normalised, whoever calls.
        """
        from outreach.addresses import normalize

        address = normalize(kind, address)[0] or address
        return self.suppress_many([(kind, address)], reason, source) == 1

    def suppress_many(self, pairs: Sequence[tuple[str, str]], reason: str, source: str) -> int:
        """Add (kind, address) pairs in one transaction, set-wise; returns how many were new.

        ``INSERT … ON CONFLICT DO NOTHING`` executemany'd: an address already listed keeps its
        first reason, and no read precedes the write.
        """
        pairs = list(dict.fromkeys(pairs))
        if not pairs:
            return 0
        stamp = int(wall_clock())
        mark = "?" if self.is_sqlite else "%s"
        sql = (f"INSERT INTO suppressions (kind, address, reason, source, created_at) "
               f"VALUES ({mark}, {mark}, {mark}, {mark}, {stamp}) "
               "ON CONFLICT (kind, address) DO NOTHING")
        values = [(kind, address, reason, source) for kind, address in pairs]
        with self.engine.begin() as conn:
            if self.is_sqlite:
                raw = _sqlite3_of(conn)
                before = raw.total_changes
                raw.executemany(sql, values)
                return raw.total_changes - before
            return conn.exec_driver_sql(sql, values).rowcount

    def normalize_suppressions(self, region: str | None) -> list[dict[str, Any]]:
        """Rewrite entries stored before addresses were normalised (``(503) 555-0104``,
        ``Jane.Doe@example.com``) in the form they are compared in, so that they match again.

        Only rows that cannot already be in normal form are read (a phone number that is not
        ``+digits``, an email address with capitals or surrounding spaces). A row whose normal
        form is listed too is dropped (the older entry, with its reason, stays). Returns the
        entries that still cannot be normalised (a national number and no ``phone_region``).
        """
        from outreach.addresses import normalize

        odd = text("SELECT id, kind, address FROM suppressions WHERE "
                   "(kind = 'phone' AND (substr(address, 1, 1) <> '+' OR address LIKE '% %' OR "
                   "address LIKE '%-%' OR address LIKE '%(%' OR address LIKE '%.%')) OR "
                   "(kind = 'email' AND (address <> lower(address) OR address <> trim(address)))")
        with self.reader.connect() as conn:
            rows = conn.execute(odd).all()
        if not rows:
            return []
        left: list[dict[str, Any]] = []
        fixes: list[tuple[int, str, str]] = []
        for id_, kind, address in rows:
            normal, problem = normalize(kind, address, region)
            if normal is None:
                left.append({"kind": kind, "address": address, "problem": problem})
            elif normal != address:
                fixes.append((id_, kind, normal))
        if fixes:
            with self.engine.begin() as conn:
                for id_, kind, normal in fixes:
                    taken = conn.execute(select(suppressions.c.id).where(
                        suppressions.c.kind == kind, suppressions.c.address == normal)).first()
                    if taken:
                        conn.execute(suppressions.delete().where(suppressions.c.id == id_))
                    else:
                        conn.execute(update(suppressions).where(suppressions.c.id == id_)
                                     .values(address=normal))
        return left

    def unsuppress(self, kind: str, address: str) -> bool:
        """Remove an address from the suppression list (the customer asked to hear from us again)."""
        with self.engine.begin() as conn:
            return bool(conn.execute(suppressions.delete().where(
                suppressions.c.kind == kind, suppressions.c.address == address)).rowcount)

    def suppression_list(self) -> list[dict[str, Any]]:
        """Every suppressed address."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(suppressions).order_by(suppressions.c.created_at)).all()
        return [dict(r._mapping) for r in rows]

    # ------------------------------------------------------------------ consent changes, own events
    def record_consent_change(self, customer_id: str, *, consent: str | None = None,
                              category: str | None = None, action: str, source: str,
                              evidence: str = "", at: int) -> bool:
        """Record that a customer withdrew or granted a channel's consent or a category.

        With ``evidence`` (an event id, a message key), recording the same change again is a
        no-op (False): providers redeliver and customers click twice. Without it, every call is a
        new change.
        """
        if (consent is None) == (category is None):
            raise ValueError("a consent change names a consent key or a category, not both")
        if action not in CONSENT_ACTIONS:
            raise ValueError(f"action must be one of {CONSENT_ACTIONS}, not {action!r}")
        dedupe = None
        if evidence:
            dedupe = hashlib.sha256("\x1f".join(
                (customer_id, consent or "", category or "", action, evidence)).encode()).hexdigest()
        row = {"customer_id": customer_id, "consent": consent, "category": category,
               "action": action, "source": source, "evidence": evidence[:255],
               "created_at": int(at), "dedupe": dedupe}
        cols = ", ".join(row)
        sql = (f"INSERT INTO consent_changes ({cols}) VALUES ("
               + ", ".join(f":{c}" for c in row) + ") ON CONFLICT (dedupe) DO NOTHING")
        with self.engine.begin() as conn:
            return bool(conn.execute(text(sql), row).rowcount)

    def consent_overrides(self, customer_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """customer id -> {consent key or ``category:NAME``: the latest action}, for those of
        ``customer_ids`` who changed anything (one statement per 500 ids; usually none)."""
        out: dict[str, dict[str, str]] = {}
        ids = sorted(set(customer_ids))
        if not ids:
            return out
        for cid, consent, category, action in self._in_query(
                "SELECT customer_id, consent, category, action FROM consent_changes "
                "WHERE customer_id {IN} ORDER BY created_at, id", ids):
            out.setdefault(cid, {})[consent_key(consent, category)] = action
        return out

    def consent_history(self, customer_id: str) -> list[dict[str, Any]]:
        """Every consent change of one customer, oldest first."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(consent_changes).where(
                consent_changes.c.customer_id == customer_id)
                .order_by(consent_changes.c.created_at, consent_changes.c.id)).all()
        return [{k: v for k, v in r._mapping.items() if k != "dedupe"} for r in rows]

    def record_customer_event(self, event_id: str, customer_id: str, type: str, at: int,
                              attributes: Mapping[str, Any]) -> bool:
        """Store an event a customer made through outreach (their latest answer per ``event_id``
        replaces an earlier one). True when it was new."""
        params = {"e": event_id, "c": customer_id, "t": type, "at": int(at),
                  "a": json.dumps(dict(attributes), sort_keys=True)}
        with self.engine.begin() as conn:
            existed = conn.execute(select(customer_events.c.id).where(
                customer_events.c.event_id == event_id)).first() is not None
            conn.execute(text(
                "INSERT INTO customer_events (event_id, customer_id, type, time, attributes) "
                "VALUES (:e, :c, :t, :at, :a) ON CONFLICT (event_id) DO UPDATE SET "
                "time = excluded.time, attributes = excluded.attributes"), params)
        return not existed

    def customer_events(self, types: Iterable[str], since: int | None = None
                        ) -> Iterator[tuple[str, str, str, int, dict[str, Any]]]:
        """The stored customer events of these types (at or after ``since``), as (event id,
        customer id, type, epoch seconds, attributes), oldest first."""
        wanted = sorted(set(types))
        if not wanted:
            return
        stmt = select(customer_events.c.event_id, customer_events.c.customer_id,
                      customer_events.c.type, customer_events.c.time,
                      customer_events.c.attributes).where(customer_events.c.type.in_(wanted))
        if since is not None:
            stmt = stmt.where(customer_events.c.time >= since)
        with self.reader.connect() as conn:
            for eid, cid, etype, t, attrs in conn.execute(stmt.order_by(customer_events.c.time)):
                yield eid, cid, etype, int(t), json.loads(attrs)

    def set_customer_cap(self, customer_id: str, most: int | None, per: int = 0) -> None:
        """Set (or with ``most`` None, remove) a customer's own cap: ``most`` messages per ``per``
        seconds."""
        with self.engine.begin() as conn:
            conn.execute(customer_caps.delete().where(customer_caps.c.customer_id == customer_id))
            if most is not None:
                conn.execute(insert(customer_caps).values(customer_id=customer_id, most=most,
                                                          per=per, updated_at=wall_clock()))

    def customer_caps(self, customer_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """customer id -> (max, per seconds) of those of ``customer_ids`` who chose fewer messages."""
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        return {cid: (int(m), int(p)) for cid, m, p in self._in_query(
            "SELECT customer_id, most, per FROM customer_caps WHERE customer_id {IN}", ids)}

    def message_by_key(self, key: str) -> dict[str, Any] | None:
        """One message by its key (what a link or a provider's event names), or None."""
        with self.reader.connect() as conn:
            row = conn.execute(select(messages).where(messages.c.key == key)).first()
        return dict(row._mapping) if row is not None else None

    # ------------------------------------------------------------------ runs and reports
    def start_run(self, command: str, now: int) -> str:
        """Record the start of a run; returns its id."""
        run_id = uuid.uuid4().hex[:16]
        with self.engine.begin() as conn:
            conn.execute(insert(runs).values(id=run_id, command=command, started_at=wall_clock(),
                                             now=now, status="running"))
        return run_id

    def finish_run(self, run_id: str, status: str, summary: Mapping[str, Any]) -> None:
        """Record how a run ended, with its summary."""
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                finished_at=wall_clock(), status=status, summary=json.dumps(summary)))

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.started_at.desc()).limit(limit)).all()
        return [{**dict(r._mapping), "summary": json.loads(r.summary) if r.summary else None}
                for r in rows]

    def state_counts(self) -> dict[str, int]:
        """How many messages are in each state."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(messages.c.state, func.count()).group_by(messages.c.state)).all()
        return {state: n for state, n in rows}

    def due_count(self, now: int, campaigns: Sequence[str] | None = None,
                  channels: Sequence[str] | None = None) -> int:
        """How many messages a dispatcher at ``now`` would claim (a progress bar's total)."""
        stmt = select(func.count()).select_from(messages).where(
            messages.c.state.in_(("queued", "deferred")), messages.c.due_at <= now)
        if campaigns:
            stmt = stmt.where(messages.c.campaign.in_(list(campaigns)))
        if channels is not None:
            stmt = stmt.where(messages.c.channel.in_(list(channels)))
        with self.reader.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def deferred_count(self, reason: str) -> int:
        """How many deferred messages wait for a reason starting with ``reason``."""
        with self.reader.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(messages).where(
                messages.c.state == "deferred",
                messages.c.error.like(reason.replace("%", r"\%").replace("_", r"\_") + "%",
                                      escape="\\"))).scalar_one())

    def problems(self, limit: int = 20) -> list[dict[str, Any]]:
        """Failed and unknown messages grouped by state and error, most frequent first."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(messages.c.state, messages.c.error, func.count().label("n"))
                                .where(messages.c.state.in_(("failed", "unknown", "deferred")))
                                .group_by(messages.c.state, messages.c.error)
                                .order_by(func.count().desc()).limit(limit)).all()
        return [{"state": r.state, "error": r.error, "count": r.n} for r in rows]

    def customer_messages(self, customer_id: str) -> list[dict[str, Any]]:
        """Every message planned for a customer, oldest first."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(messages).where(messages.c.customer_id == customer_id)
                                .order_by(messages.c.not_before, messages.c.id)).all()
        return [dict(r._mapping) for r in rows]

    def customer_skips(self, customer_id: str) -> list[dict[str, Any]]:
        """Every refusal recorded for a customer."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(skips).where(skips.c.customer_id == customer_id)
                                .order_by(skips.c.decided_at)).all()
        return [dict(r._mapping) for r in rows]

    # ------------------------------------------------------------------ resending failed messages
    def _failed(self, selection: FailedSelection, *, refused: bool) -> Any:
        """The condition for ``selection``'s failed messages: those stopped by a policy when
        ``refused``, else the others plus the ones named by key."""
        m = messages.c
        cond = m.state == "failed"
        if selection.campaigns:
            cond &= m.campaign.in_(list(selection.campaigns))
        if selection.since is not None:
            cond &= m.updated_at >= selection.since
        if selection.reason:
            cond &= func.lower(func.coalesce(m.error, "")).contains(selection.reason.lower(),
                                                                    autoescape=True)
        if selection.keys:
            cond &= m.key.in_(list(selection.keys))
            return cond & m.stopped_by.is_not(None) if refused else cond
        return cond & (m.stopped_by.is_not(None) if refused else m.stopped_by.is_(None))

    def failed_messages(self, selection: FailedSelection, limit: int = 1000
                        ) -> list[dict[str, Any]]:
        """The first ``limit`` failed messages ``selection`` would queue again, oldest first."""
        m = messages.c
        with self.reader.connect() as conn:
            rows = conn.execute(select(m.key, m.campaign, m.customer_id, m.channel, m.address,
                                       m.error, m.attempts, m.updated_at, m.stopped_by)
                                .where(self._failed(selection, refused=False))
                                .order_by(m.id).limit(limit)).all()
        return [dict(r._mapping) for r in rows]

    def failed_counts(self, selection: FailedSelection, *, refused: bool = False
                      ) -> list[dict[str, Any]]:
        """``selection``'s failed messages counted by campaign, channel and error, most first;
        with ``refused``, those a policy stopped that it leaves alone (not named by key)."""
        m = messages.c
        n = func.count().label("count")
        with self.reader.connect() as conn:
            rows = conn.execute(select(m.campaign, m.channel, m.error, m.stopped_by, n)
                                .where(self._failed(selection, refused=refused))
                                .group_by(m.campaign, m.channel, m.error, m.stopped_by)
                                .order_by(n.desc(), m.campaign, m.channel)).all()
        return [dict(r._mapping) for r in rows]

    def resend_failed(self, selection: FailedSelection) -> int:
        """Queue ``selection``'s failed messages again, on an operator's word; how many. One
        statement, whatever their number.

        A message a policy stopped (suppressed, consent withdrawn) is left failed unless its key is
        named. Each starts its attempts afresh and is due as it was when it failed (so at once);
        its planned time (what caps count) is kept. The suppression list is read again before it
        is sent, as for every message.
        """
        with self.engine.begin() as conn:
            return conn.execute(update(messages).where(self._failed(selection, refused=False))
                                .values(state="queued", attempts=0, error=None,
                                        handed_at=None, stopped_by=None, claim_owner=None,
                                        claim_expires=None, updated_at=wall_clock())).rowcount

    def unknown_messages(self) -> list[dict[str, Any]]:
        """Messages whose outcome is unknown, for an operator to decide on."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(messages.c.key, messages.c.campaign, messages.c.customer_id,
                                       messages.c.channel, messages.c.address, messages.c.error,
                                       messages.c.updated_at)
                                .where(messages.c.state == "unknown").order_by(messages.c.id)).all()
        return [dict(r._mapping) for r in rows]

    # ------------------------------------------------------------------ delivery events (providers)
    def record_delivery_events(self, events: Sequence[Mapping[str, Any]], *,
                               suppress: Sequence[tuple[str, str, str, str, str]] = (),
                               consent: Sequence[ConsentByEvent] = (),
                               consent_keys: Mapping[str, str] | None = None) -> DeliveryBatch:
        """Record a provider's events (one webhook request) in ONE transaction, set-wise.

        Each event has ``provider``, ``provider_event_id``, ``kind``, ``occurred_at`` and
        optionally ``message_key``, ``detail``, ``machine_open``; ``suppress`` holds
        ``(provider_event_id, kind, address, reason, source)`` for the events that suppress an
        address, and ``consent`` the consent changes events make (an unsubscribe, a STOP), for
        the customer named or else the customer of the event's message, on the consent key named
        or else ``consent_keys[message channel]``. The message keys are looked up in one statement; events are inserted with ON
        CONFLICT DO NOTHING on ``provider_event_id``, so an event the provider redelivers changes
        nothing: its suppression is not repeated and it settles nothing. An event for a message
        whose outcome is ``unknown`` is the provider's evidence that it received the message,
        which settles it as ``sent`` (the event is marked ``settled``). A key the ledger does not
        know is kept as unmatched (``message_key`` NULL, the key in ``detail``).

        Returns the matched messages (key -> customer id, channel, address), the new event ids,
        and the counts. Any database error propagates after the transaction rolled back, so a
        provider told to retry loses nothing: suppressions and consent changes are written in the
        same transaction as their events, only for events recorded for the first time.
        """
        received = t = wall_clock()
        keys = sorted({e["message_key"] for e in events if e.get("message_key")})
        with self.engine.begin() as conn:
            found: dict[str, tuple[str, str, str, str]] = {}
            for key, cid, channel, address, state in self._in_rows(
                    conn, "SELECT key, customer_id, channel, address, state FROM messages "
                    "WHERE key {IN}", keys):
                found[key] = (cid, channel, address, state)
            rows, seen = [], set()
            unmatched = 0
            for e in events:
                eid = str(e["provider_event_id"])[:255]
                if eid in seen:  # the same event twice in one request: one row
                    continue
                seen.add(eid)
                key = e.get("message_key") or None
                detail = e.get("detail") or ""
                if key is not None and key not in found:
                    detail = (f"unmatched key {key}" + (f"; {detail}" if detail else ""))
                    key = None
                    unmatched += 1
                elif key is None and not e["kind"].startswith("inbound_"):
                    unmatched += 1
                rows.append({"message_key": key, "provider": e["provider"],
                             "provider_event_id": eid, "kind": e["kind"],
                             "detail": detail[:1000], "machine_open": int(bool(e.get("machine_open"))),
                             "occurred_at": int(e.get("occurred_at") or received),
                             "received_at": received, "settled": 0})
            new = self._insert_delivery_events(conn, rows)
            # Unknown outcomes settled by evidence: the first new event per unknown message.
            settling: dict[str, str] = {}
            for r in rows:
                key = r["message_key"]
                if (key is not None and r["provider_event_id"] in new
                        and found[key][3] == "unknown" and key not in settling):
                    settling[key] = r["provider_event_id"]
            if settling:
                by_key = {r["provider_event_id"]: r for r in rows}
                params = [{"k": key, "t": t, "err": f"{SETTLED_BY_EVIDENCE}{by_key[eid]['provider']} "
                           f"{by_key[eid]['kind']} ({eid})"[:1000]}
                          for key, eid in settling.items()]
                conn.exec_driver_sql(self._paramstyle(
                    "UPDATE messages SET state = 'sent', error = :err, sent_at = COALESCE(sent_at, :t), "
                    "claim_owner = NULL, claim_expires = NULL, updated_at = :t "
                    "WHERE key = :k AND state = 'unknown'"), params)
                conn.exec_driver_sql(self._paramstyle(
                    "UPDATE delivery_events SET settled = 1 WHERE provider_event_id = :e"),
                    [{"e": eid} for eid in settling.values()])
            blocks = [{"kind": kind, "address": address, "reason": reason[:1000],
                       "source": source, "created_at": t}
                      for eid, kind, address, reason, source in suppress if eid in new]
            if blocks:
                conn.exec_driver_sql(self._paramstyle(
                    "INSERT INTO suppressions (kind, address, reason, source, created_at) "
                    "VALUES (:kind, :address, :reason, :source, :created_at) "
                    "ON CONFLICT (kind, address) DO NOTHING"), blocks)
            changes = []
            for c in consent:
                if c.event_id not in new:
                    continue
                message = found.get(c.message_key or "")
                customer = c.customer_id or (message[0] if message else None)
                key = c.consent or (consent_keys or {}).get(message[1] if message else "")
                if customer and key:
                    changes.append(_consent_row(customer, key, c.action, c.source, c.evidence,
                                                c.at))
            if changes:
                conn.exec_driver_sql(self._paramstyle(_CONSENT_INSERT), changes)
        return DeliveryBatch(
            matched={k: v[:3] for k, v in found.items()}, new=frozenset(new),
            received=len(rows), duplicates=len(rows) - len(new), unmatched=unmatched,
            settled=len(settling), consent_changes=len(changes))

    def _insert_delivery_events(self, conn, rows: list[dict[str, Any]]) -> set[str]:
        """Insert ``rows`` (ON CONFLICT DO NOTHING on the event id); the ids that were new.

        The whole request goes as ONE statement with ONE parameter, a JSON array of rows read by
        json_each (SQLite) or jsonb_array_elements (PostgreSQL), with RETURNING: SQLAlchemy would
        compile a multi-row VALUES anew for every request, at about 0.5 ms a row.
        """
        if not rows:
            return set()
        payload = json.dumps([[r[c] for c in _EVENT_COLUMNS] for r in rows])
        cols = ", ".join(_EVENT_COLUMNS)
        if not self.is_sqlite:
            picks = ", ".join(f"CAST(r->>{i} AS {'BIGINT' if c in _EVENT_NUMBERS else 'TEXT'})"
                              for i, c in enumerate(_EVENT_COLUMNS))
            sql = (f"INSERT INTO delivery_events ({cols}) SELECT {picks} FROM "
                   "jsonb_array_elements(CAST(%(rows)s AS jsonb)) AS r "
                   "ON CONFLICT (provider_event_id) DO NOTHING RETURNING provider_event_id")
            return {r[0] for r in conn.exec_driver_sql(sql, {"rows": payload})}
        if _sqlite_has_json(conn):
            picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(_EVENT_COLUMNS)))
            # "WHERE true": SQLite's grammar needs it between a SELECT and ON CONFLICT.
            sql = (f"INSERT INTO delivery_events ({cols}) SELECT {picks} FROM json_each(?) "
                   "WHERE true ON CONFLICT (provider_event_id) DO NOTHING "
                   "RETURNING provider_event_id")
            return {r[0] for r in _sqlite3_of(conn).execute(sql, (payload,)).fetchall()}
        new: set[str] = set()
        for part in _chunks(rows, 500):  # a SQLite without JSON: the slow, compiled way
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = (sqlite_insert(delivery_events).values(list(part))
                    .on_conflict_do_nothing(index_elements=["provider_event_id"])
                    .returning(delivery_events.c.provider_event_id))
            new.update(r[0] for r in conn.execute(stmt))
        return new

    def customers_at(self, address: str, channels: Sequence[str]) -> list[tuple[str, str, str]]:
        """(customer id, channel, latest message key) of everyone the ledger has written to at
        ``address`` on these channels (who a STOP from that number speaks for).

        Phone numbers only (``ix_messages_phone``, a partial index of SMS rows).
        """
        if not channels:
            return []
        params: dict[str, Any] = {"a": address}
        phones = _PHONE_ROWS if self.is_sqlite else _PHONE_ROWS.replace("%", "%%")  # pyformat
        sql = ("SELECT customer_id, channel, key FROM messages WHERE id IN (SELECT MAX(id) "
               "FROM messages WHERE address = :a AND " + phones + " AND channel IN ("
               + _marks("ch", list(channels), params) + ") GROUP BY customer_id, channel)")
        with self.reader.connect() as conn:
            found = conn.exec_driver_sql(self._paramstyle(sql), params).all()
        return sorted((cid, channel, key) for cid, channel, key in found)

    def suppression_source(self, kind: str, address: str) -> str | None:
        """Who put an address on the suppression list (None: it is not there)."""
        with self.reader.connect() as conn:
            return conn.execute(select(suppressions.c.source).where(
                suppressions.c.kind == kind, suppressions.c.address == address)).scalar()

    def delivery_events_for(self, keys: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """message key -> its provider events, oldest first (for ``outreach history``)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for key, provider, kind, detail, machine, occurred, settled in self._in_query(
                "SELECT message_key, provider, kind, detail, machine_open, occurred_at, settled "
                "FROM delivery_events WHERE message_key {IN} ORDER BY occurred_at, id", list(keys)):
            out.setdefault(key, []).append({"provider": provider, "kind": kind, "detail": detail,
                                            "machine_open": bool(machine),
                                            "occurred_at": int(occurred), "settled": bool(settled)})
        return out

    def evidence_counts(self) -> dict[str, int]:
        """How many unknown outcomes provider events settled, and how many provider events named
        a message this ledger does not know (``outreach status``)."""
        with self.reader.connect() as conn:
            settled = conn.execute(select(func.count()).select_from(delivery_events)
                                   .where(delivery_events.c.settled == 1)).scalar_one()
            unmatched = conn.execute(select(func.count()).select_from(delivery_events).where(
                delivery_events.c.message_key.is_(None),
                delivery_events.c.kind.notin_(("inbound_stop", "inbound_start")))).scalar_one()
        return {"settled": int(settled), "unmatched": int(unmatched)}


# ---------------------------------------------------------------------- delivery events (providers)
# Written by ``outreach serve``'s provider webhooks (outreach.serve.providers): what SendGrid and
# Twilio said happened to each message after it left, and the SMS keywords customers sent back.
# Read by ``outreach history``, ``outreach status`` and the delivery report.

delivery_events = Table(
    "delivery_events", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("message_key", String(255)),  # NULL: no message of this ledger (unmatched)
    Column("provider", String(16), nullable=False),  # "sendgrid" or "twilio"
    # SendGrid's sg_event_id; Twilio's MessageSid:status, or inbound:MessageSid for a keyword.
    Column("provider_event_id", String(255), nullable=False, unique=True),
    # SendGrid's event name (delivered, bounce, open...), Twilio's status (sent, delivered,
    # failed...), or inbound_stop / inbound_start.
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False, default=""),  # bounce type and reason, url, ErrorCode
    Column("machine_open", Integer, nullable=False, default=0),  # an open by a mail privacy proxy
    Column("occurred_at", BigInteger, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("settled", Integer, nullable=False, default=0),  # 1: it settled an unknown outcome
    Index("ix_delivery_events_message", "message_key"),
)

#: Who a phone number is (an inbound STOP names only the number): partial, so only SMS rows pay
#: for it on insert (phone numbers are stored in E.164, and only they start with "+"). A query
#: must repeat the condition, word for word, for the index to be used.
_PHONE_ROWS = "address LIKE '+%'"
ix_messages_phone = Index("ix_messages_phone", messages.c.address)


def _phone_index_where(dialect: str) -> None:
    """Make ``ix_messages_phone`` partial on ``dialect`` before it is created.

    Set when a ledger opens rather than at import: naming a dialect in an index loads it, and
    PostgreSQL's costs an SQLite ledger's every run start-up (and the other way round).
    """
    if dialect in ("sqlite", "postgresql"):
        ix_messages_phone.dialect_kwargs[f"{dialect}_where"] = text(_PHONE_ROWS)


#: The ``error`` text of a message whose unknown outcome a provider's event settled as sent.
SETTLED_BY_EVIDENCE = "outcome was unknown; settled as sent by provider evidence: "


@dataclass(frozen=True)
class DeliveryBatch:
    """What :meth:`Ledger.record_delivery_events` did with one request's events."""

    #: message key -> (customer id, channel, address), for the keys the ledger knows.
    matched: Mapping[str, tuple[str, str, str]]
    #: provider event ids recorded for the first time (the rest were redeliveries).
    new: frozenset[str]
    received: int
    duplicates: int
    unmatched: int
    settled: int
    consent_changes: int = 0


@dataclass(frozen=True)
class ConsentByEvent:
    """A consent change a provider's event makes (see :meth:`Ledger.record_delivery_events`)."""

    event_id: str
    action: str  # "withdrawn" or "granted"
    source: str
    evidence: str
    at: int
    message_key: str | None = None
    customer_id: str | None = None
    consent: str | None = None


#: The row :meth:`Ledger.record_consent_change` writes, written here with a webhook's events in
#: their transaction; the same dedupe hash, so either way one piece of evidence is one change.
_CONSENT_INSERT = ("INSERT INTO consent_changes (customer_id, consent, category, action, source, "
                   "evidence, created_at, dedupe) VALUES (:customer_id, :consent, NULL, :action, "
                   ":source, :evidence, :created_at, :dedupe) ON CONFLICT (dedupe) DO NOTHING")


def _consent_row(customer_id: str, consent: str, action: str, source: str, evidence: str,
                 at: int) -> dict[str, Any]:
    dedupe = hashlib.sha256("\x1f".join(
        (customer_id, consent, "", action, evidence)).encode()).hexdigest()
    return {"customer_id": customer_id, "consent": consent, "action": action, "source": source,
            "evidence": evidence[:255], "created_at": int(at), "dedupe": dedupe}


#: The columns :meth:`Ledger._insert_delivery_events` writes, in order, and the numeric ones.
_EVENT_COLUMNS = ("message_key", "provider", "provider_event_id", "kind", "detail",
                  "machine_open", "occurred_at", "received_at", "settled")
_EVENT_NUMBERS = frozenset({"machine_open", "occurred_at", "received_at", "settled"})


def _withdrawn(rows: Iterable[Sequence[Any]]) -> list[tuple[str, str, str, str]]:
    """(key, campaign, customer id, channel) rows, in one order whatever the database's."""
    return sorted((key, campaign, cid, channel) for key, campaign, cid, channel in rows)


def _channels_by_customer(rows: Iterable[Sequence[Any]]) -> dict[str, frozenset[str]]:
    """(customer id, channel) rows as customer id -> channels. The few distinct sets of channels
    are made once each and shared (a set per customer would be ~200 bytes each at 100,000)."""
    out: dict[str, frozenset[str]] = {}
    made: dict[tuple[frozenset[str] | None, str], frozenset[str]] = {}
    for cid, channel in rows:
        have = out.get(cid)
        combined = made.get((have, channel))
        if combined is None:
            combined = made[(have, channel)] = frozenset(have or ()) | {channel}
        out[cid] = combined
    return out


def _migrate(conn) -> None:
    """Bring an existing ledger's indexes up to date (``create_all`` only creates missing tables).

    Ledgers made before the claim read its order from an index had ``ix_messages_due`` (state,
    due_at) instead of ``ix_messages_ready``: the new index is built once, under the schema lock
    the caller holds, and the old one dropped (every index is paid for on each insert). A process
    of the previous version still works on the migrated ledger, only its claims sort.
    """
    ready = next(i for i in messages.indexes if i.name == "ix_messages_ready")
    ready.create(conn, checkfirst=True)
    _add_stopped_by(conn)
    _add_columns(conn)
    ix_messages_phone.create(conn, checkfirst=True)  # outreach serve's inbound SMS
    if conn.dialect.name == "sqlite":
        conn.execute(text("DROP INDEX IF EXISTS ix_messages_due"))
        return
    # PostgreSQL: only the index on the ``messages`` this ledger uses, not one of the same name in
    # another schema of the search path (another ledger's).
    schema = conn.execute(text(
        "SELECT n.nspname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_namespace n ON n.oid = i.relnamespace "
        "WHERE x.indrelid = 'messages'::regclass AND i.relname = 'ix_messages_due'")).scalar()
    if schema is not None:
        conn.execute(text(f'DROP INDEX IF EXISTS "{schema}".ix_messages_due'))


def _postgresql_engine(url: str) -> Engine:
    """An engine for a PostgreSQL ledger; its driver is an extra that SQLite users do without."""
    try:
        import psycopg  # noqa: F401 - only to say which extra is missing
    except ImportError:
        raise OutreachError(f"the ledger {_safe_url(url)} is PostgreSQL, and its driver (psycopg) "
                            "is not installed: pip install 'outreach[postgresql]'") from None
    return create_engine(url, pool_pre_ping=True, future=True)


def _message_columns(conn) -> set[str]:
    """The columns the ledger's ``messages`` table has now (this schema's, on PostgreSQL)."""
    if conn.dialect.name == "sqlite":
        return {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(messages)")}
    return set(conn.execute(text(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'messages' "
        "AND table_schema = current_schema()")).scalars())


def _add_stopped_by(conn) -> None:
    """Give a ledger made before ``stopped_by`` existed the column, and mark its messages that a
    policy stopped, by the texts earlier versions wrote for them."""
    have = _message_columns(conn)
    if "stopped_by" in have:
        return
    conn.execute(text("ALTER TABLE messages ADD COLUMN stopped_by VARCHAR(16)"))
    for cause, pattern in (("suppression", "suppressed after it was planned:%"),
                           ("consent", "consent for % was withdrawn after it was planned"),
                           ("consent", "the customer is no longer in the audience%")):
        conn.execute(text("UPDATE messages SET stopped_by = :cause WHERE state = 'failed' "
                          "AND error LIKE :pattern"), {"cause": cause, "pattern": pattern})


def _add_columns(conn) -> None:
    """Give a ledger made before them the nullable columns ``messages.timezone`` (NULL: the
    dispatcher checks quiet hours in the deployment's zone) and ``messages.variant`` (NULL: the
    campaign had no variants)."""
    have = _message_columns(conn)
    for column in ("timezone", "variant"):
        if column not in have:
            conn.execute(text(f"ALTER TABLE messages ADD COLUMN {column} VARCHAR(64)"))


def _driver_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def _first_line(exc: BaseException) -> str:
    text_ = str(getattr(exc, "orig", None) or exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__


_JSON_OK: dict[int, bool] = {}
_NAMED = re.compile(r"(?<!:):(\w+)")


def _sqlite3_of(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under an open SQLAlchemy connection (pysqlite's driver connection)."""
    raw = conn.connection.driver_connection
    assert raw is not None  # None only once a connection is closed or invalidated
    return raw


def _sqlite_has_json(conn) -> bool:
    """Whether this SQLite library has the JSON functions (built in since 3.38, common before)."""
    known = _JSON_OK.get(0)
    if known is None:
        try:
            conn.exec_driver_sql("SELECT json_array_length(?)", ("[]",)).all()
            known = True
        except SQLAlchemyError:
            known = False
        _JSON_OK[0] = known
    return known


def _enable_wal(cur) -> None:
    """Switch a database file to WAL once (it stays so); retry while another opener holds it.

    Switching the journal mode needs the database to itself, and SQLite answers "locked" at once
    rather than waiting when several processes open a new ledger together.
    """
    for attempt in range(200):
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == 199:
                raise
            _time.sleep(0.05)


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    """A SQLite engine for several processes: WAL, a busy timeout, and (for writers) BEGIN IMMEDIATE.

    BEGIN IMMEDIATE takes the write lock when a transaction starts, so two processes never both
    read-then-write and deadlock; readers use plain transactions and are not blocked (WAL).
    """
    engine = create_engine(url, future=True, connect_args={"timeout": 60, "isolation_level": None})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=60000")
        _enable_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
        # A larger page cache (allocated only as used) keeps the outbox's indexes in memory while
        # planning writes a million rows; SQLite's default is 2 MB.
        cur.execute("PRAGMA cache_size=-32768")
        # Copy the WAL back into the database (and fsync both) every ~40 MB written rather than
        # SQLite's 4 MB: planning and dispatch write in large transactions, and each checkpoint
        # costs a pause; fewer of them add ~8% to the outbox's insert rate. The WAL file keeps its
        # largest size (~40 MB under load) for reuse; readers find pages in it through its index.
        cur.execute("PRAGMA wal_autocheckpoint=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


__all__ = ["Ledger", "Claimed", "ConsentByEvent", "DeliveryBatch", "FailedSelection", "STATES", "epoch", "from_epoch", "wall_clock", "OperationalError"]
