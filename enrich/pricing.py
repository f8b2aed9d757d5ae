"""The price table (config/prices.toml) and the one function that turns usage into dollars.

Money is Decimal end to end: a float would drift when thousands of tiny costs are summed against a budget.
"""
from __future__ import annotations

import fnmatch
import tomllib
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
    path = Path(config_dir) / "prices.toml"
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"price table not found: {path}") from None
    meta = raw.get("meta", {})
    if not meta.get("date") or not meta.get("source"):
        raise ConfigError(f"{path}: [meta] must give the table's date and source")
    models = {}
    for name, entry in raw.get("models", {}).items():
        models[name] = ModelPrice(
            model=name,
            input=_dec(entry["input"]),
            input_audio=_dec(entry.get("input_audio", entry["input"])),
            output=_dec(entry["output"]),
            cached_input=_dec(entry.get("cached_input", entry["input"])),
            batch_factor=_dec(entry.get("batch_factor", 1)),
            family=entry.get("family", "unknown"),
        )
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
