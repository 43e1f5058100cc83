"""The SQL audience source at scale, against the CSV source on the same data.

    python bench/sql_source.py [--customers 1000000] [--events-table 10000000] [--pg-url URL]
                               [--data DIR] [--small]

1. The generated bench project (bench/generate.py: customers, a year of events, a ledger) is
   loaded into PostgreSQL with COPY, and ``outreach run --dry-run`` plans it twice in child
   processes, once from the CSV files and once from the tables (``source = "sql"``): wall time
   and peak memory of each, and the ratios. Target: SQL within 1.2× of CSV on both.
2. Memory flat in audience size: the SQL run's peak at --customers against --compare customers.
3. An incremental read: an events table of --events-table rows (made with generate_series, with
   an index on (time, id)) and a cursor 1,000 rows from the end; ``events_after`` with a
   10-minute overlap must fetch only the new rows and the overlap, counted by the source.

Each child is the real ``outreach`` command; its peak is its ru_maxrss (see bench/plan.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, NOW, OUTREACH, base_env, figure, machine_line, run_measured  # noqa: E402
from plan import project  # noqa: E402  (the same generated project as the planning bench)

PG = "postgresql://postgres@127.0.0.1:5432/test"


def _psycopg(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)


def load_tables(out: Path, url: str, schema: str) -> None:
    """customers.csv and events.csv into ``schema`` with COPY (every column as text, the times as
    timestamptz), and an index on the events' (time, id)."""
    with _psycopg(url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
        for role in ("customers", "events"):
            path = out / "data" / f"{role}.csv"
            header = path.open(encoding="utf-8").readline().strip().split(",")
            cols = ", ".join(f'"{h}" {"timestamptz" if (role, h) == ("events", "time") else "text"}'
                             for h in header)
            conn.execute(f'CREATE TABLE "{schema}".{role} ({cols})')
            with conn.cursor().copy(f'COPY "{schema}".{role} FROM STDIN WITH (FORMAT csv, HEADER)') as cp:
                with path.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        cp.write(chunk)
        conn.execute(f'CREATE INDEX ON "{schema}".events (time, id)')
        conn.execute(f'ANALYZE "{schema}".customers')
        conn.execute(f'ANALYZE "{schema}".events')


def sql_variant(out: Path, url: str, schema: str) -> Path:
    """A copy of the project's outreach.toml reading the tables instead of the files."""
    text = (out / "outreach.toml").read_text(encoding="utf-8")
    sep = "&" if "?" in url else "?"
    sql = (f'source = "sql"\nurl = "{url}{sep}options=-csearch_path%3D{schema}"\n'
           'customers = "customers"\nevents = "events"\n')
    start = text.index("[audience]") + len("[audience]\n")
    end = text.index("\n[", start) + 1
    variant = out / "outreach-sql.toml"
    variant.write_text(text[:start] + sql + text[end:], encoding="utf-8")
    return variant


def plan(out: Path, config: str) -> dict:
    wall, peak, code, stdout, stderr = run_measured(
        [OUTREACH, "-c", config, "run", "--dry-run", "--now", NOW, "--json"], cwd=out,
        env=base_env())
    if code not in (0, 1):
        raise SystemExit(f"outreach run --dry-run ({config}) failed ({code}): {stderr[-2000:]}")
    totals = json.loads(stdout)["totals"]
    return {"wall": wall, "peak_mb": peak, "selected": totals["selected"]}


def incremental(url: str, rows: int, schema: str) -> dict:
    """Rows fetched by an events_after 1,000 rows from the end of a table of ``rows`` events."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with _psycopg(url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".events (id bigint, customer_id text, type text, '
                     'time timestamptz, total text)')
        conn.execute(f"INSERT INTO \"{schema}\".events SELECT g, 'c' || (g %% 100000), "
                     f"'purchase', %s + g * interval '1 second', '10.00' "
                     f"FROM generate_series(1, %s) g", (t0, rows))
        conn.execute(f'CREATE INDEX ON "{schema}".events (time, id)')
        conn.execute(f'ANALYZE "{schema}".events')
    from outreach.audience import EventCursor
    from outreach.sources.sql_source import SQLSource

    sep = "&" if "?" in url else "?"
    source = SQLSource({"url": f"{url}{sep}options=-csearch_path%3D{schema}",
                        "customers": "events", "events": "events"}, Path("."), "UTC")
    last = rows - 1000
    cursor = EventCursor(t0 + timedelta(seconds=last), str(last))
    started = time.perf_counter()
    got = sum(1 for _ in source.events_after(cursor, frozenset({"purchase"}), lambda p: None,
                                             overlap=timedelta(minutes=10)))
    took = time.perf_counter() - started
    read = source.rows_read["events"]
    source.close()
    with _psycopg(url) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return {"rows": rows, "returned": got, "read": read, "seconds": took}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--compare", type=int, default=100_000)
    p.add_argument("--events-table", type=int, default=10_000_000)
    p.add_argument("--pg-url", default=PG)
    p.add_argument("--data", type=Path, default=BENCH / ".data")
    p.add_argument("--small", action="store_true", help="a tiny run for CI (2,000 customers)")
    a = p.parse_args(argv)
    sizes = (2000, 1000, 20_000) if a.small else (a.customers, a.compare, a.events_table)
    print(machine_line())
    results = {}
    for size in sizes[:2]:
        out = project(size, a.data)
        schema = f"bench_sql_{size}"
        load_tables(out, a.pg_url, schema)
        results[size] = {"csv": plan(out, "outreach.toml"),
                         "sql": plan(out, str(sql_variant(out, a.pg_url, schema)))}
        with _psycopg(a.pg_url) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        c, s = results[size]["csv"], results[size]["sql"]
        if c["selected"] != s["selected"]:
            raise SystemExit(f"the two sources planned differently: {c} {s}")
        print(f"{size:,} customers: CSV {c['wall']:.2f} s, {c['peak_mb']:.0f} MB; "
              f"SQL {s['wall']:.2f} s, {s['peak_mb']:.0f} MB ({s['selected']:,} candidates each)")
    big, small = results[sizes[0]], results[sizes[1]]
    inc = incremental(a.pg_url, sizes[2], "bench_sql_events")
    print(f"events_after on {inc['rows']:,} events, cursor 1,000 from the end, 10 min overlap: "
          f"{inc['returned']:,} events, {inc['read']:,} rows read, {inc['seconds'] * 1000:.0f} ms")
    return [
        figure(f"sql_plan_time_ratio_{sizes[0]}", big["sql"]["wall"] / big["csv"]["wall"], "×",
               "<= 1.2", csv=big["csv"]["wall"], sql=big["sql"]["wall"]),
        figure(f"sql_plan_peak_ratio_{sizes[0]}", big["sql"]["peak_mb"] / big["csv"]["peak_mb"],
               "×", "<= 1.2", csv=big["csv"]["peak_mb"], sql=big["sql"]["peak_mb"]),
        figure(f"sql_peak_flat_{sizes[0]}_{sizes[1]}",
               big["sql"]["peak_mb"] / small["sql"]["peak_mb"], "×", "<= 1.2"),
        figure(f"sql_incremental_rows_read_{sizes[2]}", inc["read"], "rows",
               "only the new rows and the overlap window (1,600 of 10,000,000)",
               seconds=inc["seconds"]),
    ]


if __name__ == "__main__":
    main()
