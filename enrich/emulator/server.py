"""A local HTTP server speaking the subset of the Gemini REST API that the google-genai SDK uses.

Binds 127.0.0.1 only. stdlib `ThreadingHTTPServer` (one daemon thread per connection, HTTP/1.1
keep-alive, TCP_NODELAY, single-write responses), so ~100 concurrent requests and a few hundred
requests/s work with zero latency.

Routes (both `v1beta` and `v1`; `models/` prefix optional in the model id):
  POST /{v}/models/{m}:generateContent | :streamGenerateContent | :countTokens | :batchGenerateContent
  GET  /{v}/models, /{v}/models/{m}
  POST /upload/{v}/files (resumable start) -> X-Goog-Upload-URL; chunk POSTs to that URL
  GET  /{v}/files, /{v}/files/{id}, /{v}/files/{id}:download?alt=media ; DELETE /{v}/files/{id}
  GET  /{v}/batches, /{v}/batches/{id} ; POST /{v}/batches/{id}:cancel ; DELETE /{v}/batches/{id}
  GET  /_emulator/stats ; POST /_emulator/config ; POST /_emulator/reset   (no key needed)
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import math
import random
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import tokens as tk
from .content import (FactsCache, MediaFacts, build_scene, default_json, fill_schema, injected_instruction,
                      obey_injection, plain_text)

FAULT_KINDS = ("429", "408", "500", "503", "garbage", "slow", "safety", "prompt_block")


@dataclass
class Faults:
    """Independent per-request probabilities (0..1) for generateContent."""

    rate_429: float = 0.0
    rate_408: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_garbage: float = 0.0
    rate_slow: float = 0.0
    rate_safety: float = 0.0
    rate_prompt_block: float = 0.0


@dataclass
class EmulatorConfig:
    latency_ms: tuple[float, float] = (0, 0)
    faults: Faults = field(default_factory=Faults)
    retry_delay_s: float = 1.0
    slow_s: float = 5.0
    rpm_limit: int | None = None
    seed: int = 0
    capture_media: bool = False
    invalid_keys: tuple[str, ...] = ("invalid",)
    port: int = 0  # 0: ephemeral
    file_processing_polls: int = 1  # GETs of a new file that still answer PROCESSING
    batch_running_polls: int = 1  # GETs of a new batch job that still answer RUNNING
    strict_media: bool = False  # 400 on undecodable images/PDFs (like the real API) instead of guessing
    follow_injections: bool = False  # obey "ignore all previous instructions. X" found in a text or PDF part


_CONFIG_FIELDS = {f.name for f in dataclasses.fields(EmulatorConfig)}
_FAULT_FIELDS = {f.name for f in dataclasses.fields(Faults)}


def _coerce_faults(cur: Faults, value: Any) -> Faults:
    if isinstance(value, Faults):
        return dataclasses.replace(value)
    if isinstance(value, dict):
        kw = {}
        for k, v in value.items():
            name = k if k.startswith("rate_") else f"rate_{k}"
            if name not in _FAULT_FIELDS:
                raise ValueError(f"unknown fault {k!r}")
            kw[name] = float(v)
        return dataclasses.replace(cur, **kw)
    raise TypeError("faults must be a Faults or a dict")


def _coerce_latency(value: Any) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    lo, hi = value
    lo, hi = float(lo), float(hi)
    if hi < lo:
        lo, hi = hi, lo
    return (lo, hi)


class ApiError(Exception):
    def __init__(self, code: int, status: str, message: str, details: list | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.status, self.message, self.details = code, status, message, details
        self.headers = headers or {}

    def body(self) -> dict:
        err: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            err["details"] = self.details
        return {"error": err}


def _bad(message: str, status: str = "INVALID_ARGUMENT") -> ApiError:
    return ApiError(400, status, message)


def _now_iso(t: float | None = None) -> str:
    dt = datetime.fromtimestamp(t if t is not None else time.time(), tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _get(d: Any, name: str, default: Any = None) -> Any:
    """Look a key up by its camelCase or snake_case spelling."""
    if not isinstance(d, dict):
        return default
    if name in d:
        return d[name]
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    if snake in d:
        return d[snake]
    parts = name.split("_")
    camel = parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
    return d.get(camel, default)


def _b64decode(s: Any) -> bytes:
    if not isinstance(s, str):
        raise ValueError("not a string")
    t = s.strip().replace("-", "+").replace("_", "/").replace("\n", "")
    t += "=" * (-len(t) % 4)
    return base64.b64decode(t, validate=True)


_GEN_KEYS = ("responseSchema", "responseJsonSchema", "responseMimeType", "maxOutputTokens", "mediaResolution",
             "thinkingConfig", "temperature", "topP", "topK", "candidateCount", "stopSequences", "seed")


# ---------------------------------------------------------------------------------------------
# Ledger
# ---------------------------------------------------------------------------------------------

class _Ledger:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.count_tokens_requests = 0
        self.billed_requests = 0
        self.prompt_tokens = 0
        self.candidates_tokens = 0
        self.thoughts_tokens = 0
        self.tokens_by_modality = {m: 0 for m in tk.MODALITIES}
        self.faults = {k: 0 for k in FAULT_KINDS}
        self.rpm_limited = 0
        self.by_status: dict[str, int] = {}
        self.uploads = 0
        self.deletes = 0
        self.in_flight = 0
        self.max_concurrency = 0
        self.billed_by_media_hash: dict[str, int] = {}
        self.batch = {"jobs": 0, "requests": 0, "billed_requests": 0, "prompt_tokens": 0,
                      "candidates_tokens": 0, "thoughts_tokens": 0}

    def bill(self, usage: dict, by_modality: dict[str, int], hashes: set[str], batch: bool = False) -> None:
        p = usage.get("promptTokenCount", 0)
        c = usage.get("candidatesTokenCount", 0)
        t = usage.get("thoughtsTokenCount", 0)
        if batch:
            b = self.batch
            b["billed_requests"] += 1
            b["prompt_tokens"] += p
            b["candidates_tokens"] += c
            b["thoughts_tokens"] += t
        else:
            self.billed_requests += 1
            self.prompt_tokens += p
            self.candidates_tokens += c
            self.thoughts_tokens += t
            for m, n in by_modality.items():
                self.tokens_by_modality[m] = self.tokens_by_modality.get(m, 0) + n
        for h in hashes:
            self.billed_by_media_hash[h] = self.billed_by_media_hash.get(h, 0) + 1

    def snapshot(self, files_stored: int) -> dict:
        return {
            "requests": self.requests,
            "billed_requests": self.billed_requests,
            "prompt_tokens": self.prompt_tokens,
            "candidates_tokens": self.candidates_tokens,
            "thoughts_tokens": self.thoughts_tokens,
            "tokens_by_modality": dict(self.tokens_by_modality),
            "faults": dict(self.faults),
            "by_status": dict(self.by_status),
            "uploads": self.uploads,
            "deletes": self.deletes,
            "files_stored": files_stored,
            "max_concurrency": self.max_concurrency,
            "billed_by_media_hash": dict(self.billed_by_media_hash),
            # extras
            "in_flight": self.in_flight,
            "rpm_limited": self.rpm_limited,
            "count_tokens_requests": self.count_tokens_requests,
            "batch": dict(self.batch),
        }


# ---------------------------------------------------------------------------------------------
# Stored files and batch jobs
# ---------------------------------------------------------------------------------------------

@dataclass
class _File:
    id: str
    mime: str
    display_name: str | None
    size: int
    sha256: str
    facts: MediaFacts | None
    created: float
    polls_left: int
    source: str = "UPLOADED"
    data: bytes | None = None  # kept only for JSONL/text inputs and generated outputs

    def resource(self, base_url: str, version: str = "v1beta") -> dict:
        state = "PROCESSING" if self.polls_left > 0 else "ACTIVE"
        r = {
            "name": f"files/{self.id}",
            "mimeType": self.mime,
            "sizeBytes": str(self.size),
            "createTime": _now_iso(self.created),
            "updateTime": _now_iso(self.created),
            "expirationTime": _now_iso(self.created + 48 * 3600),
            "sha256Hash": base64.b64encode(self.sha256.encode()).decode(),
            "uri": f"{base_url}/{version}/files/{self.id}",
            "state": state,
            "source": self.source,
        }
        if self.display_name:
            r["displayName"] = self.display_name
        if self.source == "GENERATED":
            r["downloadUri"] = f"{base_url}/{version}/files/{self.id}:download?alt=media"
        return r


@dataclass
class _Upload:
    id: str
    mime: str
    display_name: str | None
    name: str | None
    declared: int | None
    buf: bytearray = field(default_factory=bytearray)


@dataclass
class _Batch:
    id: str
    model: str
    display_name: str | None
    created: float
    items: list[tuple[dict, Any]]  # (metadata or key, result dict {"response": ..} | {"error": ..})
    bills: list[tuple[dict, dict, set]]  # (usage, by_modality, hashes) billed at completion
    file_input: bool
    polls_left: int
    state: str = "BATCH_STATE_PENDING"
    billed: bool = False
    output_file: str | None = None

    def resource(self) -> dict:
        n = len(self.items)
        done = self.state in ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_CANCELLED", "BATCH_STATE_FAILED")
        ok = sum(1 for _, r in self.items if "response" in r)
        meta: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "name": f"batches/{self.id}",
            "model": f"models/{self.model}",
            "createTime": _now_iso(self.created),
            "updateTime": _now_iso(),
            "state": self.state,
            "batchStats": {"requestCount": str(n),
                           **({"successfulRequestCount": str(ok), "failedRequestCount": str(n - ok)}
                              if self.state == "BATCH_STATE_SUCCEEDED" else {"pendingRequestCount": str(n)})},
        }
        if self.display_name:
            meta["displayName"] = self.display_name
        out: dict[str, Any] = {"name": f"batches/{self.id}", "metadata": meta}
        if done:
            meta["endTime"] = _now_iso()
            out["done"] = True
        if self.state == "BATCH_STATE_SUCCEEDED":
            if self.file_input:
                output = {"responsesFile": f"files/{self.output_file}"}
            else:
                inl = []
                for md, r in self.items:
                    e = dict(r)
                    if md is not None:
                        e["metadata"] = md
                    inl.append(e)
                output = {"inlinedResponses": {"inlinedResponses": inl}}
            meta["output"] = output
            out["response"] = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta."
                                        "GenerateContentBatchOutput", **output}
        return out


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------

_GEN_RE = re.compile(r"^/(v1beta|v1|v1alpha)/(?:models/)?([^/:]+):([A-Za-z]+)$")
_MODEL_RE = re.compile(r"^/(v1beta|v1|v1alpha)/models(?:/([^/:]+))?$")
_FILE_RE = re.compile(r"^/(?:download/)?(v1beta|v1|v1alpha)/files(?:/([A-Za-z0-9_\-]+)(:download)?)?$")
_UPLOAD_RE = re.compile(r"^/upload/(v1beta|v1|v1alpha)/files$")
_BATCH_RE = re.compile(r"^/(v1beta|v1|v1alpha)/batches(?:/([A-Za-z0-9_\-]+)(:cancel)?)?$")
_FILE_URI_RE = re.compile(r"(?:^|/)files/([A-Za-z0-9_\-]+)$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet on client resets
        pass


class GeminiEmulator:
    """A local fake Gemini endpoint. See the module docstring for routes and the package README."""

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        self._cfg = dataclasses.replace(config) if config else EmulatorConfig()
        self._lock = threading.Lock()
        if overrides:
            self._apply_config(overrides)
        self._cfg.faults = dataclasses.replace(self._cfg.faults)
        self._rng = random.Random(self._cfg.seed)
        self._ledger = _Ledger()
        self._window: deque[float] = deque()
        self._captured: list[tuple[str, bytes]] = []
        self._files: dict[str, _File] = {}
        self._uploads: dict[str, _Upload] = {}
        self._batches: dict[str, _Batch] = {}
        self._facts = FactsCache()
        self._counter = 0
        self._stop_event = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self.base_url: str | None = None

    # ---- lifecycle ----
    def start(self) -> str:
        if self._server is not None:
            return self.base_url  # type: ignore[return-value]
        emu = self
        handler = type("EmulatorHandler", (_Handler,), {"emu": emu})
        self._stop_event.clear()
        self._server = _Server(("127.0.0.1", int(self._cfg.port or 0)), handler)
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"gemini-emulator-{port}", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        srv = self._server
        if srv is None:
            return
        self._stop_event.set()
        srv.shutdown()
        srv.server_close()
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    @property
    def url(self) -> str | None:
        return self.base_url

    @property
    def port(self) -> int | None:
        return self._server.server_address[1] if self._server else None

    def __enter__(self) -> "GeminiEmulator":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- config / ledger ----
    def _apply_config(self, kw: dict) -> None:
        for k, v in kw.items():
            if k not in _CONFIG_FIELDS:
                raise ValueError(f"unknown emulator config field {k!r}")
            if k == "faults":
                v = _coerce_faults(self._cfg.faults, v)
            elif k == "latency_ms":
                v = _coerce_latency(v)
            elif k == "invalid_keys":
                v = tuple(v)
            elif k == "rpm_limit":
                v = None if v in (None, 0) else int(v)
            elif k in ("retry_delay_s", "slow_s"):
                v = float(v)
            elif k in ("seed", "port", "file_processing_polls", "batch_running_polls"):
                v = int(v)
            elif k in ("capture_media", "strict_media", "follow_injections"):
                v = bool(v)
            setattr(self._cfg, k, v)

    def set_config(self, **kw: Any) -> None:
        """Thread-safe; affects later requests. `faults` takes a Faults (replaces) or a dict (merges,
        keys 'rate_503' or '503'); `seed` re-seeds the fault RNG."""
        with self._lock:
            self._apply_config(kw)
            if "seed" in kw:
                self._rng = random.Random(self._cfg.seed)

    @property
    def config(self) -> EmulatorConfig:
        with self._lock:
            c = dataclasses.replace(self._cfg)
            c.faults = dataclasses.replace(self._cfg.faults)
            return c

    def config_dict(self) -> dict:
        c = self.config
        d = dataclasses.asdict(c)
        d["latency_ms"] = list(c.latency_ms)
        d["invalid_keys"] = list(c.invalid_keys)
        return d

    def stats(self) -> dict:
        with self._lock:
            return self._ledger.snapshot(len(self._files))

    def received_media(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self._captured)

    def reset(self) -> None:
        """Clear the ledger, captures, rpm window, stored files, uploads and batches; re-seed the RNG."""
        with self._lock:
            in_flight = self._ledger.in_flight
            self._ledger.reset()
            self._ledger.in_flight = in_flight
            self._captured.clear()
            self._window.clear()
            self._files.clear()
            self._uploads.clear()
            self._batches.clear()
            self._rng = random.Random(self._cfg.seed)
        self._facts.clear()

    def _new_id(self, prefix: str = "") -> str:
        with self._lock:
            self._counter += 1
            n = self._counter
        h = hashlib.sha256(f"{self._cfg.seed}:{n}:{time.time_ns()}".encode()).hexdigest()[:10]
        return f"{prefix}{h}{n:x}"

    def _sleep(self, seconds: float) -> bool:
        """Interruptible sleep; False when the emulator is stopping."""
        if seconds <= 0:
            return not self._stop_event.is_set()
        return not self._stop_event.wait(seconds)

    # ---- auth / model ----
    def _check_key(self, key: str | None) -> None:
        bad = not key or any(key.startswith(p) for p in self._cfg.invalid_keys if p)
        if bad:
            raise ApiError(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])

    @staticmethod
    def _check_model(model: str, version: str) -> str:
        name = unquote(model)
        if name.startswith("models/"):
            name = name[len("models/"):]
        if not tk.is_known_model(name):
            raise ApiError(404, "NOT_FOUND", f"models/{name} is not found for API version {version}, or is not "
                                             f"supported for generateContent. Call ListModels to see the list "
                                             f"of available models and their supported methods.")
        return name

    # ---- request parsing ----
    def _media_facts(self, mime: str, data: bytes) -> MediaFacts:
        return self._facts.get(mime, data)

    def _parse_request(self, model: str, body: dict, *, for_count: bool = False,
                       capture: list | None = None) -> dict:
        """Normalise a GenerateContentRequest: returns text/media/token info and generation settings."""
        if not isinstance(body, dict):
            raise _bad("Invalid JSON payload received. Expected an object.")
        if for_count and _get(body, "generateContentRequest") is not None:
            body = _get(body, "generateContentRequest")
            if not isinstance(body, dict):
                raise _bad("Invalid generateContentRequest.")
        gc = _get(body, "generationConfig")
        gc = dict(gc) if isinstance(gc, dict) else {}
        for k in _GEN_KEYS:  # some clients put config fields at the top level
            v = _get(body, k)
            if v is not None and _get(gc, k) is None:
                gc[k] = v
        contents = _get(body, "contents")
        if isinstance(contents, dict):
            contents = [contents]
        if not contents:
            raise _bad("* GenerateContentRequest.contents: contents is not specified\n")
        family = tk.model_family(model) or "2"
        cfg_res = tk.normalize_resolution(_get(gc, "mediaResolution"))
        text_chars = 0
        prompt_texts: list[str] = []
        media_tokens: list[tuple[str, int]] = []
        facts_list: list[MediaFacts] = []
        hashes: set[str] = set()
        strict = self._cfg.strict_media
        for ci, content in enumerate(contents):
            if isinstance(content, str):
                content = {"parts": [{"text": content}]}
            parts = _get(content, "parts") or []
            if not isinstance(parts, list):
                raise _bad(f"Invalid value at 'contents[{ci}].parts'.")
            for pi, part in enumerate(parts):
                if not isinstance(part, dict):
                    raise _bad(f"Invalid value at 'contents[{ci}].parts[{pi}]'.")
                if isinstance(part.get("text"), str):
                    if not part.get("thought"):
                        text_chars += len(part["text"])
                        prompt_texts.append(part["text"])
                    continue
                res = tk.normalize_resolution(_get(part, "mediaResolution")) or cfg_res
                inline = _get(part, "inlineData")
                filed = _get(part, "fileData")
                if inline is not None:
                    mime = str(_get(inline, "mimeType") or "")
                    try:
                        data = _b64decode(_get(inline, "data") or "")
                    except (ValueError, binascii.Error):
                        raise _bad(f"Invalid value at 'contents[{ci}].parts[{pi}].inline_data.data' (TYPE_BYTES), "
                                   f"Base64 decoding failed")
                    if not mime:
                        raise _bad(f"* GenerateContentRequest.contents[{ci}].parts[{pi}].inline_data.mime_type: "
                                   f"mime_type is not specified\n")
                    if tk.modality_of_mime(mime) is None:
                        raise _bad(f"Unsupported MIME type: {mime}")
                    facts = self._media_facts(mime, data)
                    if capture is not None:
                        capture.append((facts.mime, data))
                elif filed is not None:
                    uri = str(_get(filed, "fileUri") or "")
                    m = _FILE_URI_RE.search(uri.split("?", 1)[0])
                    f = self._files.get(m.group(1)) if m else None
                    if f is None:
                        raise _bad(f"File {uri} not found or is not accessible.")
                    if f.polls_left > 0:
                        raise ApiError(400, "FAILED_PRECONDITION",
                                       f"The File {f.id} is not in an ACTIVE state and usage is not allowed.")
                    if f.facts is None or tk.modality_of_mime(f.mime) is None:
                        raise _bad(f"Unsupported MIME type: {f.mime}")
                    facts = f.facts
                else:
                    continue  # functionCall / functionResponse / executableCode etc.: ignored
                modality = facts.modality
                if strict and not facts.ok and modality in ("IMAGE", "DOCUMENT"):
                    what = "image" if modality == "IMAGE" else "document"
                    raise _bad(f"Unable to process input {what}. Please retry or report in "
                               f"https://developers.generativeai.google/guide/troubleshooting")
                hashes.add(facts.sha256)
                facts_list.append(facts)
                if modality == "TEXT":
                    text_chars += facts.text_chars
                else:
                    media_tokens.append((modality, tk.media_part_tokens(
                        family, modality, width=facts.width, height=facts.height, duration_s=facts.duration_s,
                        pages=facts.pages, resolution=res)))
        system_chars = 0
        si = _get(body, "systemInstruction")
        if isinstance(si, str):
            system_chars = len(si)
        elif isinstance(si, dict):
            for p in _get(si, "parts") or []:
                if isinstance(p, dict) and isinstance(p.get("text"), str):
                    system_chars += len(p["text"])
        schemas = [s for s in (_get(gc, "responseSchema"), _get(gc, "responseJsonSchema")) if s is not None]
        total, by = tk.prompt_tokens(text_chars=text_chars, system_chars=system_chars, schemas=schemas,
                                     media=media_tokens)
        thinking = _get(gc, "thinkingConfig") or {}
        return {
            "model": model,
            "prompt_tokens": total,
            "by_modality": by,
            "hashes": hashes,
            "facts": facts_list,
            "prompt_text": " ".join(prompt_texts),
            "json_schema": _get(gc, "responseJsonSchema"),
            "schema": _get(gc, "responseSchema"),
            "mime": str(_get(gc, "responseMimeType") or ""),
            "max_output": _get(gc, "maxOutputTokens"),
            "thinking_budget": _get(thinking, "thinkingBudget") if isinstance(thinking, dict) else None,
        }

    # ---- answers ----
    def _usage(self, req: dict, cand: int, thoughts: int) -> dict:
        u: dict[str, Any] = {"promptTokenCount": req["prompt_tokens"]}
        if cand:
            u["candidatesTokenCount"] = cand
        u["totalTokenCount"] = req["prompt_tokens"] + cand + thoughts
        u["promptTokensDetails"] = [{"modality": m, "tokenCount": n} for m, n in req["by_modality"].items() if n]
        if thoughts:
            u["thoughtsTokenCount"] = thoughts
        return u

    def _response_id(self) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(self._new_id().encode()).digest()[:15]).decode()

    def _answer(self, req: dict, kind: str = "ok") -> dict:
        """kind: ok | safety | prompt_block. Returns the GenerateContentResponse dict."""
        base = {"modelVersion": req["model"], "responseId": self._response_id()}
        if kind == "prompt_block":
            return {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
                "usageMetadata": self._usage(req, 0, 0), **base}
        if kind == "safety":
            return {"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]}],
                "usageMetadata": self._usage(req, 0, 0), **base}
        scene = build_scene(req["facts"], req["prompt_text"])
        if self._cfg.follow_injections:
            instruction = injected_instruction(req["facts"])
            if instruction:
                scene = obey_injection(scene, instruction)
        schema = req["json_schema"] if req["json_schema"] is not None else req["schema"]
        mime = req["mime"].lower()
        if schema is not None:
            value = fill_schema(schema, scene)
            text = str(value) if mime == "text/x.enum" and not isinstance(value, (dict, list)) else \
                json.dumps(value, ensure_ascii=False)
        elif mime == "application/json":
            text = json.dumps(default_json(scene), ensure_ascii=False)
        else:
            text = plain_text(scene)
        finish = "STOP"
        max_out = req["max_output"]
        try:
            max_out = int(max_out) if max_out is not None else None
        except (TypeError, ValueError):
            max_out = None
        if max_out is not None and max_out >= 0 and tk.output_tokens(text) > max_out:
            text = text[: max_out * 4]
            finish = "MAX_TOKENS"
        cand = tk.output_tokens(text)
        thoughts = tk.thoughts_tokens(req["thinking_budget"])
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}] if text else [], "role": "model"},
                                     "finishReason": finish, "index": 0}
        return {"candidates": [candidate], "usageMetadata": self._usage(req, cand, thoughts), **base}

    # ---- generateContent ----
    def _record_status(self, code: int | str) -> None:
        with self._lock:
            k = str(code)
            self._ledger.by_status[k] = self._ledger.by_status.get(k, 0) + 1

    def _rate_limit_error(self, message: str) -> ApiError:
        d = self._cfg.retry_delay_s
        return ApiError(429, "RESOURCE_EXHAUSTED", message, [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                {"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                 "quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{d:g}s"}],
            headers={"Retry-After": str(max(0, math.ceil(d)))})

    def generate(self, version: str, model: str, key: str | None, raw: bytes, base_url: str) -> tuple:
        """Returns ("json", code, dict, headers) | ("raw", code, bytes, content_type) | ("close",)."""
        with self._lock:
            self._ledger.requests += 1
            self._ledger.in_flight += 1
            if self._ledger.in_flight > self._ledger.max_concurrency:
                self._ledger.max_concurrency = self._ledger.in_flight
        try:
            out = self._generate(version, model, key, raw, base_url)
        except ApiError as e:
            out = ("json", e.code, e.body(), e.headers)
        finally:
            with self._lock:
                self._ledger.in_flight -= 1
        if out[0] != "close":
            self._record_status(out[1])
        return out

    def _generate(self, version: str, model: str, key: str | None, raw: bytes, base_url: str) -> tuple:
        self._check_key(key)
        model = self._check_model(model, version)
        body = _parse_json(raw)
        cap: list | None = [] if self._cfg.capture_media else None
        req = self._parse_request(model, body, capture=cap)
        with self._lock:
            if cap:
                self._captured.extend(cap)
            cfg = self._cfg
            if cfg.rpm_limit:
                now = time.monotonic()
                while self._window and self._window[0] <= now - 60.0:
                    self._window.popleft()
                if len(self._window) >= cfg.rpm_limit:
                    self._ledger.rpm_limited += 1
                    raise self._rate_limit_error(
                        f"Resource has been exhausted (e.g. check quota). Limit: {cfg.rpm_limit} requests per "
                        f"minute.")
                self._window.append(now)
            f = cfg.faults
            hit = {k: self._rng.random() < getattr(f, f"rate_{k}") for k in FAULT_KINDS}
            lo, hi = cfg.latency_ms
            latency = (self._rng.uniform(lo, hi) if hi > lo else lo) / 1000.0
            slow_s = cfg.slow_s
        if not self._sleep(latency):
            return ("close",)
        fault = next((k for k in FAULT_KINDS if hit[k]), None)
        if fault is not None:
            with self._lock:
                self._ledger.faults[fault] += 1
        if fault == "429":
            raise self._rate_limit_error("Resource has been exhausted (e.g. check quota).")
        if fault == "408":
            raise ApiError(408, "DEADLINE_EXCEEDED", "The request timed out before the model answered.")
        if fault == "500":
            raise ApiError(500, "INTERNAL", "An internal error has occurred. Please retry or report in "
                                            "https://developers.generativeai.google/guide/troubleshooting")
        if fault == "503":
            raise ApiError(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
        if fault == "slow":
            self._sleep(slow_s)
            return ("close",)
        if fault == "garbage":
            return ("raw", 200, b"<html><body>upstream garbage: 502 Bad Gateway</body></html>",
                    "text/html; charset=utf-8")
        kind = fault if fault in ("safety", "prompt_block") else "ok"
        resp = self._answer(req, kind)
        with self._lock:
            self._ledger.bill(resp["usageMetadata"], req["by_modality"], req["hashes"])
        return ("json", 200, resp, {})

    def count_tokens(self, version: str, model: str, key: str | None, raw: bytes) -> dict:
        with self._lock:
            self._ledger.count_tokens_requests += 1
        self._check_key(key)
        model = self._check_model(model, version)
        req = self._parse_request(model, _parse_json(raw), for_count=True)
        return {"totalTokens": req["prompt_tokens"],
                "promptTokensDetails": [{"modality": m, "tokenCount": n}
                                        for m, n in req["by_modality"].items() if n]}

    # ---- files ----
    def upload_start(self, version: str, key: str | None, headers: Any, raw: bytes, base_url: str) -> tuple:
        self._check_key(key)
        protocol = (headers.get("X-Goog-Upload-Protocol") or "").lower()
        command = (headers.get("X-Goog-Upload-Command") or "").lower()
        if protocol != "resumable" or command != "start":
            raise _bad("Only resumable uploads are supported (X-Goog-Upload-Protocol: resumable, "
                       "X-Goog-Upload-Command: start).")
        body = _parse_json(raw) if raw.strip() else {}
        meta = _get(body, "file") or {}
        mime = (_get(meta, "mimeType") or headers.get("X-Goog-Upload-Header-Content-Type")
                or "application/octet-stream")
        declared = headers.get("X-Goog-Upload-Header-Content-Length") or _get(meta, "sizeBytes")
        uid = self._new_id("u")
        up = _Upload(uid, str(mime), _get(meta, "displayName"), _get(meta, "name"),
                     int(declared) if declared not in (None, "") else None)
        with self._lock:
            self._uploads[uid] = up
        url = f"{base_url}/upload/{version}/files?upload_id={uid}&upload_protocol=resumable"
        return {"X-Goog-Upload-URL": url, "X-Goog-Upload-Control-URL": url, "X-Goog-Upload-Status": "active",
                "X-Goog-Upload-Chunk-Granularity": str(8 * 1024 * 1024)}

    def upload_chunk(self, upload_id: str, headers: Any, raw: bytes, base_url: str, version: str) -> tuple:
        """Returns (headers, body dict | None)."""
        with self._lock:
            up = self._uploads.get(upload_id)
        if up is None:
            raise ApiError(404, "NOT_FOUND", "Upload session not found.")
        command = [c.strip() for c in (headers.get("X-Goog-Upload-Command") or "").lower().split(",")]
        if "cancel" in command:
            with self._lock:
                self._uploads.pop(upload_id, None)
            return ({"X-Goog-Upload-Status": "cancelled"}, None)
        if "query" in command:
            return ({"X-Goog-Upload-Status": "active", "X-Goog-Upload-Size-Received": str(len(up.buf))}, None)
        if "upload" in command:
            off = headers.get("X-Goog-Upload-Offset")
            if off is not None and int(off) != len(up.buf):
                raise _bad(f"Invalid X-Goog-Upload-Offset {off}; expected {len(up.buf)}.")
            up.buf += raw
        if "finalize" not in command:
            return ({"X-Goog-Upload-Status": "active"}, None)
        data = bytes(up.buf)
        if up.declared is not None and up.declared != len(data):
            raise _bad(f"Upload size {len(data)} does not match the declared size {up.declared}.")
        fid = (up.name or "").removeprefix("files/") or self._new_id("f")
        modality = tk.modality_of_mime(up.mime)
        facts = self._media_facts(up.mime, data) if modality else None
        keep = modality in (None, "TEXT") or "json" in up.mime.lower()  # batch inputs; media keep only facts
        rec = _File(fid, up.mime, up.display_name, len(data), hashlib.sha256(data).hexdigest(), facts,
                    time.time(), max(0, self._cfg.file_processing_polls), data=data if keep else None)
        with self._lock:
            self._uploads.pop(upload_id, None)
            self._files[fid] = rec
            self._ledger.uploads += 1
            if self._cfg.capture_media and modality and modality != "TEXT":
                self._captured.append((rec.mime, data))
        return ({"X-Goog-Upload-Status": "final"}, {"file": rec.resource(base_url, version)})

    def file_get(self, fid: str, key: str | None, base_url: str, version: str) -> dict:
        self._check_key(key)
        with self._lock:
            f = self._files.get(fid)
            if f is None:
                raise ApiError(403, "PERMISSION_DENIED",
                               f"You do not have permission to access the File {fid} or it may not exist.")
            r = f.resource(base_url, version)
            if f.polls_left > 0:
                f.polls_left -= 1
        return r

    def file_list(self, key: str | None, query: dict, base_url: str, version: str) -> dict:
        self._check_key(key)
        size = int((query.get("pageSize") or ["100"])[0])
        start = int((query.get("pageToken") or ["0"])[0] or 0)
        with self._lock:
            files = list(self._files.values())
        page = files[start:start + size]
        out: dict[str, Any] = {"files": [f.resource(base_url, version) for f in page]} if page else {}
        if start + size < len(files):
            out["nextPageToken"] = str(start + size)
        return out

    def file_delete(self, fid: str, key: str | None) -> dict:
        self._check_key(key)
        with self._lock:
            if self._files.pop(fid, None) is None:
                raise ApiError(403, "PERMISSION_DENIED",
                               f"You do not have permission to access the File {fid} or it may not exist.")
            self._ledger.deletes += 1
        return {}

    def file_download(self, fid: str, key: str | None) -> bytes:
        self._check_key(key)
        with self._lock:
            f = self._files.get(fid)
        if f is None:
            raise ApiError(404, "NOT_FOUND", f"File {fid} not found.")
        if f.source != "GENERATED" or f.data is None:
            raise _bad("Only generated files can be downloaded.")
        return f.data

    # ---- batches ----
    def _batch(self, bid: str) -> _Batch:
        """The batch job `bid` (the caller holds the lock), or the 404 the API answers."""
        job = self._batches.get(bid)
        if job is None:
            raise ApiError(404, "NOT_FOUND", f"Batch batches/{bid} not found.")
        return job

    def batch_create(self, version: str, model: str, key: str | None, raw: bytes) -> dict:
        self._check_key(key)
        model = self._check_model(model, version)
        body = _parse_json(raw)
        batch = _get(body, "batch") or body
        ic = _get(batch, "inputConfig") or {}
        reqs: list[tuple[Any, dict]] = []
        file_input = False
        if _get(ic, "fileName"):
            file_input = True
            fid = str(_get(ic, "fileName")).removeprefix("files/")
            with self._lock:
                f = self._files.get(fid)
            if f is None or f.data is None:
                raise _bad(f"Input file {fid} not found or not a JSONL file.")
            for ln in f.data.decode("utf-8", "replace").splitlines():
                if ln.strip():
                    try:
                        obj = json.loads(ln)
                    except json.JSONDecodeError:
                        raise _bad("Invalid JSONL line in the batch input file.")
                    reqs.append((_get(obj, "key"), _get(obj, "request") or {}))
        else:
            rr = _get(ic, "requests") or {}
            items = _get(rr, "requests") if isinstance(rr, dict) else rr
            for it in items or []:
                reqs.append((_get(it, "metadata"), _get(it, "request") or {}))
        if not reqs:
            raise _bad("The batch has no requests.")
        results: list[tuple[Any, dict]] = []
        bills: list[tuple[dict, dict, set]] = []
        cap: list | None = [] if self._cfg.capture_media else None
        for md, r in reqs:
            try:
                pr = self._parse_request(model, r, capture=cap)
                resp = self._answer(pr, "ok")
                results.append((md, {"response": resp}))
                bills.append((resp["usageMetadata"], pr["by_modality"], pr["hashes"]))
            except ApiError as e:
                results.append((md, {"error": {"code": e.code, "message": e.message, "status": e.status}}))
        bid = self._new_id("b")
        job = _Batch(bid, model, _get(batch, "displayName"), time.time(), results, bills, file_input,
                     max(0, self._cfg.batch_running_polls))
        with self._lock:
            if cap:
                self._captured.extend(cap)
            self._batches[bid] = job
            self._ledger.batch["jobs"] += 1
            self._ledger.batch["requests"] += len(reqs)
            return job.resource()

    def _complete_batch(self, job: _Batch, base_url: str) -> None:
        """Called under the lock when a job moves to SUCCEEDED: bill it, write the output file."""
        job.state = "BATCH_STATE_SUCCEEDED"
        if not job.billed:
            job.billed = True
            for usage, by, hashes in job.bills:
                self._ledger.bill(usage, by, hashes, batch=True)
        if job.file_input and job.output_file is None:
            lines = []
            for md, r in job.items:
                lines.append(json.dumps({"key": md, **r}, ensure_ascii=False))
            data = ("\n".join(lines) + "\n").encode()
            fid = f"batch-{job.id}"
            self._files[fid] = _File(fid, "application/jsonl", None, len(data), hashlib.sha256(data).hexdigest(),
                                     None, time.time(), 0, source="GENERATED", data=data)
            job.output_file = fid

    def batch_get(self, bid: str, key: str | None, base_url: str) -> dict:
        self._check_key(key)
        with self._lock:
            job = self._batch(bid)
            if job.state in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
                if job.polls_left > 0:
                    job.polls_left -= 1
                    job.state = "BATCH_STATE_RUNNING"
                else:
                    self._complete_batch(job, base_url)
            return job.resource()

    def batch_list(self, key: str | None) -> dict:
        self._check_key(key)
        with self._lock:
            ops = [j.resource() for j in self._batches.values()]
        return {"operations": ops} if ops else {}

    def batch_cancel(self, bid: str, key: str | None) -> dict:
        self._check_key(key)
        with self._lock:
            job = self._batch(bid)
            if job.state in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
                job.state = "BATCH_STATE_CANCELLED"
        return {}

    def batch_delete(self, bid: str, key: str | None) -> dict:
        self._check_key(key)
        with self._lock:
            self._batch(bid)  # 404 when there is none
            del self._batches[bid]
        return {}


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8") if raw else "null") if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(f"Invalid JSON payload received. {e}")


def _model_resource(name: str) -> dict:
    return {"name": f"models/{name}", "baseModelId": name, "version": "001", "displayName": name,
            "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens", "batchGenerateContent"]}


_LISTED_MODELS = ("gemini-1.5-flash-8b", "gemini-2.5-flash-lite", "gemini-2.5-flash", "gemini-3.1-flash-lite",
                  "gemini-3.5-flash-lite")


# ---------------------------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    emu: GeminiEmulator
    protocol_version = "HTTP/1.1"
    timeout = 300  # idle keep-alive connections (and their threads) go away after 5 minutes
    server_version = "gemini-emulator/1"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.emu._lock:
            self.emu._conns.add(self.connection)

    def finish(self) -> None:
        with self.emu._lock:
            self.emu._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # silence
        pass

    # -- io helpers --
    def _read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, code: int, body: bytes, content_type: str = "application/json; charset=UTF-8",
              headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        # headers and body in one write (avoids Nagle/delayed-ACK stalls)
        self._headers_buffer.append(b"\r\n" + body)  # type: ignore[attr-defined]
        self.flush_headers()

    def _json(self, code: int, obj: Any, headers: dict | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), headers=headers)

    def _base_url(self) -> str:
        return self.emu.base_url or f"http://127.0.0.1:{self.server.server_address[1]}"

    def _key(self, query: dict) -> str | None:
        k = self.headers.get("x-goog-api-key")
        if not k:
            q = query.get("key")
            k = q[0] if q else None
        return k

    # -- dispatch --
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        try:
            raw = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        try:
            self._route(method, raw)
        except ApiError as e:
            self._safe(lambda: self._json(e.code, e.body(), e.headers))
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception as e:  # an emulator bug: report it as a 500 so tests see it
            self._safe(lambda: self._json(500, {"error": {"code": 500, "status": "INTERNAL",
                                                          "message": f"emulator error: {type(e).__name__}: {e}"}}))

    def _safe(self, fn: Any) -> None:
        try:
            fn()
        except OSError:
            self.close_connection = True

    def _route(self, method: str, raw: bytes) -> None:
        emu = self.emu
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query)
        key = self._key(query)
        base = self._base_url()

        if path.startswith("/_emulator/"):
            return self._control(method, path[len("/_emulator/"):], raw)

        m = _GEN_RE.match(path)
        if m and method == "POST":
            version, model, action = m.groups()
            if action in ("generateContent", "streamGenerateContent"):
                out = emu.generate(version, model, key, raw, base)
                if out[0] == "close":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if out[0] == "raw":
                    return self._send(out[1], out[2], out[3])
                _, code, obj, hdrs = out
                if action == "streamGenerateContent" and code == 200:
                    if (query.get("alt") or [""])[0] == "sse":
                        return self._send(200, f"data: {json.dumps(obj)}\r\n\r\n".encode(),
                                          "text/event-stream")
                    return self._json(200, [obj])
                return self._json(code, obj, hdrs)
            if action == "countTokens":
                return self._json(200, emu.count_tokens(version, model, key, raw))
            if action == "batchGenerateContent":
                return self._json(200, emu.batch_create(version, model, key, raw))
            raise ApiError(404, "NOT_FOUND", f"Method {action} not found.")

        if _UPLOAD_RE.match(path) and method == "POST":
            version = _UPLOAD_RE.match(path).group(1)  # type: ignore[union-attr]
            uid = (query.get("upload_id") or [None])[0]
            if uid:
                hdrs, body = emu.upload_chunk(uid, self.headers, raw, base, version)
                if body is None:
                    return self._send(200, b"", headers=hdrs)
                return self._json(200, body, hdrs)
            hdrs = emu.upload_start(version, key, self.headers, raw, base)
            return self._send(200, b"", headers=hdrs)

        m = _FILE_RE.match(path)
        if m:
            version, fid, download = m.groups()
            if fid is None and method == "GET":
                return self._json(200, emu.file_list(key, query, base, version))
            if fid and download and method == "GET":
                data = emu.file_download(fid, key)
                return self._send(200, data, "application/octet-stream")
            if fid and method == "GET":
                return self._json(200, emu.file_get(fid, key, base, version))
            if fid and method == "DELETE":
                return self._json(200, emu.file_delete(fid, key))

        m = _BATCH_RE.match(path)
        if m:
            version, bid, cancel = m.groups()
            if bid is None and method == "GET":
                return self._json(200, emu.batch_list(key))
            if bid and cancel and method == "POST":
                return self._json(200, emu.batch_cancel(bid, key))
            if bid and method == "GET":
                return self._json(200, emu.batch_get(bid, key, base))
            if bid and method == "DELETE":
                return self._json(200, emu.batch_delete(bid, key))

        m = _MODEL_RE.match(path)
        if m and method == "GET":
            emu._check_key(key)
            version, model = m.groups()
            if model is None:
                return self._json(200, {"models": [_model_resource(n) for n in _LISTED_MODELS]})
            return self._json(200, _model_resource(emu._check_model(model, version)))

        raise ApiError(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")

    def _control(self, method: str, what: str, raw: bytes) -> None:
        emu = self.emu
        if what == "stats" and method == "GET":
            return self._json(200, emu.stats())
        if what == "config" and method == "GET":
            return self._json(200, emu.config_dict())
        if what == "config" and method == "POST":
            body = _parse_json(raw)
            if not isinstance(body, dict):
                raise _bad("config must be a JSON object")
            try:
                emu.set_config(**body)
            except (ValueError, TypeError) as e:
                raise _bad(str(e))
            return self._json(200, emu.config_dict())
        if what == "reset" and method == "POST":
            emu.reset()
            return self._json(200, {})
        if what == "health" and method == "GET":
            return self._json(200, {"ok": True})
        raise ApiError(404, "NOT_FOUND", f"unknown control route {what}")
