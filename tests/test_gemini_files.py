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


@pytest.mark.parametrize("status", [413, 400])
def test_a_body_refused_as_too_large_is_retried_through_the_files_api(gemini, tmp_path, status):
    """A proxy (or the provider) refuses bodies far below max_inline_bytes: 413, or the API's 400 "Request
    payload size exceeds the limit". The item goes through the Files API instead of failing, and the next
    request of that size goes there at once."""
    wav = make_wav(tmp_path / "a.wav", 4)  # 32 KB (43 KB as base64 JSON), inline by max_inline_bytes
    gemini.set_config(max_request_bytes=20_000, too_large_status=status)
    try:
        backend = GeminiBackend(MODEL, api_key=SecretStr("test-key-123"), base_url=gemini.base_url,
                                max_inline_bytes=1_000_000)
        request = DescribeRequest(key="k", prompt="Describe it.", schema=AudioDescription,
                                  media=(MediaPart(mime="audio/wav", path=wav),), max_output_tokens=512)

        async def go():
            try:
                return [await backend.describe(request), await backend.describe(request)]
            finally:
                await backend.aclose()

        first, second = asyncio.run(go())
    finally:
        gemini.set_config(max_request_bytes=None, too_large_status=413)
    assert first.status == second.status == "ok"
    assert first.usage.input_by_modality["AUDIO"] == 32 * 4
    stats = gemini.stats()
    # the refused request, then two by file URI: the second item went through the Files API directly
    assert stats["requests"] == 3 and stats["billed_requests"] == 2
    assert (stats["uploads"], stats["deletes"], stats["files_stored"]) == (2, 2, 0)
    assert stats["by_status"] == {str(status): 1, "200": 2}
    sizes = [len(body) for body in gemini.received_requests()]
    assert sizes[0] > 20_000 and all(n < 20_000 for n in sizes[1:])  # no inline media after the refusal


def test_a_too_large_refusal_without_inline_media_is_an_item_error(gemini):
    """Nothing to move to the Files API (a text-only request): the refusal is the item's error, not a loop."""
    gemini.set_config(max_request_bytes=10)
    try:
        with pytest.raises(ItemRequestError) as err:
            describe(gemini, MediaPart(mime="text/plain", data=b"hello"), schema=DocumentDescription,
                     max_inline_bytes=0)
    finally:
        gemini.set_config(max_request_bytes=None)
    assert gemini.stats()["billed_requests"] == 0 and "413" in str(err.value)
