"""Local vision-language models through mlx-vlm (Apple silicon; the CPU build of mlx on Linux).

`MlxBackend("path/or/hf-repo")` loads the model once per process (lazily, on the first request; a
module-level cache keyed by path, guarded by a lock) and runs every mlx call on one long-lived worker
thread (`MLX_THREAD`, see its docstring for why not `asyncio.to_thread`), so the event loop stays free
and there is one generation at a time. The model cannot enforce a JSON schema on CPU
(llguidance needs Metal), so the prompt carries `schema_prompt(schema)` and the text goes through
`parse_or_repair`; an invalid answer is retried once with a stricter prompt (not when it was cut by
max tokens: a second run would be cut the same way).

Outcomes: valid JSON -> status "ok"; invalid twice -> status "error", error_kind "invalid_output" with
the raw text; cut by max tokens and invalid -> error_kind "max_tokens". Usage counts the tokens of every
attempt. Failures to load raise FatalRunError (nothing can succeed); an exception inside one generation
raises ItemRequestError; undecodable image bytes raise MediaError.

`describe_many(requests)` runs `mlx_vlm.batch_generate` over several images at once. mlx-vlm 0.7.10's
PaliGemma vision encoder keeps only the first image of a batch (`h = x[0]` in
models/paligemma/vision.py), so for PaliGemma it falls back to one `generate` per item unless
`force_batch=True` (used by the benchmark to time it; the texts are then wrong).
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import io
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import BaseModel

from enrich.schemas.vocab import ErrorKind, Status
from enrich.backends.base import Capabilities, DescribeRequest, DescribeResult, MediaPart, Usage
from enrich.backends.jsonrepair import REPAIR_SUFFIX, InvalidOutput, parse_or_repair, schema_prompt
from enrich.errors import ConfigError, FatalRunError, ItemRequestError, MediaError
from enrich.settings import default

IMAGE_MIME_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
# Model types whose batched vision path is known to be wrong in mlx-vlm 0.7.10 (see module docstring).
BATCH_BROKEN_MODEL_TYPES = frozenset({"paligemma"})

LogitsProcessor = Callable[[Any, Any], Any]


@dataclass
class LoadedModel:
    path: str
    model: Any
    processor: Any
    config: Any  # what apply_chat_template wants: config.json merged with generation_config.json
    model_type: str
    load_s: float
    lock: threading.Lock  # one generation at a time on this model

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)


_LOADED: dict[str, LoadedModel] = {}
_LOAD_LOCK = threading.Lock()


class _MlxThread:
    """The one thread that runs every mlx call of this module (load, generate, batch_generate).

    Why not asyncio.to_thread: mlx-vlm generates on a thread-local mlx stream, and a thread that used one
    and then exits without `mx.clear_streams()` makes the process abort at exit ("terminate called without
    an active exception", SIGABRT, ~90% of runs with mlx 0.32.4 on Linux). Executor threads exit at
    interpreter shutdown, so they cannot be used. This thread is a daemon that lives for the process; an
    atexit hook lets it finish its job, clear its streams and stop. One thread also means one mlx job at a
    time in the process, which is what a single accelerator wants anyway.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            fut, fn, args = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # delivered to the awaiting caller
                fut.set_exception(e)
        try:
            import mlx.core as mx

            mx.synchronize()
            mx.clear_streams()
        except Exception:  # pragma: no cover - best effort at exit
            pass

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="enrich-mlx", daemon=True)
                self._thread.start()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((fut, fn, args))
        return fut

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn on the mlx thread and wait (runs inline when already on it)."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        return self.submit(fn, *args).result()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if threading.current_thread() is self._thread:  # pragma: no cover - not called from there
            return fn(*args)
        return await asyncio.wrap_future(self.submit(fn, *args))

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)


MLX_THREAD = _MlxThread()
atexit.register(MLX_THREAD.stop)


def _cache_key(path: str) -> str:
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else path


def load_model(path: str) -> LoadedModel:
    """Load (once per process) the model at `path` (a local directory or a Hugging Face repo id).
    Blocking; the load itself runs on the mlx thread."""
    return MLX_THREAD.call(_load_model, path)


def _load_model(path: str) -> LoadedModel:
    key = _cache_key(path)
    with _LOAD_LOCK:
        loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        try:
            import mlx_vlm
            from mlx_vlm.utils import load_config
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ConfigError(f"mlx-vlm is not installed ({e}); pip install 'enrich[mlx]'") from e
        t0 = time.perf_counter()
        try:
            model, processor = mlx_vlm.load(path)
            local = Path(path).expanduser()
            config = load_config(local) if local.is_dir() else model.config
        except Exception as e:
            raise FatalRunError(f"could not load mlx model {path!r}: {type(e).__name__}: {e}") from e
        model_type = (config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", "")) or ""
        loaded = LoadedModel(
            path=path,
            model=model,
            processor=processor,
            config=config,
            model_type=str(model_type),
            load_s=time.perf_counter() - t0,
            lock=threading.Lock(),
        )
        _LOADED[key] = loaded
        return loaded


def unload_model(path: str) -> bool:
    """Drop a loaded model from the process cache (tests, or freeing memory between runs)."""
    with _LOAD_LOCK:
        return _LOADED.pop(_cache_key(path), None) is not None


@dataclass
class _Attempt:
    text: str
    prompt_tokens: int
    generation_tokens: int
    finish_reason: str | None
    generation_tps: float
    prompt_tps: float
    peak_memory_gb: float
    wall_s: float


class _CountTokens:
    """Logits processor that only counts: its calls and the context length (the prompt) it saw first.

    One instance per batch row; clone() gives a fresh one where mlx-vlm copies processors per row."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_context: int | None = None

    def clone(self) -> "_CountTokens":
        return _CountTokens()

    def __call__(self, tokens: Any, logits: Any) -> Any:
        if self.first_context is None:
            self.first_context = int(tokens.size) if hasattr(tokens, "size") else len(tokens)
        self.calls += 1
        return logits


def _pil_image(part: MediaPart):
    from PIL import Image, UnidentifiedImageError

    data = part.read_bytes()
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(f"cannot decode image ({part.mime}): {e}") from e
    return img.convert("RGB") if img.mode != "RGB" else img


class MlxBackend:
    """Backend protocol implementation over mlx-vlm. See the module docstring."""

    name = "mlx"

    def __init__(
        self,
        model_path: str | Path,
        *,
        logits_processors: Sequence[LogitsProcessor] | None = None,
        retry_invalid: bool = True,
        constrained: bool = False,
        max_inline_bytes: int = default("max_inline_bytes"),
        force_batch: bool = False,
    ) -> None:
        path = str(model_path)
        if path.startswith("mlx:"):
            path = path[len("mlx:") :]
        self.model_path = path
        self.model = f"mlx:{path}"
        # Test hook: extra logits processors passed to every generate (e.g. to force known tokens).
        self._logits_processors = list(logits_processors or [])
        self._retry_invalid = retry_invalid
        if constrained and sys.platform != "darwin":
            raise ConfigError("constrained decoding (llguidance) needs Metal: only available on macOS")
        self._constrained = constrained
        self._force_batch = force_batch
        self.capabilities = Capabilities(
            mime_types=IMAGE_MIME_TYPES,
            max_inline_bytes=max_inline_bytes,
            structured_output=constrained,
            local=True,
            default_concurrency=1,
        )

    # ------------------------------------------------------------------------------------ loading

    def _loaded(self) -> LoadedModel:
        return load_model(self.model_path)  # inline when already on the mlx thread

    async def load(self) -> LoadedModel:
        """Load now (otherwise the first describe does)."""
        return await MLX_THREAD.run(_load_model, self.model_path)

    async def preflight(self) -> None:
        """Load the model (once per process): a missing or broken model stops the run with FatalRunError."""
        try:
            await self.load()
        except ConfigError as e:
            raise FatalRunError(str(e), kind=ErrorKind.CONFIG) from None

    async def aclose(self) -> None:
        # The model stays cached for the process: other backends on the same path share it.
        return None

    # ------------------------------------------------------------------------------------ prompts

    @staticmethod
    def build_prompt(request: DescribeRequest, *, repair: bool = False) -> str:
        text = f"{request.prompt.rstrip()}\n\n{schema_prompt(request.schema)}"
        if repair:
            text += "\n" + REPAIR_SUFFIX
        return text

    def _images(self, request: DescribeRequest) -> list:
        images = []
        for part in request.media:
            if not self.capabilities.accepts(part.mime):
                raise ItemRequestError(f"mlx backend does not accept {part.mime}", kind=ErrorKind.UNSUPPORTED_MEDIA)
            images.append(_pil_image(part))
        return images

    def _processors(self, loaded: LoadedModel, schema: type[BaseModel]) -> list:
        procs = list(self._logits_processors)
        if self._constrained:  # darwin only (checked in __init__)
            import json

            from mlx_vlm.structured import build_json_schema_logits_processor

            procs.append(build_json_schema_logits_processor(loaded.tokenizer, json.dumps(schema.model_json_schema())))
        return procs

    # ------------------------------------------------------------------------------------ one item

    def _generate(self, loaded: LoadedModel, prompt: str, images: list, max_tokens: int, procs: list) -> _Attempt:
        import mlx.core as mx
        import mlx_vlm

        formatted = mlx_vlm.apply_chat_template(loaded.processor, loaded.config, prompt, num_images=len(images))
        kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0.0, "verbose": False}
        if procs:
            kwargs["logits_processors"] = procs
        image_arg: Any = None
        if len(images) == 1:
            image_arg = images[0]
        elif images:
            image_arg = images
        with loaded.lock:
            mx.reset_peak_memory()
            t0 = time.perf_counter()
            try:
                res = mlx_vlm.generate(loaded.model, loaded.processor, formatted, image=image_arg, **kwargs)
            except (MediaError, ItemRequestError, FatalRunError):
                raise
            except Exception as e:
                raise ItemRequestError(f"mlx generate failed: {type(e).__name__}: {e}", kind=ErrorKind.MODEL_ERROR) from e
            wall = time.perf_counter() - t0
        return _Attempt(
            text=res.text or "",
            prompt_tokens=int(res.prompt_tokens or 0),
            generation_tokens=int(res.generation_tokens or 0),
            finish_reason=res.finish_reason,
            generation_tps=float(res.generation_tps or 0.0),
            prompt_tps=float(res.prompt_tps or 0.0),
            peak_memory_gb=float(res.peak_memory or 0.0),
            wall_s=wall,
        )

    def _describe_sync(self, request: DescribeRequest) -> DescribeResult:
        loaded = self._loaded()
        images = self._images(request)
        procs = self._processors(loaded, request.schema)
        attempts = [self._generate(loaded, self.build_prompt(request), images, request.max_output_tokens, procs)]
        result = self._judge(request, attempts, loaded)
        if result.status != "ok" and result.error_kind == "invalid_output" and self._retry_invalid:
            procs = self._processors(loaded, request.schema)  # fresh state for stateful processors
            prompt = self.build_prompt(request, repair=True)
            attempts.append(self._generate(loaded, prompt, images, request.max_output_tokens, procs))
            result = self._judge(request, attempts, loaded)
        return result

    def _usage(self, attempts: list[_Attempt], loaded: LoadedModel, n_images: int) -> Usage:
        usage = Usage(
            input_tokens=sum(a.prompt_tokens for a in attempts),
            output_tokens=sum(a.generation_tokens for a in attempts),
        )
        per_image = getattr(loaded.processor, "image_seq_length", None)
        if isinstance(per_image, int) and n_images and usage.input_tokens:
            image_tokens = per_image * n_images * len(attempts)
            usage.input_by_modality = {"IMAGE": image_tokens, "TEXT": max(usage.input_tokens - image_tokens, 0)}
        return usage

    def _judge(self, request: DescribeRequest, attempts: list[_Attempt], loaded: LoadedModel) -> DescribeResult:
        last = attempts[-1]
        usage = self._usage(attempts, loaded, len(request.media))
        extra = {
            "tokens_per_second": last.generation_tps,
            "prompt_tokens_per_second": last.prompt_tps,
            # mlx reports GB as bytes / 1e9; MB here is bytes / 1e6.
            "peak_memory_mb": max(a.peak_memory_gb for a in attempts) * 1000.0,
            "wall_ms": sum(a.wall_s for a in attempts) * 1000.0,
            "attempts": len(attempts),
        }
        base = dict(usage=usage, finish_reason=last.finish_reason, model_version=self.model, extra=extra)
        try:
            desc = parse_or_repair(last.text, request.schema)
        except InvalidOutput as e:
            kind = ErrorKind.MAX_TOKENS if last.finish_reason == "length" else ErrorKind.INVALID_OUTPUT
            return DescribeResult(status=Status.ERROR, error_kind=kind, error=str(e), raw_text=last.text, **base)
        return DescribeResult(status=Status.OK, description=desc, **base)

    async def describe(self, request: DescribeRequest) -> DescribeResult:
        return await MLX_THREAD.run(self._describe_sync, request)

    def describe_sync(self, request: DescribeRequest) -> DescribeResult:
        """Blocking describe (scripts, benchmarks); runs on the mlx thread like describe()."""
        return MLX_THREAD.call(self._describe_sync, request)

    # ------------------------------------------------------------------------------------ batches

    def batch_supported(self) -> bool:
        return self._force_batch or self._loaded().model_type not in BATCH_BROKEN_MODEL_TYPES

    def _describe_many_sync(self, requests: Sequence[DescribeRequest]) -> list[DescribeResult]:
        import mlx.core as mx
        import mlx_vlm

        loaded = self._loaded()
        if len(requests) <= 1 or not self.batch_supported():
            return [self._describe_sync(r) for r in requests]
        images_per_req = [self._images(r) for r in requests]
        if any(len(imgs) != 1 for imgs in images_per_req):
            raise ItemRequestError("describe_many needs exactly one image per request", kind=ErrorKind.UNSUPPORTED_MEDIA)
        # Per-row processors (a list of lists), each ending with a counter for exact per-row token counts.
        counters = [_CountTokens() for _ in requests]
        procs = [self._processors(loaded, r.schema) + [c] for r, c in zip(requests, counters)]
        with loaded.lock:
            mx.reset_peak_memory()
            t0 = time.perf_counter()
            try:
                resp = mlx_vlm.batch_generate(
                    loaded.model,
                    loaded.processor,
                    images=[imgs[0] for imgs in images_per_req],
                    prompts=[self.build_prompt(r) for r in requests],  # batch_generate applies the template
                    max_tokens=[r.max_output_tokens for r in requests],
                    logits_processors=procs,
                    verbose=False,
                )
            except Exception as e:
                raise ItemRequestError(f"mlx batch_generate failed: {type(e).__name__}: {e}", kind=ErrorKind.MODEL_ERROR) from e
            wall = time.perf_counter() - t0
        stats = resp.stats
        n = len(requests)
        results: list[DescribeResult] = []
        # The generator computes one step ahead, so a row's processors run once more than it sampled
        # tokens (mlx-vlm 0.7.10, checked against generate's counts); the EOS counts as generated, as
        # in generate(). If the sum disagrees with the batch stats, trust the raw calls.
        lookahead = 1 if sum(c.calls - 1 for c in counters) == stats.generation_tokens else 0
        for req, text, counter in zip(requests, resp.texts, counters):
            generated = min(max(counter.calls - lookahead, 0), req.max_output_tokens)
            hit_length = generated >= req.max_output_tokens
            attempt = _Attempt(
                text=text or "",
                prompt_tokens=counter.first_context or (stats.prompt_tokens // n),
                generation_tokens=generated,
                finish_reason="length" if hit_length else "stop",
                generation_tps=float(stats.generation_tps or 0.0),
                prompt_tps=float(stats.prompt_tps or 0.0),
                peak_memory_gb=float(stats.peak_memory or 0.0),
                wall_s=wall / n,
            )
            res = self._judge(req, [attempt], loaded)
            res.extra.update({"batch_size": n, "batch_wall_ms": wall * 1000.0})
            if res.status != "ok" and res.error_kind == "invalid_output" and self._retry_invalid:
                retry = self._generate(
                    loaded,
                    self.build_prompt(req, repair=True),
                    images_per_req[len(results)],
                    req.max_output_tokens,
                    self._processors(loaded, req.schema),
                )
                res2 = self._judge(req, [attempt, retry], loaded)
                res2.extra.update({"batch_size": n, "batch_wall_ms": wall * 1000.0})
                res = res2
            results.append(res)
        return results

    async def describe_many(self, requests: Sequence[DescribeRequest]) -> list[DescribeResult]:
        """Describe several single-image requests in one batched generation (same-shape images batch
        together); falls back to one generation per item where batching is known to be wrong."""
        return await MLX_THREAD.run(self._describe_many_sync, list(requests))
