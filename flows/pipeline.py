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
import queue
import signal
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator, Sequence

from enrich.schemas.vocab import ErrorKind, RunStatus, Status
from enrich.backends import backend_name, create_backend
from enrich.budget import ZERO, Budget, budget_for_run
from enrich.inflight import WeightBudget
from enrich.limiter import RateLimiter
from enrich.pricing import load_prices
from enrich.redact import scrub, scrubbed_logger
from enrich.progress import RunProgress
from enrich.settings import Settings
from enrich.schemas.descriptions import DESCRIPTION_SCHEMAS
from enrich.tasks.describe import DescribeOptions, Describer
from enrich.tasks.discover import DiscoveredFile, discover, iter_batches, own_state_dirs
from enrich.tasks.hash_cache import HashCache, default_cache_path
from enrich.tasks.incremental import (
    Planner, describe_inputs, known_schemas, parse_reprocess, profiles_of, run_info_for,
)
from enrich.tasks.prepare import PrepareOptions, PreparedItem, prepare_file
from enrich.tasks.strip_metadata import sweep_media_temp
from enrich.tasks.records import RunInfo, copied_row, status_row
from enrich.tasks.context import context_fields
from enrich.tasks.selection import Selection, trial_pick
from enrich.tasks.sniff import image_format_of_mime
from enrich.warehouse.ledger import SpendLedger
from enrich.warehouse.jobs import JobStore, open_keys, open_reserved_in, item_key
from enrich.warehouse.location import open_warehouse, warehouse_lock
from enrich.warehouse.lock import WarehouseLock
from enrich.warehouse.state import load_rows, load_state, recover
from enrich.warehouse.store import Warehouse

log = scrubbed_logger("enrich.run")

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
    inflight_bytes: WeightBudget  # media bytes held by prepared items and requests, beside their count
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
    # (run_id, path, profile) of RAWs copying a JPEG in the same chunk
    pair_copies: set[tuple[str, str, str | None]] = field(default_factory=set)
    ledger: SpendLedger | None = None  # every billed request, recorded before its chunk commits

    @property
    def spent_usd(self) -> Decimal:
        """What this run has been billed: its committed rows, or more when billed requests are not committed."""
        billed = self.ledger.total if self.ledger is not None else Decimal(0)
        return max(self.stats.spent_usd, billed)
    # batch mode (tasks/batch.py): jobs packed by this run, and what the run found and collected
    packer: Any = None  # JobPacker in --mode batch
    collector: Any = None  # JobCollector whenever the warehouse has batch jobs or the mode is batch
    held_keys: frozenset[str] = frozenset()  # keys in open jobs: not sent again
    in_jobs: int = 0  # files left out because an open job holds their key
    collected: Any = None  # CollectStats of the collections this run made
    fallback_items: int = 0  # items sent interactively at the --deadline

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

        # open batch jobs hold their worst case until collected: counted like spend, so no run can overrun
        spent = spent_today(settings.warehouse) + open_reserved_in(settings.warehouse)
    return budget_for_run(settings.budget_usd, settings.daily_budget_usd, spent)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def make_limiter(settings: Settings) -> RateLimiter:
    """The run's one limiter: the model's rpm/tpm (or --rpm/--tpm), less the headroom."""
    rate = settings.rate_limit()
    keep = 1.0 - settings.rate_headroom
    return RateLimiter(rate.rpm * keep if rate.rpm else None, rate.tpm * keep if rate.tpm else None)


def open_run(roots: list[str], settings: Settings, *, run_id: str | None = None,
             reprocess: Iterable[str] = (), wait_for_lock: bool | float = False,
             allow_mass_removal: bool = False) -> RunContext:
    """Take the warehouse, create the backend, check it can work (preflight), clean up after a dead run,
    load what is already done, record the run as running."""
    run_id = run_id or new_run_id()
    reprocess_set = parse_reprocess(reprocess)
    sweep_media_temp()  # temporary copies a killed run left behind, whatever this run will strip
    lock = warehouse_lock(settings.warehouse, f"enrich run {run_id}").acquire(wait=wait_for_lock)
    try:
        return _open_locked(roots, settings, run_id, reprocess_set, lock, allow_mass_removal)
    except BaseException:
        lock.release()
        raise


def _open_locked(roots: list[str], settings: Settings, run_id: str, reprocess: frozenset[str],
                 lock: WarehouseLock, allow_mass_removal: bool = False) -> RunContext:
    prices = load_prices(settings.config_dir)
    price = prices.price(settings.model)  # fails before any spend if the model has no price
    backend = create_backend(settings.model, settings)
    profiles = profiles_of(settings)
    info = run_info_for(profiles, run_id=run_id, backend=backend_name(settings.model), model=settings.model,
                        resolution=settings.resolution, price_date=prices.date, default_profile=settings.profile,
                        context=",".join(context_fields(settings.context)), flex=settings.mode == "flex")
    prompts, schemas, thinking = describe_inputs(profiles)
    collector, collected = None, None
    try:
        # a job may hold items of any profile the settings know, not only those this run asks
        collector, collected = _collect_first(settings, backend, prices, {**known_schemas(settings), **schemas},
                                              run_id)
    except BaseException:
        _close_quietly(backend)
        raise
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
        warehouse=open_warehouse(settings.warehouse, guard=lock.verify),
        prepare_pool=ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enrich-prepare"),
        prepare_options=PrepareOptions.from_settings(settings),
        started_at=datetime.now(timezone.utc),
        warehouse_lock=lock,
        ready=threading.Semaphore(ready_capacity),
        ready_capacity=ready_capacity,
        collector=collector,
        collected=collected,
        inflight_bytes=WeightBudget(settings.max_inflight_bytes),
    )
    try:
        if collector is not None:
            ctx.held_keys = open_keys(JobStore(ctx.warehouse).load().values())
            collector.budget = describer.budget  # jobs this run submits settle on it when collected
        if settings.mode == "batch":
            ctx.packer = _make_packer(ctx, collector, price, prompts, schemas)
            collector.reservations = ctx.packer.reservations
        ctx.recovered = recover(ctx.warehouse, run_id)
        ctx.ledger = SpendLedger(ctx.warehouse.root, run_id)
        ledger = ctx.ledger
        # the row of a billed request exists the moment its answer is priced: record its cost at once
        describer.on_outcome = lambda row: ledger.record(row.get("cost_usd") or Decimal(0), row.get("content_hash"))
        for profile in profiles:  # what the profile_<name> views are typed from
            ctx.warehouse.write_profile(profile.describe())
        ctx.profiles = [p.name for p in profiles]
        ctx.planner = Planner(load_state(ctx.warehouse), run_id,
                              lambda kind, profile=None: info.version_of(kind, profile)[2], reprocess,
                              roots=tuple(ctx.roots), allow_mass_removal=allow_mass_removal)
        ctx.hash_cache = HashCache(default_cache_path(settings.home))
        write_run_snapshot(ctx, RunStatus.RUNNING)
    except BaseException:
        ctx.prepare_pool.shutdown(wait=False)
        describer.close()
        if ctx.hash_cache is not None:
            ctx.hash_cache.close()
        if ctx.ledger is not None:
            ctx.ledger.close(discard=True)  # nothing was sent yet
        raise
    ACTIVE_RUNS[run_id] = ctx
    return ctx


# -- batch mode ---------------------------------------------------------------------------------------------
def _collect_first(settings: Settings, backend, prices, schemas, run_id: str):
    """Every run looks at the warehouse's open batch jobs before planning (a finished job's items get their
    rows, a failed one's go back to be sent): (collector, its stats), or (None, None) with no jobs and
    another mode than batch."""
    store = JobStore(settings.warehouse)
    has_open = store.jobs_dir.is_dir() and bool(store.open_jobs())
    if settings.mode != "batch" and not has_open:
        return None, None
    from enrich.backends.gemini import GeminiBackend
    from enrich.backends.gemini_batch import GeminiBatchClient
    from enrich.tasks.batch import JobCollector

    if not isinstance(backend, GeminiBackend):
        if settings.mode == "batch":
            from enrich.errors import ConfigError

            raise ConfigError(f"--mode batch needs a Gemini model (the Gemini Batch API), not {settings.model!r}")
        return None, None
    collector = JobCollector(GeminiBatchClient(backend), store, prices, schemas, run_id=run_id,
                             max_output_tokens=settings.max_output_tokens, keep_hours=settings.batch_keep_hours)
    stats = collector.collect_all() if has_open else None
    return collector, stats


def _make_packer(ctx: RunContext, collector, price, prompts, schemas):
    from dataclasses import replace

    from enrich.tasks.batch import BatchOptions, JobPacker, enqueued_now

    store = collector.store
    return JobPacker(collector.client, store, replace(ctx.info, batch=True), price,
                     BatchOptions.from_settings(ctx.settings, prompts, schemas, ctx.describer.options.thinking),
                     ctx.describer.budget,
                     already_enqueued=enqueued_now(store, ctx.settings.model))


def _close_quietly(backend) -> None:
    import asyncio

    try:
        asyncio.run(backend.aclose())
    except Exception:  # closing is best effort
        pass


def finish_batch(ctx: RunContext, *, until_done: bool = False, deadline_s: float | None = None,
                 say=None) -> None:
    """After the walk: create the last job; with `until_done`, poll every open job with backoff until each has
    ended, and at `deadline_s` (seconds from now) cancel what is still open and send its items interactively."""
    import time

    say = say or (lambda line: log.info("%s", line))
    if ctx.packer is not None:
        if ctx.stopping:  # no new job now: what was packed gets its interrupted rows
            rows = ctx.packer.abandon(ctx.describer.stop_reason or "the run stopped")
            if rows:
                ctx.warehouse.write_results(rows, ctx.run_id, ctx.next_seq())
                with ctx.lock:
                    ctx.stats.add_rows(rows)
        else:
            ctx.packer.close()
    if ctx.collector is None or not until_done:
        return
    settings = ctx.settings
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    delay = settings.batch_poll_initial_s
    store = ctx.collector.store
    while not ctx.stopping:
        stats = ctx.collector.collect_all()
        _note_collected(ctx, stats)
        jobs = store.open_jobs()
        if not jobs:
            say("batch: every job has ended")
            return
        states: dict[str, int] = {}
        for j in jobs:
            states[j.state] = states.get(j.state, 0) + 1
        items = sum(j.items for j in jobs)
        done = ctx.collected.rows if ctx.collected is not None else 0
        say(f"batch: {len(jobs)} job(s) open ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}), "
            f"{items} item(s) waiting, {done} collected")
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            _deadline_fallback(ctx, jobs, say)
            return
        wait = delay if deadline is None else min(delay, max(0.0, deadline - now))
        end = time.monotonic() + wait
        while not ctx.stopping and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))
        delay = min(delay * 2, settings.batch_poll_max_s)


def _note_collected(ctx: RunContext, stats) -> None:
    if stats is None or not stats.looked_at:
        return
    if ctx.collected is None:
        ctx.collected = stats
        return
    c = ctx.collected
    for name in ("looked_at", "collected", "rows", "ok", "errors", "put_back", "recovered"):
        setattr(c, name, getattr(c, name) + getattr(stats, name))
    c.spent_usd += stats.spent_usd
    c.still_open = stats.still_open
    for k, v in stats.ended.items():
        c.ended[k] = c.ended.get(k, 0) + v


def _deadline_fallback(ctx: RunContext, jobs, say) -> None:
    """The deadline passed: cancel the open jobs (a job that finished meanwhile is collected instead) and
    send their items interactively; their rows say batch = false."""
    from enrich.tasks.batch import CollectStats, file_of

    collector = ctx.collector
    files: list[DiscoveredFile] = []
    for job in jobs:
        ended = collector.cancel(job, "the --deadline passed: sent interactively")
        if ended.state == "collected":
            continue
        files.extend(file_of(t) for t in collector.store.read_items(job.job_id))
    stats = CollectStats()
    _note_collected(ctx, stats)
    if not files:
        return
    say(f"batch: the deadline passed; sending {len(files)} item(s) interactively")
    ctx.packer = None  # from here items go to the describer
    size = max(1, ctx.settings.chunk_size)
    for start in range(0, len(files), size):
        if ctx.stopping:
            break
        _process_chunk(ctx, files[start:start + size])
    ctx.fallback_items += len(files)


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
    independent ones), one per profile the run asks, less what the selection leaves out (tasks/selection.py: no
    row at all) and what an open batch job holds (its row comes when the job is collected); after the walk, the
    duplicates of files sent in this run and the paths now gone.

    A trial run (`--sample N`, `--limit N`) keeps N of the media files the run would send or copy (a file
    counts once, with every profile it needs), and writes nothing else: no rows for files that are not media,
    no duplicates, no `gone` rows. What it leaves out keeps whatever row it had; a later full run takes up the
    rest."""
    settings = ctx.settings
    roots = independent_roots(ctx.roots)
    files = discover(roots, hash_cache=ctx.hash_cache, selection=Selection.from_settings(settings),
                     skip=own_state_dirs(settings.home, settings.warehouse))

    def per_profile(found: DiscoveredFile) -> Iterator[DiscoveredFile]:
        for profile in ctx.profiles or [None]:  # one row (and one request) per profile asked
            file = found if profile is None else replace(found, profile=profile)
            if not _held_by_a_job(ctx, file) and (ctx.planner is None or ctx.planner.admit(file)):
                yield file

    trial = settings.sample is not None or settings.limit is not None
    if trial:
        # a file's profiles are admitted together: the trial picks files, each with the profiles it needs
        groups = (g for g in ([f for f in per_profile(found) if f.status == Status.PENDING] for found in files) if g)
        for group in trial_pick(groups, lambda g: g[0].path, roots=roots, limit=settings.limit,
                                sample=settings.sample, seed=settings.sample_seed):
            yield from group
        files.close()  # a limit may stop before the walk's end
    else:
        for found in files:
            yield from per_profile(found)
    if ctx.hash_cache is not None:
        ctx.hash_cache.flush()
    if ctx.planner is not None and not trial:
        yield from ctx.planner.late_files(ctx.roots)


def _held_by_a_job(ctx: RunContext, file) -> bool:
    """True when an open batch job holds this file's key: it gets no row now (the job's collection writes it)."""
    held = ctx.held_keys
    if held and file.content_hash and file.status == Status.PENDING \
            and item_key(file.content_hash, ctx.info.version_of(file.kind, file.profile)[2]) in held:
        ctx.in_jobs += 1
        if ctx.planner is not None:
            ctx.planner.note_seen(file.path)
        return True
    return False


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
            if ref.pair:
                ctx.pair_copies.add((ctx.run_id, f.path, f.profile))
        else:
            planner.wait_for_leader(ref, f.profile)  # a leader in an earlier chunk (duplicates come after the walk)
            refs[i] = ref
    if not refs:
        return {}, same_chunk
    profile_of = {i: files[i].profile or ctx.info.default_profile for i in refs}
    sources = load_rows(ctx.warehouse, {(r.run_id, r.path, profile_of[i]) for i, r in refs.items()})
    # A source that cannot be read back (it always can) leaves the file to be described like any other; so
    # does the JPEG of a RAW+JPEG pair that was not described (the RAW is then described itself).
    got = {i: sources[(r.run_id, r.path, profile_of[i])] for i, r in refs.items()
           if (r.run_id, r.path, profile_of[i]) in sources}
    return ({i: pair_row(files[i], ctx.info, got[i]) if r.pair else copied_row(files[i], ctx.info, got[i])
             for i, r in refs.items() if i in got and (not r.pair or got[i].get("status") == Status.OK)},
            same_chunk)


def pair_row(file: DiscoveredFile, run: RunInfo, jpeg_row: dict[str, Any]) -> dict[str, Any]:
    """The RAW of a RAW+JPEG pair: the JPEG's description at cost 0 (`reused_from` = the JPEG), with the RAW's
    own format."""
    row = copied_row(file, run, jpeg_row)
    fmt = image_format_of_mime(file.mime)
    row["media_format"] = fmt.lower() if fmt else None
    return row


# -- one chunk ----------------------------------------------------------------------------------------------
class _ChunkWork:
    """The rows of one chunk as they arrive from any thread; `wait()` returns when every file has one."""

    def __init__(self, ctx: RunContext, n: int) -> None:
        self.ctx = ctx
        self.rows: list[dict[str, Any] | None] = [None] * n
        self._left = n
        self.skipped = 0
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

    def skip(self, i: int) -> None:
        """Item `i` went into a batch job: its row is written when the job is collected."""
        with self._lock:
            self.skipped += 1
            self._left -= 1
            if self._left == 0:
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

    def reopen(self, n: int) -> None:
        """`n` more rows will arrive through complete() (items dispatched after a first wait())."""
        with self._lock:
            self._left = n
            if n > 0:
                self._done.clear()


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
            packer = ctx.packer
            if isinstance(prepared, PreparedItem) and packer is not None:
                try:
                    row = packer.add(prepared)
                finally:
                    prepared.release()
                if row is None:
                    ctx.ready.release()
                    work.skip(i)
                    return
            elif isinstance(prepared, PreparedItem):
                # the bytes its request will hold: wait (on this preparation thread) for room in the budget
                held = ctx.inflight_bytes.acquire(request_bytes(prepared, ctx), cancelled=lambda: ctx.stopping)
                if held is None:
                    prepared.release()
                    row = ctx.describer.not_sent_row(file, prepared.meta)
                else:
                    try:
                        future = ctx.describer.submit(prepared)
                    except BaseException:
                        ctx.inflight_bytes.release(held)
                        raise
                    future.add_done_callback(lambda fut: _described(ctx, work, i, file, fut, prepared, held))
                    return
            else:
                row = status_row(file, ctx.info, Status.ERROR, prepared.kind, str(prepared),
                                 getattr(prepared, "meta", None))
    except Exception as exc:  # a bug must cost one row, not the chunk
        log.warning("unexpected error preparing %s: %r", file.path, exc)
        row = status_row(file, ctx.info, Status.ERROR, "internal", f"unexpected error: {exc.__class__.__name__}: {exc}")
    ctx.ready.release()
    work.complete(i, row)


UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024  # the Files API path streams the file in chunks of this size


def request_bytes(item: PreparedItem, ctx: RunContext) -> int:
    """Media bytes a request for `item` holds in memory: inline parts whole (read at send time when they are
    a file), uploads one chunk at a time."""
    inline = ctx.describer.backend.capabilities.max_inline_bytes
    total = 0
    for media in item.media:
        try:
            size = media.size
        except OSError:
            continue  # vanished: the send reports it
        total += size if size <= inline else min(size, UPLOAD_CHUNK_BYTES)
    return total


def _described(ctx: RunContext, work: _ChunkWork, i: int, file: DiscoveredFile, future: Future,
               prepared: PreparedItem, held: int | None = None) -> None:
    try:
        row = future.result()
    except BaseException as exc:  # the describer was shut down under it
        row = status_row(file, ctx.info, Status.INTERRUPTED, Status.INTERRUPTED,
                         f"not finished: the describer stopped ({exc.__class__.__name__})")
    finally:
        ctx.inflight_bytes.release(held)
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


def _dispatch(ctx: RunContext, work: _ChunkWork, files: list[DiscoveredFile], indices: Iterable[int],
              copies: dict[int, dict[str, Any]]) -> None:
    """Give each of `indices` its row: a copy, a row without a request, or prepare and send it."""
    for i in indices:
        f = files[i]
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


def _process_chunk(ctx: RunContext, files: list[DiscoveredFile]) -> RunStats:
    work = _ChunkWork(ctx, len(files))
    copies, later = copy_rows(ctx, files)
    work.expect(len(files) - len(later))  # same-chunk duplicates are copied once their leader's row exists
    _dispatch(ctx, work, files, (i for i in range(len(files)) if i not in later), copies)
    work.wait()
    describe_now = []
    for i, leader in later.items():
        key = (ctx.run_id, files[i].path, files[i].profile)
        if key in ctx.pair_copies:
            ctx.pair_copies.discard(key)
            if work.rows[leader] is None or work.rows[leader].get("status") != Status.OK:
                describe_now.append(i)  # the pair's JPEG was not described: describe the RAW itself
            else:
                work.rows[i] = pair_row(files[i], ctx.info, work.rows[leader])
            continue
        work.rows[i] = copied_row(files[i], ctx.info, work.rows[leader])
    if describe_now:
        work.reopen(len(describe_now))
        _dispatch(ctx, work, files, describe_now, {})
        work.wait()
    final = [r for r in work.rows if r is not None]
    assert len(final) + work.skipped == len(files), "every file gets exactly one row (or a batch job)"
    if ctx.ledger is not None:
        ctx.ledger.sync()  # what this chunk was billed is on disk before the chunk commits
    write_chunk(ctx, final)
    stats = RunStats()
    stats.add_rows(final)
    with ctx.lock:
        ctx.stats.merge(stats)
    return stats


PART_WRITE_ATTEMPTS = 3
PART_WRITE_BACKOFF_S = 0.5


def write_chunk(ctx: RunContext, rows: list[dict[str, Any]]) -> None:
    """Commit a chunk's rows as one part, retrying a failed write (a full disk that frees up, a flaky network
    folder) a couple of times. If it still fails the error goes up and the run fails, saying why: the rows
    are lost, but what their requests cost is in the spend ledger and still counts against the budgets."""
    seq = ctx.next_seq()
    for attempt in range(1, PART_WRITE_ATTEMPTS + 1):
        try:
            ctx.warehouse.write_results(rows, ctx.run_id, seq)
            return
        except OSError as exc:
            if attempt == PART_WRITE_ATTEMPTS:
                raise OSError(exc.errno, f"could not write a part of {len(rows)} rows after {attempt} "
                              f"attempt(s): {exc.strerror or exc}") from exc
            log.warning("writing a part failed (%s); trying again", exc)
            time.sleep(PART_WRITE_BACKOFF_S * attempt)


# -- stopping -----------------------------------------------------------------------------------------------
def interrupt_run(ctx: RunContext, signum: int) -> None:
    """A signal arrived: the first stops dispatching (requests in flight get the grace period), the second
    stops waiting for them. Only sets flags and schedules work: safe inside a signal handler."""
    if ctx.interrupted_by is None:
        ctx.interrupted_by = signum
        ctx.describer.stop(f"interrupted by {signal_name(signum)}")
    else:
        ctx.describer.stop(f"interrupted by {signal_name(signum)}", grace_s=0)


def feed_chunks(ctx: RunContext, *, limit: int, next_seq: Callable[[], int],
                submit: Callable[[int, list[DiscoveredFile]], Any], collect: Callable[[int, Any], None],
                tick: Callable[[], None] | None = None) -> None:
    """The run's chunk loop, whatever runs the chunks: discovered files in batches of `chunk_size`, each
    `submit(seq, files)` to a task runner (a future), at most `limit` in flight, until the files run out or
    the run stops; then every chunk started is waited for. `collect(seq, future)` takes each finished chunk (in
    the order they finish); `tick()` runs before each wait (snapshots, telling workers to stop). The first
    error (discovery, the task runner, a chunk) fails the run, lets the chunks in flight finish, and is
    raised at the end."""
    finished: queue.SimpleQueue = queue.SimpleQueue()
    running = 0
    error: BaseException | None = None
    batches = iter_batches(discover_files(ctx), ctx.settings.chunk_size)

    def collect_one() -> None:
        nonlocal running, error
        if tick is not None:
            tick()
        while True:
            try:
                seq, future = finished.get(timeout=0.5)
                break
            except queue.Empty:
                continue
        running -= 1
        try:
            collect(seq, future)
        except BaseException as exc:  # a chunk could not be written: stop, but let the others finish
            if error is None:
                error = exc
                fail_run(ctx, f"chunk {seq} failed: {exc.__class__.__name__}: {exc}")

    try:
        try:
            while not ctx.stopping:
                while running >= limit:
                    collect_one()
                if ctx.stopping:
                    break
                files = next(batches, None)
                if files is None:
                    break
                seq = next_seq()
                future = submit(seq, files)
                future.add_done_callback(lambda fut, s=seq: finished.put((s, fut)))
                running += 1
        except BaseException as exc:  # discovery or the task runner broke: chunks already started still finish
            if error is None:
                error = exc
                fail_run(ctx, f"{exc.__class__.__name__}: {exc}")
        while running:
            collect_one()
    finally:
        batches.close()  # stops discovery's thread pool
    if error is not None:
        raise error


def fail_run(ctx: RunContext, reason: str) -> None:
    """Something outside the describer broke (a chunk could not be written): stop like a fatal error."""
    if ctx.failure is None:
        ctx.failure = scrub(reason)
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
            "spent_usd": ctx.spent_usd,  # the ledger's total when billed requests are not committed
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
    return RunStatus.FINISHED, "; ".join(w.message() for w in withheld_removals(ctx)) or None


def withheld_removals(ctx: RunContext) -> list:
    """Roots where most known files were missing and nothing was marked gone (unless allowed)."""
    planner = ctx.planner
    return [] if planner is None or planner.allow_mass_removal else list(planner.withheld)


def refresh_search_index(root) -> None:
    """Bring `enrich search`'s index, if there is one, up to date with what the run wrote (while the run
    still holds the warehouse lock). Never fails the run: `enrich search` rebuilds it when it finds it stale."""
    try:
        from enrich.warehouse.search_index import ensure_fresh

        ensure_fresh(root, only_if_present=True)
    except Exception as exc:  # noqa: BLE001 - the index is derived data; the run's rows are committed
        log.warning("search index not updated: %r", exc)


def close_run(ctx: RunContext, status: str | None = None, message: str | None = None) -> str:
    """Record the run's end. Returns its final status."""
    try:
        if status is None:
            status, message = final_status(ctx)
        message = scrub(message)
        ctx.final_message = message
        write_run_snapshot(ctx, status, message)
        if ctx.ledger is not None:
            # every billed request has its committed row: the rows say it all and the ledger can go
            ctx.ledger.close(discard=ctx.ledger.error is None and ctx.ledger.total == ctx.stats.spent_usd)
        refresh_search_index(ctx.warehouse.root)
    finally:
        try:
            ctx.prepare_pool.shutdown(wait=True, cancel_futures=True)
            ctx.describer.close()
            if ctx.hash_cache is not None:
                ctx.hash_cache.close()
            if ctx.ledger is not None:
                ctx.ledger.close()  # kept, unless discarded above
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
        "spent_usd": str(ctx.spent_usd),
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
        "inflight_bytes": {"limit": ctx.inflight_bytes.limit, "peak": ctx.inflight_bytes.peak},
        "fatal": str(d.fatal) if d.fatal else None,
        "mode": ctx.settings.mode,
        "batch": batch_summary(ctx),
        "signal": ctx.interrupted_by,
        "gone_withheld": [{"root": w.root, "missing": w.missing, "known": w.known, "message": w.message()}
                          for w in withheld_removals(ctx)],
        "message": ctx.final_message,
    }


def batch_summary(ctx: RunContext) -> dict[str, Any] | None:
    """What the run did with batch jobs: created, packed, collected, still open."""
    if ctx.collector is None:
        return None
    out: dict[str, Any] = {"in_open_jobs": ctx.in_jobs, "sent_interactively_at_deadline": ctx.fallback_items}
    if ctx.packer is not None or ctx.settings.mode == "batch":
        p = ctx.packer.stats if ctx.packer is not None else None
        out["packed"] = p.packed if p else 0
        out["jobs_created"] = [j.job_id for j in p.jobs if j.name] if p else []
        out["not_submitted"] = p.not_submitted if p else 0
        out["queue_full"] = p.queue_full if p else 0
    c = ctx.collected
    if c is not None:
        out["collected"] = {"jobs": c.collected, "rows": c.rows, "ok": c.ok, "errors": c.errors,
                            "put_back": c.put_back, "spent_usd": str(c.spent_usd), "recovered": c.recovered,
                            "ended": dict(c.ended)}
    try:
        jobs = ctx.collector.store.open_jobs()
    except Exception:  # only the summary needs it
        jobs = []
    out["open_jobs"] = len(jobs)
    out["open_items"] = sum(j.items for j in jobs)
    return out
