"""The run as plain functions: open a run, process one chunk, close the run. No Prefect here:
flows/enrich_flow.py wraps these in a @flow and a chunk @task, and tests can call them directly.

A chunk is the unit of work and of commit: prepare its items (all cores), describe them (shared describer),
write its rows as one Parquet part (atomic rename). A chunk is never one file: see DEVELOPERS notes on
Prefect's per-task overhead.

Runs are incremental (tasks/incremental.py): a file whose bytes are already described at the current
enrichment version gets no new row (its earlier row stays its one current outcome), moved files and
duplicates get a copied row (cost 0), vanished paths a `gone` row. One run writes to a warehouse at a time
(warehouse/lock.py); a run first cleans what a killed run left (warehouse/state.py `recover`), and since
each chunk commits on its own, a rerun after a crash redoes only what was not committed.
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
from tasks.hash_cache import HashCache, default_cache_path
from tasks.incremental import Planner, parse_reprocess
from tasks.prepare import PrepareOptions, PreparedItem, prepare_file
from tasks.records import RunInfo, copied_row, schema_hash, short_hash, status_row
from warehouse.lock import WarehouseLock
from warehouse.state import load_rows, load_state, recover
from warehouse.store import Warehouse

log = logging.getLogger("enrich.run")

STATUSES = ("ok", "error", "blocked", "skipped", "over_budget", "interrupted", "gone")


@dataclass
class RunStats:
    items: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    spent_usd: Decimal = Decimal(0)
    reused: int = 0  # rows copied from another row of the same bytes, no model call

    def add_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.items += 1
            if row.get("reused_from"):
                self.reused += 1
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
        self.reused += other.reused


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
    warehouse_lock: WarehouseLock | None = None
    planner: Planner | None = None
    hash_cache: HashCache | None = None
    recovered: dict[str, Any] = field(default_factory=dict)

    @property
    def unchanged(self) -> int:
        return self.planner.unchanged if self.planner is not None else 0

    def next_seq(self) -> int:
        with self.lock:
            self.seq += 1
            return self.seq


# Live runs of this process, by id: chunk tasks receive only the id and a list of plain dataclasses,
# so task parameters stay small and serialisable.
ACTIVE_RUNS: dict[str, RunContext] = {}


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def open_run(roots: list[str], settings: Settings, *, run_id: str | None = None,
             reprocess: Iterable[str] = (), wait_for_lock: bool | float = False) -> RunContext:
    """Take the warehouse, create the backend, check it can work (preflight), clean up after a dead run,
    load what is already done, record the run as running."""
    run_id = run_id or new_run_id()
    reprocess_set = parse_reprocess(reprocess)
    lock = WarehouseLock(settings.warehouse, f"enrich run {run_id}").acquire(wait=wait_for_lock)
    try:
        return _open_locked(roots, settings, run_id, reprocess_set, lock)
    except BaseException:
        lock.release()
        raise


def _open_locked(roots: list[str], settings: Settings, run_id: str, reprocess: frozenset[str],
                 lock: WarehouseLock) -> RunContext:
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
        warehouse_lock=lock,
    )
    try:
        ctx.recovered = recover(ctx.warehouse, run_id)
        ctx.planner = Planner(load_state(ctx.warehouse), run_id, lambda kind: info.version_of(kind)[2], reprocess)
        ctx.hash_cache = HashCache(default_cache_path(settings.home))
        write_run_snapshot(ctx, "running")
    except BaseException:
        ctx.prepare_pool.shutdown(wait=False)
        describer.close()
        if ctx.hash_cache is not None:
            ctx.hash_cache.close()
        raise
    ACTIVE_RUNS[run_id] = ctx
    return ctx


def discover_files(ctx: RunContext) -> Iterator[DiscoveredFile]:
    """Every file under the roots that needs a row in this run, once (overlapping roots are de-duplicated
    by path); after the walk, the duplicates of files sent in this run and the paths now gone."""
    seen: set[str] = set()
    for file in discover(ctx.roots, hash_cache=ctx.hash_cache):
        if file.path in seen:
            continue
        seen.add(file.path)
        if ctx.planner is None or ctx.planner.admit(file):
            yield file
    if ctx.hash_cache is not None:
        ctx.hash_cache.flush()
    if ctx.planner is not None:
        yield from ctx.planner.late_files(ctx.roots)


def copy_rows(ctx: RunContext, files: list[DiscoveredFile]) -> tuple[dict[int, dict[str, Any]], dict[int, int]]:
    """Rows for the files planned as copies (moved, duplicate, described before), by index in `files`;
    and {duplicate index: leader index} for duplicates whose leader is in this same chunk (copied once the
    leader's row exists)."""
    planner = ctx.planner
    if planner is None:
        return {}, {}
    index = {f.path: i for i, f in enumerate(files)}
    refs, same_chunk = {}, {}
    for i, f in enumerate(files):
        ref = planner.take_copy(f.path)
        if ref is None:
            continue
        if ref.run_id == ctx.run_id and ref.path in index:
            same_chunk[i] = index[ref.path]
        else:
            planner.wait_for_leader(ref)  # a leader in an earlier chunk (duplicates come after the walk)
            refs[i] = ref
    if not refs:
        return {}, same_chunk
    sources = load_rows(ctx.warehouse, {(r.run_id, r.path) for r in refs.values()})
    # A source that cannot be read back (it always can) leaves the file to be described like any other.
    return ({i: copied_row(files[i], ctx.info, sources[(r.run_id, r.path)])
             for i, r in refs.items() if (r.run_id, r.path) in sources}, same_chunk)


def process_chunk(run_id: str, files: list[DiscoveredFile]) -> RunStats:
    """Prepare, describe and commit one chunk. Every file in `files` gets exactly one row."""
    ctx = ACTIVE_RUNS[run_id]
    try:
        return _process_chunk(ctx, files)
    finally:
        if ctx.planner is not None:
            ctx.planner.chunk_done(files)  # duplicates waiting on this chunk's rows may go on


def _process_chunk(ctx: RunContext, files: list[DiscoveredFile]) -> RunStats:
    rows: list[dict[str, Any] | None] = [None] * len(files)
    to_prepare: list[int] = []
    supported = ctx.describer.backend.capabilities
    copies, later = copy_rows(ctx, files)
    for i, f in enumerate(files):
        if i in copies:
            rows[i] = copies[i]
        elif i in later:
            continue
        elif f.status != "pending":
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
    for i, leader in later.items():
        rows[i] = copied_row(files[i], ctx.info, rows[leader])
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
            "unchanged": ctx.unchanged,
            "reused": s.reused,
            "gone": s.by_status.get("gone", 0),
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
        try:
            ctx.prepare_pool.shutdown(wait=True)
            ctx.describer.close()
            if ctx.hash_cache is not None:
                ctx.hash_cache.close()
        finally:
            ACTIVE_RUNS.pop(ctx.run_id, None)
            if ctx.warehouse_lock is not None:
                ctx.warehouse_lock.release()
    return status
