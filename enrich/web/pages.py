"""The pages, as Jinja2 templates with autoescaping on: every string from the warehouse (captions, tags, paths,
error messages: model output is untrusted input) is escaped wherever it lands. The app and the report share
the templates; they differ only in how a thumbnail or an item is addressed (URLs or data: URIs)."""
from __future__ import annotations

import os
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any, Callable

import jinja2
from markupsafe import Markup

from enrich.web.charts import count, dashboard, usd

# Columns of an item, grouped for the item page; any other column (one added later, e.g. `profile`) is shown
# under "Other", so nothing recorded is hidden.
FIELD_GROUPS: list[tuple[str, list[str]]] = [
    ("Description", ["caption", "description", "tags", "objects", "visible_text", "people_count", "setting",
                     "title", "document_type", "summary", "transcript", "language", "speakers_count", "sounds",
                     "entities", "dates", "scenes"]),
    ("Outcome", ["status", "error_kind", "error", "finish_reason", "attempts", "raw_text", "reused_from"]),
    ("Model", ["backend", "model", "model_version", "resolution", "enrichment_version", "prompt_hash",
               "schema_hash", "price_date", "batch"]),
    ("Tokens and cost", ["input_tokens", "input_audio_tokens", "output_tokens", "thinking_tokens", "cached_tokens",
                         "cost_usd", "latency_ms", "tokens_per_second", "peak_memory_mb"]),
    ("File", ["path", "kind", "mime", "size_bytes", "mtime", "content_hash", "width", "height", "taken_at",
              "gps_lat", "gps_lon", "camera_make", "camera_model", "duration_s", "page_count", "char_count",
              "media_format", "sample_rate", "channels", "trimmed"]),
    ("Run", ["run_id", "started_at", "finished_at"]),
]


def basename(path: str | None) -> str:
    return os.path.basename(path or "") or (path or "")


def label(item: dict[str, Any]) -> str:
    """The line under a thumbnail: the caption, else a title or summary (audio, documents, video)."""
    text = item.get("caption") or item.get("title") or item.get("summary") or ""
    return text if len(text) <= 200 else text[:199] + "…"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else ""


def duration(run: dict[str, Any]) -> str:
    start, end = run.get("started_at"), run.get("finished_at")
    if not start or not end:
        return ""
    s = int((end - start).total_seconds())
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def show(name: str, value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Decimal):
        return f"${value.normalize():f}" if name.endswith("_usd") else f"{value.normalize():f}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int) and not isinstance(value, bool) and name.endswith(("_tokens", "_bytes")):
        return f"{value:,}"
    return str(value)


def field_groups(item: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    seen: set[str] = set()
    groups = []
    for title, names in FIELD_GROUPS:
        rows = [(n, show(n, item[n])) for n in names if item.get(n) not in (None, "", [])]
        seen.update(names)
        if rows:
            groups.append((title, rows))
    other = [(n, show(n, v)) for n, v in item.items()
             if n not in seen and not n.startswith("_") and v not in (None, "", [])]
    if other:
        groups.append(("Other", other))
    return groups


@lru_cache(maxsize=1)
def stylesheet() -> str:
    return resources.files("enrich.web").joinpath("static/style.css").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("enrich.web", "templates"),
        autoescape=True,  # every template, whatever its name: model output is untrusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(basename=basename, label=label, when=when, duration=duration, usd=usd, count=count)
    return env


def render(template: str, **context: Any) -> str:
    context.setdefault("standalone", False)
    context.setdefault("css", Markup(stylesheet()))
    return environment().get_template(template).render(**context)


def runs_context(snapshot, run_id: str | None = None,
                 run_link: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any]:
    """What the runs section needs: summary cards, the four charts, the runs table."""
    if run_id:
        run = snapshot.run(run_id) or {}
        runs = [run] if run else []
        cards = [("status", run.get("status", "")), ("items", f"{run.get('items') or 0:,}"),
                 ("ok", f"{run.get('ok') or 0:,}"), ("errors", f"{run.get('errors') or 0:,}"),
                 ("spent", usd(run.get("spent_usd"))),
                 ("budget", usd(run.get("budget_usd")) if run.get("budget_usd") is not None else "none"),
                 ("reserved peak", usd(run.get("reserved_peak_usd"))),
                 ("model", run.get("model") or "")]
    else:
        runs = snapshot.runs(limit=200)
        totals = snapshot.totals()
        cards = [("items", f"{totals['items']:,}"), ("runs", f"{totals['runs']:,}"),
                 ("spent in all runs", usd(totals["spent"]))]
    return {"runs": runs, "cards": cards, "charts": dashboard(snapshot, run_id), "run_link": run_link}
