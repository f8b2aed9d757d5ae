"""The one small interface every model backend implements.

A backend declares what it accepts as data (`Capabilities`) and turns one `DescribeRequest` into one
`DescribeResult`. Transport failures are raised as `enrich.errors.RetryableError` (the caller retries with
tenacity), `ItemRequestError` (this item is refused for good) or `FatalRunError` (the run must stop).
Model-level outcomes (blocked, truncated, invalid JSON) are *returned* as a result with a status, not raised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel


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

    def read_bytes(self) -> bytes:
        """The part's bytes, inline or read from its path. MediaError when unreadable or empty."""
        from enrich.errors import MediaError

        try:
            data = self.data if self.data is not None else (self.path.read_bytes() if self.path else None)
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
