"""The batch job manifest: `jobs/job-<job_id>-<seq>.parquet` snapshots and `job_items/items-<job_id>.parquet`.

A job is recorded *before* the provider's job is created: first its items (one template row per item, in the
results schema, holding what the item's row will say: path, hash, version, local metadata), then its first
snapshot, state `preparing`, which is the commit. Its display name, `enrich-<job_id>`, is derived from the
record, so a run that died between creating the provider's job and recording its name finds it again by
listing jobs (tasks/batch.py `recover_jobs`). Every later change of state is one more snapshot; readers take
the one with the highest `seq` per job. Part files are published by atomic rename like the rest of the
warehouse (warehouse/store.py), and only the holder of the warehouse lock writes them.

While a job is open (`OPEN_STATES`) its keys are not sent again and its reservation (its worst case at the
batch price) counts against the daily cap; once it ended, its rows are in `results` (collected) or its items
go back to be sent again (failed, expired, cancelled, not created).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

import pyarrow.parquet as pq

from enrich.schemas.parquet import JOB_SCHEMA, RESULT_SCHEMA
from enrich.warehouse.store import Warehouse, live_parts, publish_table, rows_to_table

JOBS_DIR = "jobs"
JOB_ITEMS_DIR = "job_items"

PREPARING, PENDING, RUNNING, SUCCEEDED = "preparing", "pending", "running", "succeeded"
COLLECTED, FAILED, EXPIRED, CANCELLED, NOT_CREATED = "collected", "failed", "expired", "cancelled", "not_created"
OPEN_STATES = frozenset({PREPARING, PENDING, RUNNING, SUCCEEDED})  # keys held, reservation counted
ENDED_STATES = frozenset({COLLECTED, FAILED, EXPIRED, CANCELLED, NOT_CREATED})
ZERO = Decimal(0)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def item_key(content_hash: str | None, enrichment_version: str | None) -> str:
    """The stable key of one batch line: the bytes and what describes them (the enrichment version, which
    holds the model, prompt, schema, resolution, and the profile once there are profiles)."""
    return f"{content_hash}:{enrichment_version}"


def display_name_of(job_id: str) -> str:
    return f"enrich-{job_id}"


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    seq: int
    display_name: str
    model: str
    run_id: str
    input: str
    items: int
    keys: tuple[str, ...]
    enqueued_tokens: int
    reserved_usd: Decimal
    state: str
    created_at: datetime
    name: str | None = None
    spent_usd: Decimal = ZERO
    reason: str | None = None
    ok: int = 0
    errors: int = 0
    submitted_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    def next(self, **changes: Any) -> "JobRecord":
        """The following snapshot of this job."""
        return replace(self, seq=self.seq + 1, updated_at=now_utc(), **changes)

    def age_hours(self, now: datetime | None = None) -> float:
        return ((now or now_utc()) - self.created_at).total_seconds() / 3600.0


_FIELD_NAMES = {f.name for f in fields(JobRecord)}


def _record_of(row: dict[str, Any]) -> JobRecord:
    values = {k: v for k, v in row.items() if k in _FIELD_NAMES}
    values["keys"] = tuple(values.get("keys") or ())
    values["reserved_usd"] = values.get("reserved_usd") or ZERO
    values["spent_usd"] = values.get("spent_usd") or ZERO
    values["ok"] = values.get("ok") or 0
    values["errors"] = values.get("errors") or 0
    return JobRecord(**values)


class JobStore:
    """The job manifest of one warehouse."""

    def __init__(self, warehouse: Warehouse | str | Path) -> None:
        self.warehouse = warehouse if isinstance(warehouse, Warehouse) else Warehouse(warehouse)

    @property
    def jobs_dir(self) -> Path:
        return self.warehouse.root / JOBS_DIR

    @property
    def items_dir(self) -> Path:
        return self.warehouse.root / JOB_ITEMS_DIR

    def job_files(self) -> list[Path]:
        return live_parts(self.jobs_dir)

    def write(self, record: JobRecord) -> JobRecord:
        row = asdict(record)
        row["keys"] = list(record.keys)
        table = rows_to_table([row], JOB_SCHEMA)
        publish_table(table, self.jobs_dir / f"job-{record.job_id}-{record.seq:06d}.parquet", self.warehouse.tmp_dir)
        return record

    def write_items(self, job_id: str, rows: list[dict[str, Any]]) -> Path:
        """The template rows of a job's items (before its first snapshot)."""
        return publish_table(rows_to_table(rows, RESULT_SCHEMA), self.items_path(job_id), self.warehouse.tmp_dir)

    def items_path(self, job_id: str) -> Path:
        return self.items_dir / f"items-{job_id}.parquet"

    def read_items(self, job_id: str) -> list[dict[str, Any]]:
        return pq.read_table(self.items_path(job_id), schema=RESULT_SCHEMA).to_pylist()

    def load(self) -> dict[str, JobRecord]:
        """The latest snapshot of every job, by job_id, oldest job first."""
        latest: dict[str, JobRecord] = {}
        for part in self.job_files():
            for row in pq.read_table(part, schema=JOB_SCHEMA).to_pylist():
                rec = _record_of(row)
                cur = latest.get(rec.job_id)
                if cur is None or rec.seq > cur.seq:
                    latest[rec.job_id] = rec
        return dict(sorted(latest.items(), key=lambda kv: (kv[1].created_at, kv[0])))

    def open_jobs(self) -> list[JobRecord]:
        return [j for j in self.load().values() if j.open]


def open_reserved_usd(jobs: Iterable[JobRecord]) -> Decimal:
    """What open jobs hold against budgets: each its reservation, until it is collected or put back."""
    return sum((j.reserved_usd for j in jobs if j.open), ZERO)


def open_keys(jobs: Iterable[JobRecord]) -> frozenset[str]:
    return frozenset(k for j in jobs if j.open for k in j.keys)


def enqueued_tokens(jobs: Iterable[JobRecord], model: str) -> int:
    """Input tokens the open jobs of `model` hold in the provider's queue (collected ones no longer count)."""
    return sum(j.enqueued_tokens for j in jobs if j.model == model and j.state in (PREPARING, PENDING, RUNNING))


def open_reserved_in(warehouse_dir: str | Path) -> Decimal:
    """Open job reservations of a warehouse (zero when it has no jobs)."""
    store = JobStore(warehouse_dir)
    if not store.jobs_dir.is_dir():
        return ZERO
    return open_reserved_usd(store.load().values())
