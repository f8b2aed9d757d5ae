from decimal import Decimal
from pathlib import Path

import pytest

from enrich.backends.base import Usage
from enrich.errors import ConfigError
from enrich.pricing import cost_usd, load_prices, worst_case_usd
from enrich.settings import DEFAULT_CONFIG_DIR


@pytest.fixture
def prices():
    return load_prices(DEFAULT_CONFIG_DIR)


def test_price_table_carries_its_date_and_source(prices):
    assert prices.date == "2026-11-28"
    assert "genai-prices" in prices.source


def test_default_model_has_a_price():
    import tomllib

    default = tomllib.loads((DEFAULT_CONFIG_DIR / "enrich.toml").read_text())["run"]["model"]
    assert load_prices(DEFAULT_CONFIG_DIR).price(default).output > 0


def test_the_2024_figure_reproduces_with_flash_8b(prices):
    # DEVELOPERS.md: 68,000 photos x (260 in + 100 out) on gemini-1.5-flash-8b ~ $1.68
    one = cost_usd(Usage(input_tokens=260, output_tokens=100), prices.price("gemini-1.5-flash-8b"))
    assert one * 68_000 == Decimal("1.683")


def test_thinking_is_billed_as_output_and_audio_at_audio_rate(prices):
    p = prices.price("gemini-3.1-flash-lite")
    usage = Usage(input_tokens=1000, output_tokens=100, thinking_tokens=50, input_by_modality={"AUDIO": 800, "TEXT": 200})
    expected = (Decimal(200) * Decimal("0.25") + Decimal(800) * Decimal("0.50") + Decimal(150) * Decimal("1.50")) / Decimal(10**6)
    assert cost_usd(usage, p) == expected


def test_cached_tokens_are_billed_at_cache_rate(prices):
    p = prices.price("gemini-3.1-flash-lite")
    usage = Usage(input_tokens=1000, cached_tokens=400)
    assert cost_usd(usage, p) == (Decimal(600) * Decimal("0.25") + Decimal(400) * Decimal("0.025")) / Decimal(10**6)


def test_batch_mode_halves_the_cost(prices):
    p = prices.price("gemini-3.1-flash-lite")
    usage = Usage(input_tokens=300, output_tokens=120)
    assert cost_usd(usage, p, batch=True) * 2 == cost_usd(usage, p)


def test_local_models_cost_zero_from_the_table_not_from_code(prices):
    assert cost_usd(Usage(input_tokens=10_000, output_tokens=500), prices.price("mlx:/models/smolvlm")) == 0
    assert prices.price("openai:qwen@http://127.0.0.1:8000/v1").family == "local"


def test_unknown_model_has_no_price(prices):
    with pytest.raises(ConfigError, match="no price for model"):
        prices.price("gpt-9")


def test_worst_case_is_never_below_a_real_cost(prices):
    p = prices.price("gemini-3.1-flash-lite")
    for inp, out in [(300, 1024), (300, 0), (50_000, 1)]:
        assert cost_usd(Usage(input_tokens=inp, output_tokens=out), p) <= worst_case_usd(inp, 1024, p)


def test_a_price_table_without_date_is_rejected(tmp_path: Path):
    (tmp_path / "prices.toml").write_text('[meta]\nsource = "x"\n[models."m"]\ninput = 1\noutput = 1\n')
    with pytest.raises(ConfigError, match="date"):
        load_prices(tmp_path)
