"""What actually reaches the provider from a library of tagged audio, video and PDFs: real Prefect, the real
SDK over HTTP to the emulator (inline parts and the Files API), real Parquet and DuckDB."""
from __future__ import annotations

from pathlib import Path

import pytest

from enrich.tasks.strip_metadata import media_temp_dir
from tests.media_factory import (
    PERSONAL_STRINGS, make_flac, make_m4a, make_mp3, make_mp4, make_ogg_opus, make_pdf, make_wav, make_webm,
)
from enrich.warehouse.views import connect

pytestmark = pytest.mark.usefixtures("prefect_harness")

INLINE_LIMIT = 10_000  # bytes: the MP3 (80 KB) and the WAV (40 KB) go through the Files API


def tagged_library(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True)
    files = {
        "song.mp3": make_mp3(root / "song.mp3", 5, personal=True),
        "song.flac": make_flac(root / "song.flac", 5, personal=True),
        "memo.opus": make_ogg_opus(root / "memo.opus", 5, personal=True),
        "memo.wav": make_wav(root / "memo.wav", 5, personal=True),
        "voice.m4a": make_m4a(root / "voice.m4a", 5, personal=True),
        "clip.mp4": make_mp4(root / "clip.mp4", 5, personal=True),
        "clip.mov": make_mp4(root / "clip.mov", 5, quicktime=True, personal=True),
        "screen.webm": make_webm(root / "screen.webm", 5, personal=True),
        "scan.pdf": make_pdf(root / "scan.pdf", 3, personal=True),
    }
    for name, path in files.items():
        assert any(s.encode() in path.read_bytes() for s in PERSONAL_STRINGS), name
    return files


def run(root: Path, **overrides) -> dict:
    from tests.support.flows import run_enrich_flow

    return run_enrich_flow([root], {"chunk_size": 4, "max_inline_bytes": INLINE_LIMIT, **overrides})


def test_no_personal_metadata_reaches_the_provider_and_tokens_still_match(tmp_path, gemini, enrich_home):
    from enrich.settings import load_settings
    from enrich.schemas.descriptions import schema_for
    from enrich.tasks.media_info import input_tokens_for, probe

    files = tagged_library(tmp_path / "lib")
    temp_before = set(media_temp_dir().iterdir())
    assert run(tmp_path / "lib")["status"] == "finished"

    rows = {Path(r[0]).name: r[1:] for r in connect(enrich_home / "warehouse").execute(
        "SELECT path, status, error, input_tokens, kind, mime FROM items").fetchall()}
    assert {name: row[0] for name, row in rows.items()} == {name: "ok" for name in files}, rows
    received = gemini.received_media()
    assert len(received) == len(files) and gemini.stats()["uploads"] == 2
    for mime, data in received:
        assert [s for s in PERSONAL_STRINGS if s.encode() in data] == [], mime
    originals = {p.read_bytes() for p in files.values()}
    assert not originals & {data for _, data in received}, "no original file was sent"

    # the emulator bills from what it received: the stripped copies still state the same durations and pages
    settings = load_settings()
    for name, (status, error, billed, kind, mime) in rows.items():
        info = probe(files[name], kind, mime)
        predicted, _ = input_tokens_for(info, settings.model, settings.resolution, settings.prompt_for(kind),
                                        schema_for(kind))
        assert abs(predicted - billed) <= 0.02 * billed, (name, predicted, billed)

    assert set(media_temp_dir().iterdir()) == temp_before, "every temporary copy is deleted after the run"


def test_keep_metadata_sends_the_original_files(tmp_path, gemini, enrich_home):
    files = tagged_library(tmp_path / "lib")
    assert run(tmp_path / "lib", strip_metadata=False)["status"] == "finished"
    received = sorted(data for _, data in gemini.received_media())
    assert received == sorted(p.read_bytes() for p in files.values())


def test_copies_are_deleted_when_the_requests_fail(tmp_path, gemini, enrich_home):
    tagged_library(tmp_path / "lib")
    temp_before = set(media_temp_dir().iterdir())
    gemini.set_config(faults={"500": 1.0})
    run(tmp_path / "lib", max_attempts=1)
    statuses = connect(enrich_home / "warehouse").execute("SELECT DISTINCT status FROM items").fetchall()
    assert statuses == [("error",)]
    # A failed request's traceback holds its item in a reference cycle: without an explicit
    # PreparedItem.release() after the chunk's rows are written, the copies wait for the cyclic GC (or exit).
    import gc

    gc.collect()
    assert set(media_temp_dir().iterdir()) == temp_before
