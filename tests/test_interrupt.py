"""Ctrl-C and SIGTERM on a real `python -m enrich run` against a slow emulator in another process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.emulator_process import EmulatorProcess
from tests.support.photos import make_photos
from enrich.warehouse.views import connect

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 5


def start_run(library: Path, home: Path, emulator_url: str) -> subprocess.Popen:
    env = {**os.environ, "ENRICH_HOME": str(home), "GOOGLE_GEMINI_BASE_URL": emulator_url,
           "GEMINI_API_KEY": "test-key-123", "ENRICH_STOP_GRACE_S": "20", "ENRICH_PROGRESS_INTERVAL_S": "1"}
    env.pop("ENRICH_WAREHOUSE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "enrich", "run", str(library), "--concurrency", "3", "--chunk-size", str(CHUNK),
         "--rpm", "0", "--progress", "log", "--json"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_first_chunk(home: Path, proc: subprocess.Popen, timeout: float = 150) -> None:
    results = home / "warehouse" / "results"
    deadline = time.monotonic() + timeout
    while not (results.is_dir() and any(results.glob("*.parquet"))):
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it was interrupted: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no chunk was committed in time")
        time.sleep(0.05)


def test_sigint_and_sigterm_stop_dispatching_write_every_finished_result_and_exit_non_zero(tmp_path):
    library = tmp_path / "lib"
    files = sorted(str(p) for p in make_photos(library, 60))
    with EmulatorProcess("--latency-ms", "300-500") as emu:
        runs = {sig: (tmp_path / sig.name, None) for sig in (signal.SIGINT, signal.SIGTERM)}
        runs = {sig: (home, start_run(library, home, emu.url)) for sig, (home, _) in runs.items()}
        for sig, (home, proc) in runs.items():
            wait_for_first_chunk(home, proc)
            proc.send_signal(sig)
        outputs = {}
        for sig, (home, proc) in runs.items():
            try:
                outputs[sig] = proc.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AssertionError(f"{sig.name}: the run did not stop") from None
        billed = emu.stats()["billed_requests"]

    ok_rows = 0
    for sig, (home, proc) in runs.items():
        out, err = outputs[sig]
        assert proc.returncode == 128 + sig, (sig.name, proc.returncode, err[-2000:])
        assert "Traceback" not in err, err[-3000:]
        assert f"interrupted by {sig.name}: stopping" in err
        summary = json.loads(out)
        assert summary["status"] == "interrupted" and summary["signal"] == sig
        con = connect(home / "warehouse")
        rows = con.execute("SELECT path, status, error_kind, attempts FROM results ORDER BY path").fetchall()
        paths = [r[0] for r in rows]
        assert len(paths) == len(set(paths)), "one row per file"
        assert 0 < len(paths) < len(files) and len(paths) % CHUNK == 0
        assert paths == files[:len(paths)], "every file handed to a chunk has its row; none skipped"
        statuses = {r[1] for r in rows}
        assert statuses <= {"ok", "interrupted"} and "interrupted" in statuses
        assert all(r[2] == "interrupted" and r[3] == 0 for r in rows if r[1] == "interrupted"), "not sent"
        ok_rows += sum(1 for r in rows if r[1] == "ok")
        status, message = con.execute("SELECT status, message FROM runs").fetchone()
        assert status == "interrupted" and f"interrupted by {sig.name}" in message
    assert ok_rows == billed, "every request the emulator answered (and billed) has its row"
