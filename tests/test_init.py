"""`outreach init`: a working project from the examples shipped inside the package."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGED = REPO / "outreach" / "examples" / "bakery"
DEMO = ("outreach.toml", "campaigns", "data", "templates")


def outreach(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUTREACH_CONFIG"}
    return subprocess.run([sys.executable, "-m", "outreach", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=120)


def _files(root: Path, names=DEMO) -> set[str]:
    found = set()
    for name in names:
        path = root / name
        found |= {str(p.relative_to(root)) for p in ([path] if path.is_file() else path.rglob("*"))
                  if p.is_file()}
    return found


def test_the_packaged_bakery_is_the_demo():
    """The repository's demo (what `python3 dev.py demo` runs) is the example `init` writes."""
    demo, packaged = _files(REPO), _files(PACKAGED, [p.name for p in PACKAGED.iterdir()])
    differ = sorted(f for f in demo & packaged if not filecmp.cmp(REPO / f, PACKAGED / f, shallow=False))
    assert (sorted(demo - packaged), sorted(packaged - demo), differ) == ([], [], []), (
        "the demo at the repository root and outreach/examples/bakery (what `outreach init` "
        "ships) differ: run `python3 dev.py sync-demo` to copy the root's demo into the package")


def test_init_writes_the_bakery_which_validates_and_runs(tmp_path):
    result = outreach(tmp_path, "init", "shop")
    assert result.returncode == 0, result.stderr
    shop = tmp_path / "shop"
    assert _files(shop) == _files(REPO)
    assert [line.split("#")[0].strip() for line in result.stdout.splitlines()[-4:]] == [
        "cd shop", "outreach validate", "outreach plan", "outreach run"]

    assert outreach(shop, "validate").returncode == 0
    run = outreach(shop, "run", "--json", "--now", "2026-11-24T10:00")
    assert run.returncode == 0, run.stderr
    report = {c["name"]: c for c in json.loads(run.stdout)["campaigns"]}
    assert report["newsletter"]["sent"] == 43 and report["apology"]["sent"] == 3


def test_init_blank_is_a_small_project_that_validates_and_runs(tmp_path):
    result = outreach(tmp_path, "init", "--example", "blank")
    assert result.returncode == 0, result.stderr
    assert "cd " not in result.stdout  # written here: no folder to change to
    assert sorted(_files(tmp_path, ["outreach.toml", "campaigns", "data"])) == [
        "campaigns/thank-you.toml", "data/customers.csv", "data/events.csv", "outreach.toml"]
    assert outreach(tmp_path, "validate").returncode == 0
    (tmp_path / "data" / "events.csv").write_text(
        "id,customer_id,type,time\ne1,c001,purchase,2026-12-01T09:00:00+00:00\n", encoding="utf-8")
    run = outreach(tmp_path, "run", "--json", "--now", "2026-12-01T10:00:00+00:00")
    assert run.returncode == 0, run.stderr
    [message] = [json.loads(p.read_text(encoding="utf-8"))
                 for p in (tmp_path / "outbox" / "email").glob("*.json")]
    assert message["to"] == "ada@example.com"
    assert "Thank you for your order of 1 December 2026." in message["body"]  # en-GB, Babel


def test_init_never_overwrites(tmp_path):
    (tmp_path / "campaigns").mkdir()
    mine = tmp_path / "campaigns" / "thank-you.toml"
    mine.write_text("# mine\n", encoding="utf-8")
    (tmp_path / "outreach.toml").write_text("# mine\n", encoding="utf-8")
    result = outreach(tmp_path, "init", "--example", "blank")
    assert result.returncode == 2
    assert "campaigns/thank-you.toml" in result.stderr and "outreach.toml" in result.stderr
    assert "nothing was written" in result.stderr
    assert mine.read_text(encoding="utf-8") == "# mine\n"
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("args, message", [
    (["init", "--example", "cafe"], "Invalid value for '--example'"),
])
def test_init_refuses_an_unknown_example(tmp_path, args, message):
    result = outreach(tmp_path, *args)
    assert result.returncode == 2 and message in result.stderr
    assert list(tmp_path.iterdir()) == []
