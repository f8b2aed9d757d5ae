"""The whole flow, end to end: real Prefect, the real SDK over HTTP to the emulator, real Parquet and DuckDB."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from enrich.settings import RESOLUTION_MAX_SIDE
from tests.media_factory import in_a_run, make_photo_library
from enrich.warehouse.views import connect

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run_flow(roots, **overrides):
    from tests.support.flows import run_enrich_flow

    return run_enrich_flow(roots, overrides)


@pytest.fixture
def library(tmp_path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "library"
    return root, in_a_run(make_photo_library(root))


def test_every_file_ends_in_exactly_one_row_with_a_readable_outcome(library, gemini, enrich_home):
    root, expected = library
    summary = run_flow([root], chunk_size=4)
    assert summary["status"] == "finished"
    con = connect(enrich_home / "warehouse")
    rows = {Path(p).relative_to(root).as_posix(): (status, kind, err)
            for p, status, kind, err in con.execute("SELECT path, status, error_kind, error FROM items").fetchall()}
    assert sorted(rows) == sorted(expected)
    assert con.execute("SELECT count(*) FROM results").fetchone()[0] == len(expected)
    for name, want in expected.items():
        status, kind, err = rows[name]
        if want == "ok":
            assert status == "ok", (name, rows[name])
        elif want == "skipped":
            assert status == "skipped", (name, rows[name])
        else:
            assert status == "error" and kind == want, (name, rows[name])
            assert err and len(err) > 10, f"{name}: error must be readable, got {err!r}"
    assert summary["items"] == len(expected)


def test_billed_tokens_in_the_warehouse_equal_what_the_emulator_billed(library, gemini, enrich_home):
    root, expected = library
    run_flow([root])
    billed = gemini.stats()
    con = connect(enrich_home / "warehouse")
    inp, out, n_ok, cost = con.execute(
        "SELECT sum(input_tokens), sum(output_tokens + thinking_tokens), count(*) FILTER (status = 'ok'), "
        "sum(cost_usd) FROM items").fetchone()
    assert n_ok == sum(1 for v in expected.values() if v == "ok")
    assert billed["billed_requests"] == n_ok
    assert inp == billed["prompt_tokens"]
    assert out == billed["candidates_tokens"] + billed["thoughts_tokens"]
    assert cost > 0


def test_descriptions_are_typed_columns_and_metadata_is_extracted(library, gemini, enrich_home):
    root, _ = library
    run_flow([root])
    con = connect(enrich_home / "warehouse")
    caption, tags, people, setting, lat, lon, make, width, height = con.execute(
        "SELECT caption, tags, people_count, setting, gps_lat, gps_lon, camera_make, width, height "
        "FROM items WHERE path LIKE '%/photo.jpg'").fetchone()
    assert isinstance(caption, str) and caption
    assert isinstance(tags, list)
    assert isinstance(people, int)
    assert setting in {"indoor", "outdoor", "mixed", "unknown"}
    assert lat is not None and lon is not None and make
    assert (width, height) == (640, 480)
    # EXIF orientation 6: a 640x480 sensor image is a 480x640 picture
    assert con.execute("SELECT width, height FROM items WHERE path LIKE '%/rotated.jpg'").fetchone() == (480, 640)


def test_uploaded_bytes_carry_no_exif_or_gps(library, gemini, enrich_home):
    root, _ = library
    run_flow([root])
    media = gemini.received_media()
    assert media, "the emulator received no media"
    for mime, data in media:
        assert mime == "image/jpeg"
        assert b"Exif\x00\x00" not in data and b"GPS" not in data
        img = Image.open(io.BytesIO(data))
        assert len(img.getexif()) == 0
        assert max(img.size) <= RESOLUTION_MAX_SIDE["low"]


def test_keep_metadata_is_an_explicit_opt_in(tmp_path, gemini, enrich_home):
    from tests.media_factory import make_jpeg

    (tmp_path / "lib").mkdir()
    make_jpeg(tmp_path / "lib" / "gps.jpg")
    run_flow([tmp_path / "lib"], strip_metadata=False)
    (mime, data), = gemini.received_media()
    assert b"Exif\x00\x00" in data


def test_safety_block_and_prompt_block_are_named_outcomes(tmp_path, gemini, enrich_home):
    from tests.media_factory import make_jpeg

    (tmp_path / "lib").mkdir()
    for i in range(3):
        make_jpeg(tmp_path / "lib" / f"p{i}.jpg", color=(40 * i, 90, 200))
    gemini.set_config(faults={"safety": 1.0})
    run_flow([tmp_path / "lib"])
    gemini.set_config(faults={"safety": 0.0, "prompt_block": 1.0})
    run_flow([tmp_path / "lib"], warehouse=str(enrich_home / "wh2"))
    a = connect(enrich_home / "warehouse").execute("SELECT DISTINCT status, error_kind FROM items").fetchall()
    b = connect(enrich_home / "wh2").execute("SELECT DISTINCT status, error_kind FROM items").fetchall()
    assert a == [("blocked", "safety")]
    assert b == [("blocked", "prompt_blocked")]
    # blocked requests are billed for their input: the warehouse must say so too
    assert connect(enrich_home / "wh2").execute("SELECT min(input_tokens) FROM items").fetchone()[0] > 0


def test_truncated_output_is_recorded_as_max_tokens(tmp_path, gemini, enrich_home):
    from tests.media_factory import make_jpeg

    (tmp_path / "lib").mkdir()
    make_jpeg(tmp_path / "lib" / "a.jpg")
    run_flow([tmp_path / "lib"], max_output_tokens=8)
    status, kind, raw = connect(enrich_home / "warehouse").execute(
        "SELECT status, error_kind, raw_text FROM items").fetchone()
    assert (status, kind) == ("error", "max_tokens") and raw
