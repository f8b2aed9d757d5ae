"""What preparation takes and gives: `PrepareOptions` and `PreparedItem`.

Their own module so that tasks/prepare.py (which dispatches per kind) and the per-kind preparers
(tasks/prepare_image.py, tasks/prepare_media.py) all import these types from below, never each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from enrich.backends.base import MediaPart
from enrich.inflight import WeightBudget
from enrich.settings import RESOLUTION_MAX_SIDE, default
from enrich.tasks.discover import DiscoveredFile
from enrich.tasks.media_info import MediaLimits


@dataclass(frozen=True)
class PrepareOptions:
    max_side: int = RESOLUTION_MAX_SIDE["low"]
    keep_metadata: bool = False
    max_pixels: int = default("max_image_pixels")
    limits: MediaLimits = MediaLimits()  # audio, video and documents
    # pixels decoded at once by all the threads preparing with these options (None: no bound)
    decode_budget: WeightBudget | None = field(default=None, compare=False)
    context: tuple[str, ...] = ()  # --context fields to put into the prompt (tasks/context.py)

    @classmethod
    def from_settings(cls, settings: Any) -> "PrepareOptions":
        from enrich.tasks.context import context_fields

        return cls(max_side=settings.max_side, keep_metadata=not settings.strip_metadata,
                   max_pixels=settings.max_image_pixels, limits=MediaLimits.from_settings(settings),
                   decode_budget=WeightBudget(settings.max_decode_pixels),
                   context=context_fields(settings.context))


@dataclass
class PreparedItem:
    file: DiscoveredFile
    media: tuple[MediaPart, ...]
    meta: dict[str, Any] = field(default_factory=dict)  # extracted locally: width, height, taken_at, gps...
    media_tokens_hint: dict[str, Any] = field(default_factory=dict)  # what the token rules need
    prepare_ms: float = 0.0
    context: str | None = None  # text added to the prompt (--context): never coordinates, never the bytes' metadata
    # deletes the temporary copies the media parts point at (stripped or trimmed media); see release()
    cleanups: list[Callable[[], Any]] = field(default_factory=list, repr=False, compare=False)

    def release(self) -> None:
        """Delete this item's temporary media copies now (idempotent). Call once its row is written; without
        it they go when the item is garbage-collected (late when an exception's traceback holds it) or at exit."""
        while self.cleanups:
            self.cleanups.pop()()
