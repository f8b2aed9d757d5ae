"""A budget that can never be overrun, with any concurrency.

Before a request is sent its worst case (known input plus max_output_tokens at the output price) is
reserved; when the answer arrives the reservation is settled to the real cost; a failed request releases
it. A request whose worst case does not fit in (cap - spent - reserved) is not sent. Since a real cost is
never above its worst case, settled spend can never exceed the cap.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(frozen=True)
class Reservation:
    amount: Decimal


class Budget:
    def __init__(self, cap_usd: Decimal | float | str | None, *, already_spent: Decimal = ZERO) -> None:
        self.cap = None if cap_usd is None else Decimal(str(cap_usd))
        self._lock = threading.Lock()
        self.spent = already_spent  # counted against the cap (e.g. today's spend for a daily cap)
        self.run_spent = ZERO  # spent by this run only
        self.reserved = ZERO
        self.reserved_peak = ZERO
        self.refused = 0
        self.overruns = 0  # real cost above its reservation: token rules or margin are wrong; logged

    @property
    def limited(self) -> bool:
        return self.cap is not None

    def remaining(self) -> Decimal | None:
        with self._lock:
            return None if self.cap is None else self.cap - self.spent - self.reserved

    def try_reserve(self, worst_case: Decimal) -> Reservation | None:
        with self._lock:
            if self.cap is not None and self.spent + self.reserved + worst_case > self.cap:
                self.refused += 1
                return None
            self.reserved += worst_case
            self.reserved_peak = max(self.reserved_peak, self.reserved)
            return Reservation(worst_case)

    def settle(self, reservation: Reservation, actual: Decimal) -> bool:
        """Turn a reservation into real spend. Returns False (and counts it) if it was overrun."""
        with self._lock:
            self.reserved -= reservation.amount
            self.spent += actual
            self.run_spent += actual
            if actual > reservation.amount:
                self.overruns += 1
                return False
            return True

    def release(self, reservation: Reservation) -> None:
        with self._lock:
            self.reserved -= reservation.amount
