"""The package and the first-party plugins type-check with mypy, as configured in pyproject.toml.

mypy runs from the project root with that file as its configuration, whatever directory the suite
was started from; its cache (.mypy_cache in the root) makes a run after the first take a second.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_errors():
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"mypy exited {done.returncode}:\n{done.stdout}{done.stderr}"
