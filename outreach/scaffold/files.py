"""Writing a tree of files into a folder, all or nothing, never over an existing file."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from outreach.errors import UsageError


class ExistingFiles(UsageError):
    """The destination already holds some of the files to be written; nothing was written."""

    def __init__(self, dest: Path, existing: list[str]) -> None:
        self.existing = existing
        shown = ", ".join(existing[:10]) + (f" and {len(existing) - 10} more"
                                            if len(existing) > 10 else "")
        super().__init__(f"{dest} already has {shown}; nothing was written (choose an empty "
                         "folder, or move those files away)")


def write_tree(dest: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write ``files`` (relative path → content) under ``dest``; returns the paths written.

    Every path is checked first, so a refusal leaves the folder as it was.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is a file, not a folder")
    existing = sorted(rel for rel in files if (dest / rel).exists())
    if existing:
        raise ExistingFiles(dest, existing)
    written = []
    for rel, content in sorted(files.items()):
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written
