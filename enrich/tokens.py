"""Input-token rules per model family, as data (shared/reference/gemini-api.md, "Input token rules").

Used before any request is sent: for budget reservations and for `enrich estimate`. Pure functions, no I/O.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache

from pydantic import BaseModel

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class FamilyRules:
    image_fixed: int | None = None  # a flat count per image (Gemini 1.5)
    image_small: int | None = None  # 2.x: count for an image with both sides <= small_side
    small_side: int = 384
    tile: int = 768  # 2.x: count per tile x tile pixels
    tile_tokens: int = 258
    image_by_resolution: dict[str, int] | None = None  # 3.x: by media_resolution
    audio_per_s: int = 32
    video_per_s_by_resolution: dict[str, int] | None = None
    pdf_per_page_by_resolution: dict[str, int] | None = None


FAMILIES: dict[str, FamilyRules] = {
    "gemini-1.5": FamilyRules(
        image_fixed=258,
        video_per_s_by_resolution={"low": 300, "medium": 300, "high": 300},
        pdf_per_page_by_resolution={"low": 258, "medium": 258, "high": 258},
    ),
    "gemini-2": FamilyRules(
        image_small=258,
        video_per_s_by_resolution={"low": 300, "medium": 300, "high": 300},
        pdf_per_page_by_resolution={"low": 258, "medium": 258, "high": 258},
    ),
    "gemini-3": FamilyRules(
        image_by_resolution={"low": 280, "medium": 560, "high": 1120, "ultra_high": 2240},
        video_per_s_by_resolution={"low": 100, "medium": 300, "high": 300},
        pdf_per_page_by_resolution={"low": 560, "medium": 560, "high": 560},
    ),
    # local engines: counted by their own tokenizer; a rough figure for estimates only
    "local": FamilyRules(image_fixed=256),
}


def family_of(model: str) -> str:
    if model.startswith(("mlx:", "openai:")):
        return "local"
    if model.startswith("gemini-1.5"):
        return "gemini-1.5"
    if model.startswith("gemini-2"):
        return "gemini-2"
    return "gemini-3"  # every current Gemini model


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def image_tokens(model: str, width: int, height: int, resolution: str = "low") -> int:
    rules = FAMILIES[family_of(model)]
    if rules.image_fixed is not None:
        return rules.image_fixed
    if rules.image_by_resolution is not None:
        return rules.image_by_resolution[resolution]
    if width <= rules.small_side and height <= rules.small_side:
        return rules.image_small or rules.tile_tokens
    return math.ceil(width / rules.tile) * math.ceil(height / rules.tile) * rules.tile_tokens


def whole_seconds(seconds: float) -> int:
    """Media is billed per started second; a header's 10.000000001 s is 10 s, not 11."""
    return max(0, math.ceil(seconds - 1e-9))


def audio_tokens(model: str, seconds: float) -> int:
    return whole_seconds(seconds) * FAMILIES[family_of(model)].audio_per_s


def video_tokens(model: str, seconds: float, resolution: str = "low") -> int:
    per_s = (FAMILIES[family_of(model)].video_per_s_by_resolution or {}).get(resolution, 300)
    return whole_seconds(seconds) * per_s


def video_audio_tokens(model: str, seconds: float) -> int:
    """The soundtrack's share of a video's tokens (32/s), which a provider may bill at the audio rate."""
    return audio_tokens(model, seconds)


def text_chars_tokens(chars: int) -> int:
    """Tokens of `chars` characters of text (a text document sent as a text part)."""
    return math.ceil(chars / CHARS_PER_TOKEN) if chars > 0 else 0


def pdf_tokens(model: str, pages: int, resolution: str = "low") -> int:
    per_page = (FAMILIES[family_of(model)].pdf_per_page_by_resolution or {}).get(resolution, 258)
    return pages * per_page


def schema_json(schema: type[BaseModel]) -> dict:
    """The response schema as the Gemini backend sends it (`response_json_schema`: the model's JSON Schema,
    sent as is)."""
    return schema.model_json_schema()


@lru_cache(maxsize=256)
def schema_tokens(schema: type[BaseModel]) -> int:
    """Tokens of the response schema as sent with every request (it counts as input)."""
    return text_tokens(json.dumps(schema_json(schema), separators=(",", ":"), sort_keys=True))


def system_tokens(documents: bool = True) -> int:
    """Tokens of the system instruction marking the user's files as untrusted data: sent only with requests
    that carry a document (text or PDF; schemas/descriptions.py `carries_documents`), else 0."""
    from enrich.schemas.descriptions import UNTRUSTED_CONTENT_INSTRUCTION

    return text_tokens(UNTRUSTED_CONTENT_INSTRUCTION) if documents else 0


def prompt_tokens(prompt: str, schema: type[BaseModel] | None, *, documents: bool = False) -> int:
    """The text sent with every request: the prompt and the response schema (what the profiles' token budgets
    count), plus, for a request carrying a document, the untrusted-content system instruction."""
    return (text_tokens(prompt) + system_tokens(documents)
            + (schema_tokens(schema) if schema is not None else 0))
