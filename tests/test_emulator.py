"""The local Gemini emulator, driven by the real google-genai SDK over HTTP (never patched)."""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import io
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import wave
from enum import Enum
from pathlib import Path
from typing import Optional

import pydantic
import pytest
from PIL import Image
from google import genai
from google.genai import errors, types

from enrich.emulator import EmulatorConfig, Faults, GeminiEmulator
from enrich.emulator import tokens as tk

M3 = "gemini-3.1-flash-lite"
M2 = "gemini-2.5-flash-lite"
M15 = "gemini-1.5-flash-8b"
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# helpers / fixtures
# ------------------------------------------------------------------------------------------------

def image_bytes(color: tuple[int, int, int], size: tuple[int, int] = (640, 480), fmt: str = "JPEG") -> bytes:
    b = io.BytesIO()
    Image.new("RGB", size, color).save(b, fmt)
    return b.getvalue()


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    b = io.BytesIO()
    with wave.open(b, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return b.getvalue()


def mp4_bytes(seconds: float, timescale: int = 1000) -> bytes:
    """A minimal MP4 (ftyp + moov/mvhd) whose container duration mutagen can read."""
    def box(t: bytes, payload: bytes) -> bytes:
        return struct.pack(">I4s", 8 + len(payload), t) + payload

    ftyp = box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41")
    mvhd = box(b"mvhd", struct.pack(">B3xIIII", 0, 0, 0, timescale, int(seconds * timescale))
               + struct.pack(">IH", 0x00010000, 0x0100) + b"\0" * 70 + struct.pack(">I", 2))
    return ftyp + box(b"moov", mvhd)


def pdf_bytes(pages: int) -> bytes:
    from pypdf import PdfWriter

    w = PdfWriter()
    for _ in range(pages):
        w.add_blank_page(200, 200)
    b = io.BytesIO()
    w.write(b)
    return b.getvalue()


@pytest.fixture(scope="module")
def emu():
    e = GeminiEmulator(EmulatorConfig(seed=1))
    e.start()
    yield e
    e.stop()


@pytest.fixture(autouse=True)
def _clean(request):
    if "emu" in request.fixturenames:
        e = request.getfixturevalue("emu")
        e.set_config(faults=Faults(), latency_ms=(0, 0), rpm_limit=None, slow_s=5.0, retry_delay_s=1.0,
                     capture_media=False, file_processing_polls=1, strict_media=False)
        e.reset()
    yield


def client(url: str, key: str = "test", timeout_ms: int = 5000, version: str = "v1beta") -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=url, api_version=version,
                                                                    timeout=timeout_ms))


@pytest.fixture
def c(emu):
    return client(emu.url)


class Caption(pydantic.BaseModel):
    caption: str
    tags: list[str]
    object_count: int
    dominant_colour: str


def img_part(data: bytes, mime: str = "image/jpeg", resolution: str | None = None) -> types.Part:
    if resolution:
        return types.Part.from_bytes(data=data, mime_type=mime,
                                     media_resolution=types.PartMediaResolutionLevel(
                                         f"MEDIA_RESOLUTION_{resolution}"))
    return types.Part.from_bytes(data=data, mime_type=mime)


def usage_sum(responses) -> tuple[int, int]:
    return (sum(r.usage_metadata.prompt_token_count or 0 for r in responses),
            sum(r.usage_metadata.candidates_token_count or 0 for r in responses))


def details(resp_usage) -> dict[str, int]:
    return {d.modality.value: d.token_count for d in (resp_usage.prompt_tokens_details or [])}


# ------------------------------------------------------------------------------------------------
# structured output
# ------------------------------------------------------------------------------------------------

def test_structured_output_pydantic_is_content_dependent(c):
    out = {}
    for name, colour in (("red", (220, 20, 20)), ("blue", (20, 40, 230))):
        r = c.models.generate_content(
            model=M3, contents=[img_part(image_bytes(colour)), "Describe the picture."],
            config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=Caption,
                                               media_resolution="MEDIA_RESOLUTION_LOW"))
        assert r.candidates[0].finish_reason == types.FinishReason.STOP
        assert isinstance(r.parsed, Caption)
        out[name] = r.parsed
        assert name in r.parsed.caption and name in r.parsed.tags and r.parsed.dominant_colour == name
        assert "landscape" in r.parsed.caption
        assert r.model_version == M3 and r.response_id
    assert out["red"].caption != out["blue"].caption
    assert out["red"].tags != out["blue"].tags


def test_orientation_brightness_and_size_drive_the_answer(c):
    r = c.models.generate_content(model=M2, contents=[img_part(image_bytes((250, 250, 250), (300, 900), "PNG"),
                                                               "image/png"), "caption"])
    assert r.text.startswith("A bright, mostly white portrait picture")
    assert "300x900" in r.text


class Mood(str, Enum):
    calm = "calm"
    busy = "busy"


class Colour(pydantic.BaseModel):
    name: str
    share: float = pydantic.Field(ge=0, le=1)


class Rich(pydantic.BaseModel):
    title: str
    description: str
    keywords: list[str] = pydantic.Field(min_length=3, max_length=4)
    colours: list[Colour]
    mood: Mood
    people_count: int = pydantic.Field(ge=0, le=10)
    has_text: bool
    note: Optional[str] = None


def test_response_json_schema_with_defs_refs_anyof_enum(c):
    schema = Rich.model_json_schema()
    assert "$defs" in schema
    r = c.models.generate_content(
        model=M2, contents=[img_part(image_bytes((30, 160, 40))), "Describe"],
        config={"response_mime_type": "application/json", "response_json_schema": schema})
    assert isinstance(r.parsed, dict)
    obj = Rich.model_validate(r.parsed)
    assert 3 <= len(obj.keywords) <= 4
    assert "green" in obj.description
    # the same schema through the OpenAPI-style response_schema path
    r2 = c.models.generate_content(model=M2, contents=[img_part(image_bytes((30, 160, 40))), "Describe"],
                                   config={"response_mime_type": "application/json", "response_schema": Rich})
    assert isinstance(r2.parsed, Rich)


def test_plain_text_and_other_media_answers(c):
    r = c.models.generate_content(model=M2, contents=[types.Part.from_bytes(data=wav_bytes(3), mime_type="audio/wav"),
                                                      "what is it"])
    assert "3-second" in r.text and "audio" in r.text
    r = c.models.generate_content(model=M2, contents=[types.Part.from_bytes(data=pdf_bytes(2),
                                                                           mime_type="application/pdf"), "x"])
    assert "2-page PDF" in r.text
    r = c.models.generate_content(model=M2, contents=[types.Part.from_bytes(data=b"Quarterly report on whales",
                                                                           mime_type="text/plain"), "x"])
    assert "Quarterly report on whales" in r.text


# ------------------------------------------------------------------------------------------------
# token accounting
# ------------------------------------------------------------------------------------------------

PROMPT = "Describe this picture in one sentence."


@pytest.mark.parametrize("res,img_tokens", [("LOW", 280), ("MEDIUM", 560), ("HIGH", 1120), (None, 1120)])
def test_tokens_3x_by_media_resolution(c, res, img_tokens):
    schema = {"type": "object", "properties": {"caption": {"type": "string"}}, "required": ["caption"]}
    cfg = {"response_mime_type": "application/json", "response_json_schema": schema,
           "system_instruction": "Be terse."}
    if res:
        cfg["media_resolution"] = f"MEDIA_RESOLUTION_{res}"
    r = c.models.generate_content(model=M3, contents=[img_part(image_bytes((1, 2, 3), (3000, 2000))), PROMPT],
                                  config=cfg)
    text = math.ceil(len(PROMPT) / 4) + math.ceil(len("Be terse.") / 4) + math.ceil(
        len(json.dumps(schema, separators=(",", ":"), sort_keys=True)) / 4)
    u = r.usage_metadata
    assert details(u) == {"TEXT": text, "IMAGE": img_tokens}
    assert u.prompt_token_count == text + img_tokens
    assert u.candidates_token_count == math.ceil(len(r.text) / 4)
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count
    assert u.thoughts_token_count is None


def test_part_media_resolution_overrides_config(c):
    parts = [img_part(image_bytes((9, 9, 9)), resolution="MEDIUM"), img_part(image_bytes((9, 9, 90))), "hi"]
    r = c.models.count_tokens(model=M3, contents=parts)
    assert r.total_tokens == 560 + 1120 + 1
    g = c.models.generate_content(model=M3, contents=parts, config={"media_resolution": "MEDIA_RESOLUTION_LOW"})
    assert details(g.usage_metadata)["IMAGE"] == 560 + 280


@pytest.mark.parametrize("model,size,expected", [
    (M2, (2000, 1000), 258 * 3 * 2),
    (M2, (384, 384), 258),
    (M2, (385, 100), 258),
    (M2, (1536, 1537), 258 * 2 * 3),
    (M15, (4000, 3000), 258),
])
def test_tokens_2x_tiling_and_15(c, model, size, expected):
    r = c.models.generate_content(model=model, contents=[img_part(image_bytes((200, 100, 0), size)), "abcd"])
    assert details(r.usage_metadata) == {"TEXT": 1, "IMAGE": expected}
    assert c.models.count_tokens(model=model, contents=[img_part(image_bytes((200, 100, 0), size)),
                                                        "abcd"]).total_tokens == expected + 1


def test_tokens_audio_video_pdf(c):
    def count(model, data, mime, cfg=None):
        r = c.models.generate_content(model=model, contents=[types.Part.from_bytes(data=data, mime_type=mime)],
                                      config=cfg)
        return details(r.usage_metadata)

    assert count(M3, wav_bytes(3.01), "audio/wav") == {"AUDIO": 4 * 32}
    assert count(M2, wav_bytes(2.0), "audio/wav") == {"AUDIO": 2 * 32}
    assert count(M3, mp4_bytes(12.5), "video/mp4") == {"VIDEO": 13 * 300}
    assert count(M3, mp4_bytes(12.5), "video/mp4", {"media_resolution": "MEDIA_RESOLUTION_LOW"}) == {"VIDEO": 1300}
    assert count(M2, mp4_bytes(12.5), "video/mp4", {"media_resolution": "MEDIA_RESOLUTION_LOW"}) == {"VIDEO": 3900}
    assert count(M2, b"not a video", "video/mp4") == {"VIDEO": 300}
    assert count(M2, pdf_bytes(3), "application/pdf") == {"DOCUMENT": 3 * 258}
    assert count(M3, pdf_bytes(3), "application/pdf") == {"DOCUMENT": 3 * 560}
    assert count(M2, b"x" * 41, "text/plain") == {"TEXT": 11}


def test_thinking_budget_tokens(c):
    for budget, expected in ((100, 64), (10, 10), (0, None)):
        r = c.models.generate_content(model=M2, contents=["hi"],
                                      config={"thinking_config": {"thinking_budget": budget}})
        u = r.usage_metadata
        assert u.thoughts_token_count == expected
        assert u.total_token_count == u.prompt_token_count + u.candidates_token_count + (expected or 0)


def test_count_tokens_matches_generate_and_is_unbilled(emu, c):
    parts = [img_part(image_bytes((5, 5, 5), (1000, 800))), "count me please"]
    n = c.models.count_tokens(model=M2, contents=parts).total_tokens
    assert emu.stats()["billed_requests"] == 0 and emu.stats()["requests"] == 0
    g = c.models.generate_content(model=M2, contents=parts)
    assert g.usage_metadata.prompt_token_count == n == 258 * 4 + 4


def test_tokens_module_rules():
    assert tk.model_family("gemini-3.1-flash-lite") == "3"
    assert tk.model_family("models/gemini-2.5-flash") == "2"
    assert tk.model_family("gemini-1.5-flash-8b") == "1.5"
    assert tk.model_family("gpt-4o") is None and tk.model_family("gemini-pro") is None
    assert tk.normalize_resolution({"level": "MEDIA_RESOLUTION_LOW"}) == "LOW"
    assert tk.normalize_resolution("MEDIA_RESOLUTION_UNSPECIFIED") is None
    assert tk.image_tokens("3", 10, 10, "ULTRA_HIGH") == 2240
    assert tk.audio_tokens(0.2) == 32 and tk.audio_tokens(1.0) == 32
    assert tk.video_tokens("3", None) == 300


# ------------------------------------------------------------------------------------------------
# MAX_TOKENS, blocks, faults
# ------------------------------------------------------------------------------------------------

def test_max_tokens_gives_parsed_none(emu, c):
    r = c.models.generate_content(model=M3, contents=[img_part(image_bytes((0, 0, 200))), "x"],
                                  config=types.GenerateContentConfig(response_mime_type="application/json",
                                                                     response_schema=Caption,
                                                                     max_output_tokens=5))
    assert r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert r.parsed is None
    assert len(r.text) == 20 and r.usage_metadata.candidates_token_count == 5
    assert emu.stats()["billed_requests"] == 1


def test_safety_and_prompt_block_shapes(emu, c):
    emu.set_config(faults=Faults(rate_safety=1.0))
    r = c.models.generate_content(model=M3, contents=["hello"], config={"response_mime_type": "application/json",
                                                                         "response_schema": Caption})
    assert r.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert r.candidates[0].content is None and r.parsed is None and r.text is None
    assert r.usage_metadata.prompt_token_count > 0 and not r.usage_metadata.candidates_token_count
    emu.set_config(faults=Faults(rate_prompt_block=1.0))
    r = c.models.generate_content(model=M3, contents=["hello"])
    assert not r.candidates and r.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    assert r.usage_metadata.prompt_token_count == 2
    s = emu.stats()
    assert s["billed_requests"] == 2 and s["candidates_tokens"] == 0
    assert s["faults"]["safety"] == 1 and s["faults"]["prompt_block"] == 1


@pytest.mark.parametrize("kind,exc,code", [
    ("429", errors.ClientError, 429), ("500", errors.ServerError, 500), ("503", errors.ServerError, 503)])
def test_http_faults(emu, c, kind, exc, code):
    emu.set_config(faults={kind: 1.0}, retry_delay_s=7)
    with pytest.raises(exc) as ei:
        c.models.generate_content(model=M3, contents=["x"])
    assert ei.value.code == code
    if code == 429:
        assert ei.value.status == "RESOURCE_EXHAUSTED"
        assert ei.value.response.headers["retry-after"] == "7"
        retry = [d for d in ei.value.details["error"]["details"] if d["@type"].endswith("RetryInfo")]
        assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    s = emu.stats()
    assert s["faults"][kind] == 1 and s["by_status"] == {str(code): 1}
    assert s["billed_requests"] == 0 and s["prompt_tokens"] == 0


def test_garbage_fault(emu, c):
    emu.set_config(faults={"rate_garbage": 1.0})
    with pytest.raises(json.JSONDecodeError):
        c.models.generate_content(model=M3, contents=["x"])
    assert emu.stats()["faults"]["garbage"] == 1 and emu.stats()["billed_requests"] == 0


def test_slow_fault_times_out(emu):
    emu.set_config(faults={"slow": 1.0}, slow_s=1.0)
    t = time.monotonic()
    impatient = client(emu.url, timeout_ms=300)  # keep a reference: a dropped Client closes its transport
    with pytest.raises(Exception) as ei:
        impatient.models.generate_content(model=M3, contents=["x"])
    assert not isinstance(ei.value, errors.APIError)
    assert "timeout" in type(ei.value).__name__.lower() or "timed out" in str(ei.value).lower()
    assert time.monotonic() - t < 1.0
    # and with a patient client the connection is closed without a response
    emu.set_config(slow_s=0.2)
    patient = client(emu.url, timeout_ms=3000)
    with pytest.raises(Exception) as ei:
        patient.models.generate_content(model=M3, contents=["x"])
    assert not isinstance(ei.value, (errors.APIError, json.JSONDecodeError))
    s = emu.stats()
    assert s["faults"]["slow"] == 2 and s["billed_requests"] == 0 and s["by_status"] == {}


def test_fault_rates_are_seeded_and_partial(emu, c):
    def run():
        emu.set_config(seed=42, faults={"503": 0.5})
        codes = []
        for _ in range(30):
            try:
                c.models.generate_content(model=M2, contents=["x"])
                codes.append(200)
            except errors.ServerError as e:
                codes.append(e.code)
        return codes

    a = run()
    b = run()
    assert a == b and 200 in a and 503 in a


def test_latency(emu, c):
    emu.set_config(latency_ms=(150, 200))
    t = time.monotonic()
    c.models.generate_content(model=M2, contents=["x"])
    assert 0.14 <= time.monotonic() - t < 1.0


def test_bad_key_unknown_model_and_bad_input(emu, c):
    with pytest.raises(errors.ClientError) as ei:
        bad = client(emu.url, key="invalid-key")
        bad.models.generate_content(model=M3, contents=["x"])
    assert ei.value.code == 400 and ei.value.status == "INVALID_ARGUMENT"
    assert ei.value.message == "API key not valid. Please pass a valid API key."
    assert ei.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    # no key at all (raw HTTP)
    req = urllib.request.Request(f"{emu.url}/v1beta/models/{M3}:generateContent", method="POST",
                                 data=b'{"contents":[{"parts":[{"text":"x"}]}]}')
    with pytest.raises(urllib.error.HTTPError) as he:
        urllib.request.urlopen(req)
    assert he.value.code == 400 and b"API_KEY_INVALID" in he.value.read()
    # ?key= works
    req = urllib.request.Request(f"{emu.url}/v1beta/models/{M3}:generateContent?key=abc", method="POST",
                                 data=b'{"contents":[{"parts":[{"text":"x"}]}]}')
    assert json.loads(urllib.request.urlopen(req).read())["candidates"]
    for model in ("gpt-4o", "gemini-pro", "gemini-9"):
        with pytest.raises(errors.ClientError) as ei:
            c.models.generate_content(model=model, contents=["x"])
        assert ei.value.code == 404 and ei.value.status == "NOT_FOUND"
    with pytest.raises(errors.ClientError) as ei:
        c.models.generate_content(model=M3, contents=[types.Part.from_bytes(data=b"PK..", mime_type="application/zip")])
    assert ei.value.code == 400
    emu.set_config(strict_media=True)
    with pytest.raises(errors.ClientError) as ei:
        c.models.generate_content(model=M3, contents=[types.Part.from_bytes(data=b"junk", mime_type="image/png")])
    assert ei.value.code == 400 and "Unable to process input image" in ei.value.message
    s = emu.stats()
    assert s["billed_requests"] == 1 and s["by_status"]["400"] == 4 and s["by_status"]["404"] == 3


def test_v1_path_and_models_get(emu):
    cl = client(emu.url, version="v1")
    r = cl.models.generate_content(model="gemini-2.0-flash-lite", contents=["x"])
    assert r.text
    cb = client(emu.url)
    assert cb.models.get(model=M3).name == f"models/{M3}"


def test_rpm_limit(emu, c):
    emu.set_config(rpm_limit=3, retry_delay_s=2)
    codes = []
    for _ in range(5):
        try:
            c.models.generate_content(model=M2, contents=["x"])
            codes.append(200)
        except errors.ClientError as e:
            codes.append(e.code)
            assert e.response.headers["retry-after"] == "2"
    assert codes == [200, 200, 200, 429, 429]
    s = emu.stats()
    assert s["rpm_limited"] == 2 and s["billed_requests"] == 3 and s["by_status"] == {"200": 3, "429": 2}


# ------------------------------------------------------------------------------------------------
# ledger, capture, concurrency
# ------------------------------------------------------------------------------------------------

def test_ledger_sums_and_media_hashes(emu, c):
    emu.set_config(capture_media=True)
    imgs = [image_bytes((i * 40, 10, 10)) for i in range(4)]
    resps = [c.models.generate_content(model=M3, contents=[img_part(b), "tag it"],
                                       config={"media_resolution": "MEDIA_RESOLUTION_LOW"}) for b in imgs]
    resps.append(c.models.generate_content(model=M3, contents=[img_part(imgs[0]), "again"],
                                           config={"media_resolution": "MEDIA_RESOLUTION_LOW"}))
    s = emu.stats()
    p, o = usage_sum(resps)
    assert s["requests"] == s["billed_requests"] == 5
    assert (s["prompt_tokens"], s["candidates_tokens"], s["thoughts_tokens"]) == (p, o, 0)
    assert s["tokens_by_modality"]["IMAGE"] == 5 * 280
    assert s["tokens_by_modality"]["TEXT"] + s["tokens_by_modality"]["IMAGE"] == p
    import hashlib

    h = [hashlib.sha256(b).hexdigest() for b in imgs]
    assert s["billed_by_media_hash"] == {h[0]: 2, h[1]: 1, h[2]: 1, h[3]: 1}
    assert [m for m, _ in emu.received_media()] == ["image/jpeg"] * 5
    assert emu.received_media()[0][1] == imgs[0]
    assert set(s) >= {"requests", "billed_requests", "prompt_tokens", "candidates_tokens", "thoughts_tokens",
                      "tokens_by_modality", "faults", "by_status", "uploads", "deletes", "files_stored",
                      "max_concurrency", "billed_by_media_hash"}
    emu.reset()
    assert emu.stats()["requests"] == 0 and emu.received_media() == []


def test_concurrency_sync_and_async(emu, c):
    # 1 s each: long enough for 64 threads to be started and overlapping even on a loaded machine
    emu.set_config(latency_ms=(1000, 1000))
    with cf.ThreadPoolExecutor(64) as ex:
        list(ex.map(lambda i: c.models.generate_content(model=M2, contents=[f"q{i}"]), range(64)))
    assert emu.stats()["max_concurrency"] >= 32

    emu.set_config(latency_ms=(500, 500))

    async def burst():
        return await asyncio.gather(*[c.aio.models.generate_content(model=M2, contents=[f"a{i}"])
                                      for i in range(100)])

    t = time.monotonic()
    rs = asyncio.run(burst())
    assert all(r.text for r in rs) and time.monotonic() - t < 4.0
    s = emu.stats()
    assert s["by_status"] == {"200": 164} and s["max_concurrency"] >= 80 and s["in_flight"] == 0


# ------------------------------------------------------------------------------------------------
# Files API, batches, control routes, CLI
# ------------------------------------------------------------------------------------------------

def test_files_api_upload_poll_use_delete(emu, c, tmp_path):
    p = tmp_path / "clip.wav"
    p.write_bytes(wav_bytes(5))
    f = c.files.upload(file=p, config={"mime_type": "audio/wav", "display_name": "clip"})
    assert f.name.startswith("files/") and f.state == types.FileState.PROCESSING
    assert f.uri.startswith(emu.url) and f.size_bytes == p.stat().st_size
    with pytest.raises(errors.ClientError) as ei:  # not ACTIVE yet
        c.models.generate_content(model=M3, contents=[types.Part.from_uri(file_uri=f.uri, mime_type="audio/wav")])
    assert ei.value.code == 400
    polls = 0
    while (f := c.files.get(name=f.name)).state != types.FileState.ACTIVE:
        polls += 1
        assert polls < 5
    assert polls == 1
    r = c.models.generate_content(model=M3, contents=[types.Part.from_uri(file_uri=f.uri, mime_type="audio/wav"),
                                                      "what"])
    assert details(r.usage_metadata)["AUDIO"] == 5 * 32 and "5-second" in r.text
    r2 = c.models.generate_content(model=M3, contents=[types.Part.from_uri(file_uri=f.name, mime_type="audio/wav")])
    assert details(r2.usage_metadata) == {"AUDIO": 160}
    assert [x.name for x in c.files.list()] == [f.name]
    s = emu.stats()
    assert s["uploads"] == 1 and s["files_stored"] == 1
    c.files.delete(name=f.name)
    s = emu.stats()
    assert s["deletes"] == 1 and s["files_stored"] == 0
    with pytest.raises(errors.ClientError) as ei:
        c.models.generate_content(model=M3, contents=[types.Part.from_uri(file_uri=f.uri, mime_type="audio/wav")])
    assert ei.value.code == 400
    assert list(c.files.list()) == []


def test_files_api_multi_chunk_upload(emu, c, tmp_path):
    """A file over the SDK's 8 MB chunk size goes up in two chunks."""
    p = tmp_path / "big.mp4"
    p.write_bytes(mp4_bytes(20) + b"\0" * (9 * 1024 * 1024))
    emu.set_config(file_processing_polls=0, capture_media=True)
    f = c.files.upload(file=str(p), config={"mime_type": "video/mp4"})
    assert f.state == types.FileState.ACTIVE
    r = c.models.count_tokens(model=M2, contents=[types.Part.from_uri(file_uri=f.uri, mime_type="video/mp4")])
    assert r.total_tokens == 20 * 300
    assert emu.received_media()[0][1] == p.read_bytes()


def test_batch_inline(emu, c):
    job = c.batches.create(model=M2, src=[
        {"contents": [{"parts": [{"text": "hello there"}], "role": "user"}],
         "config": {"response_mime_type": "application/json", "response_schema": Caption}},
        {"contents": [{"parts": [{"inline_data": {"data": image_bytes((0, 200, 0)), "mime_type": "image/jpeg"}},
                                 {"text": "x"}], "role": "user"}]},
    ], config={"display_name": "t"})
    assert job.name.startswith("batches/")
    states = []
    while (job := c.batches.get(name=job.name)).state != types.JobState.JOB_STATE_SUCCEEDED:
        states.append(job.state)
        assert len(states) < 5
    assert states == [types.JobState.JOB_STATE_RUNNING]
    rs = job.dest.inlined_responses
    assert Caption.model_validate_json(rs[0].response.text)
    assert "green" in rs[1].response.text and details(rs[1].response.usage_metadata)["IMAGE"] == 258
    s = emu.stats()
    assert s["batch"]["billed_requests"] == 2 and s["billed_requests"] == 0
    assert s["batch"]["prompt_tokens"] == sum(r.response.usage_metadata.prompt_token_count for r in rs)


def test_batch_cancel_then_delete_and_unknown_batches_are_404(emu, c):
    from google.genai import errors

    emu.set_config(batch_running_polls=5)  # still running when cancelled
    job = c.batches.create(model=M2, src=[{"contents": [{"parts": [{"text": "hi"}], "role": "user"}]}])
    c.batches.cancel(name=job.name)
    assert c.batches.get(name=job.name).state == types.JobState.JOB_STATE_CANCELLED
    c.batches.delete(name=job.name)
    for call in (lambda: c.batches.get(name=job.name), lambda: c.batches.delete(name=job.name),
                 lambda: c.batches.cancel(name="batches/nope")):
        with pytest.raises(errors.ClientError) as info:
            call()
        assert info.value.code == 404


def test_batch_from_jsonl_file(emu, c, tmp_path):
    import base64

    lines = [{"key": "a", "request": {"contents": [{"parts": [{"text": "hello"}]}]}},
             {"key": "b", "request": {"contents": [{"parts": [{"inline_data": {
                 "mime_type": "image/png", "data": base64.b64encode(image_bytes((250, 200, 0), (100, 100), "PNG")
                                                                    ).decode()}}]}]}}]
    p = tmp_path / "in.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines))
    f = c.files.upload(file=p, config={"mime_type": "jsonl"})
    job = c.batches.create(model=M2, src=f.name)
    while (job := c.batches.get(name=job.name)).state != types.JobState.JOB_STATE_SUCCEEDED:
        pass
    out = [json.loads(x) for x in c.files.download(file=job.dest.file_name).decode().splitlines()]
    assert [o["key"] for o in out] == ["a", "b"]
    assert "yellow" in out[1]["response"]["candidates"][0]["content"]["parts"][0]["text"]
    assert emu.stats()["batch"]["prompt_tokens"] == 2 + 258


def test_schema_tokens_count_the_wire_schema(emu, c):
    """responseSchema is counted as the SDK sends it: t_schema(...).model_dump(exclude_none=True, mode='json')."""
    from google.genai import _transformers as t

    wire = t.t_schema(c._api_client, Rich).model_dump(exclude_none=True, mode="json")
    assert "property_ordering" in wire  # snake_case inside a camelCase body
    r = c.models.generate_content(model=M2, contents=["abcd"], config={"response_mime_type": "application/json",
                                                                        "response_schema": Rich})
    expected = 1 + math.ceil(len(json.dumps(wire, separators=(",", ":"), sort_keys=True)) / 4)
    assert r.usage_metadata.prompt_token_count == expected


def test_http_control_routes(emu, c):
    def call(method, path, body=None):
        req = urllib.request.Request(emu.url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        return json.loads(urllib.request.urlopen(req).read())

    cfg = call("POST", "/_emulator/config", {"faults": {"rate_503": 1.0}, "latency_ms": [0, 1]})
    assert cfg["faults"]["rate_503"] == 1.0 and cfg["latency_ms"] == [0, 1]
    with pytest.raises(errors.ServerError):
        c.models.generate_content(model=M2, contents=["x"])
    st = call("GET", "/_emulator/stats")
    assert st["faults"]["503"] == 1 and st["requests"] == 1
    call("POST", "/_emulator/config", {"faults": {"rate_503": 0}})
    assert c.models.generate_content(model=M2, contents=["x"]).text
    call("POST", "/_emulator/reset", {})
    assert call("GET", "/_emulator/stats")["requests"] == 0


def test_cli_prints_url_and_serves_until_sigterm():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "enrich.emulator", "--port", "0", "--latency-ms", "0-1",
                             "--fault", "503=0.0", "--rpm", "1000", "--seed", "3"],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("EMULATOR_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        cl = client(url)
        r = cl.models.generate_content(model=M3, contents=["hi"])
        assert r.usage_metadata.prompt_token_count == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
