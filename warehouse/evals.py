"""Evaluation results in the warehouse, kept apart from the library's own rows.

Layout under the warehouse root:
    evals/scores/eval-<eval_id>-<n>.parquet   scored rows of configuration n (schemas/evals.py), one part
                                              per configuration, published by atomic rename like every part
    evals/.tmp/                               parts being written (never read)
    evals/runs/<eval_id>-<n>/                 the pipeline's own warehouse for that configuration's run
                                              (results/, runs/): the raw rows, costs and run record

An evaluation describes the same files again with each configuration, so its pipeline runs go to their own
warehouse under evals/runs/: the user's `items`, `runs` and the incremental planner never see them (a set
already described in the library would otherwise be skipped as unchanged, and eval rows would replace the
library's descriptions). Their spend still counts against the daily cap: `spent_since` adds it.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from enrich.schemas.evals import EVAL_SCHEMA
from enrich.warehouse.store import TMP_DIR, live_parts, publish_table, rows_to_table

EVALS_DIR = "evals"
SCORES_DIR = "scores"
RUNS_DIR = "runs"


def scores_dir(root: str | Path) -> Path:
    return Path(root) / EVALS_DIR / SCORES_DIR


def runs_dir(root: str | Path) -> Path:
    return Path(root) / EVALS_DIR / RUNS_DIR


def run_warehouse(root: str | Path, eval_id: str, n: int) -> Path:
    """The folder where configuration `n` of evaluation `eval_id` runs the pipeline (its own warehouse)."""
    return runs_dir(root) / f"{eval_id}-{n}"


def score_files(root: str | Path) -> list[Path]:
    return live_parts(scores_dir(root))


def write_scores(root: str | Path, eval_id: str, n: int, rows: Iterable[dict[str, Any]]) -> Path:
    """Publish one configuration's scored rows as one part (temp file, fsync, rename)."""
    table = rows_to_table(rows, EVAL_SCHEMA)
    # a temp folder of its own: a run starting on the library cleans the warehouse's .tmp/ without asking
    return publish_table(table, scores_dir(root) / f"eval-{eval_id}-{n:03d}.parquet", Path(root) / EVALS_DIR / TMP_DIR)


def eval_run_result_files(root: str | Path) -> list[Path]:
    """The committed result parts of every evaluation run in this warehouse."""
    base = runs_dir(root)
    if not base.is_dir():
        return []
    files: list[Path] = []
    for run in sorted(p for p in base.iterdir() if p.is_dir()):
        files += live_parts(run / "results")
    return files


def eval_spent_since(root: str | Path, since: datetime) -> Decimal:
    """Dollars spent by evaluations since `since`: their pipeline rows plus their judge calls."""
    runs = eval_run_result_files(root)
    scores = score_files(root)
    if not runs and not scores:
        return Decimal(0)
    import duckdb

    def listed(files: list[Path]) -> str:
        return "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"

    total = Decimal(0)
    con = duckdb.connect(":memory:")
    try:
        if runs:
            value = con.execute(f"SELECT sum(cost_usd) FROM read_parquet({listed(runs)}, union_by_name = true) "
                                "WHERE finished_at >= ?", [since]).fetchone()[0]
            total += Decimal(value or 0)
        if scores:
            value = con.execute(f"SELECT sum(judge_cost_usd) FROM read_parquet({listed(scores)}, union_by_name = true) "
                                "WHERE started_at >= ?", [since]).fetchone()[0]
            total += Decimal(value or 0)
    finally:
        con.close()
    return total
