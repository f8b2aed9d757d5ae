"""What earlier runs tell us: spend so far today (for the daily cap) and typical output lengths and
latencies (for estimates). Read-only DuckDB over the committed parts; never imports Prefect.

Every function answers "nothing known" (zero, empty) for a warehouse with no parts yet, without
importing DuckDB at all: `enrich estimate` on a fresh machine stays fast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from enrich.settings import is_object_url
from enrich.warehouse.ledger import ledger_dir
from enrich.warehouse.store import Warehouse


@dataclass(frozen=True)
class Median:
    value: int  # rounded up: an estimate should not undershoot
    rows: int  # how many rows it is the median of


def _query(warehouse_dir: str | Path, sql: str, params: list, *, ledger: bool = False) -> list[tuple]:
    if is_object_url(warehouse_dir):
        pass  # object storage: the views say whether there is anything (no cheap folder listing)
    elif not Warehouse(warehouse_dir).result_files() and not (
            ledger and any(ledger_dir(warehouse_dir).glob("*.jsonl"))):
        return []
    from enrich.warehouse.views import connect

    con = connect(warehouse_dir, profile="detailed")  # results only: no need to read the profile setting
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def start_of_day_utc(now: datetime | None = None) -> datetime:
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def spent_since(warehouse_dir: str | Path, since: datetime) -> Decimal:
    """Dollars spent at or after `since`, all runs: per run, the larger of its committed rows' cost and its spend
    ledger's (billed requests whose rows never committed: a killed run, a part that could not be written), plus
    what evaluations (`enrich eval`, kept apart under evals/) spent in that time."""
    from enrich.warehouse.evals import eval_spent_since

    rows = _query(
        warehouse_dir,
        """WITH committed AS (SELECT run_id, sum(cost_usd) AS usd FROM results WHERE finished_at >= ? GROUP BY run_id),
                billed AS (SELECT run_id, sum(cost_usd) AS usd FROM ledger WHERE billed_at >= ? GROUP BY run_id)
           SELECT sum(greatest(coalesce(c.usd, 0), coalesce(b.usd, 0)))
           FROM committed c FULL OUTER JOIN billed b ON b.run_id = c.run_id""",
        [since, since], ledger=True)
    total = rows[0][0] if rows else None
    return (Decimal(total) if total is not None else Decimal(0)) + eval_spent_since(warehouse_dir, since)


def spent_today(warehouse_dir: str | Path, now: datetime | None = None) -> Decimal:
    """Spend recorded since midnight UTC: what a rolling daily cap counts."""
    return spent_since(warehouse_dir, start_of_day_utc(now))


def output_token_medians(warehouse_dir: str | Path, model: str) -> dict[tuple[str, str], Median]:
    """Median output tokens (visible + thinking) of earlier ok rows of `model`, per (kind, profile). Copied
    rows (reused_from) made no request and are left out."""
    rows = _query(
        warehouse_dir,
        """SELECT kind, profile, median(output_tokens + thinking_tokens), count(*) FROM results
           WHERE status = 'ok' AND model = ? AND kind IS NOT NULL AND reused_from IS NULL GROUP BY kind, profile""",
        [model],
    )
    return {(kind, profile): Median(math.ceil(med), n) for kind, profile, med, n in rows if med is not None}


def latency_median_s(warehouse_dir: str | Path, model: str) -> tuple[float, int] | None:
    """(median seconds per request, rows) of earlier ok rows of `model`, or None when there are none."""
    rows = _query(
        warehouse_dir,
        "SELECT median(latency_ms), count(latency_ms) FROM results WHERE status = 'ok' AND model = ?",
        [model],
    )
    if not rows or rows[0][0] is None or not rows[0][1]:
        return None
    return float(rows[0][0]) / 1000.0, int(rows[0][1])
