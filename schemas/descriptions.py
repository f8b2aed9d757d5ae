"""What the model is asked to return, one pydantic model per media kind.

Keep these small: the JSON schema is sent with every request and billed as input tokens.
Field names become typed Parquet columns (see schemas/parquet.py), so renaming one is a schema change.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from enrich.schemas.vocab import MediaKind

Setting = Literal["indoor", "outdoor", "mixed", "unknown"]


class ImageDescription(BaseModel):
    caption: str = Field(description="One short plain sentence, no 'This image shows'.")
    description: str = Field(description="Two to four sentences.")
    tags: list[str] = Field(description="Up to 10 lowercase keywords.")
    objects: list[str] = Field(description="Main visible objects.")
    visible_text: str = Field(description="Legible text in the image, or empty.")
    people_count: int = Field(description="Number of people visible.")
    setting: Setting


class AudioDescription(BaseModel):
    summary: str = Field(description="Two to four sentences: what the recording is and what happens in it.")
    transcript: str = Field(description="What is said, as the prompt asks (excerpt or full); empty if no speech.")
    language: str = Field(description="Main spoken language as a BCP-47 code (en, fr, pt-BR), or empty.")
    speakers_count: int = Field(description="Number of distinct speakers; 0 if none.")
    sounds: list[str] = Field(description="Notable sounds and music, lowercase, up to 10.")


DocumentType = Literal["letter", "invoice", "receipt", "form", "contract", "report", "article", "manual",
                       "notes", "presentation", "other"]


class DocumentDescription(BaseModel):
    title: str = Field(description="The document's title, or a short one you give it.")
    document_type: DocumentType
    language: str = Field(description="Main language as a BCP-47 code (en, fr, de), or empty.")
    summary: str = Field(description="Two to four sentences.")
    entities: list[str] = Field(description="Key people, organisations and places, up to 10.")
    dates: list[str] = Field(description="Dates mentioned, as YYYY-MM-DD where possible, up to 10.")


class VideoDescription(BaseModel):
    summary: str = Field(description="Two to four sentences.")
    scenes: list[str] = Field(description="One short sentence per scene, in order, up to 10.")
    visible_text: str = Field(description="Legible on-screen text, or empty.")


DESCRIPTION_SCHEMAS: dict[str, type[BaseModel]] = {
    MediaKind.IMAGE: ImageDescription,
    MediaKind.AUDIO: AudioDescription,
    MediaKind.DOCUMENT: DocumentDescription,
    MediaKind.VIDEO: VideoDescription,
}


def schema_for(kind: str) -> type[BaseModel]:
    return DESCRIPTION_SCHEMAS[kind]
