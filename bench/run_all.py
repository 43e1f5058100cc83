"""Every figure, several times, and a table of medians (with the machine it ran on).

    python bench/run_all.py [--repeat 5] [--small] [--json FILE]

Runs each bench command in its own process (so one's memory or threads do not colour another's)
and reads the figures they print.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, PYTHON, machine_line, median  # noqa: E402

#: (command, its arguments at full size). --small replaces the arguments.
COMMANDS = [
    ("plan.py", ["--customers", "1000000", "--compare", "100000"]),
    ("incremental.py", ["--customers", "1000000", "--repeat", "1"]),
    ("outbox_write.py", ["--messages", "300000"]),
    ("dispatch_rate.py", ["--rate", "100", "--seconds", "10", "--concurrency", "32"]),
    ("dispatch_twilio.py", ["--messages", "20000", "--concurrency", "64"]),
    ("dispatch_sendgrid.py", ["--messages", "100000", "--concurrency", "4"]),
    ("versus_loop.py", ["--messages", "2000", "--concurrency", "64"]),
    ("webhooks.py", ["--events", "10000", "--batch", "200", "--inbound", "1000"]),
]


def run(script: str, args: list[str]) -> list[dict]:
    out = subprocess.run([PYTHON, str(BENCH / script), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{script} failed:\n{out.stdout}\n{out.stderr}")
    return [json.loads(line[len("@@figure "):]) for line in out.stdout.splitlines()
            if line.startswith("@@figure ")]


def _number(value: float) -> str:
    """Four significant digits, without exponents: 1.03, 32.75, 185,806."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.4g}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--small", action="store_true")
    p.add_argument("--only", action="append", help="run only this script (repeatable)")
    p.add_argument("--json", type=Path, help="also write every run's figures here")
    a = p.parse_args(argv)
    print(machine_line(), flush=True)
    runs: dict[str, list[dict]] = {}
    for script, args in COMMANDS:
        if a.only and script not in a.only:
            continue
        for i in range(a.repeat):
            for fig in run(script, ["--small"] if a.small else args):
                runs.setdefault(fig["figure"], []).append(fig)
                print(f"  {script} run {i + 1}: {fig['figure']} = {fig['value']:,.2f} {fig['unit']}",
                      flush=True)
    print(f"\n| figure | median of {a.repeat} | unit | target | runs |")
    print("|---|---:|---|---|---|")
    for name, figs in runs.items():
        values = [f["value"] for f in figs]
        shown = ", ".join(_number(v) for v in values)
        print(f"| {name} | {_number(median(values))} | {figs[0]['unit']} | {figs[0]['target']} | "
              f"{shown} |")
    if a.json:
        a.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
