"""`enrich estimate PATH...`: what a run would cost and take, from file headers only. Never imports Prefect."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "estimate",
        help="what describing PATH... would cost and take, before spending anything",
        description="Scan the paths like `run` would, reading only file headers (no decoding, no network), and "
        "print per kind the items, input and expected output tokens and cost, the total, the price table's "
        "date and source, and a time estimate from the configured rate limits.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("--model", help="model to price (default from config/enrich.toml)")
    p.add_argument("--resolution", choices=["low", "medium", "high"], help="media resolution tier")
    p.add_argument("--mode", choices=["sync", "batch"], default="sync",
                   help="interactive requests (default) or the provider's batch API (half price)")
    p.add_argument("--warehouse", help="warehouse with earlier runs, for expected output tokens and latency")
    p.add_argument("--reprocess", action="append", metavar="WHAT", choices=["stale", "failed", "all"],
                   help="count what `enrich run --reprocess WHAT` would redo (by default files already done in "
                   "the warehouse, same path, size and mtime, are left out like a run leaves them)")
    p.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    p.set_defaults(handler=main)


def skip_done_filter(settings, reprocess):
    """The run's skip-already-done rules, for a header-only scan (tasks/incremental.would_send)."""
    from enrich.tasks.incremental import current_versions, would_send
    from enrich.warehouse.state import load_state
    from enrich.warehouse.store import Warehouse

    if not Warehouse(settings.warehouse).result_files():
        return None
    return would_send(load_state(Warehouse(settings.warehouse)), current_versions(settings), reprocess or [])


def main(args: argparse.Namespace) -> int:
    from enrich.errors import UsageError
    from enrich.estimate import estimate, format_estimate
    from enrich.settings import load_settings

    missing = [p for p in args.paths if not os.path.lexists(p)]
    if missing:
        raise UsageError(f"path not found: {missing[0]}")
    roots = [str(Path(p).expanduser().resolve()) for p in args.paths]
    settings = load_settings().with_overrides(warehouse=args.warehouse, model=args.model,
                                              resolution=args.resolution)
    est = estimate(roots, settings, mode=args.mode, include=skip_done_filter(settings, args.reprocess))
    if args.json:
        print(json.dumps(est.as_json(), indent=2))
    else:
        print(format_estimate(est))
    return 0
