"""A cProfile of the planning path (``outreach run --dry-run``) over a generated project.

    python bench/profile_plan.py [--customers 1000000] [--data DIR] [--out bench/profiles/plan_1m.txt]

Writes the raw profile beside the text (``.prof``, for snakeviz or pstats) and the text: the
functions by own time and by cumulative time. cProfile roughly doubles the run time; the shares
are what matter.
"""

from __future__ import annotations

import argparse
import io
import pstats
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, NOW, PYTHON, machine_line  # noqa: E402
from plan import project  # noqa: E402

RUN = ("import cProfile, sys\n"
       "sys.argv = ['outreach', 'run', '--dry-run', '--now', {now!r}, '--json']\n"
       "from outreach.cli import main\n"
       "try:\n    cProfile.run('main()', {prof!r})\nexcept SystemExit:\n    pass\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--data", type=Path, default=BENCH / ".data")
    p.add_argument("--out", type=Path, default=BENCH / "profiles" / "plan_1m.txt")
    p.add_argument("--small", action="store_true")
    a = p.parse_args(argv)
    size = 2000 if a.small else a.customers
    folder = project(size, a.data)
    prof = a.out.with_suffix(".prof")
    prof.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([PYTHON, "-c", RUN.format(now=NOW, prof=str(prof))], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL)
    text = io.StringIO()
    text.write(f"{machine_line()}\ncProfile of `outreach run --dry-run` at {size:,} customers\n")
    stats = pstats.Stats(str(prof), stream=text)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)
    a.out.write_text(text.getvalue())
    print(f"profile written to {a.out}")


if __name__ == "__main__":
    main()
