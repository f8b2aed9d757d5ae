"""`enrich jobs collect` and `enrich jobs cancel`: the batch jobs of a warehouse outside a run. No Prefect.

Both take the warehouse lock like a run (only its holder writes), look at the open jobs with the run's
settings (endpoint, key, prices) and write what they find: rows of finished jobs, states, reasons.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone

from enrich.backends import create_backend
from enrich.backends.gemini import GeminiBackend
from enrich.backends.gemini_batch import GeminiBatchClient
from enrich.errors import ConfigError
from enrich.pricing import load_prices
from enrich.tasks.incremental import known_schemas
from enrich.settings import Settings
from enrich.tasks.batch import CollectStats, JobCollector
from enrich.warehouse.jobs import JobRecord, JobStore
from enrich.warehouse.lock import WarehouseLock


@dataclass
class JobsOutcome:
    stats: CollectStats
    job: JobRecord | None = None


def _with_collector(settings: Settings, wait: bool, what: str, fn):
    lock = WarehouseLock(settings.warehouse, what).acquire(wait=wait)
    backend = None
    try:
        backend = create_backend(settings.model, settings)
        if not isinstance(backend, GeminiBackend):
            raise ConfigError(f"batch jobs need a Gemini model, not {settings.model!r} (--model)")
        run_id = "collect-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        collector = JobCollector(GeminiBatchClient(backend), JobStore(settings.warehouse),
                                 load_prices(settings.config_dir), known_schemas(settings), run_id=run_id,
                                 max_output_tokens=settings.max_output_tokens, keep_hours=settings.batch_keep_hours)
        return fn(collector)
    finally:
        if backend is not None:
            try:
                asyncio.run(backend.aclose())
            except Exception:  # closing is best effort
                pass
        lock.release()


def collect_jobs(settings: Settings, *, wait: bool = False) -> JobsOutcome:
    """Recover, poll and collect every open job once."""
    return _with_collector(settings, wait, "enrich jobs collect", lambda c: JobsOutcome(c.collect_all()))


def cancel_job(settings: Settings, job: str, *, wait: bool = False) -> JobsOutcome:
    """Cancel one open job (by our job id, display name or the provider's name); its items go back."""
    def cancel(collector: JobCollector) -> JobsOutcome:
        jobs = collector.store.load()
        found = [j for j in jobs.values() if job in (j.job_id, j.display_name, j.name)]
        if not found:
            raise ConfigError(f"no batch job {job!r} in {settings.warehouse} (see `enrich jobs`)")
        target = found[0]
        if not target.open:
            return JobsOutcome(CollectStats(), target)
        return JobsOutcome(CollectStats(), collector.cancel(target, "cancelled with `enrich jobs cancel`"))

    return _with_collector(settings, wait, "enrich jobs cancel", cancel)
