import asyncio
import random
from decimal import Decimal

from hypothesis import given, settings, strategies as st

from enrich.budget import Budget


def test_a_reservation_that_does_not_fit_is_refused():
    b = Budget("1.00")
    r1 = b.try_reserve(Decimal("0.60"))
    assert r1 is not None
    assert b.try_reserve(Decimal("0.50")) is None  # 0.60 reserved + 0.50 > 1.00
    b.settle(r1, Decimal("0.10"))
    assert b.try_reserve(Decimal("0.50")) is not None  # 0.10 spent + 0.50 fits
    assert b.refused == 1


def test_release_returns_the_reservation():
    b = Budget("1")
    r = b.try_reserve(Decimal("1"))
    b.release(r)
    assert b.remaining() == Decimal("1") and b.spent == 0


def test_peak_reserved_is_tracked():
    b = Budget(None)
    rs = [b.try_reserve(Decimal("0.25")) for _ in range(4)]
    for r in rs:
        b.settle(r, Decimal("0.1"))
    assert b.reserved_peak == Decimal("1.00") and b.spent == Decimal("0.4")


@settings(max_examples=60, deadline=None)
@given(
    cap=st.decimals(min_value="0", max_value="0.05", places=6),
    costs=st.lists(st.tuples(st.integers(0, 2000), st.booleans(), st.integers(0, 3)), min_size=1, max_size=120),
    concurrency=st.integers(1, 64),
    seed=st.integers(0, 2**16),
)
def test_settled_spend_never_exceeds_the_cap_with_concurrency_failures_and_retries(cap, costs, concurrency, seed):
    """Random costs, output lengths, failures, retries and up to 64 concurrent requests."""
    rng = random.Random(seed)
    budget = Budget(cap)
    price_per_token = Decimal("0.000002")
    max_out = 2000
    outcomes: dict[int, str] = {}

    async def one(i: int, out_tokens: int, fails: bool, retries: int) -> None:
        worst = (100 + max_out) * price_per_token
        for attempt in range(retries + 1):
            r = budget.try_reserve(worst)
            if r is None:
                outcomes[i] = "over_budget"
                return
            await asyncio.sleep(rng.random() / 1000)
            if fails and attempt < retries:
                budget.release(r)
                continue
            if fails:
                budget.release(r)
                outcomes[i] = "failed"
                return
            assert budget.settle(r, (100 + out_tokens) * price_per_token)
            outcomes[i] = "ok"
            return

    async def main():
        sem = asyncio.Semaphore(concurrency)

        async def guarded(i, c):
            async with sem:
                await one(i, *c)

        await asyncio.gather(*(guarded(i, c) for i, c in enumerate(costs)))

    asyncio.run(main())
    assert budget.spent <= budget.cap
    assert budget.reserved == 0
    assert len(outcomes) == len(costs)
    assert set(outcomes.values()) <= {"ok", "failed", "over_budget"}
