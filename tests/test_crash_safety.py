"""Kill -9 at random moments: the warehouse stays readable and consistent, and a rerun picks up exactly where
committed work ended, paying for nothing twice once it was committed.

The run is the real command (`python -m enrich run`) in a subprocess, killed with SIGKILL. The emulator
lives in this test process (it survives the kills and keeps the billing ledger); the subprocesses share
the session's temporary Prefect API, so each start costs seconds, not a server boot.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from tests.media_factory import make_jpeg
from enrich.warehouse.store import Warehouse
from enrich.warehouse.views import read_snapshot

ROOT = Path(__file__).resolve().parent.parent
KILLS = 10
FILES = 60


def media_hash_by_content(paths: list[Path]) -> dict[str, str]:
    """content_hash of each file -> sha256 of the bytes the run uploads for it (what the emulator bills by)."""
    from enrich.tasks.discover import discover
    from enrich.tasks.prepare import PrepareOptions, prepare_file

    out = {}
    for f in discover([str(p) for p in paths], workers=1):
        item = prepare_file(f, PrepareOptions(max_side=768))
        out[f.content_hash] = hashlib.sha256(item.media[0].data).hexdigest()
    return out


class Reader(threading.Thread):
    """Queries the warehouse all the time, through the views and through a plain glob, as users would."""

    def __init__(self, warehouse: Path) -> None:
        super().__init__(daemon=True)
        self.warehouse = warehouse
        self.stop = threading.Event()
        self.reads = 0
        self.errors: list[str] = []

    def run(self) -> None:
        glob = str(self.warehouse / "results" / "*.parquet")
        while not self.stop.is_set():
            try:
                if (self.warehouse / "results").is_dir() and any((self.warehouse / "results").iterdir()):
                    read_snapshot(self.warehouse, lambda con: con.execute(
                        "SELECT count(*), sum(cost_usd), sum(length(caption)), count(DISTINCT path) FROM results"
                    ).fetchall() + con.execute("SELECT count(*), max(finished_at) FROM items").fetchall()
                        + con.execute("SELECT count(*) FROM runs").fetchall())
                    duckdb.sql(f"SELECT count(*), sum(input_tokens), max(length(path)) FROM read_parquet('{glob}')"
                               ).fetchall()
                    self.reads += 1
            except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
                if "No files found" in str(exc) and not any((self.warehouse / "results").iterdir()):
                    continue
                self.errors.append(f"{exc.__class__.__name__}: {exc}")
            time.sleep(0.1)  # often enough to catch any moment, rarely enough to leave the CPU to the run


def committed_ok(warehouse: Path) -> set[str]:
    if not (warehouse / "results").is_dir():
        return set()
    return {h for (h,) in read_snapshot(warehouse, lambda con: con.execute(
        "SELECT DISTINCT content_hash FROM results WHERE status = 'ok' AND content_hash IS NOT NULL").fetchall())}


def run_ids(warehouse: Path) -> set[str]:
    return {p.name.split("-", 1)[1].rsplit("-", 1)[0] for p in Warehouse(warehouse).run_files()}


def test_kill_9_at_random_moments_loses_nothing_committed_and_pays_nothing_twice(
        tmp_path, gemini, prefect_harness):
    lib = tmp_path / "lib"
    (lib / "a").mkdir(parents=True)
    (lib / "b").mkdir()
    for i in range(FILES):
        make_jpeg(lib / ("a" if i % 2 else "b") / f"p{i:03d}.jpg", size=(96, 72),
                  color=(i * 3 % 256, (i * 7) % 256, 255 - i * 3 % 256))
    shutil.copy(lib / "a" / "p001.jpg", lib / "b" / "same-as-p001.jpg")
    (lib / "sidecar.json").write_text("{\"not\": \"media\"}")  # skipped: not media
    media_of = media_hash_by_content(sorted(lib.rglob("*.jpg")))
    n_files = FILES + 2

    home = tmp_path / "home"
    warehouse = home / "warehouse"
    env = {**os.environ, "ENRICH_HOME": str(home), "PREFECT_API_URL": prefect_harness,
           "GOOGLE_GEMINI_BASE_URL": gemini.base_url, "GEMINI_API_KEY": "test-key-123",
           "ENRICH_CONCURRENCY": "2"}
    env.pop("ENRICH_WAREHOUSE", None)
    gemini.set_config(latency_ms=(80, 200))
    rng = random.Random(int(os.environ.get("ENRICH_KILL_SEED", "6")))
    reader = Reader(warehouse)
    reader.start()

    billed_before: dict[str, int] = {}
    committed_before: set[str] = set()
    kills, attempts, kill_after, starts = 0, 0, [], []
    log = tmp_path / "run.log"

    def check_no_committed_content_billed_again() -> None:
        nonlocal billed_before, committed_before
        time.sleep(0.2)  # let requests the dead client left in flight finish on the emulator's side
        billed_now = gemini.stats()["billed_by_media_hash"]
        again = {h for h, n in billed_now.items() if n > billed_before.get(h, 0)}
        paid_twice = again & {media_of[c] for c in committed_before}
        assert not paid_twice, f"attempt {attempts}: committed content billed again: {sorted(paid_twice)[:3]}"
        billed_before = billed_now
        committed_before = committed_ok(warehouse)

    try:
        while kills < KILLS:
            attempts += 1
            assert attempts <= 3 * KILLS, "the runs keep finishing before they can be killed"
            known_runs = run_ids(warehouse)
            with open(log, "ab") as out:
                proc = subprocess.Popen([sys.executable, "-m", "enrich", "run", str(lib), "--chunk-size", "2"],
                                        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            spawned = deadline = time.monotonic()
            deadline += 120
            while proc.poll() is None and not (run_ids(warehouse) - known_runs):  # the run has started
                assert time.monotonic() < deadline, "the run did not start"
                time.sleep(0.02)
            starts.append(time.monotonic() - spawned)
            delay = rng.uniform(0.0, 1.3)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                kill_after.append(round(delay, 2))
            else:
                assert proc.returncode == 0, log.read_text()[-3000:]
            check_no_committed_content_billed_again()

        final = subprocess.run([sys.executable, "-m", "enrich", "run", str(lib), "--json"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=180)
        assert final.returncode == 0, final.stderr[-3000:]
        check_no_committed_content_billed_again()
    finally:
        reader.stop.set()
        reader.join(timeout=10)

    assert kills == KILLS, kill_after
    assert reader.errors == [], reader.errors[:3]
    assert reader.reads > 20

    def final_state(con):
        return {
            "items": con.execute("SELECT path, status FROM items ORDER BY path").fetchall(),
            "dupes": con.execute("SELECT run_id, path, count(*) FROM results GROUP BY ALL HAVING count(*) > 1"
                                 ).fetchall(),
            "statuses": con.execute("SELECT status, count(*) FROM runs GROUP BY ALL ORDER BY ALL").fetchall(),
            "paid_twice": con.execute("SELECT content_hash FROM results WHERE cost_usd > 0 GROUP BY ALL "
                                      "HAVING count(*) > 1").fetchall(),
        }

    state = read_snapshot(warehouse, final_state)
    on_disk = sorted(str(p) for p in lib.rglob("*") if p.is_file())
    assert [p for p, _ in state["items"]] == on_disk  # every file has exactly one current row
    assert {s for p, s in state["items"] if p.endswith(".jpg")} == {"ok"}
    assert state["dupes"] == []  # one row per file per run, even across kills
    assert state["paid_twice"] == []  # no content has two paid rows: committed work was never redone
    statuses = dict(state["statuses"])
    # every run is recorded as ended: killed ones as crashed (unless the kill came after the final snapshot)
    assert set(statuses) <= {"crashed", "finished"}
    assert statuses["crashed"] + statuses["finished"] == attempts + 1 and statuses["crashed"] >= KILLS // 2
    billed = gemini.stats()["billed_by_media_hash"]
    assert set(billed) == set(media_of.values())  # every distinct content was described (the copy was not)
    assert not any((warehouse / ".tmp").glob("*"))
    print(f"\nkill test: {attempts} attempts (start-up {sum(starts) / len(starts):.1f} s each), {kills} kills "
          f"after {kill_after} s, {reader.reads} reads, "
          f"{sum(billed.values())} bills for {len(billed)} contents, {n_files} files")
