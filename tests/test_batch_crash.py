"""SIGKILL `enrich run --mode batch` between preparing, creating and recording a job, then run again: every
item ends with exactly one current row, no key is submitted twice, nothing is billed twice.

The run is the real command in a subprocess (like tests/test_crash_safety.py); the emulator lives in this
process and keeps the ledger (keys submitted in jobs, bills per media hash). `ENRICH_TEST_BATCH_PAUSE`
holds the run for a moment at a named step of creating a job (tasks/batch.py `crash_point`) so the kill
lands exactly there; one more kill lands at a random moment.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.media_factory import make_jpeg
from enrich.warehouse.views import read_snapshot

ROOT = Path(__file__).resolve().parent.parent
FILES = 8


def _jobs_parts(warehouse: Path) -> set[str]:
    d = warehouse / "jobs"
    return {p.name for p in d.glob("*.parquet")} if d.is_dir() else set()


def test_sigkill_around_job_creation_never_submits_or_bills_twice(tmp_path, gemini, prefect_harness):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(FILES):
        make_jpeg(lib / f"p{i:02d}.jpg", size=(64, 48), color=(i * 29 % 256, 90, i * 13 % 256))
    home = tmp_path / "home"
    warehouse = home / "warehouse"
    env = {**os.environ, "ENRICH_HOME": str(home), "PREFECT_API_URL": prefect_harness,
           "GOOGLE_GEMINI_BASE_URL": gemini.base_url, "GEMINI_API_KEY": "test-key-123",
           "ENRICH_BATCH_POLL_INITIAL_S": "0.1", "ENRICH_BATCH_POLL_MAX_S": "0.2", "ENRICH_BATCH_MAX_ITEMS": "3"}
    env.pop("ENRICH_WAREHOUSE", None)
    gemini.set_config(batch_running_polls=2, batch_pending_polls=0, batch_outcome="succeeded")
    rng = random.Random(int(os.environ.get("ENRICH_KILL_SEED", "14")))
    log = tmp_path / "run.log"
    kills = []

    def start(pause: str | None) -> subprocess.Popen:
        e = dict(env)
        if pause:
            e["ENRICH_TEST_BATCH_PAUSE"] = f"{pause}:30"
        with open(log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "enrich", "run", str(lib), "--mode", "batch"],
                                    cwd=ROOT, env=e, stdout=out, stderr=subprocess.STDOUT)

    def kill(proc: subprocess.Popen, where: str) -> None:
        assert proc.poll() is None, f"the run ended before the kill at {where}: {log.read_text()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append(where)

    def wait_for(cond, proc: subprocess.Popen, what: str) -> None:
        deadline = time.monotonic() + 120
        while not cond():
            assert proc.poll() is None, f"the run ended before {what}: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"never reached {what}"
            time.sleep(0.02)

    # 1. after the manifest is committed, before the job is created
    before = _jobs_parts(warehouse)
    proc = start("created-manifest")
    wait_for(lambda: any(n.endswith("-000001.parquet") for n in _jobs_parts(warehouse) - before), proc, "a manifest")
    kill(proc, "manifest committed, job not created")
    assert gemini.stats()["batch"]["jobs"] == 0

    # 2. after the job is created, before its name is recorded
    jobs_before = gemini.stats()["batch"]["jobs"]
    proc = start("created-job")
    wait_for(lambda: gemini.stats()["batch"]["jobs"] > jobs_before, proc, "a created job")
    kill(proc, "job created, not recorded")

    # 3. anywhere
    proc = start(None)
    wait_for(lambda: (warehouse / "runs").is_dir() and len(list((warehouse / "runs").glob("*.parquet"))) >= 3,
             proc, "the third run's start")
    time.sleep(rng.uniform(0.0, 1.5))
    if proc.poll() is None:
        kill(proc, "random")

    final = subprocess.run([sys.executable, "-m", "enrich", "run", str(lib), "--mode", "batch", "--until-done",
                            "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]

    def state(con):
        return {
            "items": con.execute("SELECT path, status, batch FROM items ORDER BY path").fetchall(),
            "rows_per_path": con.execute("SELECT max(n) FROM (SELECT path, count(*) n FROM results "
                                         "WHERE status = 'ok' GROUP BY path)").fetchone()[0],
            "open": con.execute("SELECT count(*) FROM jobs WHERE state IN ('preparing', 'pending', 'running', "
                                "'succeeded')").fetchone()[0],
            "states": dict(con.execute("SELECT state, count(*) FROM jobs GROUP BY ALL").fetchall()),
        }

    s = read_snapshot(warehouse, state)
    assert [p for p, _, _ in s["items"]] == sorted(str(p) for p in lib.glob("*.jpg"))  # one current row each
    assert {(st, b) for _, st, b in s["items"]} == {("ok", True)}
    assert s["rows_per_path"] == 1 and s["open"] == 0
    assert s["states"].get("not_created", 0) >= 1  # the job of kill 1 was given back
    stats = gemini.stats()
    assert max(stats["batch_keys"].values()) == 1, "a key was submitted twice"
    assert len(stats["batch_keys"]) == FILES
    assert max(stats["billed_by_media_hash"].values()) == 1, "something was billed twice"
    assert len(stats["billed_by_media_hash"]) == FILES
    print(f"\nbatch kill test: kills at {kills}; jobs {s['states']}")
