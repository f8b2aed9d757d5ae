"""`enrich estimate`: header-only scans, token rules for what is really uploaded, history-based output
lengths, and accuracy against what the emulator bills for a real run."""
from __future__ import annotations

import json
import subprocess
import sys
import wave
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from enrich.flows.estimate import KIND_ESTIMATORS, estimate, format_estimate
from enrich.settings import RateLimit, load_settings
from enrich.tokens import prompt_tokens
from enrich.schemas.descriptions import ImageDescription
from tests.media_factory import make_jpeg, make_zero_byte
from tests.support.estimate_library import make_mixed_image_library, run_pipeline
from enrich.warehouse.store import Warehouse

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings(enrich_home):
    return load_settings()


def image_request_text_tokens(settings) -> int:
    return prompt_tokens(settings.prompt_for("image"), ImageDescription)


def make_wav(path: Path, seconds: float = 1.0) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * int(8000 * seconds))
    return path


def test_every_file_is_counted_once_by_what_the_run_would_do_with_it(tmp_path, settings, monkeypatch):
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    make_jpeg(lib / "a.jpg")
    make_jpeg(lib / "sub" / "b.jpg", size=(320, 240))
    make_zero_byte(lib / "empty.jpg")
    (lib / "notes.json").write_text("{}")
    make_wav(lib / "voice.wav")
    monkeypatch.delitem(KIND_ESTIMATORS, "audio")  # a kind nobody can estimate yet

    est = estimate([lib, lib / "sub"], settings)  # overlapping roots: each path once
    assert est.files == 5
    assert est.items == 2 and est.by_kind["image"].items == 2
    assert est.errors == {"empty": 1}
    assert est.skipped == 1
    assert est.not_estimated == {"audio": 1}  # reported, not silently dropped
    text = format_estimate(est)
    assert "not estimated" in text and "1 audio" in text and "1 empty" in text


def test_a_filter_leaves_files_out_and_says_how_many(tmp_path, settings):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        make_jpeg(tmp_path / name, size=(64, 48))
    est = estimate([tmp_path], settings, include=lambda f: not f.path.endswith("b.jpg"))
    assert est.items == 2 and est.excluded == 1


@pytest.mark.parametrize("resolution, tiles", [("low", 1), ("medium", 4), ("high", 6)])
def test_gemini_2_tiles_are_counted_on_the_downscaled_upload(tmp_path, settings, resolution, tiles):
    # 2000x1500 is uploaded at 500x375 (low: 1 tile), 1536x1152 (medium: 2x2), 2000x1500 (high: 3x2)
    make_jpeg(tmp_path / "big.jpg", size=(2000, 1500), orientation=6)
    est = estimate([tmp_path], settings, model="gemini-2.5-flash-lite", resolution=resolution)
    assert est.input_tokens == tiles * 258 + image_request_text_tokens(settings)


def test_gemini_3_images_cost_their_media_resolution(tmp_path, settings):
    make_jpeg(tmp_path / "a.jpg", size=(4000, 3000))
    for resolution, n in {"low": 280, "medium": 560, "high": 1120}.items():
        est = estimate([tmp_path], settings, model="gemini-3.1-flash-lite", resolution=resolution)
        assert est.input_tokens == n + image_request_text_tokens(settings)


def test_images_the_pipeline_refuses_are_not_billed(tmp_path, settings):
    make_jpeg(tmp_path / "ok.jpg", size=(100, 100))
    make_jpeg(tmp_path / "huge.jpg", size=(400, 300))
    est = estimate([tmp_path], settings.with_overrides(max_image_pixels=100_000))
    assert est.items == 1 and est.errors == {"too_large": 1}


def _history_rows(model: str, outputs: list[int], status: str = "ok") -> list[dict]:
    now = datetime.now(timezone.utc)
    return [{"run_id": "r0", "path": f"/old/{model}/{status}/{i}.jpg", "status": status, "kind": "image",
             "model": model, "output_tokens": n, "thinking_tokens": 0, "latency_ms": 800.0, "finished_at": now,
             "cost_usd": Decimal("0.0001")} for i, n in enumerate(outputs)]


def test_expected_output_comes_from_history_when_there_is_some_and_says_so(tmp_path, settings):
    (tmp_path / "lib").mkdir()
    make_jpeg(tmp_path / "lib" / "a.jpg", size=(64, 48))
    fresh = estimate([tmp_path / "lib"], settings)
    image = fresh.by_kind["image"]
    assert image.output_tokens_per_item == settings.expected_output_tokens["image"]
    assert image.output_source.startswith("default")
    assert fresh.latency_source.startswith("default")

    wh = Warehouse(settings.warehouse)
    wh.write_results(_history_rows("gemini-3.1-flash-lite", [100, 120, 301]), "r0", 1)
    wh.write_results(_history_rows("gemini-3.1-flash-lite", [5000], status="error"), "r0", 2)  # not ok: ignored
    wh.write_results(_history_rows("gemini-2.5-flash-lite", [900, 900]), "r0", 3)  # another model
    known = estimate([tmp_path / "lib"], settings)
    image = known.by_kind["image"]
    assert image.output_tokens_per_item == 120
    assert image.output_source == "history (median of 3 ok rows)"
    assert known.latency_s == pytest.approx(0.8) and known.latency_source.startswith("history")
    assert estimate([tmp_path / "lib"], settings, model="gemini-2.5-flash-lite").by_kind["image"] \
        .output_tokens_per_item == 900
    assert estimate([tmp_path / "lib"], settings, history=False).by_kind["image"].output_source.startswith("default")


def test_cost_uses_the_dated_price_table_and_batch_halves_it(tmp_path, settings):
    from enrich.pricing import load_prices

    make_jpeg(tmp_path / "a.jpg", size=(64, 48))
    sync = estimate([tmp_path], settings)
    price = load_prices(settings.config_dir).price(settings.model)
    k = sync.by_kind["image"]
    expected = (k.input_tokens * price.input + k.output_tokens * price.output) / Decimal(1_000_000)
    assert sync.cost_usd == expected
    assert sync.price_date == load_prices(settings.config_dir).date and sync.price_source
    batch = estimate([tmp_path], settings, mode="batch")
    assert batch.cost_usd == sync.cost_usd * price.batch_factor
    assert sync.worst_case_usd > sync.cost_usd


def test_time_comes_from_the_rate_limits_and_concurrency(tmp_path, settings):
    for i in range(6):
        make_jpeg(tmp_path / f"{i}.jpg", size=(64, 48))
    limited = settings.with_overrides(rate_limits={"default": RateLimit(rpm=2, tpm=10**9)}, model="gemini-3.8-flash")
    est = estimate([tmp_path], limited, history=False)
    assert est.time_bound == "rpm" and est.time_s == pytest.approx(6 * 60 / 2)
    slow = settings.with_overrides(rate_limits={"default": RateLimit(rpm=10**6, tpm=10**9)}, model="gemini-3.8-flash",
                                   concurrency=2, expected_latency_s=5.0)
    est = estimate([tmp_path], slow, history=False)
    assert est.time_bound == "concurrency" and est.time_s == pytest.approx(6 * 5.0 / 2)
    assert estimate([tmp_path], settings, mode="batch").time_s is None


def test_estimate_json_has_every_figure_and_never_imports_prefect(tmp_path):
    make_jpeg(tmp_path / "a.jpg", size=(64, 48))
    code = (
        "import sys, io, contextlib; from enrich.cli import main\n"
        "out = io.StringIO()\n"
        f"with contextlib.redirect_stdout(out): rc = main(['estimate', {str(tmp_path)!r}, '--json'])\n"
        "bad = [m for m in ('prefect',) if m in sys.modules]\n"
        "assert rc == 0 and not bad, bad\n"
        "print(out.getvalue())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "ENRICH_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    est = json.loads(proc.stdout)
    for key in ("items", "by_kind", "input_tokens", "output_tokens", "cost_usd", "price_date", "price_source",
                "time_s", "not_estimated", "worst_case_usd"):
        assert key in est
    assert est["items"] == 1 and est["by_kind"]["image"]["items"] == 1 and Decimal(est["cost_usd"]) > 0


def test_estimate_of_a_missing_path_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "enrich", "estimate", str(tmp_path / "nope")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("enrich: error: path not found")


@pytest.mark.parametrize("model", ["gemini-3.1-flash-lite", "gemini-2.5-flash-lite"])
@pytest.mark.parametrize("resolution", ["low", "medium", "high"])
def test_estimated_input_tokens_are_within_2_percent_of_what_a_run_is_billed(tmp_path, gemini, enrich_home,
                                                                             model, resolution):
    lib = tmp_path / "lib"
    make_mixed_image_library(lib)
    settings = load_settings().with_overrides(model=model, resolution=resolution)
    est = estimate([str(lib)], settings)
    ctx = run_pipeline([str(lib)], settings)
    billed = gemini.stats()
    assert billed["billed_requests"] == est.items == ctx.stats.by_status["ok"]
    error = abs(est.input_tokens - billed["prompt_tokens"]) / billed["prompt_tokens"]
    assert error <= 0.02, (est.input_tokens, billed["prompt_tokens"])


def test_quick_header_sizes_agree_with_pillow_for_every_format(tmp_path):
    from PIL import Image

    from enrich.tasks.prepare_image import read_image_size

    make_mixed_image_library(tmp_path, with_bad_files=False)
    Image.new("RGB", (1000, 10)).save(tmp_path / "progressive.jpg", "JPEG", progressive=True)
    Image.new("RGB", (999, 333)).save(tmp_path / "lossy.webp", "WEBP", quality=50)
    Image.new("RGBA", (777, 555)).save(tmp_path / "lossless.webp", "WEBP", lossless=True)
    for path in sorted(tmp_path.iterdir()):
        with Image.open(path) as img:
            assert read_image_size(path) == img.size, path.name
