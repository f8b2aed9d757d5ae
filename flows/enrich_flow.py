"""The Prefect flow: discover -> (prepare -> describe -> write) per chunk.

Prefect maps one task run over each *chunk* of items (settings.chunk_size), never one per file: a task run
costs 12-30 ms and ~0.1 MB of orchestration, a chunk's per-item work is done inside it. A few chunks run at
once (threads) so preparation of the next chunk overlaps the requests of the current one; the describer,
rate limiter and budget are shared by all of them.
"""
from __future__ import annotations

from collections import deque
from typing import Any

from enrich.prefect_env import configure_prefect_env

configure_prefect_env()

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from enrich.settings import load_settings  # noqa: E402
from flows.pipeline import (  # noqa: E402
    RunStats, close_run, discover_files, open_run, process_chunk, write_run_snapshot,
)
from tasks.discover import iter_batches  # noqa: E402

CHUNKS_IN_FLIGHT = 3


@task(name="enrich-chunk", cache_policy=NO_CACHE, persist_result=False, retries=0,
      task_run_name="chunk-{seq}")
def chunk_task(run_id: str, files: list, seq: int) -> RunStats:
    return process_chunk(run_id, files)


@flow(name="enrich", task_runner=ThreadPoolTaskRunner(max_workers=CHUNKS_IN_FLIGHT), persist_result=False,
      log_prints=False, validate_parameters=False)
def enrich_flow(roots: list[str], overrides: dict[str, Any] | None = None, reprocess: list[str] | None = None,
                wait_for_lock: bool = False) -> dict[str, Any]:
    """Describe the new and changed media under `roots` (incremental); returns the run summary.

    Parameters are plain values only (they are stored by Prefect): settings, and the API key with them,
    are loaded inside the flow from the environment and config/. `reprocess`: any of stale, failed, all.
    `wait_for_lock`: queue behind another run on the same warehouse instead of refusing.
    """
    settings = load_settings().with_overrides(**(overrides or {}))
    ctx = open_run(roots, settings, reprocess=reprocess or (), wait_for_lock=wait_for_lock)
    status = "failed"
    message = None
    try:
        pending: deque = deque()
        seq = 0
        for files in iter_batches(discover_files(ctx), settings.chunk_size):
            if ctx.describer.stopping.is_set():
                # a fatal error or a signal: the remaining files still get one row each
                process_chunk(ctx.run_id, files)
                continue
            seq += 1
            pending.append(chunk_task.submit(ctx.run_id, files, seq))
            while len(pending) >= CHUNKS_IN_FLIGHT:
                pending.popleft().result()
                write_run_snapshot(ctx, "running")
        while pending:
            pending.popleft().result()
        status = None
    except KeyboardInterrupt:
        ctx.describer.stopping.set()
        status, message = "interrupted", "interrupted by the user"
        raise
    except BaseException as exc:
        message = f"{exc.__class__.__name__}: {exc}"
        raise
    finally:
        final = close_run(ctx, status, message)
    return summary_of(ctx, final)


def summary_of(ctx, status: str) -> dict[str, Any]:
    s = ctx.stats
    budget = ctx.describer.budget
    return {
        "run_id": ctx.run_id,
        "status": status,
        "model": ctx.settings.model,
        "warehouse": str(ctx.settings.warehouse),
        "items": s.items,
        "unchanged": ctx.unchanged,
        "reused": s.reused,
        "crashed_runs_found": list(ctx.recovered.get("runs_marked_crashed", [])),
        "by_status": dict(sorted(s.by_status.items())),
        "input_tokens": s.input_tokens,
        "output_tokens": s.output_tokens,
        "spent_usd": str(s.spent_usd),
        "budget_usd": None if budget.run_cap is None else str(budget.run_cap),
        "daily_budget_usd": None if budget.daily_cap is None else str(budget.daily_cap),
        "spent_today_before_usd": str(budget.already_spent),
        "reserved_peak_usd": str(budget.reserved_peak),
        "over_budget": s.by_status.get("over_budget", 0),
        "requests": ctx.describer.requests_sent,
        "fatal": str(ctx.describer.fatal) if ctx.describer.fatal else None,
    }
