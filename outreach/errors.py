"""Errors a user can cause, each with a message written for that user.

A traceback shown to a user is a bug: everything the CLI can be handed that is wrong (a file, a key, a
flag, a busy ledger) is one of these classes, and the CLI turns it into a message and an exit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Exit codes of every ``outreach`` command; cron and scripts act on them, so the numbers never
    change (the README's table is checked against this class)."""

    #: everything went as planned (refusals by policy are not failures)
    OK = 0
    #: some messages failed or have an unknown outcome, or a channel was stopped
    SEND_FAILED = 1
    #: invalid configuration, input or usage; nothing was sent
    CONFIG = 2
    #: another run holds the ledger; nothing was done
    LOCKED = 3
    #: an unexpected failure: the ledger unreachable or unreadable, a bug
    INTERNAL = 4
    #: stopped by Ctrl-C (SIGINT), as shells report it (128 + 2)
    INTERRUPTED = 130


# The names these codes had first, kept for code (and plugins) that import them.
EXIT_OK = ExitCode.OK
EXIT_MESSAGES_FAILED = ExitCode.SEND_FAILED
EXIT_CONFIG = ExitCode.CONFIG
EXIT_BUSY = ExitCode.LOCKED
EXIT_INTERNAL = ExitCode.INTERNAL


class OutreachError(Exception):
    """Base class of errors that carry a message meant for the person running ``outreach``."""

    exit_code: ExitCode = ExitCode.CONFIG


@dataclass
class Problem:
    """One thing wrong with the configuration: where it is and what was expected there."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file if not self.key else f"{self.file}: {self.key}"
        return f"{where}: {self.message}"


class ConfigError(OutreachError):
    """The configuration (``outreach.toml`` or a campaign file) is invalid.

    Holds every problem found, so one ``outreach validate`` shows them all rather than one per try.
    """

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: list[Problem] | Problem) -> None:
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def at(cls, file: str | Path, key: str, message: str) -> "ConfigError":
        """A single problem in ``file`` at ``key``."""
        return cls(Problem(str(file), key, message))


class UsageError(OutreachError):
    """A command was asked for something that cannot be done (unknown campaign, customer...)."""

    exit_code = ExitCode.CONFIG


class LedgerBusy(OutreachError):
    """Another ``outreach run`` holds the planner lock on this ledger."""

    exit_code = ExitCode.LOCKED


class LedgerUnavailable(OutreachError):
    """The ledger cannot be reached or read: its server is down or refuses the connection, or its
    file is not a ledger (corrupt, or another kind of file).

    Not a configuration error (exit 2): the same file worked before and will again once the
    database is back or restored, so cron's alert must say "the system", not "the config".
    """

    exit_code = ExitCode.INTERNAL


class LockLost(OutreachError):
    """A run's planner lock ended under it (its database session was ended): it stops at once,
    writing nothing more, as another run may hold the lock now."""

    exit_code = ExitCode.INTERNAL
