"""`enrich migrate --to s3://bucket/prefix` (or gs://, az://): copy a folder warehouse onto object storage. Never imports Prefect."""
from __future__ import annotations

import argparse
import sys

from enrich.commands._common import WAREHOUSE_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "migrate",
        help="copy a warehouse folder onto object storage (s3://bucket/prefix, gs://bucket/prefix, az://container/prefix)",
        description="Copy the warehouse folder's results, runs and profile records into a warehouse on object "
        "storage (Delta Lake tables), part by part; running it again copies only what is missing. The folder is "
        "left as it was. Credentials come from the AWS environment.",
    )
    p.add_argument("--warehouse", help=WAREHOUSE_HELP + " (the folder to copy)")
    p.add_argument("--to", required=True, metavar="URL", help="the object-storage warehouse: s3://bucket/prefix, gs://bucket/prefix or az://container/prefix")
    p.add_argument("--wait", action="store_true", help="if a run is using either warehouse, wait for it")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from enrich.errors import UsageError
    from enrich.settings import is_object_url, load_settings, warehouse_location

    settings = load_settings()
    if args.warehouse:
        settings = settings.with_overrides(warehouse=args.warehouse)
    target_url = warehouse_location(args.to)
    if is_object_url(settings.warehouse):
        raise UsageError("enrich migrate copies a warehouse folder: --warehouse must be a folder")
    if not is_object_url(target_url):
        raise UsageError("--to must be an object-storage URL (s3://bucket/prefix, gs://bucket/prefix or az://container/prefix)")
    from enrich.warehouse.location import check_readable, check_writable, open_warehouse, warehouse_lock
    from enrich.warehouse.object_store import copy_folder_warehouse

    check_readable(settings.warehouse)
    check_writable(target_url)
    source_lock = warehouse_lock(settings.warehouse, "enrich migrate").acquire(wait=args.wait)
    try:
        target_lock = warehouse_lock(target_url, "enrich migrate").acquire(wait=args.wait)
        try:
            done = copy_folder_warehouse(open_warehouse(settings.warehouse),
                                         open_warehouse(target_url, guard=target_lock.verify),
                                         progress=lambda line: print(f"copied {line}", file=sys.stderr))
        finally:
            target_lock.release()
    finally:
        source_lock.release()
    print(f"{settings.warehouse} -> {target_url}: {done['results']} result parts and {done['runs']} run parts "
          f"copied, {done['skipped']} already there, {done['profiles']} profile records")
    return 0
