"""Every emulator fault through the whole flow (real Prefect, SDK, Parquet, DuckDB): the final status and the
`attempts` column of every item, what the emulator billed, and a chaos run where every fault hits 20% of
requests."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.photos import make_photos
from enrich.warehouse.views import connect

pytestmark = pytest.mark.usefixtures("prefect_harness")

# Fast retries so the tests spend their time on requests, not on sleeping.
FAST = {"max_attempts": 3, "backoff_initial_s": 0.01, "backoff_max_s": 0.02, "throttle_quiet_s": 0.0,
        "progress": "off"}


def run_flow(roots, **overrides):
    from tests.support.flows import run_enrich_flow

    return run_enrich_flow(roots, overrides)


@pytest.fixture
def small_library(tmp_path) -> Path:
    root = tmp_path / "lib"
    make_photos(root, 4)
    (root / "notes.json").write_text("{}\n")  # a sidecar: skipped, not media
    return root


@pytest.mark.parametrize(
    "fault, emulator_config, overrides, expected",
    [
        ("429", {"retry_delay_s": 0.02}, {}, ("error", "rate_limited", 3)),
        ("500", {}, {}, ("error", "http_500", 3)),
        ("503", {}, {}, ("error", "http_503", 3)),
        ("garbage", {}, {}, ("error", "garbage_response", 3)),
        ("slow", {"slow_s": 3.0}, {"request_timeout_s": 0.3}, ("error", "timeout", 3)),
        ("safety", {}, {}, ("blocked", "safety", 1)),
        ("prompt_block", {}, {}, ("blocked", "prompt_blocked", 1)),
    ],
)
def test_each_fault_at_rate_one_ends_in_its_outcome_after_the_right_number_of_attempts(
        small_library, gemini, enrich_home, fault, emulator_config, overrides, expected):
    gemini.set_config(faults={fault: 1.0}, **emulator_config)
    summary = run_flow([small_library], **FAST, **overrides)
    assert summary["status"] == "finished", "per-item failures do not fail the run"
    con = connect(enrich_home / "warehouse")
    rows = con.execute("SELECT path, status, error_kind, attempts, error, input_tokens FROM items ORDER BY path").fetchall()
    photos = [r for r in rows if r[0].endswith(".jpg")]
    assert len(photos) == 4 and len(rows) == 5
    for path, status, kind, attempts, error, _ in photos:
        assert (status, kind, attempts) == expected, path
        if status == "error":
            assert "after 3 attempt(s)" in error
    assert [(r[1], r[3]) for r in rows if r[0].endswith(".json")] == [("skipped", 0)]
    stats = gemini.stats()
    assert stats["requests"] == 4 * expected[2]
    billed = expected[0] == "blocked"  # blocked answers are billed for their input; failed requests are not
    assert stats["billed_requests"] == (4 if billed else 0)
    assert sum(r[5] for r in photos) == stats["prompt_tokens"]


def test_answers_that_break_the_schema_or_the_token_limit_are_not_retried(small_library, gemini, enrich_home):
    run_flow([small_library], max_output_tokens=8, **FAST)
    rows = connect(enrich_home / "warehouse").execute(
        "SELECT DISTINCT status, error_kind, attempts FROM items WHERE path LIKE '%.jpg'").fetchall()
    assert rows == [("error", "max_tokens", 1)]
    assert gemini.stats()["requests"] == 4


def test_an_endpoint_that_is_down_fails_the_run_early_and_every_file_taken_still_has_one_row(
        tmp_path, gemini, enrich_home):
    root = tmp_path / "lib"
    make_photos(root, 30)
    gemini.set_config(faults={"503": 1.0})
    summary = run_flow([root], abort_after_failures=4, concurrency=2, chunk_size=10, **FAST)
    assert summary["status"] == "failed" and "in a row" in summary["fatal"]
    assert gemini.stats()["requests"] <= 4 + 2
    con = connect(enrich_home / "warehouse")
    n, distinct, statuses = con.execute(
        "SELECT count(*), count(DISTINCT path), list(DISTINCT status ORDER BY status) FROM results").fetchone()
    assert n == distinct and n % 10 == 0 and n >= 10, "whole chunks, one row per file"
    assert set(statuses) <= {"error", "interrupted"} and "interrupted" in statuses
    assert con.execute("SELECT bool_and(error LIKE '%503%') FROM results WHERE attempts > 0").fetchone()[0]
    status, message = con.execute("SELECT status, message FROM runs").fetchone()
    assert status == "failed" and "in a row" in message and "not finished" in message


@pytest.fixture
def emulator_process(monkeypatch):
    """The emulator in its own process (so its request handling does not share the pipeline's GIL)."""
    from tests.support.emulator_process import EmulatorProcess

    with EmulatorProcess() as emu:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emu.url)
        monkeypatch.setenv("GEMINI_API_KEY", "test-key-123")
        yield emu


def test_chaos_every_fault_at_20_percent_loses_nothing_and_bills_exactly(tmp_path, emulator_process, enrich_home):
    emu = emulator_process
    root = tmp_path / "lib"
    make_photos(root, 1000, size=(16, 12))
    emu.set_config(faults={k: 0.2 for k in ("429", "500", "503", "garbage", "slow", "safety", "prompt_block")},
                   retry_delay_s=0.005, slow_s=0.05, seed=7)
    summary = run_flow([root], max_attempts=5, backoff_initial_s=0.005, backoff_max_s=0.02, throttle_quiet_s=0.0,
                       chunk_size=100, rpm=0, tpm=0, progress="off")
    assert summary["status"] == "finished"
    con = connect(enrich_home / "warehouse")
    rows, paths, attempts, inp, out = con.execute(
        "SELECT count(*), count(DISTINCT path), sum(attempts), sum(input_tokens), "
        "sum(output_tokens + thinking_tokens) FROM results").fetchone()
    billed = emu.stats()
    assert rows == paths == 1000, "exactly one row per file"
    assert inp == billed["prompt_tokens"] and out == billed["candidates_tokens"] + billed["thoughts_tokens"]
    assert attempts == billed["requests"], "every request the emulator saw is counted on its item"
    by = dict(con.execute("SELECT status, count(*) FROM results GROUP BY status").fetchall())
    assert by.get("ok", 0) + by.get("blocked", 0) == billed["billed_requests"]
    assert set(by) <= {"ok", "blocked", "error"} and by["ok"] > 0 and by["blocked"] > 0
    retried_ok = con.execute("SELECT count(*) FROM results WHERE status = 'ok' AND attempts > 1").fetchone()[0]
    assert retried_ok > 0, "transient faults were retried to success"
    kinds = {k for (k,) in con.execute("SELECT DISTINCT error_kind FROM results WHERE status = 'error'").fetchall()}
    assert kinds <= {"rate_limited", "http_500", "http_503", "garbage_response", "connection", "timeout"}
    assert con.execute("SELECT max(attempts) FROM results").fetchone()[0] == 5
