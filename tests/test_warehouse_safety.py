"""The warehouse's safety parts without a run: the writer lock, compaction, the hash cache, the version key,
and the `runs` / `compact` commands."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrich.warehouse.compact import compact, remove_replaced
from enrich.warehouse.lock import WarehouseBusy, WarehouseLock, is_locked
from enrich.warehouse.store import Warehouse
from enrich.warehouse.views import connect, read_snapshot

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def enrich(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enrich", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


# --------------------------------------------------------------------------------------------------
# the lock

HOLD = "import sys, time; from warehouse.lock import WarehouseLock; WarehouseLock(sys.argv[1], 'holder-x').acquire(); " \
       "print('held', flush=True); time.sleep(60)"


def hold_in_subprocess(root: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_refuses_with_the_holder_named_and_a_kill_releases_the_lock(tmp_path):
    proc = hold_in_subprocess(tmp_path)
    try:
        assert is_locked(tmp_path)
        started = time.monotonic()
        with pytest.raises(WarehouseBusy) as err:
            WarehouseLock(tmp_path).acquire()
        assert f"pid {proc.pid}" in str(err.value) and "holder-x" in str(err.value) and "--wait" in str(err.value)
        assert time.monotonic() - started < 30  # it refuses, it does not hang
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not is_locked(tmp_path)  # the kernel dropped the dead holder's lock: no stale-lock cleanup needed
    with WarehouseLock(tmp_path):
        assert is_locked(tmp_path)


def test_wait_queues_behind_the_holder(tmp_path):
    first = WarehouseLock(tmp_path).acquire()
    threading.Timer(0.5, first.release).start()
    second = WarehouseLock(tmp_path).acquire(wait=True)
    assert second.held and not first.held
    second.release()
    first2 = WarehouseLock(tmp_path).acquire()
    with pytest.raises(WarehouseBusy, match="gave up after waiting 0.3 s"):
        WarehouseLock(tmp_path).acquire(wait=0.3)
    first2.release()


# --------------------------------------------------------------------------------------------------
# compaction


def result(run: str, path: str, i: int, **extra) -> dict:
    row = {"run_id": run, "path": path, "status": "ok", "content_hash": f"h{i % 7}", "cost_usd": Decimal(i) / 10**6,
           "input_tokens": 100 + i, "tags": ["a", str(i)], "finished_at": T0 + timedelta(seconds=i),
           "caption": f"caption {i}", "taken_at": datetime(2020, 1, 1, 12, 0, i % 60)}
    row.update(extra)
    return row


def small_warehouse(root: Path, runs: int = 4, chunks: int = 5, rows: int = 3) -> Warehouse:
    wh = Warehouse(root)
    i = 0
    for r in range(runs):
        run_id = f"run{r}"
        wh.write_run({"run_id": run_id, "seq": 1, "status": "running", "started_at": T0})
        for c in range(chunks):
            batch = []
            for k in range(rows):
                i += 1
                batch.append(result(run_id, f"/lib/{c}/{k}.jpg", i))  # each run rewrites the same paths
            wh.write_results(batch, run_id, c + 1)
        wh.write_run({"run_id": run_id, "seq": 2, "status": "finished", "started_at": T0, "items": chunks * rows,
                      "spent_usd": Decimal("0.01")})
    # a part written before `reused_from` existed: fewer columns
    old = pa.table({"run_id": ["run-old"], "path": ["/lib/old.jpg"], "status": ["ok"],
                    "cost_usd": pa.array([Decimal("0.000001")], pa.decimal128(22, 12)),
                    "finished_at": pa.array([T0], pa.timestamp("us", tz="UTC"))})
    pq.write_table(old, wh.results_dir / "part-run-old-000001.parquet")
    return wh


QUERIES = {
    "items": "SELECT * FROM items ORDER BY path",
    "results": "SELECT * FROM results ORDER BY run_id, path",
    "runs": "SELECT * FROM runs ORDER BY run_id",
    "runs_all": "SELECT * FROM runs_all ORDER BY run_id, seq",
    "totals": "SELECT count(*), sum(cost_usd), sum(input_tokens) FROM results",
}


def answers(root: Path) -> dict:
    return read_snapshot(root, lambda con: {k: con.execute(sql).fetchall() for k, sql in QUERIES.items()})


def test_compact_merges_small_parts_and_every_query_returns_the_same_rows(tmp_path):
    wh = small_warehouse(tmp_path)
    before = answers(tmp_path)
    assert len(wh.result_files()) == 21 and len(wh.run_files()) == 8

    report = compact(wh)

    assert answers(tmp_path) == before
    assert len(wh.result_files()) == 1 and len(wh.run_files()) == 1
    assert sorted(p.name for p in wh.results_dir.iterdir())[0].startswith("compact-")
    assert report.merged == {"results": 21, "runs": 8}
    assert compact(wh).merged == {"results": 0, "runs": 0}  # nothing small left to merge


def test_a_compaction_killed_between_publish_and_delete_shows_no_duplicates_and_is_finished_later(tmp_path):
    wh = small_warehouse(tmp_path)
    before = answers(tmp_path)
    saved = tmp_path.parent / "saved-parts"
    shutil.copytree(wh.results_dir, saved)
    compact(wh)
    for part in saved.iterdir():  # as if the kill came right after the merged part was published
        shutil.copy(part, wh.results_dir / part.name)
    assert len(list(wh.results_dir.glob("*.parquet"))) == 22

    assert answers(tmp_path) == before  # the replaced parts are not read
    assert remove_replaced(wh) == 21  # what the next run or compaction does first
    assert len(list(wh.results_dir.glob("*.parquet"))) == 1
    assert answers(tmp_path) == before


def test_readers_during_repeated_compactions_always_see_every_row_once(tmp_path):
    wh = small_warehouse(tmp_path, runs=6, chunks=8, rows=2)
    expected = answers(tmp_path)
    stop = threading.Event()
    seen: list[bool] = []
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(answers(tmp_path) == expected)
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for target in (4, 9, 20, 50, 1000):  # merges of merges: compacted parts get replaced too
            compact(wh, target_rows=target)
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert errors == [] and seen and all(seen), (errors[:2], seen.count(False))
    assert len(wh.result_files()) == 1


def test_compact_command_reports_and_waits_its_turn_behind_a_run(tmp_path):
    small_warehouse(tmp_path)
    proc = hold_in_subprocess(tmp_path)
    try:
        busy = enrich("compact", "--warehouse", str(tmp_path))
        assert busy.returncode == 2 and "is in use" in busy.stderr and "holder-x" in busy.stderr
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = enrich("compact", "--warehouse", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "results: 21 parts -> 1 (21 merged into 1)" in done.stdout


# --------------------------------------------------------------------------------------------------
# `enrich runs`


def test_runs_lists_status_items_and_spend_and_flags_a_dead_running_run(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write_run({"run_id": "r1", "seq": 1, "status": "running", "started_at": T0})
    wh.write_run({"run_id": "r1", "seq": 2, "status": "finished", "started_at": T0, "finished_at": T0 + timedelta(minutes=3),
                  "items": 10, "unchanged": 5, "ok": 9, "errors": 1, "spent_usd": Decimal("0.0123")})
    wh.write_run({"run_id": "r2", "seq": 1, "status": "running", "started_at": T0 + timedelta(hours=1), "items": 2})
    code = (
        "import sys; from enrich.cli import main\n"
        f"rc = main(['runs', '--warehouse', {str(tmp_path)!r}, '--format', 'json'])\n"
        "assert rc == 0 and 'prefect' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    assert [(r["run_id"], r["status"], r["items"]) for r in runs] == [("r2", "crashed*", 2), ("r1", "finished", 10)]
    assert runs[1]["spent_usd"] == 0.0123 and runs[1]["unchanged"] == 5 and runs[1]["duration"] == "0:03:00"
    holder = WarehouseLock(tmp_path).acquire()  # now a live writer holds it: it may really be running
    try:
        table = enrich("runs", "--warehouse", str(tmp_path)).stdout
    finally:
        holder.release()
    assert "running" in table and "crashed*" not in table and "spent in these runs: $0.0123" in table


# --------------------------------------------------------------------------------------------------
# the hash cache


def test_the_hash_cache_trusts_path_size_and_mtime_and_rehashes_when_they_change(tmp_path):
    from enrich.tasks.discover import discover, hash_file
    from enrich.tasks.hash_cache import HashCache
    from tests.media_factory import make_jpeg

    (tmp_path / "lib").mkdir()
    photo = make_jpeg(tmp_path / "lib" / "a.jpg")
    cache = HashCache(tmp_path / "cache.sqlite")
    (first,) = discover([tmp_path / "lib"], hash_cache=cache)
    assert first.content_hash == hash_file(photo) and cache.misses == 1

    st = photo.stat()
    data = bytearray(photo.read_bytes())
    data[-10] ^= 0xFF  # same size, other bytes, mtime put back: only a cache would miss this
    photo.write_bytes(bytes(data))
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))
    (second,) = discover([tmp_path / "lib"], hash_cache=cache)
    assert second.content_hash == first.content_hash and cache.hits == 1  # not read again

    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    (third,) = discover([tmp_path / "lib"], hash_cache=cache)
    assert third.content_hash == hash_file(photo) != first.content_hash
    cache.close()


def test_the_hash_cache_survives_a_kill_mid_write_keeping_what_was_flushed(tmp_path):
    db = tmp_path / "cache.sqlite"
    code = (
        "import os, sys; from tasks.hash_cache import HashCache\n"
        f"c = HashCache({str(db)!r})\n"
        "for i in range(1200): c.put(f'/p/{i}', i, i, f'h{i}')\n"  # flushes at 500 and 1000
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    from enrich.tasks.hash_cache import HashCache

    with HashCache(db) as cache:
        assert cache._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert cache._db.execute("SELECT count(*) FROM hashes").fetchone() == (1000,)
        assert cache.get("/p/999", 999, 999) == "h999" and cache.get("/p/1100", 1100, 1100) is None


# --------------------------------------------------------------------------------------------------
# the version key


def test_the_enrichment_version_is_pinned_and_changes_with_each_part():
    from enrich.tasks.records import enrichment_version

    base = ("gemini-3.1-flash-lite", "0123456789abcdef", "fedcba9876543210", "low")
    # a change here would make every description in every warehouse stale at once
    assert enrichment_version(*base) == "4b242245cc35149f"
    variants = {enrichment_version(*(base[:i] + ("other",) + base[i + 1:])) for i in range(4)}
    assert len(variants) == 4 and enrichment_version(*base) not in variants
    assert enrichment_version("m", None, "s", "low") is None and enrichment_version("m", "p", None, "low") is None


def test_views_read_parts_from_before_a_column_existed(tmp_path):
    wh = small_warehouse(tmp_path, runs=1, chunks=1, rows=1)
    con = connect(tmp_path)
    assert con.execute("SELECT reused_from FROM results WHERE run_id = 'run-old'").fetchall() == [(None,)]
    assert wh.result_files()
