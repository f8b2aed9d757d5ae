"""What an evaluation compares: a configuration is a few keys, written `model=gemini-3.1-flash-lite,resolution=low`.

CONFIG_KEYS maps each key to the Settings field it overrides and a check of its value. Keys a configuration
leaves out take the value the settings give (config/enrich.toml, the environment); `resolve` writes every
key down, so a stored result always says exactly what produced it.

More keys plug in here as the pipeline gains them: a `profile` key (a named prompt/schema profile) and a
`mode` key (sync, batch, flex) are one line each in CONFIG_KEYS once Settings has those fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from enrich.errors import ConfigError

RESOLUTIONS = ("low", "medium", "high")


def _model(value: str) -> str:
    if not value:
        raise ConfigError("model must not be empty")
    return value


def _resolution(value: str) -> str:
    if value not in RESOLUTIONS:
        raise ConfigError(f"resolution must be one of {', '.join(RESOLUTIONS)}, not {value!r}")
    return value


# key -> (Settings field it overrides, check/normaliser of the value)
CONFIG_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "model": ("model", _model),
    "resolution": ("resolution", _resolution),
}


@dataclass(frozen=True)
class EvalConfig:
    """An ordered set of key=value pairs (keys from CONFIG_KEYS)."""

    values: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str | None:
        return dict(self.values).get(key)

    def overrides(self) -> dict[str, Any]:
        """Settings overrides, as `Settings.with_overrides` takes them."""
        return {CONFIG_KEYS[k][0]: v for k, v in self.values}

    def resolve(self, settings: Any) -> "EvalConfig":
        """Every key, the missing ones taken from `settings`, in CONFIG_KEYS order."""
        given = dict(self.values)
        return EvalConfig(tuple((k, str(given.get(k, getattr(settings, field))))
                                for k, (field, _) in CONFIG_KEYS.items()))

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.values)


def parse_config(text: str) -> EvalConfig:
    """`model=M,resolution=R` -> EvalConfig. ConfigError naming the bad part otherwise."""
    values: dict[str, str] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise ConfigError(f"configuration {text!r}: expected key=value, got {part!r} "
                              f"(keys: {', '.join(CONFIG_KEYS)})")
        if key not in CONFIG_KEYS:
            raise ConfigError(f"configuration {text!r}: unknown key {key!r} (keys: {', '.join(CONFIG_KEYS)})")
        if key in values:
            raise ConfigError(f"configuration {text!r}: {key} given twice")
        values[key] = CONFIG_KEYS[key][1](value)
    if not values:
        raise ConfigError(f"empty configuration {text!r} (example: model=gemini-3.1-flash-lite,resolution=low)")
    return EvalConfig(tuple(values.items()))
