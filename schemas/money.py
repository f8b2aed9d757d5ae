"""Money as the warehouse stores it: DECIMAL(22,12) (schemas/parquet.py COST_TYPE), 12 places after the point
and 10 before. A budget must fit there: a smaller positive one would be stored as 0 ("no budget" to a reader),
a larger one would not be stored at all."""
from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

SMALLEST_USD = Decimal("1e-12")
LARGEST_USD = Decimal("1e10") - SMALLEST_USD


def check_budget_usd(value: object, what: str = "budget") -> Decimal:
    """A budget as an exact Decimal, or ValueError with a one-line reason: it must be a finite, positive number
    of dollars that the warehouse's DECIMAL(22,12) columns can hold (1e-12 to 9,999,999,999.999999999999)."""
    try:
        amount = Decimal(str(value).strip())
    except (ArithmeticError, ValueError):
        raise ValueError(f"{what} must be a number of US dollars, not {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"{what} must be a finite number of US dollars, not {value!r}")
    if amount <= 0:
        raise ValueError(f"{what} must be positive, not {value!r}")
    if amount < SMALLEST_USD:
        raise ValueError(f"{what} {value!r} is below the smallest amount recorded ($0.000000000001)")
    if amount > LARGEST_USD:
        raise ValueError(f"{what} {value!r} is above the largest amount recorded ($9,999,999,999.99)")
    # never above what the user asked: cut (not round) to the columns' 12 places
    return amount.quantize(SMALLEST_USD, rounding=ROUND_DOWN)
