"""The emulator's own implementation of the documented Gemini input/output token rules.

Deliberately independent of the rest of enrich (the project's estimator is a separate implementation
and the tests compare the two). Rules (see shared/reference/gemini-api.md and the emulator brief):

- Text: ceil(chars / 4), computed separately for three blocks and summed:
  (a) all text in `contents` (every `text` part of every turn, plus the decoded text of inline
      `text/*` / JSON media parts), one ceil over the summed character count;
  (b) the system instruction's text parts, one ceil over their summed characters;
  (c) the response schema: ceil(len(json.dumps(schema, separators=(",", ":"), sort_keys=True)) / 4),
      over the schema dict exactly as it arrived on the wire (`responseSchema` and/or
      `responseJsonSchema`; both count when both are present).
  "chars" are Python `len()` of the str (Unicode code points).
- Images: 1.5 -> 258; 2.x -> 258 if both sides <= 384 px else 258 * ceil(w/768) * ceil(h/768)
  (258 when the size is unknown); 3.x -> by media resolution LOW 280 / MEDIUM 560 / HIGH 1120 /
  ULTRA_HIGH 2240, HIGH when unspecified; a part's own `mediaResolution` overrides the config's.
- Audio: 32 tokens per second, duration rounded up to whole seconds (32 when unknown).
- Video: 3.x 100 tokens/s at LOW, 300/s otherwise; 1.5/2.x 300/s; duration rounded up to whole
  seconds; 300 tokens when the duration is unknown.
- PDF: 1.5/2.x 258 per page, 3.x 560 per page (page text ignored); 1 page when unreadable.
- Output: ceil(len(output_text) / 4); thoughts = min(thinkingBudget, 64) when thinkingBudget > 0.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable

MODALITIES = ("TEXT", "IMAGE", "AUDIO", "VIDEO", "DOCUMENT")

_MODEL_RE = re.compile(r"^gemini-(1\.5|2\.\d|3\.\d)-[a-z0-9][a-z0-9.\-]*$")

RESOLUTION_IMAGE_TOKENS_3X = {"LOW": 280, "MEDIUM": 560, "HIGH": 1120, "ULTRA_HIGH": 2240}
IMAGE_TOKENS_LEGACY = 258
TILE_PX = 768
SMALL_IMAGE_PX = 384
AUDIO_TOKENS_PER_S = 32
VIDEO_TOKENS_PER_S = 300
VIDEO_TOKENS_PER_S_LOW_3X = 100
VIDEO_TOKENS_UNKNOWN = 300
PDF_TOKENS_PER_PAGE_2X = 258
PDF_TOKENS_PER_PAGE_3X = 560
THOUGHTS_CAP = 64


def model_family(model: str) -> str | None:
    """'1.5', '2' or '3' for a known Gemini model id (with or without 'models/'), else None."""
    name = model.split("/", 1)[1] if model.startswith("models/") else model
    m = _MODEL_RE.match(name)
    if not m:
        return None
    ver = m.group(1)
    return "1.5" if ver == "1.5" else ver.split(".")[0]


def is_known_model(model: str) -> bool:
    return model_family(model) is not None


def ceil_div4(n: int) -> int:
    return (n + 3) // 4


def text_tokens(text: str | int) -> int:
    """ceil(chars / 4); accepts a string or a character count."""
    n = text if isinstance(text, int) else len(text)
    return ceil_div4(n)


def schema_json(schema: Any) -> str:
    return json.dumps(schema, separators=(",", ":"), sort_keys=True)


def schema_tokens(schema: Any) -> int:
    if schema is None:
        return 0
    return ceil_div4(len(schema_json(schema)))


def normalize_resolution(value: Any) -> str | None:
    """'LOW' | 'MEDIUM' | 'HIGH' | 'ULTRA_HIGH' | None from the wire forms
    ('MEDIA_RESOLUTION_LOW', 'low', {'level': 'MEDIA_RESOLUTION_LOW'}, ...)."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("level")
        if value is None:
            return None
    s = str(value).upper()
    if s.startswith("MEDIA_RESOLUTION_"):
        s = s[len("MEDIA_RESOLUTION_"):]
    s = s.replace("-", "_").replace(" ", "_")
    if s in RESOLUTION_IMAGE_TOKENS_3X:
        return s
    return None  # UNSPECIFIED or unknown -> default


def image_tokens(family: str, width: int | None, height: int | None, resolution: str | None = None) -> int:
    if family == "3":
        return RESOLUTION_IMAGE_TOKENS_3X[resolution or "HIGH"]
    if family == "1.5":
        return IMAGE_TOKENS_LEGACY
    if not width or not height:
        return IMAGE_TOKENS_LEGACY
    if width <= SMALL_IMAGE_PX and height <= SMALL_IMAGE_PX:
        return IMAGE_TOKENS_LEGACY
    return IMAGE_TOKENS_LEGACY * math.ceil(width / TILE_PX) * math.ceil(height / TILE_PX)


def whole_seconds(duration_s: float) -> int:
    return max(0, math.ceil(duration_s - 1e-9))


def audio_tokens(duration_s: float | None) -> int:
    if duration_s is None:
        return AUDIO_TOKENS_PER_S
    return AUDIO_TOKENS_PER_S * whole_seconds(duration_s)


def video_tokens(family: str, duration_s: float | None, resolution: str | None = None) -> int:
    if duration_s is None:
        return VIDEO_TOKENS_UNKNOWN
    rate = VIDEO_TOKENS_PER_S_LOW_3X if (family == "3" and resolution == "LOW") else VIDEO_TOKENS_PER_S
    return rate * whole_seconds(duration_s)


def pdf_tokens(family: str, pages: int | None) -> int:
    pages = pages if pages and pages > 0 else 1
    per = PDF_TOKENS_PER_PAGE_3X if family == "3" else PDF_TOKENS_PER_PAGE_2X
    return per * pages


def modality_of_mime(mime: str) -> str | None:
    """TEXT / IMAGE / AUDIO / VIDEO / DOCUMENT, or None for an unsupported type."""
    m = (mime or "").lower().split(";", 1)[0].strip()
    if m.startswith("image/"):
        return "IMAGE"
    if m.startswith("audio/"):
        return "AUDIO"
    if m.startswith("video/"):
        return "VIDEO"
    if m == "application/pdf":
        return "DOCUMENT"
    if m.startswith("text/") or m in ("application/json", "application/jsonl", "application/x-ndjson",
                                       "application/xml", "application/javascript", "application/rtf",
                                       "application/x-javascript", "application/x-python", "application/x-sh"):
        return "TEXT"
    return None


def media_part_tokens(family: str, modality: str, *, width: int | None = None, height: int | None = None,
                      duration_s: float | None = None, pages: int | None = None,
                      resolution: str | None = None) -> int:
    """Tokens of one non-text media part (IMAGE, AUDIO, VIDEO, DOCUMENT)."""
    if modality == "IMAGE":
        return image_tokens(family, width, height, resolution)
    if modality == "AUDIO":
        return audio_tokens(duration_s)
    if modality == "VIDEO":
        return video_tokens(family, duration_s, resolution)
    if modality == "DOCUMENT":
        return pdf_tokens(family, pages)
    raise ValueError(f"not a media modality: {modality}")


def prompt_tokens(*, text_chars: int, system_chars: int, schemas: Iterable[Any],
                  media: Iterable[tuple[str, int]]) -> tuple[int, dict[str, int]]:
    """Total prompt tokens and the per-modality split.

    text_chars: summed characters of all contents text (text parts + decoded text media);
    system_chars: summed characters of the system instruction (0 when absent);
    schemas: the wire schema dicts (responseSchema / responseJsonSchema) present;
    media: (modality, tokens) of each non-text media part.
    """
    by: dict[str, int] = {m: 0 for m in MODALITIES}
    by["TEXT"] += text_tokens(text_chars) if text_chars else 0
    by["TEXT"] += text_tokens(system_chars) if system_chars else 0
    for s in schemas:
        by["TEXT"] += schema_tokens(s)
    for modality, n in media:
        by[modality] += n
    return sum(by.values()), by


def output_tokens(text: str) -> int:
    return ceil_div4(len(text))


def thoughts_tokens(thinking_budget: Any) -> int:
    try:
        b = int(thinking_budget)
    except (TypeError, ValueError):
        return 0
    return min(b, THOUGHTS_CAP) if b > 0 else 0
