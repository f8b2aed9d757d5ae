"""Header-only probes of audio, video and documents (tasks/media_info.py): durations, pages and characters
from real (hand-built) files, clear errors for bad ones, and the token figures the estimator uses."""
from __future__ import annotations

import threading

import pytest

from enrich.errors import MediaError
from enrich.tasks import media_info
from enrich.tasks.media_info import (
    MediaLimits, apply_limits, audio_seconds, input_tokens_for, media_tokens, pdf_pages, probe, read_audio,
    read_pdf, read_text, read_video, text_chars, video_seconds,
)
from tests.media_factory import (
    make_cyclic_pdf, make_encrypted_pdf, make_flac, make_m4a, make_mp3, make_mp4, make_ogg_opus, make_pdf,
    make_raw_pdf, make_text, make_truncated_pdf, make_wav, make_webm,
)


@pytest.mark.parametrize("maker, mime, seconds, codec", [
    (lambda p: make_wav(p / "a.wav", 3.5), "audio/wav", 3.5, "pcm"),
    (lambda p: make_mp3(p / "a.mp3", 12), "audio/mp3", 11.9627, "mp3"),
    (lambda p: make_mp3(p / "bare.mp3", 5, id3=False), "audio/mp3", 4.9779, "mp3"),
    (lambda p: make_flac(p / "a.flac", 61.25), "audio/flac", 61.25, "flac"),
    (lambda p: make_ogg_opus(p / "a.opus", 9.5), "audio/ogg", 9.5, "opus"),
    (lambda p: make_m4a(p / "a.m4a", 20.2), "audio/mp4", 20.2, "mp4"),
])
def test_audio_duration_and_format_come_from_the_header(tmp_path, maker, mime, seconds, codec):
    path = maker(tmp_path)
    info = read_audio(path, mime)
    assert info["kind"] == "audio" and info["codec"] == codec
    assert info["seconds"] == pytest.approx(seconds, abs=1e-3)
    assert audio_seconds(path, mime) == info["seconds"]


def test_wav_header_gives_rate_and_channels(tmp_path):
    info = read_audio(make_wav(tmp_path / "s.wav", 2, rate=16000, sampwidth=2, channels=2), "audio/wav")
    assert (info["sample_rate"], info["channels"], info["seconds"]) == (16000, 2, 2.0)


@pytest.mark.parametrize("maker, mime, seconds, codec", [
    (lambda p: make_mp4(p / "a.mp4", 7.5), "video/mp4", 7.5, "mp4"),
    (lambda p: make_mp4(p / "a.mov", 95.25, quicktime=True), "video/quicktime", 95.25, "quicktime"),
    (lambda p: make_webm(p / "a.webm", 4.2), "video/webm", 4.2, "webm"),
    (lambda p: make_webm(p / "b.webm", 61.5, timecode_scale=1000), "video/webm", 61.5, "webm"),
])
def test_video_duration_comes_from_the_container_header(tmp_path, maker, mime, seconds, codec):
    path = maker(tmp_path)
    info = read_video(path, mime)
    assert info == {"kind": "video", "seconds": pytest.approx(seconds), "codec": codec}
    assert video_seconds(path, mime) == pytest.approx(seconds)


def test_webm_without_a_duration_is_a_named_error(tmp_path):
    path = make_webm(tmp_path / "live.webm", None)
    with pytest.raises(MediaError) as err:
        read_video(path, "video/webm")
    assert err.value.kind == "unknown_duration" and "duration" in str(err.value)
    assert video_seconds(path, "video/webm") is None


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("pages", [1, 3, 12])
def test_pdf_page_count(tmp_path, pages):
    path = make_pdf(tmp_path / "d.pdf", pages)
    assert read_pdf(path) == {"kind": "pdf", "pages": pages}
    assert pdf_pages(path) == pages


@pytest.mark.parametrize("maker, kind", [
    (lambda p: make_encrypted_pdf(p / "locked.pdf"), "encrypted"),
    (lambda p: make_truncated_pdf(p / "cut.pdf"), "truncated"),
    (lambda p: make_cyclic_pdf(p / "loop.pdf"), "corrupt"),
    (lambda p: make_raw_pdf(p / "noroot.pdf", [b"<< /Type /Foo >>"]), "corrupt"),
    (lambda p: make_raw_pdf(p / "nopages.pdf", [b"<< /Type /Catalog /Pages 2 0 R >>",
                                                b"<< /Type /Pages /Kids [] /Count 0 >>"]), "empty"),
    (lambda p: _write(p / "junk.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"), "corrupt"),
])
def test_bad_pdfs_are_named_errors_not_crashes(tmp_path, maker, kind):
    path = maker(tmp_path)
    with pytest.raises(MediaError) as err:
        read_pdf(path)
    assert err.value.kind == kind
    assert len(str(err.value)) > 15
    assert pdf_pages(path) is None


def test_an_owner_password_only_pdf_still_opens(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=100, height=100)
    writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    path = tmp_path / "restricted.pdf"
    with open(path, "wb") as fh:
        writer.write(fh)
    assert read_pdf(path)["pages"] == 1


def test_a_pdf_that_takes_too_long_is_given_up(tmp_path, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(media_info, "_pdf_page_count", lambda path: release.wait(30) and 1)
    try:
        with pytest.raises(MediaError) as err:
            read_pdf(make_pdf(tmp_path / "slow.pdf"), timeout_s=0.05)
        assert err.value.kind == "timeout"
    finally:
        release.set()


def test_a_pdf_over_the_size_limit_is_refused_before_parsing(tmp_path):
    with pytest.raises(MediaError) as err:
        read_pdf(make_pdf(tmp_path / "d.pdf", 2), max_bytes=100)
    assert err.value.kind == "too_large"


def test_text_is_counted_in_characters_not_bytes(tmp_path):
    path = make_text(tmp_path / "t.md", "# Café\n\nnaïve résumé – ok\n")
    assert text_chars(path) == len("# Café\n\nnaïve résumé – ok\n")
    text, total = read_text(path, max_chars=6)
    assert (text, total) == ("# Café", 26)


def test_legacy_8bit_text_is_decoded_as_cp1252(tmp_path):
    path = tmp_path / "old.txt"
    path.write_bytes("Grüße aus Köln\n".encode("cp1252"))
    assert read_text(path) == ("Grüße aus Köln\n", 15)


def test_probe_returns_none_for_unreadable_files(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    assert probe(junk, "audio", "audio/flac") is None
    assert probe(junk, "video", "video/mp4") is None
    assert probe(junk, "document", "application/pdf") is None
    assert probe(junk, "image", "image/jpeg") is None  # images: see tasks/prepare_image.read_image_meta


def test_limits_refuse_or_trim_with_a_reason():
    limits = MediaLimits(max_audio_seconds=60, max_video_seconds=30, max_pdf_pages=10, max_text_chars=100)
    with pytest.raises(MediaError) as err:
        apply_limits({"kind": "audio", "seconds": 61.0, "codec": "pcm"}, limits)
    assert err.value.kind == "too_long" and "61 s" in str(err.value) and "trim_long_media" in str(err.value)
    trim = MediaLimits(max_audio_seconds=60, max_text_chars=100, trim=True)
    assert apply_limits({"kind": "audio", "seconds": 600.0, "codec": "pcm"}, trim)["seconds"] == 60
    with pytest.raises(MediaError, match="only WAV can be trimmed"):
        apply_limits({"kind": "audio", "seconds": 600.0, "codec": "mp3"}, trim)
    assert apply_limits({"kind": "text", "chars": 5000}, trim) == {"kind": "text", "chars": 100, "trimmed": True}
    for info in ({"kind": "video", "seconds": 31.0}, {"kind": "pdf", "pages": 11}, {"kind": "text", "chars": 101}):
        with pytest.raises(MediaError) as err:
            apply_limits(info, limits)
        assert err.value.kind == "too_long"
    ok = {"kind": "pdf", "pages": 10}
    assert apply_limits(ok, limits) is ok


def test_media_tokens_follow_the_documented_rules():
    m = "gemini-3.1-flash-lite"
    assert media_tokens({"kind": "audio", "seconds": 10.2}, m, "low") == (32 * 11, 32 * 11)
    assert media_tokens({"kind": "audio", "seconds": 10.0}, m, "high") == (320, 320)
    # video: 100/s at low and 300/s above on Gemini 3; its soundtrack share (32/s) may be billed as audio
    assert media_tokens({"kind": "video", "seconds": 7.5}, m, "low") == (800, 256)
    assert media_tokens({"kind": "video", "seconds": 7.5}, m, "medium") == (2400, 256)
    assert media_tokens({"kind": "video", "seconds": 7.5}, "gemini-2.5-flash", "low") == (2400, 256)
    assert media_tokens({"kind": "pdf", "pages": 12}, m, "low") == (12 * 560, 0)
    assert media_tokens({"kind": "pdf", "pages": 12}, "gemini-2.5-flash-lite", "low") == (12 * 258, 0)
    assert media_tokens({"kind": "text", "chars": 1001}, m, "low") == (251, 0)
    assert media_tokens({"kind": "image", "width": 768, "height": 512}, m, "low") == (280, 0)


def test_input_tokens_add_prompt_and_schema_to_the_media(tmp_path):
    from enrich.tokens import prompt_tokens
    from enrich.schemas.descriptions import AudioDescription

    info = probe(make_wav(tmp_path / "a.wav", 30), "audio", "audio/wav")
    total, audio = input_tokens_for(info, "gemini-3.1-flash-lite", "low", "Describe.", AudioDescription)
    assert audio == 960
    assert total == 960 + prompt_tokens("Describe.", AudioDescription)
