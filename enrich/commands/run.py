"""`enrich run PATH...`: describe every media file under the paths and write the results to the warehouse."""
from __future__ import annotations

import argparse
import json
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from enrich.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="describe the media under PATH... and store results and costs in the warehouse",
        description="Discover media under the paths, prepare it (downscale, strip personal metadata), describe "
        "it with the model and write one row per file (status, description, tokens, exact cost) to the "
        "warehouse. Runs as a Prefect flow.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to describe")
    p.add_argument("--model", help="gemini-..., mlx:<dir-or-repo>, or openai:<model>@<base_url> "
                   "(default from config/enrich.toml)")
    p.add_argument("--budget", type=float, metavar="USD",
                   help="never spend more than this on this run (with a daily cap in config, the smaller one holds)")
    p.add_argument("--warehouse", help="warehouse folder (default: $ENRICH_WAREHOUSE or $ENRICH_HOME/warehouse)")
    p.add_argument("--concurrency", type=int, help="most requests in flight (default 64); halves on 429 and "
                   "recovers after a quiet period")
    p.add_argument("--rpm", type=int, metavar="N", help="requests per minute for this run (default: the model's "
                   "[rate_limits] in config/enrich.toml; 0 = no limit)")
    p.add_argument("--tpm", type=int, metavar="N", help="input tokens per minute for this run (0 = no limit)")
    p.add_argument("--progress", choices=["auto", "bar", "log", "off"],
                   help="live progress on stderr: a bar on a terminal, a line every 15 s otherwise (auto)")
    p.add_argument("--resolution", choices=["low", "medium", "high"], help="media resolution tier")
    p.add_argument("--chunk-size", type=int, help="items per Prefect task run")
    p.add_argument("--keep-metadata", action="store_true",
                   help="upload originals: photos with their EXIF (GPS, camera serials), audio, video and PDFs with their tags; stripped by default")
    p.add_argument("--emulator", action="store_true",
                   help="use the bundled local Gemini emulator instead of the real API (offline; fake answers)")
    p.add_argument("--reprocess", action="append", metavar="WHAT", choices=["stale", "failed", "all"],
                   help="also redo: stale (described with another model, prompt, schema or resolution), failed "
                   "(errors and blocked items), all (everything); repeatable. By default a run describes only "
                   "new and changed files and retries what did not finish")
    p.add_argument("--wait", action="store_true",
                   help="if another run is using the warehouse, wait for it instead of refusing")
    p.add_argument("--yes", "-y", action="store_true",
                   help="do not ask when the estimate exceeds the budget: spend up to the budget and record the "
                   "rest over_budget (without it a non-interactive run stops there, exit code 2)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(handler=main)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "budget_usd": args.budget,
        "warehouse": args.warehouse,
        "concurrency": args.concurrency,
        "rpm": args.rpm,
        "tpm": args.tpm,
        "progress": args.progress,
        "resolution": args.resolution,
        "chunk_size": args.chunk_size,
        "strip_metadata": False if args.keep_metadata else None,
    }


def start_emulator():
    """Start the emulator in this process and point the SDK at it (real keys are not sent to it)."""
    from enrich.emulator import EmulatorConfig, GeminiEmulator

    emu = GeminiEmulator(EmulatorConfig())
    url = emu.start()
    os.environ["GOOGLE_GEMINI_BASE_URL"] = url
    os.environ["GOOGLE_API_KEY"] = "emulator"
    os.environ.pop("GEMINI_API_KEY", None)  # the SDK warns when both are set
    return emu, url


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


def run_summary_table(warehouse: str, run_id: str) -> str:
    from enrich.commands.query import format_table, run_query

    columns, rows = run_query(
        warehouse,
        f"""SELECT kind, status, count(*) AS items, sum(input_tokens) AS input_tokens,
                   sum(input_audio_tokens) AS of_which_audio,
                   sum(output_tokens + thinking_tokens) AS output_tokens, sum(cost_usd) AS cost_usd
            FROM results WHERE run_id = '{run_id}' GROUP BY kind, status ORDER BY kind NULLS LAST, items DESC""",
    )
    table = format_table(columns, rows)
    columns, errors = run_query(
        warehouse,
        f"""SELECT path, status, error FROM results WHERE run_id = '{run_id}'
            AND status NOT IN ('ok', 'skipped') ORDER BY path LIMIT {MAX_ERRORS_SHOWN + 1}""",
    )
    if errors:
        from enrich.terminal import safe_text

        lines = [f"  {status:<12} {safe_text(path)}: {safe_text(error)}"
                 for path, status, error in errors[:MAX_ERRORS_SHOWN]]
        if len(errors) > MAX_ERRORS_SHOWN:
            lines.append(f"  ... (enrich query \"SELECT path, error FROM items WHERE status <> 'ok'\")")
        table += "\nnot described:\n" + "\n".join(lines)
    return table


MAX_ERRORS_SHOWN = 20


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


def estimate_and_budget(roots: list[str], settings, reprocess: list[str] | None = None):
    """The run's estimate (header-only scan, like `enrich estimate`, leaving out what the run would skip)
    and the budget it will run under."""
    from enrich.budget import budget_from_settings
    from enrich.commands.estimate import skip_done_filter
    from enrich.estimate import estimate

    return estimate(roots, settings, include=skip_done_filter(settings, reprocess)), budget_from_settings(settings)


def main(args: argparse.Namespace) -> int:
    from enrich.budget import describe_budget
    from enrich.estimate import format_estimate
    from enrich.settings import load_settings

    missing = [p for p in args.paths if not os.path.lexists(p)]
    if missing:
        raise UsageError(f"path not found: {missing[0]}")
    roots = [str(Path(p).expanduser().resolve()) for p in args.paths]
    emu = None
    if args.emulator:
        emu, url = start_emulator()
        print(f"Using the local Gemini emulator at {url} (answers are fake; nothing is billed).", file=sys.stderr)
    try:
        overrides = overrides_from(args)
        settings = load_settings().with_overrides(**overrides)
        if settings.api_key is None and not settings.model.startswith(("mlx:", "openai:")):
            raise UsageError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), or pass --emulator to run offline")
        if not args.wait:
            from enrich.warehouse.lock import refuse_if_locked

            refuse_if_locked(settings.warehouse)
        est, budget = estimate_and_budget(roots, settings, args.reprocess)
        if not args.json:  # with --json, stdout is the summary alone (the estimate is in it)
            print(format_estimate(est))
            print(describe_budget(budget), flush=True)
        confirm_spend(est.cost_usd, budget.run_cap, yes=args.yes)
        preflight(settings)

        from enrich.flows.enrich_flow import enrich_flow
        from enrich.flows.run_options import split_overrides, trusted_settings

        # Prefect records the safe run options as the flow's parameters; the rest (warehouse,
        # --keep-metadata, an endpoint model) reaches the flow in-process, never as a parameter.
        options, _ = split_overrides(overrides)
        with trusted_settings(settings):
            summary = enrich_flow(roots, options.as_parameters(), reprocess=args.reprocess or [],
                                  wait_for_lock=args.wait)
    finally:
        if emu is not None:
            emu.stop()
    summary["estimate"] = est.as_json()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"run {summary['run_id']}: {summary['status']}, {summary['items']} items, "
              f"{summary.get('unchanged', 0)} unchanged, {summary.get('reused', 0)} reused without a model call, "
              f"spent ${Decimal(summary['spent_usd']).normalize():f} ({summary['model']})")
        for run_id in summary.get("crashed_runs_found", []):
            print(f"note: run {run_id} had died without finishing; marked crashed, its committed rows kept")
        print(run_summary_table(summary["warehouse"], summary["run_id"]))
        if summary.get("budget_usd") is not None:
            left = summary["over_budget"]
            print(f"budget ${Decimal(summary['budget_usd']).normalize():f}: spent "
                  f"${Decimal(summary['spent_usd']).normalize():f}, reserved at most "
                  f"${Decimal(summary['reserved_peak_usd']).normalize():f} at once"
                  + (f"; {left} items left over budget (run again with more budget to finish them)" if left else ""))
        print(f"warehouse: {summary['warehouse']}  (try: enrich query \"SELECT path, status, caption FROM items\")")
        if summary["status"] != "finished" and summary.get("message"):
            from enrich.terminal import safe_text

            print(f"the run stopped early: {safe_text(summary['message'])}", file=sys.stderr)
    return exit_code(summary)


def exit_code(summary: dict[str, Any]) -> int:
    """0 finished; 128 + the signal when interrupted (130 Ctrl-C, 143 SIGTERM); 1 when it stopped early."""
    if summary["status"] == "finished":
        return 0
    if summary["status"] == "interrupted":
        return 128 + int(summary.get("signal") or 2)
    return 1
