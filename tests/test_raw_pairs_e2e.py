"""RAW files, RAW+JPEG pairs and companion files through the real flow: real Prefect, the real SDK against
the emulator, real Parquet and DuckDB. One model call per shot; companions skipped quietly."""
from __future__ import annotations

from pathlib import Path

import pytest

from enrich.warehouse.views import connect
from tests.formats_factory import make_cr2, make_raw_library
from tests.media_factory import make_jpeg, make_text_as_png, make_truncated_jpeg
from tests.support.flows import run_enrich_flow

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run_flow(roots, **settings):
    return run_enrich_flow(roots, settings)


def rows(home: Path, root: Path, columns: str) -> dict[str, tuple]:
    con = connect(home / "warehouse")
    return {Path(r[0]).relative_to(root).as_posix(): r[1:]
            for r in con.execute(f"SELECT path, {columns} FROM items").fetchall()}


@pytest.mark.parametrize("chunk_size", [250, 2])  # the JPEG in the RAW's chunk, and in an earlier one
def test_raw_jpeg_pairs_cost_one_model_call_and_companions_are_skipped(tmp_path, gemini, enrich_home, chunk_size):
    root = tmp_path / "shoot"
    expected = make_raw_library(root)
    summary = run_flow([root], chunk_size=chunk_size)
    assert summary["status"] == "finished"

    got = rows(enrich_home, root, "status, error_kind, reused_from, cost_usd, caption, mime, media_format, "
                                  "camera_make, input_tokens")
    assert sorted(got) == sorted(expected)  # one recorded outcome per file
    described = [name for name, outcome in expected.items() if outcome == "ok"]
    assert gemini.stats()["billed_requests"] == len(described)  # nothing sent for a RAW with a JPEG
    for name, outcome in expected.items():
        status, error_kind, reused_from, cost, caption, mime, fmt, make, tokens = got[name]
        if outcome == "companion":
            assert (status, error_kind) == ("skipped", "companion"), (name, got[name])
        elif outcome == "ok":
            assert status == "ok" and reused_from is None and cost > 0 and caption, (name, got[name])
        else:  # the RAW of a pair: the JPEG's description, cost 0, reused_from the JPEG
            jpeg = next(n for n in expected if n != name and Path(n).stem == Path(name).stem
                        and Path(n).suffix.lower() in (".jpg", ".jpeg"))
            assert status == "ok" and reused_from == str(root / jpeg), (name, got[name])
            assert cost == 0 and tokens == 0 and caption == got[jpeg][4]
            assert mime.startswith("image/x-") and fmt == Path(name).suffix[1:].lower()
    # the RAWs described alone went through their preview, and say which RAW format they are
    assert got["solo.nef"][5:7] == ("image/x-nikon-nef", "nef") and got["solo.nef"][7] == "NIKON CORPORATION"
    assert got["IMG_0003.CR3"][5:7] == ("image/x-canon-cr3", "cr3")
    assert summary["reused"] == 2


def test_pairs_across_runs_and_a_bad_jpeg(tmp_path, gemini, enrich_home):
    root = tmp_path / "shoot"
    root.mkdir()
    make_jpeg(root / "A.JPG", size=(300, 200))
    run_flow([root])
    assert gemini.stats()["billed_requests"] == 1
    # The RAW arrives later: it copies the JPEG described by the earlier run, no call.
    make_cr2(root / "A.CR2")
    # A RAW whose "JPEG" is not a JPEG at all: the RAW is described itself.
    make_cr2(root / "B.CR2")
    make_text_as_png(root / "B.jpg")
    # A JPEG that is sent for preparation but fails (in the RAW's chunk): the RAW is described after it.
    make_cr2(root / "D.CR2")
    make_truncated_jpeg(root / "D.JPG")
    summary = run_flow([root])
    got = rows(enrich_home, root, "status, error_kind, reused_from, cost_usd")
    assert got["A.CR2"][0] == "ok" and got["A.CR2"][2] == str(root / "A.JPG") and got["A.CR2"][3] == 0
    assert got["B.jpg"][:2] == ("error", "mislabelled")
    assert got["B.CR2"][0] == "ok" and got["B.CR2"][2] is None and got["B.CR2"][3] > 0
    assert got["D.JPG"][:2] == ("error", "truncated")
    assert got["D.CR2"][0] == "ok" and got["D.CR2"][2] is None and got["D.CR2"][3] > 0
    assert gemini.stats()["billed_requests"] == 3 and summary["reused"] == 1
    # unchanged: a third run sends and writes nothing
    third = run_flow([root])
    assert third["items"] == 0 and gemini.stats()["billed_requests"] == 3


def test_pairing_can_be_turned_off(tmp_path, gemini, enrich_home, monkeypatch):
    import enrich.tasks.incremental as incremental

    monkeypatch.setattr(incremental, "PAIR_RAW_WITH_JPEG", False)
    root = tmp_path / "shoot"
    root.mkdir()
    make_jpeg(root / "C.jpg", size=(300, 200))
    make_cr2(root / "C.CR2")
    run_flow([root])
    got = rows(enrich_home, root, "status, reused_from")
    assert got == {"C.jpg": ("ok", None), "C.CR2": ("ok", None)}
    assert gemini.stats()["billed_requests"] == 2
