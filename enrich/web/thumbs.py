"""Thumbnails made locally with Pillow and cached by content hash under `$ENRICH_HOME/thumbs/`.

A thumbnail is made by the same code that prepares photos for upload (`prepare_image`: draft-mode decode at
libjpeg's smallest sufficient scale, EXIF orientation, sRGB, a JPEG with no metadata at all), so it costs
what preparing a photo costs and carries no GPS or camera serials into a report. The cache file is named by
the content hash the warehouse recorded and the size (`thumbs/ab/abcdef...-500.jpg`), written to a temp
file and renamed into place, so a reader never sees half a thumbnail and two requests racing write the same
bytes. Only files the warehouse recorded are opened, and only when their size and mtime still match the
row (otherwise the bytes changed since: the picture is made but not cached under the old hash).
"""
from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from enrich.errors import MediaError
from enrich.settings import RESOLUTION_MAX_SIDE

# Gallery thumbnails have the upload tier's long side (500 px at `low`): a 12 MP JPEG then decodes at 1/8 scale
# straight to that size, so a thumbnail costs exactly a photo's preparation plus a small file write (a 320 px
# one needs a further resize: about 0.9x the preparation rate), and 250 px tiles stay sharp on 2x screens.
SIZES = {"thumb": RESOLUTION_MAX_SIDE["low"], "preview": 1280}


class Thumbnails:
    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)

    def cache_path(self, content_hash: str, side: int) -> Path:
        return self.cache_dir / content_hash[:2] / f"{content_hash}-{side}.jpg"

    def get(self, content_hash: str, sources: list[dict[str, Any]], side: int = SIZES["thumb"]) -> bytes | None:
        """JPEG bytes of the thumbnail for `content_hash`, made from the first of `sources` (warehouse rows:
        path, size_bytes, mtime) that can be read; None when none can (gone, changed, not decodable)."""
        cached = self.cache_path(content_hash, side)
        try:
            data = cached.read_bytes()
            if data:
                return data
        except OSError:
            pass
        from enrich.tasks.prepare_image import prepare_image  # Pillow and its plugins: only when needed

        for src in sources:
            path = src["path"]
            unchanged = _matches(path, src.get("size_bytes"), src.get("mtime"))
            try:
                data = prepare_image(path, max_side=side).data
            except MediaError:
                continue
            if unchanged:
                self._store(cached, data)
            return data
        return None

    def _store(self, dest: Path, data: bytes) -> None:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=".jpg")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, dest)  # a cache: no fsync; an empty file after a crash is simply made again
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError:
            pass  # a read-only or full cache folder: serve the thumbnail uncached


def _matches(path: str, size: int | None, mtime: datetime | None) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if size is not None and st.st_size != size:
        return False
    if mtime is not None and abs(st.st_mtime - mtime.timestamp()) > 1e-3:
        return False
    return True
