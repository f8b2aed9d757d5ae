"""What the `detailed` profile asks the model to return, one pydantic model per media kind (the other
profiles: schemas/profiles.py).

Keep these small: the JSON schema is sent with every request and billed as input tokens. Each field is
described once: these fields are plain enough to be described by the prompt (config/prompts.toml), so the
schemas carry names and types only, and `LeanModel` leaves pydantic's titles out of what is sent.
Field names become typed Parquet columns (see schemas/parquet.py), so renaming one is a schema change.
"""
from __future__ import annotations

from typing import Literal

from typing import Any

from pydantic import BaseModel

from enrich.schemas.vocab import MediaKind

def _drop_titles(node: Any) -> Any:
    """A JSON Schema without `title` keywords (a property *named* title stays)."""
    if isinstance(node, list):
        return [_drop_titles(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: _drop_titles(sub) for name, sub in value.items()}
        else:
            out[key] = _drop_titles(value)
    return out


class LeanModel(BaseModel):
    """A response schema as sent: the JSON Schema without titles (they repeat the field names, and every
    character is billed with every request)."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return _drop_titles(super().model_json_schema(*args, **kwargs))


Setting = Literal["indoor", "outdoor", "mixed", "unknown"]


class ImageDescription(LeanModel):
    caption: str
    description: str
    tags: list[str]
    objects: list[str]
    visible_text: str
    people_count: int
    setting: Setting


class AudioDescription(LeanModel):
    summary: str
    transcript: str
    language: str
    speakers_count: int
    sounds: list[str]


DocumentType = Literal["letter", "invoice", "receipt", "form", "contract", "report", "article", "manual",
                       "notes", "presentation", "other"]


class DocumentDescription(LeanModel):
    title: str
    document_type: DocumentType
    language: str
    summary: str
    entities: list[str]
    dates: list[str]


class VideoDescription(LeanModel):
    summary: str
    scenes: list[str]
    visible_text: str


DESCRIPTION_SCHEMAS: dict[str, type[BaseModel]] = {
    MediaKind.IMAGE: ImageDescription,
    MediaKind.AUDIO: AudioDescription,
    MediaKind.DOCUMENT: DocumentDescription,
    MediaKind.VIDEO: VideoDescription,
}


def schema_for(kind: str) -> type[BaseModel]:
    return DESCRIPTION_SCHEMAS[kind]
