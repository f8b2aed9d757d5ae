"""Preparation stage: turn a discovered file into the media parts a backend accepts.

CPU-bound (decode, resize, re-encode): run in a thread pool of all cores; Pillow releases the GIL while
decoding, resizing and encoding. Each kind has one preparer; a kind without one is skipped, not failed.
"""
from __future__ import annotations

import os
import time
from typing import Callable

from enrich.schemas.vocab import ErrorKind, MediaKind
from enrich.backends.base import MediaPart
from enrich.errors import MediaError
from enrich.tasks.discover import DiscoveredFile
from enrich.tasks.prepared import PreparedItem, PrepareOptions

__all__ = ["PrepareOptions", "PreparedItem", "prepare_file", "supported_kinds"]


def _prepare_image(file: DiscoveredFile, options: PrepareOptions) -> PreparedItem:
    from enrich.tasks.prepare_image import prepare_image

    img = prepare_image(file.path, max_side=options.max_side, keep_metadata=options.keep_metadata,
                        max_pixels=options.max_pixels)
    m = img.meta
    # taken_at is stored as the clock time on the camera (naive): most photos carry no UTC offset
    taken_at = m.taken_at.replace(tzinfo=None) if m.taken_at is not None else None
    meta = {
        "width": m.width, "height": m.height, "taken_at": taken_at, "gps_lat": m.gps_lat,
        "gps_lon": m.gps_lon, "camera_make": m.camera_make, "camera_model": m.camera_model,
        "media_format": m.format.lower(),  # jpeg, tiff, psd, ... or the RAW's (cr2, dng, ...) when its preview was sent
    }
    return PreparedItem(
        file=file,
        media=(MediaPart(mime=img.mime, data=img.data),),
        meta=meta,
        media_tokens_hint={"kind": "image", "width": img.width, "height": img.height},
    )


def _prepare_audio(file: DiscoveredFile, options: PrepareOptions) -> PreparedItem:
    from enrich.tasks.prepare_media import prepare_audio

    return prepare_audio(file, options)


def _prepare_video(file: DiscoveredFile, options: PrepareOptions) -> PreparedItem:
    from enrich.tasks.prepare_media import prepare_video

    return prepare_video(file, options)


def _prepare_document(file: DiscoveredFile, options: PrepareOptions) -> PreparedItem:
    from enrich.tasks.prepare_media import prepare_document

    return prepare_document(file, options)


# kind -> preparer. Adding a kind means adding one entry here, a schema in schemas/descriptions.py and a
# prompt in config/prompts.toml.
PREPARERS: dict[str, Callable[[DiscoveredFile, PrepareOptions], PreparedItem]] = {
    MediaKind.IMAGE: _prepare_image,
    MediaKind.AUDIO: _prepare_audio,
    MediaKind.VIDEO: _prepare_video,
    MediaKind.DOCUMENT: _prepare_document,
}


def supported_kinds() -> frozenset[str]:
    return frozenset(PREPARERS)


def prepare_file(file: DiscoveredFile, options: PrepareOptions) -> PreparedItem | MediaError:
    """Never raises for bad input: a MediaError is returned so the caller records it for this item."""
    preparer = PREPARERS.get(file.kind or "")
    if preparer is None:
        return MediaError(f"no preparer for {file.kind} files", kind=ErrorKind.UNSUPPORTED)
    started = time.perf_counter()
    try:
        item = preparer(file, options)
    except MediaError as exc:
        return exc
    except MemoryError:
        return MediaError("out of memory while decoding", kind=ErrorKind.TOO_LARGE)
    except Exception as exc:  # a library bug on odd input must not sink the run
        return MediaError(f"could not prepare {file.kind}: {exc.__class__.__name__}: {exc}", kind=ErrorKind.CORRUPT)
    item.prepare_ms = (time.perf_counter() - started) * 1000
    changed = _changed_since_discovery(file)
    if changed:
        item.release()
        return MediaError(f"{changed}; not sent, it is retried by the next run", kind=ErrorKind.CHANGED_DURING_RUN)
    return item


def _changed_since_discovery(file: DiscoveredFile) -> str | None:
    """Why the file is not the one discovery hashed any more (then what was prepared from it is not of those
    bytes and must not be recorded under their hash), or None."""
    if file.inode is None:
        return None  # not read by discovery (built by hand): nothing to compare
    try:
        st = os.stat(file.path)
    except OSError as exc:
        return f"the file changed during the run (cannot be read now: {exc.strerror})"
    if (st.st_size, st.st_mtime_ns) != (file.size, file.mtime_ns) or (file.inode is not None and st.st_ino != file.inode):
        return "the file was modified or replaced after it was hashed"
    return None
