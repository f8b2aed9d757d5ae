"""Preparation stage: turn a discovered file into the media parts a backend accepts.

CPU-bound (decode, resize, re-encode): run in a thread pool of all cores; Pillow releases the GIL while
decoding, resizing and encoding. Each kind has one preparer; a kind without one is skipped, not failed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from enrich.backends.base import MediaPart
from enrich.errors import MediaError
from enrich.inflight import WeightBudget
from enrich.settings import RESOLUTION_MAX_SIDE
from enrich.tasks.discover import DiscoveredFile
from enrich.tasks.media_info import MediaLimits


@dataclass(frozen=True)
class PrepareOptions:
    max_side: int = RESOLUTION_MAX_SIDE["low"]
    keep_metadata: bool = False
    max_pixels: int = 120_000_000
    limits: MediaLimits = MediaLimits()  # audio, video and documents
    # pixels decoded at once by all the threads preparing with these options (None: no bound)
    decode_budget: WeightBudget | None = field(default=None, compare=False)

    @classmethod
    def from_settings(cls, settings: Any) -> "PrepareOptions":
        return cls(max_side=settings.max_side, keep_metadata=not settings.strip_metadata,
                   max_pixels=settings.max_image_pixels, limits=MediaLimits.from_settings(settings),
                   decode_budget=WeightBudget(settings.max_decode_pixels))


@dataclass
class PreparedItem:
    file: DiscoveredFile
    media: tuple[MediaPart, ...]
    meta: dict[str, Any] = field(default_factory=dict)  # extracted locally: width, height, taken_at, gps...
    media_tokens_hint: dict[str, Any] = field(default_factory=dict)  # what the token rules need
    prepare_ms: float = 0.0
    # deletes the temporary copies the media parts point at (stripped or trimmed media); see release()
    cleanups: list[Callable[[], Any]] = field(default_factory=list, repr=False, compare=False)

    def release(self) -> None:
        """Delete this item's temporary media copies now (idempotent). Call once its row is written; without
        it they go when the item is garbage-collected (late when an exception's traceback holds it) or at exit."""
        while self.cleanups:
            self.cleanups.pop()()


def _prepare_image(file: DiscoveredFile, options: PrepareOptions) -> PreparedItem:
    from enrich.tasks.prepare_image import prepare_image

    img = prepare_image(file.path, max_side=options.max_side, keep_metadata=options.keep_metadata,
                        max_pixels=options.max_pixels, decode_budget=options.decode_budget)
    m = img.meta
    # taken_at is stored as the clock time on the camera (naive): most photos carry no UTC offset
    taken_at = m.taken_at.replace(tzinfo=None) if m.taken_at is not None else None
    meta = {
        "width": m.width, "height": m.height, "taken_at": taken_at, "gps_lat": m.gps_lat,
        "gps_lon": m.gps_lon, "camera_make": m.camera_make, "camera_model": m.camera_model,
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
    "image": _prepare_image,
    "audio": _prepare_audio,
    "video": _prepare_video,
    "document": _prepare_document,
}


def supported_kinds() -> frozenset[str]:
    return frozenset(PREPARERS)


def prepare_file(file: DiscoveredFile, options: PrepareOptions) -> PreparedItem | MediaError:
    """Never raises for bad input: a MediaError is returned so the caller records it for this item."""
    preparer = PREPARERS.get(file.kind or "")
    if preparer is None:
        return MediaError(f"no preparer for {file.kind} files", kind="unsupported")
    started = time.perf_counter()
    try:
        item = preparer(file, options)
    except MediaError as exc:
        return exc
    except MemoryError:
        return MediaError("out of memory while decoding", kind="too_large")
    except Exception as exc:  # a library bug on odd input must not sink the run
        return MediaError(f"could not prepare {file.kind}: {exc.__class__.__name__}: {exc}", kind="corrupt")
    item.prepare_ms = (time.perf_counter() - started) * 1000
    return item
