"""One typed settings object, every setting declared once.

Each field of `Settings` below that is made with `setting(...)` is a registry entry: its default, its type,
its environment variable, its key in enrich.toml and a one-line help, in one place. `load_settings`,
`enrich config`, `enrich config init` and the lower layers' defaults (`default(name)`) are all derived from
that declaration.

Precedence, key by key: command-line flags (`Settings.with_overrides`) > environment > the user config folder
> the packaged defaults (the `enrich.config` package: enrich.toml, prices.toml, prompts.toml).
The user config folder is `$ENRICH_HOME/config/`, or `ENRICH_CONFIG_DIR`, or `enrich --config DIR`; its
files are merged over the packaged ones table by table (a user prices.toml that sets one model's price, or
a prompts.toml that sets one kind's prompt, overrides that entry only).

`ENRICH_HOME` moves all state (warehouse, caches, Prefect's home); tests point it at a tmp dir.
The API key is a `SecretStr`: it never appears in repr(), logs, Parquet, error messages or `enrich config`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import SecretStr

from enrich.errors import ConfigError
from enrich.schemas.money import check_budget_usd

import enrich.config

# The built-in defaults ship inside the package (enrich.config, the repository's config/ folder).
DEFAULT_CONFIG_DIR = Path(enrich.config.__file__).resolve().parent
CONFIG_FILES = ("enrich.toml", "prices.toml", "prompts.toml")
PROGRESS_MODES = ("auto", "bar", "log", "off")

# Source labels (`Settings.sources`, `enrich config`).
DEFAULT, FLAG = "default", "flag"


# ---------------------------------------------------------------------------------------------------------
# TOML files, layered


def load_toml(path: Path) -> dict[str, Any]:
    """The file's tables, {} when it does not exist; a one-line ConfigError naming the file when it is bad."""
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into `base` key by key: tables merge, any other value replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def user_layer(name: str, config_dir: Path) -> tuple[Path, dict[str, Any]]:
    """(path, tables) of the user's copy of config file `name`; {} when it is absent or the folder is the
    packaged one."""
    path = Path(config_dir) / name
    if Path(config_dir).resolve() == DEFAULT_CONFIG_DIR:
        return path, {}
    return path, load_toml(path)


def layered_toml(name: str, config_dir: Path) -> dict[str, Any]:
    """Config file `name`: the packaged defaults with the user's file merged over them, key by key."""
    return deep_merge(load_toml(DEFAULT_CONFIG_DIR / name), user_layer(name, config_dir)[1])


def _get(table: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(table, dict) or key not in table:
            return None
        table = table[key]
    return table


# ---------------------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class RateLimit:
    rpm: int | None  # None: no limit
    tpm: int | None


# Used for a model with no [rate_limits] entry when the config has no [rate_limits.default] either.
FALLBACK_RATE_LIMIT = RateLimit(rpm=1000, tpm=1_000_000)


@dataclass(frozen=True)
class Spec:
    """One setting: the registry entry `setting(...)` declares."""

    name: str
    default: Any
    type: Any  # str, int, float, bool, dict (a table of ints) or RateLimit (a table of {rpm, tpm} tables)
    env: tuple[str, ...]  # environment variables, the first set one wins; () for none
    toml: tuple[str, ...] | None  # its place in enrich.toml, e.g. ("run", "model"); None: not in files
    help: str
    optional: bool = False  # None is a valid value (unset)
    check: Callable[[Any], str | None] | None = None  # returns what is wrong with a value, or None
    secret: bool = False
    flag: str | None = None  # the command-line option that sets it, for error messages

    def where(self) -> str:
        """The TOML key as people write it: `[run] model`."""
        if not self.toml:
            return ""
        *section, key = self.toml
        return f"[{'.'.join(section)}] {key}" if section else key


def setting(default: Any, *, help: str, type: Any = None, env: str | tuple[str, ...] | None = "",
            toml: str | None = None, optional: bool = False, check: Callable[[Any], str | None] | None = None,
            secret: bool = False, flag: str | None = None) -> Any:
    """Declare a setting as a Settings field. env "" means ENRICH_<NAME>; None means no variable."""
    kind = type if type is not None else builtins_type(default)
    meta = {"setting": dict(default=default, type=kind, env=env, toml=tuple(toml.split(".")) if toml else None,
                            help=help, optional=optional or default is None, check=check, secret=secret,
                            flag=flag)}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta, repr=not secret)


def builtins_type(value: Any) -> Any:
    if value is None:
        raise TypeError("a setting whose default is None needs type=")
    return dict if isinstance(value, dict) else value.__class__


def _at_least(n: float) -> Callable[[Any], str | None]:
    return lambda v: None if v is None or v >= n else f"must be at least {n}"


def _positive(v: Any) -> str | None:
    return None if v is None or v > 0 else "must be positive"


def _usd_amount(v: Any) -> str | None:
    """A budget: finite, positive, and an amount the warehouse's money columns can hold (schemas/money.py)."""
    try:
        check_budget_usd(v, "")
    except ValueError as exc:
        return str(exc).strip()
    return None


def _fraction(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be a fraction in [0, 1)"


CONTEXT_FIELDS = ("date", "place", "folder", "keywords")
MEDIA_KINDS = ("image", "audio", "video", "document")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def split_list(value: str | None) -> list[str]:
    """A comma-separated setting as a list (blanks dropped)."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def parse_size(text: str | int) -> int:
    """Bytes in `50MB`, `1.5 GiB`, `800k` or a plain number (decimal units: 1 MB = 1,000,000 bytes)."""
    if isinstance(text, int):
        return text
    import re

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (try 50MB, 2GiB or a number of bytes)")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def _size_problem(v: Any) -> str | None:
    try:
        parse_size(v)
    except ValueError as exc:
        return str(exc)
    return None


def _known_words(value: str, known: tuple[str, ...]) -> str | None:
    unknown = [w for w in split_list(value) if w not in known]
    return f"has {', '.join(unknown)}: the choices are {', '.join(known)}" if unknown else None


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


@dataclass(frozen=True)
class Settings:
    home: Path
    warehouse: Path | str  # a folder, or an object-storage URL (a str, see `warehouse_location`)
    config_dir: Path  # the user config folder (its files override the packaged defaults key by key)

    # [run]
    model: str = setting("gemini-3.1-flash-lite", toml="run.model",
                         help="model id (priced in prices.toml), mlx:<model> or openai:<model>@<base_url>")
    resolution: str = setting("low", toml="run.resolution",
                              help="low | medium | high: media resolution and downscale tier")
    # the profile a run asks for when no --profile is given, and the one the `items` view shows
    profile: str = setting("caption", toml="run.profile",
                           help="default profile: caption, detailed, alt-text, key-facts or one of [profiles.NAME]")
    concurrency: int = setting(64, toml="run.concurrency", check=_at_least(1),
                               help="most requests in flight; adapts down on 429 (the rate limit is the real bound)")
    chunk_size: int = setting(250, toml="run.chunk_size", check=_at_least(1),
                              help="items per Prefect task run and per committed Parquet part")
    max_output_tokens: int = setting(1024, toml="run.max_output_tokens", check=_at_least(1),
                                     help="output token cap per request; also the worst case reserved against a budget")
    max_attempts: int = setting(5, toml="run.max_attempts", check=_at_least(1),
                                help="attempts per item, retryable failures only (429, 5xx, timeouts, garbage 200)")
    request_timeout_s: float = setting(60.0, toml="run.request_timeout_s", check=_positive,
                                       help="seconds one request may take")
    rpm: int | None = setting(None, type=int, toml="run.rpm", check=_at_least(0),
                              help="requests per minute for this run, over [rate_limits] (0 = no limit)")
    tpm: int | None = setting(None, type=int, toml="run.tpm", check=_at_least(0),
                              help="input tokens per minute for this run, over [rate_limits] (0 = no limit)")
    rate_headroom: float = setting(0.02, toml="run.rate_headroom", check=_fraction,
                                   help="pace this fraction under the rate limits (the provider's minute and ours differ)")
    backoff_initial_s: float = setting(1.0, toml="run.backoff_initial_s", check=_at_least(0),
                                       help="first retry after about this long (exponential, with jitter)")
    backoff_max_s: float = setting(60.0, toml="run.backoff_max_s", check=_at_least(0),
                                   help="longest wait between attempts")
    abort_after_failures: int = setting(50, toml="run.abort_after_failures", check=_at_least(1),
                                        help="failed attempts in a row (429 aside) that mean the endpoint is down")
    throttle_quiet_s: float = setting(5.0, toml="run.throttle_quiet_s", check=_at_least(0),
                                      help="after a 429 concurrency halves; it recovers after this long without one")
    stop_grace_s: float = setting(10.0, toml="run.stop_grace_s", check=_at_least(0),
                                  help="on Ctrl-C / SIGTERM, how long requests in flight may take to finish")
    progress: str = setting("auto", toml="run.progress", check=_one_of(*PROGRESS_MODES),
                            help="auto (a bar on a terminal, log lines otherwise) | bar | log | off")
    progress_interval_s: float = setting(15.0, toml="run.progress_interval_s", check=_positive,
                                         help="seconds between progress log lines")
    strip_metadata: bool = setting(True, toml="run.strip_metadata",
                                   help="remove GPS, camera serials, EXIF, tags, PDF Info/XMP before upload")
    max_image_pixels: int = setting(120_000_000, toml="run.max_image_pixels", check=_at_least(1),
                                    help="images with more pixels are refused (decompression bombs)")
    max_decode_pixels: int = setting(150_000_000, toml="run.max_decode_pixels", check=_at_least(1),
                                     help="pixels decoded at once by all preparation threads together")
    max_inflight_bytes: int = setting(256 * 1024 * 1024, toml="run.max_inflight_bytes", check=_at_least(1),
                                      help="media bytes held by prepared and in-flight requests together "
                                      "(one larger file goes alone)")
    prepare_workers: int = setting(0, toml="run.prepare_workers", check=_at_least(0),
                                   help="threads for image preparation; 0 = all cores")
    budget_usd: float | None = setting(None, type=float, toml="run.budget_usd", check=_usd_amount, flag="--budget",
                                       help="a run's spending cap in USD (--budget)")
    context: str = setting("", toml="run.context", check=lambda v: _known_words(v, CONTEXT_FIELDS),
                           help="what goes into the prompt as text, comma-separated: date, place (offline, "
                           "from GPS; never the coordinates), folder, keywords (XMP/IPTC); empty = none")
    sample_seed: int = setting(17, toml="run.sample_seed",
                               help="seed of --sample: the same seed draws the same files")
    sample: int | None = setting(None, type=int, env=None, check=_at_least(1),
                                 help="describe only N files drawn at random from what the run would send (--sample)")
    limit: int | None = setting(None, type=int, env=None, check=_at_least(1),
                                help="describe only the first N files, in walk order, of what the run would send")
    # [select]: which files a run (and an estimate) looks at
    kinds: str = setting("", toml="select.kinds", check=lambda v: _known_words(v, MEDIA_KINDS),
                         help="media kinds to send, comma-separated (image, audio, video, document); empty = all")
    include: str = setting("", toml="select.include",
                           help="only paths matching one of these globs (gitignore syntax, relative to the root; "
                           "comma-separated)")
    exclude: str = setting("", toml="select.exclude",
                           help="leave out paths matching these globs (gitignore syntax, relative to the root; "
                           "comma-separated)")
    hidden: bool = setting(False, toml="select.hidden",
                           help="also look at hidden files and folders (names starting with a dot)")
    max_file_size: str | None = setting(None, type=str, toml="select.max_file_size", check=lambda v: _size_problem(v),
                                        help="leave out files larger than this (e.g. 50MB, 2GiB)")
    # [media]: audio, video, documents
    max_inline_bytes: int = setting(20 * 1024 * 1024, toml="media.max_inline_bytes", check=_at_least(0),
                                    help="media larger than this goes through the Files API, then is deleted")
    max_audio_seconds: float = setting(3600.0, toml="media.max_audio_seconds", check=_positive,
                                       help="longer audio is an error (too_long), or cut with trim_long_media")
    max_video_seconds: float = setting(600.0, toml="media.max_video_seconds", check=_positive,
                                       help="longer video is an error (too_long)")
    max_pdf_pages: int = setting(100, toml="media.max_pdf_pages", check=_positive,
                                 help="PDFs with more pages are an error (too_long)")
    max_text_chars: int = setting(400_000, toml="media.max_text_chars", check=_positive,
                                  help="longer text, Markdown, HTML is an error (too_long), or cut with trim_long_media")
    trim_long_media: bool = setting(False, toml="media.trim_long_media",
                                    help="cut over-long WAV audio and text to the limit instead of refusing them")
    pdf_timeout_s: float = setting(10.0, toml="media.pdf_timeout_s", check=_positive,
                                   help="give up on a PDF whose page tree cannot be read in this time")
    file_active_timeout_s: float = setting(600.0, toml="media.file_active_timeout_s", check=_positive,
                                           help="how long to wait for an uploaded file to become ACTIVE")
    # [batch]: `enrich run --mode batch|flex` (the Gemini Batch API, the Flex service tier)
    mode: str = setting("sync", toml="batch.mode", check=_one_of("sync", "batch", "flex"),
                        help="sync (interactive requests) | batch (Gemini Batch jobs, half price, within 24 h) | "
                        "flex (interactive on the Flex tier, half price, slow)")
    batch_max_items: int = setting(10_000, toml="batch.max_items", check=_at_least(1),
                                   help="most items in one batch job")
    batch_inline_max_bytes: int = setting(20_000_000, toml="batch.inline_max_bytes", check=_at_least(0),
                                          help="a job's requests go inline up to this size, else as a JSONL file")
    batch_poll_initial_s: float = setting(10.0, toml="batch.poll_initial_s", check=_positive,
                                          help="--until-done: first wait between polls of open jobs (doubles)")
    batch_poll_max_s: float = setting(300.0, toml="batch.poll_max_s", check=_positive,
                                      help="--until-done: longest wait between polls")
    batch_keep_hours: float = setting(48.0, toml="batch.keep_hours", check=_positive,
                                      help="a job open or uncollected this long is expired (the provider keeps "
                                      "jobs and results 48 h); its items are sent again")
    flex_timeout_s: float = setting(900.0, toml="batch.flex_timeout_s", check=_positive,
                                    help="--mode flex: seconds one request may take (the tier targets 1-15 min)")
    batch_enqueued_tokens: dict[str, int] = setting(
        {"default": 10_000_000, "gemini-3.8-flash": 3_000_000, "gemini-2.5-flash": 3_000_000}, env=None,
        toml="batch.enqueued_tokens",
        help="input tokens all open batch jobs of a model may hold (the provider's enqueued-token limit; "
        "Tier 1 Flash-Lite about 10 million), per model, with a default entry")
    # [budget]
    daily_budget_usd: float | None = setting(None, type=float, toml="budget.daily_usd", check=_usd_amount,
                                             help="rolling cap per UTC day over all runs, from the warehouse's spend")
    # [gemini]
    base_url: str | None = setting(None, type=str, env="GOOGLE_GEMINI_BASE_URL", toml="gemini.base_url",
                                   help="another Gemini endpoint (e.g. the local emulator)")
    api_version: str = setting("v1beta", toml="gemini.api_version", help="Gemini API version")
    api_key: SecretStr | None = setting(None, type=SecretStr, env=("GOOGLE_API_KEY", "GEMINI_API_KEY"),
                                        secret=True, help="API key for Gemini (environment only; never stored or shown)")
    openai_api_key: SecretStr | None = setting(None, type=SecretStr, env=("ENRICH_OPENAI_API_KEY", "OPENAI_API_KEY"),
                                               secret=True, help="API key for openai: servers, sent as a Bearer "
                                               "token (environment only; never stored or shown)")
    # [estimate]: used until the warehouse has history for a kind and model
    expected_latency_s: float = setting(3.0, toml="estimate.latency_s", check=_positive,
                                        help="seconds per request, until the warehouse knows better")
    expected_output_tokens: dict[str, int] = setting(
        {"image": 200, "audio": 300, "document": 400, "video": 300}, env=None, toml="estimate.output_tokens",
        help="expected output tokens per item, by kind")
    # Long side, in pixels, an image is downscaled to before upload, per --resolution tier. "low" is 500
    # because a 12 MP photo (4000x3000, 4032x3024) then decodes at libjpeg's 1/8 DCT scale, the cheapest
    # decode there is: at 768 it needs 1/4 scale and preparation runs at ~0.56 of the speed
    # (benchmarks/bench_prepare.py). Tokens do not change: Gemini 3 bills LOW media resolution at 280
    # whatever the size, and a 2.x model bills one 768 px tile for either.
    resolution_max_side: dict[str, int] = setting(
        {"low": 500, "medium": 1536, "high": 3072}, env=None, toml="resolution_max_side",
        help="long side an image is downscaled to, per --resolution tier")
    # Per-model limits are data, like prices: the packaged enrich.toml holds them.
    rate_limits: dict[str, RateLimit] = setting({}, type=RateLimit, env=None, toml="rate_limits",
                                                help="requests and input tokens per minute, per model")
    # prompts.toml, per profile and media kind (not a setting: a file of its own): "image" for the detailed
    # profile, "caption.image" for the others (schemas/profiles.py prompt_key)
    prompts: dict[str, str] = field(default_factory=dict)
    # [profiles.NAME] tables of the user's enrich.toml (schemas/profiles.py user_profile reads them)
    user_profiles: dict[str, Any] = field(default_factory=dict, compare=False)
    user_profiles_path: Path | None = field(default=None, compare=False, repr=False)
    # one run's choice (flags, not files): --profile NAME..., --prompt TEXT, --schema SPEC
    run_profiles: tuple[str, ...] = ()
    adhoc_prompt: str | None = None
    adhoc_schema: str | None = None
    # where each setting's value came from: "default", "flag", "env NAME" or "<file> [section] key"
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def max_side(self) -> int:
        return self.resolution_max_side[self.resolution]

    def rate_limit(self, model: str | None = None) -> RateLimit:
        """The model's limits from [rate_limits] (or its "default" entry), with --rpm/--tpm applied."""
        model = model or self.model
        base = self.rate_limits.get(model) or self.rate_limits.get("default") or FALLBACK_RATE_LIMIT
        rpm = base.rpm if self.rpm is None else self.rpm
        tpm = base.tpm if self.tpm is None else self.tpm
        return RateLimit(rpm=rpm or None, tpm=tpm or None)

    def enqueued_token_limit(self, model: str | None = None) -> int:
        """The batch enqueued-token limit of `model` ([batch.enqueued_tokens], else its default entry)."""
        model = model or self.model
        table = self.batch_enqueued_tokens
        return int(table.get(model) or table.get("default") or default("batch_enqueued_tokens")["default"])

    def prompt_for(self, kind: str, profile: str = "detailed") -> str:
        key = kind if profile == "detailed" else f"{profile}.{kind}"
        try:
            return self.prompts[key]
        except KeyError:
            raise ConfigError(f"no prompt for kind {kind!r} of profile {profile} in prompts.toml "
                              f"({DEFAULT_CONFIG_DIR} or {self.config_dir})") from None

    def source(self, name: str) -> str:
        return self.sources.get(name, DEFAULT)

    def with_overrides(self, **changes: Any) -> "Settings":
        """Apply command-line flags (None means 'not given')."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "warehouse" in changes:
            changes["warehouse"] = warehouse_location(changes["warehouse"])
        new = replace(self, **changes, sources={**self.sources, **{k: FLAG for k in changes}})
        new.validate()
        return new

    def validate(self) -> None:
        """Each setting's own check (the message names where the value came from), then the cross-checks."""
        for spec in SETTINGS.values():
            value = getattr(self, spec.name)
            if spec.check is not None and value is not None:
                problem = spec.check(value)
                if problem:
                    raise ConfigError(f"{_origin(spec, self.source(spec.name))}: {spec.name} = {value!r} {problem}")
        if self.resolution not in self.resolution_max_side:
            raise ConfigError(f"{_origin(SETTINGS['resolution'], self.source('resolution'))}: resolution must be "
                              f"one of {', '.join(sorted(self.resolution_max_side))}, not {self.resolution!r}")
        if self.model.startswith("openai:") and "@" in self.model:
            from enrich.urls import credentials_in_url

            why = credentials_in_url(self.model.split("@", 1)[1])
            if why:
                raise ConfigError(f"refusing the openai: endpoint URL because {why}: URLs are stored and printed; "
                                  "put the key in ENRICH_OPENAI_API_KEY (or OPENAI_API_KEY)")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(f"need backoff_initial_s ({self.backoff_initial_s}) <= backoff_max_s "
                              f"({self.backoff_max_s})")


# name -> Spec, in declaration order: THE registry.
SETTINGS: dict[str, Spec] = {}
for _f in dataclasses.fields(Settings):
    if "setting" in _f.metadata:
        _m = dict(_f.metadata["setting"])
        _env = _m.pop("env")
        _m["env"] = () if _env is None else (_env,) if isinstance(_env, str) and _env else \
            (f"ENRICH_{_f.name.upper()}",) if _env == "" else tuple(_env)
        SETTINGS[_f.name] = Spec(name=_f.name, **_m)
del _f, _m, _env


def default(name: str) -> Any:
    """The declared default of setting `name` (lower layers use this, never a copy of the number)."""
    value = SETTINGS[name].default
    return dict(value) if isinstance(value, dict) else value


def _origin(spec: Spec, source: str) -> str:
    """Where a value came from, for error messages."""
    if source == FLAG:
        return spec.flag or "command line"
    if source == DEFAULT:
        return "built-in default"
    return source  # "env NAME" or "<file> [section] key"


# ---------------------------------------------------------------------------------------------------------
# parsing values


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _from_env(spec: Spec, text: str) -> Any:
    if spec.type is SecretStr:
        return SecretStr(text)
    if spec.type is bool:
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError("expected true or false")
    return spec.type(text.strip())


def _from_toml(spec: Spec, value: Any, origin: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{origin} = {value!r} is not valid: expected {expected}")

    kind = spec.type
    if kind is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind is dict:
        if not isinstance(value, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in value.values()):
            raise bad("a table of integers")
        return {**spec.default, **value}
    if kind is RateLimit:
        if not isinstance(value, dict):
            raise bad("a table of [rate_limits.\"model\"] tables")
        out = {}
        for model, entry in value.items():
            if not isinstance(entry, dict) or not all(
                    isinstance(entry.get(k, 0), int) and not isinstance(entry.get(k, 0), bool) for k in ("rpm", "tpm")):
                raise ConfigError(f"{origin}.\"{model}\" = {entry!r} is not valid: expected rpm and tpm integers")
            out[model] = RateLimit(rpm=int(entry.get("rpm", 0)) or None, tpm=int(entry.get("tpm", 0)) or None)
        return out
    raise ConfigError(f"{spec.name} cannot be set in a file")  # pragma: no cover (api_key has no TOML key)


def _check_known_keys(cfg: dict[str, Any], path: Path) -> None:
    """An unknown key in enrich.toml is a typo that would be silently ignored: refuse it."""
    places = {spec.toml for spec in SETTINGS.values() if spec.toml}
    sections = {p[:-1] for p in places}

    def walk(table: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in table.items():
            here = prefix + (key,)
            if here == ("profiles",):  # user profiles: checked by schemas/profiles.py user_profile
                continue
            if here in places:
                continue
            if isinstance(value, dict) and here in sections:
                walk(value, here)
                continue
            where = f"[{'.'.join(prefix)}] {key}" if prefix else key
            raise ConfigError(f"{path}: unknown setting {where} (see `enrich config` for the known ones)")

    walk(cfg, ())


# ---------------------------------------------------------------------------------------------------------
# loading

# `enrich --config DIR` (set by the CLI for the duration of one command; see config_dir_flag)
_FLAG_CONFIG_DIR: Path | None = None


@contextlib.contextmanager
def config_dir_flag(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Use `path` as the user config folder while a command runs (`enrich --config DIR`). It is also put in
    ENRICH_CONFIG_DIR so that processes the command starts (Prefect's flow runs under `serve`) see it."""
    global _FLAG_CONFIG_DIR
    if path is None:
        yield
        return
    resolved = Path(path).expanduser().resolve()
    saved_flag, saved_env = _FLAG_CONFIG_DIR, os.environ.get("ENRICH_CONFIG_DIR")
    _FLAG_CONFIG_DIR = resolved
    os.environ["ENRICH_CONFIG_DIR"] = str(resolved)
    try:
        yield
    finally:
        _FLAG_CONFIG_DIR = saved_flag
        if saved_env is None:
            os.environ.pop("ENRICH_CONFIG_DIR", None)
        else:
            os.environ["ENRICH_CONFIG_DIR"] = saved_env


# Amazon S3 (and S3-compatible stores), Google Cloud Storage, Azure Blob Storage: warehouse/object_stores.py
OBJECT_STORE_SCHEMES = ("s3://", "gs://", "az://")


def is_object_url(location: object) -> bool:
    """True for a warehouse on object storage (`s3://bucket/prefix`, `gs://...`, `az://container/prefix`, kept
    as a str); a folder is a Path."""
    return isinstance(location, str) and location.startswith(OBJECT_STORE_SCHEMES)


def warehouse_location(value: str | os.PathLike[str]) -> Path | str:
    """A warehouse folder (resolved Path) or an object-storage URL, normalised to `SCHEME://bucket[/prefix]`.
    Credentials and endpoint come only from the store's standard environment (AWS_*, GOOGLE_*, AZURE_*): a URL
    carrying any (user info, a port, a query) is refused without echoing it."""
    text = value if isinstance(value, str) else None
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text or "")
    if scheme is None:
        return Path(value).expanduser().resolve()
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(text)
    if scheme.group(1).lower() == "file" and parts.netloc in ("", "localhost"):
        return Path(unquote(parts.path)).expanduser().resolve()
    if not text.startswith(OBJECT_STORE_SCHEMES):
        # s3a://, gcs://, abfss://...: never a folder named "s3a:" under the current directory
        raise ConfigError(f"the warehouse URL scheme {scheme.group(1)}:// is not supported: use a folder, "
                          "s3://bucket/prefix, gs://bucket/prefix or az://container/prefix (for Azure, the "
                          "account comes from AZURE_STORAGE_ACCOUNT_NAME)")
    if "@" in parts.netloc or parts.query or parts.fragment or ":" in parts.netloc:
        raise ConfigError("the warehouse URL must be s3://bucket/prefix, gs://bucket/prefix or "
                          "az://container/prefix with nothing else in it: give credentials and the endpoint in the "
                          "store's environment (AWS environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                          "AWS_ENDPOINT_URL, AWS_REGION; Google: GOOGLE_APPLICATION_CREDENTIALS; Azure: "
                          "AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY)")
    if not parts.netloc:
        raise ConfigError(f"the warehouse URL names no bucket (expected {parts.scheme}://bucket/prefix)")
    prefix = parts.path.strip("/")
    return f"{parts.scheme}://{parts.netloc}" + (f"/{prefix}" if prefix else "")


def resolve_paths(env: dict[str, str]) -> tuple[Path, Path, Path, dict[str, str]]:
    """(home, warehouse, user config folder, their sources)."""
    sources = {}
    home = Path(env.get("ENRICH_HOME") or Path.home() / ".enrich").expanduser().resolve()
    sources["home"] = "env ENRICH_HOME" if env.get("ENRICH_HOME") else DEFAULT
    warehouse = warehouse_location(env.get("ENRICH_WAREHOUSE") or home / "warehouse")
    sources["warehouse"] = "env ENRICH_WAREHOUSE" if env.get("ENRICH_WAREHOUSE") else DEFAULT
    if _FLAG_CONFIG_DIR is not None:
        config_dir, sources["config_dir"] = _FLAG_CONFIG_DIR, FLAG
    elif env.get("ENRICH_CONFIG_DIR"):
        config_dir = Path(env["ENRICH_CONFIG_DIR"]).expanduser().resolve()
        sources["config_dir"] = "env ENRICH_CONFIG_DIR"
    else:
        config_dir, sources["config_dir"] = home / "config", DEFAULT
    return home, warehouse, config_dir, sources


def load_settings(env: dict[str, str] | None = None, *, require_config_dir: bool = True) -> Settings:
    """Settings from the environment, the user config folder and the packaged defaults (flags are applied
    afterwards with `with_overrides`). A config folder named explicitly (--config, ENRICH_CONFIG_DIR) must
    exist unless require_config_dir is False (`enrich config init` creates it)."""
    env = dict(os.environ if env is None else env)
    home, warehouse, config_dir, sources = resolve_paths(env)
    if require_config_dir and sources["config_dir"] != DEFAULT and not config_dir.is_dir():
        how = "--config" if sources["config_dir"] == FLAG else "ENRICH_CONFIG_DIR"
        raise ConfigError(f"config folder not found: {config_dir} ({how}); `enrich config init` creates one")

    packaged_path = DEFAULT_CONFIG_DIR / "enrich.toml"
    packaged = load_toml(packaged_path)
    _check_known_keys(packaged, packaged_path)
    user_path, user = user_layer("enrich.toml", config_dir)
    _check_known_keys(user, user_path)

    merged = deep_merge(packaged, user)
    values: dict[str, Any] = {}
    for spec in SETTINGS.values():
        value, source = spec.default, DEFAULT
        raw = _get(merged, spec.toml) if spec.toml else None
        if raw is not None:
            mine = _get(user, spec.toml) is not None
            value = _from_toml(spec, raw, f"{user_path if mine else packaged_path}: {spec.where()}")
            if mine:
                source = f"{user_path} {spec.where()}"
        for name in spec.env:
            if env.get(name):
                try:
                    value = _from_env(spec, env[name])
                except ValueError:
                    raise ConfigError(f"{name}={env[name]!r} is not valid: expected {spec.type.__name__}") from None
                source = f"env {name}"
                break
        values[spec.name] = value
        if source != DEFAULT:
            sources[spec.name] = source

    prompts_user_path, prompts_user = user_layer("prompts.toml", config_dir)
    prompts: dict[str, str] = {}
    for kind, entry in deep_merge(load_toml(DEFAULT_CONFIG_DIR / "prompts.toml"), prompts_user).items():
        path = prompts_user_path if kind in prompts_user else DEFAULT_CONFIG_DIR / "prompts.toml"
        if isinstance(entry, dict) and "prompt" not in entry and all(isinstance(v, dict) for v in entry.values()):
            for sub, inner in entry.items():  # [caption.image]: a profile's prompt for one kind
                if not isinstance(inner.get("prompt"), str):
                    raise ConfigError(f"{path}: [{kind}.{sub}] prompt must be a string")
                prompts[f"{kind}.{sub}"] = inner["prompt"]
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str):
            raise ConfigError(f"{path}: [{kind}] prompt must be a string")
        prompts[kind] = entry["prompt"]

    user_profiles = user.get("profiles", {})
    if not isinstance(user_profiles, dict):
        raise ConfigError(f"{user_path}: profiles must be tables, [profiles.NAME]")
    settings = Settings(home=home, warehouse=warehouse, config_dir=config_dir, prompts=prompts, sources=sources,
                        user_profiles=user_profiles, user_profiles_path=user_path if user_profiles else None,
                        **values)
    settings.validate()
    return settings


# The downscale tiers as declared (read-only use: tests and the image preparer's default).
RESOLUTION_MAX_SIDE: dict[str, int] = default("resolution_max_side")
