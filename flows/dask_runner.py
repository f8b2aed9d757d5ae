"""`enrich run --runner dask`: chunk tasks on Dask workers (other processes, other machines), one budget, one
rate limit and one warehouse lock for the whole run.

What crosses the process boundary (all plain values, pickled by Dask):
- to a worker, per chunk (`ChunkSpec`): the run id and chunk seq, the settings *overrides* given to the run
  (the worker loads its own settings from its environment and config, so the API key never travels and is
  never a Prefect parameter), the run's `RunInfo` and prompts (so every worker describes with the same
  version), the files that need a request, and the rows the flow already decided (copies of earlier rows,
  discovery outcomes, skipped kinds);
- back, the chunk's rows in a slim form (status, tokens, cost) for the run's counts and progress: the full
  rows are in the part file the worker committed.

Where things live:
- the flow (coordinator process) holds the warehouse lock, plans (incremental state, duplicates, moves) and
  records the run; it registers a scheduler plugin holding the run's `Coordinator` (tasks/coordination.py):
  allowances (budget) and the shared rate timeline. The plugin lives with the Dask scheduler, so it outlives
  any worker, and it hears of dead workers (`remove_worker`) to hold their leases;
- each worker, per chunk: its own backend and Describer, whose Budget is a lease (`LeasedBudget`) and whose
  RateLimiter takes slots from the shared timeline (`SharedRateLimiter`); it prepares, describes and commits
  the chunk's part to the shared warehouse folder (same atomic rename, published only if no attempt of that
  chunk committed first: `os.link` fails on an existing name).

A worker killed mid-chunk: Dask runs the chunk again on another worker (`allowed-failures`). The new attempt
first looks for the chunk's part: if the dead attempt had committed it, nothing is described again (nothing
committed is billed twice); else the chunk is redone under a new lease. The dead attempt's lease is held, then
charged (tasks/coordination.py).

Object storage (`--warehouse s3://`, `gs://`, `az://`; warehouse/object_store.py and object_lock.py) follows the design
below, with two differences: the app transaction's id names the chunk (`<run_id>/<seq>`, see object_store.py for
why), and readers register deltalake's pyarrow dataset in DuckDB (no DuckDB extension). The design: keep the
warehouse's layout and views, but make each chunk's commit a Delta Lake transaction (`deltalake` write_deltalake,
mode append, one commit per chunk; the `_delta_log` conditional put is the atomic step, replacing rename/link).
Exactly-once per chunk: the commit carries `app_id=run_id, version=seq` as a Delta "txn" action (idempotent
writes), so a redone chunk whose first attempt committed sees its own txn and does not append again. Runs stay
snapshot rows in a second table. The run lock becomes a conditional write of `<url>/_lock` (create only if absent)
with a lease time the coordinator renews; `--wait` polls it. Readers: DuckDB's `delta_scan` over the same views (a
snapshot version per query, so never partial data). Compaction is Delta's OPTIMIZE; `gone`/current-row logic stays
in the views. Test: moto in server mode, concurrent writers plus a reader counting rows throughout.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from prefect import task
from prefect.cache_policies import NO_CACHE

from enrich.flows.pipeline import (
    RunContext, _row_without_request, copy_rows, feed_chunks, pair_row,
)
from enrich.schemas.vocab import Status
from enrich.tasks.coordination import AllowanceLedger, Coordinator, LeasedBudget, SharedRateLimiter, SlotIssuer
from enrich.tasks.discover import DiscoveredFile
from enrich.tasks.records import RunInfo, copied_row, status_row

log = logging.getLogger("enrich.dask")

HANDLER = "enrich_coordinator"
SLIM_KEYS = ("path", "content_hash", "kind", "status", "error_kind", "reused_from", "input_tokens", "output_tokens",
             "thinking_tokens", "cost_usd")


# -- the task runner ------------------------------------------------------------------------------------------
def dask_task_runner(address: str | None = None, workers: int | None = None):
    """prefect-dask's runner: an existing cluster at `address`, or a LocalCluster of `workers` processes
    (one thread each: a chunk already runs its own prepare pool and request loop)."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    share_prefect_api_with_local_workers()
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers or os.cpu_count() or 2, "processes": True,
                                          "threads_per_worker": 1, "dashboard_address": None})


def share_prefect_api_with_local_workers() -> None:
    """The local cluster's workers are new processes that inherit this environment. Without PREFECT_API_URL in
    it, each starts an ephemeral Prefect server of its own for its task runs (an API server process per worker:
    with py-spy, a third of a 1-worker run's CPU was the worker's own server starting and serving), and the
    flow's server never sees their task runs. Point them at this process's API: the one configured, or the
    ephemeral server this process uses (Prefect keeps one per process: started now, so its address is known).
    Workers of a cluster elsewhere (--dask-address) need PREFECT_API_URL set where they run."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start()
        url = server.api_url
    os.environ["PREFECT_API_URL"] = url


# -- the coordinator, hosted by the Dask scheduler -------------------------------------------------------------
_COORDINATORS: dict[str, Coordinator] = {}  # in the scheduler's process, by run id


def _handle(run_id: str, action: str, **kw: Any) -> dict[str, Any]:
    # `op` is Dask's own message key, so the coordinator's op travels as `action`
    coordinator = _COORDINATORS.get(run_id)
    if coordinator is None:
        raise RuntimeError(f"no coordinator for run {run_id} on this scheduler")
    return coordinator.handle(action, **kw)


class CoordinatorPlugin(SchedulerPlugin):
    """Holds one run's Coordinator on the scheduler; tells it when a worker is gone. (Module level, so Dask
    pickles it by reference and the scheduler's copy shares this module's `_COORDINATORS`.)"""

    def __init__(self, run_id: str, cap: str | None, hold_s: float, rpm: float | None, tpm: float | None):
        self.name = f"enrich-coordinator-{run_id}"
        self.run_id = run_id
        self.args = (cap, hold_s, rpm, tpm)

    async def start(self, scheduler) -> None:
        cap, hold_s, rpm, tpm = self.args
        _COORDINATORS[self.run_id] = Coordinator(AllowanceLedger(cap, hold_s=hold_s), SlotIssuer(rpm, tpm))
        scheduler.handlers[HANDLER] = _handle

    def remove_worker(self, scheduler, worker: str, **kwargs: Any) -> None:
        coordinator = _COORDINATORS.get(self.run_id)
        if coordinator is not None:
            held = coordinator.ledger.worker_lost(worker)
            if held:
                log.warning("worker %s died holding %d lease(s): held, then charged", worker, len(held))

    async def close(self) -> None:
        _COORDINATORS.pop(self.run_id, None)


class CoordinatorClient:
    """The flow's handle on the run's coordinator (through the Dask client)."""

    def __init__(self, client, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def call(self, op: str, **kw: Any) -> dict[str, Any]:
        return self.client.sync(lambda: getattr(self.client.scheduler, HANDLER)(run_id=self.run_id, action=op, **kw))


def _worker_call(run_id: str):
    """On a worker (inside a task): a blocking `call(op, **kw)` to the coordinator, usable from any thread."""
    from distributed import get_worker

    worker = get_worker()
    loop = worker.loop.asyncio_loop
    rpc = worker.scheduler

    def call(op: str, **kw: Any) -> dict[str, Any]:
        coro = getattr(rpc, HANDLER)(run_id=run_id, action=op, **kw)
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)

    return call, worker.address


# -- one chunk, on a worker -------------------------------------------------------------------------------------
@dataclass
class ChunkSpec:
    run_id: str
    seq: int
    warehouse: str
    overrides: dict[str, Any]
    info: RunInfo  # the run's enrichment versions: the worker checks its own profiles give the same
    files: list[DiscoveredFile]
    fixed: dict[int, dict[str, Any]] = field(default_factory=dict)  # rows the flow decided, by index
    later: dict[int, int] = field(default_factory=dict)  # same-chunk duplicate -> its leader's index
    pairs: set[int] = field(default_factory=set)  # of `later`: RAWs of a RAW+JPEG pair (their JPEG is the leader)
    quantum: str = "0"  # allowance asked for per top-up
    tokens_limited: bool = False
    slot_batch: int = 1


def part_path(warehouse: str | Path, run_id: str, seq: int) -> Path:
    from enrich.warehouse.store import RESULTS_DIR

    return Path(warehouse) / RESULTS_DIR / f"part-{run_id}-{seq:06d}.parquet"


def publish_once(rows: list[dict[str, Any]], dest: Path, tmp_dir: Path) -> bool:
    """Commit a chunk's part unless an earlier attempt of the same chunk already did (True: this one did):
    the warehouse's own protocol (private temp file, fsync, one atomic step), with link() so an existing part
    is never replaced."""
    from enrich.schemas.parquet import RESULT_SCHEMA
    from enrich.warehouse.store import publish_table_once, rows_to_table

    return publish_table_once(rows_to_table(rows, RESULT_SCHEMA), dest, tmp_dir)


def _slim(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in SLIM_KEYS}


def describe_chunk_on_worker(spec: ChunkSpec) -> dict[str, Any]:
    """Prepare, describe and commit one chunk on this worker. Returns the slim rows and the request counters."""
    from enrich.settings import is_object_url

    dest = part_path(spec.warehouse, spec.run_id, spec.seq)
    remote = keys = None
    if is_object_url(spec.warehouse):  # object storage: commits are Delta transactions, not files
        from enrich.warehouse.object_store import ObjectWarehouse

        remote = ObjectWarehouse(spec.warehouse)
        keys = [(f.path, f.profile or spec.info.default_profile) for f in spec.files]
    if remote is not None and remote.chunk_committed(spec.run_id, spec.seq):
        # an earlier attempt committed it (its app transaction is in the table): describe nothing again
        return {"rows": remote.chunk_rows(spec.run_id, keys, list(SLIM_KEYS)), "redone": False,
                "already_committed": True, "requests": 0, "throttled": 0, "retries": 0, "fatal": None}
    if remote is None and dest.exists():  # an earlier attempt (on a worker that died) committed it
        import pyarrow.parquet as pq

        return {"rows": pq.read_table(dest, columns=list(SLIM_KEYS)).to_pylist(), "redone": False,
                "already_committed": True, "requests": 0, "throttled": 0, "retries": 0, "fatal": None}

    from enrich.backends import create_backend
    from enrich.pricing import load_prices
    from enrich.settings import load_settings
    from enrich.tasks.describe import DescribeOptions, Describer
    from enrich.tasks.prepare import PrepareOptions, PreparedItem, prepare_file

    settings = load_settings().with_overrides(**spec.overrides)  # the key comes from this worker's environment
    # Prompts and schemas come from the worker's own profiles (user schemas are built classes, not data to
    # pickle); a worker whose config or prompts differ from the flow's would write rows of another version.
    prompts, schemas, thinking = worker_describe_inputs(settings, spec.info)
    price = load_prices(settings.config_dir).price(spec.info.model)
    backend = create_backend(spec.info.model, settings)
    call, address = _worker_call(spec.run_id)
    stop_reasons: list[str] = []
    budget = LeasedBudget(call, f"{spec.run_id}/{spec.seq}/{uuid.uuid4().hex[:8]}", address,
                          quantum=spec.quantum, on_stop=stop_reasons.append)
    limiter = None
    if not backend.capabilities.local:
        limiter = SharedRateLimiter(call, batch=spec.slot_batch, tokens_limited=spec.tokens_limited,
                                    on_stop=stop_reasons.append)
    concurrency = settings.concurrency
    if backend.capabilities.local:
        concurrency = min(concurrency, backend.capabilities.default_concurrency)
    describer = Describer(backend, spec.info, price,
                          DescribeOptions.from_settings(settings, prompts, schemas, concurrency=concurrency,
                                                        thinking=thinking),
                          budget=budget, limiter=limiter)
    budget.on_stop = limiter_stop = (lambda reason: describer.stop(reason))
    if limiter is not None:
        limiter.on_stop = limiter_stop
    options = PrepareOptions.from_settings(settings)
    rows: list[dict[str, Any] | None] = [None] * len(spec.files)
    for i, row in spec.fixed.items():
        rows[i] = row
    todo = [i for i in range(len(spec.files)) if rows[i] is None and i not in spec.later]

    def one(i: int):
        file = spec.files[i]
        try:
            if describer.stopping.is_set():
                return describer.not_sent_row(file)
            prepared = prepare_file(file, options)
            if isinstance(prepared, PreparedItem):
                future = describer.submit(prepared)
                future.add_done_callback(lambda _f: prepared.release())
                return future
            return status_row(file, spec.info, Status.ERROR, prepared.kind, str(prepared),
                              getattr(prepared, "meta", None))
        except Exception as exc:  # a bug must cost one row, not the chunk
            return status_row(file, spec.info, Status.ERROR, "internal",
                              f"unexpected error: {exc.__class__.__name__}: {exc}")

    workers = settings.prepare_workers or os.cpu_count() or 2
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enrich-prepare") as pool:
            pending = list(zip(todo, pool.map(one, todo)))
        for i, out in pending:
            rows[i] = out.result() if hasattr(out, "result") else out
        describe_now = []
        for i, leader in spec.later.items():
            if i in spec.pairs:  # the RAW of a pair: the JPEG's description, or described itself if that failed
                if rows[leader] is not None and rows[leader].get("status") == Status.OK:
                    rows[i] = pair_row(spec.files[i], spec.info, rows[leader])
                else:
                    describe_now.append(i)
                continue
            rows[i] = copied_row(spec.files[i], spec.info, rows[leader])
        if describe_now:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enrich-prepare") as pool:
                pending = list(zip(describe_now, pool.map(one, describe_now)))
            for i, out in pending:
                rows[i] = out.result() if hasattr(out, "result") else out
        final = [r for r in rows if r is not None]
        assert len(final) == len(spec.files), "every file gets exactly one row"
        if remote is not None:
            committed = remote.commit_chunk_once(final, spec.run_id, spec.seq)
            if not committed:  # a twin attempt committed first: report its rows, not ours
                final = remote.chunk_rows(spec.run_id, keys, list(SLIM_KEYS))
        else:
            committed = publish_once(final, dest, Path(spec.warehouse) / ".tmp")
            if not committed:  # a twin attempt committed first: report its rows, not ours
                import pyarrow.parquet as pq

                final = pq.read_table(dest, columns=list(SLIM_KEYS)).to_pylist()
    finally:
        try:
            describer.close()
        finally:
            budget.close()  # every request has settled or been released: report the spend, give back the rest
    return {"rows": [_slim(r) for r in final], "already_committed": not committed,
            "requests": describer.stats.requests, "throttled": describer.stats.throttled,
            "retries": describer.stats.retries, "fatal": str(describer.fatal) if describer.fatal else None}


def worker_describe_inputs(settings: Any, info: RunInfo) -> tuple[dict, dict, dict]:
    """(prompts, schemas, thinking) of the profiles `settings` ask, checked against the run's versions: a
    ConfigError naming the difference when this worker would describe differently from the flow."""
    from enrich.errors import ConfigError
    from enrich.tasks.incremental import describe_inputs, profiles_of, run_info_for

    profiles = profiles_of(settings)
    mine = run_info_for(profiles, run_id=info.run_id, backend=info.backend, model=info.model,
                        resolution=info.resolution, price_date=info.price_date)
    for what in ("prompt_hashes", "schema_hashes", "thinking"):
        if getattr(mine, what) != getattr(info, what):
            differ = sorted(set(getattr(mine, what)) ^ set(getattr(info, what)))
            raise ConfigError(f"this worker's profiles differ from the run's ({what.replace('_', ' ')}: "
                              f"{', '.join(str(k) for k, _ in differ)}): give every worker the same config and "
                              "prompts.toml as the machine that starts the run")
    return describe_inputs(profiles)


@task(name="enrich-chunk-dask", cache_policy=NO_CACHE, persist_result=False, retries=0,
      task_run_name="chunk-{spec.seq}")
def dask_chunk_task(spec: ChunkSpec) -> dict[str, Any]:
    return describe_chunk_on_worker(spec)


# -- the flow side -------------------------------------------------------------------------------------------------
def _register(ctx: RunContext, client, workers: int) -> CoordinatorClient:
    settings = ctx.settings
    budget = ctx.describer.budget
    limiter = ctx.describer.limiter
    hold_s = settings.request_timeout_s + settings.stop_grace_s + 5.0
    cap = budget.run_cap
    plugin = CoordinatorPlugin(ctx.run_id, None if cap is None else str(cap), hold_s,
                             limiter.rpm if limiter else None, limiter.tpm if limiter else None)
    client.register_plugin(plugin)
    return CoordinatorClient(client, ctx.run_id)


def _spec_for(ctx: RunContext, seq: int, files: list[DiscoveredFile], overrides: dict[str, Any],
              quantum: str, tokens_limited: bool, slot_batch: int) -> ChunkSpec:
    copies, later = copy_rows(ctx, files)
    fixed: dict[int, dict[str, Any]] = {}
    for i, f in enumerate(files):
        if i in later:
            continue
        row = copies.get(i) or _row_without_request(ctx, f)
        if row is None and ctx.stopping:
            row = ctx.describer.not_sent_row(f)
        if row is not None:
            fixed[i] = row
    pairs = set()
    for i in later:
        key = (ctx.run_id, files[i].path, files[i].profile)
        if key in ctx.pair_copies:
            ctx.pair_copies.discard(key)
            pairs.add(i)
    return ChunkSpec(ctx.run_id, seq, str(ctx.settings.warehouse), overrides, ctx.info, files, fixed,
                     later, pairs, quantum, tokens_limited, slot_batch)


def run_chunks_dask(ctx: RunContext, overrides: dict[str, Any], workers: int) -> dict[str, Any]:
    """Feed chunks to Dask workers until the files run out or the run stops; returns the coordinator's final
    ledger (for the summary)."""
    from prefect.context import get_run_context

    client = get_run_context().task_runner.client
    coordinator = _register(ctx, client, workers)
    budget = ctx.describer.budget
    limiter = ctx.describer.limiter
    quantum = "0" if budget.run_cap is None else str(budget.run_cap / (4 * max(1, workers)))
    tokens_limited = bool(limiter and limiter.tpm)
    slot_batch = 1 if not (limiter and limiter.rpm) else max(1, min(16, int(limiter.rpm / 60 / 20)))
    told_stop = False

    def submit(seq: int, files: list[DiscoveredFile]) -> Any:
        future = dask_chunk_task.submit(_spec_for(ctx, seq, files, overrides, quantum, tokens_limited, slot_batch))
        if ctx.planner is not None:  # duplicates waiting on this chunk may go on as soon as it ends
            future.add_done_callback(lambda _: ctx.planner.chunk_done(files))
        return future

    def collect(seq: int, future: Any) -> None:
        out = future.result()
        for row in out["rows"]:
            ctx.progress.record(row)
            if ctx.ledger is not None:
                # the flow's spend ledger learns each chunk's bill when it commits (a worker that dies before
                # committing is covered by the coordinator's held lease during the run, not by the ledger)
                ctx.ledger.record(row.get("cost_usd") or Decimal(0), row.get("content_hash"))
        with ctx.lock:
            ctx.stats.add_rows(out["rows"])
        d = ctx.describer.stats
        d.requests += out["requests"]
        d.throttled += out["throttled"]
        d.retries += out["retries"]
        if out.get("fatal") and ctx.describer.fatal is None:
            from enrich.errors import FatalRunError

            ctx.describer._abort(FatalRunError(out["fatal"]))

    def tell_workers_to_stop() -> None:
        nonlocal told_stop
        if ctx.stopping and not told_stop:
            told_stop = True
            coordinator.call("stop", reason=ctx.describer.stop_reason or "stopping")

    started = time.monotonic()
    error: BaseException | None = None
    try:
        feed_chunks(ctx, limit=max(2 * workers, 3), next_seq=ctx.next_seq, submit=submit, collect=collect,
                    tick=tell_workers_to_stop)
    except BaseException as exc:  # the run has failed (feed_chunks said why): unregister first, then raise
        error = exc
    ledger = coordinator.call("snapshot")
    d = ctx.describer.stats
    if d.requests:
        d.first_request_at, d.last_response_at = started, time.monotonic()
    budget.reserved_peak = Decimal(ledger["granted_peak"])  # the most allowance out at once
    try:
        client.unregister_scheduler_plugin(f"enrich-coordinator-{ctx.run_id}")
    except Exception:  # the cluster is going away with the run anyway
        pass
    if error is not None:
        raise error
    return ledger


def worker_overrides(settings: Any) -> dict[str, Any]:
    """What each worker applies over its own settings: the values this run was given by flag (in-process by
    `enrich run`, or as the flow's validated parameters), never the key. Workers read the rest, as the flow did,
    from their environment and config; the warehouse travels in each ChunkSpec."""
    from enrich.settings import FLAG, SETTINGS

    given = {name: getattr(settings, name) for name, source in settings.sources.items()
             if source == FLAG and name in SETTINGS and not SETTINGS[name].secret}
    # one run's profile choice (--profile, --prompt, --schema): flags that are not settings
    for name in ("run_profiles", "adhoc_prompt", "adhoc_schema"):
        if getattr(settings, name):
            given[name] = getattr(settings, name)
    return given
