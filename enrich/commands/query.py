"""`enrich query "SQL"`: run SQL over the warehouse views (items, runs, results). Never imports Prefect."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query",
        help="run SQL over the warehouse (views: items, runs, results)",
        description="Run SQL over the warehouse with DuckDB. Views: items (latest outcome per path), "
        "runs (one row per run), results (every outcome ever written), latest (items plus paths "
        "marked gone).",
    )
    p.add_argument("sql", help='e.g. "SELECT status, count(*) FROM items GROUP BY status"')
    p.add_argument("--warehouse", help="warehouse folder (default: $ENRICH_WAREHOUSE or $ENRICH_HOME/warehouse)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table (default), csv, or json (an array of row objects)")
    p.set_defaults(handler=main)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)  # JSON numbers; the warehouse keeps the exact decimal
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def run_query(warehouse: str, sql: str) -> tuple[list[str], list[tuple]]:
    from enrich.warehouse.views import read_snapshot

    def run(con) -> tuple[list[str], list[tuple]]:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        return columns, cur.fetchall()

    return read_snapshot(warehouse, run)


def format_table(columns: list[str], rows: list[tuple], max_width: int = 60) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, Decimal):
            v = f"{v.normalize():f}"  # 0.002263, not 0.002263000000 or 0E-12
        from enrich.terminal import safe_text

        s = "" if v is None else safe_text(v)  # names and model text: no control or bidi characters raw
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    columns = [cell(c) for c in columns]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    import duckdb

    from enrich.errors import UsageError
    from enrich.settings import load_settings

    settings = load_settings()
    if args.warehouse:
        settings = settings.with_overrides(warehouse=args.warehouse)
    try:
        columns, rows = run_query(str(settings.warehouse), args.sql)
    except duckdb.Error as exc:
        raise UsageError(f"query failed: {str(exc).splitlines()[0]}") from None
    if args.format == "json":
        json.dump([{c: _jsonable(v) for c, v in zip(columns, row)} for row in rows], sys.stdout, indent=None)
        sys.stdout.write("\n")
    elif args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(columns)
        for row in rows:
            w.writerow([_jsonable(v) for v in row])
    else:
        print(format_table(columns, rows))
    return 0
