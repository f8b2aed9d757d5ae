"""What a run would cost and how long it would take, before anything is sent.

Scans like `enrich run` (same discovery, without hashing) but reads only headers: an image's size from its
header, never its pixels. Input tokens follow the documented rules in enrich/tokens.py for what the pipeline
actually sends: the media as prepared (images downscaled to the resolution's max side), plus the prompt and
the response schema, which go with every request. Expected output tokens come from earlier ok rows in the
warehouse (median per kind and model) when there are any, else from config/enrich.toml.

Plain functions: no Prefect, no network, no pixel decoding.

Per-kind header probing is a registry (`KIND_ESTIMATORS`): a kind without an entry is counted and reported
as not estimated, never silently dropped. Adding audio, documents or video means adding one entry.
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from enrich.schemas.vocab import ErrorKind, MediaKind
from enrich.backends.base import Usage
from enrich.budget import reserved_input_tokens
from enrich.errors import MediaError
from enrich.pricing import cost_usd, load_prices, worst_case_usd
from enrich.schemas.profiles import DETAILED
from enrich.settings import Settings
from enrich.tokens import family_of, image_tokens, prompt_tokens, system_tokens
from enrich.tasks.discover import DiscoveredFile, discover, own_state_dirs
from enrich.tasks.selection import Selection, trial_pick

if TYPE_CHECKING:
    from enrich.tasks.media_info import MediaLimits

# Files probed per thread-pool task: a future per file costs more than reading one small header.
PROBE_BATCH = 32
DEFAULT_WORKERS = 4  # header reads are I/O: threads overlap them on a cold disk or a network share


@dataclass(frozen=True)
class EstimateOptions:
    """What a kind estimator needs to know about the run."""

    model: str
    resolution: str  # low | medium | high
    max_side: int  # images are downscaled to this long side before upload
    max_pixels: int  # images above this are refused by the pipeline (too_large), so not billed
    limits: "MediaLimits | None" = None  # audio/video/document limits: over them a file is refused, not billed


@dataclass(frozen=True)
class MediaTokens:
    """Input tokens of one item's media parts (prompt and schema are added per kind), of which audio."""

    input_tokens: int
    audio_tokens: int = 0


KindEstimator = Callable[[DiscoveredFile, EstimateOptions], MediaTokens]


def estimate_image(file: DiscoveredFile, opts: EstimateOptions) -> MediaTokens:
    """Tokens of the image as uploaded: downscaled to opts.max_side (Gemini 2.x tiles the uploaded size)."""
    from enrich.tasks.prepare_image import read_image_size, uploaded_size

    width, height = read_image_size(file.path, max_pixels=opts.max_pixels)
    width, height = uploaded_size(width, height, opts.max_side)
    return MediaTokens(image_tokens(opts.model, width, height, opts.resolution))


def estimate_media(file: DiscoveredFile, opts: EstimateOptions) -> MediaTokens:
    """Audio, video and documents: duration, pages or characters from the header (tasks/media_info.py),
    the same limits and trimming the preparer applies, then the documented token rules."""
    from enrich.tasks.media_info import MediaLimits, apply_limits, media_tokens, probe

    limits = opts.limits or MediaLimits()
    info = probe(file.path, file.kind, file.mime, pdf_timeout_s=limits.pdf_timeout_s)
    if info is None:
        raise MediaError(f"cannot read the {file.kind} header", kind=ErrorKind.CORRUPT)
    info = apply_limits(info, limits)  # raises MediaError(too_long) for a file the run would refuse
    tokens, audio = media_tokens(info, opts.model, opts.resolution)
    # only audio files are billed at the audio rate; a video's soundtrack is part of its video tokens
    return MediaTokens(tokens, audio if info.get("kind") == "audio" else 0)


# kind -> header probe. A probe raises MediaError for a file the pipeline would refuse (not billed).
KIND_ESTIMATORS: dict[str, KindEstimator] = {
    MediaKind.IMAGE: estimate_image,
    MediaKind.AUDIO: estimate_media,
    MediaKind.VIDEO: estimate_media,
    MediaKind.DOCUMENT: estimate_media,
}


@dataclass
class KindEstimate:
    kind: str
    profile: str = ""
    items: int = 0
    media_tokens: int = 0  # the media's own input tokens, all items
    overhead_tokens: int = 0  # prompt + schema tokens of one request (schemas/profiles.py token diet)
    system_tokens: int = 0  # + the untrusted-content system instruction (documents only), per request
    input_tokens: int = 0  # media + prompt + schema, all items
    audio_tokens: int = 0
    reserved_input_tokens: int = 0  # what budget reservations and the TPM limiter count
    worst_case_usd: Decimal = Decimal(0)  # sum of the reservations: a budget this big leaves nothing over
    output_tokens_per_item: int = 0
    output_source: str = ""  # "history (median of N ok rows)" or "default (config ...)"
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    def as_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "items": self.items,
            "overhead_tokens_per_request": self.overhead_tokens,
            "system_tokens_per_request": self.system_tokens,
            "media_tokens": self.media_tokens,
            "input_tokens": self.input_tokens,
            "audio_tokens": self.audio_tokens,
            "output_tokens": self.output_tokens,
            "output_tokens_per_item": self.output_tokens_per_item,
            "output_source": self.output_source,
            "cost_usd": str(self.cost_usd),
            "worst_case_usd": str(self.worst_case_usd),
        }


@dataclass
class Estimate:
    model: str
    resolution: str
    mode: str  # sync | batch | flex
    price_date: str
    price_source: str
    files: int = 0  # every file seen
    by_kind: dict[str, KindEstimate] = field(default_factory=dict)
    not_estimated: dict[str, int] = field(default_factory=dict)  # media kinds with no estimator: skipped
    skipped: int = 0  # not media (discovery)
    errors: dict[str, int] = field(default_factory=dict)  # error_kind -> files the pipeline would refuse
    excluded: int = 0  # left out by the caller's filter (e.g. already done)
    concurrency: int = 1
    rpm: int | None = None
    tpm: int | None = None
    latency_s: float = 0.0
    latency_source: str = ""
    time_s: float | None = None
    time_bound: str = ""  # what limits the time: rpm, tpm, concurrency, or batch
    scan_s: float = 0.0
    profiles: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def items(self) -> int:
        return sum(k.items for k in self.by_kind.values())

    @property
    def input_tokens(self) -> int:
        return sum(k.input_tokens for k in self.by_kind.values())

    @property
    def output_tokens(self) -> int:
        return sum(k.output_tokens for k in self.by_kind.values())

    @property
    def cost_usd(self) -> Decimal:
        return sum((k.cost_usd for k in self.by_kind.values()), Decimal(0))

    @property
    def worst_case_usd(self) -> Decimal:
        return sum((k.worst_case_usd for k in self.by_kind.values()), Decimal(0))

    @property
    def files_per_s(self) -> float:
        return self.files / self.scan_s if self.scan_s > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        """One object with every figure; money as exact decimal strings (like the run summary)."""
        return {
            "model": self.model,
            "resolution": self.resolution,
            "mode": self.mode,
            "files": self.files,
            "items": self.items,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": str(self.cost_usd),
            "worst_case_usd": str(self.worst_case_usd),
            "by_kind": {kind: k.as_json() for kind, k in sorted(self.by_kind.items())},
            "profiles": self.profiles,
            "warnings": self.warnings,
            "not_estimated": dict(sorted(self.not_estimated.items())),
            "skipped": self.skipped,
            "errors": dict(sorted(self.errors.items())),
            "excluded": self.excluded,
            "price_date": self.price_date,
            "price_source": self.price_source,
            "time_s": None if self.time_s is None else round(self.time_s, 1),
            "time_bound": self.time_bound,
            "concurrency": self.concurrency,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "latency_s": round(self.latency_s, 3),
            "latency_source": self.latency_source,
            "scan_s": round(self.scan_s, 3),
            "files_per_s": round(self.files_per_s, 1),
        }


# --------------------------------------------------------------------------------------------------
# scanning


def _probe_batch(batch: list[tuple[DiscoveredFile, KindEstimator]],
                 opts: EstimateOptions) -> list[tuple[DiscoveredFile, MediaTokens | MediaError]]:
    out: list[tuple[DiscoveredFile, MediaTokens | MediaError]] = []
    for file, estimator in batch:
        try:
            out.append((file, estimator(file, opts)))
        except MediaError as exc:
            out.append((file, exc))
        except Exception as exc:  # an odd header must not end the estimate: the run would record it too
            out.append((file, MediaError(f"{exc.__class__.__name__}: {exc}", kind=ErrorKind.CORRUPT)))
    return out


def _probed(batches: Iterable[list[tuple[DiscoveredFile, KindEstimator]]], opts: EstimateOptions,
            workers: int) -> Iterator[tuple[DiscoveredFile, MediaTokens | MediaError]]:
    """Probe headers on a thread pool with a bounded lookahead (memory stays flat for any library)."""
    if workers <= 1:
        for batch in batches:
            yield from _probe_batch(batch, opts)
        return
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enrich-estimate") as pool:
        try:
            for batch in batches:
                pending.append(pool.submit(_probe_batch, batch, opts))
                while len(pending) >= 4 * workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def _unique(files: Iterable[DiscoveredFile]) -> Iterator[DiscoveredFile]:
    """Each path once, as `run` does for overlapping roots."""
    seen: set[str] = set()
    for f in files:
        if f.path not in seen:
            seen.add(f.path)
            yield f


FLEX_LATENCY_S = 60.0  # the Flex tier's lower target per request


def estimate(
    roots: Sequence[str | os.PathLike[str]],
    settings: Settings,
    *,
    model: str | None = None,
    resolution: str | None = None,
    mode: str = "sync",
    include: Callable[[DiscoveredFile], bool] | None = None,
    files: Iterable[DiscoveredFile] | None = None,
    history: bool = True,
    workers: int = DEFAULT_WORKERS,
) -> Estimate:
    """Estimate a run over `roots` with `settings` (model and resolution overridable).

    include: a filter the run would apply (e.g. "not already done"); files it rejects are counted as
    `excluded`. files: an already discovered list to use instead of scanning `roots`.
    history: use the warehouse's earlier rows for output tokens and latency (else configured defaults).
    """
    from enrich.schemas.descriptions import DESCRIPTION_SCHEMAS
    from enrich.tasks.incremental import profiles_of

    if mode not in ("sync", "batch", "flex"):
        raise ValueError(f"mode must be sync, batch or flex, not {mode!r}")
    settings = settings.with_overrides(model=model, resolution=resolution)
    prices = load_prices(settings.config_dir)
    price = prices.price(settings.model)  # ConfigError for a model with no price, as `run` would
    from enrich.tasks.media_info import MediaLimits

    opts = EstimateOptions(model=settings.model, resolution=settings.resolution, max_side=settings.max_side,
                           max_pixels=settings.max_image_pixels, limits=MediaLimits.from_settings(settings))
    profiles = profiles_of(settings)
    est = Estimate(model=settings.model, resolution=settings.resolution, mode=mode, price_date=prices.date,
                   price_source=prices.source, profiles=[p.name for p in profiles])
    # by_kind keys: the kind, or "profile/kind" when the estimate covers several profiles
    key_of = (lambda p, kind: kind) if len(profiles) == 1 else (lambda p, kind: f"{p}/{kind}")
    wanted: dict[str, list] = {}  # path -> the profiles that would send it (probed once for all of them)
    batch_mode = mode == "batch"
    flex_mode = mode == "flex"
    started = time.perf_counter()

    errors: Counter[str] = Counter()
    not_estimated: Counter[str] = Counter()

    root_paths = [os.fspath(r) for r in roots]
    trial = settings.sample is not None or settings.limit is not None

    def candidates() -> Iterator[tuple[DiscoveredFile, list]]:
        source = files if files is not None else discover(root_paths, hash_files=False,
                                                          selection=Selection.from_settings(settings),
                                                          skip=own_state_dirs(settings.home, settings.warehouse))
        for f in _unique(source):
            est.files += 1
            if f.status == "skipped":
                if not trial:  # a trial run writes rows for the files it describes only
                    est.skipped += 1
                continue
            if f.status != "pending":
                if not trial:
                    errors[f.error_kind or "error"] += 1
                continue
            kind = f.kind or ""
            asked: list = []
            if KIND_ESTIMATORS.get(kind) is not None and kind in DESCRIPTION_SCHEMAS:
                # the profiles that would send it (probed once for all of them)
                asked = [p for p in profiles
                         if kind in p.schemas and (include is None or include(replace(f, profile=p.name)))]
                if not asked:
                    est.excluded += 1
                    continue
            yield f, asked

    def to_probe() -> Iterator[list[tuple[DiscoveredFile, KindEstimator]]]:
        batch: list[tuple[DiscoveredFile, KindEstimator]] = []
        picked = trial_pick(candidates(), lambda fa: fa[0].path, roots=[os.path.abspath(r) for r in root_paths],
                            limit=settings.limit, sample=settings.sample, seed=settings.sample_seed)
        for f, asked in picked:
            kind = f.kind or ""
            estimator = KIND_ESTIMATORS.get(kind)
            if estimator is None or kind not in DESCRIPTION_SCHEMAS:
                not_estimated[kind] += 1
                continue
            wanted[f.path] = asked
            batch.append((f, estimator))
            if len(batch) >= PROBE_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    # kind -> Counter of each item's media tokens: few distinct values, so the per-item sums below are cheap
    media: dict[tuple[str, str], Counter[MediaTokens]] = {}
    for f, outcome in _probed(to_probe(), opts, workers):
        asked = wanted.pop(f.path, [])
        if isinstance(outcome, MediaError):
            errors[outcome.kind] += 1
        else:
            for p in asked:
                media.setdefault((p.name, f.kind or ""), Counter())[outcome] += 1
    est.scan_s = time.perf_counter() - started
    est.errors = dict(errors)
    est.not_estimated = dict(not_estimated)

    by_name = {p.name: p for p in profiles}
    for (pname, kind), counts in sorted(media.items()):
        # the prompt and the response schema go with every request (what is sent: enrich/tokens.py)
        profile = by_name[pname]
        # and, with a document, the system instruction marking it as untrusted data (counted apart)
        overhead = prompt_tokens(profile.prompts[kind], profile.schemas[kind])
        system = system_tokens(kind == MediaKind.DOCUMENT)
        per_request = overhead + system
        k = est.by_kind[key_of(pname, kind)] = KindEstimate(kind, profile=pname, overhead_tokens=overhead,
                                                           system_tokens=system)
        for tokens, n in counts.items():
            item_input = tokens.input_tokens + per_request
            k.media_tokens += n * tokens.input_tokens
            k.items += n
            k.input_tokens += n * item_input
            k.audio_tokens += n * tokens.audio_tokens
            # exactly what the describer reserves for such an item (same margin, same worst case)
            reserve = reserved_input_tokens(item_input)
            audio = min(reserve, reserved_input_tokens(tokens.audio_tokens)) if tokens.audio_tokens else 0
            k.reserved_input_tokens += n * reserve
            k.worst_case_usd += n * worst_case_usd(reserve, settings.max_output_tokens, price, audio_tokens=audio,
                                                   batch=batch_mode, flex=flex_mode)

    medians = _history_medians(settings, history)
    for key, k in est.by_kind.items():
        kind = k.kind
        known = medians.get((kind, k.profile))
        if known is not None:
            k.output_tokens_per_item = known.value
            k.output_source = f"history (median of {known.rows} ok rows)"
        elif k.profile == DETAILED:
            k.output_tokens_per_item = settings.expected_output_tokens.get(kind, settings.max_output_tokens)
            k.output_source = "default (config/enrich.toml [estimate.output_tokens])"
        else:
            k.output_tokens_per_item = min(settings.max_output_tokens, expected_output_tokens(by_name[k.profile].schemas[kind]))
            k.output_source = "from the schema's size (no history yet)"
        if k.items and k.overhead_tokens * k.items > k.media_tokens:
            est.warnings.append(f"profile {k.profile}: its prompt and schema ({k.overhead_tokens} tokens per request) "
                                f"cost more than the {kind} itself (~{k.media_tokens // k.items} tokens per item)")
        k.output_tokens = k.items * k.output_tokens_per_item
        usage = Usage(input_tokens=k.input_tokens, output_tokens=k.output_tokens,
                      input_by_modality={"AUDIO": k.audio_tokens} if k.audio_tokens else {})
        k.cost_usd = cost_usd(usage, price, batch=batch_mode, flex=flex_mode)
    _estimate_time(est, settings, history)
    return est


def expected_output_tokens(schema) -> int:
    """Output tokens of an answer, guessed from the schema's size (used until the warehouse has history): per
    field its name and JSON punctuation, and a value by type: a sentence for text (a paragraph for the
    fields named like one), about ten short items for a list, a word for the rest."""
    js = schema.model_json_schema()
    total = 2
    for name, prop in js.get("properties", {}).items():
        prop = prop if isinstance(prop, dict) else {}
        typ = prop.get("type") or next((p.get("type") for p in prop.get("anyOf", []) if p.get("type") != "null"), None)
        total += math.ceil(len(name) / 4) + 2
        if "enum" in prop or typ in ("integer", "number", "boolean"):
            total += 2
        elif typ == "array":
            total += 30
        elif name in LONG_TEXT_FIELDS:
            total += 70
        else:
            total += min(40, math.ceil(prop.get("maxLength", 120) / 4))
    return total


# text fields that hold a paragraph, not a sentence (the built-in profiles' names)
LONG_TEXT_FIELDS = frozenset({"description", "summary", "transcript"})


def skip_done_filter(settings: Settings, reprocess: Iterable[str] | None) -> Callable[[DiscoveredFile], bool] | None:
    """The run's skip-already-done rules for a header-only scan (tasks/incremental.would_send): what `enrich
    run` would leave out. None when the warehouse holds no results yet (nothing to leave out)."""
    from enrich.tasks.incremental import current_versions, would_send
    from enrich.warehouse.state import load_state
    from enrich.warehouse.location import open_warehouse

    warehouse = open_warehouse(settings.warehouse)
    if not warehouse.result_files():
        return None
    return would_send(load_state(warehouse), current_versions(settings), list(reprocess or []))


def _history_medians(settings: Settings, history: bool) -> dict:
    if not history:
        return {}
    from enrich.warehouse.history import output_token_medians

    return output_token_medians(settings.warehouse, settings.model)


def _estimate_time(est: Estimate, settings: Settings, history: bool) -> None:
    """Wall time from the configured rate limits (RPM, input TPM) and concurrency x typical latency."""
    est.concurrency = settings.concurrency
    known = None
    if history:
        from enrich.warehouse.history import latency_median_s

        known = latency_median_s(settings.warehouse, settings.model)
    if known is not None:
        est.latency_s, rows = known
        est.latency_source = f"history (median of {rows} ok rows)"
    else:
        est.latency_s = settings.expected_latency_s
        est.latency_source = "default (config/enrich.toml [estimate] latency_s)"
    if est.mode == "batch":
        est.time_s, est.time_bound = None, "batch (provider target turnaround: 24 h; jobs expire after 48 h)"
        return
    if est.mode == "flex":  # synchronous, but each answer takes minutes: concurrency and the rate limits bound it
        est.latency_s = max(est.latency_s, FLEX_LATENCY_S)
        est.latency_source = "flex tier (target 1-15 minutes per request)"
    n = est.items
    bounds = {"concurrency": n * est.latency_s / max(1, est.concurrency)}
    if family_of(est.model) != "local":  # local engines are not rate limited
        rate = settings.rate_limit()
        est.rpm, est.tpm = rate.rpm, rate.tpm
        if rate.rpm:  # 0 or None: no limit (--rpm 0)
            bounds["rpm"] = n * 60.0 / rate.rpm
        if rate.tpm:  # the limiter paces on reserved input tokens (estimate plus margin), not billed ones
            bounds["tpm"] = sum(k.reserved_input_tokens for k in est.by_kind.values()) * 60.0 / rate.tpm
    est.time_bound, est.time_s = max(bounds.items(), key=lambda kv: kv[1])


# --------------------------------------------------------------------------------------------------
# presenting


def _usd(value: Decimal) -> str:
    """$0.0123 style: enough digits to see a cost of a few hundredths of a cent."""
    if value == 0:
        return "$0"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.6f}".rstrip("0")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_estimate(est: Estimate) -> str:
    """The estimate as a small table with its sources, for people."""
    mode = {"batch": " (batch: the Batch API price)", "flex": " (flex: the Flex tier price)"}.get(est.mode, "")
    lines = [f"estimate for {est.model}, resolution {est.resolution}{mode}: "
             f"{est.files} files scanned in {est.scan_s:.1f} s"]
    header = ("kind", "items", "input tokens", "output tokens", "cost")
    rows = [(kind, f"{k.items:,}", f"{k.input_tokens:,}", f"{k.output_tokens:,}", _usd(k.cost_usd))
            for kind, k in sorted(est.by_kind.items())]
    rows.append(("total", f"{est.items:,}", f"{est.input_tokens:,}", f"{est.output_tokens:,}", _usd(est.cost_usd)))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines += ["  " + fmt(header), "  " + "  ".join("-" * w for w in widths)]
    lines += ["  " + fmt(r) for r in rows]
    for kind, k in sorted(est.by_kind.items()):
        lines.append(f"  {kind} output: {k.output_tokens_per_item} tokens per item, {k.output_source}")
    for kind, k in sorted(est.by_kind.items()):
        media = f"; the media ~{k.media_tokens // k.items:,}" if k.items else ""
        system = f" +{k.system_tokens} system" if k.system_tokens else ""
        lines.append(f"  profile {k.profile}, {k.kind}: {k.overhead_tokens}{system} input tokens of prompt and schema"
                     f"{' (+ system instruction)' if system else ''} per request{media}")
    for warning in est.warnings:
        lines.append(f"  warning: {warning}")
    lines.append(f"  worst case (every answer max_output_tokens long): {_usd(est.worst_case_usd)}")
    if est.not_estimated:
        lines.append("  not estimated (no estimator yet; the run skips them): "
                     + ", ".join(f"{n} {kind or 'unknown'}" for kind, n in sorted(est.not_estimated.items())))
    if est.errors:
        lines.append("  not billed (the run records them as errors): "
                     + ", ".join(f"{n} {kind}" for kind, n in sorted(est.errors.items())))
    if est.skipped:
        lines.append(f"  not media (skipped): {est.skipped}")
    if est.excluded:
        lines.append(f"  left out (already done): {est.excluded}")
    if est.time_s is None:
        lines.append(f"  time: {est.time_bound}")
    else:
        limits = f"{est.rpm} RPM, {est.tpm:,} TPM, " if est.rpm else ""
        lines.append(f"  time: about {_duration(est.time_s)}, limited by {est.time_bound} ({limits}"
                     f"concurrency {est.concurrency}, {est.latency_s:.1f} s per request: {est.latency_source})")
    lines.append(f"  prices of {est.price_date} ({est.price_source})")
    return "\n".join(lines)
