"""`enrich runs`: list the runs recorded in the warehouse, newest first. Read-only; never imports Prefect."""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from decimal import Decimal
from typing import Any

from enrich.commands._common import OBJECT_WAREHOUSE_HELP, format_table, jsonable

COLUMNS = ["run_id", "status", "started_at", "duration", "items", "unchanged", "reused", "ok", "errors",
           "spent_usd", "model"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="list runs with status, items and spend",
        description="List the runs recorded in the warehouse, newest first: status (running, finished, "
        "interrupted, failed, crashed), rows written (items), files that needed nothing (unchanged), rows "
        "copied without a model call (reused), outcomes, and spend.",
    )
    p.add_argument("--warehouse", help=OBJECT_WAREHOUSE_HELP)
    p.add_argument("--limit", type=int, default=20, help="show at most N runs (default 20; 0 for all)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=main)


def _duration(started: datetime | None, finished: datetime | None) -> str:
    if started is None or finished is None:
        return ""
    seconds = int((finished - started).total_seconds())
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def list_runs(warehouse: str, limit: int = 20) -> list[dict[str, Any]]:
    from enrich.warehouse.location import is_locked
    from enrich.warehouse.views import read_snapshot

    sql = ("SELECT run_id, status, started_at, finished_at, items, unchanged, reused, ok, errors, spent_usd, model "
           "FROM runs ORDER BY started_at DESC NULLS LAST, run_id DESC" + (f" LIMIT {int(limit)}" if limit else ""))
    rows = read_snapshot(warehouse, lambda con: con.sql(sql).to_arrow_table().to_pylist())
    live_writer = None
    for row in rows:
        if row["status"] == "running":
            # Only a live process holding the warehouse lock can still be running: otherwise it died, and the
            # next run will record it as crashed.
            live_writer = is_locked(warehouse) if live_writer is None else live_writer
            if not live_writer:
                row["status"] = "crashed*"
        row["duration"] = _duration(row["started_at"], row.pop("finished_at"))
        for key in ("items", "unchanged", "reused", "ok", "errors"):
            row[key] = row.get(key) or 0
    return rows


def main(args: argparse.Namespace) -> int:
    from enrich.settings import load_settings

    settings = load_settings()
    if args.warehouse:
        settings = settings.with_overrides(warehouse=args.warehouse)
    from enrich.warehouse.location import check_readable

    check_readable(settings.warehouse)
    rows = list_runs(str(settings.warehouse), args.limit)
    if args.format == "json":
        json.dump([{c: jsonable(r.get(c)) for c in COLUMNS} for r in rows], sys.stdout)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print(f"no runs yet in {settings.warehouse}")
        return 0
    table = [tuple(r.get(c) if not isinstance(r.get(c), datetime) else r[c].strftime("%Y-%m-%d %H:%M:%S")
                   for c in COLUMNS) for r in rows]
    print(format_table(COLUMNS, table))
    if any(r["status"] == "crashed*" for r in rows):
        print("* recorded as running, but no process holds the warehouse: it died; the next run marks it crashed")
    total = sum((r.get("spent_usd") or Decimal(0) for r in rows), Decimal(0))
    print(f"spent in these runs: ${total.normalize():f}")
    return 0
