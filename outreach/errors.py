"""Errors a user can cause, each with a message written for that user.

A traceback shown to a user is a bug: everything the CLI can be handed that is wrong (a file, a key, a
flag, a busy ledger) is one of these classes, and the CLI turns it into a message and an exit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Exit codes of every ``outreach`` command (documented in the README).
EXIT_OK = 0
EXIT_MESSAGES_FAILED = 1
EXIT_CONFIG = 2
EXIT_BUSY = 3
EXIT_INTERNAL = 4


class OutreachError(Exception):
    """Base class of errors that carry a message meant for the person running ``outreach``."""

    exit_code = EXIT_CONFIG


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

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[Problem] | Problem) -> None:
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def at(cls, file: str | Path, key: str, message: str) -> "ConfigError":
        """A single problem in ``file`` at ``key``."""
        return cls(Problem(str(file), key, message))


class UsageError(OutreachError):
    """A command was asked for something that cannot be done (unknown campaign, customer...)."""

    exit_code = EXIT_CONFIG


class LedgerBusy(OutreachError):
    """Another ``outreach run`` holds the planner lock on this ledger."""

    exit_code = EXIT_BUSY


class LockLost(OutreachError):
    """A run's planner lock ended under it (its database session was ended): it stops at once,
    writing nothing more, as another run may hold the lock now."""

    exit_code = EXIT_INTERNAL
