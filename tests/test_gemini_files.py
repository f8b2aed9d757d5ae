"""The Gemini backend's Files API path against the emulator, through the real SDK: media over the inline
limit is uploaded, waited for until ACTIVE, referenced by URI and deleted afterwards, also on failure."""
from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from enrich.backends.base import DescribeRequest, MediaPart
from enrich.backends.gemini import GeminiBackend
from enrich.errors import ItemRequestError, RetryableError
from enrich.schemas.descriptions import AudioDescription, DocumentDescription
from tests.media_factory import make_pdf, make_wav

MODEL = "gemini-3.1-flash-lite"


def describe(gemini, media: MediaPart, schema=AudioDescription, **backend_kw):
    backend = GeminiBackend(MODEL, api_key=SecretStr("test-key-123"), base_url=gemini.base_url, **backend_kw)
    request = DescribeRequest(key="k", prompt="Describe it.", schema=schema, media=(media,), max_output_tokens=512)

    async def go():
        try:
            return await backend.describe(request)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_media_under_the_limit_is_sent_inline_from_its_file(gemini, tmp_path):
    wav = make_wav(tmp_path / "a.wav", 2)
    result = describe(gemini, MediaPart(mime="audio/wav", path=wav), max_inline_bytes=1_000_000)
    assert result.status == "ok" and result.usage.input_by_modality["AUDIO"] == 64
    assert gemini.stats()["uploads"] == 0
    assert gemini.received_media() == [("audio/wav", wav.read_bytes())]


def test_media_over_the_limit_goes_through_the_files_api_and_is_deleted(gemini, tmp_path):
    gemini.set_config(file_processing_polls=2)  # PROCESSING twice before ACTIVE
    try:
        wav = make_wav(tmp_path / "a.wav", 30)
        result = describe(gemini, MediaPart(mime="audio/wav", path=wav), max_inline_bytes=10_000)
    finally:
        gemini.set_config(file_processing_polls=1)
    assert result.status == "ok" and result.usage.input_by_modality["AUDIO"] == 32 * 30
    stats = gemini.stats()
    assert (stats["uploads"], stats["deletes"], stats["files_stored"]) == (1, 1, 0)
    assert stats["billed_requests"] == 1


def test_in_memory_bytes_over_the_limit_are_uploaded_too(gemini, tmp_path):
    pdf = make_pdf(tmp_path / "d.pdf", 3).read_bytes()
    result = describe(gemini, MediaPart(mime="application/pdf", data=pdf), schema=DocumentDescription,
                      max_inline_bytes=100)
    assert result.status == "ok" and result.usage.input_by_modality["DOCUMENT"] == 3 * 560
    assert (gemini.stats()["uploads"], gemini.stats()["deletes"]) == (1, 1)


def test_the_upload_is_deleted_when_generate_content_fails(gemini, tmp_path):
    gemini.set_config(faults={"500": 1.0})
    wav = make_wav(tmp_path / "a.wav", 30)
    with pytest.raises(RetryableError):
        describe(gemini, MediaPart(mime="audio/wav", path=wav), max_inline_bytes=10_000)
    stats = gemini.stats()
    assert (stats["uploads"], stats["deletes"], stats["files_stored"]) == (1, 1, 0)


def test_a_file_that_never_becomes_active_is_retryable_and_deleted(gemini, tmp_path):
    gemini.set_config(file_processing_polls=1000)
    try:
        with pytest.raises(RetryableError) as err:
            describe(gemini, MediaPart(mime="audio/wav", path=make_wav(tmp_path / "a.wav", 30)),
                     max_inline_bytes=10_000, file_active_timeout_s=0.2)
    finally:
        gemini.set_config(file_processing_polls=1)
    assert err.value.kind == "file_processing_timeout"
    assert gemini.stats()["deletes"] == gemini.stats()["uploads"] == 1
    assert gemini.stats()["billed_requests"] == 0


def test_a_media_file_that_vanished_is_an_item_error(gemini, tmp_path):
    with pytest.raises(ItemRequestError) as err:
        describe(gemini, MediaPart(mime="audio/wav", path=tmp_path / "gone.wav"))
    assert err.value.kind == "unreadable"
    assert gemini.stats()["requests"] == 0


def test_the_backend_declares_its_limits_as_data(gemini):
    backend = GeminiBackend(MODEL, api_key=SecretStr("k"), base_url=gemini.base_url, max_inline_bytes=12345)
    assert backend.capabilities.max_inline_bytes == 12345
    assert backend.capabilities.max_upload_bytes == 2 * 1024**3
    assert backend.capabilities.accepts("audio/ogg") and backend.capabilities.accepts("application/pdf")
    asyncio.run(backend.aclose())
