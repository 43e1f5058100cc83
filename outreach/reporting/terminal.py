"""The report in a terminal: a few narrow rich tables per campaign, each fitting 80 columns.

Counts above 99,999 are shortened (``123k``, ``2.50M``: never cut); ``--json`` has them exact. A
column the ledger cannot know shows ``?`` and a line under the table says why.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from outreach.reporting.aggregate import NEEDS_WEBHOOKS

_VOLUME = (("planned", "planned"), ("sent", "sent"), ("failed", "failed"),
           ("unknown", "unknown"), ("deferred", "deferred"), ("segments", "SMS seg."))
_REFUSED = (("capped", "capped"), ("suppressed", "suppressed"), ("skipped", "consent etc."),
            ("held_out", "held out"))
_OUTCOMES = (("delivered", "deliv."), ("bounced", "bounced"), ("opened", "opened"),
             ("machine_opened", "machine"), ("clicked", "clicked"), ("unsubscribed", "unsub."),
             ("complained", "compl."))
_RATES = (("delivery", "delivery"), ("open", "open"), ("click", "click"),
          ("unsubscribe", "unsub."), ("complaint", "complaint"))


def count(n: int | None) -> str:
    """A count in at most 7 characters."""
    if n is None:
        return "?"
    if n < 100_000:
        return f"{n:,}"
    if n < 10_000_000:
        return f"{n / 1000:,.0f}k" if n < 1_000_000 else f"{n / 1_000_000:.2f}M"
    return f"{n / 1_000_000:,.0f}M"


def percent(rate: float | None) -> str:
    """A rate as a percentage, or ``–`` when it has no denominator."""
    if rate is None:
        return "–"
    return f"{rate * 100:.2f}%" if rate < 0.1 else f"{rate * 100:.1f}%"


def _table(title: str, columns: tuple[tuple[str, str], ...], rows: list[dict[str, Any]],
           cell: Any) -> Table:
    table = Table(title=title, title_justify="left", pad_edge=False, box=None, padding=(0, 1))
    table.add_column("period", no_wrap=True)
    for _, head in columns:
        table.add_column(head, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(r["period"], *(cell(r, key) for key, _ in columns),
                      style="bold" if r["period"] == "total" else None)
    return table


def print_report(report: dict[str, Any], console: Console) -> None:
    """Print ``report`` (see :func:`outreach.reporting.build_report`)."""
    console.print(f"report {report['since'][:10]} to {report['last_day']} by {report['by']} "
                  f"({report['timezone']})", markup=False)
    totals = {t["campaign"]: t for t in report["totals"]}
    if not totals:
        console.print("nothing planned or refused in this period", markup=False)
    for name, total in totals.items():
        rows = [r for r in report["rows"] if r["campaign"] == name] + [total]
        console.rule(name)
        console.print(_table("messages", _VOLUME, rows, lambda r, k: count(r[k])))
        console.print(_table("refused", _REFUSED, rows, lambda r, k: count(r[k])))
        console.print(_table("what the providers said", _OUTCOMES, rows,
                             lambda r, k: count(r[k])))
        console.print(_table("rates", _RATES, rows, lambda r, k: percent(r["rates"][k])))
        unknown = {r.get("cannot_know_why") for r in rows if r.get("cannot_know")}
        if NEEDS_WEBHOOKS in unknown:
            console.print(f"?: not known without delivery events ({NEEDS_WEBHOOKS})",
                          markup=False)
        elif unknown:
            console.print(f"?: {', '.join(sorted(u for u in unknown if u))}", markup=False)
        if total.get("complaint_flag"):
            console.print(f"complaint rate {percent(total['rates']['complaint'])}: "
                          f"{total['complaint_flag']} (Gmail and Yahoo bulk-sender rules)",
                          style="bold red", markup=False)
    refusals = report["refusals"]
    if refusals:
        table = Table(title="refusals by reason", title_justify="left", box=None, padding=(0, 1))
        table.add_column("campaign", overflow="fold")
        table.add_column("outcome", no_wrap=True)
        table.add_column("reason", overflow="fold", ratio=1)
        table.add_column("count", justify="right", no_wrap=True)
        for r in refusals:
            table.add_row(r["campaign"], r["outcome"], r["reason"], count(r["count"]))
        console.print(table)
    for exp in report["experiments"]:
        console.rule(f"{exp['campaign']}: {exp['kind']}")
        table = Table(box=None, padding=(0, 1))
        table.add_column("group", overflow="fold")
        heads: tuple[str, ...] = ("customers", "converted", "rate", "in window")
        if exp["kind"] == "variants":
            heads = ("sent", "deliv.", "opened", "clicked", *heads)
        for head in heads:
            table.add_column(head, justify="right", no_wrap=True)
        for g in exp["groups"]:
            cells = [count(g["customers"]), count(g["converted"]), percent(g["conversion_rate"]),
                     count(g["still_in_window"])]
            if exp["kind"] == "variants":
                cells = [count(g["sent"]), count(g["delivered"]), count(g["opened"]),
                         count(g["clicked"]), *cells]
            table.add_row(g["name"], *cells)
        console.print(table)
        for c in exp["comparisons"]:
            line = f"{c['metric']}: {c['b']['name']} {percent(c['b']['rate'])} vs " \
                   f"{c['a']['name']} {percent(c['a']['rate'])}"
            if c["relative"] is not None and exp["kind"] == "holdout":
                line += f", lift {c['relative'] * 100:+.1f}%"
                if c["relative_ci"]:
                    lo, hi = c["relative_ci"]
                    line += f" ({lo * 100:+.1f}% to {hi * 100:+.1f}%)"
            console.print(line, markup=False)
            console.print(f"  {c['verdict']}", markup=False)
        if exp["note"]:
            console.print(exp["note"], markup=False)
