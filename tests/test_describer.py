"""The describer on its own: the real SDK over HTTP to the emulator, no Prefect.

What it must do when the provider misbehaves: which failures it retries and how often, when it gives up on
the whole run, and how it stops (grace period for requests in flight, nothing new sent).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from enrich.backends.base import MediaPart
from enrich.backends.gemini import GeminiBackend
from enrich.limiter import RateLimiter
from enrich.pricing import load_prices
from enrich.settings import DEFAULT_CONFIG_DIR, load_settings
from enrich.schemas.descriptions import DESCRIPTION_SCHEMAS
from enrich.tasks.describe import DescribeOptions, Describer
from enrich.tasks.discover import discover
from enrich.tasks.prepare import PrepareOptions, PreparedItem, prepare_file
from enrich.tasks.records import RunInfo
from tests.support.photos import make_photos

MODEL = "gemini-3.1-flash-lite"


@pytest.fixture
def items(tmp_path) -> list[PreparedItem]:
    make_photos(tmp_path / "lib", 8)
    prepared = [prepare_file(f, PrepareOptions()) for f in discover([tmp_path / "lib"])]
    assert all(isinstance(p, PreparedItem) for p in prepared)
    return prepared


@pytest.fixture
def make_describer(gemini):
    made: list[Describer] = []

    def make(model: str = MODEL, limiter: RateLimiter | None = None, **options) -> Describer:
        settings = load_settings()
        backend = GeminiBackend(model, api_key=SecretStr("test-key-123"), base_url=gemini.base_url,
                                timeout_s=options.pop("timeout_s", 10.0))
        schemas = dict(DESCRIPTION_SCHEMAS)
        opts = DescribeOptions(prompts={k: settings.prompt_for(k) for k in schemas}, schemas=schemas,
                               **{"backoff_initial_s": 0.01, "backoff_max_s": 0.02, **options})
        run = RunInfo(run_id="t", backend="gemini", model=model, resolution="low", price_date="x")
        price = load_prices(DEFAULT_CONFIG_DIR).price(MODEL)
        d = Describer(backend, run, price, opts, limiter=limiter)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def outcomes(rows):
    return sorted((r["status"], r["error_kind"], r["attempts"]) for r in rows)


def test_a_429_pauses_every_request_for_its_retry_delay_and_halves_concurrency_once(items, make_describer, gemini):
    gemini.set_config(faults={"429": 1.0}, retry_delay_s=0.3)
    limiter = RateLimiter(rpm=None)
    d = make_describer(limiter=limiter, concurrency=4, max_attempts=2)
    started = time.monotonic()
    rows = d.describe_batch(items[:4])
    elapsed = time.monotonic() - started
    assert outcomes(rows) == [("error", "rate_limited", 2)] * 4
    assert all("after 2 attempt(s)" in r["error"] for r in rows)
    assert elapsed >= 0.3, "a retry came sooner than the server's retryDelay"
    assert limiter.pauses >= 1
    assert d.stats.throttled == 8 and gemini.stats()["requests"] == 8
    assert d.concurrency.current < 4


def test_client_errors_are_not_retried(items, make_describer, gemini):
    gemini.set_config(strict_media=True)
    bad = dataclasses.replace(items[0], media=(MediaPart(mime="image/jpeg", data=b"not a jpeg at all"),))
    d = make_describer(max_attempts=5)
    try:
        row, = d.describe_batch([bad])
    finally:
        gemini.set_config(strict_media=False)
    assert (row["status"], row["error_kind"], row["attempts"]) == ("error", "http_400", 1)
    assert gemini.stats()["requests"] == 1
    assert d.fatal is None, "one refused item does not stop the run"


def test_a_key_rejected_mid_run_stops_the_run_and_nothing_more_is_sent(items, make_describer, gemini):
    d = make_describer(concurrency=2)
    d.preflight()
    gemini.set_config(invalid_keys=("test-key",))
    try:
        rows = d.describe_batch(items)
    finally:
        gemini.set_config(invalid_keys=("invalid",))
    assert d.fatal is not None and d.fatal.kind == "auth"
    assert gemini.stats()["requests"] <= 2, "only the requests already in flight were sent"
    failed = [r for r in rows if r["status"] == "error"]
    assert failed and all(r["error_kind"] == "auth" for r in failed)
    rest = [r for r in rows if r["status"] != "error"]
    assert len(rest) == len(items) - len(failed)
    assert {(r["status"], r["error_kind"], r["attempts"]) for r in rest} == {("interrupted", "run_aborted", 0)}
    assert all("API key" in r["error"] and "test-key" not in r["error"] for r in rows)


def test_an_unknown_model_mid_run_stops_the_run(items, make_describer, gemini):
    d = make_describer(model="gemini-0.0-retired", concurrency=1)
    rows = d.describe_batch(items[:3])
    assert d.fatal is not None and d.fatal.kind == "unknown_model"
    assert outcomes(rows) == [("error", "unknown_model", 1)] + [("interrupted", "run_aborted", 0)] * 2
    assert gemini.stats()["requests"] == 1


def test_an_endpoint_down_for_n_consecutive_attempts_stops_the_run_early(items, make_describer, gemini):
    gemini.set_config(faults={"503": 1.0})
    d = make_describer(concurrency=2, max_attempts=3, abort_after_failures=5)
    rows = d.describe_batch(items)
    assert d.fatal is not None and d.fatal.kind == "endpoint_down"
    assert "5 times in a row" in str(d.fatal)
    sent = gemini.stats()["requests"]
    assert 5 <= sent <= 5 + 2, "stops after N failed attempts, plus at most what was already in flight"
    assert sum(r["attempts"] for r in rows) == sent
    assert {r["status"] for r in rows} <= {"error", "interrupted"}
    assert any(r["status"] == "interrupted" and r["error_kind"] == "run_aborted" for r in rows)


def test_429s_do_not_count_as_the_endpoint_being_down(items, make_describer, gemini):
    gemini.set_config(faults={"429": 1.0}, retry_delay_s=0.01)
    d = make_describer(concurrency=2, max_attempts=3, abort_after_failures=2, throttle_quiet_s=0)
    rows = d.describe_batch(items[:3])
    assert d.fatal is None
    assert outcomes(rows) == [("error", "rate_limited", 3)] * 3


def test_stop_lets_requests_in_flight_finish_and_sends_nothing_more(items, make_describer, gemini):
    gemini.set_config(latency_ms=(400, 400))
    d = make_describer(concurrency=2, grace_s=5)
    futures = [d.submit(item) for item in items]
    _wait_for(lambda: gemini.stats()["in_flight"] == 2)
    d.stop("interrupted by a test")
    rows = [f.result(timeout=10) for f in futures]
    assert outcomes(rows) == [("interrupted", "interrupted", 0)] * 6 + [("ok", None, 1)] * 2
    assert gemini.stats()["requests"] == 2 and gemini.stats()["billed_requests"] == 2
    assert all(r["error"] == "not sent: interrupted by a test" for r in rows if r["status"] == "interrupted")
    late = d.submit(items[0]).result(timeout=5)
    assert (late["status"], late["attempts"]) == ("interrupted", 0), "nothing is sent after a stop"


def test_requests_still_in_flight_after_the_grace_period_are_cancelled_and_recorded(items, make_describer, gemini):
    gemini.set_config(latency_ms=(3000, 3000))
    d = make_describer(concurrency=2, grace_s=0.2)
    futures = [d.submit(item) for item in items[:4]]
    _wait_for(lambda: gemini.stats()["in_flight"] == 2)
    d.stop("interrupted by a test")
    rows = [f.result(timeout=5) for f in futures]
    cancelled = [r for r in rows if r["attempts"] == 1]
    assert len(cancelled) == 2 and all(r["status"] == "interrupted" for r in rows)
    assert all("cancelled in flight" in r["error"] and "may still bill" in r["error"] for r in cancelled)
    assert d.budget.reserved == 0


def test_a_second_stop_with_no_grace_cancels_at_once(items, make_describer, gemini):
    gemini.set_config(latency_ms=(3000, 3000))
    d = make_describer(concurrency=2, grace_s=60)
    futures = [d.submit(item) for item in items[:2]]
    _wait_for(lambda: gemini.stats()["in_flight"] == 2)
    d.stop("first")
    d.stop("second", grace_s=0)
    rows = [f.result(timeout=5) for f in futures]
    assert [r["status"] for r in rows] == ["interrupted"] * 2
    assert d.stop_reason == "first"


def test_an_item_waiting_in_backoff_stops_at_once_with_its_attempts_and_last_error(items, make_describer, gemini):
    gemini.set_config(faults={"503": 1.0})
    d = make_describer(concurrency=1, max_attempts=5, backoff_initial_s=30, backoff_max_s=30)
    future = d.submit(items[0])
    _wait_for(lambda: d.stats.retries == 1)
    d.stop("interrupted by a test")
    row = future.result(timeout=5)
    assert (row["status"], row["attempts"]) == ("interrupted", 1)
    assert "after 1 attempt(s)" in row["error"] and "503" in row["error"]


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)
