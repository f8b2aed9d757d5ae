"""`enrich export xmp [PATH...]`: XMP sidecars beside described photos, for photo managers.

Read-only on the warehouse; never imports Prefect; never writes to a photo (only `<photo>.xmp` files).
The logic lives in enrich.tasks.xmp_sidecar; this module reads rows and prints outcomes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from enrich.commands._common import OBJECT_WAREHOUSE_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export descriptions for other tools (xmp: sidecars for photo managers)",
        description="Export descriptions for other tools. `enrich export xmp` writes an XMP sidecar beside "
        "each described photo (dc:description, dc:title, dc:subject, Iptc4xmpCore:AltTextAccessibility, "
        "optionally lr:hierarchicalSubject), merging into an existing sidecar and keeping everything else "
        "in it. Photos are never modified.",
    )
    actions = p.add_subparsers(dest="export_action", metavar="ACTION", required=True)
    x = actions.add_parser(
        "xmp",
        help="write XMP sidecars (digiKam, darktable, Lightroom, Immich, PhotoPrism)",
        description="Write or merge one XMP sidecar per described image. Only values that change are "
        "written (an unchanged library writes nothing); each sidecar is replaced atomically.",
    )
    x.add_argument("paths", nargs="*", metavar="PATH",
                   help="photos or folders to export (default: every described image in the warehouse)")
    x.add_argument("--sidecar-name", choices=["full", "stem"], default="full",
                   help="full: photo.jpg.xmp (digiKam, darktable, Immich; default); "
                   "stem: photo.xmp (Lightroom, Capture One)")
    x.add_argument("--overwrite", choices=["never", "ours", "always"], default="ours",
                   help="values already in a sidecar: never replace them; ours (default): replace only values "
                   "enrich wrote and nobody changed since; always: replace them all. Keywords people added "
                   "are always kept")
    x.add_argument("--hierarchy-parent", metavar="KEYWORD", default=None,
                   help="also write keywords as lr:hierarchicalSubject under this parent (e.g. AI -> AI|bicycle)")
    x.add_argument("--dry-run", action="store_true", help="list what would change; write nothing")
    x.add_argument("--json", action="store_true", help="one JSON object per sidecar, then a summary object")
    x.add_argument("--warehouse", help=OBJECT_WAREHOUSE_HELP)
    x.set_defaults(handler=main)
    p.set_defaults(handler=main)


def _under(path: str, roots: list[Path]) -> bool:
    if not roots:
        return True
    p = Path(path)
    return any(p == r or r in p.parents for r in roots)


def read_rows(warehouse: str) -> list[dict]:
    """Described images, one row per path (the `items` view), every column the warehouse has.

    Profiles (several descriptions per file, a `profile` column) will add `AND profile = ?` here from a
    `--profile` flag; fields_from_row already reads whichever description columns the row has."""
    from enrich.warehouse.views import read_snapshot

    def run(con) -> list[dict]:
        cur = con.execute("SELECT * FROM items WHERE status = 'ok' AND kind = 'image' ORDER BY path")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    return read_snapshot(warehouse, run)


def main(args: argparse.Namespace) -> int:
    from enrich.errors import UsageError
    from enrich.settings import load_settings
    from enrich.tasks import xmp_sidecar as xs

    settings = load_settings()
    if args.warehouse:
        settings = settings.with_overrides(warehouse=args.warehouse)
    from enrich.settings import is_object_url

    wh = settings.warehouse
    if is_object_url(wh):  # the rows come from the tables; the sidecars go beside the photos, on this machine
        from enrich.warehouse.location import check_readable

        check_readable(wh)
    elif not (Path(wh) / "results").is_dir():
        raise UsageError(f"no warehouse at {wh} (run `enrich run PATH` first)")
    roots = [Path(p).expanduser().resolve() for p in args.paths]
    rows = [r for r in read_rows(str(wh)) if _under(r["path"], roots)]
    chosen, conflicts = xs.choose_rows(rows, args.sidecar_name)
    counts: dict[str, int] = {}
    cleaned: set[Path] = set()

    def report(o: xs.SidecarOutcome) -> None:
        counts[o.action] = counts.get(o.action, 0) + 1
        if args.json:
            print(json.dumps(o.__dict__, ensure_ascii=False))
        elif o.action not in ("unchanged", "nothing"):
            verb = f"would {o.action}" if args.dry_run and o.action in ("create", "update") else o.action
            detail = ", ".join(o.changed) if o.action in ("create", "update") else (o.reason or "")
            if o.kept:
                detail += (" " if detail else "") + "(kept what a person wrote: " + ", ".join(o.kept) + ")"
            stream = sys.stderr if o.action in ("unparseable", "error") else sys.stdout
            print(f"{verb:14} {o.sidecar}  {detail}".rstrip(), file=stream)

    for row in chosen:
        folder = Path(row["path"]).parent
        if not args.dry_run and folder not in cleaned:
            xs.remove_stale_temps(folder)
            cleaned.add(folder)
        fields = xs.fields_from_row(row, args.hierarchy_parent)
        try:
            outcome = xs.export_one(row["path"], fields, naming=args.sidecar_name, policy=args.overwrite,
                                    dry_run=args.dry_run)
        except OSError as exc:
            outcome = xs.SidecarOutcome(row["path"], str(xs.sidecar_path(row["path"], args.sidecar_name)),
                                        "error", reason=f"{type(exc).__name__}: {exc.strerror or exc}")
        report(outcome)
    for row, winner in conflicts:
        report(xs.SidecarOutcome(row["path"], str(xs.sidecar_path(row["path"], args.sidecar_name)), "conflict",
                                 reason=f"shares its sidecar with {winner}, which was exported"))
    summary = {"images": len(rows), "dry_run": args.dry_run, **dict(sorted(counts.items()))}
    if args.json:
        print(json.dumps({"summary": summary}))
    else:
        print(("dry run: " if args.dry_run else "") + ", ".join(f"{k} {v}" for k, v in summary.items()
                                                              if k not in ("dry_run",)))
    return 0
