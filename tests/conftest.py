"""Shared fixtures: isolated state (ENRICH_HOME in tmp), the local Gemini emulator, a Prefect test harness."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Everything a test run touches lives in one temp folder, Prefect's home included; set before any import
# of Prefect (enrich.prefect_env only fills in what is unset).
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="enrich-tests-"))
os.environ["ENRICH_HOME"] = str(_SESSION_HOME)
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ["HF_HUB_OFFLINE"] = "1"
# The tests written before profiles existed check the `detailed` profile's columns; tests/test_profiles.py
# covers the lean default (`caption`) and the others explicitly.
os.environ["ENRICH_PROFILE"] = "detailed"
os.environ["MLX_DISABLE_COMPILE"] = "1"
for _var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "ENRICH_WAREHOUSE", "PREFECT_API_URL"):
    os.environ.pop(_var, None)


@pytest.fixture
def enrich_home(tmp_path, monkeypatch) -> Path:
    """A fresh ENRICH_HOME (and so a fresh warehouse) for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("ENRICH_HOME", str(home))
    monkeypatch.delenv("ENRICH_WAREHOUSE", raising=False)
    return home


@pytest.fixture(scope="session")
def emulator():
    from enrich.emulator import EmulatorConfig, GeminiEmulator

    emu = GeminiEmulator(EmulatorConfig(capture_media=True))
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def gemini(emulator, monkeypatch):
    """The emulator, reset, with the SDK pointed at it through the environment like a user would."""
    import time

    from enrich.emulator import Faults

    # An earlier test's requests may still be in the emulator (a `slow` fault answers seconds after the client
    # timed out, and is billed then): wait for them, or they would be counted in this test's bill.
    deadline = time.monotonic() + 15
    while emulator.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    emulator.reset()
    emulator.set_config(faults=Faults(), latency_ms=(0, 0), rpm_limit=None)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("GEMINI_API_KEY", "test-key-123")
    yield emulator
    emulator.set_config(faults=Faults(), latency_ms=(0, 0), rpm_limit=None)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (per-test harnesses cost the start-up each time)."""
    from enrich.prefect_env import configure_prefect_env

    configure_prefect_env()
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        yield PREFECT_API_URL.value()  # subprocesses can use the same temporary API (no server start-up)
