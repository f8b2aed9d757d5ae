"""Describe stage: send prepared items to a backend with pacing, a budget and retries.

One `Describer` per run owns a private asyncio loop in a background thread. Chunk tasks (Prefect task runs,
possibly several at once in threads) hand it their prepared items with `describe_batch()` and block until
every item has an outcome. So concurrency, the rate limiter and the budget are shared by the whole run,
not reset per chunk, and the chunk boundary never drains the request pipeline.

A later batch mode (submit a provider batch job, collect hours later) replaces `describe_batch` with a
submit/collect pair keyed by `DescribeRequest.key`; the chunk task shape stays the same.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from pydantic import BaseModel
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from enrich.backends.base import Backend, DescribeRequest, DescribeResult
from enrich.budget import INPUT_MARGIN, INPUT_MARGIN_TOKENS  # noqa: F401 (the reservation margin; re-exported)
from enrich.budget import Budget, Reservation, reserved_input_tokens
from enrich.errors import FatalRunError, ItemRequestError, RetryableError
from enrich.limiter import RateLimiter
from enrich.pricing import ModelPrice, cost_usd, worst_case_usd
from tasks.media_info import input_tokens_for
from tasks.prepare import PreparedItem
from tasks.records import RunInfo, now_utc, result_row, status_row

log = logging.getLogger("enrich.describe")


@dataclass(frozen=True)
class DescribeOptions:
    prompts: dict[str, str]
    schemas: dict[str, type[BaseModel]]
    max_output_tokens: int = 1024
    resolution: str = "low"
    concurrency: int = 16
    max_attempts: int = 5
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    # consecutive failures of the endpoint after which the whole run stops (endpoint down)
    abort_after_consecutive_failures: int = 50


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
        self.fatal: FatalRunError | None = None
        self.stopping = threading.Event()  # set on SIGINT/SIGTERM or a fatal error: stop dispatching
        self._consecutive_failures = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="enrich-describer", daemon=True)
        self._thread.start()
        self._semaphore = self._call(self._make_semaphore())
        # set (and replaced) whenever a reservation is settled or released: requests waiting for room wake up
        self._budget_freed = asyncio.Event()
        self.requests_sent = 0

    async def _make_semaphore(self) -> asyncio.Semaphore:
        return asyncio.Semaphore(self.options.concurrency)

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # -- public, thread-safe ----------------------------------------------------------------------------
    def preflight(self) -> None:
        self._call(self.backend.preflight())

    def describe_batch(self, items: list[PreparedItem]) -> list[dict[str, Any]]:
        """Describe items concurrently; one row per item, in input order. Blocks the calling thread."""
        return self._call(self._describe_all(items))

    def close(self) -> None:
        try:
            self._call(self.backend.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    # -- internals -------------------------------------------------------------------------------------
    async def _describe_all(self, items: list[PreparedItem]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self._describe_one(item) for item in items)))

    def _stopped_row(self, item: PreparedItem) -> dict[str, Any]:
        if self.fatal is not None:
            return status_row(item.file, self.run, "error", "run_aborted",
                              f"not sent: the run stopped ({self.fatal})", item.meta)
        return status_row(item.file, self.run, "interrupted", "interrupted", "not sent: the run was interrupted",
                          item.meta)

    async def _describe_one(self, item: PreparedItem) -> dict[str, Any]:
        opts = self.options
        kind = item.file.kind or ""
        request = DescribeRequest(
            key=item.file.content_hash or item.file.path,
            prompt=opts.prompts[kind],
            schema=opts.schemas[kind],
            media=item.media,
            max_output_tokens=opts.max_output_tokens,
            resolution=opts.resolution,
        )
        est_input, est_audio = estimated_input_tokens(item, self.backend.model, request.prompt, request.schema,
                                                      opts.resolution)
        reserve_input = reserved_input_tokens(est_input)
        worst = worst_case_usd(reserve_input, opts.max_output_tokens, self.price,
                               audio_tokens=min(reserve_input, reserved_input_tokens(est_audio)) if est_audio else 0,
                               batch=self.run.batch)
        attempts = 0
        started_at = now_utc()
        last_error: Exception | None = None

        async with self._semaphore:
            retrying = AsyncRetrying(
                stop=stop_after_attempt(opts.max_attempts),
                wait=self._wait,
                retry=retry_if_exception_type(RetryableError),
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        if self.stopping.is_set():
                            return self._finish(self._stopped_row(item))
                        reservation = await self._reserve(worst)
                        if reservation is None and self.stopping.is_set():
                            return self._finish(self._stopped_row(item))
                        if reservation is None:
                            return self._finish(status_row(
                                item.file, self.run, "over_budget", "over_budget",
                                f"not sent: its worst case ${worst} does not fit in what is left of the budget",
                                item.meta))
                        if self.limiter is not None:
                            await self.limiter.acquire(reserve_input)
                        attempts += 1
                        self.requests_sent += 1
                        try:
                            result = await self.backend.describe(request)
                        except BaseException:
                            self.budget.release(reservation)
                            self._wake_budget_waiters()
                            raise
                        cost = cost_usd(result.usage, self.price, batch=self.run.batch) if result.usage else Decimal(0)
                        if not self.budget.settle(reservation, cost):
                            log.error("cost %s of %s exceeded its reservation %s", cost, item.file.path, worst)
                        self._wake_budget_waiters()
                        self._consecutive_failures = 0
                        return self._finish(result_row(item.file, self.run, result, cost=cost, attempts=attempts,
                                                       started_at=started_at, meta=item.meta))
            except RetryableError as exc:
                last_error = exc
                self._note_failure(exc)
                return self._finish(self._error_row(item, exc, attempts, started_at))
            except ItemRequestError as exc:
                last_error = exc
                return self._finish(self._error_row(item, exc, attempts, started_at))
            except FatalRunError as exc:
                if self.fatal is None:
                    self.fatal = exc
                    log.error("stopping the run: %s", exc)
                self.stopping.set()
                return self._finish(self._error_row(item, exc, attempts, started_at))
        raise AssertionError(f"unreachable: {last_error}")  # pragma: no cover

    async def _reserve(self, worst: Decimal) -> Reservation | None:
        """Reserve a request's worst case. When it does not fit only because other requests are in flight,
        wait for them to settle (real costs are usually far below worst cases) instead of giving up, so a
        run spends up to its cap. None: it cannot fit even with nothing in flight, so it is over budget.

        Runs on the describer's loop only, so nothing settles between the check and the wait.
        """
        while True:
            freed = self._budget_freed
            reservation = self.budget.try_reserve(worst)
            if reservation is not None or not self.budget.fits_when_idle(worst) or self.stopping.is_set():
                return reservation
            await freed.wait()

    def _wake_budget_waiters(self) -> None:
        freed, self._budget_freed = self._budget_freed, asyncio.Event()
        freed.set()

    def _error_row(self, item: PreparedItem, exc: Exception, attempts: int, started_at) -> dict[str, Any]:
        kind = getattr(exc, "kind", "error")
        row = status_row(item.file, self.run, "error", kind, f"{exc} (after {attempts} attempt(s))", item.meta)
        row.update(attempts=attempts, started_at=started_at)
        return row

    def _note_failure(self, exc: RetryableError) -> None:
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.options.abort_after_consecutive_failures and self.fatal is None:
            self.fatal = FatalRunError(
                f"the endpoint failed {self._consecutive_failures} times in a row (last: {exc}); giving up",
                kind="endpoint_down")
            self.stopping.set()

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with full jitter, but never sooner than the server asked (retryDelay)."""
        import random

        exc = state.outcome.exception() if state.outcome else None
        base = min(self.options.backoff_max_s, self.options.backoff_initial_s * 2 ** (state.attempt_number - 1))
        delay = random.uniform(base / 2, base)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            delay = max(delay, float(retry_after))
            if self.limiter is not None and getattr(exc, "kind", "") == "rate_limited":
                self.limiter.pause(float(retry_after))
        if isinstance(exc, RetryableError):
            self._note_failure(exc)
            log.debug("retrying after %.2fs: %s", delay, exc)
        return delay

    def _finish(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.on_outcome is not None:
            self.on_outcome(row)
        return row
