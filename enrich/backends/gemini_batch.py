"""The Gemini Batch API through the real google-genai SDK (`client.batches`, `client.files`).

What enrich needs from it, as plain values: build one line per item (an SDK `InlinedRequest`, or the same as a
JSONL line in the REST form for a file input), create a job under a display name, look jobs up by that name
after a crash (the SDK cannot filter the list on the Developer API, so every page is read and matched here),
get a job's state, read its results by key (inline answers carry the `metadata` they were sent with, file
answers their `key`), and cancel. Results become `DescribeResult`s exactly like interactive answers
(GeminiBackend._to_result), so a row says the same whichever path served it. Calls are synchronous: a run
makes a handful of them.
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from google.genai import errors as genai_errors
from google.genai import types
from google.genai._common import convert_to_dict, encode_unserializable_types
from google.genai.batches import _GenerateContentResponse_from_mldev, _InlinedRequest_to_mldev

from enrich.backends.base import DescribeRequest, DescribeResult
from enrich.backends.gemini import GeminiBackend
from enrich.errors import FatalRunError, ItemRequestError, RetryableError
from enrich.schemas.vocab import ErrorKind, Status

# provider job state (the SDK's JobState names) -> the manifest's
STATES = {
    "JOB_STATE_PENDING": "pending", "JOB_STATE_QUEUED": "pending", "JOB_STATE_RUNNING": "running",
    "JOB_STATE_SUCCEEDED": "succeeded", "JOB_STATE_FAILED": "failed", "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_CANCELLING": "running", "JOB_STATE_EXPIRED": "expired", "JOB_STATE_PARTIALLY_SUCCEEDED": "succeeded",
}


@dataclass(frozen=True)
class RemoteJob:
    name: str
    display_name: str | None
    state: str  # pending | running | succeeded | failed | cancelled | expired
    create_time: datetime | None = None
    error: str | None = None


class BatchCreateRefused(Exception):
    """The provider refused to create a job; `queue_full` when it was the enqueued-token limit (429)."""

    def __init__(self, message: str, *, queue_full: bool = False, transient: bool = False) -> None:
        super().__init__(message)
        self.queue_full = queue_full
        self.transient = transient


def _state(job: types.BatchJob) -> str:
    raw = str(getattr(job.state, "value", job.state) or "")
    return STATES.get(raw, raw.removeprefix("JOB_STATE_").lower() or "pending")


def _remote(job: types.BatchJob) -> RemoteJob:
    error = None
    if job.error is not None:
        error = getattr(job.error, "message", None) or str(job.error)
    return RemoteJob(name=job.name or "", display_name=job.display_name, state=_state(job),
                     create_time=job.create_time, error=error)


@dataclass(frozen=True)
class LineBuilder:
    """One kind's batch lines without the SDK's per-line conversion (which costs milliseconds a line)."""

    extra_json: str  # the request's other members (generationConfig, systemInstruction, ...) as `,"k":v` text
    tail_parts_json: str  # the prompt part, as the SDK writes it
    role: str
    config: Any  # the SDK GenerateContentConfig, for inline lines
    prompt: str

    def jsonl(self, key: str, media: list[tuple[bytes, str]]) -> bytes:
        parts = [f'{{"inlineData":{{"data":"{base64.urlsafe_b64encode(data).decode()}","mime_type":{json.dumps(mime)}}}}}'
                 for data, mime in media]
        parts.append(self.tail_parts_json)
        request = f'{{"contents":[{{"parts":[{",".join(parts)}],"role":{json.dumps(self.role)}}}]'
        request += self.extra_json
        return f'{{"key":{json.dumps(key)},"request":{request}}}}}\n'.encode()

    def inlined(self, key: str, media: list[tuple[bytes, str]]) -> types.InlinedRequest:
        parts: list[Any] = [types.Part.from_bytes(data=data, mime_type=mime) for data, mime in media]
        parts.append(types.Part.from_text(text=self.prompt))
        return types.InlinedRequest(contents=[types.Content(role=self.role, parts=parts)], config=self.config,
                                    metadata={"key": key})


class GeminiBatchClient:
    """Batch jobs for one model, over the backend's SDK client (same endpoint, key and error mapping)."""

    def __init__(self, backend: GeminiBackend) -> None:
        self.backend = backend
        self.model = backend.model
        self._client = backend._client

    # -- lines ------------------------------------------------------------------------------------------
    def line_builder(self, prompt: str, schema: type, max_output_tokens: int, resolution: str) -> "LineBuilder":
        """Fast JSONL lines for one kind: the SDK converts the request once (config, prompt part), and each
        item only adds its key and media. Same JSON as `jsonl_line` of the SDK's own conversion."""
        probe = DescribeRequest(key="", prompt=prompt, schema=schema, media=(), max_output_tokens=max_output_tokens,
                                resolution=resolution)
        rest = json.loads(self.jsonl_line(self.inlined(probe)))["request"]
        (content,) = rest.pop("contents")
        extra = "".join(f",{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in rest.items())
        return LineBuilder(extra_json=extra,
                           tail_parts_json=",".join(json.dumps(p, separators=(",", ":")) for p in content["parts"]),
                           role=content.get("role", "user"), config=self.backend._config(probe), prompt=prompt)

    def inlined(self, request: DescribeRequest) -> types.InlinedRequest:
        """One inline line: the same contents and config an interactive request would send (media inline)."""
        parts: list[Any] = [types.Part.from_bytes(data=m.read_bytes(), mime_type=m.mime) for m in request.media]
        parts.append(types.Part.from_text(text=request.prompt))
        return types.InlinedRequest(contents=[types.Content(role="user", parts=parts)],
                                    config=self.backend._config(request), metadata={"key": request.key})

    def jsonl_line(self, inlined: types.InlinedRequest) -> bytes:
        """The same line for a JSONL input file: {"key": ..., "request": {...REST form...}}."""
        rest = encode_unserializable_types(convert_to_dict(_InlinedRequest_to_mldev(self._client._api_client, inlined)))
        key = (inlined.metadata or {}).get("key")
        return json.dumps({"key": key, "request": rest["request"]}, separators=(",", ":")).encode() + b"\n"

    # -- jobs -------------------------------------------------------------------------------------------
    def create(self, display_name: str, *, inline: list[types.InlinedRequest] | None = None,
               jsonl: Path | None = None) -> RemoteJob:
        """Create a job from inline lines or a JSONL file (uploaded first, through the Files API)."""
        try:
            if jsonl is not None:
                with open(jsonl, "rb") as fh:
                    uploaded = self._client.files.upload(
                        file=io.BufferedReader(fh), config={"mime_type": "application/jsonl",
                                                            "display_name": f"{display_name}-input"})
                src: Any = uploaded.name
            else:
                src = inline
            job = self._client.batches.create(model=self.model, src=src, config={"display_name": display_name})
        except genai_errors.APIError as exc:
            mapped = self.backend._map_api_error(exc)
            if isinstance(mapped, FatalRunError) and mapped.kind != ErrorKind.QUOTA_EXHAUSTED:
                raise mapped from None
            queue_full = int(exc.code or 0) == 429
            raise BatchCreateRefused(str(mapped), queue_full=queue_full,
                                     transient=isinstance(mapped, RetryableError) or queue_full) from None
        return _remote(job)

    def get(self, name: str) -> RemoteJob:
        return _remote(self._get(name))

    def _get(self, name: str) -> types.BatchJob:
        try:
            return self._client.batches.get(name=name)
        except genai_errors.APIError as exc:
            raise self.backend._map_api_error(exc) from None

    def find(self, display_name: str) -> list[RemoteJob]:
        """Every job the provider has under `display_name` (all pages of the list)."""
        try:
            return [_remote(j) for j in self._client.batches.list(config={"page_size": 100})
                    if j.display_name == display_name]
        except genai_errors.APIError as exc:
            raise self.backend._map_api_error(exc) from None

    def cancel(self, name: str) -> None:
        try:
            self._client.batches.cancel(name=name)
        except genai_errors.APIError as exc:
            raise self.backend._map_api_error(exc) from None

    # -- results ----------------------------------------------------------------------------------------
    def results(self, name: str) -> Iterator[tuple[str, types.GenerateContentResponse | None, str | None, int]]:
        """(key, response or None, error message or None, error code) per line of a finished job."""
        job = self._get(name)
        dest = job.dest
        if dest is None:
            return
        if dest.inlined_responses is not None:
            for r in dest.inlined_responses:
                key = (r.metadata or {}).get("key")
                yield (str(key), r.response, _error_text(r.error), _error_code(r.error))
            return
        if dest.file_name:
            try:
                data = self._client.files.download(file=dest.file_name)
            except genai_errors.APIError as exc:
                raise self.backend._map_api_error(exc) from None
            for line in data.splitlines():
                if not line.strip():
                    continue
                obj = json.loads(line)
                key = obj.get("key")
                key = key.get("key") if isinstance(key, dict) else key
                response = None
                if obj.get("response") is not None:
                    response = types.GenerateContentResponse.model_validate(
                        _GenerateContentResponse_from_mldev(obj["response"]))
                yield (str(key), response, _error_text(obj.get("error")), _error_code(obj.get("error")))

    def to_result(self, response: types.GenerateContentResponse, request: DescribeRequest) -> DescribeResult:
        return self.backend._to_result(response, request)


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    if isinstance(error, dict):
        return f"HTTP {error.get('code', '')} {error.get('status', '')}: {error.get('message', '')}".strip()
    return str(getattr(error, "message", None) or error)


def _error_code(error: Any) -> int:
    if error is None:
        return 0
    code = error.get("code") if isinstance(error, dict) else getattr(error, "code", 0)
    try:
        return int(code or 0)
    except (TypeError, ValueError):
        return 0


def error_result(message: str, code: int) -> DescribeResult:
    """A line the provider failed on its own: an error row (no usage, nothing billed)."""
    kind = ErrorKind.for_http_status(code) if code else ErrorKind.SERVER_ERROR
    return DescribeResult(status=Status.ERROR, error_kind=kind, error=f"batch line failed: {message}")


__all__ = ["GeminiBatchClient", "RemoteJob", "BatchCreateRefused", "error_result", "ItemRequestError"]
