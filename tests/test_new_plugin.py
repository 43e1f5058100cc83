"""`outreach new-plugin`: a distribution whose own tests pass as generated, for every kind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from outreach.scaffold.plugin import PLUGIN_KINDS, core_bound


def outreach(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "outreach", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_a_channel_plugin_is_a_distribution_with_an_entry_point(tmp_path):
    result = outreach(tmp_path, "new-plugin", "channel", "pigeon")
    assert result.returncode == 0, result.stderr
    root = tmp_path / "outreach-pigeon"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "README.md", "outreach_pigeon/__init__.py", "outreach_pigeon/channel.py",
        "outreach_pigeon/py.typed", "outreach_pigeon/testing.py", "pyproject.toml",
        "tests/conftest.py", "tests/test_outreach_pigeon.py"]
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points.outreach]\npigeon = "outreach_pigeon"' in pyproject
    assert f'"outreach{core_bound()}"' in pyproject
    assert result.stdout.splitlines()[-3:] == ["  cd outreach-pigeon", '  pip install -e ".[test]"',
                                               "  python -m pytest"]


def test_new_plugin_never_overwrites_and_checks_the_name(tmp_path):
    (tmp_path / "outreach-pigeon").mkdir()
    (tmp_path / "outreach-pigeon" / "README.md").write_text("mine", encoding="utf-8")
    refused = outreach(tmp_path, "new-plugin", "rule", "pigeon")
    assert refused.returncode == 2 and "README.md" in refused.stderr
    assert (tmp_path / "outreach-pigeon" / "README.md").read_text(encoding="utf-8") == "mine"
    assert not (tmp_path / "outreach-pigeon" / "pyproject.toml").exists()
    bad = outreach(tmp_path, "new-plugin", "rule", "Pigeon-Post")
    assert bad.returncode == 2 and "lower-case letters, digits and _" in bad.stderr
    assert outreach(tmp_path, "new-plugin", "carrier", "pigeon").returncode == 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(PLUGIN_KINDS))
def test_the_generated_tests_pass_once_installed(tmp_path, kind):
    """Installed as pip installs it (its entry point in a dist-info), the plugin's tests pass."""
    assert outreach(tmp_path, "new-plugin", kind, f"my_{kind}", "plugin").returncode == 0
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--target", str(site), str(tmp_path / "plugin")],
        capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("OUTREACH_PLUGINS", None)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(tmp_path / "plugin" / "tests")], cwd=tmp_path / "plugin",
                           capture_output=True, text=True, env=env, timeout=600)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout
