"""Build warehouse rows (schemas/parquet.py RESULT_SCHEMA) from outcomes. One function per outcome shape."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from enrich.backends.base import DescribeResult
from enrich.tasks.discover import DiscoveredFile


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def schema_hash(schema: type[BaseModel]) -> str:
    return short_hash(json.dumps(schema.model_json_schema(), sort_keys=True))


@dataclass(frozen=True)
class RunInfo:
    """What every row of a run shares: who produced it and with what."""

    run_id: str
    backend: str
    model: str
    resolution: str
    price_date: str
    batch: bool = False
    flex: bool = False  # interactive on the Flex service tier (priced at flex_factor)
    # ("profile/kind" or, for the detailed profile and callers without profiles, "kind", hash)
    prompt_hashes: tuple[tuple[str, str], ...] = ()
    schema_hashes: tuple[tuple[str, str], ...] = ()
    context: str = ""  # the --context fields, canonical order, comma-separated ("" = none)
    thinking: tuple[tuple[str, str], ...] = ()  # (profile, its thinking setting) where one is set
    default_profile: str = "detailed"  # the profile of a file that names none

    def version_of(self, kind: str | None, profile: str | None = None) -> tuple[str | None, str | None, str | None]:
        """(prompt hash, schema hash, enrichment version) for items of `kind` asked with `profile`."""
        return _version_of(self, kind, profile or self.default_profile)


def profile_key(profile: str, kind: str | None) -> str:
    return (kind or "") if profile == "detailed" else f"{profile}/{kind or ''}"


@lru_cache(maxsize=1024)
def _version_of(run: RunInfo, kind: str | None, profile: str) -> tuple[str | None, str | None, str | None]:
    """The same for every row of a run, so cached (it is computed per row)."""
    key = profile_key(profile, kind)
    prompt = dict(run.prompt_hashes).get(key)
    schema = dict(run.schema_hashes).get(key)
    return prompt, schema, enrichment_version(run.model, prompt, schema, run.resolution, run.context, profile,
                                              dict(run.thinking).get(profile))


def enrichment_version(model: str, prompt_hash: str | None, schema_hash: str | None, resolution: str,
                       context: str = "", profile: str = "detailed", thinking: str | None = None) -> str | None:
    """What a description depends on besides the bytes: model id, prompt, output schema, media resolution, the
    context fields put into the prompt (`--context`; without any, the version is what it always was), and the
    profile (with its thinking setting, when it has one).

    The detailed profile's versions are computed as before profiles existed (model|prompt|schema|resolution,
    plus the context tail), so rows written then keep matching while their prompt and schema are unchanged;
    every other profile adds its name, so two profiles with the same prompt and schema still never share rows.

    Results are keyed by (content_hash, enrichment_version): an `ok` row at the current version means the
    bytes need no model call; one at another version is *stale* (`enrich run --reprocess stale`).
    None for a kind the run cannot describe (no prompt or no schema): such rows (skipped, not media) have
    no version, and once the kind gains a prompt its files get a version and are picked up.
    Changing this formula makes every row stale: tests/test_incremental.py pins it.
    """
    if prompt_hash is None or schema_hash is None:
        return None
    text = f"{model}|{prompt_hash}|{schema_hash}|{resolution}"
    if context:
        text += f"|context={context}"
    if profile != "detailed":
        text += f"|profile={profile}"
    if thinking:
        text += f"|{thinking}"
    return short_hash(text)


def mtime_of(mtime_ns: int) -> datetime | None:
    """A file's mtime as stored in the warehouse (microseconds, UTC); None when unknown."""
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc) if mtime_ns else None


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def base_row(file: DiscoveredFile, run: RunInfo) -> dict[str, Any]:
    profile = file.profile or run.default_profile
    prompt, schema, version = run.version_of(file.kind, profile)
    return {
        "profile": profile,
        "run_id": run.run_id,
        "path": file.path,
        "content_hash": file.content_hash,
        "size_bytes": file.size,
        "mtime": mtime_of(file.mtime_ns),
        "kind": file.kind,
        "mime": file.mime,
        "backend": run.backend,
        "model": run.model,
        "resolution": run.resolution,
        "prompt_hash": prompt,
        "schema_hash": schema,
        "enrichment_version": version,
        "price_date": run.price_date,
        "batch": run.batch,
        "attempts": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "thinking_tokens": 0,
        "cached_tokens": 0,
        "input_audio_tokens": 0,
        "cost_usd": Decimal(0),
    }


def status_row(file: DiscoveredFile, run: RunInfo, status: str, error_kind: str | None, error: str | None,
               meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A row for an item that never reached the model: skipped, bad media, over budget, aborted."""
    row = base_row(file, run)
    ts = now_utc()
    row.update(status=status, error_kind=error_kind, error=error, started_at=ts, finished_at=ts)
    if meta:
        row.update(meta)
    return row


def result_row(file: DiscoveredFile, run: RunInfo, result: DescribeResult, *, cost: Decimal, attempts: int,
               started_at: datetime, meta: dict[str, Any]) -> dict[str, Any]:
    row = base_row(file, run)
    row.update(meta)
    return apply_result(row, result, cost=cost, attempts=attempts, started_at=started_at)


def batch_result_row(template: dict[str, Any], run_id: str, result: DescribeResult, *, cost: Decimal,
                     started_at: datetime | None) -> dict[str, Any]:
    """The row of an item served by a batch job: its template (written with the job: path, hash, version,
    local metadata) with the job's answer for it, in the collecting run."""
    row = dict(template)
    row.update(run_id=run_id, batch=True)
    return apply_result(row, result, cost=cost, attempts=1, started_at=started_at or template.get("started_at"))


def apply_result(row: dict[str, Any], result: DescribeResult, *, cost: Decimal, attempts: int,
                 started_at: datetime | None) -> dict[str, Any]:
    """Fill a row's outcome, usage, cost and description columns from a model answer."""
    usage = result.usage
    if usage is not None:
        row.update(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            thinking_tokens=usage.thinking_tokens,
            cached_tokens=usage.cached_tokens,
            input_audio_tokens=usage.input_by_modality.get("AUDIO", 0),
        )
    finished = now_utc()
    row.update(
        status=result.status,
        error_kind=result.error_kind,
        error=result.error,
        finish_reason=result.finish_reason,
        attempts=attempts,
        model_version=result.model_version,
        cost_usd=cost,
        started_at=started_at,
        finished_at=finished,
        latency_ms=result.extra.get("latency_ms", result.extra.get("wall_ms")),
        raw_text=result.raw_text,
        tokens_per_second=result.extra.get("tokens_per_second"),
        peak_memory_mb=result.extra.get("peak_memory_mb"),
    )
    if result.description is not None:
        row.update(answer_columns(result.description))
    return row


def answer_columns(description: BaseModel) -> dict[str, Any]:
    """A model's answer as row columns: each field in its typed column when the results schema has one of
    that name and type (schemas/profiles.py column_for), the others in `fields_json`."""
    from enrich.schemas.profiles import column_for, model_arrow_fields

    data = description.model_dump(mode="json")
    types = model_arrow_fields(type(description))
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in data.items():
        if column_for(name, types[name]) is not None:
            out[name] = value
        else:
            extra[name] = value
    if extra:
        out["fields_json"] = json.dumps(extra, ensure_ascii=False, sort_keys=True)
    return out


# What a copied row takes from the run that copies it rather than from its source: it cost nothing here.
_ZEROED = {"attempts": 0, "input_tokens": 0, "output_tokens": 0, "thinking_tokens": 0, "cached_tokens": 0,
           "input_audio_tokens": 0, "cost_usd": Decimal(0), "latency_ms": None, "tokens_per_second": None,
           "peak_memory_mb": None, "batch": False}


def copied_row(file: DiscoveredFile, run: RunInfo, source: dict[str, Any]) -> dict[str, Any]:
    """The outcome of `source` (a row for the same bytes, at another path) for `file`, without a model call.

    The description, the local metadata and what produced them (model, prompt/schema hashes, version) are
    the source's; this row's own cost is zero, and `reused_from` names the source path."""
    row = dict(source)
    ts = now_utc()
    row.update(_ZEROED)
    row.update(
        run_id=run.run_id,
        path=file.path,
        content_hash=file.content_hash,
        size_bytes=file.size,
        mtime=mtime_of(file.mtime_ns),
        kind=file.kind,
        mime=file.mime,
        price_date=run.price_date,
        started_at=ts,
        finished_at=ts,
        reused_from=source["path"],
        profile=file.profile or source.get("profile") or run.default_profile,
    )
    return row
