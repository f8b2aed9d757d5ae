"""`enrich query "SQL"`: run SQL over the warehouse views (items, runs, results). Never imports Prefect."""
from __future__ import annotations

import argparse
import csv
import json
import sys

from enrich.commands._common import OBJECT_WAREHOUSE_HELP, format_table, jsonable, run_query


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query",
        help="run SQL over the warehouse (views: items, runs, results, evals)",
        description="Run SQL over the warehouse with DuckDB. Views: items (latest outcome per path), "
        "runs (one row per run), results (every outcome ever written), latest (items plus paths "
        "marked gone), evals and eval_summary (enrich eval scores).",
    )
    p.add_argument("sql", help='e.g. "SELECT status, count(*) FROM items GROUP BY status"')
    p.add_argument("--warehouse", help=OBJECT_WAREHOUSE_HELP)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table (default), csv, or json (an array of row objects)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import duckdb

    from enrich.errors import UsageError
    from enrich.settings import load_settings

    settings = load_settings()
    if args.warehouse:
        settings = settings.with_overrides(warehouse=args.warehouse)
    from enrich.warehouse.location import check_readable

    check_readable(settings.warehouse)  # a missing warehouse is said so, not answered with empty views
    try:
        columns, rows = run_query(str(settings.warehouse), args.sql)
    except duckdb.Error as exc:
        raise UsageError(f"query failed: {str(exc).splitlines()[0]}") from None
    if args.format == "json":
        json.dump([{c: jsonable(v) for c, v in zip(columns, row)} for row in rows], sys.stdout, indent=None)
        sys.stdout.write("\n")
    elif args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(columns)
        for row in rows:
            w.writerow([jsonable(v) for v in row])
    else:
        print(format_table(columns, rows))
    return 0
