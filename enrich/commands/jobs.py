"""`enrich jobs`: the batch jobs of a warehouse (list, collect, cancel). Never imports Prefect."""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from decimal import Decimal

from enrich.commands._common import (WAREHOUSE_HELP, format_table, jsonable, require_folder_warehouse, run_query,
                                    start_emulator)
from enrich.errors import UsageError

ACTIONS = ["list", "collect", "cancel"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "jobs",
        help="batch jobs: list them, collect finished ones, cancel one",
        description="`enrich jobs` lists the batch jobs of `enrich run --mode batch` (state, items, reserved USD, "
        "age). `enrich jobs collect` writes the rows of finished jobs and puts the items of failed, expired or "
        "cancelled ones back to be sent again (every `enrich run` does this first too). `enrich jobs cancel JOB` "
        "cancels one.",
    )
    p.add_argument("action", nargs="?", choices=ACTIONS, default="list", help="list (default), collect or cancel")
    p.add_argument("job", nargs="?", metavar="JOB", help="cancel: the job id, display name or batches/... name")
    p.add_argument("--warehouse", help=WAREHOUSE_HELP)
    p.add_argument("--all", action="store_true", help="list: also jobs that ended (default: open ones and the "
                   "last day's)")
    p.add_argument("--wait", action="store_true", help="collect, cancel: wait for a run holding the warehouse")
    p.add_argument("--emulator", action="store_true", help="collect, cancel: use the bundled local emulator")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=main)


COLUMNS = ["job_id", "state", "items", "ok", "errors", "reserved_usd", "spent_usd", "age", "model", "name", "reason"]


def _age(created: datetime | None) -> str:
    if created is None:
        return ""
    s = (datetime.now(timezone.utc) - created).total_seconds()
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min"


def list_jobs(warehouse: str, include_all: bool) -> tuple[list[str], list[tuple]]:
    where = "" if include_all else (
        "WHERE state IN ('preparing', 'pending', 'running', 'succeeded') "
        "OR updated_at >= now() - INTERVAL 1 DAY")
    columns, rows = run_query(warehouse, f"""
        SELECT job_id, state, items, ok, errors, reserved_usd, spent_usd, created_at, model, name, reason
        FROM jobs {where} ORDER BY created_at, job_id""")
    return columns, rows


def main(args: argparse.Namespace) -> int:
    from enrich.settings import load_settings

    settings = require_folder_warehouse(load_settings().with_overrides(warehouse=args.warehouse), "jobs")
    if args.action == "list":
        columns, rows = list_jobs(str(settings.warehouse), args.all)
        if args.json:
            print(json.dumps([{c: jsonable(v) for c, v in zip(columns, r)} for r in rows], indent=2))
            return 0
        shown = [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _age(r[7]), r[8], r[9], r[10]) for r in rows]
        print(format_table(COLUMNS, shown))
        open_jobs = [r for r in rows if r[1] in ("preparing", "pending", "running", "succeeded")]
        if open_jobs:
            held = sum((r[5] or Decimal(0)) for r in open_jobs)
            print(f"{len(open_jobs)} open job(s) hold ${held.normalize():f} of budget until collected "
                  "(`enrich jobs collect`, or the next `enrich run`)")
        return 0
    if args.action == "cancel" and not args.job:
        raise UsageError("enrich jobs cancel JOB: which job? (see `enrich jobs`)")
    emu = None
    if args.emulator:
        emu, url = start_emulator()
        print(f"Using the local Gemini emulator at {url}.", file=sys.stderr)
        settings = load_settings().with_overrides(warehouse=args.warehouse)
    try:
        if settings.api_key is None:
            raise UsageError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY)")
        from enrich.flows.jobs import cancel_job, collect_jobs

        if args.action == "collect":
            out = collect_jobs(settings, wait=args.wait)
        else:
            out = cancel_job(settings, args.job, wait=args.wait)
    finally:
        if emu is not None:
            emu.stop()
    s = out.stats
    if args.json:
        print(json.dumps({"looked_at": s.looked_at, "collected": s.collected, "rows": s.rows, "ok": s.ok,
                          "errors": s.errors, "put_back": s.put_back, "spent_usd": str(s.spent_usd),
                          "still_open": s.still_open, "recovered": s.recovered, "ended": s.ended,
                          "job": None if out.job is None else {"job_id": out.job.job_id, "state": out.job.state,
                                                               "reason": out.job.reason}}, indent=2))
    elif out.job is not None:
        print(f"job {out.job.job_id}: {out.job.state}" + (f" ({out.job.reason})" if out.job.reason else ""))
    else:
        print(f"looked at {s.looked_at} open job(s): collected {s.collected} ({s.rows} rows, {s.ok} ok, "
              f"{s.errors} not ok, ${s.spent_usd.normalize():f}); {s.put_back} item(s) go back to be sent again; "
              f"{s.still_open} still open")
    return 0
