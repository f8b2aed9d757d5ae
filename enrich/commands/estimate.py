"""`enrich estimate PATH...`: what a run would cost and take, from file headers only. Never imports Prefect."""
from __future__ import annotations

import argparse
import json

from enrich.commands._common import add_media_flags, overrides_from, resolve_paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "estimate",
        help="what describing PATH... would cost and take, before spending anything",
        description="Scan the paths like `run` would, reading only file headers (no decoding, no network), and "
        "print per kind the items, input and expected output tokens and cost, the total, the price table's "
        "date and source, and a time estimate from the configured rate limits.",
    )
    add_media_flags(p, "estimate")
    p.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from enrich.flows.estimate import estimate, format_estimate, skip_done_filter
    from enrich.settings import load_settings

    roots = resolve_paths(args.paths)
    settings = load_settings().with_overrides(**overrides_from(args))  # the flags run takes, --profile too
    est = estimate(roots, settings, mode=settings.mode, include=skip_done_filter(settings, args.reprocess))
    if args.json:
        print(json.dumps(est.as_json(), indent=2))
    else:
        print(format_estimate(est))
    return 0
