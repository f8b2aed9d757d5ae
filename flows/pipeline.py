"""The run as plain functions: open a run, process one chunk, close the run. No Prefect here:
flows/enrich_flow.py wraps these in a @flow and a chunk @task, and tests can call them directly.

A chunk is the unit of commit: its rows are written as one Parquet part (atomic rename) once every file in
it has an outcome. Inside a chunk, work streams per item: each file is prepared on the shared thread pool
(all cores; Pillow releases the GIL) and handed to the shared describer the moment it is ready, so requests
start before the rest of the chunk is decoded. A run-wide semaphore (`ready`) bounds how many prepared
items exist at once (being prepared, waiting for a request slot or in flight), so memory stays flat
whatever the chunk size or library size. A chunk is never one file: see DEVELOPERS notes on Prefect's
per-task overhead.

Stopping (a signal, a fatal error): no new chunk starts and no new file is prepared; every file already
handed to a chunk still gets exactly one row (`interrupted` when it was not sent). Files the walk never
reached get no row: their previous outcome, if any, stands and the next run picks them up.

Runs are incremental (tasks/incremental.py): a file whose bytes are already described at the current
enrichment version gets no new row (its earlier row stays its one current outcome), moved files and
duplicates get a copied row (cost 0), vanished paths a `gone` row. One run writes to a warehouse at a time
(warehouse/lock.py); a run first cleans what a killed run left (warehouse/state.py `recover`), and since
each chunk commits on its own, a rerun after a crash redoes only what was not committed.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterable, Iterator, Sequence

from enrich.schemas.vocab import ErrorKind, RunStatus, Status
from enrich.backends import backend_name, create_backend
from enrich.budget import ZERO, Budget, budget_for_run
from enrich.limiter import RateLimiter
from enrich.pricing import load_prices
from enrich.progress import RunProgress
from enrich.settings import Settings
from enrich.schemas.descriptions import DESCRIPTION_SCHEMAS
from enrich.tasks.describe import DescribeOptions, Describer
from enrich.tasks.discover import DiscoveredFile, discover
from enrich.tasks.hash_cache import HashCache, default_cache_path
from enrich.tasks.incremental import Planner, parse_reprocess, profiles_of, run_info_for
from enrich.tasks.prepare import PrepareOptions, PreparedItem, prepare_file
from enrich.tasks.records import RunInfo, copied_row, profile_key, status_row
from enrich.warehouse.lock import WarehouseLock
from enrich.warehouse.state import load_rows, load_state, recover
from enrich.warehouse.store import Warehouse

log = logging.getLogger("enrich.run")

STATUSES = (Status.OK, Status.ERROR, Status.BLOCKED, Status.SKIPPED, Status.OVER_BUDGET, Status.INTERRUPTED, Status.GONE)
MAX_CHUNKS_IN_FLIGHT = 32  # the flow's task runner has this many threads


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
    ready: threading.Semaphore  # prepared items alive at once (bounded queue between prepare and describe)
    ready_capacity: int
    progress: RunProgress = field(default_factory=RunProgress)
    stats: RunStats = field(default_factory=RunStats)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seq: int = 0
    snapshot_seq: int = 0
    interrupted_by: int | None = None  # the signal that stopped the run
    failure: str | None = None  # why the run stopped, when it was neither a signal nor the describer
    final_message: str | None = None  # the run record's message, once closed
    chunk_files: dict[int, list[DiscoveredFile]] = field(default_factory=dict)  # chunks handed to the runner
    warehouse_lock: WarehouseLock | None = None
    planner: Planner | None = None
    profiles: list[str] = field(default_factory=list)  # the profiles this run asks, in order
    hash_cache: HashCache | None = None
    recovered: dict[str, Any] = field(default_factory=dict)

    @property
    def unchanged(self) -> int:
        return self.planner.unchanged if self.planner is not None else 0

    def next_seq(self) -> int:
        with self.lock:
            self.seq += 1
            return self.seq

    @property
    def stopping(self) -> bool:
        return self.describer.stopping.is_set()

    def chunks_in_flight(self) -> int:
        """Enough chunks that the ready queue never runs dry at a chunk boundary (at least 3)."""
        return max(3, min(MAX_CHUNKS_IN_FLIGHT, math.ceil(self.ready_capacity / self.settings.chunk_size) + 2))


# Live runs of this process, by id: chunk tasks receive only the id and a list of plain dataclasses,
# so task parameters stay small and serialisable.
ACTIVE_RUNS: dict[str, RunContext] = {}


def budget_from_settings(settings: Settings) -> Budget:
    """The Budget for a run with these settings: --budget, and the daily cap less today's recorded spend."""
    spent = ZERO
    if settings.daily_budget_usd is not None:
        from enrich.warehouse.history import spent_today  # only with a daily cap: the query costs a DuckDB import

        spent = spent_today(settings.warehouse)
    return budget_for_run(settings.budget_usd, settings.daily_budget_usd, spent)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def make_limiter(settings: Settings) -> RateLimiter:
    """The run's one limiter: the model's rpm/tpm (or --rpm/--tpm), less the headroom."""
    rate = settings.rate_limit()
    keep = 1.0 - settings.rate_headroom
    return RateLimiter(rate.rpm * keep if rate.rpm else None, rate.tpm * keep if rate.tpm else None)


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
    profiles = profiles_of(settings)
    info = run_info_for(profiles, run_id=run_id, backend=backend_name(settings.model), model=settings.model,
                        resolution=settings.resolution, price_date=prices.date, default_profile=settings.profile)
    prompts = {profile_key(p.name, k): p.prompts[k] for p in profiles for k in p.kinds()}
    schemas = {profile_key(p.name, k): p.schemas[k] for p in profiles for k in p.kinds()}
    thinking = {p.name: (p.thinking_budget, p.thinking_level) for p in profiles if p.thinking_key()}
    concurrency = settings.concurrency
    if backend.capabilities.local:
        concurrency = min(concurrency, backend.capabilities.default_concurrency)
    describer = Describer(
        backend, info, price,
        DescribeOptions.from_settings(settings, prompts, schemas, concurrency=concurrency, thinking=thinking),
        budget=budget_from_settings(settings),  # --budget and what is left of the daily cap
        limiter=None if backend.capabilities.local else make_limiter(settings),
    )
    try:
        describer.preflight()
    except BaseException:
        describer.close()
        raise
    workers = settings.prepare_workers or os.cpu_count() or 2
    ready_capacity = 2 * concurrency + workers
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
        ready=threading.Semaphore(ready_capacity),
        ready_capacity=ready_capacity,
    )
    try:
        ctx.recovered = recover(ctx.warehouse, run_id)
        for profile in profiles:  # what the profile_<name> views are typed from
            ctx.warehouse.write_profile(profile.describe())
        ctx.profiles = [p.name for p in profiles]
        ctx.planner = Planner(load_state(ctx.warehouse), run_id,
                              lambda kind, profile=None: info.version_of(kind, profile)[2], reprocess)
        ctx.hash_cache = HashCache(default_cache_path(settings.home))
        write_run_snapshot(ctx, RunStatus.RUNNING)
    except BaseException:
        ctx.prepare_pool.shutdown(wait=False)
        describer.close()
        if ctx.hash_cache is not None:
            ctx.hash_cache.close()
        raise
    ACTIVE_RUNS[run_id] = ctx
    return ctx


def independent_roots(roots: Sequence[str]) -> list[str]:
    """The roots less duplicates and roots inside another root (compared by real path), so no file is walked
    twice and discovery needs no memory of the paths it has seen (which would grow with the library)."""
    reals = [os.path.realpath(r) for r in roots]

    def inside(inner: str, outer: str) -> bool:
        return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)

    kept = []
    for i, (root, real) in enumerate(zip(roots, reals)):
        covered = any(inside(real, other) and (other != real or j < i)
                      for j, other in enumerate(reals) if j != i)
        if not covered:
            kept.append(root)
    return kept


def discover_files(ctx: RunContext) -> Iterator[DiscoveredFile]:
    """Every file under the roots that needs a row in this run, once (overlapping roots are reduced to
    independent ones); after the walk, the duplicates of files sent in this run and the paths now gone."""
    for found in discover(independent_roots(ctx.roots), hash_cache=ctx.hash_cache):
        for profile in ctx.profiles or [None]:  # one row (and one request) per profile asked
            file = found if profile is None else replace(found, profile=profile)
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
    index = {(f.path, f.profile): i for i, f in enumerate(files)}
    refs, same_chunk = {}, {}
    for i, f in enumerate(files):
        ref = planner.take_copy(f)
        if ref is None:
            continue
        if ref.run_id == ctx.run_id and (ref.path, f.profile) in index:
            same_chunk[i] = index[(ref.path, f.profile)]
        else:
            planner.wait_for_leader(ref, f.profile)  # a leader in an earlier chunk (duplicates come after the walk)
            refs[i] = ref
    if not refs:
        return {}, same_chunk
    profile_of = {i: files[i].profile or ctx.info.default_profile for i in refs}
    sources = load_rows(ctx.warehouse, {(r.run_id, r.path, profile_of[i]) for i, r in refs.items()})
    # A source that cannot be read back (it always can) leaves the file to be described like any other.
    return ({i: copied_row(files[i], ctx.info, sources[(r.run_id, r.path, profile_of[i])])
             for i, r in refs.items() if (r.run_id, r.path, profile_of[i]) in sources}, same_chunk)


# -- one chunk ----------------------------------------------------------------------------------------------
class _ChunkWork:
    """The rows of one chunk as they arrive from any thread; `wait()` returns when every file has one."""

    def __init__(self, ctx: RunContext, n: int) -> None:
        self.ctx = ctx
        self.rows: list[dict[str, Any] | None] = [None] * n
        self._left = n
        self._lock = threading.Lock()
        self._done = threading.Event()
        if n == 0:
            self._done.set()

    def expect(self, n: int) -> None:
        """Only `n` rows will arrive through complete() (the rest are filled in by the chunk afterwards)."""
        with self._lock:
            self._left -= len(self.rows) - n
            if self._left <= 0:
                self._done.set()

    def complete(self, i: int, row: dict[str, Any]) -> None:
        self.ctx.progress.record(row)
        with self._lock:
            if self.rows[i] is not None:
                raise AssertionError(f"two outcomes for {row.get('path')}")
            self.rows[i] = row
            self._left -= 1
            if self._left == 0:
                self._done.set()

    def wait(self) -> list[dict[str, Any]]:
        self._done.wait()
        return [r for r in self.rows if r is not None]


def _row_without_request(ctx: RunContext, f: DiscoveredFile) -> dict[str, Any] | None:
    """The row of a file that is not sent at all (discovery outcome, unsupported), or None."""
    if f.status != Status.PENDING:
        return status_row(f, ctx.info, f.status, f.error_kind, f.error)
    if f.kind not in DESCRIPTION_SCHEMAS:
        return status_row(f, ctx.info, Status.SKIPPED, ErrorKind.UNSUPPORTED_KIND, f"{f.kind} files are not described yet")
    if ctx.info.version_of(f.kind, f.profile)[2] is None:
        return status_row(f, ctx.info, Status.SKIPPED, ErrorKind.UNSUPPORTED_KIND,
                          f"profile {f.profile or ctx.info.default_profile} does not describe {f.kind} files")
    supported = ctx.describer.backend.capabilities
    if not supported.accepts(f.mime) and f.kind != "image":  # images are re-encoded to JPEG first
        return status_row(f, ctx.info, Status.SKIPPED, ErrorKind.UNSUPPORTED_TYPE,
                          f"{f.mime} is not accepted by {ctx.info.backend}")
    return None


def _take_ready_slot(ctx: RunContext) -> bool:
    """Wait for room in the ready queue; False when the run stops meanwhile."""
    while not ctx.stopping:
        if ctx.ready.acquire(timeout=0.2):
            return True
    return False


def _prepare_and_send(ctx: RunContext, work: _ChunkWork, i: int, file: DiscoveredFile) -> None:
    """On a prepare thread: prepare one file and hand it to the describer. Completes item `i` exactly once."""
    try:
        if ctx.stopping:
            row = ctx.describer.not_sent_row(file)
        else:
            prepared = prepare_file(file, ctx.prepare_options)
            if isinstance(prepared, PreparedItem):
                future = ctx.describer.submit(prepared)
                future.add_done_callback(lambda fut: _described(ctx, work, i, file, fut, prepared))
                return
            row = status_row(file, ctx.info, Status.ERROR, prepared.kind, str(prepared), getattr(prepared, "meta", None))
    except Exception as exc:  # a bug must cost one row, not the chunk
        log.warning("unexpected error preparing %s: %r", file.path, exc)
        row = status_row(file, ctx.info, Status.ERROR, "internal", f"unexpected error: {exc.__class__.__name__}: {exc}")
    ctx.ready.release()
    work.complete(i, row)


def _described(ctx: RunContext, work: _ChunkWork, i: int, file: DiscoveredFile, future: Future,
               prepared: PreparedItem) -> None:
    try:
        row = future.result()
    except BaseException as exc:  # the describer was shut down under it
        row = status_row(file, ctx.info, Status.INTERRUPTED, Status.INTERRUPTED,
                         f"not finished: the describer stopped ({exc.__class__.__name__})")
    finally:
        prepared.release()  # temporary copies (stripped or trimmed media) go as soon as the item is done
    ctx.ready.release()
    work.complete(i, row)


def take_chunk(run_id: str, seq: int) -> list[DiscoveredFile]:
    """The files of chunk `seq`, handed over once."""
    return ACTIVE_RUNS[run_id].chunk_files.pop(seq)


def process_chunk(run_id: str, files: list[DiscoveredFile]) -> RunStats:
    """Prepare, describe and commit one chunk. Every file in `files` gets exactly one row."""
    ctx = ACTIVE_RUNS[run_id]
    try:
        return _process_chunk(ctx, files)
    finally:
        if ctx.planner is not None:
            ctx.planner.chunk_done(files)  # duplicates waiting on this chunk's rows may go on


def _process_chunk(ctx: RunContext, files: list[DiscoveredFile]) -> RunStats:
    work = _ChunkWork(ctx, len(files))
    copies, later = copy_rows(ctx, files)
    work.expect(len(files) - len(later))  # same-chunk duplicates are copied once their leader's row exists
    for i, f in enumerate(files):
        if i in later:
            continue
        row = copies.get(i) or _row_without_request(ctx, f)
        if row is None and not _take_ready_slot(ctx):
            row = ctx.describer.not_sent_row(f)
        if row is not None:
            work.complete(i, row)
            continue
        try:
            ctx.prepare_pool.submit(_prepare_and_send, ctx, work, i, f)
        except RuntimeError:  # the pool is shut down: the run is closing
            ctx.ready.release()
            work.complete(i, ctx.describer.not_sent_row(f))
    work.wait()
    for i, leader in later.items():
        work.rows[i] = copied_row(files[i], ctx.info, work.rows[leader])
    final = [r for r in work.rows if r is not None]
    assert len(final) == len(files), "every file gets exactly one row"
    ctx.warehouse.write_results(final, ctx.run_id, ctx.next_seq())
    stats = RunStats()
    stats.add_rows(final)
    with ctx.lock:
        ctx.stats.merge(stats)
    return stats


# -- stopping -----------------------------------------------------------------------------------------------
def interrupt_run(ctx: RunContext, signum: int) -> None:
    """A signal arrived: the first stops dispatching (requests in flight get the grace period), the second
    stops waiting for them. Only sets flags and schedules work: safe inside a signal handler."""
    if ctx.interrupted_by is None:
        ctx.interrupted_by = signum
        ctx.describer.stop(f"interrupted by {signal_name(signum)}")
    else:
        ctx.describer.stop(f"interrupted by {signal_name(signum)}", grace_s=0)


def fail_run(ctx: RunContext, reason: str) -> None:
    """Something outside the describer broke (a chunk could not be written): stop like a fatal error."""
    if ctx.failure is None:
        ctx.failure = reason
    ctx.describer.stop(f"the run stopped: {reason}")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def stop_notice(ctx: RunContext) -> str:
    """What to tell the user when the run starts stopping."""
    d = ctx.describer
    if ctx.interrupted_by is not None:
        return (f"{d.stop_reason}: stopping; {d.stats.in_flight} request(s) in flight get up to "
                f"{ctx.settings.stop_grace_s:g}s to finish (send it again to stop at once)")
    return f"{d.stop_reason}; finishing what is in flight"


# -- the run record -----------------------------------------------------------------------------------------
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
            "finished_at": None if status == RunStatus.RUNNING else datetime.now(timezone.utc),
            "status": status,
            "model": ctx.settings.model,
            "roots": ctx.roots,
            "items": s.items,
            "ok": s.by_status.get(Status.OK, 0),
            "errors": s.by_status.get(Status.ERROR, 0),
            "skipped": s.by_status.get(Status.SKIPPED, 0),
            "blocked": s.by_status.get(Status.BLOCKED, 0),
            "over_budget": s.by_status.get(Status.OVER_BUDGET, 0),
            "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens,
            "spent_usd": s.spent_usd,
            "budget_usd": budget.run_cap,  # what this run may spend: min(--budget, daily cap left)
            "reserved_peak_usd": budget.reserved_peak,
            "price_date": ctx.info.price_date,
            "message": message,
            "unchanged": ctx.unchanged,
            "reused": s.reused,
            "gone": s.by_status.get(Status.GONE, 0),
        }
    ctx.warehouse.write_run(snapshot)


def final_status(ctx: RunContext) -> tuple[str, str | None]:
    """(status, message) of a run whose chunks have all finished."""
    d = ctx.describer
    not_finished = ctx.stats.by_status.get(Status.INTERRUPTED, 0)
    tail = (f"; {not_finished} item(s) not finished (status interrupted); files the walk had not reached "
            "are not recorded") if not_finished or d.stopping.is_set() else ""
    if ctx.interrupted_by is not None:
        return RunStatus.INTERRUPTED, f"interrupted by {signal_name(ctx.interrupted_by)}{tail}"
    if d.fatal is not None:
        return RunStatus.FAILED, f"{d.fatal}{tail}"
    if ctx.failure is not None:
        return RunStatus.FAILED, f"{ctx.failure}{tail}"
    return RunStatus.FINISHED, None


def close_run(ctx: RunContext, status: str | None = None, message: str | None = None) -> str:
    """Record the run's end. Returns its final status."""
    try:
        if status is None:
            status, message = final_status(ctx)
        ctx.final_message = message
        write_run_snapshot(ctx, status, message)
    finally:
        try:
            ctx.prepare_pool.shutdown(wait=True, cancel_futures=True)
            ctx.describer.close()
            if ctx.hash_cache is not None:
                ctx.hash_cache.close()
        finally:
            ACTIVE_RUNS.pop(ctx.run_id, None)
            if ctx.warehouse_lock is not None:
                ctx.warehouse_lock.release()
    return status


def run_summary(ctx: RunContext, status: str) -> dict[str, Any]:
    s = ctx.stats
    d = ctx.describer
    budget = d.budget
    rpm = d.stats.requests_per_min()
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
        "over_budget": s.by_status.get(Status.OVER_BUDGET, 0),
        "requests": d.stats.requests,
        "retries": d.stats.retries,
        "throttled": d.stats.throttled,
        "requests_per_min": None if rpm is None else round(rpm, 1),
        "request_window_s": d.stats.window_s(),
        "concurrency": {"max": d.concurrency.maximum, "final": d.concurrency.current,
                        "decreases": d.concurrency.decreases},
        "fatal": str(d.fatal) if d.fatal else None,
        "signal": ctx.interrupted_by,
        "message": ctx.final_message,
    }
