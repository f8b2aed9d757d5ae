"""The Prefect flow: discover -> (prepare -> describe -> write) per chunk.

Prefect maps one task run over each *chunk* of items (settings.chunk_size), never one per file: a task run
costs 12-30 ms and ~0.1 MB of orchestration, a chunk's per-item work is done inside it. Several chunks run at
once (threads; enough that the prepared-item queue never runs dry, at least 3) and a new one starts as soon
as *any* finishes, so one slow item (a long retryDelay) never holds the others back. The describer, rate
limiter, budget and preparation pool are shared by all of them.

SIGINT/SIGTERM while the flow runs: stop dispatching, give requests in flight `stop_grace_s`, write every
row, record the run as `interrupted` (a second signal stops waiting, a third leaves at once). Prefect installs
its own SIGTERM handler for the flow run; ours replaces it for the body only and puts it back after.

Importing this module imports Prefect but changes no setting: the commands that start Prefect (`enrich run`,
`enrich serve`) call enrich.prefect_env.configure_prefect_env() first.
"""
from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from enrich.progress import ProgressReporter
from enrich.errors import ConfigError
from enrich.schemas.vocab import RunStatus
from enrich.settings import load_settings
from enrich.flows.run_options import RunOptions, check_roots, current_trusted_settings
from enrich.flows.pipeline import (
    MAX_CHUNKS_IN_FLIGHT, RunContext, close_run, feed_chunks, finish_batch, independent_roots,
    interrupt_run, open_run, process_chunk, run_summary, stop_notice, take_chunk, write_run_snapshot,
)
from enrich.tasks.discover import count_files, own_state_dirs
from enrich.tasks.selection import Selection

SNAPSHOT_EVERY_S = 5.0  # a "running" snapshot of the run's counts at most this often (each is a Parquet file)


@task(name="enrich-chunk", cache_policy=NO_CACHE, persist_result=False, retries=0,
      task_run_name="chunk-{seq}")
def chunk_task(run_id: str, seq: int) -> None:
    """One chunk. Its files wait in the run's context under `seq`: Prefect walks every task parameter (to find
    futures in it), which for a list of 100 files cost more than the rest of our per-item work. It returns
    nothing: the counts go to the run's context, and Prefect keeps a record of every task's return value
    (and its state) for as long as the flow runs, which would grow with the library."""
    process_chunk(run_id, take_chunk(run_id, seq))


@contextmanager
def stop_on_signals(handler: Callable[[int], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to `handler(signum)` inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda n, _frame: handler(n))
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _signal_handler(ctx: RunContext) -> Callable[[int], None]:
    """1st signal: stop dispatching, grace period. 2nd: stop waiting for requests in flight. 3rd: leave now
    (chunks not yet written are lost; everything committed before stays)."""
    received = [0]

    def handle(signum: int) -> None:
        received[0] += 1
        if received[0] >= 3:
            os.write(2, b"enrich: stopped at once; results not yet written are lost\n")
            os._exit(128 + signum)
        interrupt_run(ctx, signum)

    return handle


def _count_in_background(ctx: RunContext) -> None:
    def count() -> None:
        try:
            if ctx.settings.sample is not None or ctx.settings.limit is not None:
                ctx.progress.total = min(n for n in (ctx.settings.sample, ctx.settings.limit) if n is not None)
                return
            ctx.progress.total = count_files(independent_roots(ctx.roots), Selection.from_settings(ctx.settings),
                                             own_state_dirs(ctx.settings.home, ctx.settings.warehouse))
        except Exception:  # only progress needs it
            pass

    threading.Thread(target=count, name="enrich-count", daemon=True).start()


def _reporter(ctx: RunContext) -> ProgressReporter:
    told = []

    def notice() -> str | None:
        if ctx.stopping and not told:
            told.append(True)
            return stop_notice(ctx)
        return None

    def extra() -> str:
        c = ctx.describer.concurrency
        if c.decreases and c.current < c.maximum:
            return f"throttled (429): concurrency {c.current}/{c.maximum}"
        return ""

    return ProgressReporter(ctx.progress, ctx.settings.progress, requests=lambda: ctx.describer.stats.requests,
                            notice=notice, extra=extra, stopping=lambda: ctx.stopping,
                            interval_s=ctx.settings.progress_interval_s)


def run_chunks(ctx: RunContext) -> None:
    """Feed chunks to the task runner, keeping `chunks_in_flight` running, until the files run out or the run
    stops; then wait for every chunk already started. Snapshots the run every few seconds."""
    last_snapshot = time.monotonic()

    def submit(seq: int, files: list) -> Any:
        ctx.chunk_files[seq] = files
        return chunk_task.submit(ctx.run_id, seq)

    def snapshot_now_and_then() -> None:
        nonlocal last_snapshot
        if time.monotonic() - last_snapshot >= SNAPSHOT_EVERY_S:
            last_snapshot = time.monotonic()
            write_run_snapshot(ctx, RunStatus.RUNNING)

    feed_chunks(ctx, limit=ctx.chunks_in_flight(), next_seq=itertools.count(1).__next__, submit=submit,
                collect=lambda seq, future: future.result(), tick=snapshot_now_and_then)


@flow(name="enrich", task_runner=ThreadPoolTaskRunner(max_workers=MAX_CHUNKS_IN_FLIGHT), persist_result=False,
      log_prints=False, validate_parameters=False)
def enrich_flow(roots: list[str], overrides: dict[str, Any] | None = None, reprocess: list[str] | None = None,
                wait_for_lock: bool = False, allow_mass_removal: bool = False, until_done: bool = False,
                deadline_s: float | None = None, runner: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe the new and changed media under `roots` (incremental); returns the run summary.

    Parameters are plain values only (they are stored by Prefect, and anyone who can reach Prefect's API can
    set them): `overrides` is validated as a `RunOptions` (model id, budget, concurrency, rpm, tpm,
    resolution, chunk size, progress); any other key (an endpoint, a folder, the metadata switch) refuses the
    run before anything is opened or sent. Settings, and the API key with them, are loaded inside the flow
    from the environment and config/ (or taken from `trusted_settings` of an in-process CLI call).
    `reprocess`: any of stale, failed, all. `wait_for_lock`: queue behind another run on the same warehouse.
    `allow_mass_removal`: mark paths gone even under a root that yielded nothing or lost most of its files
    (otherwise withheld there, as for an unplugged disk; the summary's `gone_withheld` says where).
    Batch mode (settings.mode): `until_done` polls the jobs until each has ended; `deadline_s` (with it)
    sends what is still pending then interactively.
    `runner`: {"kind": "dask", "workers": N} when run through `dask_flow()` (chunks on Dask workers).
    """
    options = RunOptions.from_parameters(overrides)
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        raise ConfigError("refused flow parameters (roots must be a list of paths)")
    if not isinstance(allow_mass_removal, bool) or not isinstance(wait_for_lock, (bool, int, float)):
        raise ConfigError("refused flow parameters (allow_mass_removal and wait_for_lock are true or false)")
    check_roots(roots)
    settings = options.apply(current_trusted_settings() or load_settings())
    ctx = open_run(roots, settings, reprocess=reprocess or (), wait_for_lock=wait_for_lock,
                   allow_mass_removal=allow_mass_removal)
    status = RunStatus.FAILED
    message = None
    ledger = None
    try:
        with stop_on_signals(_signal_handler(ctx)):
            _count_in_background(ctx)
            with _reporter(ctx):
                if (runner or {}).get("kind") == "dask":
                    from enrich.flows.dask_runner import run_chunks_dask, worker_overrides

                    ledger = run_chunks_dask(ctx, worker_overrides(ctx.settings), int(runner.get("workers") or 1))
                else:
                    run_chunks(ctx)
            finish_batch(ctx, until_done=until_done, deadline_s=deadline_s, say=_say)
        status = None
    except BaseException as exc:
        ctx.describer.stop("the run failed")
        message = f"{exc.__class__.__name__}: {exc}"
        raise
    finally:
        final = close_run(ctx, status, message)
    summary = summary_of(ctx, final)
    if ledger is not None:
        summary["coordinator"] = ledger  # allowances granted at most at once, charged for dead workers, ...
    return summary


def dask_flow(address: str | None = None, workers: int | None = None):
    """`enrich_flow` with prefect-dask's task runner: call it with runner={"kind": "dask", "workers": N}."""
    from enrich.flows.dask_runner import dask_task_runner

    return enrich_flow.with_options(task_runner=dask_task_runner(address, workers))


def _say(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


def summary_of(ctx: RunContext, status: str) -> dict[str, Any]:
    return run_summary(ctx, status)
