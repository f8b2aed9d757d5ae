"""Adaptive concurrency for requests to a rate-limited provider: AIMD, like TCP congestion control.

The limit starts at the configured maximum (`--concurrency`). A 429 halves it (multiplicative decrease), but
only once per wave: a 429 from a request that was already on its way before the last decrease says nothing
new, so requests carry the `epoch` they were admitted in and only a throttle from the current epoch counts.
After a quiet period with no 429, every success adds 1/limit (additive increase: about +1 per round of
requests), back up to the maximum.

Single event loop only (the describer's): no locks. Reads of `limit`/`in_use` from other threads (progress)
are plain attribute reads.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import Callable

from enrich.settings import default


class AdaptiveConcurrency:
    def __init__(self, maximum: int, *, minimum: int = 1, quiet_s: float = default("throttle_quiet_s"),
                 clock: Callable[[], float] = time.monotonic) -> None:
        if maximum < 1 or minimum < 1 or minimum > maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got {minimum}..{maximum}")
        self.maximum = maximum
        self.minimum = minimum
        self.quiet_s = quiet_s
        self._clock = clock
        self.limit: float = float(maximum)
        self.in_use = 0
        self.epoch = 0  # bumped at every decrease
        self.decreases = 0
        self.throttles = 0  # every 429 reported, counted or not
        self._last_throttle = -math.inf
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def current(self) -> int:
        """How many requests may be in flight now."""
        return max(self.minimum, int(self.limit))

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch the request is admitted in (give it to `on_throttled`)."""
        if self.in_use < self.current and not self._waiters:
            self.in_use += 1
            return self.epoch
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted and cancelled in the same breath: hand the slot on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise
        return self.epoch

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.current:
            fut = self._waiters.popleft()
            if fut.done():  # its waiter was cancelled
                continue
            self.in_use += 1
            fut.set_result(None)

    def on_throttled(self, epoch: int) -> bool:
        """A 429 for a request admitted in `epoch`. Returns True when it lowered the limit."""
        self.throttles += 1
        self._last_throttle = self._clock()
        if epoch != self.epoch:
            return False
        self.limit = float(max(self.minimum, math.floor(self.limit / 2)))
        self.epoch += 1
        self.decreases += 1
        return True

    def on_success(self) -> None:
        if self.limit >= self.maximum or self._clock() - self._last_throttle < self.quiet_s:
            return
        self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
        self._wake()
