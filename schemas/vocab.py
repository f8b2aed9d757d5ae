"""The warehouse's vocabulary, declared once: item statuses, run statuses, media kinds and error kinds.

Every member is a `StrEnum`, so it *is* its string: rows keep plain strings in the same Parquet columns
(the golden schema does not change) and comparisons with strings read from the warehouse just work.

Each error kind declares its retry class where it is declared:

- `Retry.TRANSIENT`: the outcome says nothing about the file (a rate limit, a server error, a timeout, the
  run stopping, a budget running out). The next run sends the item again without being asked.
- `Retry.FINAL`: the same bytes would fail the same way again (corrupt, too long, blocked, invalid output).
  The next run leaves the item alone unless `--reprocess failed` (or the model, prompt or schema changed).

`retried_next_run(status, error_kind)` is the one rule the incremental planner follows.
"""
from __future__ import annotations

import re
from enum import Enum, StrEnum


class Status(StrEnum):
    """The outcome of one file in one run (the `status` column)."""

    OK = "ok"
    ERROR = "error"
    BLOCKED = "blocked"  # the provider refused to answer (safety, recitation, a blocked prompt)
    SKIPPED = "skipped"  # not media, or a kind this run does not describe
    OVER_BUDGET = "over_budget"  # not sent: its worst case no longer fitted the budget
    INTERRUPTED = "interrupted"  # not finished: the run was stopped
    GONE = "gone"  # the path was moved away or deleted (hidden from `items`)
    PENDING = "pending"  # discovery only: media waiting to be described; never written to the warehouse


# Outcomes that say nothing about the bytes: they never hide an earlier description and are always retried.
NO_OUTCOME_STATUSES = frozenset({Status.INTERRUPTED, Status.OVER_BUDGET})


class RunStatus(StrEnum):
    """The `status` column of the `runs` view."""

    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM
    FAILED = "failed"  # stopped early: key rejected, model gone, endpoint down, quota used up
    CRASHED = "crashed"  # the process died; recorded by the next run


class MediaKind(StrEnum):
    """What a file is, by content (the `kind` column)."""

    IMAGE = "image"
    AUDIO = "audio"
    DOCUMENT = "document"
    VIDEO = "video"


class Retry(Enum):
    TRANSIENT = "transient"  # the next run retries it
    FINAL = "final"  # only `--reprocess failed` (or a new enrichment version) redoes it


class ErrorKind(StrEnum):
    """Why an item did not end `ok` (the `error_kind` column), each with its retry class."""

    retry: Retry

    def __new__(cls, value: str, retry: Retry) -> "ErrorKind":
        member = str.__new__(cls, value)
        member._value_ = value
        member.retry = retry
        return member

    # -- the request or the endpoint failed; nothing is known about the file: retried -------------------
    RATE_LIMITED = "rate_limited", Retry.TRANSIENT
    TIMEOUT = "timeout", Retry.TRANSIENT
    CONNECTION = "connection", Retry.TRANSIENT
    GARBAGE_RESPONSE = "garbage_response", Retry.TRANSIENT  # a 200 whose body is not the API's JSON
    SERVER_ERROR = "server_error", Retry.TRANSIENT  # an OpenAI-compatible 5xx, or an error inside a 200
    HTTP_408 = "http_408", Retry.TRANSIENT
    HTTP_500 = "http_500", Retry.TRANSIENT
    HTTP_502 = "http_502", Retry.TRANSIENT
    HTTP_503 = "http_503", Retry.TRANSIENT
    HTTP_504 = "http_504", Retry.TRANSIENT
    TRANSIENT = "transient", Retry.TRANSIENT  # RetryableError's default
    SLOW = "slow", Retry.TRANSIENT
    UPLOAD_FAILED = "upload_failed", Retry.TRANSIENT  # the Files API refused or lost an upload
    FILE_PROCESSING_TIMEOUT = "file_processing_timeout", Retry.TRANSIENT  # an upload never became ACTIVE
    # -- the run stopped; the item was never answered: retried -----------------------------------------
    RUN_ABORTED = "run_aborted", Retry.TRANSIENT
    ENDPOINT_DOWN = "endpoint_down", Retry.TRANSIENT
    ENDPOINT = "endpoint", Retry.TRANSIENT
    ENDPOINT_UNREACHABLE = "endpoint_unreachable", Retry.TRANSIENT
    AUTH = "auth", Retry.TRANSIENT  # the key was rejected: a new key fixes it
    UNKNOWN_MODEL = "unknown_model", Retry.TRANSIENT
    MODEL_NOT_FOUND = "model_not_found", Retry.TRANSIENT  # an OpenAI-compatible server not serving it (yet)
    QUOTA_EXHAUSTED = "quota_exhausted", Retry.TRANSIENT  # the daily quota: tomorrow it works
    FATAL = "fatal", Retry.TRANSIENT  # FatalRunError's default
    INTERRUPTED = "interrupted", Retry.TRANSIENT
    OVER_BUDGET = "over_budget", Retry.TRANSIENT
    # -- reading the file failed, maybe for a moment (a disk asleep, a lock): retried --------------------
    UNREADABLE = "unreadable", Retry.TRANSIENT
    CHANGED_DURING_RUN = "changed_during_run", Retry.TRANSIENT  # replaced between hashing and sending
    # -- the file itself: the same bytes fail the same way -----------------------------------------------
    BAD_MEDIA = "bad_media", Retry.FINAL  # MediaError's default
    CORRUPT = "corrupt", Retry.FINAL
    TRUNCATED = "truncated", Retry.FINAL
    ENCRYPTED = "encrypted", Retry.FINAL
    EMPTY = "empty", Retry.FINAL
    MISLABELLED = "mislabelled", Retry.FINAL  # named .jpg, holds something else
    TOO_LARGE = "too_large", Retry.FINAL
    TOO_LONG = "too_long", Retry.FINAL
    UNKNOWN_DURATION = "unknown_duration", Retry.FINAL  # a live WebM recording: no duration in its header
    UNSUPPORTED = "unsupported", Retry.FINAL
    RAW_NO_PREVIEW = "raw_no_preview", Retry.FINAL  # a camera RAW with no embedded preview to describe
    UNSUPPORTED_MEDIA = "unsupported_media", Retry.FINAL  # the backend does not take this media type
    METADATA_STRIP_FAILED = "metadata_strip_failed", Retry.FINAL
    NOT_FOUND = "not_found", Retry.FINAL  # vanished between the walk and the read
    BAD_FILENAME = "bad_filename", Retry.FINAL  # not valid UTF-8: rename the file
    SYMLINK_LOOP = "symlink_loop", Retry.FINAL
    BROKEN_LINK = "broken_link", Retry.FINAL
    # -- the provider answered, and would answer the same again ------------------------------------------
    MAX_TOKENS = "max_tokens", Retry.FINAL
    INVALID_OUTPUT = "invalid_output", Retry.FINAL
    NO_CANDIDATES = "no_candidates", Retry.FINAL
    REQUEST_REJECTED = "request_rejected", Retry.FINAL  # a 4xx about this request; ItemRequestError's default
    HTTP_400 = "http_400", Retry.FINAL
    HTTP_413 = "http_413", Retry.FINAL
    MODEL_ERROR = "model_error", Retry.FINAL  # a local model failed on this input
    FILE_PROCESSING_FAILED = "file_processing_failed", Retry.FINAL
    REFUSAL = "refusal", Retry.FINAL
    # -- blocked (status `blocked`): Gemini's finish and block reasons, lower-cased ------------------------
    PROMPT_BLOCKED = "prompt_blocked", Retry.FINAL
    SAFETY = "safety", Retry.FINAL
    RECITATION = "recitation", Retry.FINAL
    PROHIBITED_CONTENT = "prohibited_content", Retry.FINAL
    BLOCKLIST = "blocklist", Retry.FINAL
    SPII = "spii", Retry.FINAL
    IMAGE_SAFETY = "image_safety", Retry.FINAL
    # -- skipped (status `skipped`): nothing to describe ----------------------------------------------------
    NOT_MEDIA = "not_media", Retry.FINAL
    UNSUPPORTED_KIND = "unsupported_kind", Retry.FINAL
    UNSUPPORTED_TYPE = "unsupported_type", Retry.FINAL
    OUTSIDE_ROOT = "outside_root", Retry.FINAL  # a symlink out of the scanned folder
    COMPANION = "companion", Retry.FINAL  # a sidecar or other companion file beside the media (.xmp, .aae...)
    # -- gone (status `gone`) -------------------------------------------------------------------------------
    MOVED = "moved", Retry.FINAL
    REMOVED = "removed", Retry.FINAL
    # -- not item outcomes: the run could not start (never in a row; declared so every kind has a class) ----
    CONFIG = "config", Retry.FINAL
    USAGE = "usage", Retry.FINAL
    WAREHOUSE_BUSY = "warehouse_busy", Retry.FINAL

    @classmethod
    def for_http_status(cls, code: int) -> "ErrorKind":
        """The kind for an HTTP error status no more specific rule claimed (429, 401/403 and 404 have theirs)."""
        declared = cls._value2member_map_.get(f"http_{code}")
        if declared is not None:
            return declared  # type: ignore[return-value]
        return cls.SERVER_ERROR if code >= 500 else cls.REQUEST_REJECTED

    @classmethod
    def for_block_reason(cls, reason: str) -> "ErrorKind":
        """A Gemini finish or block reason (SAFETY, RECITATION, ...) as a blocked kind."""
        return cls._value2member_map_.get(reason.lower(), cls.SAFETY)  # type: ignore[return-value]


_HTTP_KIND = re.compile(r"http_(\d{3})")


def retry_class(error_kind: str | None) -> Retry:
    """The retry class of a kind as stored, including kinds older warehouses wrote (`http_5xx` codes that
    are not declared one by one are server errors; any other unknown kind is final)."""
    if error_kind is None:
        return Retry.FINAL
    member = ErrorKind._value2member_map_.get(error_kind)
    if member is not None:
        return member.retry  # type: ignore[attr-defined]
    m = _HTTP_KIND.fullmatch(error_kind)
    if m is not None:
        return ErrorKind.for_http_status(int(m.group(1))).retry
    return Retry.FINAL


def retried_next_run(status: str, error_kind: str | None) -> bool:
    """True when the next run sends this outcome again without being asked (the planner's one rule)."""
    if status in NO_OUTCOME_STATUSES:
        return True
    if status != Status.ERROR:
        return False  # ok, blocked, skipped and gone are answers; `--reprocess failed` redoes blocked ones
    return retry_class(error_kind) is Retry.TRANSIENT
