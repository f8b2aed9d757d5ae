"""Describe stage: send prepared items to a backend with pacing, adaptive concurrency, a budget and retries.

One `Describer` per run owns a private asyncio loop in a background thread. Chunk tasks hand it prepared
items one at a time with `submit()` (a concurrent Future of the item's row) as soon as each is prepared, so
requests start while the rest of a chunk is still being decoded, and the chunk boundary never drains the
request pipeline. Concurrency, the rate limiter and the budget are shared by the whole run.

One attempt = a concurrency slot (AIMD, enrich/concurrency.py), a budget reservation of the worst case, a
rate-limit slot (enrich/limiter.py), the call. Retries (tenacity): exponential backoff with jitter, never
sooner than the server's retryDelay, for `RetryableError` only (429, 500, 502, 503, 504, timeouts, connection
errors, a 200 with an unparseable body); nothing else is retried (400/401/403/404, schema violations,
blocked answers). No slot is held during a backoff. A 429 also pauses the whole run's limiter for its
retryDelay and halves concurrency, which recovers after a quiet period.

The run stops early (`fatal`) on a `FatalRunError` (bad key, unknown model, daily quota) or after
`abort_after_failures` failed attempts in a row (the endpoint is down; 429s do not count, they prove it is up).

`stop()` (a signal, or a fatal error): items waiting for a slot, the limiter or a backoff end at once with an
`interrupted` row; requests in flight get `grace_s` to finish and are then cancelled (also `interrupted`).

A later batch mode (submit a provider batch job, collect hours later) replaces `submit` with a submit/collect
pair keyed by `DescribeRequest.key`; the chunk task shape stays the same.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from pydantic import BaseModel
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from enrich.schemas.vocab import ErrorKind, Status
from enrich.backends.base import Backend, DescribeRequest
from enrich.budget import INPUT_MARGIN, INPUT_MARGIN_TOKENS  # noqa: F401 (the reservation margin; re-exported)
from enrich.budget import Budget, Reservation, reserved_input_tokens
from enrich.concurrency import AdaptiveConcurrency
from enrich.errors import FatalRunError, ItemRequestError, RetryableError
from enrich.limiter import RateLimiter
from enrich.pricing import ModelPrice, cost_usd, worst_case_usd
from enrich.redact import scrub, scrub_value, scrubbed_logger
from enrich.tasks.media_info import input_tokens_for
from enrich.tasks.prepare import PreparedItem
from enrich.tasks.records import RunInfo, now_utc, profile_key, result_row, status_row
from enrich.settings import default

log = scrubbed_logger("enrich.describe")

ERROR_TEXT_MAX = 500


@dataclass(frozen=True)
class DescribeOptions:
    prompts: dict[str, str]
    schemas: dict[str, type[BaseModel]]
    max_output_tokens: int = default("max_output_tokens")
    resolution: str = default("resolution")
    concurrency: int = default("concurrency")  # the most requests in flight; adapts down on 429
    max_attempts: int = default("max_attempts")
    backoff_initial_s: float = default("backoff_initial_s")
    backoff_max_s: float = default("backoff_max_s")
    # consecutive failed attempts (429 aside) after which the whole run stops: the endpoint is down
    abort_after_failures: int = default("abort_after_failures")
    throttle_quiet_s: float = default("throttle_quiet_s")
    grace_s: float = default("stop_grace_s")  # after stop(): how long requests in flight may still take
    # profile -> (thinking budget, thinking level), for the profiles that set one
    thinking: dict[str, tuple[int | None, str | None]] = field(default_factory=dict)

    def key_for(self, kind: str, profile: str | None) -> str:
        """prompts/schemas are keyed by tasks/records.py profile_key ("caption/image"; "image" for detailed)."""
        key = profile_key(profile, kind) if profile else kind
        return key if key in self.prompts else kind

    @classmethod
    def from_settings(cls, settings: Any, prompts: dict[str, str], schemas: dict[str, type[BaseModel]],
                      *, concurrency: int | None = None,
                      thinking: dict[str, tuple[int | None, str | None]] | None = None) -> "DescribeOptions":
        """The describer's options from the run's settings (concurrency may be capped by the backend)."""
        return cls(prompts=prompts, schemas=schemas, thinking=thinking or {}, max_output_tokens=settings.max_output_tokens,
                   resolution=settings.resolution, concurrency=concurrency or settings.concurrency,
                   max_attempts=settings.max_attempts, backoff_initial_s=settings.backoff_initial_s,
                   backoff_max_s=settings.backoff_max_s, abort_after_failures=settings.abort_after_failures,
                   throttle_quiet_s=settings.throttle_quiet_s, grace_s=settings.stop_grace_s)


@dataclass
class DescribeStats:
    """Counters for progress and the run summary. Written on the describer's loop; read from anywhere."""

    requests: int = 0  # attempts sent
    retries: int = 0
    throttled: int = 0  # 429 answers
    in_flight: int = 0
    first_request_at: float | None = None  # time.monotonic()
    last_response_at: float | None = None

    def window_s(self) -> float | None:
        """From the first request sent to the last answer received."""
        if self.first_request_at is None or self.last_response_at is None:
            return None
        return self.last_response_at - self.first_request_at

    def requests_per_min(self) -> float | None:
        span = self.window_s()
        return self.requests * 60.0 / span if span else None


class _Stopped(Exception):
    """The run is stopping: this item is not sent (again)."""


class _OverBudget(Exception):
    pass


_WAITING, _IN_FLIGHT = "waiting", "in_flight"


class _ItemState:
    __slots__ = ("phase", "attempts", "last_error", "started_at", "cancelled_in_flight")

    def __init__(self) -> None:
        self.phase = _WAITING
        self.attempts = 0
        self.last_error: Exception | None = None
        self.started_at = now_utc()
        self.cancelled_in_flight = False


def estimated_input_tokens(item: PreparedItem, model: str, prompt: str, schema: type[BaseModel],
                           resolution: str) -> tuple[int, int]:
    """(input tokens, of which audio) by the documented rules, for the reservation."""
    return input_tokens_for(item.media_tokens_hint, model, resolution, prompt, schema)


class Describer:
    def __init__(self, backend: Backend, run: RunInfo, price: ModelPrice, options: DescribeOptions, *,
                 budget: Budget | None = None, limiter: RateLimiter | None = None,
                 on_outcome: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.backend = backend
        self.run = run
        self.price = price
        self.options = options
        self.budget = budget or Budget(None)
        self.limiter = limiter
        self.on_outcome = on_outcome
        self.concurrency = AdaptiveConcurrency(options.concurrency, quiet_s=options.throttle_quiet_s)
        self.stats = DescribeStats()
        self.fatal: FatalRunError | None = None
        self.stopping = threading.Event()  # set by stop(): dispatch nothing more
        self.stop_reason: str | None = None
        self._consecutive_failures = 0
        self._items: dict[asyncio.Task, _ItemState] = {}
        self._grace_timer: asyncio.TimerHandle | None = None
        # set (and replaced) whenever a reservation is settled or released: requests waiting for room wake up
        self._budget_freed = asyncio.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="enrich-describer", daemon=True)
        self._thread.start()

    @property
    def requests_sent(self) -> int:
        return self.stats.requests

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # -- public, thread-safe ----------------------------------------------------------------------------
    def preflight(self) -> None:
        self._call(self.backend.preflight())

    def submit(self, item: PreparedItem) -> concurrent.futures.Future:
        """Start describing one item; the Future's result is its row (it never raises for the item's sake)."""
        return asyncio.run_coroutine_threadsafe(self._run_item(item), self._loop)

    def describe_batch(self, items: list[PreparedItem]) -> list[dict[str, Any]]:
        """Describe items concurrently; one row per item, in input order. Blocks the calling thread."""
        futures = [self.submit(item) for item in items]
        return [f.result() for f in futures]

    def stop(self, reason: str, *, grace_s: float | None = None) -> None:
        """Stop dispatching. Waiting items end as `interrupted` at once; requests in flight get `grace_s`
        (default options.grace_s), then are cancelled. Safe from any thread and from a signal handler;
        a second call with grace_s=0 cancels what is still in flight."""
        if self.stop_reason is None:
            self.stop_reason = scrub(reason)
        self.stopping.set()
        grace = self.options.grace_s if grace_s is None else grace_s
        try:
            self._loop.call_soon_threadsafe(self._on_stop, grace)
        except RuntimeError:  # the loop is closed: nothing is in flight
            pass

    def not_sent_row(self, file, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """The row of an item the run stopped before sending (or preparing)."""
        return self._stopped_row_of(file, meta, _ItemState())

    def close(self) -> None:
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    # -- stopping (on the loop) ---------------------------------------------------------------------------
    def _on_stop(self, grace_s: float) -> None:
        for task, state in list(self._items.items()):
            if state.phase != _IN_FLIGHT:
                task.cancel()
        if grace_s <= 0:
            self._cancel_in_flight()
        elif self._grace_timer is None:
            self._grace_timer = self._loop.call_later(grace_s, self._cancel_in_flight)

    def _cancel_in_flight(self) -> None:
        for task, state in list(self._items.items()):
            if state.phase == _IN_FLIGHT:
                state.cancelled_in_flight = True
            task.cancel()

    async def _shutdown(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        for task in list(self._items):
            task.cancel()
        await self.backend.aclose()

    def _abort(self, exc: FatalRunError) -> None:
        if self.fatal is None:
            if scrub(str(exc)) != str(exc):
                exc = FatalRunError(scrub(str(exc)), kind=exc.kind)
            self.fatal = exc
            log.error("stopping the run: %s", exc)
            self.stop(f"the run stopped: {exc}")

    # -- one item -----------------------------------------------------------------------------------------
    async def _run_item(self, item: PreparedItem) -> dict[str, Any]:
        task = asyncio.current_task()
        state = _ItemState()
        self._items[task] = state
        try:
            row = await self._describe_one(item, state)
        except asyncio.CancelledError:
            if not self.stopping.is_set():
                raise  # not ours: let the canceller see it
            row = self._stopped_row(item, state)
        except Exception as exc:  # a bug or an unmapped library error: this item records it, the run goes on
            log.warning("unexpected error describing %s: %r", item.file.path, exc)
            row = self._error_row(item, "internal", f"unexpected error: {exc.__class__.__name__}: {exc}", state)
        finally:
            self._items.pop(task, None)
        # every string of the row may come from the answer (the model's text, raw_text, an error quoting it)
        row = scrub_value(row)
        if self.on_outcome is not None:
            self.on_outcome(row)
        return row

    def _request_for(self, item: PreparedItem) -> tuple[DescribeRequest, Decimal, int]:
        opts = self.options
        kind = item.file.kind or ""
        profile = item.file.profile or self.run.default_profile
        key = opts.key_for(kind, profile)
        budget, level = opts.thinking.get(profile, (None, None))
        request = DescribeRequest(
            key=item.file.content_hash or item.file.path,
            prompt=opts.prompts[key] + (f"\n\n{item.context}" if item.context else ""),
            schema=opts.schemas[key],
            media=item.media,
            max_output_tokens=opts.max_output_tokens,
            resolution=opts.resolution,
            thinking_budget=budget,
            thinking_level=level,
        )
        est_input, est_audio = estimated_input_tokens(item, self.backend.model, request.prompt, request.schema,
                                                      opts.resolution)
        reserve_input = reserved_input_tokens(est_input)
        worst = worst_case_usd(reserve_input, opts.max_output_tokens, self.price,
                               audio_tokens=min(reserve_input, reserved_input_tokens(est_audio)) if est_audio else 0,
                               batch=self.run.batch, flex=self.run.flex)
        return request, worst, reserve_input

    async def _describe_one(self, item: PreparedItem, state: _ItemState) -> dict[str, Any]:
        request, worst, reserve_input = self._request_for(item)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.options.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(RetryableError),
            sleep=self._backoff_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(item, request, worst, reserve_input, state)
        except RetryableError as exc:
            return self._error_row(item, exc.kind, f"{exc} (after {state.attempts} attempt(s))", state)
        except ItemRequestError as exc:
            return self._error_row(item, exc.kind, str(exc), state)
        except FatalRunError as exc:
            self._abort(exc)
            return self._error_row(item, exc.kind, str(exc), state)
        except _Stopped:
            return self._stopped_row(item, state)
        except _OverBudget:
            row = status_row(item.file, self.run, Status.OVER_BUDGET, Status.OVER_BUDGET,
                             f"not sent: its worst case ${worst} does not fit in what is left of the budget",
                             item.meta)
            row.update(attempts=state.attempts, started_at=state.started_at)
            return row
        raise AssertionError("unreachable: tenacity ended without a result")  # pragma: no cover

    async def _attempt(self, item: PreparedItem, request: DescribeRequest, worst: Decimal, reserve_input: int,
                       state: _ItemState) -> dict[str, Any]:
        if self.stopping.is_set():
            raise _Stopped()
        epoch = await self.concurrency.acquire()
        try:
            reservation = await self._reserve(worst)
            if reservation is None:
                if self.stopping.is_set():
                    raise _Stopped()
                raise _OverBudget()
            try:
                if self.limiter is not None:
                    await self.limiter.acquire(reserve_input)
                if self.stopping.is_set():
                    raise _Stopped()
                result = await self._send(request, state)
            except BaseException as exc:
                self.budget.release(reservation)
                self._wake_budget_waiters()
                if isinstance(exc, RetryableError):
                    self._on_retryable(exc, epoch, state)
                elif isinstance(exc, ItemRequestError):
                    self._consecutive_failures = 0  # the endpoint answered
                raise
        finally:
            self.concurrency.release()
        self._consecutive_failures = 0
        self.concurrency.on_success()
        cost = cost_usd(result.usage, self.price, batch=self.run.batch, flex=self.run.flex) if result.usage else Decimal(0)
        if not self.budget.settle(reservation, cost):
            log.error("cost %s of %s exceeded its reservation %s", cost, item.file.path, worst)
        self._wake_budget_waiters()
        return result_row(item.file, self.run, result, cost=cost, attempts=state.attempts,
                          started_at=state.started_at, meta=item.meta)

    async def _reserve(self, worst: Decimal) -> Reservation | None:
        """Reserve a request's worst case. When it does not fit only because other requests are in flight,
        wait for them to settle (real costs are usually far below worst cases) instead of giving up, so a
        run spends up to its cap. None: it cannot fit even with nothing in flight (over budget), or the run
        is stopping. Runs on the describer's loop only, so nothing settles between the check and the wait.
        """
        while True:
            freed = self._budget_freed
            reservation = self.budget.try_reserve(worst)
            if reservation is not None or not self.budget.fits_when_idle(worst) or self.stopping.is_set():
                return reservation
            # until a reservation of this budget settles, or at most `poll_s` when room may come from elsewhere
            # (another worker's lease); None waits for the settle alone
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(freed.wait(), self.budget.poll_s)

    def _wake_budget_waiters(self) -> None:
        freed, self._budget_freed = self._budget_freed, asyncio.Event()
        freed.set()

    async def _send(self, request: DescribeRequest, state: _ItemState):
        stats = self.stats
        state.attempts += 1
        state.phase = _IN_FLIGHT
        stats.requests += 1
        stats.in_flight += 1
        if stats.first_request_at is None:
            stats.first_request_at = time.monotonic()
        try:
            return await self.backend.describe(request)
        finally:
            state.phase = _WAITING
            stats.in_flight -= 1
            stats.last_response_at = time.monotonic()

    def _on_retryable(self, exc: RetryableError, epoch: int, state: _ItemState) -> None:
        state.last_error = exc
        if exc.kind == ErrorKind.RATE_LIMITED:
            # the endpoint is up and asks us to slow down: fewer in flight, everyone waits retryDelay
            self.stats.throttled += 1
            if self.concurrency.on_throttled(epoch):
                log.info("429: concurrency lowered to %d", self.concurrency.current)
            if self.limiter is not None and exc.retry_after:
                self.limiter.pause(float(exc.retry_after))
            return
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.options.abort_after_failures and self.fatal is None:
            self._abort(FatalRunError(
                f"the endpoint failed {self._consecutive_failures} times in a row (last: {exc}); giving up",
                kind=ErrorKind.ENDPOINT_DOWN))

    def _wait(self, retry_state: RetryCallState) -> float:
        """Exponential backoff with jitter (half to full), but never sooner than the server asked."""
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        opts = self.options
        base = min(opts.backoff_max_s, opts.backoff_initial_s * 2 ** (retry_state.attempt_number - 1))
        delay = random.uniform(base / 2, base)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            delay = max(delay, float(retry_after))
        self.stats.retries += 1
        log.debug("retrying after %.2fs: %s", delay, exc)
        return delay

    async def _backoff_sleep(self, seconds: float) -> None:
        if self.stopping.is_set():
            raise _Stopped()
        await asyncio.sleep(seconds)  # cancelled by stop(): this item holds no slot while it waits

    # -- rows -----------------------------------------------------------------------------------------
    def _error_row(self, item: PreparedItem, kind: str, message: str, state: _ItemState) -> dict[str, Any]:
        row = status_row(item.file, self.run, Status.ERROR, kind, message[:ERROR_TEXT_MAX], item.meta)
        row.update(attempts=state.attempts, started_at=state.started_at)
        return row

    def _stopped_row(self, item: PreparedItem, state: _ItemState) -> dict[str, Any]:
        return self._stopped_row_of(item.file, item.meta, state)

    def _stopped_row_of(self, file, meta: dict[str, Any] | None, state: _ItemState) -> dict[str, Any]:
        if self.fatal is not None:
            kind, why = ErrorKind.RUN_ABORTED, f"the run stopped early ({self.fatal})"
        else:
            kind, why = Status.INTERRUPTED, self.stop_reason or "the run was interrupted"
        if state.cancelled_in_flight:
            message = (f"cancelled in flight {self.options.grace_s:g}s after the stop ({why}); "
                       "the provider may still bill this request")
        elif state.attempts:
            message = f"not finished: {why}, after {state.attempts} attempt(s) (last: {state.last_error})"
        else:
            message = f"not sent: {why}"
        row = status_row(file, self.run, Status.INTERRUPTED, kind, message[:ERROR_TEXT_MAX], meta)
        row.update(attempts=state.attempts, started_at=state.started_at)
        return row
