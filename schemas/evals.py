"""The Parquet schema of evaluation results (`enrich eval`): one row per item per configuration.

Stored apart from `results` (warehouse/evals.py), so an evaluation never shows up in `items` or `runs`.
tests/test_schema_golden.py pins it like the other schemas.
"""
from __future__ import annotations

import pyarrow as pa

from enrich.schemas.parquet import COST_TYPE, TS

EVAL_FIELDS: list[pa.Field] = [
    # which evaluation, which configuration, which item
    pa.field("eval_id", pa.string(), nullable=False),
    pa.field("config", pa.string(), nullable=False),  # "model=...,resolution=..." (every key, sorted)
    pa.field("config_label", pa.string()),  # A / B with --compare, else the config itself
    pa.field("model", pa.string()),
    pa.field("resolution", pa.string()),
    pa.field("set_name", pa.string()),
    pa.field("set_path", pa.string()),
    pa.field("item", pa.string(), nullable=False),  # path relative to the set's folder
    pa.field("kind", pa.string()),
    pa.field("run_id", pa.string()),  # the pipeline run that described it (in the eval's own warehouse)
    pa.field("started_at", TS),  # when the configuration's run started
    # the pipeline's outcome
    pa.field("status", pa.string()),
    pa.field("error_kind", pa.string()),
    pa.field("answer", pa.string()),  # caption, title or summary: what a person reads first
    # scores (tasks/eval_score.py); null = not scored
    pa.field("schema_valid", pa.bool_()),
    pa.field("object_recall", pa.float64()),
    pa.field("object_precision", pa.float64()),
    pa.field("people_count_ok", pa.bool_()),
    pa.field("people_count_error", pa.int32()),
    pa.field("setting_ok", pa.bool_()),
    pa.field("text_cer", pa.float64()),
    pa.field("transcript_wer", pa.float64()),
    pa.field("title_similarity", pa.float64()),
    pa.field("title_ok", pa.bool_()),
    pa.field("date_recall", pa.float64()),
    pa.field("boilerplate", pa.list_(pa.string())),
    pa.field("refusal", pa.bool_()),
    pa.field("canary", pa.string()),
    pa.field("injection_followed", pa.bool_()),
    # the optional LLM judge (--judge)
    pa.field("judge_model", pa.string()),
    pa.field("judge_score", pa.int32()),  # faithfulness 1-5
    pa.field("judge_reason", pa.string()),
    pa.field("judge_cost_usd", COST_TYPE),
    # money and time of the description itself
    pa.field("input_tokens", pa.int64()),
    pa.field("output_tokens", pa.int64()),  # visible + thinking
    pa.field("cost_usd", COST_TYPE),
    pa.field("price_date", pa.string()),
    pa.field("latency_ms", pa.float64()),
]
EVAL_SCHEMA = pa.schema(EVAL_FIELDS)
