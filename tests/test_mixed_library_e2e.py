"""Audio, documents and video through the real flow: real Prefect, the real SDK over HTTP to the emulator
(Files API included), real Parquet and DuckDB. One run of the mixed library is shared by the tests below."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.media_factory import make_mixed_library
from enrich.warehouse.views import connect

pytestmark = pytest.mark.usefixtures("prefect_harness")

INLINE_LIMIT = 100_000  # bytes: the 30 s and 10 min WAVs and the MP3 go through the Files API


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, emulator, prefect_harness):
    """Run the flow once over the mixed library; returns (root, expected, warehouse, emulator stats)."""
    from enrich.emulator import Faults
    from tests.support.flows import run_enrich_flow

    base = tmp_path_factory.mktemp("mixed")
    root = base / "library"
    expected = make_mixed_library(root)
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("ENRICH_HOME", str(base / "home"))
        mp.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
        mp.setenv("GEMINI_API_KEY", "test-key-123")
        emulator.reset()
        emulator.set_config(faults=Faults(), latency_ms=(0, 0), rpm_limit=None)
        summary = run_enrich_flow([root], {"chunk_size": 5, "max_inline_bytes": INLINE_LIMIT})
        stats = emulator.stats()
    finally:
        mp.undo()
    assert summary["status"] == "finished"
    return root, expected, base / "home" / "warehouse", stats


def _rows(root: Path, warehouse: Path, columns: str) -> dict[str, tuple]:
    con = connect(warehouse)
    return {Path(r[0]).relative_to(root).as_posix(): r[1:]
            for r in con.execute(f"SELECT path, {columns} FROM items").fetchall()}


def test_every_file_gets_one_row_with_its_kind_and_outcome(mixed_run):
    root, expected, warehouse, _ = mixed_run
    rows = _rows(root, warehouse, "kind, status, error_kind, error")
    assert sorted(rows) == sorted(expected)
    assert connect(warehouse).execute("SELECT count(*) FROM results").fetchone()[0] == len(expected)
    for name, (kind, outcome) in expected.items():
        got_kind, status, error_kind, error = rows[name]
        assert got_kind == kind, (name, rows[name])
        if outcome == "ok":
            assert status == "ok", (name, rows[name])
        else:
            assert (status, error_kind) == ("error", outcome), (name, rows[name])
            assert error and len(error) > 15, f"{name}: the error must say why, got {error!r}"


def test_each_kind_fills_its_own_typed_columns(mixed_run):
    root, _, warehouse, _ = mixed_run
    con = connect(warehouse)
    summary, transcript, speakers, sounds, duration, fmt, rate = con.execute(
        "SELECT summary, transcript, speakers_count, sounds, duration_s, media_format, sample_rate FROM items "
        "WHERE path LIKE '%/lecture-10min.wav'").fetchone()
    assert summary and isinstance(transcript, str) and isinstance(speakers, int) and isinstance(sounds, list)
    assert (duration, fmt, rate) == (600.0, "pcm", 8000)
    title, doc_type, entities, dates, pages = con.execute(
        "SELECT title, document_type, entities, dates, page_count FROM items WHERE path LIKE '%/report-12p.pdf'"
    ).fetchone()
    assert title and doc_type and isinstance(entities, list) and isinstance(dates, list) and pages == 12
    assert con.execute("SELECT char_count FROM items WHERE path LIKE '%/notes.txt'").fetchone() == (1500,)
    scenes, visible, video_s = con.execute(
        "SELECT scenes, visible_text, duration_s FROM items WHERE path LIKE '%/clip.mp4'").fetchone()
    assert isinstance(scenes, list) and isinstance(visible, str) and video_s == 7.5
    # image rows keep their own columns and leave the others empty
    assert con.execute("SELECT caption IS NOT NULL, summary IS NULL, duration_s IS NULL FROM items "
                       "WHERE path LIKE '%/beach.jpg'").fetchone() == (True, True, True)


def test_audio_and_document_tokens_equal_what_the_emulator_billed(mixed_run):
    root, expected, warehouse, stats = mixed_run
    con = connect(warehouse)
    n_ok, inp, audio, cost_audio = con.execute(
        "SELECT count(*) FILTER (status = 'ok'), sum(input_tokens), sum(input_audio_tokens), "
        "sum(cost_usd) FILTER (kind = 'audio') FROM items").fetchone()
    assert n_ok == sum(1 for _, outcome in expected.values() if outcome == "ok")
    assert stats["billed_requests"] == n_ok
    assert inp == stats["prompt_tokens"]
    # 1 s + 30 s + 600 s of WAV and a 12 s MP3 (11.96 s by its header), 32 tokens a second
    assert audio == stats["tokens_by_modality"]["AUDIO"] == 32 * (1 + 30 + 600 + 12)
    # PDFs of 1, 3 and 12 pages at 560 tokens a page (Gemini 3); the encrypted and truncated ones never sent
    assert stats["tokens_by_modality"]["DOCUMENT"] == 560 * (1 + 3 + 12)
    assert stats["tokens_by_modality"]["VIDEO"] == 100 * (8 + 5)  # 7.5 s and 4.2 s at low resolution
    assert cost_audio > 0


def test_audio_is_billed_at_the_audio_rate(mixed_run):
    from decimal import Decimal

    from enrich.pricing import PER_TOKEN, load_prices
    from enrich.settings import load_settings

    root, _, warehouse, _ = mixed_run
    price = load_prices(load_settings().config_dir).price("gemini-3.1-flash-lite")
    assert price.input_audio != price.input
    con = connect(warehouse)
    for inp, audio, out, cost in con.execute(
            "SELECT input_tokens, input_audio_tokens, output_tokens, cost_usd FROM items "
            "WHERE kind = 'audio' AND status = 'ok'").fetchall():
        assert audio > 0
        expected = ((inp - audio) * price.input + audio * price.input_audio + out * price.output) * PER_TOKEN
        assert cost == expected.quantize(Decimal("0.000000000001"))


def test_media_over_the_inline_limit_went_through_the_files_api_and_was_deleted(mixed_run):
    root, expected, _, stats = mixed_run
    big = [name for name, (kind, outcome) in expected.items()
           if outcome == "ok" and kind in ("audio", "video", "document") and not name.endswith((".txt", ".md"))
           and (root / name).stat().st_size > INLINE_LIMIT]
    assert sorted(big) == ["audio/call-30s.wav", "audio/lecture-10min.wav", "audio/song.mp3"]
    assert stats["uploads"] == len(big)
    assert stats["deletes"] == stats["uploads"]
    assert stats["files_stored"] == 0


def test_header_estimate_matches_billed_input_tokens_per_file(mixed_run):
    """What tasks/media_info.py predicts from headers alone (the estimator's figures) against the bill."""
    from enrich.settings import load_settings
    from enrich.schemas.descriptions import schema_for
    from enrich.tasks.media_info import input_tokens_for, probe
    from enrich.tasks.sniff import sniff

    root, expected, warehouse, _ = mixed_run
    settings = load_settings()
    rows = _rows(root, warehouse, "input_tokens, mime")
    predicted_total = billed_total = 0
    for name, (kind, outcome) in expected.items():
        if outcome != "ok" or kind == "image":
            continue
        billed, mime = rows[name]
        path = root / name
        assert sniff(path.read_bytes()[:1024], path.suffix)[1] == mime
        info = probe(path, kind, mime)
        assert info is not None, name
        predicted, _ = input_tokens_for(info, settings.model, settings.resolution, settings.prompt_for(kind),
                                        schema_for(kind))
        assert abs(predicted - billed) <= 0.02 * billed, (name, predicted, billed)
        predicted_total += predicted
        billed_total += billed
    assert abs(predicted_total - billed_total) <= 0.02 * billed_total


def test_enrich_estimate_counts_seconds_pages_and_matches_the_bill_within_2_percent(mixed_run, monkeypatch):
    from enrich.flows.estimate import estimate
    from enrich.settings import load_settings

    root, expected, warehouse, stats = mixed_run
    monkeypatch.setenv("ENRICH_MAX_INLINE_BYTES", str(INLINE_LIMIT))
    est = estimate([root], load_settings(), history=False)
    for kind in ("image", "audio", "document", "video"):
        want = sum(1 for k, outcome in expected.values() if k == kind and outcome == "ok")
        assert est.by_kind[kind].items == want, (kind, est.by_kind[kind].items, want)
    assert est.by_kind["audio"].audio_tokens == stats["tokens_by_modality"]["AUDIO"]
    billed = stats["prompt_tokens"]
    assert abs(est.input_tokens - billed) <= 0.02 * billed, (est.input_tokens, billed)


def test_over_long_audio_is_refused_with_its_duration_or_trimmed_on_request(tmp_path, gemini, enrich_home):
    from tests.support.flows import run_enrich_flow
    from tests.media_factory import make_mp3, make_wav

    lib = tmp_path / "lib"
    lib.mkdir()
    make_wav(lib / "long.wav", 70)
    make_mp3(lib / "long.mp3", 70)
    run_enrich_flow([lib], {"max_audio_seconds": 60})
    refused = connect(enrich_home / "warehouse").execute(
        "SELECT status, error_kind, duration_s, error FROM items ORDER BY path").fetchall()
    assert [r[:2] for r in refused] == [("error", "too_long")] * 2
    assert refused[1][2] == 70.0 and "70 s" in refused[1][3]
    assert gemini.stats()["requests"] == 0

    run_enrich_flow([lib], {"max_audio_seconds": 60, "trim_long_media": True, "warehouse": str(tmp_path / "wh2")})
    rows = {Path(r[0]).name: r[1:] for r in connect(tmp_path / "wh2").execute(
        "SELECT path, status, error_kind, trimmed, duration_s, input_audio_tokens FROM items").fetchall()}
    assert rows["long.wav"] == ("ok", None, True, 70.0, 60 * 32)
    assert rows["long.mp3"][:2] == ("error", "too_long")
    assert gemini.stats()["tokens_by_modality"]["AUDIO"] == 60 * 32
