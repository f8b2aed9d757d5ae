"""A smooth rate limiter shared by every request of a run: requests per minute and input tokens per minute.

GCRA-style spacing: each request is given the next free slot on a timeline, so requests go out evenly
(R/60 per second) instead of in bursts at the top of each minute. Token cost is spaced the same way. The
timeline is absolute: a request that runs late does not push the next one back, so event-loop jitter costs
no throughput. No burst by default (`burst_s=0`): a provider counting requests in a sliding 60 s window
must never see more than R in any window. Callers pace a little under the provider's figure (the pipeline
leaves `rate_headroom`, 2%) because our clock and the provider's window never agree exactly.
Works across threads: the state is guarded by a lock, the waiting happens outside it.
"""
from __future__ import annotations

import asyncio
import threading
import time


class RateLimiter:
    def __init__(self, rpm: float | None, tpm: float | None = None, *, burst_s: float = 0.0,
                 clock=time.monotonic) -> None:
        self.rpm = rpm or None  # 0 or None: no limit
        self.tpm = tpm or None
        self._clock = clock
        self._lock = threading.Lock()
        self._burst_s = burst_s  # how far behind "now" an idle timeline may restart (allows a short burst)
        self._next_req = 0.0
        self._next_tok = 0.0
        self._paused_until = 0.0
        self.pauses = 0

    def _slot(self, tokens: int) -> float:
        """Reserve the next slot; return how long the caller must wait for it."""
        with self._lock:
            now = self._clock()
            start = max(now, self._paused_until)
            wait = start - now
            if self.rpm:
                interval = 60.0 / self.rpm
                at = max(self._next_req, start - self._burst_s)
                self._next_req = at + interval
                wait = max(wait, at - now)
            if self.tpm and tokens:
                at = max(self._next_tok, start - self._burst_s)
                self._next_tok = at + tokens * 60.0 / self.tpm
                wait = max(wait, at - now)
            return max(0.0, wait)

    async def acquire(self, tokens: int = 0) -> None:
        wait = self._slot(tokens)
        if wait > 0:
            await asyncio.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold every request for `seconds` (the provider told us to back off: 429 retryDelay)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            # no credit builds up while paused: requests resume at the normal spacing, not in a burst
            self._next_req = max(self._next_req, self._paused_until)
            self._next_tok = max(self._next_tok, self._paused_until)
            self.pauses += 1
