"""Token rules per model family (enrich/tokens.py) against the documented rules in
shared/reference/gemini-api.md, and against the emulator's independent implementation (what tests bill)."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from enrich import tokens
from enrich.emulator import tokens as billed
from enrich.schemas.descriptions import ImageDescription

GEMINI_MODELS = {"gemini-1.5-flash-8b": "1.5", "gemini-2.5-flash-lite": "2", "gemini-2.0-flash-lite": "2",
                 "gemini-3.1-flash-lite": "3", "gemini-3.5-flash-lite": "3", "gemini-3.8-flash": "3"}


@pytest.mark.parametrize("model, family", [
    ("gemini-1.5-flash-8b", "gemini-1.5"), ("gemini-2.0-flash-lite", "gemini-2"), ("gemini-2.5-flash", "gemini-2"),
    ("gemini-3.1-flash-lite", "gemini-3"), ("gemini-3.8-flash", "gemini-3"), ("mlx:some/model", "local"),
    ("openai:m@http://x", "local"),
])
def test_models_map_to_their_family(model, family):
    assert tokens.family_of(model) == family


def test_text_is_about_four_characters_per_token_rounded_up():
    assert [tokens.text_tokens("x" * n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_images_by_the_documented_rules():
    # 1.5: 258 per image, whatever the size
    assert tokens.image_tokens("gemini-1.5-flash-8b", 4000, 3000) == 258
    # 2.x: 258 when both sides <= 384, else 258 per 768x768 tile
    assert tokens.image_tokens("gemini-2.5-flash-lite", 384, 384) == 258
    assert tokens.image_tokens("gemini-2.5-flash-lite", 385, 100) == 258  # one tile
    assert tokens.image_tokens("gemini-2.5-flash-lite", 768, 768) == 258
    assert tokens.image_tokens("gemini-2.5-flash-lite", 769, 768) == 2 * 258
    assert tokens.image_tokens("gemini-2.5-flash-lite", 3072, 2304) == 4 * 3 * 258
    # 3.x: by media resolution, whatever the size
    for resolution, n in {"low": 280, "medium": 560, "high": 1120, "ultra_high": 2240}.items():
        assert tokens.image_tokens("gemini-3.1-flash-lite", 5000, 4000, resolution) == n
        assert tokens.image_tokens("gemini-3.1-flash-lite", 10, 10, resolution) == n


def test_audio_video_and_pdf_by_the_documented_rules():
    assert tokens.audio_tokens("gemini-3.1-flash-lite", 10) == 320
    assert tokens.audio_tokens("gemini-2.5-flash-lite", 9.2) == 320  # whole seconds, rounded up
    assert tokens.video_tokens("gemini-2.5-flash-lite", 10) == 3000  # about 300/s
    assert tokens.video_tokens("gemini-3.1-flash-lite", 10, "low") == 1000  # about 100/s at low
    assert tokens.video_tokens("gemini-3.1-flash-lite", 10, "medium") == 3000
    assert tokens.pdf_tokens("gemini-2.5-flash-lite", 3) == 3 * 258
    assert tokens.pdf_tokens("gemini-3.1-flash-lite", 3, "medium") == 3 * 560


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(sorted(GEMINI_MODELS)), width=st.integers(1, 10_000), height=st.integers(1, 10_000),
       resolution=st.sampled_from(["low", "medium", "high"]))
def test_image_rules_agree_with_the_emulators_billing(model, width, height, resolution):
    assert tokens.image_tokens(model, width, height, resolution) == billed.image_tokens(
        GEMINI_MODELS[model], width, height, resolution.upper())


@settings(max_examples=200, deadline=None)
@given(model=st.sampled_from(sorted(GEMINI_MODELS)), seconds=st.integers(1, 4 * 3600),
       resolution=st.sampled_from(["low", "medium", "high"]), pages=st.integers(1, 1000))
def test_audio_video_and_pdf_rules_agree_with_the_emulators_billing(model, seconds, resolution, pages):
    family = GEMINI_MODELS[model]
    assert tokens.audio_tokens(model, seconds) == billed.audio_tokens(seconds)
    assert tokens.video_tokens(model, seconds, resolution) == billed.video_tokens(family, seconds, resolution.upper())
    assert tokens.pdf_tokens(model, pages, resolution) == billed.pdf_tokens(family, pages)


def test_schema_tokens_count_the_schema_as_the_backend_sends_it():
    """The Gemini backend sends the model's JSON Schema as `response_json_schema` (no SDK conversion); billing
    counts its compact, key-sorted JSON, and so does the estimate."""
    from enrich.tokens import schema_json

    wire = ImageDescription.model_json_schema()
    assert schema_json(ImageDescription) == wire
    assert "title" not in json.dumps(wire), "titles are left out: they would be billed with every request"
    assert tokens.schema_tokens(ImageDescription) == billed.schema_tokens(wire)
    assert tokens.schema_tokens(ImageDescription) == math.ceil(
        len(json.dumps(wire, separators=(",", ":"), sort_keys=True)) / 4)
    # only a request carrying a document also carries the system instruction marking it as untrusted data
    from enrich.schemas.descriptions import UNTRUSTED_CONTENT_INSTRUCTION

    assert tokens.prompt_tokens("x" * 10, ImageDescription) == 3 + tokens.schema_tokens(ImageDescription)
    assert tokens.prompt_tokens("x" * 10, ImageDescription, documents=True) == \
        3 + tokens.schema_tokens(ImageDescription) + math.ceil(len(UNTRUSTED_CONTENT_INSTRUCTION) / 4)
