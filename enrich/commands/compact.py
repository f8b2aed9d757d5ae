"""`enrich compact`: merge the warehouse's small part files into larger ones; queries return the same rows."""
from __future__ import annotations

import argparse



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compact",
        help="merge small part files into larger ones (query results do not change)",
        description="Merge the small Parquet parts that each run chunk writes into larger ones, so queries "
        "open fewer files. Safe at any moment: readers keep seeing every row exactly once, and a kill "
        "mid-way leaves nothing half-done. Takes the warehouse lock, like a run.",
    )
    p.add_argument("--warehouse", help="warehouse folder, or s3:// gs:// az:// URL (Delta's OPTIMIZE) (default: "
                   "$ENRICH_WAREHOUSE or $ENRICH_HOME/warehouse)")
    p.add_argument("--target-rows", type=int, default=None, metavar="N",
                   help="rows per merged part (default 250000); parts this big are left alone")
    p.add_argument("--wait", action="store_true", help="if a run is using the warehouse, wait for it")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from enrich.errors import UsageError
    from enrich.settings import is_object_url, load_settings
    from enrich.warehouse.compact import DEFAULT_TARGET_ROWS, compact
    from enrich.warehouse.lock import WarehouseLock
    from enrich.warehouse.store import Warehouse

    settings = load_settings()
    if args.warehouse:
        settings = settings.with_overrides(warehouse=args.warehouse)
    if is_object_url(settings.warehouse):  # Delta Lake tables: Delta's own compaction
        from enrich.warehouse.location import check_readable, open_warehouse, warehouse_lock

        check_readable(settings.warehouse)
        lock = warehouse_lock(settings.warehouse, "enrich compact").acquire(wait=args.wait)
        try:
            done = open_warehouse(settings.warehouse, guard=lock.verify).compact()
        finally:
            lock.release()
        for name, (before, after) in done.items():
            print(f"{name}: {before} files -> {after}")
        return 0
    target = args.target_rows or DEFAULT_TARGET_ROWS
    if target < 1:
        raise UsageError("--target-rows must be at least 1")
    from enrich.warehouse.store import check_readable, check_writable

    wh = Warehouse(settings.warehouse)
    check_readable(wh.root)
    check_writable(wh.root)
    with WarehouseLock(wh.root, "enrich compact").acquire(wait=args.wait):
        before = {"results": len(wh.result_files()), "runs": len(wh.run_files())}
        report = compact(wh, target)
        after = {"results": len(wh.result_files()), "runs": len(wh.run_files())}
        rebuilt = _refresh_search_index(wh.root)
    for folder in ("results", "runs"):
        print(f"{folder}: {before[folder]} parts -> {after[folder]} "
              f"({report.merged.get(folder, 0)} merged into {report.written.get(folder, 0)})")
    if report.removed_leftovers:
        print(f"removed {report.removed_leftovers} parts left by an interrupted compaction")
    if rebuilt is not None:
        print(f"search index: {rebuilt.rows} items indexed in {rebuilt.seconds:.1f} s")
    return 0


def _refresh_search_index(root):
    """The parts changed names, so `enrich search`'s index is rebuilt now rather than on the next search."""
    import sys

    from enrich.warehouse.search_index import ensure_fresh

    try:
        return ensure_fresh(root, only_if_present=True)
    except Exception as exc:  # noqa: BLE001 - derived data; `enrich search` rebuilds it when stale
        print(f"enrich: warning: search index not updated: {exc!r}", file=sys.stderr)
        return None
