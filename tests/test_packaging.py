"""The three distributions build, pass `twine check`, and do the first hour in an empty venv:
install the wheels, `outreach init`, `validate`, `run`, then a channel plugin from the template,
installed, with its own tests (the channel contract among them) passing."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECTS = {"outreach": REPO, "outreach-sendgrid": REPO / "plugins" / "outreach-sendgrid",
            "outreach-twilio": REPO / "plugins" / "outreach-twilio"}

pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 900,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("OUTREACH_CONFIG", "OUTREACH_PLUGINS", "PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env={**environ, **(env or {})})
    return result


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.args, result.stdout[-4000:], result.stderr[-4000:])
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    for project in PROJECTS.values():
        ok(run(sys.executable, "-m", "build", "--outdir", out, project))
    return out


def _wheel(dist: Path, name: str) -> Path:
    [wheel] = dist.glob(f"{name.replace('-', '_')}-*.whl")
    return wheel


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        [name] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(z.read(name))


def test_twine_check_passes_on_every_distribution(dist):
    files = sorted(dist.iterdir())
    assert len(files) == 6  # a wheel and an sdist each
    result = ok(run(sys.executable, "-m", "twine", "check", "--strict", *files))
    assert result.stdout.count("PASSED") == 6


def test_the_core_wheel_carries_its_examples_templates_and_types(dist):
    wheel = _wheel(dist, "outreach")
    names = zipfile.ZipFile(wheel).namelist()
    for path in ("outreach/py.typed", "outreach/examples/bakery/outreach.toml",
                 "outreach/examples/bakery/campaigns/newsletter.toml",
                 "outreach/examples/bakery/data/customers.csv",
                 "outreach/examples/blank/campaigns/thank-you.toml",
                 "outreach/scaffold/templates/channel/MODULE/channel.py.tmpl"):
        assert path in names, path
    assert not [n for n in names if n.endswith((".db", ".pyc")) or "/outbox/" in n]
    meta = _metadata(wheel)
    assert meta["License-Expression"] == "MIT"
    assert "Typing :: Typed" in meta.get_all("Classifier")
    assert {u.split(",")[0] for u in meta.get_all("Project-URL")} >= {"Documentation", "Source",
                                                                      "Changelog"}
    requires = meta.get_all("Requires-Dist")
    assert [r for r in requires if r.startswith("psycopg")] == [
        'psycopg[binary]>=3.1; extra == "postgresql"']


@pytest.mark.parametrize("name", ["outreach-sendgrid", "outreach-twilio"])
def test_plugins_declare_the_core_versions_they_work_with(dist, name):
    wheel = _wheel(dist, name)
    meta = _metadata(wheel)
    assert "outreach<0.2,>=0.1" in meta.get_all("Requires-Dist")
    assert meta["License-Expression"] == "MIT"
    assert "../" not in meta.get_payload()  # the README reads well on a package index
    assert f"{name.replace('-', '_')}/py.typed" in zipfile.ZipFile(wheel).namelist()


def test_the_first_hour_in_an_empty_environment(dist, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python, outreach = bin_dir / "python", bin_dir / "outreach"
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    ok(run(*pip, *(_wheel(dist, n) for n in PROJECTS)))
    assert run(python, "-c", "import psycopg").returncode != 0  # SQLite users go without it

    # A marketer: a project, checked, run.
    init = ok(run(outreach, "init", "shop", cwd=tmp_path))
    assert "outreach validate" in init.stdout
    shop = tmp_path / "shop"
    shipped = len(list((shop / "campaigns").glob("*.toml")))
    assert f"{shipped} campaign(s) valid" in ok(run(outreach, "validate", cwd=shop)).stdout
    report = json.loads(ok(run(outreach, "run", "--json", "--now", "2026-11-24T10:00",
                               cwd=shop)).stdout)
    assert report["totals"]["sent"] > 50
    assert len(list((shop / "outbox" / "email").glob("*.json"))) > 40
    plugins = ok(run(outreach, "plugins", "--json", cwd=shop)).stdout
    assert "outreach-sendgrid" in plugins and "outreach-twilio" in plugins

    # A PostgreSQL ledger without the extra: refused, naming it.
    toml = shop / "outreach.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace(
        'ledger = "sqlite:///outreach.db"', 'ledger = "postgresql://postgres@127.0.0.1/test"'),
        encoding="utf-8")
    refused = run(outreach, "run", cwd=shop)
    assert refused.returncode == 2
    assert "pip install 'outreach[postgresql]'" in refused.stderr

    # A plugin author: a channel from the template, installed, its tests passing.
    ok(run(outreach, "new-plugin", "channel", "pigeon", cwd=tmp_path))
    ok(run(*pip, f"{tmp_path / 'outreach-pigeon'}[test]"))
    tests = ok(run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   cwd=tmp_path / "outreach-pigeon"))
    assert "2 passed" in tests.stdout
    assert "pigeon" in ok(run(outreach, "plugins", cwd=tmp_path)).stdout
