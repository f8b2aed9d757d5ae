"""Google Gemini through the real `google-genai` SDK.

The endpoint comes from settings (config or GOOGLE_GEMINI_BASE_URL, which the local emulator uses);
the key from GOOGLE_API_KEY / GEMINI_API_KEY. Errors are mapped onto enrich.errors so the caller knows
whether to retry, record or stop; the key is scrubbed from every message that leaves this module.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from pydantic import SecretStr, ValidationError

from enrich.schemas.vocab import ErrorKind, Status
from enrich.schemas.descriptions import system_instruction_for
from enrich.tokens import schema_json

from enrich.backends.base import Capabilities, DescribeRequest, DescribeResult, MediaPart, Usage
from enrich.backends.gemini_files import delete_quietly, upload_active
from enrich.errors import FatalRunError, ItemRequestError, RetryableError
from enrich.redact import register_secret, scrub
from enrich.settings import default

GEMINI_MIME_TYPES = frozenset(
    {
        "image/jpeg", "image/png", "image/webp", "image/heic", "image/heif",
        "audio/wav", "audio/mp3", "audio/mpeg", "audio/aac", "audio/mp4", "audio/flac", "audio/ogg",
        "video/mp4", "video/quicktime", "video/webm",
        "application/pdf", "text/plain", "text/markdown", "text/html",
    }
)
BLOCK_FINISH_REASONS = {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"}
RESOLUTIONS = {
    "low": types.MediaResolution.MEDIA_RESOLUTION_LOW,
    "medium": types.MediaResolution.MEDIA_RESOLUTION_MEDIUM,
    "high": types.MediaResolution.MEDIA_RESOLUTION_HIGH,
}
log = logging.getLogger("enrich.gemini")
RETRYABLE_CODES = {408, 429, 500, 502, 503, 504}
MAX_UPLOAD_BYTES = 2 * 1024**3  # Files API: 2 GB per file
_MEDIA_READ_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError)


def _transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeouts, other transport errors) of whichever HTTP library the SDK uses: httpx or its fork httpx2."""
    timeouts: list[type[BaseException]] = []
    transport: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            mod = __import__(name)
        except ImportError:
            continue
        timeouts.append(mod.TimeoutException)
        transport.append(mod.TransportError)
    return tuple(timeouts), tuple(transport)


TIMEOUT_ERRORS, TRANSPORT_ERRORS = _transport_errors()
_DELAY_RE = re.compile(r"^\s*([0-9.]+)s\s*$")


def retry_after_from(exc: genai_errors.APIError) -> float | None:
    """The server's advice on when to retry: google.rpc.RetryInfo.retryDelay, else Retry-After."""
    details = exc.details if isinstance(exc.details, dict) else {}
    err = details.get("error", details)
    for entry in err.get("details", []) or []:
        if isinstance(entry, dict) and "retryDelay" in entry:
            m = _DELAY_RE.match(str(entry["retryDelay"]))
            if m:
                return float(m.group(1))
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is not None:
        value = headers.get("retry-after") if hasattr(headers, "get") else None
        try:
            return float(value) if value is not None else None
        except (TypeError, ValueError):
            return None
    return None


def _daily_quota(exc: genai_errors.APIError) -> bool:
    """A 429 for a per-day quota (google.rpc.QuotaFailure quotaId ...PerDay...): nothing more can succeed today."""
    details = exc.details if isinstance(exc.details, dict) else {}
    err = details.get("error", details)
    for entry in err.get("details", []) or []:
        for violation in (entry.get("violations") or []) if isinstance(entry, dict) else []:
            if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId", "")):
                return True
    return False


def _pool_args(max_connections: int | None) -> dict[str, Any] | None:
    """Keep a connection alive per concurrent request (httpx's default keeps 20, so with more in flight every
    extra request would open a new TLS connection)."""
    if not max_connections:
        return None
    order = ("httpx", "httpx2") if os.environ.get("GOOGLE_GENAI_HTTP_CLIENT", "").strip().lower() == "httpx" \
        else ("httpx2", "httpx")  # whichever the SDK will use: httpx2 unless told otherwise
    for name in order:
        try:
            mod = __import__(name)
        except ImportError:
            continue
        return {"limits": mod.Limits(max_connections=max(100, max_connections),
                                     max_keepalive_connections=max_connections)}
    return None


class GeminiBackend:
    name = "gemini"

    def __init__(
        self,
        model: str,
        *,
        api_key: SecretStr | None,
        base_url: str | None = None,
        api_version: str = default("api_version"),
        timeout_s: float = default("request_timeout_s"),
        max_inline_bytes: int = default("max_inline_bytes"),
        file_active_timeout_s: float = default("file_active_timeout_s"),
        max_connections: int | None = None,
        service_tier: str | None = None,  # "flex": the Flex tier (GenerateContentConfig.service_tier)
    ) -> None:
        if api_key is None or not api_key.get_secret_value():
            raise FatalRunError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), or use --emulator")
        self.model = model
        self.service_tier = service_tier
        self._secret = api_key.get_secret_value()
        register_secret(self._secret)
        self.capabilities = Capabilities(
            mime_types=GEMINI_MIME_TYPES,
            max_inline_bytes=max_inline_bytes,
            max_upload_bytes=MAX_UPLOAD_BYTES,
            structured_output=True,
            batch=True,
            default_concurrency=16,
        )
        http_options = types.HttpOptions(
            base_url=base_url, api_version=api_version, timeout=int(timeout_s * 1000),
            async_client_args=_pool_args(max_connections),
        )
        self._client = genai.Client(api_key=self._secret, http_options=http_options)
        self._file_active_timeout_s = file_active_timeout_s
        # Inline media above this many bytes was refused as too large (HTTP 413, or the 400 "request payload
        # size exceeds the limit") by the provider or a proxy in between: it goes through the Files API.
        self._inline_refused_above = max_inline_bytes

    # -- errors ---------------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return scrub(text, (self._secret,)) or ""

    def _map_api_error(self, exc: genai_errors.APIError) -> Exception:
        code = int(exc.code or 0)
        status = exc.status or ""
        message = self._scrub(f"HTTP {code} {status}: {exc.message or ''}".strip())
        details = json.dumps(exc.details) if exc.details else ""
        if code == 429:
            if _daily_quota(exc):
                return FatalRunError(f"the daily request quota is used up ({message}); try again tomorrow",
                                     kind=ErrorKind.QUOTA_EXHAUSTED)
            return RetryableError(message, kind=ErrorKind.RATE_LIMITED, retry_after=retry_after_from(exc))
        if code in RETRYABLE_CODES:
            return RetryableError(message, kind=ErrorKind.for_http_status(code), retry_after=retry_after_from(exc))
        if code in (401, 403) or "API_KEY_INVALID" in details or "API key not valid" in (exc.message or ""):
            return FatalRunError(f"the API key was rejected ({message})", kind=ErrorKind.AUTH)
        if code == 404:
            return FatalRunError(f"model {self.model!r} not found at the endpoint ({message})", kind=ErrorKind.UNKNOWN_MODEL)
        return ItemRequestError(message, kind=ErrorKind.for_http_status(code))

    # -- the call ---------------------------------------------------------------------------------------
    def _config(self, request: DescribeRequest) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            response_mime_type="application/json",
            # the JSON Schema as is (titles left out, schemas/descriptions.py LeanModel): response_schema would
            # add a propertyOrdering list that repeats every field name, billed with every request
            response_json_schema=schema_json(request.schema),
            # documents are data: text inside them must not pose as instructions (none for images, audio, video)
            system_instruction=system_instruction_for(m.mime for m in request.media),
            max_output_tokens=request.max_output_tokens,
            media_resolution=RESOLUTIONS.get(request.resolution),
            temperature=0.2,
            service_tier=self.service_tier,
            thinking_config=_thinking(request),
        )

    async def _contents(self, request: DescribeRequest, uploaded: list[str], *, inline: bool = True) -> list[Any]:
        """Inline parts up to max_inline_bytes (all media of the request together; lower once a request of some
        size was refused as too large), Files API parts above it; `inline=False`: every media part through the
        Files API. Names of uploaded files go into `uploaded` as soon as they exist, for the caller to delete."""
        try:
            return await self._parts(request, uploaded, inline=inline)
        except _MEDIA_READ_ERRORS as exc:  # the file vanished or became unreadable since it was prepared
            raise ItemRequestError(f"cannot read the media file: {exc.__class__.__name__}: {exc.strerror or exc}",
                                   kind=ErrorKind.UNREADABLE) from None

    async def _parts(self, request: DescribeRequest, uploaded: list[str], *, inline: bool = True) -> list[Any]:
        parts: list[Any] = []
        inline_budget = min(self.capabilities.max_inline_bytes, self._inline_refused_above) if inline else -1
        for media in request.media:
            size = media.size
            if size > self.capabilities.max_upload_bytes:
                raise ItemRequestError(f"{size / 2**30:.1f} GiB is over the Files API limit of "
                                       f"{self.capabilities.max_upload_bytes / 2**30:.0f} GiB", kind=ErrorKind.TOO_LARGE)
            if size <= inline_budget:
                inline_budget -= size
                parts.append(types.Part.from_bytes(data=await _bytes_of(media), mime_type=media.mime))
                continue
            try:
                file = await upload_active(self._client, media, uploaded,
                                           active_timeout_s=self._file_active_timeout_s)
            except genai_errors.APIError as exc:
                mapped = self._map_api_error(exc)
                if isinstance(mapped, (RetryableError, ItemRequestError)):
                    raise mapped from None
                # a 404/403 from the Files API is about the file, not the model or the key (preflight checked those)
                raise ItemRequestError(self._scrub(f"upload failed: {mapped}"), kind=ErrorKind.UPLOAD_FAILED) from None
            parts.append(types.Part.from_uri(file_uri=file.uri, mime_type=file.mime_type or media.mime))
        parts.append(types.Part.from_text(text=request.prompt))
        return [types.Content(role="user", parts=parts)]

    async def preflight(self) -> None:
        """One unbilled countTokens call: proves the endpoint answers, the key works and the model exists."""
        try:
            await self._client.aio.models.count_tokens(model=self.model, contents="ping")
        except genai_errors.APIError as exc:
            mapped = self._map_api_error(exc)
            if isinstance(mapped, FatalRunError):
                raise mapped from None
            if isinstance(mapped, RetryableError):
                return  # reachable but busy (429/5xx): the run paces and retries; a dead endpoint aborts it
            raise FatalRunError(f"the endpoint refused a test request: {mapped}", kind=ErrorKind.ENDPOINT) from None
        except (*TRANSPORT_ERRORS, json.JSONDecodeError) as exc:
            raise FatalRunError(self._scrub(f"cannot reach the Gemini endpoint ({exc.__class__.__name__}: {exc})"),
                                kind=ErrorKind.ENDPOINT_UNREACHABLE) from None

    async def describe(self, request: DescribeRequest) -> DescribeResult:
        started = time.perf_counter()
        uploaded: list[str] = []
        try:
            contents = await self._contents(request, uploaded)
            try:
                response = await self._client.aio.models.generate_content(
                    model=self.model, contents=contents, config=self._config(request))
            except genai_errors.APIError as exc:
                inline = _inline_bytes(contents)
                if not (_refused_as_too_large(exc) and inline):
                    raise
                # A proxy or the provider refused the body as too large although it is under max_inline_bytes:
                # send the media through the Files API instead, and from now on anything this big.
                self._inline_refused_above = min(self._inline_refused_above, max(0, inline - 1))
                log.info("request body refused as too large (%s); retrying through the Files API", exc.code)
                contents = await self._contents(request, uploaded, inline=False)
                response = await self._client.aio.models.generate_content(
                    model=self.model, contents=contents, config=self._config(request))
        except genai_errors.APIError as exc:
            raise self._map_api_error(exc) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RetryableError(f"unparseable response body: {exc.__class__.__name__}", kind=ErrorKind.GARBAGE_RESPONSE) from None
        except TIMEOUT_ERRORS:
            raise RetryableError("request timed out", kind=ErrorKind.TIMEOUT) from None
        except TRANSPORT_ERRORS as exc:
            raise RetryableError(self._scrub(f"connection error: {exc.__class__.__name__}: {exc}"), kind=ErrorKind.CONNECTION) from None
        finally:
            if uploaded:
                await delete_quietly(self._client, uploaded)
        result = self._to_result(response, request)
        result.extra["latency_ms"] = (time.perf_counter() - started) * 1000
        return result

    def _to_result(self, response: types.GenerateContentResponse, request: DescribeRequest) -> DescribeResult:
        usage = usage_from(response.usage_metadata)
        version = response.model_version
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason:
            reason = str(getattr(feedback.block_reason, "value", feedback.block_reason))
            return DescribeResult(status=Status.BLOCKED, usage=usage, error_kind=ErrorKind.PROMPT_BLOCKED,
                                  error=f"prompt blocked: {reason}", finish_reason=reason, model_version=version)
        if not response.candidates:
            return DescribeResult(status=Status.ERROR, usage=usage, error_kind=ErrorKind.NO_CANDIDATES,
                                  error="the model returned no candidates", model_version=version)
        candidate = response.candidates[0]
        finish = candidate.finish_reason
        finish_name = str(getattr(finish, "value", finish)) if finish is not None else None
        if finish_name in BLOCK_FINISH_REASONS:
            return DescribeResult(status=Status.BLOCKED, usage=usage, error_kind=ErrorKind.for_block_reason(finish_name),
                                  error=f"output blocked: {finish_name}", finish_reason=finish_name,
                                  model_version=version)
        text = _text_of(candidate)
        if finish_name == "MAX_TOKENS":
            return DescribeResult(status=Status.ERROR, usage=usage, error_kind=ErrorKind.MAX_TOKENS,
                                  error=f"output cut at max_output_tokens={request.max_output_tokens}",
                                  finish_reason=finish_name, raw_text=text, model_version=version)
        # The schema goes as response_json_schema, so the SDK parses to a dict (or nothing): the answer is
        # validated against the profile's model here, untrusted like any model output.
        parsed = response.parsed if isinstance(response.parsed, request.schema) else None
        if parsed is None and text:
            try:
                parsed = request.schema.model_validate_json(text)
            except ValidationError:
                parsed = None
        if parsed is None:
            return DescribeResult(status=Status.ERROR, usage=usage, error_kind=ErrorKind.INVALID_OUTPUT,
                                  error="the answer did not match the schema", finish_reason=finish_name,
                                  raw_text=text, model_version=version)
        return DescribeResult(status=Status.OK, description=parsed, usage=usage, finish_reason=finish_name,
                              model_version=version)

    async def aclose(self) -> None:
        try:
            await self._client.aio.aclose()
        except Exception:  # closing is best effort
            pass


_TOO_LARGE_TEXT = ("request payload size exceeds the limit", "request entity too large", "payload too large")


def _refused_as_too_large(exc: genai_errors.APIError) -> bool:
    """HTTP 413, or a 400 whose message says the request body is over a size limit."""
    code = int(exc.code or 0)
    text = f"{exc.status or ''} {exc.message or ''}".lower()
    return code == 413 or (code == 400 and any(t in text for t in _TOO_LARGE_TEXT))


def _inline_bytes(contents: list[Any]) -> int:
    """Bytes of the inline media parts of a request."""
    total = 0
    for content in contents:
        for part in getattr(content, "parts", None) or []:
            blob = getattr(part, "inline_data", None)
            if blob is not None and blob.data:
                total += len(blob.data)
    return total


def _text_of(candidate: types.Candidate) -> str | None:
    if candidate.content is None or not candidate.content.parts:
        return None
    return "".join(p.text or "" for p in candidate.content.parts if not getattr(p, "thought", False)) or None


def usage_from(meta: types.GenerateContentResponseUsageMetadata | None) -> Usage | None:
    if meta is None:
        return None
    by_modality: dict[str, int] = {}
    for detail in meta.prompt_tokens_details or []:
        name = str(getattr(detail.modality, "value", detail.modality))
        by_modality[name] = by_modality.get(name, 0) + int(detail.token_count or 0)
    return Usage(
        input_tokens=int(meta.prompt_token_count or 0),
        output_tokens=int(meta.candidates_token_count or 0),
        thinking_tokens=int(meta.thoughts_token_count or 0),
        cached_tokens=int(meta.cached_content_token_count or 0),
        input_by_modality=by_modality,
    )


async def _bytes_of(media: MediaPart) -> bytes:
    """Inline bytes: prepared in memory (images, text), or read from the file now (audio, video, PDF) so a
    chunk of prepared items never holds their media in memory."""
    if media.data is not None:
        return media.data
    if media.path is None:
        raise ItemRequestError("a media part with neither bytes nor a path", kind=ErrorKind.UNSUPPORTED)
    import asyncio

    return await asyncio.to_thread(media.read_bytes)  # checks a file sent as is was not replaced meanwhile


def _thinking(request: DescribeRequest) -> types.ThinkingConfig | None:
    """The profile's thinking budget or level; none when it sets neither (the model then thinks the least it
    allows: Flash-Lite models do not think unless asked)."""
    if request.thinking_budget is None and request.thinking_level is None:
        return None
    kw: dict[str, Any] = {}
    if request.thinking_budget is not None:
        kw["thinking_budget"] = request.thinking_budget
    if request.thinking_level is not None:
        kw["thinking_level"] = request.thinking_level
    return types.ThinkingConfig(**kw)
