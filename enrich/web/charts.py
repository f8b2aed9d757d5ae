"""Bar charts as inline SVG, drawn on the server: no JavaScript, no chart library, no network.

`bar_chart` draws one or more series over categories (spend per run, spend per day, items by status,
tokens by kind). Every label is escaped: run ids, statuses and kinds come from the warehouse.
"""
from __future__ import annotations

import math
from decimal import Decimal
from html import escape
from typing import Callable, Sequence

from markupsafe import Markup

PALETTE = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#64748b"]
STATUS_COLOURS = {"ok": "#10b981", "error": "#ef4444", "blocked": "#8b5cf6", "skipped": "#94a3b8",
                  "over_budget": "#f59e0b", "interrupted": "#64748b", "gone": "#cbd5e1"}


def usd(value: float | Decimal | None) -> str:
    v = float(value or 0)
    if v == 0:
        return "$0"
    if abs(v) >= 1:
        return f"${v:,.2f}"
    return f"${v:.6f}".rstrip("0")


def count(value: float | int | None) -> str:
    v = float(value or 0)
    if abs(v) >= 1_000_000:
        return f"{v / 1e6:.1f}M"
    if abs(v) >= 10_000:
        return f"{v / 1e3:.0f}k"
    return f"{v:,.0f}"


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp  # pragma: no cover


def bar_chart(title: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *,
              fmt: Callable[[float], str] = count, colours: Sequence[str] | None = None,
              width: int = 600, height: int = 240) -> Markup:
    """An SVG bar chart: for each category one bar per series (side by side). `colours`: one per category
    when there is a single series (e.g. by status), else one per series."""
    left, right, top, bottom = 64, 12, 28, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
           f'role="img" aria-label="{escape(title)}">',
           f'<title>{escape(title)}</title>',
           f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>']
    values = [float(v or 0) for _, vals in series for v in vals]
    if not categories or not values:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="chart-empty">no data yet</text>')
        out.append("</svg>")
        return Markup("".join(out))
    top_value = _nice_max(max(values))
    for i in range(5):  # gridlines and y labels
        v = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{escape(fmt(v))}</text>')
    n, k = len(categories), len(series)
    slot = plot_w / n
    bar_w = max(1.0, min(slot * 0.8 / k, 48.0))  # a lone bar stays a bar, not a wall
    every = max(1, math.ceil(n / 16))  # at most ~16 category labels
    for ci, cat in enumerate(categories):
        x0 = left + ci * slot + (slot - bar_w * k) / 2
        for si, (name, vals) in enumerate(series):
            v = float(vals[ci] or 0)
            h = plot_h * v / top_value
            if colours and k == 1:
                colour = colours[ci % len(colours)]
            else:
                colour = (colours or PALETTE)[si % len(colours or PALETTE)]
            tip = f"{cat}: {fmt(v)}" if k == 1 else f"{cat}, {name}: {fmt(v)}"
            out.append(f'<rect x="{x0 + si * bar_w:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                       f'height="{h:.1f}" fill="{escape(colour)}" class="bar"><title>{escape(tip)}</title></rect>')
        if ci % every == 0:
            label = cat if len(cat) <= 18 else cat[:17] + "…"
            lx, ly = left + ci * slot + slot / 2, top + plot_h + 14
            out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="end" class="axis" '
                       f'transform="rotate(-30 {lx:.1f} {ly:.1f})">{escape(label)}</text>')
    if k > 1:  # legend
        for si, (name, _) in enumerate(series):
            lx = left + plot_w - 110 * (k - si)
            colour = (colours or PALETTE)[si % len(colours or PALETTE)]
            out.append(f'<rect x="{lx}" y="8" width="10" height="10" fill="{escape(colour)}"/>'
                       f'<text x="{lx + 14}" y="17" class="axis">{escape(name)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def dashboard(snapshot, run_id: str | None = None) -> list[Markup]:
    """The four charts of the runs page and the report: spend per run and per day, items by status, tokens
    by kind (of one run when `run_id` is given)."""
    per_run = snapshot.spend_per_run()
    per_day = snapshot.spend_per_day()
    by_status = snapshot.items_by_status(run_id)
    by_kind = snapshot.tokens_by_kind(run_id)
    kinds = [r["kind"] for r in by_kind]
    return [
        bar_chart("Spend per run (USD, by start UTC)", [r for r, _ in per_run], [("spend", [v for _, v in per_run])], fmt=usd),
        bar_chart("Spend per day (USD, UTC)", [d for d, _ in per_day], [("spend", [v for _, v in per_day])], fmt=usd,
                  colours=[PALETTE[2]]),
        bar_chart("Items by status" + (" (rows this run wrote)" if run_id else " (current items)"),
                  [s for s, _ in by_status], [("items", [n for _, n in by_status])],
                  colours=[STATUS_COLOURS.get(s, PALETTE[5]) for s, _ in by_status]),
        bar_chart("Tokens by kind" + (" (this run)" if run_id else " (all runs)"), kinds,
                  [("input", [r["input"] for r in by_kind]), ("output", [r["output"] for r in by_kind]),
                   ("thinking", [r["thinking"] for r in by_kind])]),
    ]
