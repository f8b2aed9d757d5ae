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
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from enrich.errors import UsageError

RESOLUTIONS = ["low", "medium", "high"]
REPROCESS = ["stale", "failed", "all"]
PROGRESS = ["auto", "bar", "log", "off"]
WAREHOUSE_HELP = "warehouse folder (default: $ENRICH_WAREHOUSE or $ENRICH_HOME/warehouse)"

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
    --reprocess, --profile, --prompt, --schema; and for the two that send requests (`run`, `serve`) --budget, --concurrency, --rpm, --tpm,
    --progress, --chunk-size, --keep-metadata and --emulator. `overrides_from` reads them back."""
    if command not in MEDIA_COMMANDS:
        raise ValueError(f"add_media_flags is for {', '.join(MEDIA_COMMANDS)}, not {command!r}")
    p.add_argument("paths", nargs="+", metavar="PATH", help=_PATHS_HELP[command])
    p.add_argument("--model", help=_MODEL_HELP.get(command, DEFAULT_MODEL_HELP))
    p.add_argument("--resolution", choices=RESOLUTIONS, help="media resolution tier")
    p.add_argument("--warehouse", help=_WAREHOUSE_HELP.get(command, WAREHOUSE_HELP))
    p.add_argument("--reprocess", action="append", metavar="WHAT", choices=REPROCESS,
                   help=_REPROCESS_HELP.get(command, DEFAULT_REPROCESS_HELP))
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


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Settings overrides from the flags `add_media_flags` declared (None: not given, keep the setting)."""
    return {
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
        "run_profiles": list(args.profile) if getattr(args, "profile", None) else None,
        "adhoc_prompt": getattr(args, "prompt", None),
        "adhoc_schema": getattr(args, "schema", None),
    }


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
        s = "" if v is None else str(v)
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)
