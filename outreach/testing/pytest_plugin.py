"""pytest fixtures for plugin authors, loaded automatically once outreach is installed.

``outreach_project`` is a fresh :class:`~outreach.testing.Project` in a temporary folder (SQLite
ledger, outbox channels), so a rule or channel plugin's own tests can write a campaign file, run,
and look at what was sent, exactly as outreach's tests do.
"""

from __future__ import annotations

import pytest

from outreach.testing.project import Project


@pytest.fixture
def outreach_project(tmp_path) -> Project:
    """A throwaway outreach project (see :class:`outreach.testing.Project`)."""
    return Project(tmp_path / "project")
