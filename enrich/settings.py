"""One typed settings object. Precedence: environment > config/*.toml > built-in defaults.

`ENRICH_HOME` moves all state (warehouse, caches, Prefect's home); tests point it at a tmp dir.
`ENRICH_CONFIG_DIR` points at another config folder (defaults to the project's `config/`).
The API key is a `SecretStr`: it never appears in repr(), logs, Parquet or error messages.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from enrich.errors import ConfigError

import enrich.config

# The built-in defaults ship inside the package (enrich.config, the repository's config/ folder).
DEFAULT_CONFIG_DIR = Path(enrich.config.__file__).resolve().parent


def _load_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


# Expected output tokens per item when the warehouse has no history for a kind and model yet
# (config/enrich.toml [estimate.output_tokens] overrides them).
DEFAULT_OUTPUT_TOKENS = {"image": 200, "audio": 300, "document": 400, "video": 300}

# Long side, in pixels, an image is downscaled to before upload, per --resolution tier
# (config/enrich.toml [resolution_max_side] overrides them). "low" is 500 because a 12 MP photo
# (4000x3000, 4032x3024) then decodes at libjpeg's 1/8 DCT scale, the cheapest decode there is: at
# 768 it needs 1/4 scale and preparation runs at ~0.56 of the speed (benchmarks/bench_prepare.py).
# Tokens do not change: Gemini 3 bills LOW media resolution at 280 whatever the size, and a 2.x
# model bills one 768 px tile for either.
RESOLUTION_MAX_SIDE = {"low": 500, "medium": 1536, "high": 3072}

PROGRESS_MODES = ("auto", "bar", "log", "off")


@dataclass(frozen=True)
class RateLimit:
    rpm: int | None  # None: no limit
    tpm: int | None


@dataclass(frozen=True)
class Settings:
    home: Path
    warehouse: Path
    config_dir: Path
    model: str = "gemini-3.1-flash-lite"
    resolution: str = "low"
    concurrency: int = 64  # the most requests in flight; the rate limit is what should bound a run
    chunk_size: int = 250  # per-chunk costs (task run, part write) over 250 items: ~0.1 ms an item less than 100
    max_output_tokens: int = 1024
    max_attempts: int = 5
    request_timeout_s: float = 60.0
    rpm: int | None = None  # overrides [rate_limits] for this run (--rpm); 0 = no limit
    tpm: int | None = None  # input tokens per minute (--tpm); 0 = no limit
    rate_headroom: float = 0.02  # pace this fraction under the limits: the provider's window and ours differ
    backoff_initial_s: float = 1.0  # first retry after about this long (exponential, with jitter)
    backoff_max_s: float = 60.0
    abort_after_failures: int = 50  # consecutive failed attempts (429 aside) that mean the endpoint is down
    throttle_quiet_s: float = 5.0  # concurrency recovers only after this long without a 429
    stop_grace_s: float = 10.0  # on Ctrl-C/SIGTERM, how long requests in flight may take to finish
    progress: str = "auto"  # auto (bar on a terminal, log lines otherwise) | bar | log | off
    progress_interval_s: float = 15.0  # seconds between progress log lines
    strip_metadata: bool = True
    max_image_pixels: int = 120_000_000
    max_decode_pixels: int = 150_000_000  # pixels decoded at once by all preparation threads together
    max_inflight_bytes: int = 256 * 1024 * 1024  # media bytes held by prepared and in-flight requests together
    prepare_workers: int = 0
    base_url: str | None = None
    api_version: str = "v1beta"
    api_key: SecretStr | None = field(default=None, repr=False)
    openai_api_key: SecretStr | None = field(default=None, repr=False)  # ENRICH_OPENAI_API_KEY, else OPENAI_API_KEY
    budget_usd: float | None = None
    daily_budget_usd: float | None = None  # rolling cap per UTC day, counted from the warehouse's spend
    # estimates before any history exists: expected output tokens per item, by kind; request latency
    expected_output_tokens: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_OUTPUT_TOKENS))
    expected_latency_s: float = 3.0
    resolution_max_side: dict[str, int] = field(default_factory=lambda: dict(RESOLUTION_MAX_SIDE))
    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    # audio, video, documents ([media] in config/enrich.toml)
    max_inline_bytes: int = 20 * 1024 * 1024  # media above this goes through the Files API
    max_audio_seconds: float = 3600.0
    max_video_seconds: float = 600.0
    max_pdf_pages: int = 100
    max_text_chars: int = 400_000
    trim_long_media: bool = False  # over-long WAV audio and text are cut to the limit instead of refused
    pdf_timeout_s: float = 10.0  # reading a PDF's page tree; pathological files give up after this
    file_active_timeout_s: float = 600.0  # waiting for an uploaded file to become ACTIVE

    @property
    def max_side(self) -> int:
        return self.resolution_max_side[self.resolution]

    def rate_limit(self, model: str | None = None) -> RateLimit:
        """The model's limits from [rate_limits] (or its "default" entry), with --rpm/--tpm applied."""
        model = model or self.model
        base = self.rate_limits.get(model) or self.rate_limits.get("default") or RateLimit(rpm=1000, tpm=1_000_000)
        rpm = base.rpm if self.rpm is None else self.rpm
        tpm = base.tpm if self.tpm is None else self.tpm
        return RateLimit(rpm=rpm or None, tpm=tpm or None)

    def prompt_for(self, kind: str) -> str:
        try:
            return self.prompts[kind]
        except KeyError:
            raise ConfigError(f"no prompt for kind {kind!r} in {self.config_dir / 'prompts.toml'}") from None

    def with_overrides(self, **changes: Any) -> "Settings":
        """Apply command-line flags (None means 'not given')."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "warehouse" in changes:
            changes["warehouse"] = Path(changes["warehouse"]).expanduser().resolve()
        new = replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        if self.resolution not in self.resolution_max_side:
            raise ConfigError(f"resolution must be one of {sorted(self.resolution_max_side)}, not {self.resolution!r}")
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if self.chunk_size < 1:
            raise ConfigError("chunk_size must be at least 1")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if self.budget_usd is not None and self.budget_usd < 0:
            raise ConfigError("budget must not be negative")
        if self.max_decode_pixels < 1 or self.max_inflight_bytes < 1:
            raise ConfigError("max_decode_pixels and max_inflight_bytes must be positive")
        if self.max_inline_bytes < 0:
            raise ConfigError("max_inline_bytes must not be negative")
        if min(self.max_audio_seconds, self.max_video_seconds, self.max_pdf_pages, self.max_text_chars) <= 0:
            raise ConfigError("media limits (max_audio_seconds, max_video_seconds, max_pdf_pages, max_text_chars) "
                              "must be positive")
        if self.daily_budget_usd is not None and self.daily_budget_usd < 0:
            raise ConfigError("the daily budget must not be negative")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must not be negative (0 means no limit)")
        if not 0 <= self.rate_headroom < 1:
            raise ConfigError("rate_headroom must be a fraction in [0, 1)")
        if self.backoff_initial_s < 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError("need 0 <= backoff_initial_s <= backoff_max_s")
        if self.abort_after_failures < 1:
            raise ConfigError("abort_after_failures must be at least 1")
        if self.stop_grace_s < 0 or self.throttle_quiet_s < 0 or self.request_timeout_s <= 0:
            raise ConfigError("stop_grace_s and throttle_quiet_s must not be negative, request_timeout_s positive")
        if self.model.startswith("openai:") and "@" in self.model:
            from enrich.urls import credentials_in_url

            why = credentials_in_url(self.model.split("@", 1)[1])
            if why:
                raise ConfigError(f"refusing the openai: endpoint URL because {why}: URLs are stored and printed; "
                                  "put the key in ENRICH_OPENAI_API_KEY (or OPENAI_API_KEY)")
        if self.progress not in PROGRESS_MODES:
            raise ConfigError(f"progress must be one of {', '.join(PROGRESS_MODES)}, not {self.progress!r}")


def _env_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_or(env: dict[str, str], name: str, configured: Any, cast) -> Any:
    """The environment variable if set, else the configured value (either cast), else None."""
    value = env.get(name) or configured
    if value is None or value == "":
        return None
    try:
        return cast(value)
    except ValueError:
        raise ConfigError(f"{name if env.get(name) else 'config'}={value!r} is not valid") from None


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    home = Path(env.get("ENRICH_HOME") or Path.home() / ".enrich").expanduser().resolve()
    config_dir = Path(env.get("ENRICH_CONFIG_DIR") or DEFAULT_CONFIG_DIR).expanduser().resolve()
    cfg = _load_toml(config_dir / "enrich.toml")
    run = cfg.get("run", {})
    media = cfg.get("media", {})
    gemini = cfg.get("gemini", {})
    budget = cfg.get("budget", {})
    estimate = cfg.get("estimate", {})
    prompts = {kind: entry["prompt"] for kind, entry in _load_toml(config_dir / "prompts.toml").items()}
    rate_limits = {
        name: RateLimit(rpm=int(v.get("rpm", 0)) or None, tpm=int(v.get("tpm", 0)) or None)
        for name, v in cfg.get("rate_limits", {}).items()
    }

    as_bool = lambda v: v if isinstance(v, bool) else _env_bool(v)  # noqa: E731

    def picker(section: dict[str, Any], name: str):
        """env variable > the config section's key > default, cast, with a readable error either way."""
        def pick(env_name: str, key: str, default: Any, cast=lambda v: v) -> Any:
            source, value = (env_name, env[env_name]) if env.get(env_name) else (f"[{name}] {key}", section.get(key))
            if value is None:
                return default
            try:
                return cast(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{source}={value!r} is not valid") from None
        return pick

    pick, pick_media = picker(run, "run"), picker(media, "media")

    # GOOGLE_API_KEY wins over GEMINI_API_KEY, as in the google-genai SDK.
    key = env.get("GOOGLE_API_KEY") or env.get("GEMINI_API_KEY")
    openai_key = env.get("ENRICH_OPENAI_API_KEY") or env.get("OPENAI_API_KEY")
    settings = Settings(
        home=home,
        warehouse=Path(env.get("ENRICH_WAREHOUSE") or home / "warehouse").expanduser().resolve(),
        config_dir=config_dir,
        model=pick("ENRICH_MODEL", "model", "gemini-3.1-flash-lite", str),
        resolution=pick("ENRICH_RESOLUTION", "resolution", "low", str),
        concurrency=pick("ENRICH_CONCURRENCY", "concurrency", 64, int),
        chunk_size=pick("ENRICH_CHUNK_SIZE", "chunk_size", 250, int),
        max_output_tokens=pick("ENRICH_MAX_OUTPUT_TOKENS", "max_output_tokens", 1024, int),
        max_attempts=pick("ENRICH_MAX_ATTEMPTS", "max_attempts", 5, int),
        request_timeout_s=pick("ENRICH_REQUEST_TIMEOUT_S", "request_timeout_s", 60.0, float),
        rpm=pick("ENRICH_RPM", "rpm", None, int),
        tpm=pick("ENRICH_TPM", "tpm", None, int),
        rate_headroom=pick("ENRICH_RATE_HEADROOM", "rate_headroom", 0.02, float),
        backoff_initial_s=pick("ENRICH_BACKOFF_INITIAL_S", "backoff_initial_s", 1.0, float),
        backoff_max_s=pick("ENRICH_BACKOFF_MAX_S", "backoff_max_s", 60.0, float),
        abort_after_failures=pick("ENRICH_ABORT_AFTER_FAILURES", "abort_after_failures", 50, int),
        throttle_quiet_s=pick("ENRICH_THROTTLE_QUIET_S", "throttle_quiet_s", 5.0, float),
        stop_grace_s=pick("ENRICH_STOP_GRACE_S", "stop_grace_s", 10.0, float),
        progress=pick("ENRICH_PROGRESS", "progress", "auto", str),
        progress_interval_s=pick("ENRICH_PROGRESS_INTERVAL_S", "progress_interval_s", 15.0, float),
        strip_metadata=pick("ENRICH_STRIP_METADATA", "strip_metadata", True, as_bool),
        max_image_pixels=pick("ENRICH_MAX_IMAGE_PIXELS", "max_image_pixels", 120_000_000, int),
        max_decode_pixels=pick("ENRICH_MAX_DECODE_PIXELS", "max_decode_pixels", 150_000_000, int),
        max_inflight_bytes=pick("ENRICH_MAX_INFLIGHT_BYTES", "max_inflight_bytes", 256 * 1024 * 1024, int),
        prepare_workers=pick("ENRICH_PREPARE_WORKERS", "prepare_workers", 0, int),
        base_url=env.get("GOOGLE_GEMINI_BASE_URL") or gemini.get("base_url"),
        api_version=gemini.get("api_version", "v1beta"),
        api_key=SecretStr(key) if key else None,
        openai_api_key=SecretStr(openai_key) if openai_key else None,
        budget_usd=pick("ENRICH_BUDGET_USD", "budget_usd", None, float),
        daily_budget_usd=_env_or(env, "ENRICH_DAILY_BUDGET_USD", budget.get("daily_usd"), float),
        expected_output_tokens={**DEFAULT_OUTPUT_TOKENS,
                                **{k: int(v) for k, v in estimate.get("output_tokens", {}).items()}},
        expected_latency_s=float(estimate.get("latency_s", 3.0)),
        resolution_max_side={k: int(v) for k, v in cfg.get("resolution_max_side", {}).items()}
        or dict(RESOLUTION_MAX_SIDE),
        rate_limits=rate_limits,
        prompts=prompts,
        max_inline_bytes=pick_media("ENRICH_MAX_INLINE_BYTES", "max_inline_bytes", 20 * 1024 * 1024, int),
        max_audio_seconds=pick_media("ENRICH_MAX_AUDIO_SECONDS", "max_audio_seconds", 3600.0, float),
        max_video_seconds=pick_media("ENRICH_MAX_VIDEO_SECONDS", "max_video_seconds", 600.0, float),
        max_pdf_pages=pick_media("ENRICH_MAX_PDF_PAGES", "max_pdf_pages", 100, int),
        max_text_chars=pick_media("ENRICH_MAX_TEXT_CHARS", "max_text_chars", 400_000, int),
        trim_long_media=pick_media("ENRICH_TRIM_LONG_MEDIA", "trim_long_media", False, as_bool),
        pdf_timeout_s=pick_media("ENRICH_PDF_TIMEOUT_S", "pdf_timeout_s", 10.0, float),
        file_active_timeout_s=pick_media("ENRICH_FILE_ACTIVE_TIMEOUT_S", "file_active_timeout_s", 600.0, float),
    )
    settings.validate()
    return settings
