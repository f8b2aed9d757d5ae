"""`enrich eval`: run a labelled set through the real pipeline once per configuration, score it, store it.

Each configuration is one ordinary run of the Prefect flow `enrich run` uses (flows/enrich_flow.py: discovery,
preparation, metadata stripping, retries, rate limits, the reservation budget), pointed at the set's labelled
files and at a warehouse of its own under `<warehouse>/evals/runs/` (warehouse/evals.py says why). Its rows
are then scored against the labels (tasks/eval_score.py), optionally judged (tasks/eval_judge.py), and
published as one Parquet part under `<warehouse>/evals/scores/`, which the `evals` view reads.

Money: the evaluation's budget (`budget_usd`) covers every configuration and the judge together: each run
gets what the earlier ones left. A daily cap counts today's spend in the warehouse, evaluations included,
and each run gets what is left of it.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from enrich.budget import Budget
from enrich.flows.pipeline import budget_from_settings
from enrich.settings import Settings, load_settings
from enrich.schemas.descriptions import DESCRIPTION_SCHEMAS
from enrich.tasks.eval_config import EvalConfig
from enrich.tasks.eval_labels import EvalItem, EvalSet
from enrich.tasks.eval_report import summarize
from enrich.tasks.eval_score import score_item
from enrich.warehouse.evals import run_warehouse, write_scores

ANSWER_FIELDS = ("caption", "title", "summary")  # the first one present is what a person reads first


@dataclass
class ConfigResult:
    label: str
    config: EvalConfig
    run_summary: dict[str, Any]
    rows: list[dict[str, Any]]
    part: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


@dataclass
class EvalResult:
    eval_id: str
    eval_set: EvalSet
    warehouse: Path
    configs: list[ConfigResult]
    judge_model: str | None = None

    @property
    def spent_usd(self) -> Decimal:
        return sum((c.summary["cost_usd"] + c.summary["judge_cost_usd"] for c in self.configs), Decimal(0))


def new_eval_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _description(row: dict[str, Any], kind: str | None) -> dict[str, Any]:
    schema = DESCRIPTION_SCHEMAS.get(kind or "")
    if schema is None:
        return {}
    return {name: row.get(name) for name in schema.model_fields}


def _read_run_rows(warehouse: Path, run_id: str) -> dict[str, dict[str, Any]]:
    from enrich.warehouse.views import read_snapshot

    def read(con) -> dict[str, dict[str, Any]]:
        cur = con.execute("SELECT * FROM results WHERE run_id = ?", [run_id])
        columns = [d[0] for d in cur.description]
        return {row[columns.index("path")]: dict(zip(columns, row)) for row in cur.fetchall()}

    return read_snapshot(warehouse, read)


def scored_row(item: EvalItem, row: dict[str, Any] | None, *, eval_id: str, config: EvalConfig, label: str,
               eval_set: EvalSet, started_at: datetime) -> dict[str, Any]:
    """One row of the evals table: the pipeline's outcome for `item` and its scores."""
    base = {
        "eval_id": eval_id, "config": str(config), "config_label": label, "model": config.get("model"),
        "resolution": config.get("resolution"), "set_name": eval_set.name, "set_path": str(eval_set.root),
        "item": item.path, "started_at": started_at, "canary": item.labels.get("canary"),
    }
    if row is None:  # the run stopped before reaching the file: no outcome to score
        return {**base, "kind": item.kind, "status": "not_run", "schema_valid": False}
    kind = row.get("kind") or item.kind
    answer = _description(row, kind)
    score = score_item(kind, row["status"], answer, item.labels, raw_text=row.get("raw_text"))
    return {
        **base, **score.as_dict(),
        "kind": kind, "run_id": row.get("run_id"), "status": row["status"], "error_kind": row.get("error_kind"),
        "answer": next((row.get(f) for f in ANSWER_FIELDS if row.get(f)), None),
        "input_tokens": row.get("input_tokens"),
        "output_tokens": int(row.get("output_tokens") or 0) + int(row.get("thinking_tokens") or 0),
        "cost_usd": row.get("cost_usd"), "price_date": row.get("price_date"), "latency_ms": row.get("latency_ms"),
        "_answer": answer,  # for the judge; not stored
    }


def _judge(rows: list[dict[str, Any]], items: dict[str, EvalItem], judge_model: str, settings: Settings,
           budget: Budget) -> None:
    from enrich.tasks.eval_judge import judge_prompt, run_judge

    prompts = {r["item"]: judge_prompt(r["kind"], items[r["item"]].labels, r["_answer"])
               for r in rows if r.get("schema_valid")}
    outcomes = run_judge(judge_model, settings, prompts, budget)
    for r in rows:
        r["judge_model"] = judge_model
        outcome = outcomes.get(r["item"])
        if outcome is None:
            r["judge_reason"] = "not judged: no valid answer"
            continue
        r["judge_score"], r["judge_reason"], r["judge_cost_usd"] = outcome.score, outcome.reason, outcome.cost_usd


def _remaining(cap: Decimal | None, spent: Decimal) -> float | None:
    return None if cap is None else float(max(Decimal(0), cap - spent))


def run_eval(eval_set: EvalSet, configs: list[tuple[str, EvalConfig]], *, overrides: dict[str, Any] | None = None,
             judge_model: str | None = None, eval_id: str | None = None) -> EvalResult:
    """Run `eval_set` with each (label, configuration), score, judge, store. `overrides`: settings for every
    run (warehouse, budget_usd, concurrency, progress, ...); a configuration's keys win over them."""
    from enrich.flows.enrich_flow import enrich_flow

    eval_id = eval_id or new_eval_id()
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    base = load_settings().with_overrides(**overrides)
    # the whole evaluation's cap: --budget and what is left of today's cap (evaluations count there too)
    cap = budget_from_settings(base).run_cap
    files = [str(item.file) for item in eval_set.items]
    items = {item.path: item for item in eval_set.items}
    by_file = eval_set.by_file()
    result = EvalResult(eval_id, eval_set, base.warehouse, [], judge_model)
    spent = Decimal(0)
    for n, (label, config) in enumerate(configs, 1):
        settings = base.with_overrides(**config.overrides())
        config = config.resolve(settings)
        scratch = run_warehouse(base.warehouse, eval_id, n)
        run_overrides = {**overrides, **config.overrides(), "warehouse": str(scratch),
                         "budget_usd": _remaining(cap, spent), "daily_budget_usd": None}
        started_at = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        summary = enrich_flow(files, run_overrides, reprocess=["all"])
        wall = time.perf_counter() - t0
        rows_by_path = _read_run_rows(scratch, summary["run_id"])
        rows_by_item = {by_file[p].path: r for p, r in rows_by_path.items() if p in by_file}
        rows = [scored_row(item, rows_by_item.get(item.path), eval_id=eval_id, config=config, label=label,
                           eval_set=eval_set, started_at=started_at) for item in eval_set.items]
        spent += Decimal(summary["spent_usd"])
        if judge_model:
            judge_budget = Budget(None if cap is None else max(Decimal(0), cap - spent))
            _judge(rows, items, judge_model, settings.with_overrides(model=judge_model), judge_budget)
            spent += judge_budget.run_spent
        for r in rows:
            r.pop("_answer", None)
        part = write_scores(base.warehouse, eval_id, n, rows)
        result.configs.append(ConfigResult(label, config, summary, rows, part, summarize(rows), wall))
    return result
