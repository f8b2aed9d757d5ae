"""The daily cap holds with batch jobs open across runs: a property test on the reservation logic.

Each simulated run builds its budget the way flows/pipeline.budget_from_settings does (today's spend plus
the reservations of open jobs, warehouse/jobs.open_reserved_usd, against the daily cap), reserves each
item's worst case (Budget.try_reserve), and submits a job holding what it reserved; jobs are later collected
at any real cost up to their reservation, or put back (failed, expired, cancelled) at no cost; interactive
runs spend in between. Whatever the order, spend plus open reservations never exceed the cap.
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from hypothesis import given, settings, strategies as st

from enrich.budget import budget_for_run
from enrich.warehouse.jobs import COLLECTED, EXPIRED, RUNNING, JobRecord, open_reserved_usd

CAP = Decimal("1.00")
money = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("0.40"), places=3)
fraction = st.decimals(min_value=Decimal(0), max_value=Decimal(1), places=2)
ops = st.one_of(
    st.tuples(st.just("submit"), st.lists(money, min_size=1, max_size=8),
              st.one_of(st.none(), money)),  # items' worst cases, --budget
    st.tuples(st.just("collect"), st.integers(0, 20), fraction),
    st.tuples(st.just("put_back"), st.integers(0, 20), st.just(None)),
    st.tuples(st.just("sync"), st.lists(st.tuples(money, fraction), min_size=1, max_size=5), st.none()),
)


def _job(n: int, reserved: Decimal) -> JobRecord:
    return JobRecord(job_id=f"r-{n}", seq=1, display_name=f"enrich-r-{n}", model="m", run_id="r", input="inline",
                     items=1, keys=(f"k{n}",), enqueued_tokens=0, reserved_usd=reserved, state=RUNNING,
                     created_at=datetime.now(timezone.utc))


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=30))
def test_spend_and_open_reservations_never_exceed_the_daily_cap(steps):
    jobs: list[JobRecord] = []
    spent = Decimal(0)  # what collected rows and interactive rows cost today

    def check() -> None:
        assert spent + open_reserved_usd(jobs) <= CAP

    for op, a, b in steps:
        if op == "submit":
            budget = budget_for_run(b, CAP, spent + open_reserved_usd(jobs))
            reserved = sum((r.amount for w in a if (r := budget.try_reserve(w)) is not None), Decimal(0))
            if reserved:
                jobs.append(_job(len(jobs), reserved))
        elif op in ("collect", "put_back"):
            open_jobs = [i for i, j in enumerate(jobs) if j.open]
            if not open_jobs:
                continue
            i = open_jobs[a % len(open_jobs)]
            if op == "collect":  # a real cost is never above its worst case
                spent += (jobs[i].reserved_usd * b).quantize(Decimal("0.000001"), rounding="ROUND_DOWN")
                jobs[i] = jobs[i].next(state=COLLECTED)
            else:
                jobs[i] = jobs[i].next(state=EXPIRED)
        else:
            budget = budget_for_run(None, CAP, spent + open_reserved_usd(jobs))
            for worst, f in a:
                r = budget.try_reserve(worst)
                if r is not None:
                    actual = (worst * f).quantize(Decimal("0.000001"), rounding="ROUND_DOWN")
                    assert budget.settle(r, actual)
                    spent += actual
        check()
