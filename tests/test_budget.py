"""The reservation budget: unit rules, run and daily caps, and the real Describer never settling more
than its cap."""
import asyncio
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given, settings, strategies as st

from enrich.backends.base import Capabilities, DescribeResult, MediaPart, Usage
from enrich.budget import Budget, budget_for_run, reserved_input_tokens
from enrich.flows.pipeline import budget_from_settings
from enrich.errors import RetryableError
from enrich.pricing import cost_usd, load_prices, worst_case_usd
from enrich.settings import load_settings
from enrich.schemas.descriptions import ImageDescription
from enrich.tasks.describe import DescribeOptions, Describer, estimated_input_tokens
from enrich.tasks.discover import DiscoveredFile
from enrich.tasks.prepare import PreparedItem
from enrich.tasks.records import RunInfo


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


# -- run budgets: --budget and the rolling daily cap -------------------------------------------------------


def test_the_run_cap_is_the_smaller_of_the_run_budget_and_what_is_left_today():
    assert budget_for_run("1.00", None).run_cap == Decimal("1.00")
    assert budget_for_run(None, None).cap is None
    b = budget_for_run("1.00", "5.00", spent_today=Decimal("4.50"))  # 0.50 left today
    assert b.run_cap == Decimal("0.50") and b.cap == Decimal("5.00") and b.spent == Decimal("4.50")
    assert b.try_reserve(Decimal("0.51")) is None and b.try_reserve(Decimal("0.50")) is not None
    b = budget_for_run("1.00", "5.00", spent_today=Decimal("1.00"))  # the run budget is smaller
    assert b.run_cap == Decimal("1.00") and b.try_reserve(Decimal("1.01")) is None
    assert budget_for_run(None, "5.00", spent_today=Decimal("2")).run_cap == Decimal("3")
    spent_out = budget_for_run("1.00", "5.00", spent_today=Decimal("6"))
    assert spent_out.run_cap == 0 and spent_out.try_reserve(Decimal("0.000001")) is None


def test_fits_when_idle_ignores_what_is_only_reserved():
    b = Budget("1.00")
    r = b.try_reserve(Decimal("0.90"))
    assert b.try_reserve(Decimal("0.50")) is None and b.fits_when_idle(Decimal("0.50"))
    b.settle(r, Decimal("0.60"))
    assert not b.fits_when_idle(Decimal("0.50"))


def test_the_daily_cap_counts_todays_recorded_spend_only(tmp_path):
    from enrich.warehouse.store import Warehouse

    now = datetime.now(timezone.utc)
    rows = [{"run_id": "a", "path": "/x/1.jpg", "status": "ok", "cost_usd": Decimal("0.75"), "finished_at": now},
            {"run_id": "a", "path": "/x/2.jpg", "status": "ok", "cost_usd": Decimal("0.50"),
             "finished_at": now - timedelta(days=1, minutes=1)}]
    Warehouse(tmp_path / "wh").write_results(rows, "a", 1)
    settings = load_settings({"ENRICH_HOME": str(tmp_path), "ENRICH_WAREHOUSE": str(tmp_path / "wh"),
                              "ENRICH_DAILY_BUDGET_USD": "2"})
    b = budget_from_settings(settings.with_overrides(budget_usd=5.0))
    assert b.already_spent == Decimal("0.75") and b.run_cap == Decimal("1.25") and b.daily_cap == Decimal("2")
    assert budget_from_settings(settings.with_overrides(budget_usd=0.25)).run_cap == Decimal("0.25")
    no_daily = load_settings({"ENRICH_HOME": str(tmp_path), "ENRICH_WAREHOUSE": str(tmp_path / "wh")})
    assert no_daily.daily_budget_usd is None and budget_from_settings(no_daily).cap is None


# -- the real Describer with a fake backend ---------------------------------------------------------------

PRICE = load_prices(load_settings().config_dir).price("gemini-3.1-flash-lite")
PROMPT = "Describe this photo."


class FakeBackend:
    """An in-process Backend: random latency, output lengths and retryable failures; bills at most what
    the documented rules say (the reservation's margin is exercised: input up to the estimate + 10%)."""

    name = "fake"
    model = "gemini-3.1-flash-lite"
    capabilities = Capabilities(mime_types=frozenset({"image/jpeg"}), max_inline_bytes=10**9)

    def __init__(self, rng: random.Random, fail_rate: float, max_output: int) -> None:
        self.rng = rng
        self.fail_rate = fail_rate
        self.max_output = max_output  # answers are 0..max_output tokens long
        self.in_flight = 0
        self.max_in_flight = 0
        self.billed = Decimal(0)

    async def preflight(self) -> None:
        return None

    async def describe(self, request) -> DescribeResult:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.rng.random() * 0.002)
            if self.rng.random() < self.fail_rate:
                raise RetryableError("HTTP 503 UNAVAILABLE", kind="http_503")
            estimated = estimated_input_tokens(_item(0), self.model, PROMPT, ImageDescription, "low")[0]
            usage = Usage(input_tokens=self.rng.randint(estimated // 2, int(estimated * 1.1)),
                          output_tokens=self.rng.randint(0, self.max_output))
            self.billed += cost_usd(usage, PRICE)
            return DescribeResult(status="ok", usage=usage, description=ImageDescription(
                caption="c", description="d", tags=[], objects=[], visible_text="", people_count=0,
                setting="unknown"))
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        return None


def _item(i: int) -> PreparedItem:
    file = DiscoveredFile(path=f"/lib/{i}.jpg", size=1, mtime_ns=1, kind="image", mime="image/jpeg",
                          content_hash=f"{i:064x}", status="pending", error_kind=None, error=None)
    return PreparedItem(file=file, media=(MediaPart(mime="image/jpeg", data=b"x"),),
                        media_tokens_hint={"kind": "image", "width": 768, "height": 512})


def _describe(items: int, cap: Decimal | None, concurrency: int, *, rng: random.Random, fail_rate: float = 0.0,
              max_output: int = 400, answers_up_to: int | None = None, chunks: int = 1, max_attempts: int = 3):
    backend = FakeBackend(rng, fail_rate, max_output if answers_up_to is None else answers_up_to)
    run = RunInfo(run_id="t", backend="fake", model=backend.model, resolution="low", price_date="2026-11-28")
    options = DescribeOptions(prompts={"image": PROMPT}, schemas={"image": ImageDescription}, max_output_tokens=max_output,
                              concurrency=concurrency, max_attempts=max_attempts, backoff_initial_s=0.0005,
                              backoff_max_s=0.002, abort_after_failures=10**6)
    budget = Budget(cap)
    describer = Describer(backend, run, PRICE, options, budget=budget)
    try:
        batch = [_item(i) for i in range(items)]
        size = max(1, -(-items // chunks))
        rows = []
        for start in range(0, items, size):  # chunks share the describer, as chunk tasks do
            rows += describer.describe_batch(batch[start:start + size])
    finally:
        describer.close()
    return rows, budget, backend


def _worst_case() -> Decimal:
    estimated = estimated_input_tokens(_item(0), PRICE.model, PROMPT, ImageDescription, "low")[0]
    return worst_case_usd(reserved_input_tokens(estimated), 400, PRICE)


@settings(max_examples=40, deadline=None)
@given(
    items=st.integers(1, 120),
    cap_in_worst_cases=st.decimals(min_value="0", max_value="40", places=3),
    concurrency=st.integers(1, 64),
    fail_rate=st.sampled_from([0.0, 0.1, 0.4, 0.9]),
    max_output=st.integers(1, 2000),
    chunks=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_the_describer_never_settles_more_than_the_cap_and_every_item_ends_once(
        items, cap_in_worst_cases, concurrency, fail_rate, max_output, chunks, seed):
    """The real Describer with random latency, output lengths, 503s and retries at up to 64 concurrency."""
    estimated = estimated_input_tokens(_item(0), PRICE.model, PROMPT, ImageDescription, "low")[0]
    worst = worst_case_usd(reserved_input_tokens(estimated), max_output, PRICE)
    cap = (worst * cap_in_worst_cases).quantize(Decimal("0.000000000001"))
    rows, budget, backend = _describe(items, cap, concurrency, rng=random.Random(seed), fail_rate=fail_rate,
                                      max_output=max_output, chunks=chunks)
    assert len(rows) == items and len({r["path"] for r in rows}) == items
    assert {r["status"] for r in rows} <= {"ok", "error", "over_budget"}
    recorded = sum((r["cost_usd"] for r in rows), Decimal(0))
    assert recorded == budget.spent == backend.billed  # every billed answer is recorded, nothing else
    assert budget.spent <= cap
    assert budget.reserved == 0 and budget.overruns == 0
    assert backend.max_in_flight <= concurrency
    if any(r["status"] == "over_budget" for r in rows):
        # nothing was given up while it could still fit: spend went up to the cap
        assert cap - budget.spent < worst


def test_items_wait_for_requests_in_flight_instead_of_being_refused_early():
    """A cap of two worst cases, 16 at once: answers far shorter than max_output_tokens cost a fraction of
    their reservation, so after the first two settle there is room for more."""
    worst = _worst_case()
    rows, budget, _ = _describe(16, 2 * worst, 16, rng=random.Random(1), max_output=400, answers_up_to=40)
    ok = sum(r["status"] == "ok" for r in rows)
    assert ok >= 5, [r["status"] for r in rows]  # refusing early would finish 2
    assert budget.spent <= 2 * worst and budget.reserved_peak <= 2 * worst


def test_without_a_cap_every_item_is_described():
    rows, budget, _ = _describe(30, None, 8, rng=random.Random(2))
    assert [r["status"] for r in rows] == ["ok"] * 30 and budget.refused == 0


def test_the_daily_cap_comes_from_config_and_the_environment_wins(tmp_path):
    (tmp_path / "enrich.toml").write_text("[budget]\ndaily_usd = 3.5\n")
    env = {"ENRICH_HOME": str(tmp_path), "ENRICH_CONFIG_DIR": str(tmp_path)}
    assert load_settings(env).daily_budget_usd == 3.5
    assert load_settings({**env, "ENRICH_DAILY_BUDGET_USD": "1.25"}).daily_budget_usd == 1.25
    (tmp_path / "enrich.toml").write_text("[run]\nmodel = 'gemini-3.1-flash-lite'\n")
    assert load_settings(env).daily_budget_usd is None
