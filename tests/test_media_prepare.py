"""Preparing audio, video and documents (tasks/prepare_media.py through tasks/prepare.prepare_file):
what is sent, the limits, opt-in trimming, and the facts kept on refused items."""
from __future__ import annotations

import gc
import wave
from pathlib import Path


from enrich.errors import MediaError
from enrich.tasks.discover import discover
from enrich.tasks.media_info import MediaLimits
from enrich.tasks.prepare import PrepareOptions, PreparedItem, prepare_file
from tests.media_factory import make_mp3, make_mp4, make_pdf, make_text, make_wav


def discovered(path: Path):
    (file,) = list(discover([path], workers=1))
    assert file.status == "pending", file
    return file


def prepare(path: Path, **limits) -> PreparedItem | MediaError:
    return prepare_file(discovered(path), PrepareOptions(limits=MediaLimits(**limits)))


def test_audio_is_sent_from_its_file_with_header_facts(tmp_path):
    item = prepare(make_wav(tmp_path / "memo.wav", 12))
    assert isinstance(item, PreparedItem)
    (part,) = item.media
    assert part.path == Path(tmp_path / "memo.wav") and part.data is None and part.mime == "audio/wav"
    assert item.meta == {"duration_s": 12.0, "media_format": "pcm", "sample_rate": 8000, "channels": 1,
                         "trimmed": False}
    assert item.media_tokens_hint["kind"] == "audio" and item.media_tokens_hint["seconds"] == 12.0


def test_audio_over_the_limit_is_refused_with_its_duration_kept(tmp_path):
    err = prepare(make_wav(tmp_path / "long.wav", 90), max_audio_seconds=60)
    assert isinstance(err, MediaError) and err.kind == "too_long"
    assert "90 s" in str(err) and "60 s" in str(err)
    assert err.meta["duration_s"] == 90.0


def test_over_long_wav_is_trimmed_when_the_user_opts_in(tmp_path):
    item = prepare(make_wav(tmp_path / "long.wav", 90, rate=8000, sampwidth=2, channels=2),
                       max_audio_seconds=60, trim=True)
    assert isinstance(item, PreparedItem)
    (part,) = item.media
    assert part.path != tmp_path / "long.wav" and part.path.exists()
    with wave.open(str(part.path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 2, 2)
        assert w.getnframes() == 60 * 8000
    assert item.meta["duration_s"] == 90.0 and item.meta["trimmed"] is True
    assert item.media_tokens_hint["seconds"] == 60
    trimmed = part.path
    del item, part
    gc.collect()
    assert not trimmed.exists(), "the trimmed copy is deleted once the item is done"


def test_only_wav_can_be_trimmed(tmp_path):
    err = prepare(make_mp3(tmp_path / "long.mp3", 30), max_audio_seconds=10, trim=True)
    assert isinstance(err, MediaError) and err.kind == "too_long" and "only WAV" in str(err)


def test_video_limit(tmp_path):
    ok = prepare(make_mp4(tmp_path / "a.mp4", 20), max_video_seconds=30)
    assert isinstance(ok, PreparedItem) and ok.meta == {"duration_s": 20.0, "media_format": "mp4"}
    err = prepare(make_mp4(tmp_path / "b.mp4", 45), max_video_seconds=30)
    assert isinstance(err, MediaError) and err.kind == "too_long" and err.meta["duration_s"] == 45.0


def test_pdf_is_sent_without_its_information_dictionary_and_its_page_limit_holds(tmp_path):
    from pypdf import PdfReader

    item = prepare(make_pdf(tmp_path / "d.pdf", 4), max_pdf_pages=4)
    assert isinstance(item, PreparedItem)
    sent = item.media[0].path
    assert item.media[0].mime == "application/pdf" and sent != tmp_path / "d.pdf"
    assert PdfReader(tmp_path / "d.pdf").metadata["/Title"] == "Test document"
    assert PdfReader(sent).metadata is None and len(PdfReader(sent).pages) == 4
    assert item.meta == {"page_count": 4, "media_format": "pdf"}
    err = prepare(make_pdf(tmp_path / "e.pdf", 5), max_pdf_pages=4)
    assert isinstance(err, MediaError) and err.kind == "too_long" and err.meta["page_count"] == 5


def test_text_is_sent_as_utf8_text_and_capped(tmp_path):
    path = tmp_path / "old.txt"
    path.write_bytes("Grüße aus Köln. ".encode("cp1252") * 10)
    item = prepare(path)
    assert isinstance(item, PreparedItem)
    assert item.media[0].mime == "text/plain"
    assert item.media[0].data.decode("utf-8") == "Grüße aus Köln. " * 10
    assert item.media_tokens_hint == {"kind": "text", "chars": 160}
    err = prepare(make_text(tmp_path / "big.md", chars=5000), max_text_chars=1000)
    assert isinstance(err, MediaError) and err.kind == "too_long" and err.meta["char_count"] == 5000
    cut = prepare(make_text(tmp_path / "big2.md", chars=5000), max_text_chars=1000, trim=True)
    assert isinstance(cut, PreparedItem) and cut.media[0].mime == "text/markdown"
    assert len(cut.media[0].data.decode()) == 1000 and cut.meta["trimmed"] is True
    assert cut.media_tokens_hint == {"kind": "text", "chars": 1000}


def test_prepare_options_take_the_media_limits_from_settings(monkeypatch):
    from enrich.settings import load_settings

    monkeypatch.setenv("ENRICH_MAX_AUDIO_SECONDS", "42")
    monkeypatch.setenv("ENRICH_TRIM_LONG_MEDIA", "yes")
    options = PrepareOptions.from_settings(load_settings())
    assert options.limits.max_audio_seconds == 42 and options.limits.trim is True
    assert options.limits.max_pdf_pages == 100  # config/enrich.toml [media]
