"""The price table (config/prices.toml) and the one function that turns usage into dollars.

Money is Decimal end to end: a float would drift when thousands of tiny costs are summed against a budget.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from enrich.backends.base import Usage
from enrich.errors import ConfigError

PER_TOKEN = Decimal(1) / Decimal(1_000_000)
# Parquet stores cost as decimal128(22, 12): exact to a millionth of a micro-dollar.
COST_SCALE = Decimal("0.000000000001")


@dataclass(frozen=True)
class ModelPrice:
    model: str
    input: Decimal  # USD per 1M tokens
    input_audio: Decimal
    output: Decimal
    cached_input: Decimal
    batch_factor: Decimal
    family: str


@dataclass(frozen=True)
class PriceTable:
    date: str
    source: str
    models: dict[str, ModelPrice]

    def price(self, model: str) -> ModelPrice:
        if model in self.models:
            return self.models[model]
        for pattern, price in self.models.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(model, pattern):
                return price
        raise ConfigError(
            f"no price for model {model!r} in prices.toml (known: {', '.join(sorted(self.models))}); "
            "add one before spending money on it"
        )


def _dec(value: object) -> Decimal:
    return Decimal(str(value))


@lru_cache(maxsize=8)
def load_prices(config_dir: Path) -> PriceTable:
    """The packaged price table with the user's prices.toml (in `config_dir`) merged over it, model by model
    and key by key. A user file that sets prices must give its own [meta] date: every row records the date
    of the table that priced it."""
    from enrich.settings import DEFAULT_CONFIG_DIR, deep_merge, load_toml, user_layer

    packaged_path = DEFAULT_CONFIG_DIR / "prices.toml"
    packaged = load_toml(packaged_path)
    if not packaged:
        raise ConfigError(f"price table not found: {packaged_path}")
    user_path, user = user_layer("prices.toml", Path(config_dir))
    user_meta = user.get("meta", {})
    if user.get("models") and not user_meta.get("date"):
        raise ConfigError(f"{user_path}: [meta] date is required when the file sets prices "
                          "(the date your prices were checked; every row records it)")
    raw = deep_merge(packaged, user)
    meta = raw.get("meta", {})
    path = user_path if user_meta else packaged_path
    if not meta.get("date") or not meta.get("source"):
        raise ConfigError(f"{path}: [meta] must give the table's date and source")
    if user.get("models") and not user_meta.get("source"):
        meta = {**meta, "source": f"{user_path} over {meta['source']}"}
    models = {}
    for name, entry in raw.get("models", {}).items():
        where = user_path if name in user.get("models", {}) else packaged_path
        try:
            models[name] = ModelPrice(
                model=name,
                input=_dec(entry["input"]),
                input_audio=_dec(entry.get("input_audio", entry["input"])),
                output=_dec(entry["output"]),
                cached_input=_dec(entry.get("cached_input", entry["input"])),
                batch_factor=_dec(entry.get("batch_factor", 1)),
                family=entry.get("family", "unknown"),
            )
        except KeyError as exc:
            raise ConfigError(f"{where}: [models.\"{name}\"] needs {exc.args[0]}") from None
        except (ArithmeticError, TypeError, ValueError, AttributeError):
            raise ConfigError(f"{where}: [models.\"{name}\"] prices must be numbers") from None
        if min(models[name].input, models[name].output, models[name].input_audio, models[name].cached_input) < 0:
            raise ConfigError(f"{where}: [models.\"{name}\"] prices must not be negative")
    return PriceTable(date=str(meta["date"]), source=str(meta["source"]), models=models)


def cost_usd(usage: Usage, price: ModelPrice, *, batch: bool = False) -> Decimal:
    """Dollar cost of one response from its usage metadata (documented billing rule)."""
    audio = min(usage.input_by_modality.get("AUDIO", 0), usage.input_tokens)
    cached = min(usage.cached_tokens, usage.input_tokens - audio)
    other = usage.input_tokens - audio - cached
    total = (
        other * price.input
        + audio * price.input_audio
        + cached * price.cached_input
        + (usage.output_tokens + usage.thinking_tokens) * price.output
    ) * PER_TOKEN
    if batch:
        total *= price.batch_factor
    return total.quantize(COST_SCALE)


def worst_case_usd(input_tokens: int, max_output_tokens: int, price: ModelPrice, *, audio_tokens: int = 0,
                   batch: bool = False) -> Decimal:
    """What one request can cost at most: its known input plus a full max_output_tokens answer.

    Audio is priced at the higher of the two input rates, so a wrong modality split can only over-reserve.
    """
    worst_input_rate = max(price.input, price.input_audio)
    total = (
        (input_tokens - audio_tokens) * price.input
        + audio_tokens * worst_input_rate
        + max_output_tokens * price.output
    ) * PER_TOKEN
    if batch:
        total *= price.batch_factor
    return total.quantize(COST_SCALE)
