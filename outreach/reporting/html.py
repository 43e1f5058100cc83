"""The report as one self-contained HTML file with charts, for a browser with no network.

Drawn with plotly (the ``outreach[report]`` extra): its JavaScript is written into the file once
(``include_plotlyjs=True``, about 4.7 MB), so the file opens offline, from an e-mail attachment or
a shared drive, with no CDN. The README weighs it against the alternatives.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from outreach.errors import UsageError

EXTRA = "pip install 'outreach[report]'"


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise UsageError(f"--html needs the charting library plotly, which is not installed: "
                         f"{EXTRA}") from None
    return go


def _rate_ci(hits: int, n: int) -> float:
    """Half the width of a 95 % Wald interval of hits/n, for an error bar."""
    if not n:
        return 0.0
    p = hits / n
    return 1.96 * math.sqrt(p * (1 - p) / n)


def figures(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """(title, plotly figure) for each chart of the report."""
    go = _plotly()
    out: list[tuple[str, Any]] = []
    margin = {"l": 60, "r": 20, "t": 40, "b": 60}
    layout: dict[str, Any] = {"margin": margin, "height": 420, "template": "plotly_white"}

    over_time = go.Figure(layout={**layout, "barmode": "stack",
                                  "yaxis": {"title": "messages planned"}})
    for name in sorted({r["campaign"] for r in report["rows"]}):
        rows = [r for r in report["rows"] if r["campaign"] == name]
        over_time.add_bar(x=[r["period"] for r in rows], y=[r["planned"] for r in rows], name=name)
    out.append((f"Messages per campaign, by {report['by']}", over_time))

    funnel = go.Figure(layout={**layout, "funnelmode": "group"})
    for t in report["totals"]:
        steps = [("planned", t["planned"]), ("sent", t["sent"]), ("delivered", t["delivered"]),
                 ("opened", t["opened"]), ("clicked", t["clicked"])]
        known = [(k, v) for k, v in steps if v is not None]
        funnel.add_trace(go.Funnel(name=t["campaign"], y=[k for k, _ in known],
                                   x=[v for _, v in known], textinfo="value+percent initial"))
    out.append(("Delivery funnel (steps without delivery events are left out)", funnel))

    refusals = report["refusals"]
    refused = go.Figure(layout={**layout, "height": max(300, 40 + 28 * len(refusals)),
                                "margin": {**margin, "l": 360},
                                "xaxis": {"title": "candidates"}})
    labels = [f"{r['campaign']} · {r['outcome']}: {_short(r['reason'])}" for r in refusals]
    refused.add_bar(x=[r["count"] for r in refusals][::-1], y=labels[::-1], orientation="h",
                    marker_color="#c0504d")
    out.append(("Refusals by reason (caps, consent, suppression, held out)", refused))

    for exp in report["experiments"]:
        fig = go.Figure(layout={**layout, "barmode": "group",
                                "yaxis": {"title": "rate", "tickformat": ".1%"}})
        metrics = sorted({c["metric"] for c in exp["comparisons"]},
                         key=["delivery", "open", "click", "conversion"].index)
        for g in exp["groups"]:
            ys, errs = [], []
            for m in metrics:
                hits, n = _group_figures(g, m)
                ys.append(hits / n if n else None)
                errs.append(_rate_ci(hits, n))
            fig.add_bar(x=metrics, y=ys, name=g["name"],
                        error_y={"type": "data", "array": errs, "visible": True})
        verdicts = "; ".join(c["verdict"] for c in exp["comparisons"]) or exp["note"]
        out.append((f"{exp['campaign']}: {exp['kind']} — {verdicts}", fig))
    return out


def _group_figures(group: dict[str, Any], metric: str) -> tuple[int, int]:
    if metric == "conversion":
        return group["converted"], group["customers"]
    attr = {"delivery": "delivered", "open": "opened", "click": "clicked"}[metric]
    return group[attr] or 0, group["sent"]


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write_html(report: dict[str, Any], path: Path) -> None:
    """Write the report with its charts to ``path``, plotly's JavaScript included."""
    charts = figures(report)
    parts = []
    for i, (title, fig) in enumerate(charts):
        parts.append(f"<section><h2>{html.escape(title)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0),
                                 div_id=f"chart-{i}", config={"displaylogo": False}))
        parts.append("</section>")
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v if v is not None else '?'))}</td>"
                         for v in (t["campaign"], t["planned"], t["sent"], t["delivered"],
                                   t["opened"], t["clicked"], t["complained"],
                                   t.get("complaint_flag") or ""))
        + "</tr>" for t in report["totals"])
    title = f"outreach report {report['since'][:10]} to {report['last_day']}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>By {html.escape(report['by'])}, in {html.escape(report['timezone'])}. A "?" is not known
without delivery events (outreach serve webhooks).</p>
<table><tr><th>campaign</th><th>planned</th><th>sent</th><th>delivered</th><th>opened</th>
<th>clicked</th><th>complaints</th><th></th></tr>{rows}</table>
{''.join(parts)}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
