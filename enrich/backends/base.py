"""The one small interface every model backend implements.

A backend declares what it accepts as data (`Capabilities`) and turns one `DescribeRequest` into one
`DescribeResult`. Transport failures are raised as `enrich.errors.RetryableError` (the caller retries with
tenacity), `ItemRequestError` (this item is refused for good) or `FatalRunError` (the run must stop).
Model-level outcomes (blocked, truncated, invalid JSON) are *returned* as a result with a status, not raised.
"""
from __future__ import annotations

import os

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel
from enrich.schemas.vocab import ErrorKind


@dataclass(frozen=True)
class Capabilities:
    """What a backend accepts, as data: the flow checks items against this before sending anything."""

    mime_types: frozenset[str]
    max_inline_bytes: int  # a request's media above this must go through an upload path (or is refused)
    max_upload_bytes: int = 0  # 0: no upload path (Files API) available
    structured_output: bool = True  # server-side JSON schema enforcement
    batch: bool = False  # provider batch API (submit now, collect later)
    local: bool = False  # runs on this machine: concurrency is the model's, not the network's
    default_concurrency: int = 16

    def accepts(self, mime: str | None) -> bool:
        return mime is not None and mime in self.mime_types


@dataclass(frozen=True)
class MediaPart:
    mime: str
    data: bytes | None = None  # inline bytes (already prepared: downscaled, metadata stripped)
    path: Path | None = None  # for large media sent through an upload path
    # (size, mtime_ns, inode) the user's file had when it was hashed, for a file sent as it is (nothing to
    # strip): checked whenever it is read or uploaded, so bytes other than those hashed (and reserved for) are
    # never sent. None for inline bytes and for temporary copies (checked when they were made).
    expect: tuple[int, int, int | None] | None = None

    def check_unchanged(self, st: os.stat_result | None = None) -> None:
        """ItemRequestError (`changed_during_run`) when the file at `path` is not the one hashed any more."""
        if self.expect is None or self.path is None:
            return
        from enrich.errors import ItemRequestError

        try:
            st = st or os.stat(self.path)
        except OSError as e:
            raise ItemRequestError(f"the file changed during the run (it cannot be read now: {e.strerror}); not "
                                   "sent, it is retried by the next run", kind=ErrorKind.CHANGED_DURING_RUN) from None
        size, mtime_ns, inode = self.expect
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns) or (inode is not None and st.st_ino != inode):
            raise ItemRequestError("the file was modified or replaced after it was prepared; not sent, it is "
                                   "retried by the next run", kind=ErrorKind.CHANGED_DURING_RUN)

    def read_bytes(self) -> bytes:
        """The part's bytes, inline or read from its path. MediaError when unreadable or empty; ItemRequestError
        (`changed_during_run`) when the file is not the one hashed and prepared any more."""
        from enrich.errors import MediaError

        try:
            if self.data is not None or self.path is None:
                data = self.data
            else:
                with open(self.path, "rb") as fh:
                    self.check_unchanged(os.fstat(fh.fileno()))
                    data = fh.read()
                    self.check_unchanged(os.fstat(fh.fileno()))  # written to while we read
        except OSError as e:
            raise MediaError(f"cannot read media: {e}") from e
        if not data:
            raise MediaError("empty media")
        return data

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        return self.path.stat().st_size if self.path else 0


@dataclass(frozen=True)
class DescribeRequest:
    key: str  # stable id of the item (its content hash), used to map batch results back
    prompt: str
    schema: type[BaseModel]
    media: tuple[MediaPart, ...]
    max_output_tokens: int
    resolution: str = "low"  # low | medium | high
    thinking_budget: int | None = None  # the profile's thinking; None: none sent (the model's least)
    thinking_level: str | None = None


@dataclass
class Usage:
    input_tokens: int = 0  # all input, cached included (promptTokenCount)
    output_tokens: int = 0  # visible output (candidatesTokenCount)
    thinking_tokens: int = 0  # billed as output
    cached_tokens: int = 0
    input_by_modality: dict[str, int] = field(default_factory=dict)  # TEXT, IMAGE, AUDIO, VIDEO, DOCUMENT


@dataclass
class DescribeResult:
    status: str  # "ok" | "blocked" | "error"
    description: BaseModel | None = None
    usage: Usage | None = None
    error_kind: str | None = None  # e.g. max_tokens, invalid_output, safety, prompt_blocked
    error: str | None = None
    finish_reason: str | None = None
    raw_text: str | None = None  # kept when the output could not be validated
    model_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. tokens_per_second, peak_memory_mb


@runtime_checkable
class Backend(Protocol):
    name: str  # e.g. "gemini", "mlx", "openai"
    model: str  # the model id as priced in config/prices.toml
    capabilities: Capabilities

    async def preflight(self) -> None:
        """Cheap check before a run (key, model, endpoint; or load a local model).
        Raises FatalRunError with a one-line reason when the run cannot succeed."""
        ...

    async def describe(self, request: DescribeRequest) -> DescribeResult: ...

    async def aclose(self) -> None: ...
