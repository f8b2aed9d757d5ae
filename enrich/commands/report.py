"""`enrich report [RUN_ID] --out report.html`: one self-contained HTML report of a run (thumbnails and charts
inline, no script, nothing fetched). Read-only; never imports Prefect. The pages live in enrich/web/."""
from __future__ import annotations

import argparse

from enrich.commands._common import require_folder_warehouse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write one self-contained HTML report of a run (to mail or archive)",
        description="Write one HTML file about a run: its status, items, spend, budget and reserved peak, "
        "charts (spend per run and per day, items by status, tokens by kind) as inline SVG, the files it "
        "could not describe and why, and thumbnails with captions as data: URIs. Opens offline; no script.",
    )
    p.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run (default: the latest)")
    p.add_argument("--out", default="report.html", help="the file to write (default report.html; written atomically)")
    p.add_argument("--limit", type=int, default=200, help="show at most N thumbnails (default 200)")
    p.add_argument("--warehouse", help="warehouse folder (default: $ENRICH_WAREHOUSE or $ENRICH_HOME/warehouse)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from enrich.errors import UsageError
    from enrich.settings import load_settings
    from enrich.web.report import build_report, write_atomically

    settings = load_settings()
    if args.warehouse:
        settings = settings.with_overrides(warehouse=args.warehouse)
    require_folder_warehouse(settings, "report")
    if args.limit < 0:
        raise UsageError(f"--limit must be >= 0, got {args.limit}")
    try:
        html, run_id = build_report(settings.warehouse, settings.home / "thumbs", args.run_id, limit=args.limit)
    except LookupError:
        raise UsageError(f"no run {args.run_id!r} in {settings.warehouse} (see `enrich runs`)") from None
    dest = write_atomically(args.out, html)
    print(f"report of run {run_id or '(none yet)'}: {dest.resolve()} ({len(html.encode()) / 1024:.0f} KiB)")
    return 0
