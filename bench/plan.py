"""Planning at scale: ``outreach run --dry-run`` over a generated project (1,000,000 customers, four
due campaigns, a ledger already holding 1,000,000 messages), timed and measured from outside.

    python bench/plan.py [--customers 1000000] [--compare 100000] [--data DIR] [--small]

The project is generated once per size (bench/generate.py, seeded) under --data and reused. The
command is the real ``outreach`` in a child process; its peak memory is the child's ru_maxrss.
With --compare N the same is done at N customers and the ratio of peaks is printed.
Targets: at most 10 s and 250 MB at 1,000,000; peak(1M) at most 1.2 × peak(100k).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import BENCH, NOW, OUTREACH, base_env, figure, machine_line, run_measured  # noqa: E402


def project(customers: int, data: Path) -> Path:
    """The generated project for this size (made on first use, in a process of its own).

    This process must stay small: Linux carries a process's peak RSS across fork and exec into
    the child's ru_maxrss, so a parent that had held a generated million-row ledger would be
    measured in place of ``outreach``.
    """
    out = data / f"plan-{customers}"
    info = out / "bench.json"
    if not info.is_file() or json.loads(info.read_text()).get("customers") != customers:
        import subprocess

        subprocess.run([_common.PYTHON, str(BENCH / "generate.py"), "--customers", str(customers),
                        "--out", str(out)], check=True, capture_output=True)
    return out


def measure(customers: int, data: Path) -> dict:
    out = project(customers, data)
    wall, peak, code, stdout, stderr = run_measured(
        [OUTREACH, "run", "--dry-run", "--now", NOW, "--json"], cwd=out, env=base_env())
    if code not in (0, 1):
        raise SystemExit(f"outreach run --dry-run failed ({code}): {stderr[-2000:]}")
    report = json.loads(stdout)
    return {"customers": customers, "wall": wall, "cpu": _common.LAST_CPU[0], "peak_mb": peak,
            "selected": report["totals"]["selected"], "queued": report["totals"]["queued"],
            "due": sum(1 for c in report["campaigns"] if c["due"])}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--compare", type=int, default=None, help="also measure this size; print the ratio")
    p.add_argument("--data", type=Path, default=BENCH / ".data")
    p.add_argument("--small", action="store_true", help="a tiny run for CI (2,000 customers)")
    a = p.parse_args(argv)
    size = 2000 if a.small else a.customers
    print(machine_line())
    r = measure(size, a.data)
    print(f"{size:,} customers, {r['due']} due campaigns, {size:,} messages in the ledger: "
          f"{r['selected']:,} candidates, {r['queued']:,} would be queued; "
          f"{r['wall']:.2f} s wall ({r['cpu']:.2f} s CPU), peak {r['peak_mb']:.0f} MB")
    rows = [figure(f"plan_time_{size}", r["wall"], "s", "<= 10 s at 1,000,000", cpu=r["cpu"]),
            figure(f"plan_peak_{size}", r["peak_mb"], "MB", "<= 250 MB at 1,000,000")]
    if a.compare:
        c = measure(a.compare, a.data)
        print(f"{a.compare:,} customers: {c['wall']:.2f} s wall ({c['cpu']:.2f} s CPU), "
              f"peak {c['peak_mb']:.0f} MB")
        rows.append(figure(f"plan_peak_ratio_{size}_{a.compare}", r["peak_mb"] / c["peak_mb"], "×",
                           "<= 1.2"))
    return rows


if __name__ == "__main__":
    main()
