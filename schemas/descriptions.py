"""What the model is asked to return, one pydantic model per media kind.

Keep these small: the JSON schema is sent with every request and billed as input tokens.
Field names become typed Parquet columns (see schemas/parquet.py), so renaming one is a schema change.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Setting = Literal["indoor", "outdoor", "mixed", "unknown"]


class ImageDescription(BaseModel):
    caption: str = Field(description="One short plain sentence, no 'This image shows'.")
    description: str = Field(description="Two to four sentences.")
    tags: list[str] = Field(description="Up to 10 lowercase keywords.")
    objects: list[str] = Field(description="Main visible objects.")
    visible_text: str = Field(description="Legible text in the image, or empty.")
    people_count: int = Field(description="Number of people visible.")
    setting: Setting


DESCRIPTION_SCHEMAS: dict[str, type[BaseModel]] = {
    "image": ImageDescription,
}


def schema_for(kind: str) -> type[BaseModel]:
    return DESCRIPTION_SCHEMAS[kind]
