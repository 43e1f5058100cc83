"""Crash soak: the delivery guarantees under many SIGKILLs, for running by hand.

    python bench/soak.py --trials 200                 # SQLite, 2 lanes side by side
    python bench/soak.py --trials 100 --backend postgresql --pg-url postgresql://postgres@127.0.0.1/test
    python bench/soak.py --trials 400 --lanes 4 --seed 7 --customers 80

The longer variant of tests/test_guarantees_crash.py, sharing its code: each lane is a project
whose SMS go through the Twilio plugin to a FakeTwilio served here; every trial starts a real
``outreach run`` for a new hourly newsletter and SIGKILLs it at a seeded random moment (in start-up,
planning or among the calls in flight). Once the claims expired, runs go on until quiet, and the lane
is checked: nobody got an occurrence twice, nothing is left queued or sending, sent means delivered
exactly once, unknown means at most once and never resent, every begun occurrence was planned for
every customer. Exit status 0 when every lane kept every guarantee, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_guarantees_crash import check_lane, lane  # noqa: E402  (tests/ holds the shared code)


def _pg_schema(url: str) -> tuple[str, str]:
    """A fresh schema on ``url``: (ledger URL using it, schema name)."""
    import psycopg

    schema = f"soak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}", schema


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="SIGKILLs in all (default 200)")
    parser.add_argument("--lanes", type=int, default=2, help="projects crashed side by side")
    parser.add_argument("--seed", type=int, default=20261124, help="seed of the kill moments")
    parser.add_argument("--customers", type=int, default=40, help="customers per project")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="server for --backend postgresql (a schema per lane, dropped after)")
    parser.add_argument("--keep", action="store_true", help="keep the project folders")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="outreach-soak-"))
    schemas: list[str] = []
    urls: list[str | None] = []
    for _ in range(args.lanes):
        if args.backend == "postgresql":
            url, schema = _pg_schema(args.pg_url)
            urls.append(url)
            schemas.append(schema)
        else:
            urls.append(None)
    started = time.monotonic()
    failures = 0
    try:
        with ThreadPoolExecutor(args.lanes) as pool:
            futures = [pool.submit(lane, folder / f"lane{i}",
                                   args.trials // args.lanes + (i < args.trials % args.lanes),
                                   args.seed + i, ledger_url=urls[i], customers=args.customers)
                       for i in range(args.lanes)]
            for i, future in enumerate(futures):
                try:
                    result = future.result()
                    check_lane(result)
                except Exception:  # noqa: BLE001 - a soak reports every lane, then fails
                    failures += 1
                    print(f"lane {i}: GUARANTEE BROKEN", file=sys.stderr)
                    traceback.print_exc()
                    continue
                states = Counter(r["state"] for r in result["rows"])
                print(f"lane {i}: {result['outcomes']}; {len(result['rows'])} messages planned: "
                      f"{dict(states)}; {sum(result['got'].values())} delivered, none twice")
    finally:
        for schema in schemas:
            _drop_schema(args.pg_url, schema)
        if not args.keep:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"projects kept in {folder}")
    print(f"{args.trials} trials on {args.backend} in {time.monotonic() - started:.0f} s: "
          + ("every guarantee held" if not failures else f"{failures} lane(s) broke a guarantee"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
