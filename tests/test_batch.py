"""Batch and Flex modes against the emulator, through the real SDK: jobs, collection, expiry, per-item
failures, the enqueued-token limit, crash recovery by display name, the deadline fallback, budgets.

Runs go through the pipeline functions (open_run, process_chunk, finish_batch, close_run) without Prefect,
so each costs milliseconds; tests/test_batch_crash.py kills the real command.
"""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.media_factory import make_jpeg

FILES = 6
BATCH_DEFAULTS = dict(batch_running_polls=1, batch_pending_polls=0, batch_outcome="succeeded",
                      batch_item_error_rate=0.0, batch_enqueued_tokens=None, flex_shed_rate=0.0)


@pytest.fixture(autouse=True)
def batch_defaults(gemini):
    gemini.set_config(**BATCH_DEFAULTS)
    yield
    gemini.set_config(**BATCH_DEFAULTS)


def make_library(root: Path, n: int = FILES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        make_jpeg(root / f"p{i:03d}.jpg", size=(64, 48), color=(i * 19 % 256, i * 7 % 256, 200))
    return root


def run(lib: Path, *, mode: str = "batch", until_done: bool = False, deadline_s: float | None = None, **overrides):
    """One run with the pipeline functions (no Prefect); returns the summary."""
    from enrich.flows.pipeline import close_run, discover_files, finish_batch, open_run, process_chunk, run_summary
    from enrich.settings import load_settings
    from enrich.tasks.discover import iter_batches

    settings = load_settings().with_overrides(rpm=0, tpm=0, progress="off", mode=mode, batch_poll_initial_s=0.05,
                                              batch_poll_max_s=0.1, chunk_size=5, **overrides)
    ctx = open_run([str(lib)], settings)
    status = None
    try:
        for files in iter_batches(discover_files(ctx), settings.chunk_size):
            process_chunk(ctx.run_id, files)
        finish_batch(ctx, until_done=until_done, deadline_s=deadline_s)
    finally:
        status = close_run(ctx, status)
    return run_summary(ctx, status)


def query(sql: str):
    from enrich.settings import load_settings
    from enrich.warehouse.views import read_snapshot

    return read_snapshot(load_settings().warehouse, lambda con: con.execute(sql).fetchall())


def one_current_row_each(lib: Path) -> dict[str, str]:
    rows = query(f"SELECT path, status FROM items WHERE path LIKE '{lib}/%' ORDER BY path")
    paths = [p for p, _ in rows]
    assert paths == sorted(str(p) for p in lib.glob("*.jpg")), "every file has exactly one current row"
    return dict(rows)


def test_a_batch_run_submits_jobs_and_a_later_run_collects_them_at_the_batch_price(tmp_path, gemini, enrich_home):
    lib = make_library(tmp_path / "lib")
    gemini.set_config(batch_running_polls=0)  # the job is done at the next look
    first = run(lib)
    assert first["batch"]["packed"] == FILES and len(first["batch"]["jobs_created"]) == 1
    assert first["batch"]["open_jobs"] == 1 and first["items"] == 0  # no rows yet: they come with the job
    (state, items, reserved, name, keys), = query("SELECT state, items, reserved_usd, name, keys FROM jobs")
    assert state in ("pending", "running") and items == FILES and reserved > 0 and name.startswith("batches/")
    assert len(set(keys)) == FILES and all(":" in k for k in keys)

    again = run(lib, mode="sync")  # every run collects first; then nothing is left to send
    assert again["batch"]["collected"]["jobs"] == 1 and again["batch"]["collected"]["rows"] == FILES
    assert set(one_current_row_each(lib).values()) == {"ok"}
    stats = gemini.stats()
    assert stats["billed_requests"] == 0 and stats["batch"]["billed_requests"] == FILES
    assert sorted(stats["batch_keys"].values()) == [1] * FILES  # no key submitted twice
    (batch_flags, cost), = query("SELECT list(DISTINCT batch), sum(cost_usd) FROM results")
    assert batch_flags == [True]
    # each row's cost is its usage at the batch price: half of the interactive price of the same usage
    from enrich.backends.base import Usage
    from enrich.pricing import cost_usd, load_prices
    from enrich.settings import load_settings

    price = load_prices(load_settings().config_dir).price("gemini-3.1-flash-lite")
    for inp, out, c in query("SELECT input_tokens, output_tokens, cost_usd FROM results"):
        assert c == cost_usd(Usage(input_tokens=inp, output_tokens=out), price, batch=True)
        assert c * 2 == cost_usd(Usage(input_tokens=inp, output_tokens=out), price)
    (state, spent, ok), = query("SELECT state, spent_usd, ok FROM jobs")
    assert (state, spent, ok) == ("collected", cost, FILES)
    third = run(lib)  # nothing left: no new job
    assert third["batch"]["packed"] == 0 and gemini.stats()["batch"]["jobs"] == 1


def test_large_jobs_go_through_a_jsonl_file_and_jobs_split_by_items_and_enqueued_tokens(tmp_path, gemini,
                                                                                      enrich_home):
    lib = make_library(tmp_path / "lib")
    gemini.set_config(batch_pending_polls=1)  # pending, running, succeeded
    s = run(lib, until_done=True, batch_inline_max_bytes=1, batch_max_items=2)
    assert len(s["batch"]["jobs_created"]) == 3  # 2 + 2 + 2
    assert query("SELECT DISTINCT input FROM jobs") == [("file",)]
    assert set(one_current_row_each(lib).values()) == {"ok"}
    assert gemini.stats()["uploads"] == 3

    lib2 = make_library(tmp_path / "lib2", 5)
    for i, p in enumerate(sorted(lib2.glob("*.jpg"))):  # other bytes than lib's
        make_jpeg(p, size=(64, 48), color=(10, i * 30, 60))
    # an enqueued-token limit of about two items per model: each job holds at most two, and while they are
    # open the rest waits (batch_queue_full), for a later run
    per_item = query("SELECT max(enqueued_tokens / items) FROM jobs")[0][0]
    limit = {"default": 2 * per_item + 10}
    s2 = run(lib2, batch_enqueued_tokens=limit)
    assert s2["batch"]["packed"] == 2 and s2["batch"]["queue_full"] == 3
    rows = query(f"SELECT status, error_kind FROM results WHERE path LIKE '{lib2}%'")
    assert rows == [("interrupted", "batch_queue_full")] * 3
    for _ in range(4):  # each run sends two more once the earlier jobs are collected
        run(lib2, batch_enqueued_tokens=limit, until_done=True)
        if query(f"SELECT count(*) FROM items WHERE path LIKE '{lib2}/%' AND status = 'ok'") == [(5,)]:
            break
    assert set(one_current_row_each(lib2).values()) == {"ok"}
    assert max(gemini.stats()["batch_keys"].values()) == 1


def test_the_providers_enqueued_token_limit_refuses_a_job_and_its_items_go_back(tmp_path, gemini, enrich_home):
    lib = make_library(tmp_path / "lib")
    gemini.set_config(batch_enqueued_tokens=100)
    try:
        s = run(lib)
    finally:
        gemini.set_config(batch_enqueued_tokens=None)
    assert s["batch"]["not_submitted"] == FILES and s["batch"]["open_jobs"] == 0
    (state, reason), = query("SELECT state, reason FROM jobs")
    assert state == "not_created" and "429" in reason and "sent again" in reason
    run(lib, until_done=True)
    assert set(one_current_row_each(lib).values()) == {"ok"}


@pytest.mark.parametrize("outcome", ["expired", "failed"])
def test_an_expired_or_failed_job_puts_its_items_back(tmp_path, gemini, enrich_home, outcome):
    lib = make_library(tmp_path / "lib")
    gemini.set_config(batch_outcome=outcome)
    try:
        s = run(lib, until_done=True)
    finally:
        gemini.set_config(batch_outcome="succeeded")
    assert s["batch"]["collected"]["put_back"] == FILES
    (state, reason), = query("SELECT state, reason FROM jobs")
    assert state == outcome and "sent again" in reason
    assert query("SELECT count(*) FROM results") == [(0,)]
    assert gemini.stats()["batch"]["billed_requests"] == 0
    run(lib, until_done=True)
    assert set(one_current_row_each(lib).values()) == {"ok"}
    assert query("SELECT state FROM jobs ORDER BY created_at") == [(outcome,), ("collected",)]


def test_a_partly_failed_job_keeps_its_successes_and_the_failures_are_retried(tmp_path, gemini, enrich_home):
    lib = make_library(tmp_path / "lib")
    gemini.set_config(batch_item_error_rate=0.4, seed=3)
    try:
        run(lib, until_done=True)
    finally:
        gemini.set_config(batch_item_error_rate=0.0)
    statuses = query("SELECT status, error_kind, count(*) FROM results GROUP BY ALL ORDER BY ALL")
    failed = dict(((s, k), n) for s, k, n in statuses).get(("error", "http_500"), 0)
    assert 0 < failed < FILES
    (state, ok, errors, reason), = query("SELECT state, ok, errors, reason FROM jobs")
    assert (state, ok, errors) == ("collected", FILES - failed, failed) and "did not end ok" in reason
    assert gemini.stats()["batch"]["billed_requests"] == FILES - failed
    run(lib, until_done=True)  # http_500 is transient: the next run sends those again
    assert set(one_current_row_each(lib).values()) == {"ok"}


def rolled_back_to_preparing():
    """The manifest as a crash right after its commit leaves it: the job recorded, its name not yet."""
    from enrich.settings import load_settings
    from enrich.warehouse.jobs import JobStore

    store = JobStore(load_settings().warehouse)
    job, = store.load().values()
    for part in store.job_files():
        if not part.name.endswith("-000001.parquet"):
            part.unlink()
    assert store.load()[job.job_id].state == "preparing"


def test_a_crash_between_creating_and_recording_a_job_is_recovered_by_display_name(tmp_path, gemini, enrich_home):
    lib = make_library(tmp_path / "lib")
    run(lib)
    rolled_back_to_preparing()  # created at the provider, not recorded here
    s = run(lib, until_done=True)
    assert s["batch"]["collected"]["recovered"] == 1 and s["batch"]["packed"] == 0
    assert set(one_current_row_each(lib).values()) == {"ok"}
    assert max(gemini.stats()["batch_keys"].values()) == 1 and gemini.stats()["batch"]["jobs"] == 1

    lib2 = make_library(tmp_path / "lib2", 3)
    for i, p in enumerate(sorted(lib2.glob("*.jpg"))):
        make_jpeg(p, size=(64, 48), color=(3, i * 70, 9))
    gemini.reset()
    run(lib2)
    from enrich.settings import load_settings
    from enrich.warehouse.jobs import JobStore

    store = JobStore(load_settings().warehouse)
    open_job, = store.open_jobs()
    for part in store.job_files():  # the second job: recorded, then the run died before creating it
        if open_job.job_id in part.name and not part.name.endswith("-000001.parquet"):
            part.unlink()
    gemini.reset()  # the provider never saw it
    s = run(lib2, until_done=True)
    assert s["batch"]["collected"]["ended"]["not_created"] == 1
    assert set(one_current_row_each(lib2).values()) == {"ok"}


def test_at_the_deadline_pending_items_are_sent_interactively(tmp_path, gemini, enrich_home):
    lib = make_library(tmp_path / "lib")
    gemini.set_config(batch_running_polls=10_000)  # the job never finishes
    try:
        s = run(lib, until_done=True, deadline_s=0.3)
    finally:
        gemini.set_config(batch_running_polls=1)
    assert s["batch"]["sent_interactively_at_deadline"] == FILES
    assert set(one_current_row_each(lib).values()) == {"ok"}
    assert query("SELECT DISTINCT batch FROM results") == [(False,)]
    (state, reason), = query("SELECT state, reason FROM jobs")
    assert state == "cancelled" and "deadline" in reason
    stats = gemini.stats()
    assert stats["billed_requests"] == FILES and stats["batch"]["billed_requests"] == 0


def test_open_jobs_count_against_the_daily_cap_of_later_runs(tmp_path, gemini, enrich_home, monkeypatch):
    from enrich.flows.pipeline import budget_from_settings
    from enrich.settings import load_settings

    lib = make_library(tmp_path / "lib")
    gemini.set_config(batch_running_polls=3)
    run(lib)
    (reserved,), = query("SELECT reserved_usd FROM jobs")
    settings = load_settings().with_overrides(daily_budget_usd=1.0)
    budget = budget_from_settings(settings)
    assert budget.already_spent == reserved and budget.run_cap == Decimal(1) - reserved
    # a daily cap below what the open job holds leaves nothing for the next run: new files are over budget
    lib2 = make_library(tmp_path / "lib2", 3)
    for i, p in enumerate(sorted(lib2.glob("*.jpg"))):
        make_jpeg(p, size=(64, 48), color=(i * 50, 1, 2))
    s = run(lib2, daily_budget_usd=float(reserved))
    assert s["over_budget"] == 3 and s["batch"]["packed"] == 0
    run(lib, mode="sync", until_done=True)  # collects: the reservation turns into the (lower) real spend
    settled = budget_from_settings(settings)
    (spent,), = query("SELECT sum(cost_usd) FROM results WHERE batch")
    assert settled.already_spent == spent < reserved


def test_flex_sends_interactive_requests_on_the_flex_tier_at_its_price(tmp_path, gemini, enrich_home):
    from enrich.backends.base import Usage
    from enrich.pricing import cost_usd, load_prices
    from enrich.settings import load_settings

    lib = make_library(tmp_path / "lib", 5)
    gemini.set_config(flex_shed_rate=0.3, seed=5)
    try:
        s = run(lib, mode="flex", backoff_initial_s=0.01, backoff_max_s=0.02, max_attempts=10)
    finally:
        gemini.set_config(flex_shed_rate=0.0)
    assert s["by_status"] == {"ok": 5}
    stats = gemini.stats()
    assert stats["flex"]["billed_requests"] == 5 and stats["billed_requests"] == 0 and stats["flex"]["shed"] > 0
    price = load_prices(load_settings().config_dir).price("gemini-3.1-flash-lite")
    assert price.flex_factor == Decimal("0.5")
    for inp, out, c in query("SELECT input_tokens, output_tokens, cost_usd FROM results"):
        assert c == cost_usd(Usage(input_tokens=inp, output_tokens=out), price, flex=True)


def test_enrich_jobs_lists_collects_and_cancels(tmp_path, gemini, enrich_home, capsys):
    from enrich.cli import main

    lib = make_library(tmp_path / "lib", 4)
    gemini.set_config(batch_running_polls=10_000)
    try:
        run(lib)
        assert main(["jobs"]) == 0
        out = capsys.readouterr().out
        assert "running" in out or "pending" in out
        assert "open job(s) hold $" in out
        assert main(["jobs", "collect", "--json"]) == 0
        assert '"still_open": 1' in capsys.readouterr().out
        job_id = query("SELECT job_id FROM jobs")[0][0]
        assert main(["jobs", "cancel", job_id]) == 0
        assert "cancelled" in capsys.readouterr().out
    finally:
        gemini.set_config(batch_running_polls=1)
    assert query("SELECT state FROM jobs") == [("cancelled",)]
    run(lib, until_done=True)
    assert set(one_current_row_each(lib).values()) == {"ok"}


def test_estimate_prices_each_mode(tmp_path, enrich_home):
    from enrich.flows.estimate import estimate
    from enrich.settings import load_settings

    lib = make_library(tmp_path / "lib", 4)
    settings = load_settings()
    sync, batch, flex = (estimate([str(lib)], settings, mode=m, history=False) for m in ("sync", "batch", "flex"))
    assert batch.cost_usd * 2 == pytest.approx(sync.cost_usd, rel=Decimal('1e-6'))
    assert flex.cost_usd * 2 == pytest.approx(sync.cost_usd, rel=Decimal('1e-6'))
    assert batch.time_s is None and "24 h" in batch.time_bound
    assert flex.latency_s >= 60 and sync.latency_s < 60


def test_fast_jsonl_lines_are_what_the_sdk_would_send(gemini):
    import json

    from enrich.backends.base import DescribeRequest, MediaPart
    from enrich.backends.gemini import GeminiBackend
    from enrich.backends.gemini_batch import GeminiBatchClient
    from enrich.schemas.descriptions import DESCRIPTION_SCHEMAS
    from pydantic import SecretStr

    backend = GeminiBackend("gemini-3.1-flash-lite", api_key=SecretStr("k"), base_url=gemini.base_url)
    client = GeminiBatchClient(backend)
    schema = DESCRIPTION_SCHEMAS["image"]
    builder = client.line_builder("Describe this photo.", schema, 512, "low")
    media = [(b"\xff\xd8\xff\xe0 not really a jpeg \x00\x01", "image/jpeg")]
    request = DescribeRequest(key="abc:v1", prompt="Describe this photo.", schema=schema,
                              media=(MediaPart(mime="image/jpeg", data=media[0][0]),), max_output_tokens=512,
                              resolution="low")
    assert json.loads(builder.jsonl("abc:v1", media)) == json.loads(client.jsonl_line(client.inlined(request)))


def test_serve_takes_the_mode_to_each_scheduled_run(tmp_path):
    """`enrich serve --mode batch`: the serving process's environment carries the mode (a flow parameter may
    not set it: flows/run_options.py), so each nightly run it starts collects the jobs of the night before and
    submits new ones (what every batch run does, tested above)."""
    import inspect

    from enrich.cli import build_parser
    from enrich.commands.serve import flow_parameters, process_environment
    from enrich.settings import load_settings

    args = build_parser().parse_args(["serve", str(tmp_path), "--cron", "0 2 * * *", "--mode", "batch"])
    params = flow_parameters([str(tmp_path)], args)
    assert "mode" not in params["overrides"]
    env = process_environment(args)
    assert env["ENRICH_MODE"] == "batch"
    assert load_settings(env).mode == "batch", "what a scheduled run of that process loads"
    from enrich.flows.enrich_flow import enrich_flow

    assert set(params) <= set(inspect.signature(enrich_flow.fn).parameters)


def test_a_job_older_than_the_provider_keeps_results_is_expired(tmp_path, gemini, enrich_home):
    import time

    lib = make_library(tmp_path / "lib", 3)
    gemini.set_config(batch_pending_polls=1, batch_running_polls=10_000)  # pending, then running for ever
    run(lib)
    assert query("SELECT state FROM jobs") == [("pending",)]
    time.sleep(0.4)
    s = run(lib, mode="sync", batch_keep_hours=0.0001)  # 0.36 s: this job is too old now
    (state, reason), = query("SELECT state, reason FROM jobs")
    assert state == "expired" and "0.0001 h" in reason and "sent again" in reason
    assert s["by_status"] == {"ok": 3}  # the same run sent them again, interactively


def test_items_packed_when_the_run_is_stopped_get_interrupted_rows_and_no_job(tmp_path, gemini, enrich_home):
    from enrich.flows.pipeline import close_run, discover_files, finish_batch, open_run, process_chunk
    from enrich.settings import load_settings

    lib = make_library(tmp_path / "lib", 4)
    settings = load_settings().with_overrides(rpm=0, tpm=0, progress="off", mode="batch")
    ctx = open_run([str(lib)], settings)
    try:
        process_chunk(ctx.run_id, list(discover_files(ctx)))
        ctx.describer.stop("interrupted by SIGINT")  # what the signal handler does
        finish_batch(ctx)
    finally:
        close_run(ctx)
    assert gemini.stats()["batch"]["jobs"] == 0 and not query("SELECT * FROM jobs")
    assert set(one_current_row_each(lib).values()) == {"interrupted"}
    run(lib, until_done=True)
    assert set(one_current_row_each(lib).values()) == {"ok"}
