"""Adding addresses to the suppression list: one from the command line, or a whole file.

Every address is normalised first (:mod:`outreach.addresses`), so the entry stored is the form
the planner and the dispatcher compare; an address that does not normalise is refused, never
stored as typed (it could never match anyone).

A file is read as it streams, never whole, and written in batches of :data:`BATCH` addresses,
each one set-wise insert: either one address per line, or a CSV file with a header whose address
column is named by ``--column`` or found by its name (``email``, ``phone``…).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from outreach.addresses import kind_of, normalize
from outreach.errors import UsageError
from outreach.ledger import Ledger

#: Addresses written per transaction by an import.
BATCH = 5000

#: Header names (compared ignoring case, spaces, - and _) taken for an address column, by kind.
_COLUMN_NAMES = {
    "email": {"email", "emailaddress", "mail"},
    "phone": {"phone", "phonenumber", "mobile", "mobilephone", "sms", "tel", "telephone"},
}


@dataclass
class Refused:
    """A line of an imported file that could not be stored, and why."""

    file: str
    line: int
    address: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.problem}"


@dataclass
class ImportReport:
    """What an import did: new entries, ones already listed (or repeated), lines refused."""

    file: str
    added: int = 0
    already: int = 0
    refused: list[Refused] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "added": self.added, "already_present": self.already,
                "refused": [{"line": r.line, "address": r.address, "problem": r.problem}
                            for r in self.refused]}


def one(address: str, region: str | None) -> tuple[str, str]:
    """(kind, normalised address) for ADDRESS given on the command line; UsageError if it does
    not normalise (nothing is stored)."""
    kind = kind_of(address)
    normal, problem = normalize(kind, address, region)
    if normal is None:
        raise UsageError(f"suppress: {problem}; nothing was stored")
    return kind, normal


def _norm_header(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _cells(path: Path, column: str | None) -> Iterator[tuple[int, str, str | None]]:
    """(line number, address as written, its kind if the column says) for each address."""
    shown = str(path)
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise UsageError(f"suppress --import: cannot read {shown}: {exc.strerror or exc}") from None
    with handle:
        try:
            first = handle.readline()
        except UnicodeDecodeError:
            raise UsageError(f"suppress --import: {shown}:1: not UTF-8 text") from None
        header = next(csv.reader([first]), [])
        names = [_norm_header(h) for h in header]
        wanted: list[tuple[int, str | None]] = []
        if column is not None:
            if column not in header and _norm_header(column) not in names:
                raise UsageError(f"suppress --import: {shown}:1: no column {column!r} in the "
                                 f"header ({', '.join(header) or 'empty line'})")
            index = header.index(column) if column in header else names.index(_norm_header(column))
            kind = next((k for k, known in _COLUMN_NAMES.items() if names[index] in known), None)
            wanted = [(index, kind)]
        else:
            wanted = [(i, k) for i, n in enumerate(names) for k, known in _COLUMN_NAMES.items()
                      if n in known]
        lineno = 1
        try:
            if not wanted:  # one address per line (the first line is one too)
                for lineno, line in enumerate(_chain(first, handle), start=1):
                    text = line.strip()
                    if text and not text.startswith("#"):
                        yield lineno, text, None
                return
            reader = csv.reader(handle)
            for row in reader:
                lineno = reader.line_num + 1  # the header was line 1
                for index, kind in wanted:
                    cell = row[index].strip() if index < len(row) else ""
                    if cell:
                        yield lineno, cell, kind
        except UnicodeDecodeError:
            raise UsageError(f"suppress --import: {shown}:{lineno + 1}: not UTF-8 text") from None
        except csv.Error as exc:
            raise UsageError(f"suppress --import: {shown}:{lineno + 1}: {exc}") from None


def _chain(first: str, rest: io.TextIOBase | Any) -> Iterator[str]:
    if first:
        yield first
    yield from rest


def import_file(ledger: Ledger, path: Path, reason: str, region: str | None,
                column: str | None = None, shown: str | None = None) -> ImportReport:
    """Add every address of ``path``; refused lines are reported, the good ones added anyway."""
    report = ImportReport(shown or str(path))
    batch: list[tuple[str, str]] = []

    def flush() -> None:
        if batch:
            unique = list(dict.fromkeys(batch))
            added = ledger.suppress_many(unique, reason, "import")
            report.added += added
            report.already += len(batch) - added
            batch.clear()

    for lineno, text, kind in _cells(path, column):
        kind = kind or kind_of(text)
        normal, problem = normalize(kind, text, region)
        if normal is None:
            report.refused.append(Refused(report.file, lineno, text, problem or "not an address"))
            continue
        batch.append((kind, normal))
        if len(batch) >= BATCH:
            flush()
    flush()
    return report


__all__ = ["BATCH", "ImportReport", "Refused", "import_file", "kind_of", "normalize", "one"]
