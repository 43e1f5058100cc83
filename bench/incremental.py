"""An event-only run after a full one: what a cron run every five minutes costs at scale.

    python bench/incremental.py [--customers 1000000] [--repeat 3] [--data DIR]

A generated project (bench/generate.py, seeded: 1,000,000 customers, as many events, a ledger of
as many past messages) gets schedules for its birthday and win-back campaigns, so that at a
later run only the thank-you (event-driven) is due. Then, each a real ``outreach`` child process:

1. a full run (``run --no-send``: it records every message; they are then marked sent, as a
   dispatch would leave them, without writing a million outbox files);
2. 10 purchases appended to the events file and a run: the first after the customers file was
   seen, it builds the keyed copy of the customers (reported apart: a cost paid once per change
   of the customers file);
3. ``--repeat`` times: 10 more purchases appended and a run, measured: wall time including
   start-up, the process's ``rchar`` (every byte it read: Python's own files, the ledger, the
   audience) in all and after start-up, against the audience files' size; and in the same run a
   bare ``csv.reader`` pass over the same files, for the ratio.

Targets: at most 1 s wall and 1 % of the audience files' bytes.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import BENCH, NOW, base_env, figure, machine_line  # noqa: E402

#: The child: the real command line, reporting how many bytes it read in all and after start-up.
MEASURED = """
import sys

def rchar():
    with open("/proc/self/io") as fh:
        return int(next(l for l in fh if l.startswith("rchar")).split()[1])

from outreach.cli import main
start = rchar()
try:
    main()
finally:
    sys.stderr.write(f"\\n@@read {rchar()} {start}\\n")
"""


def project(customers: int, data: Path) -> Path:
    """The generated project for this size, made once, with only the thank-you unscheduled."""
    out = data / f"incremental-{customers}"
    info = out / "bench.json"
    if not info.is_file() or json.loads(info.read_text()).get("customers") != customers:
        subprocess.run([_common.PYTHON, str(BENCH / "generate.py"), "--customers", str(customers),
                        "--out", str(out)], check=True, capture_output=True)
    for name, schedule in (("birthday", "0 8 * * *"), ("win-back", "0 8 * * *")):
        path = out / "campaigns" / f"{name}.toml"
        text = path.read_text()
        if "schedule" not in text:
            path.write_text(text.replace("channels =", f'schedule = "{schedule}"\n'
                                         'start = "2026-11-01"\nchannels =', 1))
    return out


def working_copy(pristine: Path) -> Path:
    """A fresh copy of the generated project (its files grow and its ledger fills as it runs)."""
    import shutil

    out = pristine.with_name(pristine.name + "-run")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(pristine, out, ignore=shutil.ignore_patterns("outbox", ".outreach-cache"))
    return out


def run(out: Path, now: datetime, *extra: str) -> dict:
    """One measured ``outreach run`` child: wall, bytes read in all and after start-up, report."""
    cmd = [_common.PYTHON, "-c", MEASURED, "run", "--json", "--now", now.isoformat(), *extra]
    env = base_env(OUTREACH_PLUGINS="")
    # As installed: Python's compiled files are written once and read on every start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    wall, _, code, stdout, stderr = _common.run_measured(cmd, cwd=out, env=env, timeout=3600)
    if code not in (0, 1):
        raise SystemExit(f"outreach run failed ({code}): {stderr[-3000:]}")
    total, start = (int(x) for x in stderr.rsplit("@@read ", 1)[1].split())
    return {"wall": wall, "cpu": _common.LAST_CPU[0], "rchar": total,
            "after_startup": total - start, "report": json.loads(stdout)}


def append_purchases(out: Path, now: datetime, n: int, seq: int) -> None:
    with (out / "data" / "events.csv").open("a", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        for i in range(n):
            w.writerow((f"n{seq:04d}{i:03d}", f"c{(seq * 7919 + i * 104729) % 1000 + 1:07d}",
                        "purchase", (now - timedelta(seconds=30 - i)).isoformat(),
                        f"SS-n{seq}-{i}", "12.50", "1 gata"))


def csv_pass(files: list[Path]) -> float:
    """A bare csv.reader pass over the files: the floor of anything that reads them."""
    started = time.perf_counter()
    for path in files:
        with path.open(newline="", encoding="utf-8") as fh:
            for _ in csv.reader(fh):
                pass
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--data", type=Path, default=BENCH / ".data")
    p.add_argument("--small", action="store_true", help="a tiny run for CI (2,000 customers)")
    a = p.parse_args(argv)
    size = 2000 if a.small else a.customers
    print(machine_line())
    out = working_copy(project(size, a.data))
    now = datetime.fromisoformat(NOW)
    files = [out / "data" / "customers.csv", out / "data" / "events.csv"]

    full = run(out, now, "--no-send")
    db = sqlite3.connect(out / "outreach.db")
    with db:
        db.execute("UPDATE messages SET state = 'sent', sent_at = not_before "
                   "WHERE state IN ('queued', 'deferred')")
    db.close()
    print(f"full run: {full['wall']:.1f} s, {full['report']['totals']['queued']:,} queued, "
          f"read {full['rchar'] / 1e6:,.0f} MB ({full['report']['planning']})")

    now += timedelta(minutes=5)
    append_purchases(out, now, 10, 0)
    first = run(out, now)
    print(f"first event-only run (builds the customers' keyed copy): {first['wall']:.2f} s, "
          f"read {first['rchar'] / 1e6:,.1f} MB ({first['report']['planning']})")

    walls, cpus, reads, after, passes = [], [], [], [], []
    for k in range(1, a.repeat + 1):
        now += timedelta(minutes=5)
        append_purchases(out, now, 10, k)
        r = run(out, now)
        planning = r["report"]["planning"]
        if planning.get("mode") != "incremental":
            raise SystemExit(f"expected an incremental run, got {planning}")
        thanks = next(c for c in r["report"]["campaigns"] if c["name"] == "thank-you")
        size_now = sum(f.stat().st_size for f in files)
        passes.append(csv_pass(files))
        walls.append(r["wall"])
        cpus.append(r["cpu"])
        reads.append(r["rchar"] / size_now)
        after.append(r["after_startup"] / size_now)
        print(f"event-only run {k}: {r['wall']:.2f} s wall ({r['cpu']:.2f} s CPU), read {r['rchar'] / 1e6:.1f} MB "
              f"({r['after_startup'] / 1e3:,.0f} kB after start-up) of {size_now / 1e6:,.0f} MB "
              f"of audience files; thank-you queued {thanks['queued']}; csv.reader pass "
              f"{passes[-1]:.2f} s")
    wall = statistics.median(walls)
    bare = statistics.median(passes)
    return [figure(f"incremental_wall_{size}", wall, "s", "<= 1 s at 1,000,000",
                   csv_reader_pass=bare, ratio=wall / bare),
            figure(f"incremental_cpu_{size}", statistics.median(cpus), "s"),
            figure(f"incremental_read_share_{size}", 100 * statistics.median(reads), "%",
                   "<= 1 % at 1,000,000"),
            figure(f"incremental_read_after_startup_share_{size}", 100 * statistics.median(after),
                   "%"),
            figure(f"incremental_first_run_wall_{size}", first["wall"], "s"),
            figure(f"full_run_wall_{size}", full["wall"], "s")]


if __name__ == "__main__":
    main()
