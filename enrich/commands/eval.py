"""`enrich eval`: run a labelled set (the bundled golden set by default) through the real pipeline and score it;
`--compare A B` does it for two configurations and says what the trade is. The work is in flows/evaluate.py."""
from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from typing import Any

from enrich.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score a model on a labelled set (the bundled golden set by default); --compare two configurations",
        description="Describe every file of a labelled set with the real pipeline (budget, retries, rate limits), "
        "score the answers against the labels (schema validity, object recall/precision, people count, "
        "visible-text CER, transcript WER, document titles and dates, boilerplate and refusals, prompt "
        "injections followed), print a per-item and a total table, and store the scores in the warehouse "
        "(view `evals`, `eval_summary`). The evaluation's own runs go to <warehouse>/evals/runs/, never into "
        "`items`.",
    )
    p.add_argument("--model", help="the model to evaluate (default from config/enrich.toml); with --compare, "
                   "the default for a configuration that names none")
    p.add_argument("--resolution", choices=["low", "medium", "high"], help="media resolution tier")
    p.add_argument("--set", dest="set_dir", metavar="DIR",
                   help="a folder with labels.json or labels.csv (default: the bundled golden set, samples/golden)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="two configurations, each like model=gemini-3.1-flash-lite,resolution=low: run both, "
                   "print every metric with its delta, the cost per item and a one-line verdict")
    p.add_argument("--judge", metavar="MODEL", help="also let MODEL rate each answer's faithfulness to the labels "
                   "(1-5); text only, priced and inside the budget")
    p.add_argument("--budget", type=float, metavar="USD",
                   help="never spend more than this on the whole evaluation (every configuration and the judge)")
    p.add_argument("--yes", "-y", action="store_true",
                   help="do not ask when the estimate exceeds the budget: spend up to it")
    p.add_argument("--warehouse", help="warehouse folder (default: $ENRICH_WAREHOUSE or $ENRICH_HOME/warehouse)")
    p.add_argument("--emulator", action="store_true",
                   help="use the bundled local Gemini emulator (offline; its answers are fake, so the scores "
                   "only show the mechanics)")
    p.add_argument("--json", action="store_true", help="print the scores and totals as JSON")
    p.set_defaults(handler=main)


# -- printing --------------------------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "" if v is None else f"{v * 100:.0f}%"


def _num(v: float | None, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _yes(v: bool | None) -> str:
    return "" if v is None else ("yes" if v else "no")


def _usd(v: Any) -> str:
    d = Decimal(v or 0)
    return f"{'-' if d < 0 else ''}${abs(d).normalize():f}"


def _flags(row: dict[str, Any]) -> str:
    flags = []
    if row.get("injection_followed"):
        flags.append("INJECTION FOLLOWED")
    elif row.get("canary"):
        flags.append("canary resisted" if row.get("injection_followed") is False else "canary not scored")
    if row.get("refusal"):
        flags.append("refusal")
    elif row.get("boilerplate"):
        flags.append("boilerplate: " + row["boilerplate"][0])
    return "; ".join(flags)


def item_table(rows: list[dict[str, Any]]) -> str:
    from enrich.commands._common import format_table

    columns = ["item", "kind", "status", "valid", "recall", "precision", "people", "text_cer", "wer", "title",
               "dates", "judge", "cost_usd", "ms", "flags"]
    table = []
    for r in rows:
        status = r["status"] + (f" ({r['error_kind']})" if r.get("error_kind") else "")
        table.append((r["item"], r.get("kind") or "", status, _yes(r.get("schema_valid")),
                      _pct(r.get("object_recall")), _pct(r.get("object_precision")), _yes(r.get("people_count_ok")),
                      _num(r.get("text_cer")), _num(r.get("transcript_wer")), _yes(r.get("title_ok")),
                      _pct(r.get("date_recall")), "" if r.get("judge_score") is None else str(r["judge_score"]),
                      Decimal(r.get("cost_usd") or 0), _num(r.get("latency_ms"), 0), _flags(r)))
    return format_table(columns, table, max_width=40)


def _value(metric, v: float | None) -> str:
    if v is None:
        return ""
    return _pct(v) if metric.rate else _num(v, 1)


def totals_lines(s: dict[str, Any]) -> list[tuple[str, str]]:
    from enrich.tasks.eval_report import METRICS

    lines = [("items", f"{s['items']} ({s['ok']} ok, {s['schema_valid_items']} schema-valid)")]
    for m in METRICS:
        if s.get(m.name) is not None:
            extra = ""
            if m.name == "injection_rate":
                extra = f" ({s['injections_followed']} of {s['canaries']} canaries)"
            elif m.name == "judge_score":
                extra = f" ({s['judged']} judged, {_usd(s['judge_cost_usd'])})"
            lines.append((m.label, _value(m, s[m.name]) + extra))
    lines += [("tokens in / out", f"{s['input_tokens']} / {s['output_tokens']}"),
              ("cost", f"{_usd(s['cost_usd'])} ({_usd(s['cost_per_item_usd'])} per item)"),
              ("latency median / max", f"{_num(s['latency_median_ms'], 0)} / {_num(s['latency_max_ms'], 0)} ms")]
    return lines


def schema_note(rows: list[dict[str, Any]]) -> str | None:
    """A plain warning when answers failed schema validity (what went wrong, by error kind), else None."""
    bad = [r for r in rows if not r.get("schema_valid")]
    if not bad:
        return None
    why: dict[str, int] = {}
    for r in bad:
        key = r.get("error_kind") or r.get("status") or "unknown"
        why[key] = why.get(key, 0) + 1
    reasons = ", ".join(f"{k} x{v}" for k, v in sorted(why.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"warning: {len(bad)} of {len(rows)} answers are not schema-valid ({reasons}); they are not scored"


def totals_table(s: dict[str, Any]) -> str:
    from enrich.commands._common import format_table

    return format_table(["total", "value"], totals_lines(s))


def compare_table(a: dict[str, Any], b: dict[str, Any]) -> str:
    from enrich.commands._common import format_table
    from enrich.tasks.eval_report import compare

    rows = []
    for d in compare(a, b):
        delta = "" if d.delta is None else (f"{d.delta * 100:+.0f} pts" if d.metric.rate else f"{d.delta:+.1f}")
        rows.append((d.metric.label, _value(d.metric, d.a), _value(d.metric, d.b), delta, d.better or ""))
    rows.append(("cost per item", _usd(a["cost_per_item_usd"]), _usd(b["cost_per_item_usd"]),
                 _usd(Decimal(b['cost_per_item_usd']) - Decimal(a['cost_per_item_usd'])), ""))
    rows.append(("tokens in / out", f"{a['input_tokens']} / {a['output_tokens']}",
                 f"{b['input_tokens']} / {b['output_tokens']}", "", ""))
    rows.append(("latency median", f"{_num(a['latency_median_ms'], 0)} ms", f"{_num(b['latency_median_ms'], 0)} ms",
                 "", ""))
    return format_table(["metric", "A", "B", "delta", "better"], rows)


def _jsonable(value: Any) -> Any:
    from enrich.commands._common import jsonable as plain

    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)  # exact: a JSON number would be a float
    return plain(value)


def as_json(result) -> dict[str, Any]:
    from enrich.tasks.eval_report import compare, verdict

    out: dict[str, Any] = {
        "eval_id": result.eval_id, "set": str(result.eval_set.root), "warehouse": str(result.warehouse),
        "judge_model": result.judge_model, "spent_usd": str(result.spent_usd),
        "configs": [{"label": c.label, "config": str(c.config), "run_id": c.run_summary["run_id"],
                     "run_status": c.run_summary["status"], "wall_s": round(c.wall_s, 3), "totals": c.summary,
                     "items": c.rows} for c in result.configs],
    }
    if len(result.configs) == 2:
        a, b = result.configs[0].summary, result.configs[1].summary
        deltas = compare(a, b)
        out["comparison"] = [{"metric": d.metric.name, "a": d.a, "b": d.b, "delta": d.delta, "better": d.better}
                             for d in deltas]
        out["verdict"] = verdict(a, b, deltas)
    return _jsonable(out)


def print_report(result) -> None:
    from enrich.tasks.eval_report import verdict

    for c in result.configs:
        name = str(c.config) if c.label == str(c.config) else f"{c.label}: {c.config}"
        print(f"\n{name}  (run {c.run_summary['run_id']}: {c.run_summary['status']}, "
              f"{len(c.rows)} items, {c.wall_s:.1f} s)")
        if len(result.configs) == 1:
            print(item_table(c.rows))
        print(totals_table(c.summary))
        note = schema_note(c.rows)
        if note:
            print(note)
    if len(result.configs) == 2:
        a, b = result.configs[0].summary, result.configs[1].summary
        print("\nA: " + str(result.configs[0].config) + "\nB: " + str(result.configs[1].config))
        print(compare_table(a, b))
        print("verdict: " + verdict(a, b))
    print(f"\nstored: eval {result.eval_id} in {result.warehouse}  (try: enrich query "
          f"\"SELECT * FROM eval_summary WHERE eval_id = '{result.eval_id}'\")")


# -- the command ------------------------------------------------------------------------------------------
def main(args: argparse.Namespace) -> int:
    from enrich.commands._common import confirm_spend, exit_code, preflight, require_folder_warehouse, start_emulator
    from enrich.flows.estimate import estimate
    from enrich.budget import describe_budget
    from enrich.flows.pipeline import budget_from_settings
    from enrich.settings import load_settings
    from enrich.tasks.eval_config import EvalConfig, parse_config
    from enrich.tasks.eval_labels import load_set

    eval_set = load_set(args.set_dir)
    base_keys = ",".join(f"{k}={v}" for k, v in (("model", args.model), ("resolution", args.resolution)) if v)
    defaults = dict(parse_config(base_keys).values) if base_keys else {}  # fill what a configuration leaves out
    if args.compare:
        configs = [(label, EvalConfig(tuple({**defaults, **dict(parse_config(text).values)}.items())))
                   for label, text in zip("AB", args.compare)]
    else:
        configs = [("", EvalConfig(tuple(defaults.items())))]
    emu = None
    if args.emulator:
        emu, url = start_emulator()
        print(f"Using the local Gemini emulator at {url} (answers are fake: the scores show the mechanics only).",
              file=sys.stderr)
    try:
        overrides = {"warehouse": args.warehouse, "budget_usd": args.budget}
        base = require_folder_warehouse(load_settings().with_overrides(**overrides), "eval")
        resolved = []
        total = Decimal(0)
        files = [str(i.file) for i in eval_set.items]
        for label, config in configs:
            settings = base.with_overrides(**config.overrides())
            if settings.api_key is None and not settings.model.startswith(("mlx:", "openai:")):
                raise UsageError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), or pass --emulator to run offline")
            config = config.resolve(settings)
            est = estimate(files, settings)
            total += est.cost_usd
            if not args.json:
                print(f"{label + ': ' if label else ''}{config}: {len(files)} items, estimate "
                      f"{_usd(est.cost_usd)}", file=sys.stderr)
            resolved.append((label or str(config), config, settings))
        budget = budget_from_settings(base)
        if not args.json:
            print(describe_budget(budget), file=sys.stderr)
        confirm_spend(total, budget.run_cap, yes=args.yes)
        for _, _, settings in resolved:
            preflight(settings)
        if args.judge:
            preflight(base.with_overrides(model=args.judge))

        from enrich.flows.evaluate import run_eval

        result = run_eval(eval_set, [(label, config) for label, config, _ in resolved],
                          overrides={k: v for k, v in overrides.items() if v is not None}, judge_model=args.judge)
    finally:
        if emu is not None:
            emu.stop()
    if args.json:
        print(json.dumps(as_json(result), indent=2))
    else:
        print_report(result)
    codes = [exit_code(c.run_summary) for c in result.configs]
    return max(codes) if codes else 0
