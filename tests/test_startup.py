"""What ``outreach`` loads at start-up: a cron run pays for every module it imports, every time.

Checked on module names, not on timings (which a loaded machine makes meaningless): a fresh
interpreter imports the CLI (or opens an SQLite ledger) and reports ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

#: Loaded only when needed: phone metadata when a phone number is read, PostgreSQL's SQLAlchemy
#: dialect when a PostgreSQL ledger opens; the server, worker, report and locale stacks only by
#: the commands that use them.
LAZY = ("phonenumbers", "sqlalchemy.dialects.postgresql", "aiohttp", "plotly", "procrastinate",
        "babel")


def loaded(code: str, cwd: Path) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_importing_the_cli_loads_none_of_the_heavy_optional_modules(tmp_path):
    modules = loaded("import outreach.cli", tmp_path)
    assert "outreach.cli" in modules and "sqlalchemy" in modules  # the run needs the ledger
    assert [m for m in LAZY if m in modules] == []


def test_an_sqlite_ledger_does_not_load_postgresql(tmp_path):
    modules = loaded("from outreach.ledger import Ledger\n"
                     "Ledger('sqlite:///' + 'ledger.db').close()", tmp_path)
    assert "sqlalchemy.dialects.sqlite" in modules
    assert "sqlalchemy.dialects.postgresql" not in modules


def test_a_phone_number_still_loads_its_metadata(tmp_path):
    modules = loaded("from outreach.addresses import normalize\n"
                     "assert normalize('phone', '(503) 555-0104', 'US') == ('+15035550104', None)",
                     tmp_path)
    assert "phonenumbers" in modules


def test_loading_the_installed_plugins_does_not_load_aiohttp(tmp_path):
    # The Twilio channel imports it where it sends: a run that only plans, or sends through
    # another channel, does not pay for it.
    modules = loaded("from outreach.plugins import get_plugins\nget_plugins()", tmp_path)
    assert "aiohttp" not in modules
