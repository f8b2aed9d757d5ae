"""The run as plain functions: open a run, process one chunk, close the run. No Prefect here:
flows/enrich_flow.py wraps these in a @flow and a chunk @task, and tests can call them directly.

A chunk is the unit of work and of commit: prepare its items (all cores), describe them (shared describer),
write its rows as one Parquet part (atomic rename). A chunk is never one file: see DEVELOPERS notes on
Prefect's per-task overhead.
"""
from __future__ import annotations

import logging
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterable, Iterator

from enrich.backends import backend_name, create_backend
from enrich.budget import budget_from_settings
from enrich.limiter import RateLimiter
from enrich.pricing import load_prices
from enrich.settings import Settings
from schemas.descriptions import DESCRIPTION_SCHEMAS
from tasks.describe import DescribeOptions, Describer
from tasks.discover import DiscoveredFile, discover
from tasks.prepare import PrepareOptions, PreparedItem, prepare_file
from tasks.records import RunInfo, schema_hash, short_hash, status_row
from warehouse.store import Warehouse

log = logging.getLogger("enrich.run")

STATUSES = ("ok", "error", "blocked", "skipped", "over_budget", "interrupted")


@dataclass
class RunStats:
    items: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    spent_usd: Decimal = Decimal(0)

    def add_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.items += 1
            self.by_status[row["status"]] = self.by_status.get(row["status"], 0) + 1
            self.input_tokens += int(row.get("input_tokens") or 0)
            self.output_tokens += int(row.get("output_tokens") or 0) + int(row.get("thinking_tokens") or 0)
            self.spent_usd += row.get("cost_usd") or Decimal(0)

    def merge(self, other: "RunStats") -> None:
        self.items += other.items
        for k, v in other.by_status.items():
            self.by_status[k] = self.by_status.get(k, 0) + v
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.spent_usd += other.spent_usd


@dataclass
class RunContext:
    run_id: str
    settings: Settings
    roots: list[str]
    info: RunInfo
    describer: Describer
    warehouse: Warehouse
    prepare_pool: ThreadPoolExecutor
    prepare_options: PrepareOptions
    started_at: datetime
    stats: RunStats = field(default_factory=RunStats)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seq: int = 0
    snapshot_seq: int = 0

    def next_seq(self) -> int:
        with self.lock:
            self.seq += 1
            return self.seq


# Live runs of this process, by id: chunk tasks receive only the id and a list of plain dataclasses,
# so task parameters stay small and serialisable.
ACTIVE_RUNS: dict[str, RunContext] = {}


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def open_run(roots: list[str], settings: Settings, *, run_id: str | None = None) -> RunContext:
    """Create the backend, check it can work (preflight), record the run as running."""
    run_id = run_id or new_run_id()
    prices = load_prices(settings.config_dir)
    price = prices.price(settings.model)  # fails before any spend if the model has no price
    backend = create_backend(settings.model, settings)
    schemas = dict(DESCRIPTION_SCHEMAS)
    prompts = {kind: settings.prompt_for(kind) for kind in schemas}
    info = RunInfo(
        run_id=run_id,
        backend=backend_name(settings.model),
        model=settings.model,
        resolution=settings.resolution,
        price_date=prices.date,
        prompt_hashes=tuple(sorted((k, short_hash(p)) for k, p in prompts.items())),
        schema_hashes=tuple(sorted((k, schema_hash(s)) for k, s in schemas.items())),
    )
    rate = settings.rate_limit()
    concurrency = settings.concurrency
    if backend.capabilities.local:
        concurrency = min(concurrency, backend.capabilities.default_concurrency)
    describer = Describer(
        backend, info, price,
        DescribeOptions(prompts=prompts, schemas=schemas, max_output_tokens=settings.max_output_tokens,
                        resolution=settings.resolution, concurrency=concurrency,
                        max_attempts=settings.max_attempts),
        budget=budget_from_settings(settings),  # --budget and what is left of the daily cap
        limiter=None if backend.capabilities.local else RateLimiter(rate.rpm, rate.tpm),
    )
    try:
        describer.preflight()
    except BaseException:
        describer.close()
        raise
    workers = settings.prepare_workers or os.cpu_count() or 2
    ctx = RunContext(
        run_id=run_id,
        settings=settings,
        roots=[str(r) for r in roots],
        info=info,
        describer=describer,
        warehouse=Warehouse(settings.warehouse),
        prepare_pool=ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enrich-prepare"),
        prepare_options=PrepareOptions.from_settings(settings),
        started_at=datetime.now(timezone.utc),
    )
    ctx.warehouse.clean_tmp()
    write_run_snapshot(ctx, "running")
    ACTIVE_RUNS[run_id] = ctx
    return ctx


def discover_files(ctx: RunContext) -> Iterator[DiscoveredFile]:
    """Every file under the roots, once (overlapping roots are de-duplicated by path)."""
    seen: set[str] = set()
    for file in discover(ctx.roots):
        if file.path in seen:
            continue
        seen.add(file.path)
        yield file


def process_chunk(run_id: str, files: list[DiscoveredFile]) -> RunStats:
    """Prepare, describe and commit one chunk. Every file in `files` gets exactly one row."""
    ctx = ACTIVE_RUNS[run_id]
    rows: list[dict[str, Any] | None] = [None] * len(files)
    to_prepare: list[int] = []
    supported = ctx.describer.backend.capabilities
    for i, f in enumerate(files):
        if f.status != "pending":
            rows[i] = status_row(f, ctx.info, f.status, f.error_kind, f.error)
        elif f.kind not in DESCRIPTION_SCHEMAS:
            rows[i] = status_row(f, ctx.info, "skipped", "unsupported_kind",
                                 f"{f.kind} files are not described yet")
        elif not supported.accepts(f.mime) and f.kind != "image":  # images are re-encoded to JPEG first
            rows[i] = status_row(f, ctx.info, "skipped", "unsupported_type",
                                 f"{f.mime} is not accepted by {ctx.info.backend}")
        else:
            to_prepare.append(i)

    prepared_results = list(ctx.prepare_pool.map(lambda i: prepare_file(files[i], ctx.prepare_options), to_prepare))
    ready: list[tuple[int, PreparedItem]] = []
    for i, res in zip(to_prepare, prepared_results):
        if isinstance(res, PreparedItem):
            ready.append((i, res))
        else:
            rows[i] = status_row(files[i], ctx.info, "error", res.kind, str(res), getattr(res, "meta", None))
    if ready:
        described = ctx.describer.describe_batch([item for _, item in ready])
        for (i, _), row in zip(ready, described):
            rows[i] = row
    final = [r for r in rows if r is not None]
    assert len(final) == len(files), "every file gets exactly one row"
    ctx.warehouse.write_results(final, ctx.run_id, ctx.next_seq())
    stats = RunStats()
    stats.add_rows(final)
    with ctx.lock:
        ctx.stats.merge(stats)
    return stats


def write_run_snapshot(ctx: RunContext, status: str, message: str | None = None) -> None:
    with ctx.lock:
        ctx.snapshot_seq += 1
        seq = ctx.snapshot_seq
        s = ctx.stats
        budget = ctx.describer.budget
        snapshot = {
            "run_id": ctx.run_id,
            "seq": seq,
            "started_at": ctx.started_at,
            "finished_at": None if status == "running" else datetime.now(timezone.utc),
            "status": status,
            "model": ctx.settings.model,
            "roots": ctx.roots,
            "items": s.items,
            "ok": s.by_status.get("ok", 0),
            "errors": s.by_status.get("error", 0),
            "skipped": s.by_status.get("skipped", 0),
            "blocked": s.by_status.get("blocked", 0),
            "over_budget": s.by_status.get("over_budget", 0),
            "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens,
            "spent_usd": s.spent_usd,
            "budget_usd": budget.run_cap,  # what this run may spend: min(--budget, daily cap left)
            "reserved_peak_usd": budget.reserved_peak,
            "price_date": ctx.info.price_date,
            "message": message,
        }
    ctx.warehouse.write_run(snapshot)


def close_run(ctx: RunContext, status: str | None = None, message: str | None = None) -> str:
    """Record the run's end. Returns its final status."""
    try:
        if status is None:
            if ctx.describer.fatal is not None:
                status, message = "failed", str(ctx.describer.fatal)
            elif ctx.describer.stopping.is_set():
                status = "interrupted"
            else:
                status = "finished"
        write_run_snapshot(ctx, status, message)
    finally:
        ctx.prepare_pool.shutdown(wait=True)
        ctx.describer.close()
        ACTIVE_RUNS.pop(ctx.run_id, None)
    return status
