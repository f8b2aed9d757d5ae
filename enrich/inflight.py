"""A budget of weight in use at once (bytes of media in flight, pixels being decoded), shared by threads.

`acquire(weight)` waits while the weight in use plus this one would pass the limit, but always admits an item
when nothing else is in use (an item heavier than the whole budget goes alone, counted as the limit), so a
run never stalls on one large file. `peak` records the most weight ever in use at once: what tests and the
run summary read, rather than timing RSS.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator


class WeightBudget:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the limit must be at least 1")
        self.limit = int(limit)
        self.in_use = 0
        self.peak = 0
        self.waited = 0  # acquisitions that had to wait
        self._cond = threading.Condition()

    def acquire(self, weight: int, *, cancelled: Callable[[], bool] = lambda: False,
                poll_s: float = 0.2) -> int | None:
        """Take `weight` (capped at the limit); returns what was taken, or None if `cancelled()` became true
        while waiting."""
        weight = max(0, min(int(weight), self.limit))
        with self._cond:
            waited = False
            while self.in_use and self.in_use + weight > self.limit:
                if cancelled():
                    return None
                waited = True
                self._cond.wait(poll_s)
            self.in_use += weight
            self.peak = max(self.peak, self.in_use)
            self.waited += waited
        return weight

    def release(self, weight: int | None) -> None:
        if not weight:
            return
        with self._cond:
            self.in_use -= weight
            self._cond.notify_all()

    @contextmanager
    def hold(self, weight: int) -> Iterator[int]:
        taken = self.acquire(weight)
        try:
            yield taken or 0
        finally:
            self.release(taken)
