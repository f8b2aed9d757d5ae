"""A budget that can never be overrun, with any concurrency.

Before a request is sent its worst case (known input plus max_output_tokens at the output price) is
reserved; when the answer arrives the reservation is settled to the real cost; a failed request releases
it. A request whose worst case does not fit in (cap - spent - reserved) is not sent. Since a real cost is
never above its worst case, settled spend can never exceed the cap.

A rolling daily cap is the same object: `already_spent` is today's recorded spend, counted against the cap
(see `budget_for_run`; today's spend is read from the warehouse by flows/pipeline.budget_from_settings,
so this module stays below the warehouse).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from enrich.schemas.money import LARGEST_USD, SMALLEST_USD, check_budget_usd  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from enrich.settings import Settings

ZERO = Decimal(0)


# A reservation must cover the real input even if our token rules undercount a little.
INPUT_MARGIN = 1.10
INPUT_MARGIN_TOKENS = 64


def reserved_input_tokens(estimated_input: int) -> int:
    """The input tokens reserved for a request whose input is estimated at `estimated_input`."""
    return int(estimated_input * INPUT_MARGIN) + INPUT_MARGIN_TOKENS


@dataclass(frozen=True)
class Reservation:
    amount: Decimal


class Budget:
    def __init__(self, cap_usd: Decimal | float | str | None, *, already_spent: Decimal = ZERO) -> None:
        self.cap = None if cap_usd is None else Decimal(str(cap_usd))
        self._lock = threading.Lock()
        self.already_spent = Decimal(already_spent)  # spent before this run, counted against the cap
        self.spent = self.already_spent  # everything counted against the cap
        self.run_spent = ZERO  # spent by this run only
        self.reserved = ZERO
        self.reserved_peak = ZERO
        self.refused = 0
        self.overruns = 0  # real cost above its reservation: token rules or margin are wrong; logged
        self.daily_cap: Decimal | None = None  # set by budget_for_run when a daily cap applies (for reports)

    @property
    def limited(self) -> bool:
        return self.cap is not None

    @property
    def run_cap(self) -> Decimal | None:
        """The most this run may spend: the cap less what was spent before it (never negative)."""
        return None if self.cap is None else max(ZERO, self.cap - self.already_spent)

    # How often a request waiting for room should try again without a local event; None: it waits for one of
    # this budget's own reservations to settle (tasks/coordination.py LeasedBudget polls its coordinator).
    poll_s: float | None = None

    def fits_when_idle(self, worst_case: Decimal) -> bool:
        """Whether `worst_case` could be reserved once every outstanding reservation has settled.

        Settling only ever lowers a reservation to its real cost, so when this is False now it stays False:
        the request can be given up on as over budget. When True, waiting for in-flight requests is worth it.
        """
        with self._lock:
            return self.cap is None or self.spent + worst_case <= self.cap

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


def budget_for_run(run_budget: Decimal | float | str | None, daily_budget: Decimal | float | str | None,
                   spent_today: Decimal = ZERO) -> Budget:
    """The budget a run works under: its own cap and what is left of today's, whichever is smaller.

    With a daily cap, the Budget's cap is the daily one and today's spend is `already_spent`; a run budget
    then lowers the cap to today's spend plus the run budget. `Budget.run_cap` is the effective run cap.
    """
    run = None if run_budget is None else check_budget_usd(run_budget, "the run budget")
    if daily_budget is None:
        return Budget(run)
    daily = check_budget_usd(daily_budget, "the daily budget")
    cap = daily if run is None else min(daily, spent_today + run)
    budget = Budget(cap, already_spent=spent_today)
    budget.daily_cap = daily
    return budget


def _usd(value: Decimal) -> str:
    return f"${value.normalize():f}" if value else "$0"


def describe_budget(budget: Budget) -> str:
    """One line for people: the run's cap and where it comes from."""
    if budget.cap is None:
        return "budget: none (no --budget, no daily cap)"
    line = f"budget: {_usd(budget.run_cap)} for this run"
    if budget.daily_cap is not None:
        left = max(ZERO, budget.daily_cap - budget.already_spent)
        line += (f" (daily cap {_usd(budget.daily_cap)}, {_usd(budget.already_spent)} spent today UTC, "
                 f"{_usd(left)} left)")
    return line
