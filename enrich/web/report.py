"""`enrich report`: one self-contained HTML file for a run (thumbnails as data: URIs, charts as inline SVG,
the stylesheet inline, no script, nothing fetched), for a nightly job to mail or archive."""
from __future__ import annotations

import base64
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from enrich.web.library import Filters, Page, Snapshot, _signature
from enrich.web.pages import render, runs_context
from enrich.web.thumbs import Thumbnails

REPORT_THUMB_SIDE = 240


def build_report(warehouse: str | Path, thumbs_dir: str | Path, run_id: str | None = None,
                 limit: int = 200) -> tuple[str, str | None]:
    """(the HTML, the run it is about). The run defaults to the latest; `limit` caps the thumbnails shown.

    The items shown are those whose current outcome the run wrote (a later run that re-described a file
    owns it now); the charts count every row the run wrote."""
    snap = Snapshot(warehouse, _signature(Path(warehouse)))
    try:
        run_id = run_id or snap.latest_run_id()
        run = snap.run(run_id) if run_id else None
        if run_id and run is None:
            raise LookupError(run_id)
        thumbs = Thumbnails(thumbs_dir)
        page = snap.gallery(Filters(run=run_id), limit=limit) if run_id else Page([], 0, None)
        problems: list[dict[str, Any]] = []
        problems_total = 0
        for status in ("error", "blocked"):
            found = snap.gallery(Filters(run=run_id, status=status), limit=500) if run_id else Page([], 0, None)
            problems += found.items
            problems_total += found.total
        # the reasons are not among the gallery's columns: fetch each problem's whole row
        problems = [snap.item(p["_id"]) or p for p in problems]

        def thumb_url(it: dict[str, Any]) -> str | None:
            if it.get("kind") != "image" or not it.get("content_hash"):
                return None
            data = thumbs.get(it["content_hash"], snap.image_sources(it["content_hash"]), REPORT_THUMB_SIDE)
            return "data:image/jpeg;base64," + base64.b64encode(data).decode() if data else None

        html = render(
            "report.html", standalone=True, warehouse=str(warehouse), run=run,
            made_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), page=page,
            problems=problems, problems_more=problems_total > len(problems), problems_total=problems_total,
            item_url=lambda it: None, thumb_url=thumb_url,
            **runs_context(snap, run_id=run_id) if run_id else {"runs": [], "cards": [], "charts": [], "run_link": None},
        )
        return html, run_id
    finally:
        snap.close()


def write_atomically(dest: str | Path, text: str) -> Path:
    """Write `text` to `dest` through a temp file in the same folder and a rename: never half a report."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; a report is an ordinary file
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest
