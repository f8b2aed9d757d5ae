"""Incremental runs, end to end: real Prefect, the real SDK against the emulator, real Parquet and DuckDB.

What a rerun skips, what it copies, what it marks gone, and what it bills (the emulator's ledger)."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.media_factory import in_a_run, make_jpeg, make_photo_library, make_png
from enrich.warehouse.views import connect

pytestmark = pytest.mark.usefixtures("prefect_harness")

PROJECT_CONFIG = Path(__file__).resolve().parent.parent / "config"


def run_flow(roots, reprocess=None, **overrides):
    from tests.support.flows import run_enrich_flow

    return run_enrich_flow(roots, overrides, reprocess=reprocess)


def items(home: Path) -> list[tuple]:
    return connect(home / "warehouse").execute("SELECT * FROM items ORDER BY path").fetchall()


def q(home: Path, sql: str) -> list[tuple]:
    return connect(home / "warehouse").execute(sql).fetchall()


def small_library(root: Path, n: int = 4) -> Path:
    (root / "2024").mkdir(parents=True)
    for i in range(n):
        make_jpeg(root / "2024" / f"p{i}.jpg", size=(160, 120), color=(30 * i, 100, 200 - 20 * i))
    make_png(root / "screen.png", size=(120, 90))
    (root / "notes.json").write_text('{"not": "media"}')  # a sidecar: skipped, not media
    return root


def test_an_unchanged_library_bills_nothing_and_leaves_items_identical(tmp_path, gemini, enrich_home):
    root = tmp_path / "library"
    expected = in_a_run(make_photo_library(root))
    first = run_flow([root], chunk_size=4)
    billed = gemini.stats()
    before = items(enrich_home)
    assert first["items"] == len(expected) and billed["billed_requests"] > 0

    second = run_flow([root], chunk_size=4)

    assert gemini.stats()["billed_requests"] == billed["billed_requests"]
    assert gemini.stats()["requests"] == billed["requests"]  # not even a refused or retried call
    assert items(enrich_home) == before
    assert second["status"] == "finished"
    assert second["items"] == 0 and second["unchanged"] == len(expected)
    runs = q(enrich_home, "SELECT items, unchanged, status FROM runs ORDER BY started_at")
    assert runs == [(len(expected), 0, "finished"), (0, len(expected), "finished")]


def test_renaming_a_folder_bills_nothing_and_moves_the_rows(tmp_path, gemini, enrich_home):
    root = small_library(tmp_path / "library")
    run_flow([root])
    billed = gemini.stats()["billed_requests"]
    captions = dict(q(enrich_home, "SELECT replace(path, '/2024/', '/'), caption FROM items WHERE status = 'ok'"))

    (root / "2024").rename(root / "summer-2024")
    summary = run_flow([root])

    assert gemini.stats()["billed_requests"] == billed
    moved = q(enrich_home, "SELECT path, status, caption, cost_usd, input_tokens, reused_from FROM items "
                           "WHERE path LIKE '%/summer-2024/%' ORDER BY path")
    assert len(moved) == 4
    for path, status, caption, cost, tokens, reused_from in moved:
        assert status == "ok" and cost == 0 and tokens == 0
        assert reused_from == path.replace("/summer-2024/", "/2024/")
        assert caption == captions[path.replace("/summer-2024/", "/")]
    # the old paths left `items`; their history stays, ending in a `gone` row that says where they went
    assert q(enrich_home, "SELECT count(*) FROM items WHERE path LIKE '%/2024/%'") == [(0,)]
    gone = q(enrich_home, "SELECT path, error_kind, error FROM latest WHERE status = 'gone' ORDER BY path")
    assert [(Path(p).name, kind) for p, kind, _ in gone] == [(f"p{i}.jpg", "moved") for i in range(4)]
    assert gone[0][2] == "moved to " + str(root / "summer-2024" / "p0.jpg")
    assert summary["reused"] == 4 and summary["unchanged"] == 2  # screen.png, notes.json
    # and the sum of what was spent is still what the emulator billed once
    assert q(enrich_home, "SELECT count(*) FROM results WHERE cost_usd > 0") == [(billed,)]


def test_a_deleted_file_leaves_items_and_an_unreadable_root_removes_nothing(tmp_path, gemini, enrich_home):
    root = small_library(tmp_path / "library")
    run_flow([root])
    (root / "2024" / "p1.jpg").unlink()
    run_flow([root])
    assert q(enrich_home, "SELECT count(*) FROM items WHERE path LIKE '%/p1.jpg'") == [(0,)]
    assert q(enrich_home, "SELECT error_kind FROM latest WHERE path LIKE '%/p1.jpg'") == [("removed",)]
    kept = q(enrich_home, "SELECT count(*) FROM items WHERE status = 'ok'")

    root.rename(tmp_path / "unplugged")
    run_flow([root])  # the root is missing: one error row for it, and nothing under it is marked gone
    assert q(enrich_home, "SELECT count(*) FROM items WHERE status = 'ok'") == kept
    assert q(enrich_home, f"SELECT error_kind FROM items WHERE path = '{root}'") == [("not_found",)]


@pytest.mark.parametrize("chunk_size", [2, 100], ids=["copies-in-later-chunks", "copies-in-the-same-chunk"])
def test_exact_duplicates_in_one_run_are_sent_once(tmp_path, gemini, enrich_home, chunk_size):
    lib = tmp_path / "lib"
    lib.mkdir()
    make_jpeg(lib / "a.jpg", size=(160, 120))
    for name in ("b.jpg", "c.jpg", "d.jpg"):
        shutil.copy(lib / "a.jpg", lib / name)
    make_jpeg(lib / "other.jpg", size=(160, 120), color=(200, 10, 10))
    summary = run_flow([lib], chunk_size=chunk_size)

    assert gemini.stats()["billed_requests"] == 2
    rows = q(enrich_home, "SELECT path, status, cost_usd > 0, reused_from, caption FROM items ORDER BY path")
    assert [r[1] for r in rows] == ["ok"] * 5
    paid = {Path(r[0]).name for r in rows if r[2]}
    assert paid == {"a.jpg", "other.jpg"}
    for path, _, _, reused_from, caption in rows:
        if Path(path).name in ("b.jpg", "c.jpg", "d.jpg"):
            assert reused_from == str(lib / "a.jpg")
            assert caption == rows[0][4]
    assert summary["items"] == 5 and summary["reused"] == 3


def test_a_prompt_change_makes_rows_stale_and_reprocess_stale_redescribes_each_item_once(
        tmp_path, gemini, enrich_home, monkeypatch):
    root = small_library(tmp_path / "library")
    shutil.copy(root / "2024" / "p0.jpg", root / "copy-of-p0.jpg")
    config = tmp_path / "config"
    shutil.copytree(PROJECT_CONFIG, config)
    monkeypatch.setenv("ENRICH_CONFIG_DIR", str(config))
    run_flow([root])
    first = gemini.stats()["billed_by_media_hash"]
    old_version = q(enrich_home, "SELECT DISTINCT enrichment_version FROM items WHERE status = 'ok'")
    assert len(first) == 5 and set(first.values()) == {1}

    prompts = config / "prompts.toml"
    # the tests' default profile is `detailed` (tests/conftest.py), whose image prompt is [image]
    assert '"""Describe this photo."""' in prompts.read_text()
    prompts.write_text(prompts.read_text().replace('"""Describe this photo."""', '"""Describe this photo briefly."""'))
    run_flow([root])  # stale rows are kept by default: nothing is paid for again
    assert gemini.stats()["billed_by_media_hash"] == first

    summary = run_flow([root], reprocess=["stale"])
    again = gemini.stats()["billed_by_media_hash"]
    assert again == {h: 2 for h in first}  # every distinct content exactly once more
    versions = q(enrich_home, "SELECT DISTINCT enrichment_version, prompt_hash FROM items WHERE status = 'ok'")
    assert len(versions) == 1 and versions[0][0] != old_version[0][0]
    assert summary["reused"] == 1  # the copy of p0 rides on p0's new description

    run_flow([root], reprocess=["stale"])  # now nothing is stale
    assert gemini.stats()["billed_by_media_hash"] == again


def test_transient_failures_are_retried_by_default_and_final_ones_only_when_asked(tmp_path, gemini, enrich_home):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        make_jpeg(lib / f"p{i}.jpg", size=(160, 120), color=(60 * i, 20, 90))
    gemini.set_config(faults={"503": 1.0})
    run_flow([lib], max_attempts=1)
    assert q(enrich_home, "SELECT DISTINCT status, error_kind FROM items") == [("error", "http_503")]

    gemini.set_config(faults={"503": 0.0, "safety": 1.0})
    run_flow([lib])  # the 503s are retried without being asked; now they are blocked
    assert q(enrich_home, "SELECT DISTINCT status, error_kind FROM items") == [("blocked", "safety")]
    billed = gemini.stats()["billed_requests"]

    gemini.set_config(faults={"safety": 0.0})
    run_flow([lib])  # blocked is an answer about these bytes: not paid for again by default
    assert gemini.stats()["billed_requests"] == billed
    run_flow([lib], reprocess=["failed"])
    assert q(enrich_home, "SELECT DISTINCT status FROM items") == [("ok",)]
    assert gemini.stats()["billed_requests"] == billed + 3


def test_a_second_run_on_the_same_warehouse_refuses_with_a_clear_message(tmp_path, gemini, enrich_home):
    from enrich.warehouse.lock import WarehouseBusy, WarehouseLock

    lib = small_library(tmp_path / "lib")
    holder = WarehouseLock(enrich_home / "warehouse", "enrich run test-holder").acquire()
    try:
        with pytest.raises(WarehouseBusy) as err:
            run_flow([lib])
        assert "is in use" in str(err.value) and "test-holder" in str(err.value) and "--wait" in str(err.value)
        assert gemini.stats()["requests"] == 0
        # --wait queues behind the holder
        threading.Timer(1.0, holder.release).start()
        from enrich.flows.enrich_flow import enrich_flow

        summary = enrich_flow([str(lib)], {}, wait_for_lock=True)
        assert summary["status"] == "finished"
    finally:
        holder.release()


def test_a_run_left_running_by_a_dead_process_is_marked_crashed_with_its_committed_rows(
        tmp_path, gemini, enrich_home):
    from decimal import Decimal

    from enrich.warehouse.store import Warehouse

    lib = small_library(tmp_path / "lib")
    wh = Warehouse(enrich_home / "warehouse")
    wh.write_run({"run_id": "dead-run", "seq": 1, "status": "running", "items": 0,
                  "started_at": None, "spent_usd": Decimal(0)})
    wh.write_results([{"run_id": "dead-run", "path": "/elsewhere/x.jpg", "status": "ok",
                       "cost_usd": Decimal("0.0001"), "input_tokens": 100, "output_tokens": 20,
                       "thinking_tokens": 0}], "dead-run", 1)
    (wh.tmp_dir).mkdir(parents=True, exist_ok=True)
    (wh.tmp_dir / "part-dead-run-000002.parquet.abc.tmp").write_bytes(b"PAR1 half a file")
    summary = run_flow([lib])
    assert summary["crashed_runs_found"] == ["dead-run"]
    assert q(enrich_home, "SELECT status, items, ok, spent_usd FROM runs WHERE run_id = 'dead-run'") == [
        ("crashed", 1, 1, Decimal("0.0001"))]
    assert list(wh.tmp_dir.iterdir()) == []
