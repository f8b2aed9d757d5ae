"""`--runner dask`: a local Dask cluster of 3 worker processes against the emulator (its own process) with an
RPM limit and faults, two profiles, a budget at 30% of the estimate, and one worker killed mid-run."""
from __future__ import annotations

import os
import signal
import threading
import time
from decimal import Decimal

import pytest

from tests.support.photos import make_photos

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def emulator_process(monkeypatch):
    from tests.support.emulator_process import EmulatorProcess

    with EmulatorProcess() as emu:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emu.url)
        monkeypatch.setenv("GEMINI_API_KEY", "test-key-123")
        yield emu


@pytest.fixture
def cluster(emulator_process, enrich_home):
    """3 worker processes, started after the environment is set (workers inherit it: key, endpoint, home)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=3, processes=True, threads_per_worker=1, dashboard_address=None) as c:
        with Client(c) as client:
            yield c, client


@pytest.mark.timeout(420)  # ~150 s on the shared 2-core machine, mostly starting 3 worker processes and Prefect in each
def test_three_workers_share_one_budget_one_rate_limit_and_survive_a_killed_worker(
        tmp_path, emulator_process, enrich_home, cluster):
    from enrich.flows.enrich_flow import dask_flow
    from enrich.flows.estimate import estimate
    from enrich.pricing import load_prices
    from enrich.settings import load_settings
    from enrich.warehouse.views import connect

    cl, client = cluster
    emu = emulator_process
    root = tmp_path / "lib"
    make_photos(root, 45, size=(16, 12))  # x 2 profiles: 90 items
    rpm = 900
    emu.set_config(faults={"500": 0.1, "429": 0.03}, retry_delay_s=0.2, latency_ms=[50, 120], rpm_limit=rpm, seed=3)
    # 2 requests in flight per worker: the worker killed below holds at most 2 worst cases (~$0.0033) of the
    # ~$0.006 budget, so the others can go on with the rest (a dead worker's allowance is charged, not freed)
    overrides = {"chunk_size": 10, "rpm": rpm, "tpm": 0, "max_attempts": 4, "backoff_initial_s": 0.01,
                 "backoff_max_s": 0.05, "throttle_quiet_s": 0.0, "progress": "off", "concurrency": 2,
                 "run_profiles": ("caption", "alt-text")}
    settings = load_settings().with_overrides(**overrides)
    est = estimate([str(root)], settings)
    budget = (est.cost_usd * Decimal("0.3")).quantize(Decimal("0.000001"))
    overrides["budget_usd"] = float(budget)

    summary_box = {}

    def run() -> None:
        # like `enrich run --runner dask`: the settings travel in-process, only the safe options as parameters
        from enrich.flows.run_options import split_overrides, trusted_settings

        options, _ = split_overrides(overrides)
        with trusted_settings(load_settings().with_overrides(**overrides)):
            flow = dask_flow(address=cl.scheduler_address)
            summary_box["summary"] = flow([str(root)], options.as_parameters(), runner={"kind": "dask", "workers": 3})

    t = threading.Thread(target=run)
    t.start()
    results = enrich_home / "warehouse" / "results"
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and t.is_alive():
        parts = list(results.glob("part-*.parquet")) if results.is_dir() else []
        busy = [w for w, tasks in client.processing().items() if tasks]
        if parts and busy:
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed = busy[0]
        time.sleep(0.05)
    t.join(timeout=120)
    assert not t.is_alive()
    summary = summary_box["summary"]
    assert killed is not None, "a worker was killed while it held a chunk"
    assert summary["status"] == "finished", summary.get("message")

    con = connect(enrich_home / "warehouse")
    n, items, paths = con.execute(
        "SELECT count(*), count(DISTINCT (path, profile)), count(DISTINCT path) FROM results").fetchone()
    assert n == items == 90 and paths == 45, "exactly one row per (file, profile), the killed chunk redone"
    assert dict(con.execute("SELECT profile, count(*) FROM results GROUP BY ALL").fetchall()) == \
        {"caption": 45, "alt-text": 45}
    by = dict(con.execute("SELECT status, count(*) FROM results GROUP BY ALL").fetchall())
    assert by.get("ok", 0) > 0 and by.get("over_budget", 0) > 0, \
        (by, budget, summary.get("coordinator"), con.execute("SELECT DISTINCT error FROM results LIMIT 3").fetchall())

    # what the emulator billed, priced like the rows are: within the budget, killed worker's requests included
    billed = emu.stats()
    from enrich.backends.base import Usage
    from enrich.pricing import cost_usd

    price = load_prices(settings.config_dir).price(settings.model)
    bill = cost_usd(Usage(input_tokens=billed["prompt_tokens"],
                          output_tokens=billed["candidates_tokens"], thinking_tokens=billed["thoughts_tokens"]), price)
    assert bill <= budget, (bill, budget)
    spent = con.execute("SELECT sum(cost_usd) FROM results").fetchone()[0] or 0
    assert spent <= bill, "nothing committed is billed twice: every committed cost was billed once"
    hashes = billed["billed_by_media_hash"]
    committed_ok = con.execute("SELECT count(*) FROM results WHERE status = 'ok'").fetchone()[0]
    assert sum(hashes.values()) - committed_ok <= 10 + 4 * 2, "at most the killed chunk was billed again"

    # the shared rate limit: no 429 from the emulator's window, and the achieved rate under the limit
    assert billed["rpm_limited"] == 0, "the workers together never exceeded the emulator's RPM"
    assert summary["coordinator"]["slots_issued"] >= billed["requests"] - 8


def test_local_workers_are_pointed_at_the_flows_prefect_api(prefect_harness, monkeypatch):
    """`enrich run --runner dask` without PREFECT_API_URL: the local cluster's workers (new processes, which
    inherit the environment) get this process's API instead of each starting an ephemeral server. (Here the
    harness's API is a temporary setting, which prefect-dask also sends along with each task; the CLI's
    ephemeral server is not a setting, so its workers need the environment: bench_scale_out shows the gain.)"""
    from enrich.flows.dask_runner import share_prefect_api_with_local_workers

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    share_prefect_api_with_local_workers()
    assert os.environ["PREFECT_API_URL"] == prefect_harness
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.example:4200/api")  # the user's own server: kept
    share_prefect_api_with_local_workers()
    assert os.environ["PREFECT_API_URL"] == "http://prefect.example:4200/api"


@pytest.mark.timeout(300)
def test_enrich_run_runner_dask_from_the_command_line(tmp_path, emulator_process, enrich_home, prefect_harness):
    """The user's command: `enrich run --runner dask --workers 1` builds its own local cluster (the path the
    other tests, which bring their own cluster, do not take) and describes every file; `--workers` without
    `--runner dask` is a usage error."""
    import json
    import subprocess
    import sys

    make_photos(tmp_path / "lib", 5, size=(16, 12))
    env = {**os.environ, "PREFECT_API_URL": prefect_harness}  # the session's API: no server start-up here
    cmd = [sys.executable, "-m", "enrich", "run", str(tmp_path / "lib"), "--json", "--yes", "--progress", "off"]
    proc = subprocess.run([*cmd, "--runner", "dask", "--workers", "1", "--chunk-size", "2"], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["status"] == "finished" and summary["by_status"] == {"ok": 5}
    assert summary["coordinator"]["leases"] == 0 and summary["coordinator"]["outstanding"] == "0"
    bad = subprocess.run([*cmd, "--workers", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "go with --runner dask" in bad.stderr
