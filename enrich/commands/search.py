"""`enrich search "QUERY"`: ranked full-text search over every description. Never imports Prefect.

The index (enrich.warehouse.search_index) is brought up to date first if the warehouse changed since it was
built; the search itself only reads.
"""
from __future__ import annotations

import argparse
import json
import sys

from enrich.commands._common import WAREHOUSE_HELP, format_table, require_folder_warehouse

DEFAULT_LIMIT = 20


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="full-text search over captions, descriptions, tags, visible text, transcripts, summaries",
        description="Ranked full-text search over every description in the warehouse. Words are matched "
        "whatever their case, accents or English ending (bicycles finds bicycle). All words must match (if "
        "no file has them all, files with any of them are listed); \"a phrase\", word* (prefix), -word "
        "(exclude) and OR work as usual; other punctuation is ignored.",
    )
    p.add_argument("query", help='e.g. "red bicycle", \'"stone bridge" -night\'')
    p.add_argument("--kind", choices=["image", "audio", "video", "document"], help="only this kind of file")
    p.add_argument("--since", metavar="DATE", help="taken (or file date) on or after DATE (YYYY-MM-DD)")
    p.add_argument("--until", metavar="DATE", help="taken (or file date) on or before DATE (YYYY-MM-DD)")
    p.add_argument("--path", metavar="GLOB", dest="path_glob",
                   help="only paths matching GLOB (* also crosses folders; a relative GLOB is taken from the "
                   "current folder), e.g. --path '*/2023/*'")
    p.add_argument("--status", help="only items with this status (ok, error, blocked, ...)")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N", help=f"at most N results (default {DEFAULT_LIMIT})")
    p.add_argument("--format", choices=["table", "json", "paths"], default="table",
                   help="table (default), json (an array of hits), or paths (one per line, for other tools)")
    p.add_argument("--warehouse", help=WAREHOUSE_HELP)
    p.set_defaults(handler=main)


def _glob(pattern: str | None) -> str | None:
    import os

    if not pattern:
        return None
    pattern = os.path.expanduser(pattern)
    if pattern.startswith(("/", "*", "?", "[")):
        return pattern
    return os.path.join(os.getcwd(), pattern)


def main(args: argparse.Namespace) -> int:
    import sqlite3
    from pathlib import Path

    from enrich.errors import UsageError
    from enrich.settings import load_settings
    from enrich.warehouse import search_index as si

    settings = load_settings()
    if args.warehouse:
        settings = settings.with_overrides(warehouse=args.warehouse)
    require_folder_warehouse(settings, "search")
    wh = Path(settings.warehouse)
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    try:
        for value in (args.since, args.until):
            if value:
                si.parse_day(value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not si.compile_query(args.query).terms:
        raise UsageError(f"nothing to search for in {args.query!r}: give at least one word")
    if not (wh / "results").is_dir():
        raise UsageError(f"nothing to search: no warehouse at {wh} (describe files with `enrich run PATH` first)")
    first = not si.index_path(wh).is_file()
    try:
        built = si.ensure_fresh(wh)
        if built is not None and first:
            print(f"enrich: search index built: {built.rows} items in {built.seconds:.1f} s "
                  f"(kept up to date by each run from now on)", file=sys.stderr)
    except (OSError, sqlite3.Error) as exc:  # e.g. a read-only warehouse: search the index it has, if any
        reason = getattr(exc, "strerror", None) or str(exc)
        if not si.index_path(wh).is_file():
            raise UsageError(f"cannot build the search index in {wh}: {reason}") from None
        print(f"enrich: warning: search index not updated ({reason}); results may be stale", file=sys.stderr)
    filters = si.Filters(kind=args.kind, status=args.status, since=args.since, until=args.until,
                         path_glob=_glob(args.path_glob))
    try:
        result = si.search(wh, args.query, filters, limit=args.limit)
    except si.IndexMissing as exc:
        raise UsageError(f"{exc}: the warehouse has nothing to search yet") from None
    if result.indexed == 0:
        raise UsageError(f"the warehouse at {wh} has no descriptions to search yet")

    hits = result.hits
    if args.format == "paths":
        from enrich.terminal import safe_text

        shown = safe_text if sys.stdout.isatty() else str  # raw for a pipe (xargs -0 style tools), escaped on a terminal
        for h in hits:
            print(shown(h.path))
    elif args.format == "json":
        json.dump([{"path": h.path, "kind": h.kind, "status": h.status, "date": h.date,
                    "score": round(h.score, 4), "snippet": h.snippet, "matched": result.matched} for h in hits],
                  sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        rows = [(f"{h.score:.2f}", h.kind, h.date[:10] if h.date else "", h.path, " ".join(h.snippet.split()))
                for h in hits]
        print(format_table(["score", "kind", "date", "path", "match"], rows, max_width=80))
        if result.matched == "any" and hits:
            print("(no file matched every word; these match some of them)")
    return 0
