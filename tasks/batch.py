"""Batch mode: pack prepared items into Gemini Batch jobs, recover, poll and collect them.

Packing (`JobPacker.add`, from any prepare thread): each item becomes one line keyed by
`<content_hash>:<enrichment_version>` (warehouse/jobs.py `item_key`), its worst case at the batch price is
reserved on the run's budget (an item that does not fit is `over_budget`, like an interactive one), and it
joins the open job. A job closes when the next item would take the model's enqueued tokens (what open jobs
hold, by our estimates, plus this job) over `batch_enqueued_tokens`, or at `batch_max_items`, or at the end
of the run. Lines stay in memory as SDK `InlinedRequest`s while the job is under `batch_inline_max_bytes`;
beyond that they are spilled to a JSONL file in the warehouse's .tmp/ (uploaded through the Files API), so
memory stays flat whatever the job size.

Creating a job (`_create`) is three steps, each crash-safe:
  1. commit the manifest: the items' template rows, then the job's first snapshot (state `preparing`,
     display name `enrich-<job_id>`); the snapshot is the commit;
  2. create the provider's job under that display name;
  3. record its name and state.
A run killed between 1 and 3 leaves a `preparing` job: the next run (or `enrich jobs collect`) lists the
provider's jobs, finds the one with that display name and records it, or, when there is none, marks the job
`not_created` and its items go back to be sent again. Keys of open jobs are never sent again
(flows/pipeline.py leaves them out of planning), so nothing is submitted twice and nothing is lost.

Collecting (`JobCollector.collect_all`): every open job is looked at; a finished one's answers become its
items' rows (costed from their usage metadata at the batch price; a line the provider failed is that item's
error row; a line with no answer goes back), written as one results part named after the job (so a rerun
after a crash mid-collection does not write them twice), then the job is recorded `collected`. A job that
failed, expired or was cancelled is recorded so, with the reason, and its items go back. A job older than
`batch_keep_hours` that was not collected is expired (the provider keeps jobs and results 48 hours).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from enrich.backends.base import DescribeRequest
from enrich.backends.gemini_batch import BatchCreateRefused, GeminiBatchClient, error_result
from enrich.budget import Budget, Reservation, reserved_input_tokens
from enrich.errors import FatalRunError, RetryableError
from enrich.pricing import ModelPrice, PriceTable, cost_usd, worst_case_usd
from enrich.schemas.vocab import ErrorKind, Status
from enrich.tasks.discover import DiscoveredFile
from enrich.tasks.media_info import input_tokens_for
from enrich.tasks.prepared import PreparedItem
from enrich.schemas.profiles import DETAILED
from enrich.tasks.records import RunInfo, batch_result_row, profile_key, status_row
from enrich.warehouse.jobs import (
    CANCELLED, COLLECTED, EXPIRED, FAILED, NOT_CREATED, PENDING, PREPARING, RUNNING, SUCCEEDED, ZERO,
    JobRecord, JobStore, display_name_of, enqueued_tokens, item_key, now_utc,
)
from enrich.warehouse.store import Warehouse

log = logging.getLogger("enrich.batch")

B64_GROWTH = 4 / 3
LINE_OVERHEAD_BYTES = 4096  # prompt, schema and JSON around the media of one line (an over-estimate)


@dataclass
class BatchOptions:
    prompts: dict[str, str]
    schemas: dict[str, type[BaseModel]]
    max_output_tokens: int
    resolution: str
    enqueued_limit: int
    max_items: int
    inline_max_bytes: int
    # profile -> (thinking budget, thinking level), for the profiles that set one
    thinking: dict[str, tuple[int | None, str | None]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any, prompts: dict[str, str], schemas: dict[str, type[BaseModel]],
                      thinking: dict[str, tuple[int | None, str | None]] | None = None) -> "BatchOptions":
        """prompts/schemas keyed by tasks/records.py profile_key ("caption/image"; "image" for detailed)."""
        return cls(prompts=prompts, schemas=schemas, max_output_tokens=settings.max_output_tokens,
                   resolution=settings.resolution, enqueued_limit=settings.enqueued_token_limit(),
                   max_items=settings.batch_max_items, inline_max_bytes=settings.batch_inline_max_bytes,
                   thinking=thinking or {})

    def key_for(self, kind: str, profile: str) -> str:
        key = profile_key(profile, kind)
        return key if key in self.prompts else kind


@dataclass
class _OpenJob:
    keys: list[str] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    inline: list[Any] = field(default_factory=list)
    spool: Path | None = None
    spool_fh: Any = None
    bytes: int = 0
    tokens: int = 0
    reserved: Decimal = ZERO


@dataclass
class PackStats:
    packed: int = 0  # items put into jobs
    jobs: list[JobRecord] = field(default_factory=list)  # created (or refused) by this run
    not_submitted: int = 0  # items of jobs the provider refused to create: sent again by a later run
    queue_full: int = 0
    over_budget: int = 0


class JobPacker:
    """Packs one run's prepared items into batch jobs. `add` is thread-safe."""

    def __init__(self, client: GeminiBatchClient, store: JobStore, info: RunInfo, price: ModelPrice,
                 options: BatchOptions, budget: Budget, *, already_enqueued: int = 0) -> None:
        self.client = client
        self.store = store
        self.info = info  # batch=True: the rows its jobs produce say so
        self.price = price
        self.options = options
        self.budget = budget
        self.enqueued = already_enqueued  # tokens open jobs of this model hold at the provider
        self.stats = PackStats()
        self.reservations: dict[str, Reservation] = {}  # job_id -> what this run's budget holds for it
        self._builders: dict[str, Any] = {}  # kind -> LineBuilder (the SDK converts each kind's request once)
        self._lock = threading.Lock()
        self._job = _OpenJob()
        self._n = 0
        self._keys_seen: set[str] = set()

    # -- packing ------------------------------------------------------------------------------------------
    def add(self, item: PreparedItem) -> dict[str, Any] | None:
        """Put `item` into a job: None when it is in one (its row comes when the job is collected), else the
        row it gets now (over budget, the queue full)."""
        file = item.file
        kind = file.kind or ""
        opts = self.options
        profile = file.profile or self.info.default_profile
        # the version includes the profile (tasks/records.py), so the key does: one item per (bytes, profile)
        _, _, version = self.info.version_of(kind, profile)
        key = item_key(file.content_hash, version)
        pkey = opts.key_for(kind, profile)
        budget, level = opts.thinking.get(profile, (None, None))
        request = DescribeRequest(key=key, prompt=opts.prompts[pkey], schema=opts.schemas[pkey], media=item.media,
                                  max_output_tokens=opts.max_output_tokens, resolution=opts.resolution,
                                  thinking_budget=budget, thinking_level=level)
        est_input, est_audio = input_tokens_for(item.media_tokens_hint, self.info.model, opts.resolution,
                                                request.prompt, request.schema)
        reserve_input = reserved_input_tokens(est_input)
        worst = worst_case_usd(reserve_input, opts.max_output_tokens, self.price, batch=True,
                               audio_tokens=min(reserve_input, reserved_input_tokens(est_audio)) if est_audio else 0)
        with self._lock:
            if key in self._keys_seen:
                return None  # the same bytes are already in a job of this run: a later run copies their row
            if self.enqueued + self._job.tokens + est_input > opts.enqueued_limit and self._job.keys:
                self._flush_locked()
            if self.enqueued + est_input > opts.enqueued_limit:
                self.stats.queue_full += 1
                return self._row(item, Status.INTERRUPTED, ErrorKind.BATCH_QUEUE_FULL,
                                 f"not sent: open batch jobs of {self.info.model} hold {self.enqueued} input tokens, "
                                 f"the enqueued-token limit is {opts.enqueued_limit}; a later run sends it")
            reservation = self.budget.try_reserve(worst)
            if reservation is None:
                self.stats.over_budget += 1
                return self._row(item, Status.OVER_BUDGET, ErrorKind.OVER_BUDGET,
                                 f"not sent: its worst case ${worst} at the batch price does not fit in what is "
                                 "left of the budget")
            job = self._job
            media = [(m.read_bytes(), m.mime) for m in item.media]
            size = int(sum(len(d) for d, _ in media) * B64_GROWTH) + len(request.prompt) + LINE_OVERHEAD_BYTES
            if job.spool is None and job.bytes + size > opts.inline_max_bytes:
                self._spill_locked(job)
            if job.spool_fh is not None:
                job.spool_fh.write(self._builder(kind, request).jsonl(key, media))
            else:
                self._builder(kind, request)
                job.inline.append((kind, key, media))
            job.keys.append(key)
            job.templates.append(status_row(file, self.info, Status.PENDING, None, None, item.meta))
            job.bytes += size
            job.tokens += est_input
            job.reserved += reservation.amount
            self._keys_seen.add(key)
            self.stats.packed += 1
            if len(job.keys) >= opts.max_items:
                self._flush_locked()
        return None

    def _builder(self, kind: str, request: DescribeRequest):
        builder = self._builders.get(kind)
        if builder is None:
            builder = self._builders[kind] = self.client.line_builder(request.prompt, request.schema,
                                                                      request.max_output_tokens, request.resolution)
        return builder

    def _row(self, item: PreparedItem, status: str, kind: str, message: str) -> dict[str, Any]:
        return status_row(item.file, replace(self.info, batch=False), status, kind, message, item.meta)

    def _spill_locked(self, job: _OpenJob) -> None:
        """Past the inline limit: the job's lines go to a JSONL file (uploaded through the Files API)."""
        tmp = self.store.warehouse.tmp_dir
        tmp.mkdir(parents=True, exist_ok=True)
        job.spool = tmp / f"batch-{self.info.run_id}-{uuid.uuid4().hex[:8]}.jsonl"
        job.spool_fh = open(job.spool, "wb")
        for kind, key, media in job.inline:
            job.spool_fh.write(self._builders[kind].jsonl(key, media))
        job.inline = []

    def flush(self) -> JobRecord | None:
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> JobRecord | None:
        job, self._job = self._job, _OpenJob()
        if not job.keys:
            return None
        if job.spool_fh is not None:
            job.spool_fh.close()
        self._n += 1
        try:
            return self._create(job, f"{self.info.run_id}-{self._n}")
        finally:
            if job.spool is not None:
                job.spool.unlink(missing_ok=True)

    def _create(self, job: _OpenJob, job_id: str) -> JobRecord:
        now = now_utc()
        record = JobRecord(job_id=job_id, seq=1, display_name=display_name_of(job_id), model=self.info.model,
                           run_id=self.info.run_id, input="file" if job.spool else "inline", items=len(job.keys),
                           keys=tuple(job.keys), enqueued_tokens=job.tokens, reserved_usd=job.reserved,
                           state=PREPARING, created_at=now, updated_at=now)
        self.store.write_items(job_id, job.templates)
        self.store.write(record)  # the commit: from here the keys are held and the reservation counted
        crash_point("created-manifest")
        try:
            inline = None if job.spool else [self._builders[k].inlined(key, media) for k, key, media in job.inline]
            remote = self.client.create(record.display_name, inline=inline, jsonl=job.spool)
        except (BatchCreateRefused, RetryableError) as exc:
            self.budget.release(Reservation(job.reserved))
            self.stats.not_submitted += len(job.keys)
            record = self.store.write(record.next(state=NOT_CREATED, finished_at=now_utc(),
                                                  reason=f"not created: {exc}; its items are sent again"))
            self.stats.jobs.append(record)
            log.warning("batch job %s not created: %s", job_id, exc)
            return record
        crash_point("created-job")
        record = self.store.write(record.next(name=remote.name, state=remote.state, submitted_at=now_utc()))
        self.reservations[job_id] = Reservation(job.reserved)
        self.enqueued += job.tokens
        self.stats.jobs.append(record)
        return record

    def close(self) -> None:
        self.flush()

    def abandon(self, why: str) -> list[dict[str, Any]]:
        """The run stops before the open job was created: its items' rows say so (`interrupted`, retried by
        the next run), its reservation is released, and no job is made."""
        with self._lock:
            job, self._job = self._job, _OpenJob()
        if job.spool_fh is not None:
            job.spool_fh.close()
        if job.spool is not None:
            job.spool.unlink(missing_ok=True)
        if not job.keys:
            return []
        self.budget.release(Reservation(job.reserved))
        rows = []
        for template in job.templates:
            row = dict(template)
            row.update(status=Status.INTERRUPTED, error_kind=ErrorKind.INTERRUPTED, batch=False,
                       error=f"not sent: {why} before its batch job was created", finished_at=now_utc())
            rows.append(row)
        return rows


def crash_point(name: str) -> None:
    """Tests only: ENRICH_TEST_BATCH_PAUSE=<name>:<seconds> sleeps here, so a test can SIGKILL the process at
    a known step of creating a job (the kill itself comes from outside, like a real crash)."""
    spec = os.environ.get("ENRICH_TEST_BATCH_PAUSE", "")
    if spec.startswith(name + ":"):
        time.sleep(float(spec.split(":", 1)[1]))


# -- collecting -------------------------------------------------------------------------------------------------
@dataclass
class CollectStats:
    looked_at: int = 0
    collected: int = 0  # jobs collected
    rows: int = 0
    ok: int = 0
    errors: int = 0
    put_back: int = 0  # items of failed / expired / cancelled / uncreated jobs, sent again
    spent_usd: Decimal = ZERO
    still_open: int = 0
    recovered: int = 0  # preparing jobs found at the provider by display name
    ended: dict[str, int] = field(default_factory=dict)  # state -> jobs that ended so


class JobCollector:
    """Looks at a warehouse's open jobs: recovers, polls, collects, expires."""

    def __init__(self, client: GeminiBatchClient, store: JobStore, prices: PriceTable,
                 schemas: dict[str, type[BaseModel]], *, run_id: str, max_output_tokens: int,
                 keep_hours: float, budget: Budget | None = None,
                 reservations: dict[str, Reservation] | None = None) -> None:
        self.client = client
        self.store = store
        self.prices = prices
        self.schemas = schemas
        self.run_id = run_id
        self.max_output_tokens = max_output_tokens
        self.keep_hours = keep_hours
        self.budget = budget
        self.reservations = reservations if reservations is not None else {}
        self._remote_by_display: dict[str, list] | None = None

    def collect_all(self, job_ids: set[str] | None = None) -> CollectStats:
        stats = CollectStats()
        for job in self.store.load().values():
            if not job.open or (job_ids is not None and job.job_id not in job_ids):
                continue
            stats.looked_at += 1
            job = self.step(job, stats)
            if job.open:
                stats.still_open += 1
            else:
                stats.ended[job.state] = stats.ended.get(job.state, 0) + 1
        return stats

    def step(self, job: JobRecord, stats: CollectStats) -> JobRecord:
        """Move one open job as far as it can go now."""
        if job.state == PREPARING:
            job = self._recover(job, stats)
            if not job.open:
                return job
        if job.name is None:
            return job
        try:
            remote = self.client.get(job.name)
        except FatalRunError as exc:
            if exc.kind != ErrorKind.UNKNOWN_MODEL:  # a 404 for the job: the provider no longer has it
                raise
            return self._end(job, EXPIRED, f"the provider no longer has {job.name}", stats)
        expired_here = job.age_hours() > self.keep_hours
        if remote.state in (PENDING, RUNNING):
            if expired_here:
                try:
                    self.client.cancel(job.name)
                except Exception:  # best effort: the provider expires it anyway
                    pass
                return self._end(job, EXPIRED, f"still {remote.state} after {job.age_hours():.0f} h "
                                 f"(over {self.keep_hours:g} h)", stats)
            if remote.state != job.state:
                job = self.store.write(job.next(state=remote.state))
            return job
        if remote.state == SUCCEEDED:
            if expired_here:
                return self._end(job, EXPIRED, f"finished but not collected within {self.keep_hours:g} h: the "
                                 "provider no longer keeps its results", stats)
            return self._collect(job, stats)
        reason = {FAILED: "the job failed", EXPIRED: "the job expired at the provider (not done within 48 h)",
                  CANCELLED: "the job was cancelled"}.get(remote.state, f"the job ended {remote.state}")
        if remote.error:
            reason += f": {remote.error}"
        return self._end(job, remote.state if remote.state in (FAILED, EXPIRED, CANCELLED) else FAILED, reason, stats)

    def _recover(self, job: JobRecord, stats: CollectStats) -> JobRecord:
        found = self.client.find(job.display_name)
        if not found:
            return self._end(job, NOT_CREATED, "the run that prepared it stopped before the job was created", stats)
        remote = sorted(found, key=lambda r: r.create_time or datetime.min.replace(tzinfo=timezone.utc))[0]
        stats.recovered += 1
        return self.store.write(job.next(name=remote.name, state=PENDING, submitted_at=remote.create_time,
                                         reason="recorded after a crash, found by its display name"))

    def _end(self, job: JobRecord, state: str, reason: str, stats: CollectStats) -> JobRecord:
        """The job ended without results: its items go back (no rows), its reservation is released."""
        stats.put_back += job.items
        self._settle(job, ZERO)
        return self.store.write(job.next(state=state, reason=f"{reason}; its {job.items} item(s) are sent again",
                                         finished_at=now_utc()))

    def _settle(self, job: JobRecord, spent: Decimal) -> None:
        reservation = self.reservations.pop(job.job_id, None)
        if self.budget is not None and reservation is not None:
            self.budget.settle(reservation, spent)

    def _collect(self, job: JobRecord, stats: CollectStats) -> JobRecord:
        templates = {item_key(t.get("content_hash"), t.get("enrichment_version")): t
                     for t in self.store.read_items(job.job_id)}
        price = self.prices.price(job.model)
        rows: list[dict[str, Any]] = []
        now = now_utc()
        for key, response, error, code in self.client.results(job.name or ""):
            template = templates.pop(key, None)
            if template is None:
                continue  # not ours, or a second answer for a key: the first one counts
            if response is not None:
                request = self._request_for(template)
                result = self.client.to_result(response, request)
                cost = cost_usd(result.usage, price, batch=True) if result.usage else ZERO
            else:
                result, cost = error_result(error or "no answer", code), ZERO
            rows.append(batch_result_row(template, self.run_id, result, cost=cost, started_at=job.submitted_at))
        missing = len(templates)
        ok = sum(1 for r in rows if r["status"] == Status.OK)
        failed = len(rows) - ok
        spent = sum((r["cost_usd"] for r in rows), ZERO)
        warehouse: Warehouse = self.store.warehouse
        part = warehouse.results_dir / f"part-job-{job.job_id}-000000.parquet"
        if rows and not part.exists():  # a collection killed after writing its rows: they count once
            warehouse.write_results(rows, f"job-{job.job_id}", 0)
        crash_point("collected-rows")
        reason = None
        if failed or missing:
            reason = "; ".join(x for x in (f"{failed} line(s) did not end ok" if failed else "",
                                           f"{missing} line(s) had no answer and are sent again" if missing else "")
                               if x)
        self._settle(job, spent)
        stats.collected += 1
        stats.rows += len(rows)
        stats.ok += ok
        stats.errors += failed
        stats.put_back += missing
        stats.spent_usd += spent
        return self.store.write(job.next(state=COLLECTED, spent_usd=spent, ok=ok, errors=failed, reason=reason,
                                         finished_at=now))

    def _request_for(self, template: dict[str, Any]) -> DescribeRequest:
        kind = template.get("kind") or ""
        key = profile_key(template.get("profile") or DETAILED, kind)
        schema = self.schemas[key if key in self.schemas else kind]
        return DescribeRequest(key="", prompt="", schema=schema, media=(), max_output_tokens=self.max_output_tokens,
                               resolution=template.get("resolution") or "low")

    def cancel(self, job: JobRecord, reason: str) -> JobRecord:
        """Cancel an open job; when it turns out to have finished first, collect it instead."""
        stats = CollectStats()
        if job.state == PREPARING:
            job = self._recover(job, stats)
            if not job.open:
                return job
        if job.name is not None:
            self.client.cancel(job.name)
            remote = self.client.get(job.name)
            if remote.state == SUCCEEDED:
                return self._collect(job, stats)
        return self._end(job, CANCELLED, reason, stats)


def file_of(template: dict[str, Any]) -> DiscoveredFile:
    """The discovered file a template row stands for (to send it again, interactively)."""
    mtime = template.get("mtime")
    mtime_ns = int(mtime.timestamp() * 1_000_000) * 1000 if mtime is not None else 0
    return DiscoveredFile(path=template["path"], size=int(template.get("size_bytes") or 0), mtime_ns=mtime_ns,
                          kind=template.get("kind"), mime=template.get("mime"),
                          content_hash=template.get("content_hash"), status=Status.PENDING, error_kind=None,
                          error=None)


def enqueued_now(store: JobStore, model: str) -> int:
    return enqueued_tokens(store.load().values(), model)
