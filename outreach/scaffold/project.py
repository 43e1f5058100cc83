"""``outreach init``: a working project from an example shipped inside the package."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from outreach.errors import UsageError
from outreach.scaffold.files import write_tree

#: The examples ``outreach init --example`` offers, with what each holds.
EXAMPLES = {
    "bakery": "the demo bakery: eight campaigns in four languages, 50 customers and their events",
    "blank": "one thank-you campaign, one customer (you), no events yet",
}
#: Files of a project that a run writes and an example must not carry.
_RUN_FILES = ("outreach.db", "outbox")


def example_files(name: str) -> dict[str, bytes]:
    """The files of example ``name`` (relative path → content)."""
    if name not in EXAMPLES:
        raise UsageError(f"no example named {name!r} (examples: {', '.join(EXAMPLES)})")
    out: dict[str, bytes] = {}
    _collect(files("outreach").joinpath("examples", name), "", out)
    return out


def _collect(node: Traversable, prefix: str, out: dict[str, bytes]) -> None:
    for child in node.iterdir():
        rel = f"{prefix}{child.name}"
        if child.name.startswith((".", "__")) or child.name.startswith(_RUN_FILES):
            continue
        if child.is_dir():
            _collect(child, rel + "/", out)
        else:
            out[rel] = child.read_bytes()


def init_project(dest: Path, example: str = "bakery") -> list[Path]:
    """Write example ``example`` into ``dest`` (created when missing); returns the files written.

    Raises :class:`~outreach.scaffold.files.ExistingFiles` (nothing written) when any of them is
    already there.
    """
    return write_tree(Path(dest), example_files(example))
