"""`enrich run PATH...`: describe every media file under the paths and write the results to the warehouse."""
from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from typing import Any

from enrich.commands._common import (
    add_media_flags, confirm_spend, exit_code, format_table, overrides_from, parse_duration, preflight,
    resolve_paths, run_query, start_emulator,
)
from enrich.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="describe the media under PATH... and store results and costs in the warehouse",
        description="Discover media under the paths, prepare it (downscale, strip personal metadata), describe "
        "it with the model and write one row per file (status, description, tokens, exact cost) to the "
        "warehouse. Runs as a Prefect flow.",
    )
    add_media_flags(p, "run")
    p.add_argument("--allow-mass-removal", action="store_true",
                   help="mark files gone even when a folder yielded nothing or lost most of its files since the "
                   "last run (by default that looks like an empty or unmounted disk and nothing is marked gone)")
    p.add_argument("--wait", action="store_true",
                   help="if another run is using the warehouse, wait for it instead of refusing")
    p.add_argument("--yes", "-y", action="store_true",
                   help="do not ask when the estimate exceeds the budget: spend up to the budget and record the "
                   "rest over_budget (without it a non-interactive run stops there, exit code 2)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.add_argument("--until-done", action="store_true",
                   help="--mode batch: after submitting, poll the jobs (backoff, a progress line each time) until "
                   "every one has ended and its rows are written; without it the run ends after submitting")
    p.add_argument("--deadline", metavar="DURATION",
                   help="with --until-done: items whose jobs are still pending after DURATION (90s, 30m, 6h) are "
                   "sent interactively (their rows say batch = false)")
    p.add_argument("--runner", choices=["thread", "dask"], default="thread",
                   help="where chunks run: threads in this process (default), or Dask workers (needs the [dask] "
                   "extra): one budget, one rate limit and one warehouse lock for the whole run")
    p.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                   help="with --runner dask: an existing Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="with --runner dask and no --dask-address: worker processes of the local cluster "
                   "(default: the cores)")
    p.set_defaults(handler=main)




def run_summary_table(warehouse: str, run_id: str) -> str:
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




def estimate_and_budget(roots: list[str], settings, reprocess: list[str] | None = None):
    """The run's estimate (header-only scan, like `enrich estimate`, leaving out what the run would skip)
    and the budget it will run under."""
    from enrich.flows.estimate import estimate, skip_done_filter
    from enrich.flows.pipeline import budget_from_settings

    return (estimate(roots, settings, mode=settings.mode, include=skip_done_filter(settings, reprocess)),
            budget_from_settings(settings))


def main(args: argparse.Namespace) -> int:
    from enrich.budget import describe_budget
    from enrich.flows.estimate import format_estimate
    from enrich.settings import load_settings

    roots = resolve_paths(args.paths)
    deadline_s = parse_duration(args.deadline) if args.deadline is not None else None
    if deadline_s is not None and not args.until_done:
        raise UsageError("--deadline needs --until-done (the run waits for the jobs until then)")
    emu = None
    if args.emulator:
        emu, url = start_emulator()
        print(f"Using the local Gemini emulator at {url} (answers are fake; nothing is billed).", file=sys.stderr)
    try:
        overrides = overrides_from(args)
        settings = load_settings().with_overrides(**overrides)
        if settings.api_key is None and not settings.model.startswith(("mlx:", "openai:")):
            raise UsageError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), or pass --emulator to run offline")
        from enrich.settings import is_object_url
        from enrich.warehouse.location import check_writable

        if is_object_url(settings.warehouse) and settings.mode == "batch":
            raise UsageError("--mode batch needs a warehouse folder: batch jobs are not kept on object storage yet")
        check_writable(settings.warehouse)  # a file, a read-only folder: one line, before anything starts
        if not args.wait:
            from enrich.warehouse.location import refuse_if_locked

            refuse_if_locked(settings.warehouse)
        est, budget = estimate_and_budget(roots, settings, args.reprocess)
        if not args.json:  # with --json, stdout is the summary alone (the estimate is in it)
            print(format_estimate(est))
            print(describe_budget(budget), flush=True)
        confirm_spend(est.cost_usd, budget.run_cap, yes=args.yes)
        preflight(settings)

        from enrich.prefect_env import configure_prefect_env

        configure_prefect_env()  # before Prefect is imported
        from enrich.flows.enrich_flow import dask_flow, enrich_flow
        from enrich.flows.run_options import split_overrides, trusted_settings

        flow, runner = enrich_flow, None
        if args.runner == "dask":
            import importlib.util
            import os

            if importlib.util.find_spec("prefect_dask") is None:
                raise UsageError("--runner dask needs the dask extra: pip install 'enrich[dask]'")
            workers = args.workers or os.cpu_count() or 2
            flow, runner = dask_flow(args.dask_address, workers), {"kind": "dask", "workers": workers}
        elif args.dask_address or args.workers:
            raise UsageError("--dask-address and --workers go with --runner dask")
        from enrich.warehouse.lock import WarehouseChanged

        # Prefect records the safe run options as the flow's parameters; the rest (warehouse,
        # --keep-metadata, an endpoint model) reaches the flow in-process, never as a parameter.
        options, _ = split_overrides(overrides)
        try:
            with trusted_settings(settings):
                summary = flow(roots, options.as_parameters(), reprocess=args.reprocess or [],
                               wait_for_lock=args.wait, allow_mass_removal=args.allow_mass_removal,
                               until_done=args.until_done, deadline_s=deadline_s, runner=runner)
        except (WarehouseChanged, OSError) as exc:  # the run started, then could not go on: exit 1, one line
            print(f"enrich: error: the run failed: {exc}", file=sys.stderr)
            return 1
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
        for withheld in summary.get("gone_withheld", []):
            print(f"note: {withheld['message']}", file=sys.stderr)
        batch = summary.get("batch")
        if batch:
            print(batch_lines(batch))
        if summary["status"] != "finished" and summary.get("message"):
            from enrich.terminal import safe_text

            print(f"the run stopped early: {safe_text(summary['message'])}", file=sys.stderr)
    return exit_code(summary)


def batch_lines(batch: dict[str, Any]) -> str:
    """What the run did with batch jobs, and how to collect what is still open."""
    lines = []
    c = batch.get("collected")
    if c and c.get("jobs"):
        lines.append(f"batch: collected {c['jobs']} job(s): {c['rows']} row(s), {c['ok']} ok, {c['errors']} not ok, "
                     f"${Decimal(c['spent_usd']).normalize():f}")
    if c and c.get("put_back"):
        lines.append(f"batch: {c['put_back']} item(s) of failed, expired or cancelled jobs go back to be sent again")
    if batch.get("packed"):
        lines.append(f"batch: {batch['packed']} item(s) packed into {len(batch.get('jobs_created', []))} new job(s)")
    if batch.get("not_submitted"):
        lines.append(f"batch: {batch['not_submitted']} item(s) not submitted (the provider refused the job); "
                     "the next run sends them")
    if batch.get("in_open_jobs"):
        lines.append(f"batch: {batch['in_open_jobs']} file(s) wait in open jobs (not sent again)")
    if batch.get("open_jobs"):
        lines.append(f"batch: {batch['open_jobs']} job(s) open with {batch['open_items']} item(s): `enrich jobs` "
                     "shows them; `enrich jobs collect` (or the next `enrich run`) writes their rows once done")
    return "\n".join(lines)

