"""What several commands share, in one place: the flags of `run`, `estimate` and `serve` (declared once, in
`add_media_flags`), turning them into settings overrides, the bundled emulator, and the table / JSON
formatting and SQL helper of the read-only commands.

Commands import this module and the library below them, never each other (a contract in pyproject.toml,
checked by tests/test_layers.py). Keep it light: `enrich --help` imports it for every command, so heavy
imports (DuckDB, Prefect, the SDK) stay inside the functions that need them.
"""
from __future__ import annotations

import argparse
import os
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from enrich.errors import UsageError

RESOLUTIONS = ["low", "medium", "high"]
REPROCESS = ["stale", "failed", "all"]
PROGRESS = ["auto", "bar", "log", "off"]
MODES = ["sync", "batch", "flex"]
_MODE_HELP = {
    "estimate": "price interactive requests (sync), Gemini Batch jobs (batch) or the Flex tier (flex), with "
                "their turnaround (default: the mode setting, sync)",
}
DEFAULT_MODE_HELP = ("sync: interactive requests; batch: Gemini Batch jobs at the batch price, answers within "
                     "24 h, collected by a later run or `enrich jobs collect`; flex: interactive on the Flex tier "
                     "at its price, slow (default: the mode setting, sync)")
WAREHOUSE_HELP = "warehouse folder (default: $ENRICH_WAREHOUSE or $ENRICH_HOME/warehouse)"
OBJECT_WAREHOUSE_HELP = ("warehouse folder, or s3://bucket/prefix, gs://bucket/prefix or az://container/prefix on "
                         "object storage (default: $ENRICH_WAREHOUSE or $ENRICH_HOME/warehouse)")

# -- the flags of run, estimate and serve -------------------------------------------------------------------

# Help texts that differ by command, because the flag means something different there. Every other help
# text is the same for all three.
_PATHS_HELP = {
    "run": "files or folders to describe",
    "estimate": "files or folders",
    "serve": "files or folders to describe on each run",
}
_MODEL_HELP = {
    "estimate": "model to price (default from config/enrich.toml)",
}
_WAREHOUSE_HELP = {
    "estimate": "warehouse with earlier runs, for expected output tokens and latency",
}
_REPROCESS_HELP = {
    "estimate": "count what `enrich run --reprocess WHAT` would redo (by default files already done in the "
                "warehouse, same path, size and mtime, are left out like a run leaves them)",
}
DEFAULT_MODEL_HELP = "gemini-..., mlx:<dir-or-repo>, or openai:<model>@<base_url> (default from config/enrich.toml)"
DEFAULT_REPROCESS_HELP = (
    "also redo: stale (described with another model, prompt, schema or resolution), failed (errors and "
    "blocked items), all (everything); repeatable. By default a run describes only new and changed files and "
    "retries what did not finish"
)
MEDIA_COMMANDS = ("run", "estimate", "serve")


def add_media_flags(p: argparse.ArgumentParser, command: str) -> None:
    """Declare the flags `run`, `estimate` and `serve` share: PATH..., --model, --resolution, --warehouse,
    --reprocess, --profile, --prompt, --schema, what is sent (--kinds, --include, --exclude, --hidden,
    --max-file-size), trial runs (--sample, --limit, --seed) and --context; and for the two that send requests
    (`run`, `serve`) --budget, --concurrency, --rpm, --tpm,
    --progress, --chunk-size, --keep-metadata and --emulator. `overrides_from` reads them back."""
    if command not in MEDIA_COMMANDS:
        raise ValueError(f"add_media_flags is for {', '.join(MEDIA_COMMANDS)}, not {command!r}")
    p.add_argument("paths", nargs="+", metavar="PATH", help=_PATHS_HELP[command])
    p.add_argument("--model", help=_MODEL_HELP.get(command, DEFAULT_MODEL_HELP))
    p.add_argument("--resolution", choices=RESOLUTIONS, help="media resolution tier")
    p.add_argument("--warehouse", help=_WAREHOUSE_HELP.get(command, OBJECT_WAREHOUSE_HELP))
    p.add_argument("--reprocess", action="append", metavar="WHAT", choices=REPROCESS,
                   help=_REPROCESS_HELP.get(command, DEFAULT_REPROCESS_HELP))
    _add_selection_flags(p)
    p.add_argument("--mode", choices=MODES, help=_MODE_HELP.get(command, DEFAULT_MODE_HELP))
    p.add_argument("--profile", action="append", metavar="NAME",
                   help="what to ask: caption, detailed, alt-text, key-facts or a [profiles.NAME] of your "
                   "enrich.toml (default: the `profile` setting, caption); repeatable: one request per profile")
    p.add_argument("--prompt", metavar="TEXT", help="an ad-hoc profile's prompt (with --schema; named by their hash)")
    p.add_argument("--schema", metavar="SPEC",
                   help="an ad-hoc profile's fields, e.g. 'caption, tags list, has_people bool, mood enum(calm,busy)'")
    if command == "estimate":
        return
    group = p.add_argument_group("run options") if command == "serve" else p
    group.add_argument("--budget", type=float, metavar="USD",
                       help="never spend more than this on this run (with a daily cap in config, the smaller one "
                       "holds)")
    group.add_argument("--concurrency", type=int, help="most requests in flight (default 64); halves on 429 and "
                       "recovers after a quiet period")
    group.add_argument("--rpm", type=int, metavar="N", help="requests per minute for this run (default: the "
                       "model's [rate_limits] in config/enrich.toml; 0 = no limit)")
    group.add_argument("--tpm", type=int, metavar="N", help="input tokens per minute for this run (0 = no limit)")
    group.add_argument("--progress", choices=PROGRESS,
                       help="live progress on stderr: a bar on a terminal, a line every 15 s otherwise (auto)")
    group.add_argument("--chunk-size", type=int, help="items per Prefect task run")
    group.add_argument("--keep-metadata", action="store_true",
                       help="upload originals: photos with their EXIF (GPS, camera serials), audio, video and PDFs "
                       "with their tags; stripped by default")
    group.add_argument("--emulator", action="store_true",
                       help="use the bundled local Gemini emulator instead of the real API (offline; fake answers)")


def _add_selection_flags(p: argparse.ArgumentParser) -> None:
    """What is sent (tasks/selection.py), trial runs and the context put into the prompt; `selection_overrides`
    reads them back. Defaults come from the settings ([select], [run] context and sample_seed)."""
    g = p.add_argument_group("choosing what is sent")
    g.add_argument("--kinds", metavar="KINDS", help="only these media kinds, comma-separated: image, audio, video, "
                   "document (default: all)")
    g.add_argument("--include", action="append", metavar="GLOB",
                   help="only paths matching this glob (gitignore syntax, relative to the root, ** for any depth); "
                   "repeatable")
    g.add_argument("--exclude", action="append", metavar="GLOB",
                   help="leave out paths matching this glob (gitignore syntax; `raw/` is a folder); repeatable. "
                   ".enrichignore files in the folders are always obeyed")
    g.add_argument("--hidden", action="store_true", default=None,
                   help="also look at hidden files and folders (names starting with a dot; left out by default)")
    g.add_argument("--max-file-size", metavar="SIZE", help="leave out files larger than SIZE (50MB, 2GiB, bytes)")
    g.add_argument("--sample", type=int, metavar="N",
                   help="a trial: describe N files drawn at random from what a full run would send (see --seed); "
                   "a later full run describes the rest")
    g.add_argument("--limit", type=int, metavar="N", help="a trial: describe the first N files, in walk order, of "
                   "what a full run would send")
    g.add_argument("--seed", type=int, metavar="N", help="seed of --sample (default 17: reruns draw the same files)")
    g.add_argument("--context", metavar="WHAT",
                   help="put into the prompt as text, comma-separated: date (taken), place (city, region, country "
                   "looked up offline from GPS; coordinates are never sent), folder (its name), keywords "
                   "(XMP/IPTC keywords and caption). Off by default; part of the enrichment version")


def selection_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Settings overrides from the flags `_add_selection_flags` declared (None: not given)."""
    def joined(values: list[str] | None) -> str | None:
        return None if values is None else ",".join(values)

    return {
        "kinds": getattr(args, "kinds", None),
        "include": joined(getattr(args, "include", None)),
        "exclude": joined(getattr(args, "exclude", None)),
        "hidden": getattr(args, "hidden", None),
        "max_file_size": getattr(args, "max_file_size", None),
        "sample": getattr(args, "sample", None),
        "limit": getattr(args, "limit", None),
        "sample_seed": getattr(args, "seed", None),
        "context": getattr(args, "context", None),
    }


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Settings overrides from the flags `add_media_flags` declared (None: not given, keep the setting)."""
    return {
        **selection_overrides(args),
        "model": args.model,
        "budget_usd": getattr(args, "budget", None),
        "warehouse": args.warehouse,
        "concurrency": getattr(args, "concurrency", None),
        "rpm": getattr(args, "rpm", None),
        "tpm": getattr(args, "tpm", None),
        "progress": getattr(args, "progress", None),
        "resolution": args.resolution,
        "chunk_size": getattr(args, "chunk_size", None),
        "strip_metadata": False if getattr(args, "keep_metadata", False) else None,
        "mode": getattr(args, "mode", None),
        "run_profiles": list(args.profile) if getattr(args, "profile", None) else None,
        "adhoc_prompt": getattr(args, "prompt", None),
        "adhoc_schema": getattr(args, "schema", None),
    }


def parse_duration(text: str) -> float:
    """'90s', '30m', '6h', '1d' or plain seconds -> seconds; UsageError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except (ValueError, KeyError):
        raise UsageError(f"not a duration: {text!r} (try 90s, 30m, 6h, 1d)") from None
    if value < 0:
        raise UsageError(f"not a duration: {text!r} (must not be negative)")
    return value


def resolve_paths(paths: list[str]) -> list[str]:
    """The PATH... arguments as absolute paths; a UsageError naming the first one that does not exist."""
    missing = [p for p in paths if not os.path.lexists(p)]
    if missing:
        raise UsageError(f"path not found: {missing[0]}")
    return [str(Path(p).expanduser().resolve()) for p in paths]


def start_emulator():
    """Start the emulator in this process and point the SDK at it (real keys are not sent to it)."""
    from enrich.emulator import EmulatorConfig, GeminiEmulator

    emu = GeminiEmulator(EmulatorConfig())
    url = emu.start()
    os.environ["GOOGLE_GEMINI_BASE_URL"] = url
    os.environ["GOOGLE_API_KEY"] = "emulator"
    os.environ.pop("GEMINI_API_KEY", None)  # the SDK warns when both are set
    return emu, url


# -- output of the read-only commands ------------------------------------------------------------------------

def jsonable(value: Any) -> Any:
    """A warehouse value as JSON can hold it (Decimal as a number, times as ISO text, bytes as hex)."""
    if isinstance(value, Decimal):
        return float(value)  # JSON numbers; the warehouse keeps the exact decimal
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def require_folder_warehouse(settings, command: str):
    """`settings`, unless its warehouse is on object storage, which `command` does not support yet."""
    from enrich.settings import is_object_url

    if is_object_url(settings.warehouse):
        raise UsageError(f"enrich {command} needs a warehouse folder: it does not work on object storage yet "
                         "(run, query, runs, compact, migrate and export do)")
    return settings


def run_query(warehouse: str, sql: str) -> tuple[list[str], list[tuple]]:
    """Run SQL over a snapshot of the warehouse views: (column names, rows)."""
    from enrich.warehouse.views import read_snapshot

    def run(con) -> tuple[list[str], list[tuple]]:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        return columns, cur.fetchall()

    return read_snapshot(warehouse, run)


def format_table(columns: list[str], rows: list[tuple], max_width: int = 60) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, Decimal):
            v = f"{v.normalize():f}"  # 0.002263, not 0.002263000000 or 0E-12
        from enrich.terminal import safe_text

        s = "" if v is None else safe_text(v)  # names and model text: no control or bidi characters raw
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    columns = [cell(c) for c in columns]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


# -- what starting a run needs (run, eval) -------------------------------------------------------------
def preflight(settings) -> None:
    """Fail fast, before Prefect starts, when the run cannot succeed (bad key, unknown model, no endpoint)."""
    import asyncio

    from enrich.backends import create_backend
    from enrich.pricing import load_prices

    load_prices(settings.config_dir).price(settings.model)
    backend = create_backend(settings.model, settings)

    async def check() -> None:
        try:
            await backend.preflight()
        finally:
            await backend.aclose()

    asyncio.run(check())


def confirm_spend(estimated: Decimal, cap: Decimal | None, *, yes: bool, stdin: Any = None, stderr: Any = None) -> None:
    """Go on when the estimate fits the cap, or --yes, or an interactive user says so; else UsageError.

    Going on past the estimate is safe: the budget still holds, and items whose worst case no longer fits
    are recorded over_budget for a later run.
    """
    stdin = sys.stdin if stdin is None else stdin
    stderr = sys.stderr if stderr is None else stderr
    if cap is None or estimated <= cap:
        return
    what = f"the estimate ${estimated.normalize():f} exceeds the budget ${cap.normalize():f}"
    if yes:
        print(f"{what}: going on (--yes) until the budget is spent; the rest is recorded over_budget", file=stderr)
        return
    if stdin is not None and stdin.isatty():
        stderr.write(f"{what}. Spend up to the budget and record the rest over_budget? [y/N] ")
        stderr.flush()
        if stdin.readline().strip().lower() in ("y", "yes"):
            return
        raise UsageError("stopped before sending anything")
    raise UsageError(f"{what}; nothing was sent. Pass --yes to spend up to the budget and record the rest "
                     "over_budget, or raise --budget")


def exit_code(summary: dict[str, Any]) -> int:
    """0 finished; 128 + the signal when interrupted (130 Ctrl-C, 143 SIGTERM); 1 when it stopped early."""
    if summary["status"] == "finished":
        return 0
    if summary["status"] == "interrupted":
        return 128 + int(summary.get("signal") or 2)
    return 1
