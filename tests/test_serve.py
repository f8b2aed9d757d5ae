"""`enrich serve`: the schedule is registered with the cron expression given (read back from the Prefect API,
without waiting for it to fire), and the command says clearly when it has no server to register with."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_serve_without_a_prefect_server_says_how_to_get_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.run([sys.executable, "-m", "enrich", "serve", str(tmp_path), "--cron", "0 2 * * *"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "persistent Prefect server" in proc.stderr and "prefect server start" in proc.stderr
    assert "PREFECT_API_URL" in proc.stderr and "--start-server" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_serve_registers_the_cron_schedule_and_the_run_options(tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client

    lib = tmp_path / "lib"
    lib.mkdir()
    env = {**os.environ, "PREFECT_API_URL": prefect_harness, "ENRICH_HOME": str(tmp_path / "home"),
           "GEMINI_API_KEY": "test-key-123"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "enrich", "serve", str(lib), "--cron", "17 3 * * 1-5", "--timezone", "Europe/Berlin",
         "--name", "test-nightly", "--budget", "1.5", "--chunk-size", "50", "--reprocess", "stale"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # Ctrl-C as at a terminal: a test run started in the background (`cmd &` in a script) hands its children
        # SIGINT ignored, and Python then never raises KeyboardInterrupt, so serve would never stop.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deployment = None
        deadline = time.monotonic() + 90
        with get_client(sync_client=True) as client:
            while deployment is None:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the deployment was not registered"
                try:
                    deployment = client.read_deployment_by_name("enrich/test-nightly")
                except Exception:  # not there yet
                    time.sleep(0.3)
        (schedule,) = deployment.schedules
        assert schedule.schedule.cron == "17 3 * * 1-5"
        assert schedule.schedule.timezone == "Europe/Berlin"
        assert schedule.active
        assert deployment.parameters == {
            "roots": [str(lib.resolve())],
            "overrides": {"budget_usd": 1.5, "chunk_size": 50},
            "reprocess": ["stale"],
            "wait_for_lock": True,
        }
        assert "test-key-123" not in str(deployment.model_dump())  # the key stays in the environment
        # Stop it the way a user would, once it is serving: the runner has polled for scheduled runs (which marks
        # the deployment READY).
        with get_client(sync_client=True) as client:
            while not str(client.read_deployment_by_name("enrich/test-nightly").status).upper().endswith("READY"):
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the runner never polled"
                time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)  # how a user stops it
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "test-nightly" in out and "17 3 * * 1-5" in out and "/deployments" in out


def test_prefect_yaml_deploys_the_flow_with_parameters_it_accepts():
    import inspect

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    module, name = deployment["entrypoint"].split(":")
    assert module == "flows/enrich_flow.py" and name == "enrich_flow"
    assert deployment["schedules"][0]["cron"] == "0 2 * * *"
    from enrich.flows.enrich_flow import enrich_flow

    accepted = set(inspect.signature(enrich_flow.fn).parameters)
    assert set(deployment["parameters"]) <= accepted and "roots" in deployment["parameters"]
