#!/usr/bin/env python3
"""Set up and run outreach from a fresh checkout, with nothing but Python and pip.

    python3 dev.py demo [ARGS]   # `outreach run` on the bundled demo (ARGS go to outreach)
    python3 dev.py test [ARGS]   # the whole test suite (ARGS go to pytest)
    python3 dev.py outreach ...  # any outreach command in the project's environment
    python3 dev.py docs [ARGS]   # build the documentation site into site/ (ARGS go to mkdocs)
    python3 dev.py sync-demo     # copy the demo into outreach/examples/bakery (what `init` ships)

The first call makes a virtual environment in .venv and installs the core and the first-party
plugins into it (editable, with the test tools); later calls reuse it, and reinstall only when a
pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
#: The demo at the repository root, which `outreach init` ships as the bakery example.
DEMO = ("outreach.toml", "campaigns", "data", "templates")
EXAMPLE = ROOT / "outreach" / "examples" / "bakery"
PACKAGES = [".[test,postgresql,docs]", "plugins/outreach-sendgrid[test]", "plugins/outreach-twilio[test]"]


def _bin(name: str) -> Path:
    folder = "Scripts" if os.name == "nt" else "bin"
    suffix = ".exe" if os.name == "nt" else ""
    return VENV / folder / f"{name}{suffix}"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for spec in PACKAGES:
        path = ROOT / spec.split("[")[0] / "pyproject.toml"
        digest.update(path.read_bytes() if path.exists() else b"-")
    return digest.hexdigest()


def ensure_environment() -> None:
    """Create .venv and install everything once; again only when a pyproject.toml changed."""
    stamp = VENV / ".outreach-installed"
    if stamp.exists() and stamp.read_text() == _fingerprint() and _bin("outreach").exists():
        return
    if not _bin("python").exists():
        print("setting up .venv (first run only)...", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    pip = [str(_bin("python")), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    args = []
    for spec in PACKAGES:
        if (ROOT / spec.split("[")[0]).exists():
            args += ["-e", spec]
    subprocess.run(pip + args, cwd=ROOT, check=True)
    stamp.write_text(_fingerprint())


def sync_demo() -> None:
    """Make outreach/examples/bakery an exact copy of the demo (tests/test_init.py checks it)."""
    shutil.rmtree(EXAMPLE, ignore_errors=True)
    EXAMPLE.mkdir(parents=True)
    for name in DEMO:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, EXAMPLE / name)
        else:
            shutil.copy2(source, EXAMPLE / name)
    print(f"copied {', '.join(DEMO)} into {EXAMPLE.relative_to(ROOT)}", file=sys.stderr)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "outreach", "docs", "sync-demo"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv[0] == "sync-demo":
        sync_demo()
        return 0
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "docs":
        return subprocess.run([str(_bin("mkdocs")), "build", "--strict", *rest], cwd=ROOT).returncode
    if command == "test":
        return subprocess.run([str(_bin("python")), "-m", "pytest", *rest], cwd=ROOT).returncode
    if command == "demo":
        rest = ["run", *rest]
    return subprocess.run([str(_bin("outreach")), *rest], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
