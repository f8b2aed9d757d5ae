"""The Parquet schemas of the warehouse. tests/test_schema_golden.py pins them: changing a column is a
deliberate act that updates the golden file too.

`results` holds one row per item per run (the item's outcome in that run). `runs` holds run snapshots
(a row when a run starts and one when it ends; the view takes the latest per run_id).
"""
from __future__ import annotations

import pyarrow as pa

from enrich.schemas import vocab

# cost is exact: decimal, never float
COST_TYPE = pa.decimal128(22, 12)
TS = pa.timestamp("us", tz="UTC")

RESULT_FIELDS: list[pa.Field] = [
    # identity
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("content_hash", pa.string()),
    pa.field("size_bytes", pa.int64()),
    pa.field("mtime", TS),
    pa.field("kind", pa.string()),
    pa.field("mime", pa.string()),
    # outcome
    # ok | error | blocked | skipped | over_budget | interrupted | gone (path moved away or deleted)
    pa.field("status", pa.string(), nullable=False),
    pa.field("error_kind", pa.string()),
    pa.field("error", pa.string()),
    pa.field("finish_reason", pa.string()),
    pa.field("attempts", pa.int32()),
    # what produced it
    pa.field("backend", pa.string()),
    pa.field("model", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("resolution", pa.string()),
    pa.field("prompt_hash", pa.string()),
    pa.field("schema_hash", pa.string()),
    pa.field("enrichment_version", pa.string()),
    # money
    pa.field("input_tokens", pa.int64()),
    pa.field("output_tokens", pa.int64()),
    pa.field("thinking_tokens", pa.int64()),
    pa.field("cached_tokens", pa.int64()),
    pa.field("input_audio_tokens", pa.int64()),
    pa.field("cost_usd", COST_TYPE),
    pa.field("price_date", pa.string()),
    pa.field("batch", pa.bool_()),
    # timing
    pa.field("started_at", TS),
    pa.field("finished_at", TS),
    pa.field("latency_ms", pa.float64()),
    # image description (schemas/descriptions.py: ImageDescription)
    pa.field("caption", pa.string()),
    pa.field("description", pa.string()),
    pa.field("tags", pa.list_(pa.string())),
    pa.field("objects", pa.list_(pa.string())),
    pa.field("visible_text", pa.string()),
    pa.field("people_count", pa.int32()),
    pa.field("setting", pa.string()),
    # audio, document and video descriptions (AudioDescription, DocumentDescription, VideoDescription);
    # visible_text above is shared with video
    pa.field("summary", pa.string()),
    pa.field("transcript", pa.string()),
    pa.field("language", pa.string()),
    pa.field("speakers_count", pa.int32()),
    pa.field("sounds", pa.list_(pa.string())),
    pa.field("title", pa.string()),
    pa.field("document_type", pa.string()),
    pa.field("entities", pa.list_(pa.string())),
    pa.field("dates", pa.list_(pa.string())),
    pa.field("scenes", pa.list_(pa.string())),
    # extracted locally, for free
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("taken_at", pa.timestamp("us")),
    pa.field("gps_lat", pa.float64()),
    pa.field("gps_lon", pa.float64()),
    pa.field("camera_make", pa.string()),
    pa.field("camera_model", pa.string()),
    # read from audio, video and document headers (tasks/media_info.py)
    pa.field("duration_s", pa.float64()),  # of the file; with `trimmed`, only the first max_audio_seconds were sent
    pa.field("page_count", pa.int32()),
    pa.field("char_count", pa.int64()),
    pa.field("media_format", pa.string()),  # pcm, mp3, flac, opus, aac, mp4, quicktime, webm, pdf, text
    pa.field("sample_rate", pa.int32()),
    pa.field("channels", pa.int32()),
    pa.field("trimmed", pa.bool_()),
    # local engines and invalid output
    pa.field("raw_text", pa.string()),
    pa.field("tokens_per_second", pa.float64()),
    pa.field("peak_memory_mb", pa.float64()),
    # incremental runs: the path of the row this outcome was copied from (a moved file, a duplicate, or the
    # same bytes described before), with no model call and cost 0; null when the model was asked
    pa.field("reused_from", pa.string()),
    # profiles (schemas/profiles.py): what the model was asked. One current row per (path, profile); rows
    # written before profiles existed have none and read as `detailed`. A field of the profile's schema
    # with no typed column above is kept in fields_json (a JSON object); the profile_<name> view types it.
    pa.field("profile", pa.string()),
    pa.field("alt_text", pa.string()),  # the alt-text profile: at most 150 characters
    pa.field("fields_json", pa.string()),
]
# Statuses that record no outcome for the bytes (the item was never attempted to the end): the next run
# retries them, and the `items` view does not let them hide an earlier outcome (declared in vocab.py).
NO_OUTCOME_STATUSES = vocab.NO_OUTCOME_STATUSES
# Error kinds of a file that could not be read this time (permission, I/O error, vanished mid-scan): such a row
# has no content hash and says nothing about the bytes, so, like the statuses above, it never hides an earlier
# outcome (in `items` and to the planner) and is retried.
TRANSIENT_ERROR_KINDS = frozenset({vocab.ErrorKind.UNREADABLE})


def transient_sql(alias: str = "") -> str:
    """SQL: true for a row that records no outcome for the bytes (NO_OUTCOME_STATUSES, or a transient read
    error without a content hash)."""
    a = f"{alias}." if alias else ""
    statuses = ", ".join(f"'{s}'" for s in sorted(NO_OUTCOME_STATUSES))
    kinds = ", ".join(f"'{k}'" for k in sorted(TRANSIENT_ERROR_KINDS))
    return (f"({a}status IN ({statuses}) OR ({a}status = 'error' AND {a}error_kind IN ({kinds}) "
            f"AND {a}content_hash IS NULL))")


def unread_sql(alias: str = "") -> str:
    """SQL: true for a transient read error row (no content hash): it does not even say which bytes are there."""
    a = f"{alias}." if alias else ""
    kinds = ", ".join(f"'{k}'" for k in sorted(TRANSIENT_ERROR_KINDS))
    return f"({a}status = 'error' AND {a}error_kind IN ({kinds}) AND {a}content_hash IS NULL)"

RESULT_SCHEMA = pa.schema(RESULT_FIELDS)

RUN_FIELDS: list[pa.Field] = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("seq", pa.int32(), nullable=False),  # snapshot number within the run; the view takes the max
    pa.field("started_at", TS),
    pa.field("finished_at", TS),
    pa.field("status", pa.string()),  # running | finished | interrupted | failed | crashed
    pa.field("model", pa.string()),
    pa.field("roots", pa.list_(pa.string())),
    pa.field("items", pa.int64()),
    pa.field("ok", pa.int64()),
    pa.field("errors", pa.int64()),
    pa.field("skipped", pa.int64()),
    pa.field("blocked", pa.int64()),
    pa.field("over_budget", pa.int64()),
    pa.field("input_tokens", pa.int64()),
    pa.field("output_tokens", pa.int64()),
    pa.field("spent_usd", COST_TYPE),
    pa.field("budget_usd", COST_TYPE),
    pa.field("reserved_peak_usd", COST_TYPE),
    pa.field("price_date", pa.string()),
    pa.field("message", pa.string()),
    # incremental runs: files seen that needed no new row, rows copied without a model call, paths gone
    pa.field("unchanged", pa.int64()),
    pa.field("reused", pa.int64()),
    pa.field("gone", pa.int64()),
]
RUN_SCHEMA = pa.schema(RUN_FIELDS)

RESULT_COLUMNS = [f.name for f in RESULT_FIELDS]
DESCRIPTION_COLUMNS = ["caption", "description", "tags", "objects", "visible_text", "people_count", "setting"]

# Batch jobs (warehouse/jobs.py): one snapshot per change of a job; the `jobs` view takes the latest per job_id.
# The first snapshot (state `preparing`) is committed before the provider job is created.
JOB_FIELDS: list[pa.Field] = [
    pa.field("job_id", pa.string(), nullable=False),  # ours: <run_id>-<n>
    pa.field("seq", pa.int32(), nullable=False),
    pa.field("display_name", pa.string()),  # enrich-<job_id>: how a crashed run finds the provider's job again
    pa.field("name", pa.string()),  # the provider's, batches/...; null until created
    pa.field("model", pa.string()),
    pa.field("run_id", pa.string()),  # the run that submitted it
    pa.field("input", pa.string()),  # inline | file
    pa.field("items", pa.int64()),
    pa.field("keys", pa.list_(pa.string())),  # <content_hash>:<enrichment_version> per item
    pa.field("enqueued_tokens", pa.int64()),  # estimated input tokens it holds in the provider's queue
    pa.field("reserved_usd", COST_TYPE),  # its worst case at the batch price, held against budgets while open
    pa.field("spent_usd", COST_TYPE),  # what its collected rows cost
    # preparing | pending | running | succeeded (not yet collected) | collected | failed | expired | cancelled
    # | not_created
    pa.field("state", pa.string(), nullable=False),
    pa.field("reason", pa.string()),  # why it ended without results, or its per-item failures
    pa.field("ok", pa.int64()),
    pa.field("errors", pa.int64()),
    pa.field("created_at", TS),
    pa.field("submitted_at", TS),
    pa.field("updated_at", TS),
    pa.field("finished_at", TS),
]
JOB_SCHEMA = pa.schema(JOB_FIELDS)

# Every typed column a model's answer may fill (any kind, any profile); other answer fields go to fields_json.
ANSWER_COLUMNS = ["caption", "description", "tags", "objects", "visible_text", "people_count", "setting",
                  "summary", "transcript", "language", "speakers_count", "sounds", "title", "document_type",
                  "entities", "dates", "scenes", "alt_text"]
