"""Any OpenAI-compatible chat server: `openai:<model>@<base_url>` (vLLM, Ollama, llama.cpp server,
LM Studio, `python -m mlx_vlm.server`). `base_url` ends with /v1; requests go to `{base_url}/chat/completions`.

Images travel inline as `data:` URIs in `image_url` parts. With `structured_output=True` the request
carries `response_format={"type": "json_schema", ...}` (strict); it is off by default because not every
server can honour it (mlx_vlm.server on CPU answers HTTP 500: its llguidance mask needs Metal). Without
it the prompt carries `schema_prompt(schema)` and the answer goes through `parse_or_repair`, with one
retry using a stricter prompt when the answer does not validate (not when it was cut by max tokens).

Errors: 429, 5xx, timeouts, connection errors and unreadable bodies raise RetryableError (429/503 honour
Retry-After); 401/403 and an unknown model (404, or a 400 saying the model cannot be found/loaded) raise
FatalRunError; other 4xx raise ItemRequestError. The API key is sent as a bearer token and scrubbed from
every message this module produces.
"""
from __future__ import annotations

import base64
import copy
import email.utils
import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from enrich.schemas.vocab import ErrorKind, Status
from enrich.schemas.descriptions import system_instruction_for
from enrich.backends.base import Capabilities, DescribeRequest, DescribeResult, MediaPart, Usage
from enrich.backends.jsonrepair import REPAIR_SUFFIX, InvalidOutput, parse_or_repair, schema_prompt
from enrich.errors import FatalRunError, ItemRequestError, RetryableError
from enrich.redact import register_secret, scrub
from enrich.settings import default

IMAGE_MIME_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
_MODEL_MISSING_RE = re.compile(
    r"(failed to load model|model[^\n]{0,120}?(not found|does not exist|is not available|not loaded)"
    r"|no such model|unknown model|model_not_found)",
    re.I,
)
_BODY_SNIPPET = 300
_MAX_RETRY_AFTER_S = 600.0


def strict_json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The pydantic JSON schema adjusted for OpenAI strict mode: every object closed
    (additionalProperties false) with all its properties required, no defaults or titles."""
    js = copy.deepcopy(schema.model_json_schema())

    def fix(node: Any) -> None:  # node is a schema (never a properties/$defs mapping)
        if not isinstance(node, dict):
            return
        node.pop("title", None)
        node.pop("default", None)
        props = node.get("properties")
        if isinstance(props, dict):
            node["additionalProperties"] = False
            node["required"] = list(props.keys())
            for sub in props.values():
                fix(sub)
        for key in ("$defs", "definitions"):
            for sub in (node.get(key) or {}).values():
                fix(sub)
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for sub in node.get(key) or []:
                fix(sub)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                fix(node[key])

    fix(js)
    return js


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        secs = when.timestamp() - time.time()
    return max(0.0, min(secs, _MAX_RETRY_AFTER_S))


def _data_uri(part: MediaPart) -> str:
    data = part.read_bytes()
    return f"data:{part.mime};base64,{base64.b64encode(data).decode('ascii')}"


def _content_text(content: Any) -> str:
    """message.content as text: a string, or a list of parts (some servers), or null."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") if isinstance(p, dict) else str(p) for p in content
        )
    return str(content)


class OpenAICompatBackend:
    """Backend protocol implementation over an OpenAI-compatible /chat/completions endpoint."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        structured_output: bool = False,
        timeout_s: float = 120.0,
        default_concurrency: int = 4,
        max_inline_bytes: int = default("max_inline_bytes"),
        retry_invalid: bool = True,
        temperature: float = 0.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not model:
            raise ValueError("model is required")
        self.server_model = model
        self.base_url = base_url.rstrip("/")
        self.model = f"openai:{model}@{self.base_url}"
        self._api_key = api_key or None
        register_secret(self._api_key)
        self._structured = structured_output
        self._retry_invalid = retry_invalid
        self._temperature = temperature
        host = (urlsplit(self.base_url).hostname or "").lower()
        self.capabilities = Capabilities(
            mime_types=IMAGE_MIME_TYPES,
            max_inline_bytes=max_inline_bytes,
            structured_output=structured_output,
            local=host in _LOOPBACK,
            default_concurrency=default_concurrency,
        )
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.AsyncClient(
            base_url=self.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            transport=transport,
        )

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatBackend(model={self.server_model!r}, base_url={self.base_url!r})"

    # ------------------------------------------------------------------------------------ helpers

    def _scrub(self, text: str) -> str:
        return scrub(text, (self._api_key,) if self._api_key else ()) or ""

    def _body_snippet(self, response: httpx.Response) -> str:
        try:
            body = response.text
        except Exception:  # pragma: no cover - undecodable body
            body = ""
        body = " ".join(body.split())
        if len(body) > _BODY_SNIPPET:
            body = body[:_BODY_SNIPPET] + "..."
        return self._scrub(body)

    def _map_status(self, response: httpx.Response, what: str) -> Exception:
        status = response.status_code
        snippet = self._body_snippet(response)
        msg = f"{what}: HTTP {status}" + (f": {snippet}" if snippet else "")
        if status == 429 or status == 408 or status >= 500:
            kind = (ErrorKind.RATE_LIMITED if status == 429
                    else ErrorKind.TIMEOUT if status == 408 else ErrorKind.SERVER_ERROR)
            return RetryableError(msg, kind=kind, retry_after=_retry_after_s(response.headers.get("Retry-After")))
        if status in (401, 403):
            return FatalRunError(msg, kind=ErrorKind.AUTH)
        if status == 404:
            return FatalRunError(
                msg + f" (is {self.base_url!r} the /v1 base URL, and is model {self.server_model!r} served?)",
                kind=ErrorKind.MODEL_NOT_FOUND,
            )
        if status in (400, 422) and _MODEL_MISSING_RE.search(snippet):
            return FatalRunError(msg, kind=ErrorKind.MODEL_NOT_FOUND)
        if status == 413:
            return ItemRequestError(msg, kind=ErrorKind.TOO_LARGE)
        return ItemRequestError(msg, kind=ErrorKind.REQUEST_REJECTED)

    def _transport_error(self, exc: Exception) -> RetryableError:
        if isinstance(exc, httpx.TimeoutException):
            return RetryableError("request timed out", kind=ErrorKind.TIMEOUT)
        return RetryableError(self._scrub(f"connection error: {exc.__class__.__name__}: {exc}"), kind=ErrorKind.CONNECTION)

    def build_prompt(self, request: DescribeRequest, *, repair: bool = False) -> str:
        if self._structured:
            return request.prompt
        text = f"{request.prompt.rstrip()}\n\n{schema_prompt(request.schema)}"
        if repair:
            text += "\n" + REPAIR_SUFFIX
        return text

    def build_body(self, request: DescribeRequest, *, repair: bool = False) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for part in request.media:
            if not self.capabilities.accepts(part.mime):
                raise ItemRequestError(f"{self.server_model} via OpenAI API: {part.mime} not supported",
                                       kind=ErrorKind.UNSUPPORTED_MEDIA)
            content.append({"type": "image_url", "image_url": {"url": _data_uri(part)}})
        content.append({"type": "text", "text": self.build_prompt(request, repair=repair)})
        # documents are data: text inside them must not pose as instructions (none for images, audio, video)
        system = system_instruction_for(part.mime for part in request.media)
        body: dict[str, Any] = {
            "model": self.server_model,
            "messages": ([{"role": "system", "content": system}] if system else [])
            + [{"role": "user", "content": content}],
            "max_tokens": request.max_output_tokens,
            "temperature": self._temperature,
            "stream": False,
        }
        if self._structured:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema.__name__,
                    "schema": strict_json_schema(request.schema),
                    "strict": True,
                },
            }
        return body

    # ------------------------------------------------------------------------------------ protocol

    async def preflight(self) -> None:
        """GET {base_url}/models: proves the server answers and accepts the key. A model missing from the
        list is not fatal here (some servers load models on demand); the first request says so."""
        try:
            response = await self._client.get("models")
        except httpx.HTTPError as exc:
            raise FatalRunError(
                self._scrub(f"cannot reach {self.base_url} ({exc.__class__.__name__}: {exc})"),
                kind=ErrorKind.ENDPOINT_UNREACHABLE,
            ) from None
        if response.status_code in (401, 403):
            raise FatalRunError(f"{self.base_url} refused the API key: HTTP {response.status_code}", kind=ErrorKind.AUTH)
        # 404 (no /models route), 429/5xx (busy): reachable; the run paces and retries.

    async def _post(self, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        try:
            response = await self._client.post("chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        latency = time.perf_counter() - started
        if response.status_code >= 400:
            raise self._map_status(response, f"{self.server_model} at {self.base_url}")
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise RetryableError(
                f"unparseable response body (HTTP {response.status_code}): {self._body_snippet(response)[:100]}",
                kind=ErrorKind.GARBAGE_RESPONSE,
            ) from None
        if not isinstance(payload, dict):
            raise RetryableError("response body is not a JSON object", kind=ErrorKind.GARBAGE_RESPONSE)
        if "error" in payload and not payload.get("choices"):  # some servers answer 200 with an error object
            err = payload["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            raise RetryableError(self._scrub(f"server error in a 200 reply: {message}"), kind=ErrorKind.SERVER_ERROR)
        return payload, latency

    @staticmethod
    def _usage(payloads: list[dict[str, Any]]) -> Usage:
        usage = Usage()
        for p in payloads:
            u = p.get("usage") or {}
            completion = int(u.get("completion_tokens") or 0)
            reasoning = int(((u.get("completion_tokens_details") or {}).get("reasoning_tokens")) or 0)
            usage.input_tokens += int(u.get("prompt_tokens") or 0)
            usage.output_tokens += max(completion - reasoning, 0)
            usage.thinking_tokens += reasoning
            usage.cached_tokens += int(((u.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
        return usage

    def _judge(self, request: DescribeRequest, payloads: list[dict[str, Any]], latency_s: float) -> DescribeResult:
        last = payloads[-1]
        usage = self._usage(payloads)
        version = last.get("model") or self.server_model
        extra: dict[str, Any] = {"latency_ms": latency_s * 1000.0, "attempts": len(payloads)}
        timings = last.get("timings")
        if isinstance(timings, dict) and timings.get("predicted_per_second") is not None:
            extra["tokens_per_second"] = timings["predicted_per_second"]
        choices = last.get("choices") or []
        if not choices:
            return DescribeResult(status=Status.ERROR, usage=usage, error_kind=ErrorKind.NO_CANDIDATES,
                                  error="the server returned no choices", model_version=version, extra=extra)
        choice = choices[0] or {}
        finish = choice.get("finish_reason")
        message = choice.get("message") or {}
        text = _content_text(message.get("content"))
        base = dict(usage=usage, finish_reason=finish, model_version=version, extra=extra)
        if finish == "content_filter":
            return DescribeResult(status=Status.BLOCKED, error_kind=ErrorKind.SAFETY, error="output blocked: content_filter",
                                  raw_text=text or None, **base)
        refusal = message.get("refusal")
        if refusal and not text:
            return DescribeResult(status=Status.BLOCKED, error_kind=ErrorKind.REFUSAL, error=f"refused: {refusal}"[:300],
                                  raw_text=refusal, **base)
        try:
            desc = parse_or_repair(text, request.schema)
        except InvalidOutput as e:
            if finish == "length":
                return DescribeResult(status=Status.ERROR, error_kind=ErrorKind.MAX_TOKENS,
                                      error=f"output cut at max_tokens={request.max_output_tokens}: {e}",
                                      raw_text=text, **base)
            return DescribeResult(status=Status.ERROR, error_kind=ErrorKind.INVALID_OUTPUT, error=str(e), raw_text=text, **base)
        return DescribeResult(status=Status.OK, description=desc, **base)

    async def describe(self, request: DescribeRequest) -> DescribeResult:
        payload, latency = await self._post(self.build_body(request))
        payloads = [payload]
        result = self._judge(request, payloads, latency)
        # A schema-enforcing server gets no second try: the same request would give the same answer.
        if result.error_kind == "invalid_output" and self._retry_invalid and not self._structured:
            payload2, latency2 = await self._post(self.build_body(request, repair=True))
            payloads.append(payload2)
            result = self._judge(request, payloads, latency + latency2)
        return result

    async def aclose(self) -> None:
        await self._client.aclose()
